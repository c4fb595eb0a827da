//! The pure heart of the reconcile pipeline: from what was observed (the plan, its schedule,
//! its runner Jobs, its restore data, the clock) to what should be (status, Jobs to create,
//! Events, when to look again). No I/O, so every rule here is unit-tested.
//!
//! Rules (SPEC "Semantics"):
//! - The plan wants its targets asleep inside off-hours, unless suspended or being deleted
//!   with `onDelete: WakeUp`.
//! - An operation (hibernate or wake-up) runs the execution graph; Jobs are the source of truth
//!   for each target's state (deterministic names make this crash-safe); status is the record.
//! - When the wanted direction changes mid-operation, nothing new starts; once the running
//!   Jobs end, the opposite operation starts. A failed hibernation never blocks the wake-up.
//! - Wake-up runs only for targets with restore data; the others are Skipped.
//! - What is asleep is also kept in the status (`status.asleep`), so that restore data lost
//!   from the ConfigMap, targets removed while asleep and resources a wake-up could not
//!   restore are reported (`Restored=False`) until a person acknowledges them or a later cycle
//!   restores everything (see [`restored`]).
//! - A runner Job that vanished, or whose name a foreign object took, is a failed attempt.
//! - Strict: failed targets are retried with exponential backoff (1 min x 2^n, at most
//!   30 min) up to `retries`, then the plan is Stalled until the retry annotation changes or
//!   the schedule moves on. BestEffort: dependents of failures are Aborted, the operation
//!   ends, failures are reported and can be retried with the annotation.

use std::collections::BTreeSet;

use hibernator_api::common::{condition, condition_types, remove_condition, set_condition};
use hibernator_api::graph::ExecutionGraph;
use hibernator_api::plan::{
    CycleRecord, CycleStatus, FailureMode, HibernationPlan, HibernationPlanStatus, OnDelete,
    Operation, OperationRecord, Phase, RetryStatus, ScheduleStatus, TargetState, TargetStatus,
};
use hibernator_api::restore::RestoreView;
use hibernator_api::schedule::Evaluation;
use hibernator_api::wishes::Wishes;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Most cycles kept in `status.history`.
pub const HISTORY_LENGTH: usize = 5;
/// First retry delay; doubled per retry.
pub const RETRY_BASE: SignedDuration = SignedDuration::from_secs(60);
/// Longest retry delay.
pub const RETRY_CAP: SignedDuration = SignedDuration::from_secs(30 * 60);

/// A runner Job as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobObservation {
    /// Job name.
    pub name: String,
    /// Target name.
    pub target: String,
    /// Operation.
    pub operation: Operation,
    /// Cycle.
    pub cycle: String,
    /// Attempt, from 1.
    pub attempt: i32,
    /// Running, succeeded or failed.
    pub outcome: JobOutcome,
    /// Summary or error (runner completion, termination message or Job condition).
    pub message: Option<String>,
    /// Last progress line reported by the runner.
    pub progress: Option<String>,
    /// Resource keys a hibernation runner reported recorded (from its completion).
    pub recorded: Vec<String>,
    /// Resource keys a wake-up runner reported restored (from its completion).
    pub restored: Vec<String>,
    /// An in-sleep check (`enforce`) rather than an operation of the cycle; `attempt` is then
    /// the check's number.
    pub check: bool,
    /// Resource keys a check found awake and left so (from its completion).
    pub drifted: Vec<String>,
    /// Resource keys a check found awake and put back to sleep (from its completion).
    pub reapplied: Vec<String>,
}

/// How a Job ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Still running (or not started yet).
    Running,
    /// Completed.
    Succeeded,
    /// Failed (non-zero exit, deadline, ...).
    Failed,
    /// The Job is gone, or its name is taken by a Job that is not this plan's: a failed
    /// attempt.
    Lost,
}

/// Everything the decision needs.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The plan, with the status last written.
    pub plan: &'a HibernationPlan,
    /// The compiled graph (hibernation direction).
    pub graph: &'a ExecutionGraph,
    /// The schedule (with exceptions) evaluated at `now`.
    pub schedule: &'a Evaluation,
    /// Target by target: asleep or awake at `now` (exceptions for some targets only, closed
    /// under the dependencies).
    pub wishes: &'a Wishes,
    /// Schedule time (simulated in tests and the demo).
    pub now: Timestamp,
    /// Wall-clock time, for deadlines measured by the API server.
    pub real_now: Timestamp,
    /// The plan's runner Jobs of its operations.
    pub jobs: &'a [JobObservation],
    /// The plan's in-sleep check Jobs.
    pub checks: &'a [JobObservation],
    /// The restore data.
    pub restore: &'a RestoreView,
    /// Why the restore ConfigMap cannot be used (it is not Hibernator's), if it cannot.
    pub restore_problem: Option<String>,
    /// Why the plan may not hibernate (`SelfHibernation`: it would put the controller itself
    /// to sleep; `InvalidSpec`: a selector selects everything), if it may not. Wake-ups run.
    pub refuse_hibernation: Option<(&'static str, String)>,
    /// A missing or unusable connector: `(reason, message)`.
    pub reference_problem: Option<(String, String)>,
    /// How long a missing reference may last before the plan is Stalled.
    pub reference_grace: SignedDuration,
    /// How long deletion waits for the wake-up before giving up.
    pub deletion_timeout: SignedDuration,
    /// How many targets may start in this decision when the controller is crowded (many
    /// plans reached a boundary together); the others stay Pending and start at a later
    /// reconcile. `None`: all that are ready.
    pub start_limit: Option<StartLimit>,
}

/// The starts a crowded controller allows one decision, so that every plan's first runner
/// Job comes before anyone's second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    /// For a plan whose operation has started nothing yet.
    pub first: usize,
    /// For a plan whose operation has begun (a target ran or runs).
    pub more: usize,
}

/// A Job to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// Index of the target in `spec.targets`.
    pub target: usize,
    /// Operation.
    pub operation: Operation,
    /// Cycle.
    pub cycle: String,
    /// Attempt, from 1 (for a check: its number in the cycle).
    pub attempt: i32,
    /// An in-sleep check in this mode rather than an operation (then `operation` is
    /// `Hibernate`, the side the target should be on).
    pub check: Option<hibernator_api::plan::EnforceMode>,
}

