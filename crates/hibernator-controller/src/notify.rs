//! Notifications: HibernationNotifications turn what the plans' status shows into messages for
//! Slack, Microsoft Teams and CloudEvents webhooks.
//!
//! - What to send is derived from each selected plan's status
//!   ([`hibernator_api::notification::occurrences`]), so nothing depends on this process having
//!   seen a transition happen.
//! - The notification's `status.ledger` keeps, per plan and sink, the occurrence ids already
//!   handled (delivered or given up on); it is written after delivery, so a restart sends an
//!   occurrence that was due and not yet recorded (at least once; receivers de-duplicate by the
//!   CloudEvents id), and never re-sends what was recorded. A plan a sink meets for the first
//!   time is taken as it is: what its status already shows is recorded, not sent.
//! - Delivery runs in one task per sink with a bounded queue: the plan reconciler only sends
//!   a plan reference on a channel and never waits. Retries back off exponentially, honour
//!   `Retry-After`, and give up after a bound; one message per second per sink at most.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hibernator_api::common::{condition, condition_types, remove_condition, set_condition};
use hibernator_api::notification::render;
use hibernator_api::notification::{
    Delivery, DeliveryResult, HibernationNotification, HibernationNotificationStatus, LedgerEntry,
    NotificationEvent, Sink, SinkStatus, SinkType, batch, next_heads_up, occurrences,
};
use hibernator_api::plan::HibernationPlan;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::jobs::MANAGER;
use crate::metrics::Metrics;

/// How long the result of reading a notification's Secrets is trusted.
const SECRET_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// Most plans listed in `status.plans`.
const PLANS_LISTED: usize = 100;
/// Messages waiting per sink; more wait for the next reconcile.
const QUEUE_PER_SINK: usize = 64;
/// Longest wait between two evaluations of a notification.
const MAX_REQUEUE: Duration = Duration::from_secs(300);

/// Delivery settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Retries of one message.
    pub retry: hibernator_notify::Retry,
    /// Shortest time between two messages to one sink.
    pub min_interval: Duration,
    /// How much earlier (schedule time) than due a HeadsUp is sent, so that it arrives at
    /// least `headsUpBefore` before the hibernation.
    pub heads_up_lead: jiff::SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry: hibernator_notify::Retry::default(),
            min_interval: Duration::from_secs(1),
            heads_up_lead: jiff::SignedDuration::from_mins(1),
        }
    }
}

type NotifKey = (String, String);
/// What a reading of a notification's Secrets found: for which generation, when, and what is
/// wrong with each sink.
type SecretCheck = (Option<i64>, std::time::Instant, BTreeMap<String, String>);

/// One message for one sink.
#[derive(Debug, Clone)]
pub struct Job {
    notification: NotifKey,
    sink_name: String,
    sink: Sink,
    plan: String,
    ids: Vec<String>,
    event: NotificationEvent,
    body: Vec<u8>,
}

/// How a job ended.
#[derive(Debug, Clone)]
struct Outcome {
    sink_name: String,
    sink_type: SinkType,
    plan: String,
    ids: Vec<String>,
    delivery: Delivery,
    retries: i64,
}

#[derive(Default)]
struct State {
    /// (notification, plan, sink, id) queued or being delivered.
    in_flight: HashSet<(NotifKey, String, String, String)>,
    /// Finished jobs not yet written to their notification's status.
    outcomes: HashMap<NotifKey, Vec<Outcome>>,
    /// The queue of each sink's worker.
    workers: HashMap<(NotifKey, String), mpsc::Sender<Job>>,
    /// The resource version of each notification as last written by this controller.
    versions: HashMap<NotifKey, String>,
    /// The sinks' Secrets as last checked: for which generation, when, and what is wrong.
    checked: HashMap<NotifKey, SecretCheck>,
}

/// The notification machinery shared by its reconciler and the sink workers.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    clock: Clock,
    metrics: Metrics,
    settings: Settings,
    http: hibernator_notify::Http,
    state: Mutex<State>,
    /// Wakes the reconciler of a notification (a delivery ended).
    wake: mpsc::Sender<ObjectRef<HibernationNotification>>,
    /// Its receiving end, held by the running controller (again after a leadership change).
    wake_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<ObjectRef<HibernationNotification>>>>,
}

