//! The reconcile pipeline: fetch -> validate -> resolve references -> decide -> apply ->
//! one status patch when something changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hibernator_api::common::{condition, condition_types, set_condition};
use hibernator_api::connector::{CloudProvider, K8SCluster};
use hibernator_api::exception::{ExceptionState, ScheduleException, ScheduleExceptionStatus};
use hibernator_api::graph::ExecutionGraph;
use hibernator_api::params::TargetType;
use hibernator_api::plan::{
    ConnectorKind, FINALIZER, HibernationPlan, HibernationPlanStatus, Operation, Phase,
};
use hibernator_api::runner::{AwsCredentials, AwsSettings, ConnectorSettings, KubernetesSettings};
use hibernator_api::schedule::{CompiledSchedule, Exception};
use hibernator_api::validate::plan_semantics;
use hibernator_api::wishes::target_wishes;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast;
use tracing::{info, instrument, warn};

use crate::clock::Clock;
use crate::decide::{Decision, JobObservation, JobOutcome, Observed, decide};
use crate::grpc::Reports;
use crate::http::Readiness;
use crate::jobs::{MANAGER, ResolvedConnector, RunnerSettings, build_job, label_value, labels};
use crate::metrics::Metrics;
use crate::restore::{PlanKey, RestoreStore};
use crate::urgency::{Due, QUIET_WRITE_INTERVAL, Urgency};
use hibernator_api::restore::RestoreView;

/// Reconcile errors: transient ones back off; the message never holds secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a request.
    #[error("failed to {verb} {what}")]
    Api {
        /// What was attempted.
        verb: &'static str,
        /// On what.
        what: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Restore data could not be read or written.
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
}

impl Error {
    /// Stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::Restore(e) => e.category(),
        }
    }
}

fn api_err(verb: &'static str, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api {
        verb,
        what,
        source: Box::new(source),
    }
}

/// Timing settings of the reconciler.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a missing connector may last before the plan is Stalled.
    pub reference_grace: SignedDuration,
    /// How long deletion waits for the wake-up.
    pub deletion_timeout: SignedDuration,
    /// Longest wait between two reconciles of a plan (real time), a safety net: every change
    /// the controller acts on is watched or computed (boundaries, exception edges, checks).
    /// Each wait this long is shortened by up to a fifth at random, so that plans started
    /// together do not come back together.
    pub max_requeue: Duration,
}

/// Longest wait between two reconciles of a plan with a holiday calendar: calendar
/// ConfigMaps are read, not watched (users' ConfigMaps would fill the cache), so an edit is
/// seen within this.
const CALENDAR_LOOK: Duration = Duration::from_secs(300);

impl Default for Timing {
    fn default() -> Self {
        Self {
            reference_grace: SignedDuration::from_mins(5),
            deletion_timeout: SignedDuration::from_mins(30),
            max_requeue: Duration::from_secs(900),
        }
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Schedule clock.
    pub clock: Clock,
    /// How runner Jobs are built.
    pub runner: RunnerSettings,
    /// Restore data.
    pub store: RestoreStore,
    /// Runner reports.
    pub reports: Reports,
    /// Metrics.
    pub metrics: Metrics,
    /// Timing.
    pub timing: Timing,
    /// Prices of the savings ledger.
    pub prices: std::sync::Arc<hibernator_api::savings::PriceTable>,
    /// Caches.
    pub jobs: Store<Job>,
    /// Caches.
    pub exceptions: Store<ScheduleException>,
    /// Caches.
    pub providers: Store<CloudProvider>,
    /// Caches.
    pub clusters: Store<K8SCluster>,
    /// Caches.
    pub plans: Store<DeserializeGuard<HibernationPlan>>,
    /// Identity of this controller instance (for Events).
    pub instance: String,
    /// Where the controller itself runs, so that no plan puts it to sleep.
    pub self_guard: crate::selfguard::SelfGuard,
    /// The resource version of each plan as last written or read by this controller.
    pub versions: PlanVersions,
    /// Plans reconciled, for the notifier (never waited on: a full channel drops the
    /// reference; the notifier looks again within minutes).
    pub plan_changes: tokio::sync::mpsc::Sender<ObjectRef<HibernationPlan>>,
    /// Reconciles under way.
    pub busy: Busy,
    /// Plans were reconciled, or the plan cache changed, since the phase gauges were last
    /// counted.
    pub phases_stale: Arc<std::sync::atomic::AtomicBool>,
}

/// How many reconciles are under way, and when a plan last got its first runner Job while
/// the controller was crowded. When every slot is taken (many plans reached a boundary
/// together), a plan starts one target per reconcile and comes back for the others; and while
/// plans are still getting their first Job (one did within [`FIRST_JOBS_WINDOW`]), a plan
/// whose operation has begun starts nothing and comes back after [`HELD_BACK`]: every plan
/// gets its first runner Job before any plan gets its second. The window closes by itself
/// once no plan is left without a Job, so the held-back plans cannot wait for ever.
#[derive(Default)]
pub struct Busy {
    running: std::sync::atomic::AtomicUsize,
    first_job_at: std::sync::Mutex<Option<Instant>>,
}

/// How long after a plan's first runner Job under a crowd other plans' further Jobs wait.
const FIRST_JOBS_WINDOW: Duration = Duration::from_secs(2);

/// When a plan held back by [`FIRST_JOBS_WINDOW`] comes back.
const HELD_BACK: Duration = Duration::from_secs(2);

/// How long (schedule time) before its next hibernation a plan gets its finalizer.
const FINALIZER_LEAD: SignedDuration = SignedDuration::from_mins(10);

impl Busy {
    fn enter(&self) -> BusyGuard<'_> {
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        BusyGuard(self)
    }

    /// The starts one decision may make now; `None` when the controller is not crowded.
    fn limit(&self) -> Option<crate::decide::StartLimit> {
        let first_jobs = self
            .first_job_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < FIRST_JOBS_WINDOW);
        let crowded = self.running.load(std::sync::atomic::Ordering::Relaxed)
            >= usize::from(RECONCILES_AT_ONCE);
        match (first_jobs, crowded) {
            (true, _) => Some(crate::decide::StartLimit { first: 1, more: 0 }),
            (false, true) => Some(crate::decide::StartLimit { first: 1, more: 1 }),
            (false, false) => None,
        }
    }

    /// A plan got its first runner Job under a start limit.
    fn first_job(&self) {
        *self.first_job_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

struct BusyGuard<'a>(&'a Busy);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The version of each plan this controller last wrote or read, so that a reconcile never
/// decides on a cached plan older than its own last status write (the watch may deliver that
/// write a moment after the next reconcile starts; deciding on the older status would, for
/// example, count restore records retired after that write as lost).
///
/// It also keeps when this controller last wrote each plan's status, and the status it decided
/// but has not written yet, so that changes nobody waits for are written at most every
/// [`QUIET_WRITE_INTERVAL`] (see [`crate::urgency`]).
#[derive(Default)]
pub struct PlanVersions(std::sync::Mutex<BTreeMap<(String, String), Seen>>);

/// What this controller knows of one plan.
#[derive(Default)]
struct Seen {
    /// The resource version last seen.
    version: String,
    /// When this controller last wrote the status.
    written_at: Option<Instant>,
    /// A decided status whose write waits (a quiet change), with the resource version it was
    /// decided on: the next reconcile decides on it instead of the written one, so that the
    /// times it holds (a target's end) stay those of the decision that saw them. Dropped when
    /// the plan changes, and lost in a crash: then the next decision stamps them again, as
    /// after a crash between a runner Job's creation and the status write.
    /// Boxed: a status takes 808 bytes in place, and every plan's entry carried that much,
    /// mostly unused (the controller's RSS at 10,000 plans went from 90 to 102 MiB).
    deferred: Option<Box<Deferred>>,
}

/// A decided status whose write waits, with the resource version it was decided on and the
/// nights it counted into the savings (put into the metrics once the status is written).
#[derive(Clone)]
pub struct Deferred {
    version: String,
    status: HibernationPlanStatus,
    saved: hibernator_api::savings::Added,
}

impl PlanVersions {
    fn key(plan: &HibernationPlan) -> (String, String) {
        (plan.namespace().unwrap_or_default(), plan.name_any())
    }

    /// Notes the version of an object the API server returned.
    pub fn saw(&self, plan: &HibernationPlan) {
        if let Some(rv) = plan.resource_version() {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map.entry(Self::key(plan)).or_default();
            entry.version = rv;
        }
    }

    /// Notes the version of a status this controller just wrote, and when.
    pub fn wrote_status(&self, plan: &HibernationPlan) {
        self.saw(plan);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(Self::key(plan)).or_default();
        entry.written_at = Some(Instant::now());
        entry.deferred = None;
    }

