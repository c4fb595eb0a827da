//! Restore data (SPEC "Restore data"): what each target's resources looked like before the
//! runner changed them, stored in ConfigMap `hibernator-restore-<plan>`, one key per target.
//!
//! - Write-ahead: a runner records a resource before changing it; the gRPC answer is sent only
//!   after the ConfigMap update succeeded.
//! - The first record of a resource wins until that target's wake-up succeeds: a later
//!   observation ("already stopped", after a crash or a failed wake-up) never replaces the
//!   earlier one ("was running").
//! - A successful wake-up of cycle C removes the target's records of cycles up to C.
//! - The ConfigMap has no owner reference: deleting a plan with `onDelete: Leave` keeps it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::{MANAGER, label_value, labels};

pub use hibernator_api::naming::labels::RESTORE as RESTORE_LABEL;

/// The restore ConfigMap's name for a plan.
pub fn config_map_name(plan: &str) -> String {
    hibernator_api::naming::restore_config_map(plan)
}

/// One target's records, as stored under its key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecords {
    /// Resource key -> record.
    pub resources: BTreeMap<String, ResourceRecord>,
}

/// One resource's record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRecord {
    /// The cycle in which it was recorded.
    pub cycle_id: String,
    /// When (RFC 3339).
    pub recorded_at: String,
    /// What the runner recorded.
    pub state: Value,
}

/// Result of recording.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// Stored now.
    Stored(Value),
    /// An earlier record exists and was kept; here it is.
    AlreadyRecorded(Value),
}

