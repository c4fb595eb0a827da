//! Restore data as stored in a plan's restore ConfigMap (`hibernator-restore-<plan>`): one key
//! per target holding `{"resources": {<resource key>: <record>}}`. Shared by the controller (the
//! only writer) and the CLI (which shows it). Pure functions over the ConfigMap's `data`.
//!
//! A record's life:
//! 1. A runner records a resource before changing it (write-ahead); the first record of a
//!    resource wins, so a later look ("already stopped") never replaces "was running".
//! 2. The wake-up runner reports what became of each record; the controller marks it
//!    (`wakeUp`): `Restored`, `NotFound` or `Failed`.
//! 3. The controller retires the `Restored` records it decided on once the plan's status no
//!    longer counts them as asleep. `NotFound` and `Failed` records stay: the next wake-up tries them again, and the
//!    plan says `Restored=False` until then.
//! 4. A person who acknowledges what was not restored (`kubectl hibernator restore PLAN
//!    --acknowledge`) makes those records `acknowledged`: kept for the record, never woken up
//!    again, replaced by the next hibernation's record of the same resource; the records of
//!    targets still in the plan are retired when the next hibernation begins (the records of
//!    removed targets stay until someone removes them).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most restore data (keys plus values) a plan's ConfigMap may hold. The API server refuses
/// objects above 1 MiB; the rest is left for metadata.
pub const MAX_DATA_BYTES: usize = 900 * 1024;

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
    /// What sizes the resource's cost while awake (`savings::Sizing`), when the runner said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<Value>,
    /// What the last wake-up did with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_up: Option<WakeUpResult>,
}

impl ResourceRecord {
    /// True while the resource still needs waking up (neither restored nor acknowledged).
    pub fn is_live(&self) -> bool {
        !self
            .wake_up
            .as_ref()
            .is_some_and(|w| w.result == WakeUpOutcome::Restored || w.acknowledged)
    }

    /// True when restored (the record is about to be retired).
    pub fn is_restored(&self) -> bool {
        self.wake_up
            .as_ref()
            .is_some_and(|w| w.result == WakeUpOutcome::Restored)
    }
}

/// What a wake-up did with a record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WakeUpResult {
    /// The cycle of the wake-up.
    pub cycle_id: String,
    /// The outcome.
    pub result: WakeUpOutcome,
    /// Why it was not restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When (RFC 3339).
    pub at: String,
    /// A person accepted that it was not restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledged: bool,
}

/// The outcome of a wake-up for one resource.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WakeUpOutcome {
    /// Back in its recorded state.
    Restored,
    /// Not found where the runner looked.
    NotFound,
    /// Could not be restored.
    Failed,
}

/// Result of recording.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// Stored now.
    Stored(Value),
    /// An earlier record exists and was kept; here it is.
    AlreadyRecorded(Value),
}