    /// True when this controller wrote the plan's status less than `interval` ago.
    fn status_written_within(&self, plan: &HibernationPlan, interval: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::key(plan))
            .and_then(|seen| seen.written_at)
            .is_some_and(|at| at.elapsed() < interval)
    }

    /// Keeps a decided status of `plan` whose write waits, and the nights it counted.
    fn defer(
        &self,
        plan: &HibernationPlan,
        status: &HibernationPlanStatus,
        saved: hibernator_api::savings::Added,
    ) {
        let Some(version) = plan.resource_version() else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(Self::key(plan)).or_default().deferred = Some(Box::new(Deferred {
            version,
            status: status.clone(),
            saved,
        }));
    }

    /// Forgets the status decided for `plan` and not yet written.
    fn drop_deferred(&self, plan: &HibernationPlan) {
        if let Some(seen) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&Self::key(plan))
        {
            seen.deferred = None;
        }
    }

    /// The status decided for `plan` and not yet written, if the plan has not changed since.
    fn deferred(&self, plan: &HibernationPlan) -> Option<Deferred> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let seen = map.get_mut(&Self::key(plan))?;
        match seen.deferred.take() {
            Some(d) if plan.resource_version().as_ref() == Some(&d.version) => {
                let kept = (*d).clone();
                seen.deferred = Some(d);
                Some(kept)
            }
            _ => None,
        }
    }

    fn known(&self, plan: &HibernationPlan) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::key(plan))
            .map(|seen| seen.version.clone())
            .filter(|rv| !rv.is_empty())
    }

    /// Forgets a plan that is gone.
    pub fn forget(&self, plan: &HibernationPlan) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(plan));
    }
}

/// The plan to decide on: the cached one, unless it differs from the version this controller
/// last wrote or read; then the API server's.
async fn current_plan(
    cached: &HibernationPlan,
    ctx: &Context,
) -> Result<Option<HibernationPlan>, Error> {
    match ctx.versions.known(cached) {
        None => {
            ctx.versions.saw(cached);
            Ok(None)
        }
        Some(rv) if Some(&rv) == cached.metadata.resource_version.as_ref() => Ok(None),
        Some(_) => {
            let api: Api<HibernationPlan> =
                Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
            match api.get_opt(&cached.name_any()).await {
                Ok(Some(live)) => {
                    ctx.versions.saw(&live);
                    Ok(Some(live))
                }
                Ok(None) => {
                    ctx.versions.forget(cached);
                    Ok(None)
                }
                // Unreadable as a plan now: the cached one is reconciled, the next event says more.
                Err(kube::Error::SerdeError(_)) => Ok(None),
                Err(e) => Err(api_err(
                    "read",
                    format!(
                        "HibernationPlan {}/{}",
                        cached.namespace().unwrap_or_default(),
                        cached.name_any()
                    ),
                )(e)),
            }
        }
    }
}

/// How watches retry after an error: from half a second up to five seconds, reset after half
/// a minute without errors. kube's default grows to 30 s and resets only after two quiet
/// minutes, so an API server restart (a dozen failed reconnects, then a 410 Gone that forces a
/// re-list) left plans unwatched for minutes; the fault-injection suite found it.
pub fn watch_backoff() -> kube::runtime::utils::ResetTimerBackoff<watcher::ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(exponential.into(), Duration::from_secs(30))
}

/// Drops (after logging) the errors of a watch that already retries by itself: handed to the
/// controller, any error of any watch would pause every trigger with the controller's own
/// backoff (up to 30 s), so that one watch's 410 Gone after an API server restart held up the
/// reaction to a plan change.
async fn watch_errors_logged<T>(
    item: Result<T, watcher::Error>,
) -> Option<Result<T, watcher::Error>> {
    match item {
        Ok(v) => Some(Ok(v)),
        Err(e) => {
            warn!("watch failed (retrying): {e}");
            None
        }
    }
}

/// Runs the plan controller until `stop` resolves: watches plans, their Jobs, exceptions and
/// connectors, and reconciles. Marks `ready` once the caches have synced.
pub async fn run_controller(
    client: Client,
    namespace: Option<String>,
    mut make_ctx: impl FnMut(ControllerStores) -> Context,
    notifier: crate::notify::Notifier,
    wake: broadcast::Receiver<ObjectRef<HibernationPlan>>,
    ready: Readiness,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        }
    }
    let plans: Api<DeserializeGuard<HibernationPlan>> = api(&client, &namespace);
    let (jobs, job_writer) = reflector::store();
    let job_stream = watcher(
        api::<Job>(&client, &namespace),
        watcher::Config::default().labels(&format!("{}={MANAGER}", labels::MANAGED_BY)),
    )
    .backoff(watch_backoff())
    // Only labels, owners and status are read: drop the rest before caching.
    .modify(|j: &mut Job| {
        j.managed_fields_mut().clear();
        if let Some(spec) = j.spec.as_mut() {
            spec.template = Default::default();
        }
    })
    .reflect(job_writer)
    .touched_objects()
    .filter_map(watch_errors_logged);
    let (exceptions, exc_writer) = reflector::store();
    let exc_stream = watcher(
        api::<ScheduleException>(&client, &namespace),
        watcher::Config::default(),
    )
    .backoff(watch_backoff())
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(exc_writer)
    .touched_objects()
    .filter_map(watch_errors_logged);
    let (providers, prov_writer) = reflector::store();
    let prov_stream = watcher(
        api::<CloudProvider>(&client, &namespace),
        watcher::Config::default(),
    )
    .backoff(watch_backoff())
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(prov_writer)
    .touched_objects()
    .filter_map(watch_errors_logged);
    let (clusters, cl_writer) = reflector::store();
    let cl_stream = watcher(
        api::<K8SCluster>(&client, &namespace),
        watcher::Config::default(),
    )
    .backoff(watch_backoff())
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(cl_writer)
    .touched_objects()
    .filter_map(watch_errors_logged);

    // The plan cache keeps no managedFields (server-side apply makes them large).
    let (plan_store, plan_writer) = reflector::store();
    // Every change of the cache, deletions included (a deleted plan is not reconciled),
    // has the phase gauges counted again.
    let plans_changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let plan_stream = watcher(plans, watcher::Config::default())
        .backoff(watch_backoff())
        .modify(|g: &mut DeserializeGuard<HibernationPlan>| match &mut g.0 {
            Ok(p) => p.managed_fields_mut().clear(),
            Err(invalid) => invalid.metadata.managed_fields = None,
        })
        .reflect(plan_writer)
        .inspect({
            let changed = plans_changed.clone();
            move |_| changed.store(true, std::sync::atomic::Ordering::Relaxed)
        })
        .touched_objects()
        .filter_map(watch_errors_logged);
    let controller = Controller::for_stream(plan_stream, plan_store.clone())
        .with_config(
            // Runner reports and Job changes arriving together become one reconcile (and one
            // status write). A bounded number of reconciles at a time keeps memory flat when
            // many plans need work at once (start-up, a shared schedule boundary); a reconcile
            // mostly waits on the API server, so the bound is well above the cores.
            kube::runtime::controller::Config::default()
                .debounce(Duration::from_millis(100))
                .concurrency(RECONCILES_AT_ONCE),
        )
        .trigger_backoff(watch_backoff());
    let referencing = |store: Store<DeserializeGuard<HibernationPlan>>, kind: ConnectorKind| {
        move |obj_ns: Option<String>, name: String| {
            store
                .state()
                .iter()
                .filter_map(|g| g.0.as_ref().ok())
                .filter(|p| {
                    let pns = p.metadata.namespace.clone();
                    p.spec.targets.iter().any(|t| {
                        t.connector_ref.as_ref().is_some_and(|c| {
                            c.kind == kind
                                && c.name == name
                                && c.namespace.clone().or(pns.clone()) == obj_ns
                        }) || (kind == ConnectorKind::K8SCluster
                            && t.type_ == TargetType::Eks
                            && pns == obj_ns
                            && t.parameters
                                .as_ref()
                                .and_then(|v| v.get("clusterName"))
                                .and_then(|v| v.as_str())
                                == Some(name.as_str()))
                    })
                })
                .map(|p| ObjectRef::from_obj(&DeserializeGuard(Ok(p.clone()))))
                .collect::<Vec<_>>()
        }
    };
    // Restore ConfigMaps (metadata only): a deleted or edited one is noticed at once, and the
    // cache tells which plans have none without asking the API server.
    let (restore_cache, restore_writer) = reflector::store();
    let restore_stream = watcher(
        api::<PartialObjectMeta<ConfigMap>>(&client, &namespace),
        watcher::Config::default().labels(&format!("{}=true", crate::restore::RESTORE_LABEL)),
    )
    .backoff(watch_backoff())
    .modify(|cm| {
        cm.managed_fields_mut().clear();
        cm.annotations_mut().clear();
    })
    .reflect(restore_writer)
    .touched_objects()
    .filter_map(watch_errors_logged);
    let by_provider = referencing(plan_store.clone(), ConnectorKind::CloudProvider);
    let by_cluster = referencing(plan_store.clone(), ConnectorKind::K8SCluster);
    let (plan_changes, plan_changes_rx) = tokio::sync::mpsc::channel(4096);
    let ctx = Arc::new(make_ctx(ControllerStores {
        plan_changes,
        jobs: jobs.clone(),
        exceptions: exceptions.clone(),
        providers: providers.clone(),
        clusters: clusters.clone(),
        plans: plan_store.clone(),
        plans_changed,
    }));
    // What was found missing before this replica (again) leads may have been written since.
    ctx.store.forget_absent();
    ctx.store.watch_with(restore_cache.clone());
    let by_restore_data = {
        let (plans, restore) = (plan_store.clone(), ctx.store.clone());
        move |cm: PartialObjectMeta<ConfigMap>| {
            let ns = cm.namespace();
            restore.changed(ns.as_deref().unwrap_or_default(), &cm.name_any());
            let plan_label = cm.labels().get(labels::PLAN).cloned()?;
            // The label is the plan's name unless that was too long for a label value.
            let named = ObjectRef::new(&plan_label).within(ns.as_deref().unwrap_or_default());
            if plans.get(&named).is_some() {
                return Some(named);
            }
            plans
                .state()
                .iter()
                .filter_map(|g| g.0.as_ref().ok())
                .find(|p| p.namespace() == ns && label_value(&p.name_any()) == plan_label)
                .map(|p| ObjectRef::from_obj(&DeserializeGuard(Ok(p.clone()))))
        }
    };
    // Runner reports wake the plan; a lagging receiver only loses duplicates of later wakes.
    let wake = tokio_stream::wrappers::BroadcastStream::new(wake).filter_map(|r| async move {
        r.ok().map(|r: ObjectRef<HibernationPlan>| {
            ObjectRef::new(&r.name).within(r.namespace.as_deref().unwrap_or_default())
        })
    });
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let stores_ready = {
        let (j, e, p, c, pl, r) = (
            jobs.clone(),
            exceptions.clone(),
            providers.clone(),
            clusters.clone(),
            plan_store.clone(),
            restore_cache,
        );
        async move {
            let _ = tokio::join!(
                j.wait_until_ready(),
                e.wait_until_ready(),
                p.wait_until_ready(),
                c.wait_until_ready(),
                pl.wait_until_ready(),
                r.wait_until_ready()
            );
            ready.set(true);
            let _ = synced_tx.send(true);
            info!("caches synced; reconciling");
        }
    };
    tokio::spawn(stores_ready);
    // The controllers want a `Sync` shutdown future; a watch receiver is one.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let notifications = tokio::spawn(notifier.run(
        client.clone(),
        namespace.clone(),
        plan_store.clone(),
        plan_changes_rx,
        async move {
            let mut synced = synced_rx;
            if synced.wait_for(|s| *s).await.is_err() {
                // Never synced: the notifier waits for its stop.
                std::future::pending::<()>().await;
            }
        },
        stopped(),
    ));
    let counting = tokio::spawn(count_phases_now_and_then(ctx.clone()));
    controller
        .owns_stream(job_stream)
        .watches_stream(exc_stream, |e: ScheduleException| {
            Some(
                ObjectRef::new(&e.spec.plan_ref.name)
                    .within(e.namespace().as_deref().unwrap_or_default()),
            )
        })
        .watches_stream(prov_stream, move |p: CloudProvider| {
            by_provider(p.namespace(), p.name_any())
        })
        .watches_stream(cl_stream, move |c: K8SCluster| {
            by_cluster(c.namespace(), c.name_any())
        })
        .watches_stream(restore_stream, by_restore_data)
        .reconcile_on(wake)
        .graceful_shutdown_on(stopped())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile loop: {e}");
            }
        })
        .await;
    counting.abort();
    let _ = notifications.await;
}