/// Restore data problems.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The runner sent a record that is not a JSON object.
    #[error("restore record of {key} is not a JSON object")]
    NotAnObject {
        /// The resource key.
        key: String,
    },
    /// Stored data is unreadable.
    #[error("restore data of target {target} in ConfigMap {config_map} is not valid JSON")]
    Corrupt {
        /// Target.
        target: String,
        /// ConfigMap name.
        config_map: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The API server refused.
    #[error("failed to {verb} ConfigMap {namespace}/{name}")]
    Api {
        /// What was attempted.
        verb: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Too many concurrent updates.
    #[error("failed to update ConfigMap {namespace}/{name}: it kept changing under us")]
    Contended {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl RestoreError {
    /// Stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotAnObject { .. } => "bad_record",
            Self::Corrupt { .. } => "corrupt",
            Self::Api { .. } => "api",
            Self::Contended { .. } => "contended",
        }
    }
}

fn read_target(
    data: &BTreeMap<String, String>,
    target: &str,
    cm: &str,
) -> Result<TargetRecords, RestoreError> {
    match data.get(target) {
        None => Ok(TargetRecords::default()),
        Some(text) => serde_json::from_str(text).map_err(|source| RestoreError::Corrupt {
            target: target.into(),
            config_map: cm.into(),
            source,
        }),
    }
}

/// Adds a record to ConfigMap data unless the resource already has one.
pub fn merge_record(
    data: &mut BTreeMap<String, String>,
    cm: &str,
    target: &str,
    cycle: &str,
    key: &str,
    state: Value,
    now: jiff::Timestamp,
) -> Result<RecordOutcome, RestoreError> {
    if !state.is_object() {
        return Err(RestoreError::NotAnObject { key: key.into() });
    }
    let mut records = read_target(data, target, cm)?;
    if let Some(existing) = records.resources.get(key) {
        return Ok(RecordOutcome::AlreadyRecorded(existing.state.clone()));
    }
    records.resources.insert(
        key.into(),
        ResourceRecord {
            cycle_id: cycle.into(),
            recorded_at: now.to_string(),
            state: state.clone(),
        },
    );
    data.insert(
        target.into(),
        serde_json::to_string(&records).expect("records serialize"),
    );
    Ok(RecordOutcome::Stored(state))
}

/// Removes a target's records of cycles up to `cycle`. Returns true when anything changed.
pub fn clear_records(
    data: &mut BTreeMap<String, String>,
    cm: &str,
    target: &str,
    cycle: &str,
) -> Result<bool, RestoreError> {
    let mut records = read_target(data, target, cm)?;
    let before = records.resources.len();
    records.resources.retain(|_, r| r.cycle_id.as_str() > cycle);
    if records.resources.len() == before {
        return Ok(false);
    }
    if records.resources.is_empty() {
        data.remove(target);
    } else {
        data.insert(
            target.into(),
            serde_json::to_string(&records).expect("records serialize"),
        );
    }
    Ok(true)
}

/// Targets with records, each with the cycle of its oldest record.
pub fn summary(data: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    data.iter()
        .filter_map(|(target, text)| {
            let records: TargetRecords = serde_json::from_str(text).ok()?;
            let oldest = records
                .resources
                .values()
                .map(|r| r.cycle_id.clone())
                .min()?;
            Some((target.clone(), oldest))
        })
        .collect()
}

/// (namespace, plan name).
type PlanKey = (String, String);

/// The restore store: ConfigMaps updated with optimistic concurrency, one writer at a time per
/// plan within this process.
#[derive(Clone)]
pub struct RestoreStore {
    client: Client,
    locks: Arc<Mutex<HashMap<PlanKey, Arc<tokio::sync::Mutex<()>>>>>,
}

impl RestoreStore {
    /// A store using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            locks: Default::default(),
        }
    }

    fn lock(&self, namespace: &str, plan: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks
            .entry((namespace.into(), plan.into()))
            .or_default()
            .clone()
    }

    /// The plan's restore data (empty when there is no ConfigMap).
    pub async fn load(
        &self,
        namespace: &str,
        plan: &str,
    ) -> Result<BTreeMap<String, String>, RestoreError> {
        let name = config_map_name(plan);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(&name).await {
            Ok(cm) => Ok(cm.and_then(|c| c.data).unwrap_or_default()),
            Err(source) => Err(RestoreError::Api {
                verb: "read",
                namespace: namespace.into(),
                name,
                source: Box::new(source),
            }),
        }
    }

    /// Records a resource's state (write-ahead). Returns only once the record is stored.
    pub async fn record(
        &self,
        namespace: &str,
        plan: &str,
        target: &str,
        cycle: &str,
        key: &str,
        state: Value,
    ) -> Result<RecordOutcome, RestoreError> {
        let cm = config_map_name(plan);
        self.update(namespace, plan, |data| {
            merge_record(
                data,
                &cm,
                target,
                cycle,
                key,
                state.clone(),
                jiff::Timestamp::now(),
            )
        })
        .await
    }

    /// Removes a target's records of cycles up to `cycle` (after its wake-up succeeded).
    pub async fn clear(
        &self,
        namespace: &str,
        plan: &str,
        target: &str,
        cycle: &str,
    ) -> Result<bool, RestoreError> {
        let cm = config_map_name(plan);
        self.update(namespace, plan, |data| {
            clear_records(data, &cm, target, cycle)
        })
        .await
    }

    /// A target's records: resource key -> state, and the newest cycle among them.
    pub async fn fetch(
        &self,
        namespace: &str,
        plan: &str,
        target: &str,
    ) -> Result<(BTreeMap<String, Value>, String), RestoreError> {
        let cm = config_map_name(plan);
        let data = self.load(namespace, plan).await?;
        let records = read_target(&data, target, &cm)?;
        let cycle = records
            .resources
            .values()
            .map(|r| r.cycle_id.clone())
            .max()
            .unwrap_or_default();
        Ok((
            records
                .resources
                .into_iter()
                .map(|(k, r)| (k, r.state))
                .collect(),
            cycle,
        ))
    }

    /// Applies `change` to the ConfigMap's data and writes it back, retrying on conflicts.
    async fn update<T>(
        &self,
        namespace: &str,
        plan: &str,
        mut change: impl FnMut(&mut BTreeMap<String, String>) -> Result<T, RestoreError>,
    ) -> Result<T, RestoreError> {
        let lock = self.lock(namespace, plan);
        let _guard = lock.lock().await;
        let name = config_map_name(plan);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let api_err = |verb: &'static str, source: kube::Error| RestoreError::Api {
            verb,
            namespace: namespace.into(),
            name: name.clone(),
            source: Box::new(source),
        };
        for _ in 0..8 {
            let existing = api.get_opt(&name).await.map_err(|e| api_err("read", e))?;
            let mut cm = existing.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.into()),
                    labels: Some(BTreeMap::from([
                        (labels::MANAGED_BY.to_string(), MANAGER.to_string()),
                        (labels::PLAN.to_string(), label_value(plan)),
                        (RESTORE_LABEL.to_string(), "true".to_string()),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            });
            let mut data = cm.data.take().unwrap_or_default();
            let before = data.clone();
            let out = change(&mut data)?;
            if data == before && existing.is_some() {
                return Ok(out);
            }
            cm.data = Some(data);
            let result = match existing {
                Some(_) => api.replace(&cm.name_any(), &pp, &cm).await.map(|_| ()),
                None => api.create(&pp, &cm).await.map(|_| ()),
            };
            match result {
                Ok(()) => return Ok(out),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err("write", e)),
            }
        }
        Err(RestoreError::Contended {
            namespace: namespace.into(),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-11-27T01:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_first_record_wins_until_cleared() {
        let mut data = BTreeMap::new();
        let out = merge_record(
            &mut data,
            "cm",
            "db",
            "c1",
            "instance:db",
            json!({"status": "available"}),
            now(),
        )
        .unwrap();
        assert_eq!(out, RecordOutcome::Stored(json!({"status": "available"})));
        // After a crash the runner sees the instance stopped: the earlier record stays.
        let out = merge_record(
            &mut data,
            "cm",
            "db",
            "c1",
            "instance:db",
            json!({"status": "stopped"}),
            now(),
        )
        .unwrap();
        assert_eq!(
            out,
            RecordOutcome::AlreadyRecorded(json!({"status": "available"}))
        );
        // A later cycle after a failed wake-up: still the first record.
        let out = merge_record(
            &mut data,
            "cm",
            "db",
            "c2",
            "instance:db",
            json!({"status": "stopped"}),
            now(),
        )
        .unwrap();
        assert_eq!(
            out,
            RecordOutcome::AlreadyRecorded(json!({"status": "available"}))
        );
        assert_eq!(
            summary(&data),
            BTreeMap::from([("db".to_string(), "c1".to_string())])
        );
    }

    #[test]
    fn clearing_removes_only_cycles_up_to_the_wake_up() {
        let mut data = BTreeMap::new();
        merge_record(&mut data, "cm", "db", "c1", "a", json!({}), now()).unwrap();
        merge_record(&mut data, "cm", "db", "c3", "b", json!({}), now()).unwrap();
        assert!(clear_records(&mut data, "cm", "db", "c2").unwrap());
        let left: TargetRecords = serde_json::from_str(&data["db"]).unwrap();
        assert_eq!(left.resources.keys().collect::<Vec<_>>(), ["b"]);
        assert!(clear_records(&mut data, "cm", "db", "c3").unwrap());
        assert!(data.is_empty());
        assert!(!clear_records(&mut data, "cm", "db", "c3").unwrap());
    }

    #[test]
    fn records_must_be_objects() {
        let mut data = BTreeMap::new();
        assert!(merge_record(&mut data, "cm", "db", "c1", "k", json!("x"), now()).is_err());
    }
}
