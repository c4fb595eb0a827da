//! Restore data (SPEC "Restore data"): what each target's resources looked like before the
//! runner changed them, stored in ConfigMap `hibernator-restore-<plan>`, one key per target
//! (the format and its pure operations are in [`hibernator_api::restore`]).
//!
//! - Write-ahead: a runner records a resource before changing it; the gRPC answer is sent only
//!   after the ConfigMap update succeeded.
//! - The first record of a resource wins until it is restored: a later observation ("already
//!   stopped", after a crash or a failed wake-up) never replaces the earlier one ("was
//!   running").
//! - A wake-up runner's completion marks each record restored, not found or failed; the
//!   reconciler retires restored records after the plan's status stopped counting them.
//! - The ConfigMap has no owner reference, so that deleting a plan with `onDelete: Leave` keeps
//!   it; it carries the plan's UID as a label instead, and is used only when it has the labels
//!   of Hibernator's restore data (a ConfigMap of someone else's under that name is refused).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use futures::FutureExt;
use hibernator_api::plan::HibernationPlan;
use hibernator_api::restore::{
    MAX_DATA_BYTES, RecordOutcome, RestoreDataError, WakeUpOutcome, acknowledge, mark_wake_up,
    merge_sized_record, read_target, retire,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::jobs::{MANAGER, label_value, labels};

pub use hibernator_api::naming::labels::RESTORE as RESTORE_LABEL;

/// The restore ConfigMap's name for a plan.
pub fn config_map_name(plan: &str) -> String {
    hibernator_api::naming::restore_config_map(plan)
}

/// The plan whose restore data is meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (recorded on the ConfigMap as a label).
    pub uid: String,
}

/// Restore data problems.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A record or the stored data is unusable.
    #[error("{problem} (ConfigMap {config_map})")]
    Data {
        /// ConfigMap name.
        config_map: String,
        /// The problem.
        #[source]
        problem: RestoreDataError,
    },
    /// The ConfigMap under the restore data's name is not Hibernator's.
    #[error(
        "ConfigMap {namespace}/{name} is not Hibernator's restore data (it lacks the labels {managed_by}={MANAGER} and {RESTORE_LABEL}=true); refusing to use it: rename or remove it"
    )]
    Foreign {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The managed-by label key.
        managed_by: &'static str,
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
        source: Arc<kube::Error>,
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
            Self::Data {
                problem: RestoreDataError::NotAnObject { .. },
                ..
            } => "bad_record",
            Self::Data {
                problem: RestoreDataError::TooLarge { .. },
                ..
            } => "too_large",
            Self::Data {
                problem: RestoreDataError::Lost { .. },
                ..
            } => "lost",
            Self::Data { .. } => "corrupt",
            Self::Foreign { .. } => "foreign",
            Self::Api { .. } => "api",
            Self::Contended { .. } => "contended",
        }
    }

    /// True when trying again cannot help (the runner must not wait for it).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Data { .. } | Self::Foreign { .. })
    }
}

/// True when a ConfigMap carries the labels of Hibernator's restore data.
pub fn is_ours(cm: &ConfigMap) -> bool {
    let l = cm.labels();
    l.get(labels::MANAGED_BY).map(String::as_str) == Some(MANAGER)
        && l.get(RESTORE_LABEL).map(String::as_str) == Some("true")
}

/// A plan's restore data as loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The ConfigMap's data (empty when there is none, or it is not ours).
    pub data: BTreeMap<String, String>,
    /// Why the ConfigMap under that name cannot be used, if it cannot.
    pub problem: Option<String>,
    /// The UID of another plan of the same name that left this data (deleted while its
    /// targets slept); the data is the current plan's to wake up.
    pub left_by: Option<String>,
}

/// How often a write that lost an optimistic-concurrency race is tried again.
const CONFLICT_ATTEMPTS: u32 = 20;