/// The caches a [`Context`] is built with.
pub struct ControllerStores {
    /// Where reconciled plans are announced to the notifier.
    pub plan_changes: tokio::sync::mpsc::Sender<ObjectRef<HibernationPlan>>,
    /// Runner Jobs.
    pub jobs: Store<Job>,
    /// ScheduleExceptions.
    pub exceptions: Store<ScheduleException>,
    /// CloudProviders.
    pub providers: Store<CloudProvider>,
    /// K8SClusters.
    pub clusters: Store<K8SCluster>,
    /// Plans.
    pub plans: Store<DeserializeGuard<HibernationPlan>>,
    /// Set whenever the plan cache changed (see [`Context::phases_stale`]).
    pub plans_changed: Arc<std::sync::atomic::AtomicBool>,
}

fn error_policy(
    _: Arc<DeserializeGuard<HibernationPlan>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    warn!(category = error.category(), "reconcile failed: {error}");
    ctx.metrics.reconciled("error", 0.0);
    Action::requeue(Duration::from_secs(5))
}

/// Reconciles one plan.
async fn reconcile(
    guard: Arc<DeserializeGuard<HibernationPlan>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let _busy = ctx.busy.enter();
    if let Ok(p) = &guard.0 {
        let _ = ctx.plan_changes.try_send(ObjectRef::from_obj(p));
    }
    let result = match &guard.0 {
        Ok(cached) => match current_plan(cached, &ctx).await {
            Ok(Some(live)) => reconcile_plan(&live, &ctx).await,
            Ok(None) => reconcile_plan(cached, &ctx).await,
            Err(e) => Err(e),
        },
        Err(invalid) => reconcile_unreadable(invalid, &ctx).await,
    };
    if result.is_ok() {
        ctx.metrics
            .reconciled("ok", started.elapsed().as_secs_f64());
        ctx.phases_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    result
}

/// Counts the plans by phase and sets the per-plan gauges once a second after reconciles or
/// changes of the plan cache (never while neither happens), and only when a cached plan
/// changed since the last count. Counting walks every cached plan and rebuilds three gauges per plan: after each
/// reconcile, as it once was, ten thousand plans made start-up quadratic (minutes of CPU);
/// once a second, while the safety net reconciled a dozen unchanged plans a second, it was
/// most of the idle CPU. The check that nothing changed only hashes resource versions.
async fn count_phases_now_and_then(ctx: Arc<Context>) {
    let mut counted = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ctx
            .phases_stale
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let now = plans_version(&ctx.plans);
            if counted != Some(now) {
                count_phases(&ctx);
                counted = Some(now);
            }
        }
    }
}

/// A digest of which plans the cache holds at which resource version (the same whatever the
/// order the cache lists them in).
fn plans_version(plans: &Store<DeserializeGuard<HibernationPlan>>) -> u64 {
    use std::hash::BuildHasher;
    // Fixed keys: digests of two counts must be comparable.
    let hasher = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default();
    let mut digest = 0u64;
    let mut count = 0u64;
    for g in plans.state() {
        let Ok(p) = &g.0 else { continue };
        let meta = &p.metadata;
        digest = digest.wrapping_add(hasher.hash_one((
            &meta.namespace,
            &meta.name,
            &meta.resource_version,
        )));
        count += 1;
    }
    digest ^ count
}

fn count_phases(ctx: &Context) {
    let mut counts: BTreeMap<&'static str, i64> = [
        Phase::Active,
        Phase::Hibernating,
        Phase::Hibernated,
        Phase::WakingUp,
        Phase::PartlyAwake,
        Phase::Suspended,
        Phase::Error,
    ]
    .iter()
    .map(|p| (p.as_str(), 0))
    .collect();
    let mut gauges = Vec::new();
    for g in ctx.plans.state() {
        let Ok(p) = &g.0 else { continue };
        let status = p.status.as_ref();
        if let Some(phase) = status.and_then(|s| s.phase) {
            *counts.entry(phase.as_str()).or_default() += 1;
        }
        let condition = |t: &str, value: &str| {
            status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == value)
            })
        };
        let at = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| t.0.as_second() as f64)
        };
        let schedule = status.and_then(|s| s.schedule.as_ref());
        gauges.push(crate::metrics::PlanGauges {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            asleep: status.and_then(|s| s.phase) == Some(Phase::Hibernated),
            stalled: condition("Stalled", "True"),
            not_restored: condition("Restored", "False"),
            next_hibernate: at(schedule.and_then(|s| s.next_hibernate_at.as_ref())),
            next_wake_up: at(schedule.and_then(|s| s.next_wake_up_at.as_ref())),
        });
    }
    ctx.metrics
        .set_plans(&counts.into_iter().collect::<Vec<_>>());
    ctx.metrics.set_plan_gauges(&gauges);
}