impl Notifier {
    /// A notifier delivering with `settings`.
    pub fn new(
        client: Client,
        clock: Clock,
        metrics: Metrics,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let (wake, wake_rx) = mpsc::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                clock,
                metrics,
                settings,
                http: hibernator_notify::Http::new()?,
                state: Mutex::default(),
                wake,
                wake_rx: Arc::new(tokio::sync::Mutex::new(wake_rx)),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the notification controller until `stop`, from when the plan controller's caches
    /// are synced (`caches_synced`): notifications are evaluated when they change, when a plan
    /// they may select is reconciled (`plan_changes`), when a delivery ends, and at least every
    /// five minutes.
    pub async fn run(
        self,
        client: Client,
        namespace: Option<String>,
        plans: Store<DeserializeGuard<HibernationPlan>>,
        plan_changes: mpsc::Receiver<ObjectRef<HibernationPlan>>,
        caches_synced: impl std::future::Future<Output = ()> + Send,
        stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ) {
        let api: Api<HibernationNotification> = match &namespace {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        };
        let controller = Controller::new(api, watcher::Config::default()).with_config(
            kube::runtime::controller::Config::default()
                .debounce(Duration::from_millis(200))
                .concurrency(4),
        );
        let notifications = controller.store();
        let by_plan = {
            let plans = plans.clone();
            move |r: ObjectRef<HibernationPlan>| {
                let ns = r.namespace.clone();
                let labels = plans
                    .state()
                    .iter()
                    .filter_map(|g| g.0.as_ref().ok())
                    .find(|p| p.namespace() == ns && p.name_any() == r.name)
                    .map(|p| p.labels().clone())
                    .unwrap_or_default();
                notifications
                    .state()
                    .iter()
                    .filter(|n| n.namespace() == ns && n.selects(&r.name, &labels))
                    .map(|n| ObjectRef::from_obj(n.as_ref()))
                    .collect::<Vec<_>>()
            }
        };
        let plan_triggers = tokio_stream::wrappers::ReceiverStream::new(plan_changes)
            .flat_map(move |r| futures::stream::iter(by_plan(r)));
        let delivered = futures::stream::unfold(self.inner.wake_rx.clone(), |rx| async move {
            let next = rx.lock().await.recv().await;
            next.map(|r| (r, rx))
        });
        // A ledger is pruned to the plans selected: evaluating before the plan cache is
        // complete would forget what was sent to the plans not listed yet. (Not
        // `Store::wait_until_ready`: with two tasks waiting on one store, only the last to poll
        // is woken.)
        let mut stop = Box::pin(stop);
        tokio::select! {
            _ = caches_synced => {},
            _ = &mut stop => return,
        }
        let ctx = Arc::new(Ctx {
            notifier: self.clone(),
            plans,
        });
        info!("notifications: watching HibernationNotifications");
        controller
            .reconcile_on(plan_triggers)
            .reconcile_on(delivered)
            .graceful_shutdown_on(stop)
            .run(reconcile, error_policy, ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    debug!("notification reconcile loop: {e}");
                }
            })
            .await;
    }
}

struct Ctx {
    notifier: Notifier,
    plans: Store<DeserializeGuard<HibernationPlan>>,
}

/// Notification reconcile errors (the message never holds a Secret value).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a request.
    #[error("failed to {0}: {1}")]
    Api(&'static str, #[source] Box<kube::Error>),
}