/// Problems with restore data.
#[derive(Debug, thiserror::Error)]
pub enum RestoreDataError {
    /// The runner sent a record that is not a JSON object.
    #[error("restore record of {key} is not a JSON object")]
    NotAnObject {
        /// The resource key.
        key: String,
    },
    /// Stored data is unreadable.
    #[error("restore data of target {target} is not valid JSON")]
    Corrupt {
        /// Target.
        target: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The plan put the resource to sleep, and its record is gone.
    #[error(
        "refused to record {key} again: the plan recorded it earlier and that record is gone from the restore data, so the resource may already be asleep (see the plan's Restored condition)"
    )]
    Lost {
        /// The resource key.
        key: String,
    },
    /// The record would make the ConfigMap too large for the API server.
    #[error(
        "refused to record {key}: the restore data would grow to {size} bytes, above the limit of {limit} bytes (a ConfigMap holds at most 1 MiB); split the target into smaller ones"
    )]
    TooLarge {
        /// The resource key.
        key: String,
        /// The size it would reach.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// A target's records, parsed.
pub fn read_target(
    data: &BTreeMap<String, String>,
    target: &str,
) -> Result<TargetRecords, RestoreDataError> {
    match data.get(target) {
        None => Ok(TargetRecords::default()),
        Some(text) => serde_json::from_str(text).map_err(|source| RestoreDataError::Corrupt {
            target: target.into(),
            source,
        }),
    }
}

fn write_target(data: &mut BTreeMap<String, String>, target: &str, records: &TargetRecords) {
    if records.resources.is_empty() {
        data.remove(target);
    } else {
        data.insert(
            target.into(),
            serde_json::to_string(records).expect("records serialize"),
        );
    }
}

/// The size the API server counts for ConfigMap data: keys plus values.
pub fn data_size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Adds a record unless the resource already has a live one (the first record wins until the
/// resource is restored). Refuses records that would make the data larger than `limit`, and
/// records of resources in `asleep` (the plan's own account of what it put to sleep) that have
/// no record at all: their earlier record was lost, and the resource may be asleep by now, so
/// a new record would remember it asleep.
#[allow(clippy::too_many_arguments)]
pub fn merge_record(
    data: &mut BTreeMap<String, String>,
    target: &str,
    cycle: &str,
    key: &str,
    state: Value,
    now: jiff::Timestamp,
    limit: usize,
    asleep: &BTreeSet<String>,
) -> Result<RecordOutcome, RestoreDataError> {
    merge_sized_record(data, target, cycle, key, state, None, now, limit, asleep)
}

/// [`merge_record`] with the resource's sizing (`savings::Sizing`), stored beside the record.
#[allow(clippy::too_many_arguments)]
pub fn merge_sized_record(
    data: &mut BTreeMap<String, String>,
    target: &str,
    cycle: &str,
    key: &str,
    state: Value,
    sizing: Option<Value>,
    now: jiff::Timestamp,
    limit: usize,
    asleep: &BTreeSet<String>,
) -> Result<RecordOutcome, RestoreDataError> {
    if !state.is_object() {
        return Err(RestoreDataError::NotAnObject { key: key.into() });
    }
    let mut records = read_target(data, target)?;
    match records.resources.get(key) {
        Some(existing) if existing.is_live() => {
            return Ok(RecordOutcome::AlreadyRecorded(existing.state.clone()));
        }
        None if asleep.contains(key) => {
            return Err(RestoreDataError::Lost { key: key.into() });
        }
        _ => {}
    }
    records.resources.insert(
        key.into(),
        ResourceRecord {
            cycle_id: cycle.into(),
            recorded_at: now.to_string(),
            state: state.clone(),
            sizing,
            wake_up: None,
        },
    );
    let mut next = data.clone();
    write_target(&mut next, target, &records);
    let size = data_size(&next);
    if size > limit {
        return Err(RestoreDataError::TooLarge {
            key: key.into(),
            size,
            limit,
        });
    }
    *data = next;
    Ok(RecordOutcome::Stored(state))
}

/// Marks a target's live records with what the wake-up of `cycle` did with them. Keys without a
/// live record are ignored. Returns true when anything changed.
pub fn mark_wake_up(
    data: &mut BTreeMap<String, String>,
    target: &str,
    cycle: &str,
    results: &[(String, WakeUpOutcome, Option<String>)],
    now: jiff::Timestamp,
) -> Result<bool, RestoreDataError> {
    let mut records = read_target(data, target)?;
    let mut changed = false;
    for (key, result, message) in results {
        let Some(record) = records.resources.get_mut(key) else {
            continue;
        };
        if !record.is_live() {
            continue;
        }
        let mark = WakeUpResult {
            cycle_id: cycle.into(),
            result: *result,
            message: message.clone(),
            at: now.to_string(),
            acknowledged: false,
        };
        if record.wake_up.as_ref().is_none_or(|w| {
            (&w.cycle_id, w.result, &w.message) != (&mark.cycle_id, mark.result, &mark.message)
        }) {
            record.wake_up = Some(mark);
            changed = true;
        }
    }
    if changed {
        write_target(data, target, &records);
    }
    Ok(changed)
}

/// Acknowledges every live record of `targets` (a person accepted that they were not
/// restored): the records are kept, marked, but no wake-up acts on them again, and the next
/// hibernation records those resources afresh. Returns how many records changed.
pub fn acknowledge(
    data: &mut BTreeMap<String, String>,
    targets: &BTreeSet<String>,
    now: jiff::Timestamp,
) -> usize {
    let mut changed = 0;
    for target in targets {
        let Ok(mut records) = read_target(data, target) else {
            continue;
        };
        let mut touched = false;
        for r in records.resources.values_mut() {
            if !r.is_live() {
                continue;
            }
            match &mut r.wake_up {
                Some(w) => w.acknowledged = true,
                None => {
                    r.wake_up = Some(WakeUpResult {
                        cycle_id: r.cycle_id.clone(),
                        result: WakeUpOutcome::Failed,
                        message: Some("not woken up; acknowledged".into()),
                        at: now.to_string(),
                        acknowledged: true,
                    })
                }
            }
            touched = true;
            changed += 1;
        }
        if touched {
            write_target(data, target, &records);
        }
    }
    changed
}

/// Removes the records `(target, key)` of `keys` that are restored or acknowledged (a record
/// that is live again by now is kept; unreadable targets are left alone). Returns what was
/// removed.
pub fn retire(
    data: &mut BTreeMap<String, String>,
    keys: &BTreeSet<(String, String)>,
) -> Vec<(String, String)> {
    let mut removed = Vec::new();
    let targets: BTreeSet<&String> = keys.iter().map(|(t, _)| t).collect();
    for target in targets {
        let Ok(mut records) = read_target(data, target) else {
            continue;
        };
        let before = records.resources.len();
        records.resources.retain(|key, r| {
            if !r.is_live() && keys.contains(&(target.clone(), key.clone())) {
                removed.push((target.clone(), key.clone()));
                false
            } else {
                true
            }
        });
        if records.resources.len() != before {
            write_target(data, target, &records);
        }
    }
    removed
}

/// The restored records of every target, for the savings ledger.
pub fn restored_nights(data: &BTreeMap<String, String>) -> Vec<crate::savings::RestoredNight> {
    let mut out = Vec::new();
    for target in data.keys() {
        let Ok(records) = read_target(data, target) else {
            continue;
        };
        for (key, r) in records.resources {
            let Some(w) = r.wake_up.as_ref().filter(|_| r.is_restored()) else {
                continue;
            };
            let (Ok(asleep_at), Ok(awake_at)) = (r.recorded_at.parse(), w.at.parse()) else {
                continue;
            };
            out.push(crate::savings::RestoredNight {
                id: format!("{target}/{key}@{}", r.recorded_at),
                target: target.clone(),
                asleep_at,
                awake_at,
                cycle: w.cycle_id.clone(),
                sizing: r.sizing.and_then(|s| serde_json::from_value(s).ok()),
            });
        }
    }
    out
}

/// A live record, as the controller's decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRecord {
    /// The cycle it was recorded in.
    pub cycle: String,
    /// What the last wake-up did with it (never `Restored`).
    pub wake_up: Option<WakeUpResult>,
    /// When it was recorded (just before the resource was put to sleep), if readable.
    pub recorded_at: Option<jiff::Timestamp>,
}

/// One target's records as the controller's decisions need them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetView {
    /// Resources still asleep.
    pub live: BTreeMap<String, LiveRecord>,
    /// Resources restored, whose records are about to be retired.
    pub restored: BTreeSet<String>,
    /// Resources a person accepted as not restored (records kept).
    pub acknowledged: BTreeSet<String>,
}