/// A plan the controller cannot even read (its stored object does not match the types):
/// report it as Stalled and wait for a change.
async fn reconcile_unreadable(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let (Some(name), Some(ns)) = (&invalid.metadata.name, &invalid.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    let now = ctx.clock.now();
    let generation = invalid.metadata.generation;
    let message = format!("the plan cannot be read: {}", invalid.error);
    let status = json!({
        "observedGeneration": generation,
        "conditions": [
            condition(condition_types::READY, false, "InvalidSpec", message.clone(), generation, now),
            condition(condition_types::STALLED, true, "InvalidSpec", message, generation, now),
        ],
    });
    patch_status(ctx, ns, name, status).await?;
    Ok(Action::await_change())
}

#[instrument(skip_all, fields(plan = %plan.name_any(), namespace = plan.namespace().unwrap_or_default()))]
async fn reconcile_plan(plan: &HibernationPlan, ctx: &Context) -> Result<Action, Error> {
    let name = plan.name_any();
    let ns = plan.namespace().unwrap_or_default();
    let deleting = plan.metadata.deletion_timestamp.is_some();
    let has_finalizer = plan.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        ctx.versions.forget(plan);
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();
    let real_now = Timestamp::now();

    // Validate (the same checks as `kubectl hibernator validate`).
    let problems = plan_semantics(plan);
    if !problems.is_empty() {
        return invalid_spec(plan, ctx, &problems, now).await;
    }

    // The schedule with its exceptions.
    let exceptions = plan_exceptions(ctx, plan).await?;
    let schedule = CompiledSchedule::new(
        &plan.spec.schedule,
        exceptions
            .iter()
            .filter_map(|(_, x)| x.as_ref().ok().cloned())
            .collect(),
    )
    .expect("validated above");
    let evaluation = schedule.evaluate(now);

    // Resolve every target's connector.
    let ns_labels = plan_namespace_labels(plan, ctx).await;
    let (connectors, reference_problem) = resolve_connectors(plan, ctx, ns_labels.as_ref());

    // Observe Jobs and restore data.
    let jobs = observe_jobs(plan, ctx).await?;
    let key = plan_key(plan);
    let expects_records = plan.status.as_ref().is_some_and(|s| !s.asleep.is_empty());
    let mut loaded = ctx.store.load_watched(&key, expects_records).await?;
    if let Some(earlier) = loaded.left_by.take() {
        // Restore data of an earlier plan of the same name (deleted while its targets slept):
        // this plan wakes them up.
        ctx.store.adopt(&key).await?;
        ctx.metrics.api_write("ConfigMap");
        let note = format!(
            "took over the restore data in ConfigMap {} left by an earlier plan of this name (UID {earlier})",
            crate::restore::config_map_name(&name)
        );
        publish_event(ctx, plan, false, "RestoreDataAdopted", &note).await;
    }
    let restore = RestoreView::from_data(&loaded.data);
    let graph = ExecutionGraph::compile(&plan.spec).expect("validated above");
    let wishes = target_wishes(&schedule, &evaluation, &graph, now);
    let refuse_hibernation = refuse_hibernation(plan, ctx, &connectors);

    let (checks, jobs): (Vec<JobObservation>, Vec<JobObservation>) =
        jobs.into_iter().partition(|j| j.check);
    // A status decided before whose write waits (a quiet change) is what this decision builds
    // on, so that the times it holds stay those of the decision that saw them.
    let deferred = ctx.versions.deferred(plan);
    let decided_before = deferred.as_ref().map(|d| HibernationPlan {
        status: Some(d.status.clone()),
        ..plan.clone()
    });
    let basis = decided_before.as_ref().unwrap_or(plan);
    let mut d = decide(&Observed {
        plan: basis,
        graph: &graph,
        schedule: &evaluation,
        wishes: &wishes,
        now,
        real_now,
        jobs: &jobs,
        checks: &checks,
        restore: &restore,
        restore_problem: loaded.problem.clone(),
        refuse_hibernation,
        reference_problem: reference_problem.clone(),
        reference_grace: ctx.timing.reference_grace,
        deletion_timeout: ctx.timing.deletion_timeout,
        start_limit: ctx.busy.limit(),
    });

    // Restored records are counted into the savings before they are retired, in the same
    // status write that stops counting them as asleep.
    let types: BTreeMap<&str, hibernator_api::TargetType> = plan
        .spec
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.type_))
        .collect();
    let mut saved = deferred.map(|d| d.saved).unwrap_or_default();
    saved.extend(hibernator_api::savings::account(
        &mut d.status.savings,
        &hibernator_api::restore::restored_nights(&loaded.data),
        |t| types.get(t).copied(),
        &ctx.prices,
    ));
    // The finalizer makes a deletion wait for the wake-up. A plan needs it from its first
    // runner Job or restore record on, and keeps it until it is deleted; a plan that never
    // had either is deleted at once, with nothing to wake up. It is added ahead of the plan's
    // next hibernation ([`FINALIZER_LEAD`]), so that a boundary shared by many plans costs
    // only their Jobs. (Added to every plan on sight, it cost a second write per plan when a
    // controller first met thousands of awake plans; added with the first Job only, it
    // doubled the writes at a crowded boundary.)
    let next_hibernation = d
        .status
        .schedule
        .as_ref()
        .and_then(|s| s.next_hibernate_at.as_ref())
        .map(|t| t.0);
    let finalizer_due = next_hibernation.map(|t| t - FINALIZER_LEAD);
    let mut requeue_at = d.requeue_at;
    if !deleting && !has_finalizer {
        if !d.create.is_empty()
            || !loaded.data.is_empty()
            || finalizer_due.is_some_and(|due| due <= now)
        {
            set_finalizer(ctx, &ns, &name, true).await?;
        } else if let Some(due) = finalizer_due {
            requeue_at = Some(requeue_at.map_or(due, |r| r.min(due)));
        }
    }
    let soon =
        apply(plan, basis, ctx, &d, &connectors, &evaluation, &saved).await? || d.more_to_start;
    if d.first_start {
        ctx.busy.first_job();
    }
    if d.more_to_start && d.create.is_empty() {
        // Held back while other plans get their first Job.
        return Ok(Action::requeue(HELD_BACK));
    }
    update_exceptions(ctx, &exceptions, now).await;

    if d.release_finalizer {
        set_finalizer(ctx, &ns, &name, false).await?;
        info!("finalizer released");
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(requeue_delay(
        ctx,
        requeue_at,
        &exceptions,
        now,
        soon,
    )))
}

/// A plan whose spec fails validation: `Ready=False` and `Stalled=True` naming the problems;
/// deleted, it lets go at once (nothing can be woken up without a valid spec) and says what
/// stays asleep.
async fn invalid_spec(
    plan: &HibernationPlan,
    ctx: &Context,
    problems: &[hibernator_api::validate::SemanticProblem],
    now: Timestamp,
) -> Result<Action, Error> {
    let name = plan.name_any();
    let ns = plan.namespace().unwrap_or_default();
    let deleting = plan.metadata.deletion_timestamp.is_some();
    let prev = plan.status.clone().unwrap_or_default();
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut status = prev.clone();
    status.observed_generation = plan.metadata.generation;
    set_stalled(
        &mut status.conditions,
        "InvalidSpec",
        &message,
        plan.metadata.generation,
        now,
    );
    write_status(ctx, plan, &prev, &status).await?;
    if deleting {
        // Nothing can be woken up without a valid spec: say so, keep the restore data.
        let restore = ctx.store.load(&plan_key(plan)).await?;
        let asleep = RestoreView::from_data(&restore.data).asleep();
        if !asleep.is_empty() {
            let note = format!(
                "deleted while its spec is invalid: {} not woken up; their restore data stays in ConfigMap {}",
                asleep.keys().cloned().collect::<Vec<_>>().join(", "),
                crate::restore::config_map_name(&name)
            );
            publish_event(ctx, plan, true, "DeletedWithoutWakeUp", &note).await;
        }
        set_finalizer(ctx, &ns, &name, false).await?;
    }
    Ok(Action::await_change())
}

/// `Ready=False` and `Stalled=True`, both with `reason` and `message`: a person must act.
fn set_stalled(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    for (type_, status) in [
        (condition_types::READY, false),
        (condition_types::STALLED, true),
    ] {
        set_condition(
            conditions,
            condition(type_, status, reason, message.to_string(), generation, now),
        );
    }
}

/// Why a hibernation must not start: a selector that would reach too far, or a target that
/// would put the controller itself to sleep.
fn refuse_hibernation(
    plan: &HibernationPlan,
    ctx: &Context,
    connectors: &BTreeMap<usize, ResolvedConnector>,
) -> Option<(&'static str, String)> {
    let unsafe_selectors = hibernator_api::validate::unsafe_selectors(plan);
    if unsafe_selectors.is_empty() {
        crate::selfguard::check(plan, connectors, &ctx.self_guard).map(|m| ("SelfHibernation", m))
    } else {
        let message = unsafe_selectors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Some(("InvalidSpec", format!("refused to hibernate: {message}")))
    }
}

/// How long to wait before the next reconcile: until `requeue_at` or the next edge of an
/// exception's validity (when it changes state), at most `max_requeue`; within a second when
/// something is under way (`soon`).
fn requeue_delay(
    ctx: &Context,
    requeue_at: Option<Timestamp>,
    exceptions: &PlanExceptions,
    now: Timestamp,
    soon: bool,
) -> Duration {
    let edge = exceptions
        .iter()
        .filter_map(|(_, x)| x.as_ref().ok())
        .flat_map(|x| [x.valid_from, x.valid_until])
        .filter(|t| *t > now)
        .min();
    let requeue_at = match (requeue_at, edge) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let longest = if exceptions
        .iter()
        .any(|(x, _)| x.spec.calendar_ref.is_some())
    {
        ctx.timing.max_requeue.min(CALENDAR_LOOK)
    } else {
        ctx.timing.max_requeue
    };
    let delay = match requeue_at.map(|t| ctx.clock.real_delay_until(t)) {
        Some(d) if d < longest => d,
        _ => longest.mul_f64(0.8 + fastrand::f64() * 0.2),
    };
    let delay = if soon {
        delay.min(Duration::from_secs(1))
    } else {
        delay
    };
    // A boundary reached exactly: look again right after it.
    delay.max(Duration::from_millis(20))
}