fn error_policy(n: Arc<HibernationNotification>, error: &Error, _: Arc<Ctx>) -> Action {
    warn!(notification = %n.name_any(), "{}", hibernator_api::common::error_chain(error));
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(n: Arc<HibernationNotification>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let notifier = &ctx.notifier;
    let key: NotifKey = (n.namespace().unwrap_or_default(), n.name_any());
    let n = current(&n, notifier).await?;
    let now = notifier.inner.clock.now();
    // Occurrences are evaluated a little ahead, so that a HeadsUp leaves early enough.
    let horizon = now + notifier.inner.settings.heads_up_lead;
    let generation = n.metadata.generation;
    let mut status = n.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let pending = notifier
        .state()
        .outcomes
        .get(&key)
        .cloned()
        .unwrap_or_default();
    merge_outcomes(&mut status, &pending);
    let mut requeue = MAX_REQUEUE;

    let problems = n.spec_problems();
    if !problems.is_empty() {
        let message = problems.join("; ");
        for (t, s) in [
            (condition_types::READY, false),
            (condition_types::STALLED, true),
        ] {
            set_condition(
                &mut status.conditions,
                condition(t, s, "InvalidSpec", message.clone(), generation, now),
            );
        }
    } else {
        remove_condition(&mut status.conditions, condition_types::STALLED);
        let plans = selected_plans(&n, &ctx.plans);
        status.plans = plans
            .iter()
            .take(PLANS_LISTED)
            .map(|p| p.name_any())
            .collect();
        let heads_up_before = n.heads_up_before().unwrap_or_default();
        let broken = notifier.sink_problems(&key, &n).await;
        let mut jobs = Vec::new();
        for sink in &n.spec.sinks {
            let sink_name = sink.effective_name();
            ensure_sink_status(&mut status, &sink_name, sink);
            for plan in &plans {
                let due = evaluate(
                    &n,
                    &key,
                    plan,
                    sink,
                    &sink_name,
                    &mut status,
                    horizon,
                    notifier,
                );
                // What is due for a sink that cannot be reached stays due until it can.
                if !broken.contains_key(&sink_name) {
                    jobs.extend(due);
                }
            }
        }
        prune(&mut status, &n, &plans, horizon);
        let (ready, reason, message) = readiness(&n, &plans, &status, &broken);
        set_condition(
            &mut status.conditions,
            condition(
                condition_types::READY,
                ready,
                reason,
                message,
                generation,
                now,
            ),
        );
        notifier.forget_removed_sinks(&key, &n.spec.sinks);
        for job in jobs {
            notifier.enqueue(job);
        }
        if n.spec.events.contains(&NotificationEvent::HeadsUp) {
            let soonest = plans
                .iter()
                .filter_map(|p| next_heads_up(p, heads_up_before))
                .map(|t| t - notifier.inner.settings.heads_up_lead)
                .filter(|t| *t > now)
                .min();
            if let Some(t) = soonest {
                requeue = requeue
                    .min(notifier.inner.clock.real_delay_until(t) + Duration::from_millis(50));
            }
        }
    }

    if n.status.as_ref() != Some(&status) {
        write_status(&n, &key, &status, notifier).await?;
    }
    // Outcomes now in the status are done with.
    if !pending.is_empty() {
        let mut state = notifier.state();
        if let Some(list) = state.outcomes.get_mut(&key) {
            list.drain(..pending.len().min(list.len()));
        }
        for o in &pending {
            for id in &o.ids {
                state.in_flight.remove(&(
                    key.clone(),
                    o.plan.clone(),
                    o.sink_name.clone(),
                    id.clone(),
                ));
            }
        }
    }
    Ok(Action::requeue(requeue))
}

/// The notification to work on: the cached one, unless this controller wrote a newer one the
/// cache has not caught up with.
async fn current(
    cached: &Arc<HibernationNotification>,
    notifier: &Notifier,
) -> Result<HibernationNotification, Error> {
    let key = (cached.namespace().unwrap_or_default(), cached.name_any());
    let known = notifier.state().versions.get(&key).cloned();
    match known {
        Some(rv) if Some(&rv) != cached.metadata.resource_version.as_ref() => {
            let api: Api<HibernationNotification> =
                Api::namespaced(notifier.inner.client.clone(), &key.0);
            match api.get_opt(&key.1).await {
                Ok(Some(live)) => {
                    if let Some(rv) = live.resource_version() {
                        notifier.state().versions.insert(key, rv);
                    }
                    Ok(live)
                }
                Ok(None) => Ok(cached.as_ref().clone()),
                Err(e) => Err(Error::Api("read the notification", Box::new(e))),
            }
        }
        _ => Ok(cached.as_ref().clone()),
    }
}

async fn write_status(
    n: &HibernationNotification,
    key: &NotifKey,
    status: &HibernationNotificationStatus,
    notifier: &Notifier,
) -> Result<(), Error> {
    let api: Api<HibernationNotification> = Api::namespaced(notifier.inner.client.clone(), &key.0);
    let patch = json!({
        "apiVersion": HibernationNotification::api_version(&()),
        "kind": HibernationNotification::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(
            &n.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::Api("update the notification's status", Box::new(e)))?;
    notifier
        .inner
        .metrics
        .api_write("HibernationNotification/status");
    if let Some(rv) = written.resource_version() {
        notifier.state().versions.insert(key.clone(), rv);
    }
    Ok(())
}

/// The valid plans of the notification's namespace it selects, by name.
fn selected_plans(
    n: &HibernationNotification,
    plans: &Store<DeserializeGuard<HibernationPlan>>,
) -> Vec<HibernationPlan> {
    let ns = n.namespace();
    let mut out: Vec<HibernationPlan> = plans
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|p| p.namespace() == ns && n.selects(&p.name_any(), p.labels()))
        .cloned()
        .collect();
    out.sort_by_key(|p| p.name_any());
    out
}

fn ensure_sink_status(status: &mut HibernationNotificationStatus, name: &str, sink: &Sink) {
    let type_ = sink
        .type_()
        .map(SinkType::as_str)
        .unwrap_or_default()
        .to_string();
    match status.sinks.iter_mut().find(|s| s.name == name) {
        Some(s) => s.type_ = type_,
        None => status.sinks.push(SinkStatus {
            name: name.to_string(),
            type_,
            ..Default::default()
        }),
    }
}

/// The jobs one sink owes one plan; a pair met for the first time records what the plan's
/// status already shows instead.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    n: &HibernationNotification,
    key: &NotifKey,
    plan: &HibernationPlan,
    sink: &Sink,
    sink_name: &str,
    status: &mut HibernationNotificationStatus,
    now: Timestamp,
    notifier: &Notifier,
) -> Vec<Job> {
    let plan_name = plan.name_any();
    let before = n.heads_up_before().unwrap_or_default();
    let entry = match status
        .ledger
        .iter()
        .position(|l| l.plan == plan_name && l.sink == sink_name)
    {
        Some(i) => &mut status.ledger[i],
        None => {
            let seen: Vec<String> = occurrences(plan, now, before, &[])
                .into_iter()
                .map(|o| o.id)
                .collect();
            status.ledger.push(LedgerEntry {
                plan: plan_name,
                sink: sink_name.to_string(),
                handled: seen,
            });
            return Vec::new();
        }
    };
    let all = occurrences(plan, now, before, &entry.handled);
    let handled: BTreeSet<&String> = entry.handled.iter().collect();
    let in_flight = notifier.state().in_flight.clone();
    let mut due = Vec::new();
    let mut silently = Vec::new();
    for o in all {
        if handled.contains(&o.id)
            || in_flight.contains(&(
                key.clone(),
                plan_name.clone(),
                sink_name.to_string(),
                o.id.clone(),
            ))
        {
            continue;
        }
        if n.spec.events.contains(&o.event) {
            due.push(o);
        } else {
            // Not wanted: recorded as handled, so that adding the event later does not replay
            // the past (and a Recovered can follow a Stalled nobody was told about).
            silently.push(o.id);
        }
    }
    entry.handled.extend(silently);
    let Some(type_) = sink.type_() else {
        return Vec::new();
    };
    batch(due)
        .into_iter()
        .map(|(ids, o)| Job {
            notification: key.clone(),
            sink_name: sink_name.to_string(),
            sink: sink.clone(),
            plan: plan_name.clone(),
            event: o.event,
            body: render::body(type_, plan, &o),
            ids,
        })
        .collect()
}

/// Adds finished deliveries to the ledger and the sinks' counters.
fn merge_outcomes(status: &mut HibernationNotificationStatus, outcomes: &[Outcome]) {
    for o in outcomes {
        match status
            .ledger
            .iter_mut()
            .find(|l| l.plan == o.plan && l.sink == o.sink_name)
        {
            Some(l) => {
                for id in &o.ids {
                    if !l.handled.contains(id) {
                        l.handled.push(id.clone());
                    }
                }
            }
            None => status.ledger.push(LedgerEntry {
                plan: o.plan.clone(),
                sink: o.sink_name.clone(),
                handled: o.ids.clone(),
            }),
        }
        let sink = match status.sinks.iter_mut().position(|s| s.name == o.sink_name) {
            Some(i) => &mut status.sinks[i],
            None => {
                status.sinks.push(SinkStatus {
                    name: o.sink_name.clone(),
                    type_: o.sink_type.as_str().to_string(),
                    ..Default::default()
                });
                status.sinks.last_mut().expect("just pushed")
            }
        };
        match o.delivery.result {
            DeliveryResult::Delivered => sink.delivered += 1,
            DeliveryResult::Failed => sink.failed += 1,
        }
        sink.retries += o.retries;
        sink.last_delivery = Some(o.delivery.clone());
    }
}

/// Drops ledger entries of plans and sinks that are gone, and ids no plan status can produce
/// any more. A stall stays until its Recovered is handled (which retires both).
fn prune(
    status: &mut HibernationNotificationStatus,
    n: &HibernationNotification,
    plans: &[HibernationPlan],
    now: Timestamp,
) {
    let sinks: BTreeSet<String> = n.spec.sinks.iter().map(Sink::effective_name).collect();
    let by_name: BTreeMap<String, &HibernationPlan> =
        plans.iter().map(|p| (p.name_any(), p)).collect();
    let before = n.heads_up_before().unwrap_or_default();
    status.sinks.retain(|s| sinks.contains(&s.name));
    status.ledger.retain_mut(|l| {
        let Some(plan) = by_name.get(&l.plan) else {
            return false;
        };
        if !sinks.contains(&l.sink) {
            return false;
        }
        let recovered: BTreeSet<String> = l
            .handled
            .iter()
            .filter_map(|id| id.strip_prefix("recovered/").map(str::to_string))
            .collect();
        l.handled.retain(|id| !recovered.contains(id));
        let derivable: BTreeSet<String> = occurrences(plan, now, before, &l.handled)
            .into_iter()
            .map(|o| o.id)
            .collect();
        l.handled.retain(|id| {
            derivable.contains(id) || (id.starts_with("stalled@") && !recovered.contains(id))
        });
        true
    });
    status
        .ledger
        .sort_by(|a, b| (&a.plan, &a.sink).cmp(&(&b.plan, &b.sink)));
}

/// `Ready`: True when plans are selected and no sink's last delivery failed.
fn readiness(
    n: &HibernationNotification,
    plans: &[HibernationPlan],
    status: &HibernationNotificationStatus,
    broken: &BTreeMap<String, String>,
) -> (bool, &'static str, String) {
    if !broken.is_empty() {
        return (
            false,
            "SinkNotUsable",
            broken.values().cloned().collect::<Vec<_>>().join("; "),
        );
    }
    if plans.is_empty() {
        let what = match (&n.spec.plan_refs, &n.spec.selector) {
            (Some(refs), _) => format!(
                "spec.planRefs: no plan named {} in namespace {}",
                refs.iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                n.namespace().unwrap_or_default()
            ),
            _ => format!(
                "spec.selector: no plan of namespace {} matches {}",
                n.namespace().unwrap_or_default(),
                serde_json::to_string(&n.spec.selector).unwrap_or_default()
            ),
        };
        return (false, "NoPlansSelected", what);
    }
    let failing: Vec<String> = status
        .sinks
        .iter()
        .filter_map(|s| {
            let d = s.last_delivery.as_ref()?;
            (d.result == DeliveryResult::Failed).then(|| {
                format!(
                    "sink {}: {}",
                    s.name,
                    d.error.as_deref().unwrap_or("delivery failed")
                )
            })
        })
        .collect();
    if !failing.is_empty() {
        return (false, "DeliveryFailed", failing.join("; "));
    }
    (
        true,
        "Watching",
        format!("{} plan(s), {} sink(s)", plans.len(), n.spec.sinks.len()),
    )
}

impl Notifier {
    /// What is wrong with each sink's Secrets (by sink name), read again when the spec changed
    /// or the last reading is five minutes old.
    async fn sink_problems(
        &self,
        key: &NotifKey,
        n: &HibernationNotification,
    ) -> BTreeMap<String, String> {
        let generation = n.metadata.generation;
        if let Some((g, at, problems)) = self.state().checked.get(key)
            && *g == generation
            && at.elapsed() < SECRET_CHECK_INTERVAL
        {
            return problems.clone();
        }
        let mut problems = BTreeMap::new();
        for sink in &n.spec.sinks {
            if let Err(e) = hibernator_notify::resolve(&self.inner.client, &key.0, sink).await {
                problems.insert(sink.effective_name(), e);
            }
        }
        self.state().checked.insert(
            key.clone(),
            (generation, std::time::Instant::now(), problems.clone()),
        );
        problems
    }

    /// Queues a job on its sink's worker (started on first use); a full queue leaves the job
    /// for the next evaluation.
    fn enqueue(&self, job: Job) {
        let wkey = (job.notification.clone(), job.sink_name.clone());
        let mut state = self.state();
        let tx = state
            .workers
            .entry(wkey)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE_PER_SINK);
                tokio::spawn(worker(self.clone(), rx));
                tx
            })
            .clone();
        let flights: Vec<_> = job
            .ids
            .iter()
            .map(|id| {
                (
                    job.notification.clone(),
                    job.plan.clone(),
                    job.sink_name.clone(),
                    id.clone(),
                )
            })
            .collect();
        match tx.try_send(job) {
            Ok(()) => state.in_flight.extend(flights),
            Err(e) => debug!("a sink's queue is full; the message waits: {e}"),
        }
    }

    /// Stops the workers of sinks a notification no longer has, and forgets their jobs.
    fn forget_removed_sinks(&self, key: &NotifKey, sinks: &[Sink]) {
        let names: BTreeSet<String> = sinks.iter().map(Sink::effective_name).collect();
        let mut state = self.state();
        state
            .workers
            .retain(|(k, s), _| k != key || names.contains(s));
        state
            .in_flight
            .retain(|(k, _, s, _)| k != key || names.contains(s));
    }

    fn finished(&self, job: &Job, outcome: Outcome) {
        self.state()
            .outcomes
            .entry(job.notification.clone())
            .or_default()
            .push(outcome);
        let r = ObjectRef::new(&job.notification.1).within(&job.notification.0);
        if self.inner.wake.try_send(r).is_err() {
            debug!("notification wake-up channel full; the status follows at the next evaluation");
        }
    }
}

