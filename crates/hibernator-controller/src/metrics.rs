//! Prometheus metrics. Labels are bounded: phases, target types, operations, results, RPC
//! names; never plan names or error text.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The controller's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    reconciles: Family<Labels, Counter>,
    reconcile_seconds: Histogram,
    executions: Family<Labels, Counter>,
    boundary_lag_seconds: Histogram,
    plans: Family<Labels, Gauge>,
    grpc_refused: Family<Labels, Counter>,
    restore_records: Family<Labels, Counter>,
    api_writes: Family<Labels, Counter>,
    runner_seconds: Family<Labels, Histogram>,
    notifications: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hibernator");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconciles",
            "Plan reconciles by result",
            reconciles.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_seconds.clone(),
        );
        let executions = Family::<Labels, Counter>::default();
        registry.register(
            "executions",
            "Finished runner executions by target type, operation and result",
            executions.clone(),
        );
        let boundary_lag_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "schedule_boundary_lag_seconds",
            "Time from a schedule boundary to the start of its operation (schedule clock)",
            boundary_lag_seconds.clone(),
        );
        let plans = Family::<Labels, Gauge>::default();
        registry.register("plans", "Plans by phase", plans.clone());
        let grpc_refused = Family::<Labels, Counter>::default();
        registry.register(
            "grpc_refused",
            "Runner calls refused by authentication",
            grpc_refused.clone(),
        );
        let restore_records = Family::<Labels, Counter>::default();
        registry.register(
            "restore_records",
            "Restore records by outcome (stored, kept)",
            restore_records.clone(),
        );
        let api_writes = Family::<Labels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by kind",
            api_writes.clone(),
        );
        let runner_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        registry.register(
            "runner_duration_seconds",
            "How long runners took, as they report it, by target type, operation and result",
            runner_seconds.clone(),
        );
        let notifications = Family::<Labels, Counter>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts by sink type, event and result (delivered, retried, failed)",
            notifications.clone(),
        );
        Self {
            notifications,
            registry: Arc::new(Mutex::new(registry)),
            runner_seconds,
            reconciles,
            reconcile_seconds,
            executions,
            boundary_lag_seconds,
            plans,
            grpc_refused,
            restore_records,
            api_writes,
        }
    }

    /// A reconcile ended.
    pub fn reconciled(&self, result: &'static str, seconds: f64) {
        self.reconciles
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.reconcile_seconds.observe(seconds);
    }

    /// A runner execution ended.
    pub fn execution(&self, target_type: &str, operation: &str, result: &'static str) {
        self.executions
            .get_or_create(&vec![
                ("target_type", target_type.to_string()),
                ("operation", operation.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// An operation started this long after its schedule boundary.
    pub fn boundary_lag(&self, seconds: f64) {
        self.boundary_lag_seconds.observe(seconds.max(0.0));
    }

    /// Sets the number of plans per phase.
    pub fn set_plans(&self, counts: &[(&'static str, i64)]) {
        for (phase, n) in counts {
            self.plans
                .get_or_create(&vec![("phase", phase.to_string())])
                .set(*n);
        }
    }

    /// A runner call was refused.
    pub fn grpc_refused(&self, rpc: &'static str) {
        self.grpc_refused
            .get_or_create(&vec![("rpc", rpc.to_string())])
            .inc();
    }

    /// A restore record was stored (or an earlier one kept).
    pub fn restore_record(&self, stored: bool) {
        let outcome = if stored { "stored" } else { "kept" };
        self.restore_records
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// A runner finished after `seconds`.
    pub fn runner_duration(&self, target_type: &str, operation: &str, success: bool, seconds: f64) {
        self.runner_seconds
            .get_or_create(&vec![
                ("target_type", target_type.to_string()),
                ("operation", operation.to_string()),
                (
                    "result",
                    if success { "succeeded" } else { "failed" }.to_string(),
                ),
            ])
            .observe(seconds);
    }

    /// A write to the API server.
    pub fn api_write(&self, kind: &'static str) {
        self.api_writes
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// A notification delivery attempt ended: `delivered`, `retried` or `failed` (given up).
    pub fn notification(&self, sink_type: &str, event: &str, result: &'static str) {
        self.notifications
            .get_or_create(&vec![
                ("sink_type", sink_type.to_string()),
                ("event", event.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_labels() {
        let m = Metrics::new();
        m.reconciled("ok", 0.01);
        m.execution("rds", "hibernate", "succeeded");
        m.grpc_refused("RecordRestoreState");
        let text = m.render();
        assert!(
            text.contains("hibernator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hibernator_executions_total{target_type=\"rds\",operation=\"hibernate\",result=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hibernator_grpc_refused_total{rpc=\"RecordRestoreState\"} 1"),
            "{text}"
        );
    }
}
