//! Prometheus metrics. Labels are bounded: phases, target types, operations, results, RPC
//! names, and for the per-plan gauges the plan's namespace and name (one series per plan and
//! label set, removed with the plan); never error text.

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
    leader: Gauge,
    hours_asleep: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    savings: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    plans_stalled: Gauge,
    plans_not_restored: Gauge,
    plan_asleep: Family<Labels, Gauge>,
    plan_next_transition: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    drift_found: Family<Labels, Counter>,
    drift_reapplied: Family<Labels, Counter>,
}

/// What the per-plan metrics say about one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanGauges {
    /// Namespace of the plan.
    pub namespace: String,
    /// Name of the plan.
    pub name: String,
    /// The plan is Hibernated.
    pub asleep: bool,
    /// `Stalled=True`.
    pub stalled: bool,
    /// `Restored=False`.
    pub not_restored: bool,
    /// Next hibernation, Unix seconds.
    pub next_hibernate: Option<f64>,
    /// Next wake-up, Unix seconds.
    pub next_wake_up: Option<f64>,
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
        let hours_asleep = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "resource_hours_asleep",
            "Resource-hours asleep (hours times instances or replicas) of restored resources",
            hours_asleep.clone(),
        );
        let savings = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "estimated_savings",
            "Estimated amount saved by restored resources, in the price table's currency",
            savings.clone(),
        );
        let drift_found = Family::<Labels, Counter>::default();
        registry.register(
            "drift_found",
            "Resources in-sleep checks found awake while their plan is hibernated, by target type",
            drift_found.clone(),
        );
        let drift_reapplied = Family::<Labels, Counter>::default();
        registry.register(
            "drift_reapplied",
            "Resources in-sleep checks put back to sleep (enforce mode Reapply), by target type",
            drift_reapplied.clone(),
        );
        // Declared with a zero for every type that is checked, so that alerts and dashboards
        // see the series before the first drift.
        for t in hibernator_api::TargetType::ALL
            .into_iter()
            .filter(|t| t.checks_in_sleep())
        {
            let labels = vec![("target_type", t.as_str().to_string())];
            drift_found.get_or_create(&labels).inc_by(0);
            drift_reapplied.get_or_create(&labels).inc_by(0);
        }
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this instance holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        let plans_stalled = Gauge::default();
        registry.register(
            "plans_stalled",
            "Plans with Stalled=True",
            plans_stalled.clone(),
        );
        let plans_not_restored = Gauge::default();
        registry.register(
            "plans_not_restored",
            "Plans with Restored=False: something recorded did not come back",
            plans_not_restored.clone(),
        );
        let plan_asleep = Family::<Labels, Gauge>::default();
        registry.register(
            "plan_asleep",
            "1 while the plan is Hibernated, else 0",
            plan_asleep.clone(),
        );
        let plan_next_transition =
            Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "plan_next_transition_timestamp_seconds",
            "When the plan's schedule next hibernates or wakes it up (operation), Unix seconds",
            plan_next_transition.clone(),
        );
        Self {
            hours_asleep,
            savings,
            leader,
            plans_stalled,
            plans_not_restored,
            plan_asleep,
            plan_next_transition,
            drift_found,
            drift_reapplied,
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

    /// A resource's night was counted into its plan's savings.
    pub fn saved(
        &self,
        namespace: &str,
        plan: &str,
        target_type: &str,
        night: &hibernator_api::savings::Night,
    ) {
        let labels = vec![
            ("namespace", namespace.to_string()),
            ("plan", plan.to_string()),
            ("target_type", target_type.to_string()),
        ];
        self.hours_asleep.get_or_create(&labels).inc_by(night.hours);
        if let Some(amount) = night.amount {
            self.savings.get_or_create(&labels).inc_by(amount);
        }
    }

    /// Whether this instance leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets the per-plan gauges and the counts of stalled and not restored plans from every
    /// plan (series of plans that are gone disappear).
    pub fn set_plan_gauges(&self, plans: &[PlanGauges]) {
        self.plan_asleep.clear();
        self.plan_next_transition.clear();
        let count = |f: fn(&PlanGauges) -> bool| plans.iter().filter(|p| f(p)).count() as i64;
        self.plans_stalled.set(count(|p| p.stalled));
        self.plans_not_restored.set(count(|p| p.not_restored));
        for p in plans {
            let who = || vec![("namespace", p.namespace.clone()), ("plan", p.name.clone())];
            self.plan_asleep
                .get_or_create(&who())
                .set(i64::from(p.asleep));
            for (operation, at) in [("hibernate", p.next_hibernate), ("wakeUp", p.next_wake_up)] {
                if let Some(at) = at {
                    let mut labels = who();
                    labels.push(("operation", operation.to_string()));
                    self.plan_next_transition.get_or_create(&labels).set(at);
                }
            }
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

    /// An in-sleep check of a `target_type` target found `found` resources awake and put
    /// `reapplied` of them back to sleep.
    pub fn drift(&self, target_type: &str, found: usize, reapplied: usize) {
        let labels = vec![("target_type", target_type.to_string())];
        if found > 0 {
            self.drift_found.get_or_create(&labels).inc_by(found as u64);
        }
        if reapplied > 0 {
            self.drift_reapplied
                .get_or_create(&labels)
                .inc_by(reapplied as u64);
        }
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

    #[test]
    fn plan_gauges_follow_the_plans_and_forget_deleted_ones() {
        let m = Metrics::new();
        m.set_leader(true);
        let plan = |name: &str, asleep: bool| PlanGauges {
            namespace: "team-a".into(),
            name: name.into(),
            asleep,
            stalled: !asleep,
            not_restored: false,
            next_hibernate: None,
            next_wake_up: Some(1_795_000_000.0),
        };
        m.set_plan_gauges(&[plan("a", true), plan("b", false)]);
        let text = m.render();
        for line in [
            "hibernator_leader 1",
            "hibernator_plans_stalled 1",
            "hibernator_plans_not_restored 0",
            "hibernator_plan_asleep{namespace=\"team-a\",plan=\"a\"} 1",
            "hibernator_plan_asleep{namespace=\"team-a\",plan=\"b\"} 0",
            "hibernator_plan_next_transition_timestamp_seconds{namespace=\"team-a\",plan=\"a\",operation=\"wakeUp\"} 1795000000.0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.set_plan_gauges(&[plan("a", true)]);
        assert!(
            !m.render().contains("plan=\"b\""),
            "a deleted plan's series go"
        );
    }
}