/// Delivers one sink's jobs in order, at most one per `min_interval`.
async fn worker(notifier: Notifier, mut rx: mpsc::Receiver<Job>) {
    let mut last: Option<tokio::time::Instant> = None;
    while let Some(job) = rx.recv().await {
        if let Some(t) = last {
            tokio::time::sleep_until(t + notifier.inner.settings.min_interval).await;
        }
        let message = hibernator_notify::Message {
            namespace: &job.notification.0,
            sink: &job.sink,
            body: &job.body,
        };
        let report = hibernator_notify::deliver(
            &notifier.inner.client,
            &notifier.inner.http,
            &notifier.inner.settings.retry,
            message,
            |result| {
                notifier.inner.metrics.notification(
                    job.sink.type_().map(SinkType::as_str).unwrap_or_default(),
                    job.event.as_str(),
                    result,
                )
            },
        )
        .await;
        last = Some(tokio::time::Instant::now());
        match &report.error {
            None => {
                info!(notification = %job.notification.1, sink = %job.sink_name, plan = %job.plan, event = %job.event, attempts = report.attempts, "notification delivered")
            }
            Some(e) => {
                warn!(notification = %job.notification.1, sink = %job.sink_name, plan = %job.plan, event = %job.event, attempts = report.attempts, "notification given up on: {e}")
            }
        }
        let outcome = Outcome {
            sink_name: job.sink_name.clone(),
            sink_type: job.sink.type_().unwrap_or(SinkType::Webhook),
            plan: job.plan.clone(),
            ids: job.ids.clone(),
            delivery: Delivery {
                time: Time(notifier.inner.clock.now()),
                plan: job.plan.clone(),
                event: job.event,
                result: if report.error.is_none() {
                    DeliveryResult::Delivered
                } else {
                    DeliveryResult::Failed
                },
                attempts: report.attempts as i32,
                error: report.error.clone(),
            },
            retries: i64::from(report.attempts.saturating_sub(1)),
        };
        notifier.finished(&job, outcome);
    }
}

#[cfg(test)]
mod tests;