/// Acknowledges records, creates Jobs, writes the status, retires restored records and
/// publishes Events. Returns true when the plan should be looked at again soon.
///
/// `basis` is the plan the decision was made on: `plan` with the status decided before and not
/// yet written, if there is one (what changed since is measured against it; what has to be
/// written, against `plan`).
#[allow(clippy::too_many_arguments)]
async fn apply(
    plan: &HibernationPlan,
    basis: &HibernationPlan,
    ctx: &Context,
    d: &Decision,
    connectors: &BTreeMap<usize, ResolvedConnector>,
    evaluation: &hibernator_api::schedule::Evaluation,
    saved: &hibernator_api::savings::Added,
) -> Result<bool, Error> {
    let ns = plan.namespace().unwrap_or_default();
    let prev = basis.status.clone().unwrap_or_default();
    let key = plan_key(plan);
    // An acknowledgement reaches the records before the status says so: a status that says
    // "acknowledged" over records that still count as asleep would report them again.
    if let Some(targets) = d.acknowledge.as_ref().filter(|t| !t.is_empty()) {
        match ctx.store.acknowledge(&key, targets).await {
            Ok(0) => {}
            Ok(_) => ctx.metrics.api_write("ConfigMap"),
            // Not Hibernator's ConfigMap: nothing in it to acknowledge.
            Err(e @ crate::restore::RestoreError::Foreign { .. }) => {
                warn!("not acknowledging records: {e}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    // The Jobs of one step are created side by side: at a boundary shared by many plans a
    // reconcile takes one round trip instead of one per Job, and the next plan's turn comes
    // sooner.
    let to_create: Vec<Job> = d
        .create
        .iter()
        .filter_map(|req| {
            let connector = connectors.get(&req.target)?;
            Some(build_job(plan, req, connector, &ctx.runner))
        })
        .collect();
    let created: Vec<Result<bool, Error>> = futures::stream::iter(to_create)
        .map(|job| {
            let (jobs, pp, ns) = (&jobs, &pp, &ns);
            async move {
                let job_name = job.name_any();
                match jobs.create(pp, &job).await {
                    Ok(_) => {
                        ctx.metrics.api_write("Job");
                        log_job_created(plan, &job);
                        Ok(false)
                    }
                    // Created before (a status write was lost) or taken by a foreign Job:
                    // the next reconcile tells (a foreign Job is a lost attempt), and comes
                    // soon since no event of ours will bring it.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(true),
                    Err(e) => Err(api_err("create", format!("Job {ns}/{job_name}"))(e)),
                }
            }
        })
        .buffer_unordered(JOBS_AT_ONCE)
        .collect()
        .await;
    let mut look_again_soon = false;
    for c in created {
        look_again_soon |= c?;
    }
    if d.more_to_start {
        // A crowded boundary: this pass only starts Jobs, so that every plan's first runner
        // Job comes before any plan's status write. The plan comes back within a second and
        // the next pass writes the status, Events and counts from the Jobs (the source of
        // truth), as after a crash between Job creation and status write.
        return Ok(true);
    }
    // How late was the start of an operation, measured against its boundary?
    if let Some(c) = &d.status.current_cycle
        && prev.current_cycle.as_ref().map(|p| (&p.id, p.operation)) != Some((&c.id, c.operation))
        && let Some(boundary) = match c.operation {
            Operation::Hibernate => evaluation.current_since,
            Operation::WakeUp => prev
                .schedule
                .as_ref()
                .and_then(|s| s.next_wake_up_at.as_ref())
                .map(|t| t.0),
        }
    {
        ctx.metrics
            .boundary_lag(c.started_at.0.duration_since(boundary).as_secs_f64());
    }
    // Executions that ended since the last status.
    let same_cycle = prev.current_cycle.as_ref().map(|c| (&c.id, c.operation))
        == d.status
            .current_cycle
            .as_ref()
            .map(|c| (&c.id, c.operation));
    if let Some(c) = &d.status.current_cycle {
        for (i, t) in d.status.targets.iter().enumerate() {
            let before = prev
                .targets
                .iter()
                .find(|p| p.name == t.name)
                .filter(|_| same_cycle);
            let result = match t.state {
                hibernator_api::TargetState::Completed => "succeeded",
                hibernator_api::TargetState::Failed => "failed",
                _ => continue,
            };
            if before.is_some_and(|b| b.state == t.state && b.attempts == t.attempts) {
                continue;
            }
            let type_ = plan
                .spec
                .targets
                .get(i)
                .map(|t| t.type_.as_str())
                .unwrap_or_default();
            ctx.metrics.execution(type_, c.operation.as_str(), result);
        }
    }
    match write_when_due(ctx, plan, d, saved).await? {
        StatusWrite::Written => {
            for (type_, night) in saved {
                ctx.metrics
                    .saved(&ns, &plan.name_any(), type_.as_str(), night);
            }
        }
        StatusWrite::Deferred => look_again_soon = true,
        StatusWrite::NotNeeded => {}
    }
    // Restored records go only after the status stopped counting them as asleep: the other
    // way round, a crash in between would look like lost restore data.
    if !d.retire.is_empty() && !ctx.store.retire(&key, &d.retire).await?.is_empty() {
        ctx.metrics.api_write("ConfigMap");
    }
    for e in &d.events {
        publish_event(ctx, plan, e.warning, e.reason, &e.note).await;
    }
    Ok(look_again_soon)
}

/// What [`write_when_due`] did.
enum StatusWrite {
    Written,
    /// Kept for a later write: look again soon.
    Deferred,
    NotNeeded,
}

/// Writes the decided status when it is due ([`crate::urgency`]): at once, or, for a quiet
/// change, once [`QUIET_WRITE_INTERVAL`] has passed since the plan's last status write (until
/// then the decision is kept for the next reconcile, with the nights it counted into the
/// savings). Events, retirements and acknowledgements follow a written status, so a decision
/// with any of them writes at once.
async fn write_when_due(
    ctx: &Context,
    plan: &HibernationPlan,
    d: &Decision,
    saved: &hibernator_api::savings::Added,
) -> Result<StatusWrite, Error> {
    let written = plan.status.clone().unwrap_or_default();
    let follows = !d.events.is_empty()
        || !d.retire.is_empty()
        || d.acknowledge.as_ref().is_some_and(|t| !t.is_empty());
    let urgency = match plan.status {
        None => Urgency::Now,
        Some(_) => crate::urgency::urgency(&written, &d.status),
    };
    let lately = ctx
        .versions
        .status_written_within(plan, QUIET_WRITE_INTERVAL);
    match crate::urgency::due(urgency, follows, lately) {
        Due::Skip => {
            ctx.versions.drop_deferred(plan);
            return Ok(StatusWrite::NotNeeded);
        }
        Due::Defer => {
            ctx.versions.defer(plan, &d.status, saved.clone());
            return Ok(StatusWrite::Deferred);
        }
        Due::Write => {}
    }
    write_status(ctx, plan, &written, &d.status).await?;
    Ok(StatusWrite::Written)
}

/// Plans reconciled at the same time.
const RECONCILES_AT_ONCE: u16 = 32;

/// Runner Jobs of one plan created at the same time.
const JOBS_AT_ONCE: usize = 8;

fn log_job_created(plan: &HibernationPlan, job: &Job) {
    let l = job.labels();
    let target = l
        .get(labels::TARGET)
        .map(String::as_str)
        .unwrap_or_default();
    let operation = l
        .get(labels::OPERATION)
        .map(String::as_str)
        .unwrap_or_default();
    let job = job.name_any();
    if operation == hibernator_api::naming::ENFORCE {
        info!(plan = %plan.name_any(), %job, %target, "in-sleep check Job created");
    } else {
        info!(plan = %plan.name_any(), %job, %target, %operation, "runner Job created");
    }
}

/// The plan as the restore store knows it.
fn plan_key(plan: &HibernationPlan) -> PlanKey {
    PlanKey {
        namespace: plan.namespace().unwrap_or_default(),
        name: plan.name_any(),
        uid: plan.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The plan's runner Jobs from the cache, plus, for every target the status says is running,
/// what became of its Job when the cache does not hold it: a Job that no longer exists, or
/// whose name is taken by a Job that is not this plan's, is a lost (failed) attempt. The cache
/// may simply not have seen a Job created a moment ago, so the API server has the last word.
async fn observe_jobs(plan: &HibernationPlan, ctx: &Context) -> Result<Vec<JobObservation>, Error> {
    let ns = plan.namespace().unwrap_or_default();
    let plan_label = label_value(&plan.name_any());
    let prev = plan.status.clone().unwrap_or_default();
    let mut v = Vec::new();
    for j in ctx.jobs.state() {
        if j.namespace().as_deref() != Some(ns.as_str())
            || j.labels().get(labels::PLAN) != Some(&plan_label)
            || !is_plans_job(&j, plan)
        {
            continue;
        }
        // A finished Job whose outcome the status already records needs no pod lookup (an
        // in-sleep check: counted, or of another cycle).
        let known = prev.targets.iter().any(|t| {
            t.job.as_deref() == Some(j.name_any().as_str())
                && t.state.is_terminal()
                && t.message.is_some()
        }) || counted_check(&j, &prev);
        if let Some(obs) = observe_job(&j, ctx, known).await {
            v.push(obs);
        }
    }
    let Some(cycle) = prev.current_cycle.as_ref() else {
        return Ok(v);
    };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    for t in &prev.targets {
        let Some(job) = t.job.as_deref() else {
            continue;
        };
        if t.state != hibernator_api::TargetState::Running || v.iter().any(|o| o.name == job) {
            continue;
        }
        let live = api
            .get_opt(job)
            .await
            .map_err(api_err("read", format!("Job {ns}/{job}")))?;
        let lost = match &live {
            Some(j) if is_plans_job(j, plan) => {
                if let Some(obs) = observe_job(j, ctx, false).await {
                    v.push(obs);
                }
                continue;
            }
            Some(_) => format!(
                "runner Job {job} is not this plan's (another object took its name); counted as a failed attempt"
            ),
            None => format!(
                "runner Job {job} no longer exists (deleted, or removed by its TTL while the controller was away); counted as a failed attempt"
            ),
        };
        warn!(target = %t.name, job, "{lost}");
        v.push(JobObservation {
            name: job.to_string(),
            target: t.name.clone(),
            operation: cycle.operation,
            cycle: cycle.id.clone(),
            attempt: t.attempts,
            outcome: JobOutcome::Lost,
            message: Some(lost),
            progress: None,
            recorded: vec![],
            restored: vec![],
            check: false,
            drifted: vec![],
            reapplied: vec![],
        });
    }
    Ok(v)
}

/// True for an in-sleep check Job whose results the status already counts (or that belongs
/// to another cycle than the one enforced).
fn counted_check(job: &Job, status: &hibernator_api::plan::HibernationPlanStatus) -> bool {
    let l = job.labels();
    if l.get(labels::OPERATION).map(String::as_str) != Some(hibernator_api::naming::ENFORCE) {
        return false;
    }
    let Some(e) = status.enforcement.as_ref() else {
        return true;
    };
    let n: Option<i32> = l.get(labels::ATTEMPT).and_then(|a| a.parse().ok());
    l.get(labels::CYCLE) != Some(&e.cycle_id) || n.is_some_and(|n| Some(n) <= e.counted_check)
}

/// True for a runner Job of this plan: owned by it (UID) and labelled as its runner.
fn is_plans_job(job: &Job, plan: &HibernationPlan) -> bool {
    job.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == plan.metadata.uid.as_ref() && o.controller == Some(true))
        && job.labels().get(labels::MANAGED_BY).map(String::as_str) == Some(MANAGER)
        && job.labels().get(labels::PLAN) == Some(&label_value(&plan.name_any()))
}

/// Turns a Job (and what its runner reported) into an observation.
async fn observe_job(job: &Job, ctx: &Context, known: bool) -> Option<JobObservation> {
    let l = job.labels();
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let is = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let outcome = if is("Complete") {
        JobOutcome::Succeeded
    } else if is("Failed") {
        JobOutcome::Failed
    } else {
        JobOutcome::Running
    };
    let mut report = ctx.reports.get(&ns, &name).unwrap_or_default();
    let mut message = report.completion.as_ref().map(|(_, m)| m.clone());
    if message.is_none() && outcome != JobOutcome::Running && !known {
        // The runner's report never reached this controller (it restarted): its pod says.
        let (summary, recorded) = termination_message(ctx, &ns, &name).await.unzip();
        if report.recorded.is_empty() {
            report.recorded = recorded.unwrap_or_default();
        }
        message = summary.or_else(|| {
            conditions
                .iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.message.clone())
        });
    }
    let operation_label = l.get(labels::OPERATION)?;
    let check = operation_label == hibernator_api::naming::ENFORCE;
    Some(JobObservation {
        name,
        target: l.get(labels::TARGET)?.clone(),
        operation: if check {
            Operation::Hibernate
        } else {
            Operation::parse(operation_label)?
        },
        cycle: l.get(labels::CYCLE)?.clone(),
        attempt: l.get(labels::ATTEMPT)?.parse().ok()?,
        outcome,
        message,
        progress: report.progress,
        recorded: report.recorded,
        restored: report.restored,
        check,
        drifted: report.drifted,
        reapplied: report.reapplied,
    })
}

/// The runner's one-line summary from its pod's termination message, and the resources a
/// hibernation runner listed there as recorded.
async fn termination_message(ctx: &Context, ns: &str, job: &str) -> Option<(String, Vec<String>)> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .ok()?;
    list.items.iter().find_map(|p| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
            .and_then(|m| parse_termination_message(&m))
    })
}

/// Splits a termination message into its summary (the last line that is not the list of
/// records) and the recorded keys (`recorded: KEY KEY ...`).
fn parse_termination_message(text: &str) -> Option<(String, Vec<String>)> {
    let mut summary = None;
    let mut recorded = Vec::new();
    for line in text.trim().lines() {
        match line.strip_prefix("recorded: ") {
            Some(keys) => recorded = keys.split_whitespace().map(str::to_string).collect(),
            None if !line.trim().is_empty() => summary = Some(line.trim().to_string()),
            None => {}
        }
    }
    Some((summary?, recorded))
}

/// The labels of the plan's namespace, read only when a target uses a connector of another
/// namespace that admits namespaces by selector.
async fn plan_namespace_labels(
    plan: &HibernationPlan,
    ctx: &Context,
) -> Option<BTreeMap<String, String>> {
    let ns = plan.namespace().unwrap_or_default();
    let by_selector = |a: Option<&hibernator_api::connector::AllowedNamespaces>| {
        a.is_some_and(|a| a.selector.is_some())
    };
    let needed = plan.spec.targets.iter().any(|t| {
        let Some(c) = t.connector_ref.as_ref() else {
            return false;
        };
        let Some(cns) = c.namespace.as_ref().filter(|cns| **cns != ns) else {
            return false;
        };
        match c.kind {
            ConnectorKind::CloudProvider => ctx
                .providers
                .get(&ObjectRef::new(&c.name).within(cns))
                .is_some_and(|p| by_selector(p.spec.allowed_namespaces.as_ref())),
            ConnectorKind::K8SCluster => ctx
                .clusters
                .get(&ObjectRef::new(&c.name).within(cns))
                .is_some_and(|k| by_selector(k.spec.allowed_namespaces.as_ref())),
        }
    });
    if !needed {
        return None;
    }
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    match api.get(&ns).await {
        Ok(n) => Some(n.metadata.labels.unwrap_or_default()),
        Err(e) => {
            warn!(namespace = %ns, "cannot read the plan's namespace labels for allowedNamespaces selectors: {e}");
            None
        }
    }
}

/// Why a plan in `ns` may not use a connector of `cns`, if it may not: the connector must
/// admit `ns` in `allowedNamespaces`, and a shared connector may not need a Secret (a Job
/// mounts Secrets of its own namespace only, and the controller copies none).
fn not_allowed(
    what: &str,
    cns: &str,
    ns: &str,
    allowed: Option<&hibernator_api::connector::AllowedNamespaces>,
    labels: Option<&BTreeMap<String, String>>,
    secret: Option<&str>,
) -> Option<String> {
    if cns == ns {
        return None;
    }
    if !allowed.is_some_and(|a| a.allows(ns, labels)) {
        return Some(format!(
            "{what} in namespace {cns} does not allow plans of namespace {ns} (spec.allowedNamespaces)"
        ));
    }
    secret.map(|s| {
        format!(
            "{what} in namespace {cns} uses Secret {s:?}, and Secrets are not shared across namespaces: use auth.serviceAccount (IRSA) for a shared connector, or a connector in namespace {ns}"
        )
    })
}

/// Resolves each target's connector into runner settings. Returns the problem when a
/// referenced connector is missing, unusable or not allowed for the plan's namespace (no
/// secret values are read here).
fn resolve_connectors(
    plan: &HibernationPlan,
    ctx: &Context,
    ns_labels: Option<&BTreeMap<String, String>>,
) -> (BTreeMap<usize, ResolvedConnector>, Option<(String, String)>) {
    let ns = plan.namespace().unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let find_provider = |pns: &str, pname: &str| {
        ctx.providers
            .get(&ObjectRef::new(pname).within(pns))
            .map(|p| (*p).clone())
    };
    let aws_settings = |p: &CloudProvider| -> Result<(AwsSettings, Option<String>), String> {
        let aws = p
            .spec
            .aws
            .as_ref()
            .ok_or_else(|| format!("CloudProvider {} has no aws section", p.name_any()))?;
        let (credentials, secret) = match (&aws.auth.service_account, &aws.auth.static_) {
            (_, Some(s)) => (AwsCredentials::Static, Some(s.secret_ref.name.clone())),
            _ => (AwsCredentials::ServiceAccount, None),
        };
        Ok((
            AwsSettings {
                account_id: aws.account_id.clone(),
                region: aws.region.clone(),
                assume_role_arn: aws.assume_role_arn.clone(),
                credentials,
                eks_cluster_name: None,
            },
            secret,
        ))
    };
    for (i, t) in plan.spec.targets.iter().enumerate() {
        let Some(cref) = &t.connector_ref else {
            out.insert(
                i,
                ResolvedConnector {
                    settings: ConnectorSettings::None,
                    static_secret: None,
                    kubeconfig_secret: None,
                },
            );
            continue;
        };
        let cns = cref.namespace.clone().unwrap_or_else(|| ns.clone());
        match cref.kind {
            ConnectorKind::CloudProvider => match find_provider(&cns, &cref.name) {
                None => problems.push(format!(
                    "CloudProvider {cns}/{} (target {}) not found",
                    cref.name, t.name
                )),
                Some(p) => match aws_settings(&p) {
                    Err(e) => problems.push(e),
                    Ok((_, secret))
                        if let Some(why) = not_allowed(
                            &format!("CloudProvider {} (target {})", cref.name, t.name),
                            &cns,
                            &ns,
                            p.spec.allowed_namespaces.as_ref(),
                            ns_labels,
                            secret.as_deref(),
                        ) =>
                    {
                        refused.push(why)
                    }
                    Ok((mut settings, secret)) => {
                        if t.type_ == TargetType::Eks {
                            // `clusterName` names a K8SCluster in the plan's namespace, or else the
                            // EKS cluster itself.
                            let cluster_name = t
                                .parameters
                                .as_ref()
                                .and_then(|v| v.get("clusterName"))
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_string();
                            let eks = ctx
                                .clusters
                                .get(&ObjectRef::new(&cluster_name).within(&ns))
                                .and_then(|c| c.spec.eks.clone());
                            settings.eks_cluster_name =
                                Some(eks.as_ref().map(|e| e.name.clone()).unwrap_or(cluster_name));
                            if let Some(e) = eks {
                                settings.region = e.region;
                            }
                        }
                        out.insert(
                            i,
                            ResolvedConnector {
                                settings: ConnectorSettings::Aws(settings),
                                static_secret: secret,
                                kubeconfig_secret: None,
                            },
                        );
                    }
                },
            },
            ConnectorKind::K8SCluster => {
                match ctx.clusters.get(&ObjectRef::new(&cref.name).within(&cns)) {
                    None => problems.push(format!(
                        "K8SCluster {cns}/{} (target {}) not found",
                        cref.name, t.name
                    )),
                    Some(c) => {
                        // The Secrets the cluster needs: its kubeconfig, its provider's keys.
                        let provider_secret = c
                            .spec
                            .provider_ref
                            .as_ref()
                            .and_then(|pref| find_provider(&cns, &pref.name))
                            .and_then(|p| aws_settings(&p).ok())
                            .and_then(|(_, secret)| secret);
                        let kubeconfig = c
                            .spec
                            .k8s
                            .as_ref()
                            .and_then(|k| k.kubeconfig_ref.as_ref())
                            .map(|r| r.name.clone());
                        if let Some(why) = not_allowed(
                            &format!("K8SCluster {} (target {})", cref.name, t.name),
                            &cns,
                            &ns,
                            c.spec.allowed_namespaces.as_ref(),
                            ns_labels,
                            kubeconfig.or(provider_secret).as_deref(),
                        ) {
                            refused.push(why);
                            continue;
                        }
                        let mut settings = KubernetesSettings::default();
                        let mut kubeconfig_secret = None;
                        if let Some(k8s) = &c.spec.k8s
                            && k8s.kubeconfig_ref.is_none()
                            && k8s.in_cluster == Some(true)
                        {
                            settings.in_cluster = true;
                        }
                        if let Some(k8s) = &c.spec.k8s
                            && let Some(r) = &k8s.kubeconfig_ref
                        {
                            settings.kubeconfig_path =
                                Some("/var/run/secrets/hibernator-kubeconfig/kubeconfig".into());
                            kubeconfig_secret = Some((
                                r.name.clone(),
                                r.key.clone().unwrap_or_else(|| "kubeconfig".into()),
                            ));
                        }
                        let mut static_secret = None;
                        if let (Some(eks), Some(pref)) = (&c.spec.eks, &c.spec.provider_ref) {
                            match find_provider(&cns, &pref.name) {
                                None => problems.push(format!(
                                    "CloudProvider {cns}/{} (of K8SCluster {}) not found",
                                    pref.name, cref.name
                                )),
                                Some(p) => match aws_settings(&p) {
                                    Err(e) => problems.push(e),
                                    Ok((mut s, secret)) => {
                                        s.eks_cluster_name = Some(eks.name.clone());
                                        s.region = eks.region.clone();
                                        settings.eks = Some(s);
                                        static_secret = secret;
                                    }
                                },
                            }
                        }
                        out.insert(
                            i,
                            ResolvedConnector {
                                settings: ConnectorSettings::Kubernetes(settings),
                                static_secret,
                                kubeconfig_secret,
                            },
                        );
                    }
                }
            }
        }
    }
    // A reference that is not allowed is a mistake to fix, unlike one not applied yet.
    let problem = if !refused.is_empty() {
        refused.extend(problems);
        Some(("ReferenceNotAllowed".to_string(), refused.join("; ")))
    } else {
        (!problems.is_empty()).then(|| ("ReferenceNotFound".to_string(), problems.join("; ")))
    };
    (out, problem)
}

/// Writes the status with server-side apply, only when it changed.
async fn write_status(
    ctx: &Context,
    plan: &HibernationPlan,
    prev: &HibernationPlanStatus,
    status: &HibernationPlanStatus,
) -> Result<(), Error> {
    if plan.status.is_some() && prev == status {
        return Ok(());
    }
    let value = serde_json::to_value(status).expect("status serializes");
    patch_status(
        ctx,
        &plan.namespace().unwrap_or_default(),
        &plan.name_any(),
        value,
    )
    .await
}

async fn patch_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: serde_json::Value,
) -> Result<(), Error> {
    let api: Api<HibernationPlan> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": HibernationPlan::api_version(&()),
        "kind": HibernationPlan::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(written) => {
            ctx.versions.wrote_status(&written);
            if let Some(status) = &written.status {
                ctx.reports.status_written(ns, name, status);
            }
            ctx.metrics.api_write("HibernationPlan/status");
            Ok(())
        }
        // Deleted in the meantime: nothing to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err(
            "update status of",
            format!("HibernationPlan {ns}/{name}"),
        )(e)),
    }
}