/// Restore data as the controller's decisions need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreView {
    /// Targets with records (live or restored).
    pub targets: BTreeMap<String, TargetView>,
    /// Targets whose data cannot be read.
    pub corrupt: BTreeSet<String>,
}

impl RestoreView {
    /// Reads ConfigMap data.
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let mut view = Self::default();
        for target in data.keys() {
            match read_target(data, target) {
                Err(_) => {
                    view.corrupt.insert(target.clone());
                }
                Ok(records) => {
                    let mut t = TargetView::default();
                    for (key, r) in records.resources {
                        if r.is_live() {
                            t.live.insert(
                                key,
                                LiveRecord {
                                    recorded_at: r.recorded_at.parse().ok(),
                                    cycle: r.cycle_id,
                                    wake_up: r.wake_up,
                                },
                            );
                        } else if r.is_restored() {
                            t.restored.insert(key);
                        } else {
                            t.acknowledged.insert(key);
                        }
                    }
                    view.targets.insert(target.clone(), t);
                }
            }
        }
        view
    }

    /// Targets with resources still asleep, each with the cycle of its oldest live record.
    pub fn asleep(&self) -> BTreeMap<String, String> {
        self.targets
            .iter()
            .filter_map(|(t, v)| Some((t.clone(), v.live.values().map(|r| r.cycle.clone()).min()?)))
            .collect()
    }

    /// The restored records, as `(target, key)`.
    pub fn restored(&self) -> BTreeSet<(String, String)> {
        self.targets
            .iter()
            .flat_map(|(t, v)| v.restored.iter().map(move |k| (t.clone(), k.clone())))
            .collect()
    }

    /// The acknowledged records of `targets`, as `(target, key)`.
    pub fn acknowledged<'a>(
        &'a self,
        targets: impl Fn(&str) -> bool + 'a,
    ) -> BTreeSet<(String, String)> {
        self.targets
            .iter()
            .filter(|(t, _)| targets(t))
            .flat_map(|(t, v)| v.acknowledged.iter().map(move |k| (t.clone(), k.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-11-27T01:00:00Z".parse().unwrap()
    }

    fn record(
        data: &mut BTreeMap<String, String>,
        cycle: &str,
        key: &str,
        state: Value,
    ) -> RecordOutcome {
        merge_record(
            data,
            "db",
            cycle,
            key,
            state,
            now(),
            MAX_DATA_BYTES,
            &BTreeSet::new(),
        )
        .unwrap()
    }

    #[test]
    fn the_first_record_wins_until_restored() {
        let mut data = BTreeMap::new();
        let out = record(
            &mut data,
            "c1",
            "instance:db",
            json!({"status": "available"}),
        );
        assert_eq!(out, RecordOutcome::Stored(json!({"status": "available"})));
        // After a crash the runner sees the instance stopped: the earlier record stays.
        let out = record(&mut data, "c1", "instance:db", json!({"status": "stopped"}));
        assert_eq!(
            out,
            RecordOutcome::AlreadyRecorded(json!({"status": "available"}))
        );
        // A later cycle after a wake-up that could not restore it: still the first record.
        mark_wake_up(
            &mut data,
            "db",
            "c1",
            &[(
                "instance:db".into(),
                WakeUpOutcome::NotFound,
                Some("gone".into()),
            )],
            now(),
        )
        .unwrap();
        let out = record(&mut data, "c2", "instance:db", json!({"status": "stopped"}));
        assert_eq!(
            out,
            RecordOutcome::AlreadyRecorded(json!({"status": "available"}))
        );
        assert_eq!(
            RestoreView::from_data(&data).asleep(),
            BTreeMap::from([("db".to_string(), "c1".to_string())])
        );
        // Once restored, the next hibernation records afresh.
        mark_wake_up(
            &mut data,
            "db",
            "c2",
            &[("instance:db".into(), WakeUpOutcome::Restored, None)],
            now(),
        )
        .unwrap();
        assert!(RestoreView::from_data(&data).asleep().is_empty());
        let out = record(
            &mut data,
            "c3",
            "instance:db",
            json!({"status": "available"}),
        );
        assert_eq!(out, RecordOutcome::Stored(json!({"status": "available"})));
    }

    #[test]
    fn restored_records_are_retired_and_the_others_stay() {
        let mut data = BTreeMap::new();
        record(&mut data, "c1", "a", json!({}));
        record(&mut data, "c1", "b", json!({}));
        record(&mut data, "c1", "c", json!({}));
        mark_wake_up(
            &mut data,
            "db",
            "c1",
            &[
                ("a".into(), WakeUpOutcome::Restored, None),
                ("b".into(), WakeUpOutcome::Failed, Some("refused".into())),
                ("zzz".into(), WakeUpOutcome::Restored, None),
            ],
            now(),
        )
        .unwrap();
        let view = RestoreView::from_data(&data);
        let restored = view.restored();
        assert_eq!(
            restored,
            BTreeSet::from([("db".to_string(), "a".to_string())])
        );
        let t = &view.targets["db"];
        assert_eq!(t.live.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(
            t.live["b"].wake_up.as_ref().unwrap().result,
            WakeUpOutcome::Failed
        );
        // Only what was decided on goes: a record marked restored after the decision stays.
        mark_wake_up(
            &mut data,
            "db",
            "c1",
            &[("c".into(), WakeUpOutcome::Restored, None)],
            now(),
        )
        .unwrap();
        assert_eq!(
            retire(&mut data, &restored),
            [("db".to_string(), "a".to_string())]
        );
        assert_eq!(RestoreView::from_data(&data).restored().len(), 1, "c stays");
        mark_wake_up(
            &mut data,
            "db",
            "c1",
            &[("b".into(), WakeUpOutcome::Restored, None)],
            now(),
        )
        .unwrap();
        let restored = RestoreView::from_data(&data).restored();
        assert_eq!(retire(&mut data, &restored).len(), 2);
        assert!(data.is_empty());
    }

    #[test]
    fn records_must_be_objects_and_fit() {
        let mut data = BTreeMap::new();
        assert!(matches!(
            merge_record(
                &mut data,
                "db",
                "c1",
                "k",
                json!("x"),
                now(),
                MAX_DATA_BYTES,
                &BTreeSet::new()
            ),
            Err(RestoreDataError::NotAnObject { .. })
        ));
        let big = json!({"blob": "x".repeat(600)});
        let none = BTreeSet::new();
        merge_record(&mut data, "db", "c1", "k1", big.clone(), now(), 1000, &none).unwrap();
        let before = data.clone();
        let err = merge_record(&mut data, "db", "c1", "k2", big, now(), 1000, &none).unwrap_err();
        assert!(
            matches!(err, RestoreDataError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("k2"), "{err}");
        assert_eq!(data, before, "nothing stored");
    }

    #[test]
    fn acknowledged_records_are_kept_but_no_longer_asleep() {
        let mut data = BTreeMap::new();
        record(&mut data, "c1", "a", json!({"n": 1}));
        record(&mut data, "c1", "b", json!({}));
        mark_wake_up(
            &mut data,
            "db",
            "c1",
            &[("a".into(), WakeUpOutcome::NotFound, Some("gone".into()))],
            now(),
        )
        .unwrap();
        let targets = BTreeSet::from(["db".to_string()]);
        // Every live record: "a" reported not found, "b" never reported (its runner failed).
        assert_eq!(acknowledge(&mut data, &targets, now()), 2);
        let view = RestoreView::from_data(&data);
        assert!(view.targets["db"].live.is_empty());
        assert_eq!(view.targets["db"].acknowledged.len(), 2);
        assert!(view.asleep().is_empty());
        assert!(
            retire(&mut data, &view.restored()).is_empty(),
            "acknowledged records are kept"
        );
        // The next hibernation records "a" afresh; the other acknowledged record can go.
        let out = record(&mut data, "c2", "a", json!({"n": 2}));
        assert_eq!(out, RecordOutcome::Stored(json!({"n": 2})));
        let acknowledged = RestoreView::from_data(&data).acknowledged(|_| true);
        assert_eq!(
            acknowledged,
            BTreeSet::from([("db".to_string(), "b".to_string())])
        );
        assert_eq!(retire(&mut data, &acknowledged).len(), 1);
    }

    #[test]
    fn a_lost_record_is_not_made_again() {
        let mut data = BTreeMap::new();
        let asleep = BTreeSet::from(["instance:db".to_string()]);
        // The plan put instance:db to sleep and its record is gone: a new one would say
        // "stopped".
        let err = merge_record(
            &mut data,
            "db",
            "c1",
            "instance:db",
            json!({"status": "stopped"}),
            now(),
            MAX_DATA_BYTES,
            &asleep,
        )
        .unwrap_err();
        assert!(matches!(err, RestoreDataError::Lost { .. }), "{err}");
        assert!(data.is_empty());
        // Restored (about to be retired): recorded afresh.
        record(&mut data, "c1", "instance:db", json!({}));
        mark_wake_up(
            &mut data,
            "db",
            "c1",
            &[("instance:db".into(), WakeUpOutcome::Restored, None)],
            now(),
        )
        .unwrap();
        let out = merge_record(
            &mut data,
            "db",
            "c2",
            "instance:db",
            json!({"n": 2}),
            now(),
            MAX_DATA_BYTES,
            &asleep,
        )
        .unwrap();
        assert_eq!(out, RecordOutcome::Stored(json!({"n": 2})));
    }

    #[test]
    fn unreadable_targets_are_reported_not_dropped() {
        let mut data = BTreeMap::from([("db".to_string(), "{not json".to_string())]);
        let view = RestoreView::from_data(&data);
        assert!(view.corrupt.contains("db"));
        let all = BTreeSet::from([("db".to_string(), "x".to_string())]);
        assert!(retire(&mut data, &all).is_empty());
        assert_eq!(data.len(), 1);
    }
}

/// The prefixes of record keys (`<prefix>:<id>`): one source for the runner's executors, which
/// make the keys, and the controller's scope check ([`key_in_scope`]).
pub mod key_prefix {
    /// RDS DB instances.
    pub const RDS_INSTANCE: &str = "instance";
    /// Aurora clusters.
    pub const RDS_CLUSTER: &str = "cluster";
    /// EKS managed node groups.
    pub const NODE_GROUP: &str = "nodegroup";
    /// EC2 instances.
    pub const EC2: &str = "ec2";
    /// Auto-scaling groups.
    pub const ASG: &str = "asg";
    /// ECS services (`ecs:<cluster name>/<service name>`).
    pub const ECS: &str = "ecs";
    /// Deployments (`deployment:<namespace>/<name>`).
    pub const DEPLOYMENT: &str = "deployment";
    /// StatefulSets (`statefulset:<namespace>/<name>`).
    pub const STATEFULSET: &str = "statefulset";
    /// Karpenter NodePools.
    pub const NODE_POOL: &str = "nodepool";
    /// CronJobs (`cronjob:<namespace>/<name>`).
    pub const CRONJOB: &str = "cronjob";
    /// KEDA ScaledObjects paused for the night (`scaledobject:<namespace>/<name>`).
    pub const SCALED_OBJECT: &str = "scaledobject";
    /// Flux Kustomizations (`kustomization:<namespace>/<name>`).
    pub const KUSTOMIZATION: &str = "kustomization";
    /// Flux HelmReleases (`helmrelease:<namespace>/<name>`).
    pub const HELM_RELEASE: &str = "helmrelease";
    /// Argo CD Applications (`application:<namespace>/<name>`).
    pub const APPLICATION: &str = "application";
    /// Noop targets.
    pub const NOOP: &str = "noop";
}

/// The key prefixes of the records a target with `params` makes: `instance`/`cluster` for
/// RDS, `nodegroup` for EKS, `ec2`, `asg`, `ecs`, for workloads `deployment`/`statefulset`/`cronjob`,
/// `scaledobject` and `<kind>.<group>` of each scalable kind it names, `nodepool` for Karpenter,
/// `kustomization`/`helmrelease`/`application` for gitops, `noop`.
pub fn key_prefixes(params: &crate::TargetParameters) -> Vec<String> {
    use crate::TargetParameters as P;
    use crate::params::WorkloadKind;
    use key_prefix as k;
    let fixed: &[&str] = match params {
        P::Rds(_) => &[k::RDS_INSTANCE, k::RDS_CLUSTER],
        P::Eks(_) => &[k::NODE_GROUP],
        P::Ec2(_) => &[k::EC2],
        P::Asg(_) => &[k::ASG],
        P::Ecs(_) => &[k::ECS],
        P::Workloads(_) => &[k::DEPLOYMENT, k::STATEFULSET, k::CRONJOB, k::SCALED_OBJECT],
        P::Karpenter(_) => &[k::NODE_POOL],
        P::Gitops(_) => &[k::KUSTOMIZATION, k::HELM_RELEASE, k::APPLICATION],
        P::Noop(_) => &[k::NOOP],
    };
    let mut out: Vec<String> = fixed.iter().map(|p| p.to_string()).collect();
    if let P::Workloads(w) = params {
        for kind in w.kinds() {
            if let WorkloadKind::Scalable(s) = kind {
                out.push(s.key_prefix());
            }
        }
    }
    out
}

/// Whether `key` is a record a target with `params` can make: its prefix is one of
/// [`key_prefixes`], and a workload's namespace is one of the target's `namespaces` when it
/// names them. Targets that choose namespaces by a selector are not checked further: the
/// labels live in the target's cluster.
pub fn key_in_scope(params: &crate::TargetParameters, key: &str) -> Result<(), String> {
    use crate::TargetParameters as P;
    let prefixes = key_prefixes(params);
    let (prefix, rest) = key
        .split_once(':')
        .ok_or_else(|| "it has no \"kind:\" prefix".to_string())?;
    if !prefixes.iter().any(|p| p == prefix) || rest.is_empty() {
        return Err(format!(
            "this type records {} keys",
            prefixes
                .iter()
                .map(|p| format!("\"{p}:...\""))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if matches!(params, P::Workloads(_) | P::Gitops(_)) {
        rest.split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
            .ok_or_else(|| "a key of this type is \"kind:namespace/name\"".to_string())?;
    }
    if let P::Ecs(e) = params {
        let cluster = e.cluster_name();
        match rest.split_once('/') {
            Some((c, service)) if c == cluster && !service.is_empty() => {}
            _ => {
                return Err(format!(
                    "a key of this type is \"ecs:{cluster}/<service>\" (the target's cluster)"
                ));
            }
        }
    }
    if let P::Workloads(w) = params {
        let (namespace, _) = rest.split_once('/').unwrap_or_default();
        if let Some(namespaces) = &w.namespaces
            && !namespaces.iter().any(|n| n == namespace)
        {
            return Err(format!(
                "namespace {namespace:?} is not one of the target's namespaces {namespaces:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod scope_tests {
    use super::key_in_scope;
    use crate::{TargetParameters, TargetType};
    use serde_json::json;

    fn params(t: TargetType, v: serde_json::Value) -> TargetParameters {
        TargetParameters::parse(t, Some(&v)).unwrap()
    }

    #[test]
    fn keys_must_belong_to_the_target_type_and_its_namespaces() {
        let rds = params(
            TargetType::Rds,
            json!({"selector": {"instanceIds": ["db"]}}),
        );
        assert_eq!(key_in_scope(&rds, "instance:db"), Ok(()));
        assert_eq!(key_in_scope(&rds, "cluster:aurora"), Ok(()));
        let e = key_in_scope(&rds, "asg:web").unwrap_err();
        assert!(e.contains("\"instance:...\" or \"cluster:...\""), "{e}");
        assert!(key_in_scope(&rds, "instance:").is_err());
        assert!(key_in_scope(&rds, "db").is_err());
        let ecs = params(
            TargetType::Ecs,
            json!({"cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/web", "selector": {"services": ["api"]}}),
        );
        assert_eq!(key_in_scope(&ecs, "ecs:web/api"), Ok(()));
        let e = key_in_scope(&ecs, "ecs:other/api").unwrap_err();
        assert!(e.contains("\"ecs:web/<service>\""), "{e}");
        assert!(key_in_scope(&ecs, "ecs:web/").is_err());
        assert!(key_in_scope(&ecs, "ecs:web").is_err());

        let w = params(TargetType::Workloads, json!({"namespaces": ["team-a"]}));
        assert_eq!(key_in_scope(&w, "deployment:team-a/web"), Ok(()));
        let e = key_in_scope(&w, "deployment:kube-system/coredns").unwrap_err();
        assert!(e.contains("\"kube-system\" is not one of"), "{e}");
        assert!(key_in_scope(&w, "deployment:team-a").is_err());
        assert!(key_in_scope(&w, "nodepool:default").is_err());
        let by_label = params(
            TargetType::Workloads,
            json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}}),
        );
        assert_eq!(key_in_scope(&by_label, "statefulset:any/db"), Ok(()));

        let rollouts = params(
            TargetType::Workloads,
            json!({"namespaces": ["team-a"], "kinds": ["CronJob", "argoproj.io/v1alpha1/Rollout"]}),
        );
        assert_eq!(
            key_in_scope(&rollouts, "rollout.argoproj.io:team-a/web"),
            Ok(())
        );
        assert_eq!(key_in_scope(&rollouts, "cronjob:team-a/report"), Ok(()));
        assert_eq!(key_in_scope(&rollouts, "scaledobject:team-a/web"), Ok(()));
        assert!(key_in_scope(&w, "rollout.argoproj.io:team-a/web").is_err());

        let g = params(
            TargetType::Gitops,
            json!({"flux": {"kustomizations": [{"namespace": "flux-system", "name": "apps"}]}}),
        );
        assert_eq!(key_in_scope(&g, "kustomization:flux-system/apps"), Ok(()));
        assert_eq!(key_in_scope(&g, "application:argocd/web"), Ok(()));
        assert!(key_in_scope(&g, "application:web").is_err());
        assert!(key_in_scope(&g, "deployment:argocd/web").is_err());
    }
}