/// An Event to publish on the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRequest {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened.
    pub note: String,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (written only when it differs from the current one).
    pub status: HibernationPlanStatus,
    /// Jobs to create.
    pub create: Vec<JobRequest>,
    /// Records to retire, as `(target, key)` (after the status is written): the restored ones
    /// this decision saw, and at the start of a hibernation the acknowledged ones of targets
    /// still in the plan.
    pub retire: BTreeSet<(String, String)>,
    /// A person acknowledged what was not restored: every live record of these targets is to
    /// be acknowledged (before the status is written).
    pub acknowledge: Option<BTreeSet<String>>,
    /// Events.
    pub events: Vec<EventRequest>,
    /// When to reconcile again at the latest (schedule time).
    pub requeue_at: Option<Timestamp>,
    /// The finalizer may be removed.
    pub release_finalizer: bool,
    /// Targets could start and were left for the next reconcile ([`Observed::start_limit`]).
    /// Such a pass only creates its Jobs: the status, Events and the rest of the decision wait
    /// for the plan's next pass, which decides them again from the Jobs.
    pub more_to_start: bool,
    /// This decision starts the first target of its operation under a start limit.
    pub first_start: bool,
}

fn t(ts: Timestamp) -> Time {
    Time(ts)
}

/// The cycle identifier for a hibernation starting a sleep that began at `since`: sortable,
/// usable in Job names and labels (`20261127t0100`). `previous` avoids reusing the id of the
/// last cycle when the same sleep is entered twice (after a suspension, say).
pub fn cycle_id(since: Timestamp, previous: Option<&str>) -> String {
    let base = since.strftime("%Y%m%dt%H%M").to_string();
    match previous {
        Some(p) if p == base || p.starts_with(&format!("{base}-")) => {
            let n: u32 = p
                .strip_prefix(&format!("{base}-"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            format!("{base}-{}", n + 1)
        }
        _ => base,
    }
}

/// Backoff before retry number `count` (0-based).
pub fn backoff(count: i32) -> SignedDuration {
    let factor = 2i64.saturating_pow(count.clamp(0, 16) as u32);
    let secs = RETRY_BASE.as_secs().saturating_mul(factor);
    SignedDuration::from_secs(secs.min(RETRY_CAP.as_secs()))
}

/// The plan's wishes, derived once per decision.
struct Wants<'a> {
    names: Vec<&'a str>,
    deleting: bool,
    suspended: bool,
    /// Per target (in `spec.targets` order): should it sleep.
    each: Vec<bool>,
    /// Per target: why it departs from the plan's schedule.
    departs: Vec<Option<String>>,
}

impl<'a> Wants<'a> {
    fn of(o: &Observed<'a>) -> Self {
        let spec = &o.plan.spec;
        let deleting = o.plan.metadata.deletion_timestamp.is_some();
        let suspended = spec.suspend.unwrap_or(false)
            || spec.suspend_until.as_ref().is_some_and(|u| u.0 > o.now);
        let held = deleting || suspended;
        let wish = |i: usize| o.wishes.targets.get(i);
        Self {
            names: spec.targets.iter().map(|t| t.name.as_str()).collect(),
            deleting,
            suspended,
            each: (0..spec.targets.len())
                .map(|i| !held && wish(i).map_or(o.schedule.in_off_hours, |w| w.asleep))
                .collect(),
            departs: (0..spec.targets.len())
                .map(|i| wish(i).and_then(|w| w.departs.clone()).filter(|_| !held))
                .collect(),
        }
    }

    /// Targets whose wish differs from the side their last operation left them on, by the
    /// operation that brings them there: `(wake, sleep)`. A target whose last operation failed
    /// counts as well when it is outside the current operation, or with `all_failed`: it is
    /// run again when the next operation in its direction starts.
    fn differing(
        &self,
        targets: &[TargetStatus],
        cycle: &CycleStatus,
        all_failed: bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut wake = vec![];
        let mut sleep = vec![];
        for (i, name) in self.names.iter().enumerate() {
            let t = targets.iter().find(|t| t.name == *name);
            let side = t.and_then(|t| t.operation).unwrap_or(match t {
                Some(_) => cycle.operation,
                None => Operation::WakeUp,
            });
            let failed = t.is_some_and(|t| {
                t.state.is_terminal() && !t.state.is_success() && (all_failed || !in_operation(t))
            });
            match (self.each[i], side) {
                (false, Operation::Hibernate) => wake.push(i),
                (true, Operation::WakeUp) => sleep.push(i),
                (false, Operation::WakeUp) | (true, Operation::Hibernate) if failed => {
                    if self.each[i] {
                        sleep.push(i)
                    } else {
                        wake.push(i)
                    }
                }
                _ => {}
            }
        }
        (wake, sleep)
    }
}

/// True for a target of the current operation (the others carry the state of their own last
/// operation, see [`CycleStatus::targets`]).
pub(crate) fn in_operation(t: &TargetStatus) -> bool {
    t.operation.is_none()
}

/// Decides what to do.
pub fn decide(o: &Observed<'_>) -> Decision {
    let plan = o.plan;
    let prev = plan.status.clone().unwrap_or_default();
    let wants = Wants::of(o);
    let mut d = Decision {
        status: prev.clone(),
        create: vec![],
        retire: BTreeSet::new(),
        acknowledge: None,
        events: vec![],
        requeue_at: None,
        release_finalizer: false,
        more_to_start: false,
        first_start: false,
    };
    if releases_at_once(o, &wants, &prev) {
        d.release_finalizer = true;
        d.events.extend(deleted_without_wake_up(o, &wants));
        return d;
    }

    let mut status = prev.clone();
    status.observed_generation = plan.metadata.generation;
    status.schedule = Some(schedule_status(o.schedule));
    status.restore_ref = Some(crate::restore::config_map_name(
        plan.metadata.name.as_deref().unwrap_or_default(),
    ));
    let retry_now = take_token(
        plan,
        hibernator_api::plan::RETRY_ANNOTATION,
        &mut status.last_handled_retry_token,
    );
    let ack_now = take_token(
        plan,
        hibernator_api::plan::RESTORE_ACK_ANNOTATION,
        &mut status.last_handled_restore_ack,
    );

    let (mut stalled, new_hibernation) = step_operation(&mut status, &mut d, &wants, retry_now, o);
    for t in &mut status.targets {
        let i = wants.names.iter().position(|n| *n == t.name);
        t.schedule_override = i.and_then(|i| wants.departs[i].clone());
    }
    let failure = settle_operation(&mut status, &mut d, o);
    let phase = phase_of(
        &status,
        failure.is_some(),
        wants.suspended,
        plan.failure_mode(),
    );
    status.phase = Some(phase);

    restored::update_ledger(&mut status, o, &wants.names, new_hibernation.is_some());
    let restore_problem = restored::evaluate(&mut status, &mut d, o, &wants.names, ack_now);
    // Restored records wait for the end of the wake-up under way: then one ConfigMap write
    // retires them all, instead of one write per target as each target finishes.
    let waking = status
        .current_cycle
        .as_ref()
        .is_some_and(|c| c.operation == Operation::WakeUp && c.finished_at.is_none());
    if !waking {
        d.retire = o.restore.restored();
    }
    if let Some(scope) = &new_hibernation {
        // Acknowledged records of the targets going to sleep have been seen; tonight's records
        // replace them. Those of removed targets stay.
        d.retire
            .extend(o.restore.acknowledged(|t| scope.iter().any(|s| s == t)));
    }
    if wants.deleting {
        deletion(&mut status, &mut d, o, &wants.names);
    }
    if let Some((reason, why)) = &o.refuse_hibernation
        && status
            .current_cycle
            .as_ref()
            .is_some_and(|c| c.operation == Operation::Hibernate && c.finished_at.is_none())
    {
        stalled = stalled.or(Some((*reason, why.clone())));
    }
    set_conditions(
        &mut status,
        &mut d,
        o,
        &prev,
        phase,
        stalled,
        failure.as_ref(),
        restore_problem,
    );
    target_events(&status, &prev, &mut d, o);
    enforce::step(&mut status, &mut d, o, &wants.each);

    d.requeue_at = requeue_at(d.requeue_at, &status, &wants, o);
    d.status = status;
    d
}

/// When to look again, besides `retry_at`: at the next schedule boundary (the plan's or a
/// target's) or the end of a suspension; at once when an operation ended and targets wait for
/// the next one.
fn requeue_at(
    retry_at: Option<Timestamp>,
    status: &HibernationPlanStatus,
    wants: &Wants<'_>,
    o: &Observed<'_>,
) -> Option<Timestamp> {
    let mut at = earliest(retry_at, o.schedule.next_transition().map(|t| t.at));
    at = earliest(at, o.wishes.next_change);
    if let Some(cycle) = status
        .current_cycle
        .as_ref()
        .filter(|c| c.finished_at.is_some())
    {
        let (wake, sleep) = wants.differing(&status.targets, cycle, false);
        if !wake.is_empty() || !sleep.is_empty() {
            return Some(o.now);
        }
    }
    if let Some(u) = &o.plan.spec.suspend_until
        && u.0 > o.now
    {
        at = earliest(at, Some(u.0));
    }
    at
}

/// The warning for a plan deleted with `onDelete: WakeUp` that leaves records of targets no
/// longer in it asleep.
fn deleted_without_wake_up(o: &Observed<'_>, wants: &Wants<'_>) -> Option<EventRequest> {
    let orphans: Vec<String> = o
        .restore
        .asleep()
        .into_keys()
        .filter(|t| !wants.names.contains(&t.as_str()))
        .collect();
    (!orphans.is_empty() && o.plan.on_delete() == OnDelete::WakeUp).then(|| EventRequest {
        warning: true,
        reason: "DeletedWithoutWakeUp",
        note: format!(
            "{} no longer in the plan and not woken up; their restore data stays in ConfigMap {}",
            orphans.join(", "),
            crate::restore::config_map_name(o.plan.metadata.name.as_deref().unwrap_or_default())
        ),
    })
}

/// Deletion with `Leave`, or of a plan with nothing asleep: the finalizer goes at once.
fn releases_at_once(o: &Observed<'_>, wants: &Wants<'_>, prev: &HibernationPlanStatus) -> bool {
    wants.deleting
        && (o.plan.on_delete() == OnDelete::Leave
            || (restored::asleep_in_spec(o, &wants.names).is_empty()
                && prev
                    .current_cycle
                    .as_ref()
                    .is_none_or(|c| c.operation == Operation::WakeUp && c.finished_at.is_some())))
}

/// True when the annotation holds a value not acted on yet (which is then recorded).
fn take_token(plan: &HibernationPlan, annotation: &str, handled: &mut Option<String>) -> bool {
    let token = plan
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
        .cloned();
    let new = token.is_some() && token != *handled;
    if new {
        *handled = token;
    }
    new
}

/// Advances, holds, switches or starts an operation. Returns why the plan is stalled, if it
/// is, and the targets of a hibernation that began.
fn step_operation(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    wants: &Wants<'_>,
    retry_now: bool,
    o: &Observed<'_>,
) -> (Option<(&'static str, String)>, Option<Vec<String>>) {
    let prev = o.plan.status.clone().unwrap_or_default();
    let names = &wants.names;
    let Some(cycle) = prev.current_cycle.clone() else {
        let sleepers: Vec<usize> = (0..names.len()).filter(|&i| wants.each[i]).collect();
        if !sleepers.is_empty() {
            let id = cycle_id(o.schedule.current_since.unwrap_or(o.now), None);
            let scope = start_operation(status, d, Operation::Hibernate, id, &sleepers, o);
            return (None, Some(scope));
        }
        if let Some(newest) = restored::asleep_in_spec(o, names).values().max() {
            // Restore data but no operation on record (status lost): wake up what it holds.
            let all: Vec<usize> = (0..names.len()).collect();
            start_operation(status, d, Operation::WakeUp, newest.clone(), &all, o);
        }
        return (None, None);
    };
    let mut targets = observe_targets(names, &cycle, &prev.targets, o.jobs, o.now);
    let running = targets.iter().any(|t| t.state == TargetState::Running);
    let agrees = (0..names.len())
        .filter(|&i| in_operation(&targets[i]))
        .all(|i| wants.each[i] == (cycle.operation == Operation::Hibernate));
    let (wake, sleep) = wants.differing(&targets, &cycle, false);
    let others_wait = !wake.is_empty() || !sleep.is_empty();
    if agrees && !(others_wait && cycle.finished_at.is_some()) {
        let stalled = advance(status, d, &cycle, &mut targets, retry_now, o);
        status.targets = targets;
        if status
            .targets
            .iter()
            .any(|t| in_operation(t) && !t.state.is_terminal())
            && let Some(c) = status.current_cycle.as_mut()
        {
            c.finished_at = None;
        }
        return (stalled, None);
    }
    if running {
        // Let the running Jobs end; start nothing new.
        status.targets = targets;
        return (None, None);
    }
    if cycle.finished_at.is_none() {
        finish_operation(status, d, &cycle, &targets, o.now, true);
    }
    next_operation(status, d, wants, &cycle, targets, o)
}

/// The operation after `cycle`: targets that should be awake and are not wake up first; else
/// targets that should sleep and do not go to sleep. Nothing to do leaves the plan steady.
fn next_operation(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    wants: &Wants<'_>,
    cycle: &CycleStatus,
    targets: Vec<TargetStatus>,
    o: &Observed<'_>,
) -> (Option<(&'static str, String)>, Option<Vec<String>>) {
    let (wake, sleep) = wants.differing(&targets, cycle, true);
    status.targets = targets;
    if !wake.is_empty() {
        start_operation(status, d, Operation::WakeUp, cycle.id.clone(), &wake, o);
        (None, None)
    } else if !sleep.is_empty() {
        let id = cycle_id(o.schedule.current_since.unwrap_or(o.now), Some(&cycle.id));
        let scope = start_operation(status, d, Operation::Hibernate, id, &sleep, o);
        (None, Some(scope))
    } else {
        (None, None)
    }
}

/// Has the operation ended? A failure counts once nothing runs any more (Strict stops starting
/// new targets after one) or, in BestEffort, once every target is done. Returns the failure.
fn settle_operation(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
) -> Option<String> {
    let prev = o.plan.status.clone().unwrap_or_default();
    let mut failure: Option<String> = None;
    if let Some(cycle) = status.current_cycle.clone() {
        let ours = || status.targets.iter().filter(|t| in_operation(t));
        let all_terminal = ours().all(|t| t.state.is_terminal());
        let running = ours().any(|t| t.state == TargetState::Running);
        let failed: Vec<&TargetStatus> = ours()
            .filter(|t| matches!(t.state, TargetState::Failed | TargetState::Aborted))
            .collect();
        let halted = match o.plan.failure_mode() {
            FailureMode::Strict => !running,
            FailureMode::BestEffort => all_terminal,
        };
        if !failed.is_empty() && halted {
            failure = Some(format!(
                "{} failed: {}",
                cycle.operation,
                failed
                    .iter()
                    .map(|t| match &t.message {
                        Some(m) => format!("{}: {m}", t.name),
                        None => t.name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let waiting_for_retry = status.retry.as_ref().is_some_and(|r| r.next_at.is_some());
        if all_terminal && cycle.finished_at.is_none() && !waiting_for_retry {
            let targets: Vec<TargetStatus> = ours().cloned().collect();
            finish_operation(status, d, &cycle, &targets, o.now, false);
        }
    }
    status.last_error = failure.clone().or_else(|| {
        // Keep the last error while a retry is pending.
        status.retry.as_ref().and_then(|_| prev.last_error.clone())
    });
    if failure.is_none()
        && status
            .targets
            .iter()
            .all(|t| !in_operation(t) || t.state.is_terminal())
    {
        status.retry = None;
    }
    failure
}

fn phase_of(
    status: &HibernationPlanStatus,
    failed: bool,
    suspended: bool,
    mode: FailureMode,
) -> Phase {
    let phase = match &status.current_cycle {
        _ if failed && mode == FailureMode::Strict => Phase::Error,
        None => Phase::Active,
        Some(c) => match (c.operation, c.finished_at.is_some()) {
            (Operation::Hibernate, false) => Phase::Hibernating,
            (Operation::WakeUp, false) => Phase::WakingUp,
            _ if !targets_on(status, Operation::WakeUp).is_empty()
                && !targets_on(status, Operation::Hibernate).is_empty() =>
            {
                Phase::PartlyAwake
            }
            (Operation::Hibernate, true) => Phase::Hibernated,
            (Operation::WakeUp, true) => Phase::Active,
        },
    };
    if suspended && phase == Phase::Active {
        Phase::Suspended
    } else {
        phase
    }
}

/// Deletion: the finalizer goes once everything recorded has been woken up, or after the
/// timeout. Records of targets no longer in the plan cannot be woken up: they are kept and an
/// Event says so.
fn deletion(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
    names: &[&str],
) {
    let woken = status
        .current_cycle
        .as_ref()
        .is_some_and(|c| c.operation == Operation::WakeUp && c.finished_at.is_some());
    let remaining: Vec<String> = restored::asleep_in_spec(o, names).into_keys().collect();
    let since = o
        .plan
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(o.real_now);
    let kept = status.restore_ref.clone().unwrap_or_default();
    if woken && remaining.is_empty() {
        d.release_finalizer = true;
        let orphans: Vec<String> = o
            .restore
            .asleep()
            .into_keys()
            .filter(|t| !names.contains(&t.as_str()))
            .collect();
        if !orphans.is_empty() {
            d.events.push(EventRequest {
                warning: true,
                reason: "DeletedWithoutWakeUp",
                note: format!(
                    "{} no longer in the plan and not woken up; their restore data stays in ConfigMap {kept}",
                    orphans.join(", ")
                ),
            });
        }
    } else if o.real_now.duration_since(since) > o.deletion_timeout {
        d.release_finalizer = true;
        d.events.push(EventRequest {
            warning: true,
            reason: "DeletionTimeout",
            note: format!(
                "gave up waking up {} after {}; restore data kept in ConfigMap {kept}",
                remaining.join(", "),
                format_duration(o.deletion_timeout),
            ),
        });
    }
}

/// The kstatus conditions (`Ready`, `Stalled`) and the domain conditions (`Hibernated`,
/// `Restored`), and the Stalled Event.
#[allow(clippy::too_many_arguments)]
fn set_conditions(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
    prev: &HibernationPlanStatus,
    phase: Phase,
    mut stalled: Option<(&'static str, String)>,
    failure: Option<&String>,
    restore_problem: Option<(&'static str, String)>,
) {
    let generation = o.plan.metadata.generation;
    let mut ready_problem: Option<(&'static str, String)> =
        failure.map(|f| ("TargetFailed", f.clone()));
    if let Some((reason, message)) = &o.reference_problem {
        let reason: &'static str = match reason.as_str() {
            "ReferenceNotFound" => "ReferenceNotFound",
            "ReferenceNotAllowed" => "ReferenceNotAllowed",
            _ => "ReferenceInvalid",
        };
        let since =
            hibernator_api::common::find_condition(&prev.conditions, condition_types::READY)
                .filter(|c| c.status == "False" && c.reason == reason)
                .map(|c| c.last_transition_time.0)
                .unwrap_or(o.now);
        if o.now.duration_since(since) >= o.reference_grace {
            stalled = stalled.or(Some((reason, message.clone())));
        } else {
            d.requeue_at = earliest(d.requeue_at, Some(since + o.reference_grace));
        }
        ready_problem = ready_problem.or(Some((reason, message.clone())));
    }
    // Something stayed asleep, or its restore data is gone: a person must look.
    if let Some(problem) = &restore_problem {
        stalled = stalled.or(Some(problem.clone()));
    }
    let mut conditions = status.conditions.clone();
    remove_condition(&mut conditions, condition_types::RECONCILING);
    let (ready, ready_reason, ready_message) = match (&stalled, &ready_problem) {
        (Some((r, m)), _) | (None, Some((r, m))) => (false, *r, m.clone()),
        (None, None) => (true, phase.as_str(), phase_message(phase, status)),
    };
    set_condition(
        &mut conditions,
        condition(
            condition_types::READY,
            ready,
            ready_reason,
            ready_message,
            generation,
            o.now,
        ),
    );
    match &stalled {
        Some((r, m)) => {
            set_condition(
                &mut conditions,
                condition(
                    condition_types::STALLED,
                    true,
                    r,
                    m.clone(),
                    generation,
                    o.now,
                ),
            );
        }
        None => {
            remove_condition(&mut conditions, condition_types::STALLED);
        }
    }
    let (asleep, hib_reason, hib_message) = hibernated_condition(status, phase, failure.is_some());
    set_condition(
        &mut conditions,
        condition(
            condition_types::HIBERNATED,
            asleep,
            hib_reason,
            hib_message,
            generation,
            o.now,
        ),
    );
    conditions.sort_by_key(|c| match c.type_.as_str() {
        condition_types::READY => 0,
        condition_types::STALLED => 1,
        condition_types::HIBERNATED => 2,
        condition_types::RESTORED => 3,
        _ => 4,
    });
    status.conditions = conditions;
    if let Some((_, m)) = &stalled
        && !prev
            .conditions
            .iter()
            .any(|c| c.type_ == condition_types::STALLED && c.status == "True")
    {
        d.events.push(EventRequest {
            warning: true,
            reason: "Stalled",
            note: m.clone(),
        });
    }
}

/// Targets whose last operation was `op` (woke them up, or put them to sleep).
fn targets_on(status: &HibernationPlanStatus, op: Operation) -> Vec<&TargetStatus> {
    status
        .targets
        .iter()
        .filter(|t| status.side_of(t) == Some(op))
        .collect()
}

/// `prod-db (awake: needed by prod-cluster), prod-cluster (awake: ScheduleException x) awake;
/// the other 3 asleep`.
fn partly_awake_message(status: &HibernationPlanStatus) -> String {
    let awake: Vec<String> = targets_on(status, Operation::WakeUp)
        .iter()
        .map(|t| match &t.schedule_override {
            Some(why) => format!("{} ({why})", t.name),
            None => t.name.clone(),
        })
        .collect();
    let asleep = targets_on(status, Operation::Hibernate).len();
    format!(
        "{} awake; {} asleep",
        awake.join(", "),
        if asleep == 1 {
            "1 other target".to_string()
        } else {
            format!("the other {asleep} targets")
        }
    )
}

fn hibernated_condition(
    status: &HibernationPlanStatus,
    phase: Phase,
    failed: bool,
) -> (bool, &'static str, String) {
    let asleep =
        status.current_cycle.as_ref().is_some_and(|c| {
            c.operation == Operation::Hibernate && c.finished_at.is_some() && !failed
        }) && targets_on(status, Operation::WakeUp).is_empty();
    let last_error = || status.last_error.clone().unwrap_or_default();
    let (reason, message) = match (asleep, phase) {
        (true, _) => ("Hibernated", "every target is asleep".to_string()),
        (false, Phase::Hibernating) => ("Hibernating", "putting the targets to sleep".to_string()),
        (false, Phase::WakingUp) => ("WakingUp", "waking the targets up".to_string()),
        (false, Phase::Error) => match status.current_cycle.as_ref().map(|c| c.operation) {
            Some(Operation::Hibernate) => ("HibernationFailed", last_error()),
            _ => ("WakeUpFailed", last_error()),
        },
        (false, Phase::Hibernated) => ("PartiallyHibernated", last_error()),
        (false, Phase::PartlyAwake) => ("PartlyAwake", partly_awake_message(status)),
        (false, _) => ("Awake", "the targets are awake".to_string()),
    };
    (asleep, reason, message)
}

/// Events for targets whose state changed.
fn target_events(
    status: &HibernationPlanStatus,
    prev: &HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
) {
    let same_op = prev.current_cycle.as_ref().map(|c| (&c.id, c.operation))
        == status.current_cycle.as_ref().map(|c| (&c.id, c.operation));
    let op_name = status
        .current_cycle
        .as_ref()
        .map(|c| c.operation)
        .unwrap_or(Operation::Hibernate);
    for t in status.targets.iter().filter(|t| in_operation(t)) {
        let before = prev
            .targets
            .iter()
            .find(|p| p.name == t.name)
            .filter(|_| same_op);
        if before.is_some_and(|b| b.state == t.state && b.attempts == t.attempts) {
            continue;
        }
        let lost = o
            .jobs
            .iter()
            .any(|j| Some(&j.name) == t.job.as_ref() && j.outcome == JobOutcome::Lost);
        let (warning, reason, note) = match t.state {
            // A target that finished well gets no Event of its own: the operation's end
            // (`Hibernated`, `WokeUp`) speaks for all of them, one Event per plan instead of
            // one per target (each is an API write; at a shared boundary of a large fleet they
            // were the largest share). Its message stays in the status.
            TargetState::Failed => (
                true,
                if lost {
                    "RunnerJobLost"
                } else {
                    "TargetFailed"
                },
                format!(
                    "{op_name} {} (attempt {}): {}",
                    t.name,
                    t.attempts,
                    t.message.clone().unwrap_or_default()
                ),
            ),
            TargetState::Aborted => (
                true,
                "TargetAborted",
                format!(
                    "{op_name} {}: {}",
                    t.name,
                    t.message.clone().unwrap_or_default()
                ),
            ),
            _ => continue,
        };
        d.events.push(EventRequest {
            warning,
            reason,
            note,
        });
    }
}

/// Moves an operation on in its own direction: retries, aborts and new starts. Returns why
/// the plan is stalled, if it is.
fn advance(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    cycle: &CycleStatus,
    targets: &mut [TargetStatus],
    retry_now: bool,
    o: &Observed<'_>,
) -> Option<(&'static str, String)> {
    let plan = o.plan;
    let names: Vec<&str> = plan.spec.targets.iter().map(|t| t.name.as_str()).collect();
    let graph = o.graph.for_operation(cycle.operation);
    let running = targets.iter().any(|t| t.state == TargetState::Running);
    let failed: Vec<usize> = (0..targets.len())
        .filter(|&i| in_operation(&targets[i]) && targets[i].state == TargetState::Failed)
        .collect();
    let mut stalled = None;
    // A wake-up retried on request also runs the targets that completed with resources left
    // asleep (not found, say, before the connector was fixed).
    let unrestored: Vec<usize> = if cycle.operation == Operation::WakeUp {
        let asleep = restored::asleep_in_spec(o, &names);
        (0..targets.len())
            .filter(|&i| {
                in_operation(&targets[i])
                    && targets[i].state.is_success()
                    && asleep.contains_key(targets[i].name.as_str())
            })
            .collect()
    } else {
        vec![]
    };
    if retry_now && !(failed.is_empty() && (unrestored.is_empty() || running)) {
        retry_on_request(status, d, targets, &failed, &unrestored);
    } else if !failed.is_empty() && plan.failure_mode() == FailureMode::Strict && !running {
        stalled = retry_automatically(status, d, targets, &failed, o);
    }
    if o.reference_problem.is_some()
        || (cycle.operation == Operation::Hibernate && o.refuse_hibernation.is_some())
    {
        return stalled;
    }
    let step = graph.step(&step_states(targets), plan.failure_mode());
    for &i in &step.abort {
        let deps: Vec<&str> = graph
            .dependencies(i)
            .into_iter()
            .filter(|&j| matches!(targets[j].state, TargetState::Failed | TargetState::Aborted))
            .map(|j| names[j])
            .collect();
        targets[i].state = TargetState::Aborted;
        targets[i].message = Some(format!("not run: {} did not complete", deps.join(", ")));
        targets[i].finished_at = Some(t(o.now));
    }
    let plan_name = plan.metadata.name.as_deref().unwrap_or_default();
    let start = not_checked_now(&step.start, targets, o);
    for &i in limited(&start, begun(targets), d, o) {
        let attempt = targets[i].attempts.max(1);
        d.create.push(JobRequest {
            target: i,
            operation: cycle.operation,
            cycle: cycle.id.clone(),
            attempt,
            check: None,
        });
        let tgt = &mut targets[i];
        tgt.state = TargetState::Running;
        tgt.attempts = attempt;
        tgt.job = Some(crate::jobs::job_name(
            plan_name,
            names[i],
            cycle.operation,
            &cycle.id,
            attempt,
        ));
        tgt.started_at = Some(t(o.now));
        tgt.finished_at = None;
        tgt.message = None;
        tgt.progress = None;
    }
    stalled
}

/// The targets of `start` that start now: all of them, or as many as the start limit allows
/// for an operation that has `begun` or not (counting the Jobs this decision already
/// requested), noting that more are waiting.
fn limited<'s>(start: &'s [usize], begun: bool, d: &mut Decision, o: &Observed<'_>) -> &'s [usize] {
    let Some(limit) = o.start_limit else {
        return start;
    };
    let allowed = if begun { limit.more } else { limit.first };
    let room = allowed.saturating_sub(d.create.len());
    let now = &start[..start.len().min(room)];
    d.more_to_start |= now.len() < start.len();
    d.first_start |= !begun && !now.is_empty();
    now
}

/// The targets of `start` whose in-sleep check Job has ended (or never ran); each of the
/// others waits, saying so in its message. A check is told to stop once its hibernation is no
/// longer in force (at its next heartbeat), and the operation starts only after its Job ended:
/// a `Reapply` check's last stop then cannot land after the wake-up's start.
fn not_checked_now(start: &[usize], targets: &mut [TargetStatus], o: &Observed<'_>) -> Vec<usize> {
    start
        .iter()
        .copied()
        .filter(|&i| {
            let tgt = &mut targets[i];
            let check = o
                .checks
                .iter()
                .find(|j| j.target == tgt.name && j.outcome == JobOutcome::Running);
            if let Some(check) = check {
                tgt.message = Some(format!(
                    "waiting for in-sleep check Job {} to end",
                    check.name
                ));
            }
            check.is_none()
        })
        .collect()
}

/// True when a target of the operation ran or runs.
fn begun(targets: &[TargetStatus]) -> bool {
    targets
        .iter()
        .any(|t| in_operation(t) && t.state != TargetState::Pending)
}

/// The states the graph steps on: a target outside the operation counts as done (Skipped), so
/// it neither waits nor blocks anything.
fn step_states(targets: &[TargetStatus]) -> Vec<TargetState> {
    targets
        .iter()
        .map(|t| {
            if in_operation(t) {
                t.state
            } else {
                TargetState::Skipped
            }
        })
        .collect()
}

/// A target to run again gets its next attempt number now, so that the failed Job of the
/// previous attempt no longer speaks for it.
fn repend(targets: &mut [TargetStatus], i: usize) {
    targets[i].state = TargetState::Pending;
    targets[i].finished_at = None;
    targets[i].attempts += 1;
}

/// The retry annotation changed: failed and aborted targets, and those of a wake-up that left
/// resources asleep, run again at once.
fn retry_on_request(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    targets: &mut [TargetStatus],
    failed: &[usize],
    unrestored: &[usize],
) {
    let aborted: Vec<usize> = (0..targets.len())
        .filter(|&i| in_operation(&targets[i]) && targets[i].state == TargetState::Aborted)
        .collect();
    for &i in failed.iter().chain(&aborted).chain(unrestored) {
        repend(targets, i);
    }
    if let Some(c) = status.current_cycle.as_mut() {
        c.finished_at = None;
    }
    status.retry = Some(RetryStatus {
        count: 0,
        next_at: None,
    });
    let retried: Vec<usize> = failed.iter().chain(unrestored).copied().collect();
    d.events.push(EventRequest {
        warning: false,
        reason: "RetryRequested",
        note: format!("retrying {} on request", join_names(targets, &retried)),
    });
}

/// Strict mode, nothing running: failed targets run again after the backoff, until the retries
/// are spent; then the plan is stalled (returned).
fn retry_automatically(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    targets: &mut [TargetStatus],
    failed: &[usize],
    o: &Observed<'_>,
) -> Option<(&'static str, String)> {
    let plan = o.plan;
    let retry = status.retry.clone().unwrap_or_default();
    if retry.count >= plan.retries() {
        status.retry = Some(RetryStatus {
            count: retry.count,
            next_at: None,
        });
        return Some((
            "RetriesExhausted",
            format!(
                "{} failed after {} retries; fix the cause, then set annotation {} to a new value to retry",
                join_names(targets, failed),
                retry.count,
                hibernator_api::plan::RETRY_ANNOTATION
            ),
        ));
    }
    let last_failure = failed
        .iter()
        .filter_map(|&i| targets[i].finished_at.as_ref().map(|t| t.0))
        .max()
        .unwrap_or(o.now);
    let next_at = last_failure + backoff(retry.count);
    if o.now >= next_at {
        for &i in failed {
            repend(targets, i);
        }
        status.retry = Some(RetryStatus {
            count: retry.count + 1,
            next_at: None,
        });
        d.events.push(EventRequest {
            warning: false,
            reason: "Retrying",
            note: format!(
                "retry {} of {} for {}",
                retry.count + 1,
                plan.retries(),
                join_names(targets, failed)
            ),
        });
    } else {
        if retry.next_at.as_ref().map(|t| t.0) != Some(next_at) {
            d.events.push(EventRequest {
                warning: true,
                reason: "RetryScheduled",
                note: format!(
                    "{} failed; retry {} of {} at {next_at}",
                    join_names(targets, failed),
                    retry.count + 1,
                    plan.retries()
                ),
            });
        }
        status.retry = Some(RetryStatus {
            count: retry.count,
            next_at: Some(t(next_at)),
        });
        d.requeue_at = earliest(d.requeue_at, Some(next_at));
    }
    None
}

/// Target states of an operation: Jobs first (the source of truth), then the status record.
///
/// Times are the controller's (schedule) clock: a target's `finishedAt` is when the controller
/// first saw its Job end.
fn observe_targets(
    names: &[&str],
    cycle: &CycleStatus,
    prev: &[TargetStatus],
    jobs: &[JobObservation],
    now: Timestamp,
) -> Vec<TargetStatus> {
    names
        .iter()
        .map(|&name| {
            let recorded = prev.iter().find(|t| t.name == name).cloned();
            // Outside the operation: the state of the target's own last operation stands.
            if let Some(r) = recorded.as_ref().filter(|r| !in_operation(r)) {
                return r.clone();
            }
            if !cycle.runs(name) {
                return not_in_operation(name);
            }
            let latest = jobs
                .iter()
                .filter(|j| {
                    j.target == name && j.cycle == cycle.id && j.operation == cycle.operation
                })
                .max_by_key(|j| j.attempt);
            match (latest, recorded) {
                (Some(j), recorded)
                    if recorded.as_ref().is_none_or(|r| j.attempt >= r.attempts) =>
                {
                    let mut t = recorded.unwrap_or_else(|| pending(name));
                    let was_terminal = t.state.is_terminal() && t.attempts == j.attempt;
                    t.attempts = j.attempt;
                    t.job = Some(j.name.clone());
                    t.state = match j.outcome {
                        JobOutcome::Running => TargetState::Running,
                        JobOutcome::Succeeded => TargetState::Completed,
                        JobOutcome::Failed | JobOutcome::Lost => TargetState::Failed,
                    };
                    if let Some(m) = &j.message {
                        t.message = Some(m.clone());
                    }
                    if j.progress.is_some() {
                        t.progress = j.progress.clone();
                    }
                    if t.started_at.is_none() {
                        t.started_at = Some(Time(now));
                    }
                    t.finished_at = match t.state {
                        TargetState::Running => None,
                        _ if was_terminal => t.finished_at.or(Some(Time(now))),
                        _ => Some(Time(now)),
                    };
                    t
                }
                // A newer attempt is pending or its Job is not visible yet: the record stands.
                (_, Some(recorded)) => recorded,
                (_, None) => pending(name),
            }
        })
        .collect()
}

/// A target added to the plan during a partial operation: awake, untouched.
fn not_in_operation(name: &str) -> TargetStatus {
    TargetStatus {
        state: TargetState::Skipped,
        message: Some("not part of the current operation".into()),
        operation: Some(Operation::WakeUp),
        ..pending(name)
    }
}

fn pending(name: &str) -> TargetStatus {
    TargetStatus {
        name: name.to_string(),
        state: TargetState::Pending,
        attempts: 0,
        job: None,
        progress: None,
        message: None,
        started_at: None,
        finished_at: None,
        resources_recorded: None,
        resources_restored: None,
        operation: None,
        cycle: None,
        schedule_override: None,
    }
}

/// Starts `op` for the targets `scope` (indices into `spec.targets`); the others keep the state
/// of their last operation. Returns the names of the targets it runs.
fn start_operation(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    op: Operation,
    id: String,
    scope: &[usize],
    o: &Observed<'_>,
) -> Vec<String> {
    let names: Vec<&str> = o
        .plan
        .spec
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let scope_names: Vec<String> = scope.iter().map(|&i| names[i].to_string()).collect();
    let before = status.current_cycle.clone();
    status.current_cycle = Some(CycleStatus {
        id: id.clone(),
        operation: op,
        started_at: t(o.now),
        finished_at: None,
        targets: if scope.len() == names.len() {
            vec![]
        } else {
            scope_names.clone()
        },
    });
    status.retry = None;
    status.last_error = None;
    let asleep = restored::asleep_in_spec(o, &names);
    let old = std::mem::take(&mut status.targets);
    let entries: Vec<TargetStatus> = names
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let was = old.iter().find(|t| t.name == n);
            if scope.contains(&i) {
                let attempts = attempts_before(was, op, &id, before.as_ref());
                entry_in_operation(status, n, op, attempts, asleep.contains_key(n), o)
            } else {
                carried(was, n, before.as_ref())
            }
        })
        .collect();
    // Jobs of this operation may exist already (the status that recorded its start was lost):
    // adopt them rather than start twice.
    let cycle = status.current_cycle.clone().expect("set above");
    status.targets = observe_targets(&names, &cycle, &entries, o.jobs, o.now);
    start_first_jobs(status, d, &names, op, &id, o);
    d.events.push(start_event(op, &id, scope, &names, o));
    scope_names
}

/// The attempts a target already made in operation `op` of cycle `id` (`None` when its last
/// entry belongs to another operation or cycle): a new start is the next attempt, so that the
/// Job of the last one does not speak for it.
fn attempts_before(
    was: Option<&TargetStatus>,
    op: Operation,
    id: &str,
    before: Option<&CycleStatus>,
) -> Option<i32> {
    was.filter(|w| {
        w.operation.or(before.map(|c| c.operation)) == Some(op)
            && w.cycle.as_deref().or(before.map(|c| c.id.as_str())) == Some(id)
    })
    .map(|w| w.attempts)
}

/// The entry of a target that takes part in a new operation: pending after `attempts`
/// earlier attempts, or skipped for a wake-up that has nothing of it recorded (`asleep`:
/// something of it is asleep).
fn entry_in_operation(
    status: &HibernationPlanStatus,
    name: &str,
    op: Operation,
    attempts: Option<i32>,
    asleep: bool,
    o: &Observed<'_>,
) -> TargetStatus {
    let mut s = pending(name);
    if let Some(a) = attempts {
        s.attempts = a + 1;
    }
    if op == Operation::WakeUp {
        let (recorded, missing) = restored::counts_at_wake_up(status, o, name);
        s.resources_recorded = Some(recorded);
        s.resources_restored = Some(0);
        if !asleep {
            s.state = TargetState::Skipped;
            s.message = Some(if missing > 0 {
                format!(
                    "restore data missing: {missing} resource(s) put to sleep have no record in ConfigMap {}; left as they are",
                    status.restore_ref.clone().unwrap_or_default()
                )
            } else {
                "nothing recorded to wake up".into()
            });
            s.finished_at = Some(t(o.now));
        }
    }
    s
}

/// Requests the Jobs of the targets that can start at once (none while a reference is
/// missing, or a hibernation is refused).
fn start_first_jobs(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    names: &[&str],
    op: Operation,
    id: &str,
    o: &Observed<'_>,
) {
    if o.reference_problem.is_some()
        || (op == Operation::Hibernate && o.refuse_hibernation.is_some())
    {
        return;
    }
    let step = o
        .graph
        .for_operation(op)
        .step(&step_states(&status.targets), o.plan.failure_mode());
    let plan_name = o.plan.metadata.name.as_deref().unwrap_or_default();
    let begun = begun(&status.targets);
    let start = not_checked_now(&step.start, &mut status.targets, o);
    for &i in limited(&start, begun, d, o) {
        let tgt = &mut status.targets[i];
        let attempt = tgt.attempts.max(1);
        d.create.push(JobRequest {
            target: i,
            operation: op,
            cycle: id.to_string(),
            attempt,
            check: None,
        });
        tgt.state = TargetState::Running;
        tgt.attempts = attempt;
        tgt.job = Some(crate::jobs::job_name(plan_name, names[i], op, id, attempt));
        tgt.started_at = Some(t(o.now));
        tgt.message = None;
    }
}

/// The Event that says an operation started: of how many targets, or of which ones and why
/// when it is not the whole plan.
fn start_event(
    op: Operation,
    id: &str,
    scope: &[usize],
    names: &[&str],
    o: &Observed<'_>,
) -> EventRequest {
    let (reason, verb) = match op {
        Operation::Hibernate => ("HibernationStarted", "hibernation"),
        Operation::WakeUp => ("WakeUpStarted", "wake-up"),
    };
    let why = if o.plan.metadata.deletion_timestamp.is_some() {
        "the plan is being deleted".to_string()
    } else {
        o.schedule.reason.clone()
    };
    let note = if scope.len() == names.len() {
        format!(
            "cycle {id}: {verb} of {} target(s) started ({why})",
            names.len()
        )
    } else {
        let wishes: Vec<String> = scope
            .iter()
            .map(
                |&i| match o.wishes.targets.get(i).and_then(|w| w.departs.as_ref()) {
                    Some(w) => format!("{} ({w})", names[i]),
                    None => names[i].to_string(),
                },
            )
            .collect();
        format!("cycle {id}: {verb} of {} started", wishes.join(", "))
    };
    EventRequest {
        warning: false,
        reason,
        note,
    }
}

/// A target outside a new operation keeps its state, now marked with the operation and cycle
/// it belongs to.
fn carried(was: Option<&TargetStatus>, name: &str, before: Option<&CycleStatus>) -> TargetStatus {
    let Some(was) = was else {
        return not_in_operation(name);
    };
    let mut t = was.clone();
    if t.operation.is_none() {
        t.operation = before.map(|c| c.operation);
        t.cycle = before.map(|c| c.id.clone());
    }
    t
}

fn finish_operation(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    cycle: &CycleStatus,
    targets: &[TargetStatus],
    now: Timestamp,
    superseded: bool,
) {
    let failed: Vec<String> = targets
        .iter()
        .filter(|t| in_operation(t) && !t.state.is_success())
        .map(|t| t.name.clone())
        .collect();
    let succeeded = failed.is_empty();
    let record = OperationRecord {
        started_at: cycle.started_at.clone(),
        finished_at: Some(t(now)),
        succeeded,
        retries: status.retry.as_ref().map(|r| r.count).unwrap_or(0),
        failed_targets: failed.clone(),
    };
    let idx = status.history.iter().position(|h| h.id == cycle.id);
    let entry = match idx {
        Some(i) => &mut status.history[i],
        None => {
            status.history.insert(
                0,
                CycleRecord {
                    id: cycle.id.clone(),
                    hibernate: None,
                    wake_up: None,
                },
            );
            &mut status.history[0]
        }
    };
    match cycle.operation {
        Operation::Hibernate => entry.hibernate = Some(record),
        Operation::WakeUp => entry.wake_up = Some(record),
    }
    status.history.truncate(HISTORY_LENGTH);
    if let Some(c) = status.current_cycle.as_mut() {
        c.finished_at = Some(t(now));
    }
    let (reason, what) = match cycle.operation {
        Operation::Hibernate => ("Hibernated", "hibernation"),
        Operation::WakeUp => ("WokeUp", "wake-up"),
    };
    let elapsed = now.duration_since(cycle.started_at.0);
    if succeeded {
        d.events.push(EventRequest {
            warning: false,
            reason,
            note: format!(
                "cycle {}: {what} of {} target(s) finished in {}",
                cycle.id,
                targets.iter().filter(|t| in_operation(t)).count(),
                format_duration(elapsed)
            ),
        });
    } else {
        d.events.push(EventRequest {
            warning: true,
            reason: if superseded {
                "OperationSuperseded"
            } else {
                "OperationIncomplete"
            },
            note: format!(
                "cycle {}: {what} ended{} with {} not done: {}",
                cycle.id,
                if superseded {
                    " early (the schedule changed direction)"
                } else {
                    ""
                },
                failed.len(),
                failed.join(", ")
            ),
        });
    }
}

fn schedule_status(e: &Evaluation) -> ScheduleStatus {
    ScheduleStatus {
        in_off_hours: e.in_off_hours,
        reason: Some(e.reason.clone()),
        next_hibernate_at: e.next_hibernate_at.map(Time),
        next_wake_up_at: e.next_wake_up_at.map(Time),
        next_transition: e.next_transition().map(|t| {
            let verb = match t.operation {
                Operation::Hibernate => "Hibernate",
                Operation::WakeUp => "WakeUp",
            };
            format!("{verb} at {}", t.at)
        }),
        active_exceptions: e.active_exceptions.clone(),
    }
}

fn phase_message(phase: Phase, status: &HibernationPlanStatus) -> String {
    let next = status
        .schedule
        .as_ref()
        .and_then(|s| s.next_transition.clone())
        .map(|n| format!("; next: {n}"))
        .unwrap_or_default();
    match phase {
        Phase::Active => format!("awake, following the schedule{next}"),
        Phase::Hibernating => "putting the targets to sleep".into(),
        Phase::Hibernated => format!("every target is asleep{next}"),
        Phase::WakingUp => "waking the targets up".into(),
        Phase::PartlyAwake => format!("{}{next}", partly_awake_message(status)),
        Phase::Suspended => "suspended: the targets are kept awake".into(),
        Phase::Error => status.last_error.clone().unwrap_or_default(),
    }
}

fn join_names(targets: &[TargetStatus], idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| targets[i].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// `1m30s`-style rendering of a duration.
pub fn format_duration(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

mod enforce;
mod restored;
#[cfg(test)]
mod tests;