/// Adds or removes the controller's finalizer (server-side apply owns just that entry).
async fn set_finalizer(ctx: &Context, ns: &str, name: &str, present: bool) -> Result<(), Error> {
    let api: Api<HibernationPlan> = Api::namespaced(ctx.client.clone(), ns);
    let finalizers: Vec<&str> = if present { vec![FINALIZER] } else { vec![] };
    let patch = json!({
        "apiVersion": HibernationPlan::api_version(&()),
        "kind": HibernationPlan::kind(&()),
        "metadata": {"name": name, "finalizers": finalizers},
    });
    match api
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&patch))
        .await
    {
        Ok(written) => {
            ctx.versions.wrote_status(&written);
            ctx.metrics.api_write("HibernationPlan/finalizer");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err(
            "update finalizers of",
            format!("HibernationPlan {ns}/{name}"),
        )(e)),
    }
}

/// Publishes an Event on the plan. Failures are logged, never fatal.
async fn publish_event(
    ctx: &Context,
    plan: &HibernationPlan,
    warning: bool,
    reason: &str,
    note: &str,
) {
    let ns = plan.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(hibernator_api::naming::event_name(
                &plan.name_any(),
                now.as_nanosecond(),
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some(reason.to_string()),
        reason: Some(reason.to_string()),
        // The API server's limits: note 1 KiB, reportingInstance 128 characters.
        note: Some(hibernator_api::naming::truncate_bytes(note, 1024).to_string()),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
        event_time: Some(MicroTime(now)),
        regarding: Some(ObjectReference {
            api_version: Some(HibernationPlan::api_version(&()).to_string()),
            kind: Some(HibernationPlan::kind(&()).to_string()),
            name: Some(plan.name_any()),
            namespace: Some(ns.clone()),
            uid: plan.metadata.uid.clone(),
            resource_version: plan.metadata.resource_version.clone(),
            field_path: None,
        }),
        reporting_controller: Some(format!("hibernator.ardikasaputro.io/{MANAGER}")),
        reporting_instance: Some(ctx.instance.chars().take(128).collect()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, &event).await {
        Ok(_) => ctx.metrics.api_write("Event"),
        Err(e) => warn!("failed to publish Event {reason}: {e}"),
    }
}

/// A plan's ScheduleExceptions, each compiled (with its holiday calendar) or why it cannot be.
type PlanExceptions = Vec<(Arc<ScheduleException>, Result<Exception, String>)>;

/// The ScheduleExceptions of a plan. An exception that cannot be used (a bad window, a
/// calendar that is missing or does not parse) is left out of the schedule: the plan keeps
/// doing what it does without it, and the exception's status says why. A calendar that cannot
/// be read right now (the API server did not answer) fails the reconcile, to be tried again:
/// a holiday must not end because of a hiccup.
async fn plan_exceptions(ctx: &Context, plan: &HibernationPlan) -> Result<PlanExceptions, Error> {
    let ns = plan.namespace().unwrap_or_default();
    let ns = ns.as_str();
    let name = plan.name_any();
    let mut out = Vec::new();
    for e in ctx.exceptions.state() {
        if e.namespace().as_deref() != Some(ns) || e.spec.plan_ref.name != name {
            continue;
        }
        let compiled = match Exception::from_object(&e)
            .map_err(|err| format!("the exception cannot be used: {err}"))
            .and_then(|x| match unknown_targets(&x, plan) {
                Some(why) => Err(why),
                None => Ok(x),
            }) {
            Err(why) => Err(why),
            Ok(x) => match &e.spec.calendar_ref {
                None => Ok(x),
                Some(r) => match calendar_text(ctx, ns, &r.name, &r.key).await? {
                    Err(why) => Err(why),
                    Ok(text) => x.with_calendar(&text).map_err(|err| {
                        format!("calendarRef: ConfigMap {} key {}: {err}", r.name, r.key)
                    }),
                },
            },
        };
        if let Err(why) = &compiled {
            warn!(exception = %e.name_any(), "unusable ScheduleException: {why}");
        }
        out.push((e.clone(), compiled));
    }
    Ok(out)
}

/// Why an exception's `targets` cannot be used: names that are not targets of the plan.
fn unknown_targets(x: &Exception, plan: &HibernationPlan) -> Option<String> {
    let names: Vec<&str> = plan.spec.targets.iter().map(|t| t.name.as_str()).collect();
    let unknown: Vec<&str> = x
        .targets
        .iter()
        .map(String::as_str)
        .filter(|t| !names.contains(t))
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "spec.targets: {} not a target of plan {} (its targets: {}); the exception is ignored until this is fixed",
            unknown
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", ")
                + if unknown.len() == 1 { " is" } else { " are" },
            plan.name_any(),
            names.join(", ")
        )
    })
}