/// A change to a plan's restore data, type-erased so that changes of different kinds (records,
/// wake-up marks, retirements) can share one write.
type Change = Box<
    dyn FnMut(&mut BTreeMap<String, String>) -> Result<Box<dyn Any + Send>, RestoreDataError>
        + Send,
>;

/// A change waiting for its plan's next write, and where its result goes.
struct Queued {
    change: Change,
    reply: oneshot::Sender<Result<Box<dyn Any + Send>, RestoreError>>,
}

/// The changes of one plan waiting to be written, and whether a writer is at work on them.
#[derive(Default)]
struct PlanQueue {
    waiting: Vec<Queued>,
    writing: bool,
}

/// How long a runner's first record waits for those of others of its plan before its
/// ConfigMap write starts: the runners of one step of a hibernation start together and record
/// their first resources within a moment of each other, and each of those records cost a
/// ConfigMap write and a status write of its own. A runner's next records (it records one
/// resource after the other, each before changing it) do not wait.
const FIRST_RECORD_LINGER: Duration = Duration::from_millis(300);

/// A target that recorded within this long records its next resource: no
/// [`FIRST_RECORD_LINGER`].
const RECORDS_LATELY: Duration = Duration::from_secs(60);

/// How long the results of a wake-up runner wait for those of others of its plan before
/// their ConfigMap write starts. A runner reports its results once, at its end, and the
/// runners of one step of a wake-up tend to end within a second or two of each other: each
/// of them cost a write of its own, now a step's results mostly share one or two. A wake-up
/// step that others depend on ends this much later.
const WAKE_UP_LINGER: Duration = Duration::from_secs(1);

/// How long a read that found no restore ConfigMap is trusted without reading again. Every
/// change this replica makes and every change the watch of restore ConfigMaps reports ends it
/// at once; the limit only bounds what neither sees (a same-named ConfigMap without the restore
/// labels, which is refused when written anyway).
const ABSENT_FOR: Duration = Duration::from_secs(30 * 60);

/// Plans known to have no restore ConfigMap, so that the reconcile of a plan that never slept
/// (most plans, most of the time) reads nothing: at ten thousand plans the safety reconciles
/// alone were a GET every 30 ms.
#[derive(Default)]
struct Absent {
    /// `(namespace, ConfigMap name)` -> when a read found none.
    since: HashMap<(String, String), std::time::Instant>,
    /// Counts every change seen; a read that found none is remembered only when nothing
    /// changed while it was under way (a ConfigMap created in between would be missed).
    changes: u64,
}

/// (namespace, plan, target).
type TargetKey = (String, String, String);

/// The restore store: ConfigMaps updated with optimistic concurrency. Within this process one
/// writer at a time works for a plan, and the changes that arrive while it writes go together
/// in its next write (group commit): five runners of a plan recording at once cost one or two
/// ConfigMap writes, not five. A runner's first record and a wake-up runner's results wait a
/// moment before they start a write, for those of the plan's other runners
/// ([`FIRST_RECORD_LINGER`], [`WAKE_UP_LINGER`]). Each caller is answered only after the write
/// that holds its change succeeded, so write-ahead is unchanged.
#[derive(Clone)]
pub struct RestoreStore {
    client: Client,
    queues: Arc<Mutex<HashMap<(String, String), PlanQueue>>>,
    absent: Arc<Mutex<Absent>>,
    /// The reconciler's cache of restore ConfigMaps (metadata), while this replica leads.
    watched: Arc<Mutex<Option<Store<PartialObjectMeta<ConfigMap>>>>>,
    /// `(namespace, ConfigMap name)` this store wrote: the cache may not show them yet.
    written: Arc<Mutex<HashSet<(String, String)>>>,
    /// When each target last recorded (namespace, plan, target), to tell a runner's first
    /// record from its next ones (see [`FIRST_RECORD_LINGER`]).
    last_records: Arc<Mutex<HashMap<TargetKey, std::time::Instant>>>,
    limit: usize,
}