/// The iCalendar text a `calendarRef` points at, or why there is none (a mistake to report).
async fn calendar_text(
    ctx: &Context,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Result<String, String>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let found = match api.get_opt(name).await {
        Ok(found) => found,
        // Refused (403, say): a lasting problem to report, not to retry.
        Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 429 => {
            return Ok(Err(format!(
                "calendarRef: cannot read ConfigMap {name}: {} ({})",
                s.message, s.code
            )));
        }
        Err(e) => {
            return Err(api_err(
                "read",
                format!("ConfigMap {ns}/{name} (calendarRef)"),
            )(e));
        }
    };
    Ok(match found {
        Some(cm) => cm
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .ok_or_else(|| {
                format!("calendarRef: ConfigMap {name} has no key {key:?}; add it or fix calendarRef.key")
            }),
        None => Err(format!(
            "calendarRef: ConfigMap {name} not found in namespace {ns}; create it or fix calendarRef.name"
        )),
    })
}

/// Keeps each ScheduleException's status (Pending / Active / Expired) current.
async fn update_exceptions(ctx: &Context, exceptions: &PlanExceptions, now: Timestamp) {
    for (e, parsed) in exceptions {
        let generation = e.metadata.generation;
        let prev = e.status.clone().unwrap_or_default();
        let mut status = ScheduleExceptionStatus {
            observed_generation: generation,
            conditions: prev.conditions.clone(),
            ..Default::default()
        };
        match parsed {
            Err(why) => {
                set_stalled(&mut status.conditions, "InvalidSpec", why, generation, now);
            }
            Ok(x) => {
                let (state, message) = if now < x.valid_from {
                    (
                        ExceptionState::Pending,
                        format!("applies from {}", x.valid_from),
                    )
                } else if now < x.valid_until {
                    (
                        ExceptionState::Active,
                        if x.targets.is_empty() {
                            format!("applies until {}", x.valid_until)
                        } else {
                            format!(
                                "applies until {} to {} (and the targets they need)",
                                x.valid_until,
                                x.targets.join(", ")
                            )
                        },
                    )
                } else {
                    (
                        ExceptionState::Expired,
                        format!("expired at {}", x.valid_until),
                    )
                };
                status.state = Some(state);
                status.message = Some(message.clone());
                set_condition(
                    &mut status.conditions,
                    condition(
                        condition_types::READY,
                        true,
                        "Accepted",
                        message,
                        generation,
                        now,
                    ),
                );
                hibernator_api::common::remove_condition(
                    &mut status.conditions,
                    condition_types::STALLED,
                );
            }
        }
        if e.status.as_ref() == Some(&status) {
            continue;
        }
        let api: Api<ScheduleException> =
            Api::namespaced(ctx.client.clone(), &e.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": ScheduleException::api_version(&()),
            "kind": ScheduleException::kind(&()),
            "status": status,
        });
        match api
            .patch_status(
                &e.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => ctx.metrics.api_write("ScheduleException/status"),
            Err(err) => warn!(exception = %e.name_any(), "failed to update status: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_termination_message;

    /// While plans get their first Job under a crowd, others wait with their further Jobs;
    /// the wait ends by itself once no first Job came for a while, and a full house alone
    /// lets every plan start one target at a time.
    #[test]
    fn plans_that_began_wait_only_while_others_get_their_first_job() {
        use super::{Busy, FIRST_JOBS_WINDOW, RECONCILES_AT_ONCE};
        use crate::decide::StartLimit;
        let busy = Busy::default();
        assert_eq!(busy.limit(), None);
        let guards: Vec<_> = (0..RECONCILES_AT_ONCE).map(|_| busy.enter()).collect();
        assert_eq!(busy.limit(), Some(StartLimit { first: 1, more: 1 }));
        busy.first_job();
        assert_eq!(busy.limit(), Some(StartLimit { first: 1, more: 0 }));
        drop(guards);
        assert_eq!(busy.limit(), Some(StartLimit { first: 1, more: 0 }));
        std::thread::sleep(FIRST_JOBS_WINDOW + std::time::Duration::from_millis(100));
        assert_eq!(busy.limit(), None, "the window closed by itself");
    }

    #[test]
    fn termination_messages_give_the_summary_and_the_records() {
        assert_eq!(
            parse_termination_message(
                "stopped 2 databases in 3 s\nrecorded: instance:a cluster:b\n"
            ),
            Some((
                "stopped 2 databases in 3 s".to_string(),
                vec!["instance:a".to_string(), "cluster:b".to_string()]
            ))
        );
        assert_eq!(
            parse_termination_message("failed: AccessDenied"),
            Some(("failed: AccessDenied".to_string(), vec![]))
        );
        assert_eq!(parse_termination_message("  \n"), None);
    }
}

#[cfg(test)]
mod phase_count_tests {
    use hibernator_api::HibernationPlan;
    use hibernator_api::fixtures::PlanBuilder;
    use kube::core::error_boundary::DeserializeGuard;
    use kube::runtime::{reflector, watcher};

    fn cached(name: &str, rv: &str) -> DeserializeGuard<HibernationPlan> {
        let mut p = PlanBuilder::new(name).build();
        p.metadata.resource_version = Some(rv.into());
        DeserializeGuard(Ok(p))
    }

    /// The phase gauges are counted again only when a cached plan changed: the digest of the
    /// cache changes with a plan's resource version and with the set of plans, and not with
    /// the order the cache lists them in.
    #[test]
    fn the_plans_digest_changes_with_a_plan_and_only_then() {
        let digest_of = |plans: &[(&str, &str)]| {
            let (store, mut writer) = reflector::store();
            for (name, rv) in plans {
                writer.apply_watcher_event(&watcher::Event::Apply(cached(name, rv)));
            }
            super::plans_version(&store)
        };
        let base = digest_of(&[("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(base, digest_of(&[("c", "3"), ("a", "1"), ("b", "2")]));
        assert_ne!(base, digest_of(&[("a", "1"), ("b", "4"), ("c", "3")]));
        assert_ne!(base, digest_of(&[("a", "1"), ("b", "2")]));
        assert_ne!(
            base,
            digest_of(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "5")])
        );
    }
}

#[cfg(test)]
mod deferred_status_tests {
    use super::{PlanVersions, QUIET_WRITE_INTERVAL};
    use hibernator_api::fixtures::PlanBuilder;
    use hibernator_api::plan::{HibernationPlan, HibernationPlanStatus};

    fn plan(rv: &str) -> HibernationPlan {
        let mut p = PlanBuilder::new("p").build();
        p.metadata.namespace = Some("ns".into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    fn status(phase_note: &str) -> HibernationPlanStatus {
        HibernationPlanStatus {
            last_error: Some(phase_note.into()),
            ..Default::default()
        }
    }

    /// A decided status whose write waits is what the next reconcile of the same plan version
    /// decides on, with the nights it counted; a write, any change of the plan, or nothing left
    /// to write ends it.
    #[test]
    fn a_deferred_status_lives_until_the_plan_changes_or_is_written() {
        let versions = PlanVersions::default();
        let v1 = plan("1");
        assert!(versions.deferred(&v1).is_none());
        versions.defer(&v1, &status("decided"), vec![]);
        let kept = versions.deferred(&v1).expect("kept for the same version");
        assert_eq!(kept.status, status("decided"));
        // Asked again: still there (reading does not take it away).
        assert!(versions.deferred(&v1).is_some());
        // The plan changed (an edit, another replica's write): decided again from it.
        assert!(versions.deferred(&plan("2")).is_none());
        assert!(versions.deferred(&v1).is_none(), "dropped, not kept aside");

        // Nothing left to write for it (the written status says the same): forgotten.
        versions.defer(&v1, &status("decided"), vec![]);
        versions.drop_deferred(&v1);
        assert!(
            versions.deferred(&v1).is_none(),
            "dropped when nothing is left to write"
        );

        versions.defer(&v1, &status("decided"), vec![]);
        versions.wrote_status(&plan("3"));
        assert!(versions.deferred(&plan("3")).is_none(), "a write ends it");
        assert!(versions.status_written_within(&plan("3"), QUIET_WRITE_INTERVAL));
    }
}

#[cfg(test)]
mod plan_versions_size_tests {
    /// Every plan has an entry, most without a deferred status: the entry stays small (with a
    /// status in place it took about 900 bytes).
    #[test]
    fn an_entry_without_a_deferred_status_is_small() {
        let status = std::mem::size_of::<hibernator_api::plan::HibernationPlanStatus>();
        let entry = std::mem::size_of::<super::Seen>();
        println!("status {status} bytes, entry {entry} bytes");
        assert!(entry <= 64, "{entry} bytes");
    }
}