impl RestoreStore {
    /// A store using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            queues: Default::default(),
            absent: Default::default(),
            watched: Default::default(),
            written: Default::default(),
            last_records: Default::default(),
            limit: MAX_DATA_BYTES,
        }
    }

    /// The same store with another size limit for the data (tests).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Did `target` record within the last [`RECORDS_LATELY`]? Notes that it records now.
    fn recorded_lately(&self, plan: &PlanKey, target: &str) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last_records.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 10_000 {
            last.retain(|_, at| now.duration_since(*at) < RECORDS_LATELY);
        }
        let key = (
            plan.namespace.clone(),
            plan.name.clone(),
            target.to_string(),
        );
        last.insert(key, now)
            .is_some_and(|at| now.duration_since(at) < RECORDS_LATELY)
    }

    fn api(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Notes that the restore ConfigMap `name` in `namespace` changed (a watch event, or a
    /// write of this replica): the next load reads it.
    pub fn changed(&self, namespace: &str, name: &str) {
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        absent.changes += 1;
        absent
            .since
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Forgets every ConfigMap found missing: a replica that starts to lead (again) has not
    /// watched what the others wrote meanwhile.
    pub fn forget_absent(&self) {
        let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        absent.changes += 1;
        absent.since.clear();
    }

    /// The plan's restore data (empty when there is no ConfigMap, or it is not ours), read
    /// from the API server.
    pub async fn load(&self, plan: &PlanKey) -> Result<Loaded, RestoreError> {
        self.read(plan, false).await
    }

    /// [`Self::load`] for the reconciler, which runs only while the watch of restore
    /// ConfigMaps reports their changes ([`Self::changed`]) and fills the cache given to
    /// [`Self::watch_with`]. Not read at all: the ConfigMap of a plan that `expects` no record
    /// (its status counts none asleep) when the synced cache does not hold it and this store
    /// did not write it (so ten thousand plans starting up cost no GET each), and a plan whose
    /// ConfigMap a recent read found missing, with no change seen since (see [`ABSENT_FOR`]).
    /// A plan that expects records is never answered from the cache: a ConfigMap that is not
    /// Hibernator's, which the cache does not show, must be told apart from a lost one (the
    /// memory of a read that found none still applies: that read would have found a foreign
    /// one). The gRPC service
    /// (which also runs on replicas that do not lead and watch nothing) always reads.
    pub async fn load_watched(
        &self,
        plan: &PlanKey,
        expects: bool,
    ) -> Result<Loaded, RestoreError> {
        let name = config_map_name(&plan.name);
        if !expects && self.cached_missing(&plan.namespace, &name) {
            return Ok(Loaded::default());
        }
        self.read(plan, true).await
    }

    /// Uses `cache` (restore ConfigMaps as the leader's watch sees them) from now on.
    pub fn watch_with(&self, cache: Store<PartialObjectMeta<ConfigMap>>) {
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) = Some(cache);
    }

    /// True when the synced cache does not hold the ConfigMap and this store did not write it.
    fn cached_missing(&self, namespace: &str, name: &str) -> bool {
        let cache = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(cache) = cache else {
            return false;
        };
        let synced = matches!(cache.wait_until_ready().now_or_never(), Some(Ok(())));
        synced
            && cache.get(&ObjectRef::new(name).within(namespace)).is_none()
            && !self
                .written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(namespace.to_string(), name.to_string()))
    }

    async fn read(&self, plan: &PlanKey, watched: bool) -> Result<Loaded, RestoreError> {
        let name = config_map_name(&plan.name);
        let key = (plan.namespace.clone(), name.clone());
        let changes = {
            let absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            if watched
                && absent
                    .since
                    .get(&key)
                    .is_some_and(|t| t.elapsed() < ABSENT_FOR)
            {
                return Ok(Loaded::default());
            }
            absent.changes
        };
        let cm = self
            .api(&plan.namespace)
            .get_opt(&name)
            .await
            .map_err(|source| RestoreError::Api {
                verb: "read",
                namespace: plan.namespace.clone(),
                name: name.clone(),
                source: Arc::new(source),
            })?;
        let Some(cm) = cm else {
            let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            if watched && absent.changes == changes {
                absent.since.insert(key, std::time::Instant::now());
            }
            return Ok(Loaded::default());
        };
        if !is_ours(&cm) {
            return Ok(Loaded {
                problem: Some(
                    RestoreError::Foreign {
                        namespace: plan.namespace.clone(),
                        name,
                        managed_by: labels::MANAGED_BY,
                    }
                    .to_string(),
                ),
                ..Loaded::default()
            });
        }
        let left_by = cm
            .labels()
            .get(labels::PLAN_UID)
            .filter(|uid| **uid != plan.uid)
            .cloned();
        Ok(Loaded {
            data: cm.data.unwrap_or_default(),
            problem: None,
            left_by,
        })
    }

    /// Records a resource's state (write-ahead). Returns only once the record is stored.
    /// A resource the plan's status counts as asleep whose record is gone is refused (see
    /// [`merge_record`]).
    pub async fn record(
        &self,
        plan: &PlanKey,
        target: &str,
        cycle: &str,
        key: &str,
        state: Value,
    ) -> Result<RecordOutcome, RestoreError> {
        self.record_sized(
            plan,
            target,
            cycle,
            key,
            state,
            None,
            jiff::Timestamp::now(),
        )
        .await
    }

    /// [`Self::record`] with the resource's sizing, stamped `now` (the schedule clock).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_sized(
        &self,
        plan: &PlanKey,
        target: &str,
        cycle: &str,
        key: &str,
        state: Value,
        sizing: Option<Value>,
        now: jiff::Timestamp,
    ) -> Result<RecordOutcome, RestoreError> {
        let limit = self.limit;
        let asleep = self.asleep_keys(plan, target).await?;
        let linger = match self.recorded_lately(plan, target) {
            true => Duration::ZERO,
            false => FIRST_RECORD_LINGER,
        };
        let (target, cycle, key) = (target.to_string(), cycle.to_string(), key.to_string());
        self.update_after(linger, plan, move |data| {
            merge_sized_record(
                data,
                &target,
                &cycle,
                &key,
                state.clone(),
                sizing.clone(),
                now,
                limit,
                &asleep,
            )
        })
        .await
    }

    /// The keys of `target` that the plan's status counts as asleep.
    async fn asleep_keys(
        &self,
        plan: &PlanKey,
        target: &str,
    ) -> Result<BTreeSet<String>, RestoreError> {
        let api: Api<HibernationPlan> = Api::namespaced(self.client.clone(), &plan.namespace);
        let found = api
            .get_opt(&plan.name)
            .await
            .map_err(|source| RestoreError::Api {
                verb: "read the plan of",
                namespace: plan.namespace.clone(),
                name: config_map_name(&plan.name),
                source: Arc::new(source),
            })?;
        Ok(found
            .filter(|p| p.metadata.uid.as_deref() == Some(plan.uid.as_str()))
            .and_then(|p| p.status)
            .into_iter()
            .flat_map(|s| s.asleep)
            .filter(|a| a.name == target)
            .flat_map(|a| a.keys)
            .collect())
    }

    /// Marks a target's records with what its wake-up of `cycle` did with them.
    pub async fn mark_wake_up(
        &self,
        plan: &PlanKey,
        target: &str,
        cycle: &str,
        results: &[(String, WakeUpOutcome, Option<String>)],
        now: jiff::Timestamp,
    ) -> Result<bool, RestoreError> {
        let (target, cycle, results) = (target.to_string(), cycle.to_string(), results.to_vec());
        self.update_after(WAKE_UP_LINGER, plan, move |data| {
            mark_wake_up(data, &target, &cycle, &results, now)
        })
        .await
    }

    /// Removes the restored or acknowledged records `keys` (after the plan's status stopped
    /// counting them as asleep).
    pub async fn retire(
        &self,
        plan: &PlanKey,
        keys: &BTreeSet<(String, String)>,
    ) -> Result<Vec<(String, String)>, RestoreError> {
        let keys = keys.clone();
        self.update(plan, move |data| Ok(retire(data, &keys))).await
    }

    /// Acknowledges every live record of `targets` (a person accepted that they are not
    /// restored).
    pub async fn acknowledge(
        &self,
        plan: &PlanKey,
        targets: &BTreeSet<String>,
    ) -> Result<usize, RestoreError> {
        let targets = targets.clone();
        self.update(plan, move |data| {
            Ok(acknowledge(data, &targets, jiff::Timestamp::now()))
        })
        .await
    }

    /// Takes over restore data left by an earlier plan of the same name (its UID label is set
    /// to this plan's).
    pub async fn adopt(&self, plan: &PlanKey) -> Result<(), RestoreError> {
        self.update(plan, |_| Ok(())).await
    }

    /// A target's records still to be woken up: resource key -> state, and the newest cycle
    /// among them.
    pub async fn fetch(
        &self,
        plan: &PlanKey,
        target: &str,
    ) -> Result<(BTreeMap<String, Value>, String), RestoreError> {
        let loaded = self.load(plan).await?;
        if loaded.problem.is_some() {
            return Err(self.foreign(plan));
        }
        let records = read_target(&loaded.data, target).map_err(|problem| RestoreError::Data {
            config_map: config_map_name(&plan.name),
            problem,
        })?;
        let live: BTreeMap<String, _> = records
            .resources
            .into_iter()
            .filter(|(_, r)| r.is_live())
            .collect();
        let cycle = live
            .values()
            .map(|r| r.cycle_id.clone())
            .max()
            .unwrap_or_default();
        Ok((live.into_iter().map(|(k, r)| (k, r.state)).collect(), cycle))
    }

    fn foreign(&self, plan: &PlanKey) -> RestoreError {
        RestoreError::Foreign {
            namespace: plan.namespace.clone(),
            name: config_map_name(&plan.name),
            managed_by: labels::MANAGED_BY,
        }
    }

    /// Applies `change` to the ConfigMap's data and writes it back, retrying on conflicts. The
    /// ConfigMap gets (or keeps) the labels of restore data and the plan's UID. The change may
    /// share its write with others of the same plan (see [`RestoreStore`]); its result comes
    /// back once that write succeeded.
    async fn update<T: Send + 'static>(
        &self,
        plan: &PlanKey,
        change: impl FnMut(&mut BTreeMap<String, String>) -> Result<T, RestoreDataError>
        + Send
        + 'static,
    ) -> Result<T, RestoreError> {
        self.update_after(Duration::ZERO, plan, change).await
    }

    /// [`Self::update`]; a change that finds no write of its plan under way waits `linger`
    /// before it starts one, so that changes arriving meanwhile share it.
    async fn update_after<T: Send + 'static>(
        &self,
        linger: Duration,
        plan: &PlanKey,
        mut change: impl FnMut(&mut BTreeMap<String, String>) -> Result<T, RestoreDataError>
        + Send
        + 'static,
    ) -> Result<T, RestoreError> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            change: Box::new(move |data| change(data).map(|v| Box::new(v) as Box<dyn Any + Send>)),
            reply,
        };
        self.changed(&plan.namespace, &config_map_name(&plan.name));
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((plan.namespace.clone(), config_map_name(&plan.name)));
        let start_writer = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues
                .entry((plan.namespace.clone(), plan.name.clone()))
                .or_default();
            queue.waiting.push(queued);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            // A task of its own: the caller's future may be dropped (a runner that hung up),
            // and the changes of the others must still be written.
            let (store, plan) = (self.clone(), plan.clone());
            tokio::spawn(async move {
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
                store.write_queued(&plan).await
            });
        }
        let result = answer.await.unwrap_or_else(|_| {
            Err(RestoreError::Contended {
                namespace: plan.namespace.clone(),
                name: config_map_name(&plan.name),
            })
        })?;
        Ok(*result
            .downcast::<T>()
            .expect("a change's result has the change's type"))
    }

    /// Writes the plan's waiting changes, a batch per write, until none are left.
    async fn write_queued(&self, plan: &PlanKey) {
        let key = (plan.namespace.clone(), plan.name.clone());
        loop {
            let batch = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let queue = queues.entry(key.clone()).or_default();
                if queue.waiting.is_empty() {
                    queues.remove(&key);
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            self.write_batch(plan, batch).await;
        }
    }

    /// One read-modify-write of the ConfigMap holding every change of `batch` that applies; a
    /// change that fails leaves the data as it found it and gets its own error.
    async fn write_batch(&self, plan: &PlanKey, mut batch: Vec<Queued>) {
        let (namespace, name) = (plan.namespace.as_str(), config_map_name(&plan.name));
        let api = self.api(namespace);
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let wanted_labels = BTreeMap::from([
            (labels::MANAGED_BY.to_string(), MANAGER.to_string()),
            (labels::PLAN.to_string(), label_value(&plan.name)),
            (RESTORE_LABEL.to_string(), "true".to_string()),
            (labels::PLAN_UID.to_string(), plan.uid.clone()),
        ]);
        // What every change of the batch is told when the write itself fails.
        let fail_all = |batch: Vec<Queued>, error: &dyn Fn() -> RestoreError| {
            for q in batch {
                let _ = q.reply.send(Err(error()));
            }
        };
        let name_ref = &name;
        let api_err = |verb: &'static str, source: Arc<kube::Error>| {
            move || RestoreError::Api {
                verb,
                namespace: namespace.into(),
                name: name_ref.clone(),
                source: source.clone(),
            }
        };
        for attempt in 0..CONFLICT_ATTEMPTS {
            if attempt > 0 {
                // Writers that conflicted (other replicas) must not retry in lockstep.
                let ms = fastrand::u64(0..10 * u64::from(attempt.min(10)));
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let existing = match api.get_opt(&name).await {
                Ok(cm) => cm,
                Err(e) => return fail_all(batch, &api_err("read", Arc::new(e))),
            };
            if existing.as_ref().is_some_and(|cm| !is_ours(cm)) {
                return fail_all(batch, &|| self.foreign(plan));
            }
            let mut cm = existing.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                },
                ..Default::default()
            });
            let mut data = cm.data.take().unwrap_or_default();
            let before = data.clone();
            let results: Vec<_> = batch
                .iter_mut()
                .map(|q| {
                    let kept = data.clone();
                    (q.change)(&mut data).inspect_err(|_| data = kept)
                })
                .collect();
            let labels_before = cm.labels().clone();
            cm.labels_mut().extend(wanted_labels.clone());
            let unchanged = data == before && *cm.labels() == labels_before;
            // Nothing to write; and no empty ConfigMap is created for a change that adds nothing.
            let written =
                if (existing.is_some() && unchanged) || (existing.is_none() && data.is_empty()) {
                    Ok(())
                } else {
                    cm.data = Some(data);
                    match existing {
                        Some(_) => api.replace(&name, &pp, &cm).await.map(|_| ()),
                        None => api.create(&pp, &cm).await.map(|_| ()),
                    }
                };
            match written {
                Ok(()) => {
                    self.changed(namespace, &name);
                    for (q, result) in batch.into_iter().zip(results) {
                        let _ = q.reply.send(result.map_err(|problem| RestoreError::Data {
                            config_map: name.clone(),
                            problem,
                        }));
                    }
                    return;
                }
                // Changed or created meanwhile: read again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return fail_all(batch, &api_err("write", Arc::new(e))),
            }
        }
        fail_all(batch, &|| RestoreError::Contended {
            namespace: namespace.into(),
            name: name.clone(),
        })
    }
}
