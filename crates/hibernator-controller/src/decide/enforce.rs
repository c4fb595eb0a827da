//! In-sleep enforcement (`spec.behavior.enforce`): while the plan is hibernated, each target
//! that should sleep is checked every `interval`, and right after each predicted RDS
//! auto-start, by a runner Job (`enforce`) that compares its recorded resources with their
//! hibernated state. `Report` sets `Drifted=True` naming what was found awake; `Reapply` puts
//! it back to sleep and counts it in `status.enforcement.reapplied`.
//!
//! Rules:
//! - Only targets of the hibernation in force are checked: their last operation was a
//!   successful hibernation, they should sleep now (a target woken by an exception is not
//!   drifted), they have live records and their type can be checked
//!   ([`hibernator_api::TargetType::checks_in_sleep`]).
//! - No check runs while an operation runs; a check's Jobs are named after the check's number
//!   (`<plan>-<target>-e-<cycle>-<n>`), so a controller that crashed after creating them finds
//!   them again. A wake-up is a newer execution than any check of its cycle: a check still
//!   running is told to stop.
//! - The results of check `n` are counted once (`countedCheck`), when all of its Jobs ended.
//! - `Drifted` is information, never a failure: it does not touch `Ready`. Under `Report` it
//!   stays until the wake-up or the next hibernation; under `Reapply` it is True only for
//!   resources that could not be put back to sleep.

use std::collections::BTreeMap;

use hibernator_api::common::{condition, condition_types, remove_condition, set_condition};
use hibernator_api::plan::{
    DriftedTarget, EnforceMode, EnforcementStatus, HibernationPlanStatus, Operation,
};
use hibernator_api::restore::key_prefix;
use jiff::{SignedDuration, Timestamp};

use super::{Decision, EventRequest, JobOutcome, JobRequest, Observed, earliest, t};

/// AWS starts a stopped DB instance or cluster by itself after this long.
pub const RDS_AUTO_START: SignedDuration = SignedDuration::from_hours(7 * 24);
/// How long after a predicted auto-start the check runs (the database is then starting or
/// up, so the check sees it).
pub const AUTO_START_GRACE: SignedDuration = SignedDuration::from_mins(15);
/// Most keys listed per drifted target.
const KEYS_LISTED: usize = 50;

/// Updates `status.enforcement` and the `Drifted` condition, and starts a check when one is
/// due. Runs after the operation's own decision (`status` is what will be written).
pub(super) fn step(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
    should_sleep: &[bool],
) {
    let (mode, interval) = o.plan.enforcement().unwrap_or((
        EnforceMode::default(),
        hibernator_api::plan::ENFORCE_INTERVAL_DEFAULT,
    ));
    let Some(cycle) = status.current_cycle.clone() else {
        status.enforcement = None;
        remove_condition(&mut status.conditions, condition_types::DRIFTED);
        return;
    };
    if mode == EnforceMode::Off {
        status.enforcement = None;
        remove_condition(&mut status.conditions, condition_types::DRIFTED);
        return;
    }
    if cycle.operation == Operation::WakeUp {
        // The wake-up ends the night's enforcement: what was found stays on record for the
        // cycle, the condition goes.
        if let Some(e) = status.enforcement.as_mut() {
            e.drifted.clear();
            e.next_check_at = None;
        }
        remove_condition(&mut status.conditions, condition_types::DRIFTED);
        return;
    }
    let mut e = match status.enforcement.take() {
        Some(e) if e.cycle_id == cycle.id => e,
        _ => EnforcementStatus {
            cycle_id: cycle.id.clone(),
            ..EnforcementStatus::default()
        },
    };
    e.mode = mode;
    let failed = count_finished_check(&mut e, d, o);
    let running = o
        .checks
        .iter()
        .any(|j| j.cycle == e.cycle_id && j.outcome == JobOutcome::Running);
    let eligible = eligible(status, o, should_sleep);
    e.next_check_at = None;
    // Nothing is checked while a connector is missing (the Job could not be made) or while
    // hibernating is refused (Reapply would do what the self-guard forbids).
    if let Some(done) = cycle.finished_at.as_ref().map(|f| f.0)
        && !eligible.is_empty()
        && !running
        && o.reference_problem.is_none()
        && o.refuse_hibernation.is_none()
    {
        let since = e.last_check_at.as_ref().map_or(done, |l| l.0);
        let due = next_check(since, interval, &auto_starts(o, &eligible));
        if due <= o.now {
            e.checks += 1;
            e.last_check_at = Some(t(o.now));
            for &i in &eligible {
                d.create.push(JobRequest {
                    target: i,
                    operation: Operation::Hibernate,
                    cycle: e.cycle_id.clone(),
                    attempt: e.checks,
                    check: Some(mode),
                });
            }
        } else {
            e.next_check_at = Some(t(due));
            d.requeue_at = earliest(d.requeue_at, Some(due));
        }
    }
    drifted_condition(status, &e, failed, o);
    status.enforcement = Some(e);
}

/// Counts the results of the last check once all of its Jobs ended: what was found awake,
/// what was put back to sleep, Events. Returns the failures of that check (`target: message`).
fn count_finished_check(
    e: &mut EnforcementStatus,
    d: &mut Decision,
    o: &Observed<'_>,
) -> Vec<String> {
    let n = e.checks;
    let jobs: Vec<_> = o
        .checks
        .iter()
        .filter(|j| j.cycle == e.cycle_id && j.attempt == n)
        .collect();
    let failed: Vec<String> = jobs
        .iter()
        .filter(|j| matches!(j.outcome, JobOutcome::Failed | JobOutcome::Lost))
        .map(|j| {
            format!(
                "{}: {}",
                j.target,
                j.message.as_deref().unwrap_or("the check failed")
            )
        })
        .collect();
    if n == 0
        || e.counted_check == Some(n)
        || jobs.is_empty()
        || jobs.iter().any(|j| j.outcome == JobOutcome::Running)
    {
        return if e.counted_check == Some(n) {
            failed
        } else {
            vec![]
        };
    }
    e.counted_check = Some(n);
    let mut drifted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut reapplied: Vec<String> = Vec::new();
    for j in &jobs {
        if !j.drifted.is_empty() {
            drifted
                .entry(j.target.clone())
                .or_default()
                .extend(j.drifted.iter().cloned());
        }
        reapplied.extend(j.reapplied.iter().map(|k| format!("{}: {k}", j.target)));
    }
    let found: Vec<String> = drifted
        .iter()
        .map(|(name, keys)| format!("{name}: {}", keys.join(", ")))
        .collect();
    // Under Report what was found awake stays on record until the wake-up; under Reapply
    // only what the last check could not put back to sleep counts.
    if e.mode == EnforceMode::Report {
        for earlier in e.drifted.drain(..) {
            drifted
                .entry(earlier.name)
                .or_default()
                .extend(earlier.keys);
        }
    }
    e.drifted = drifted
        .into_iter()
        .map(|(name, mut keys)| {
            keys.sort();
            keys.dedup();
            keys.truncate(KEYS_LISTED);
            DriftedTarget { name, keys }
        })
        .collect();
    e.reapplied += reapplied.len() as i32;
    if !found.is_empty() {
        d.events.push(EventRequest {
            warning: true,
            reason: "Drifted",
            note: format!(
                "in-sleep check {n} found awake (left as found, mode {}): {}",
                e.mode.as_str(),
                found.join("; ")
            ),
        });
    }
    if !reapplied.is_empty() {
        d.events.push(EventRequest {
            warning: true,
            reason: "DriftReapplied",
            note: format!(
                "in-sleep check {n} found awake and put back to sleep: {}",
                reapplied.join(", ")
            ),
        });
    }
    if !failed.is_empty() {
        d.events.push(EventRequest {
            warning: true,
            reason: "CheckFailed",
            note: format!("in-sleep check {n} failed: {}", failed.join("; ")),
        });
    }
    failed
}

/// Indices of the targets to check: asleep after a successful hibernation of this cycle,
/// wanted asleep, with live records, of a type that can be checked.
fn eligible(status: &HibernationPlanStatus, o: &Observed<'_>, should_sleep: &[bool]) -> Vec<usize> {
    let Some(cycle) = status.current_cycle.as_ref() else {
        return vec![];
    };
    o.plan
        .spec
        .targets
        .iter()
        .enumerate()
        .filter(|(i, spec)| {
            should_sleep.get(*i).copied().unwrap_or(false)
                && spec.type_.checks_in_sleep()
                && status.targets.iter().any(|t| {
                    t.name == spec.name
                        && t.state.is_success()
                        && t.operation.unwrap_or(cycle.operation) == Operation::Hibernate
                })
                && o.restore
                    .targets
                    .get(&spec.name)
                    .is_some_and(|v| !v.live.is_empty())
        })
        .map(|(i, _)| i)
        .collect()
}

/// When AWS is expected to start the eligible targets' stopped databases by itself: seven days
/// after each was recorded (just before it was stopped), plus a grace.
fn auto_starts(o: &Observed<'_>, eligible: &[usize]) -> Vec<Timestamp> {
    eligible
        .iter()
        .filter(|&&i| o.plan.spec.targets[i].type_ == hibernator_api::TargetType::Rds)
        .filter_map(|&i| o.restore.targets.get(&o.plan.spec.targets[i].name))
        .flat_map(|v| v.live.iter())
        .filter(|(key, _)| {
            [key_prefix::RDS_INSTANCE, key_prefix::RDS_CLUSTER]
                .iter()
                .any(|p| key.strip_prefix(p).is_some_and(|r| r.starts_with(':')))
        })
        .filter_map(|(_, r)| r.recorded_at)
        .map(|at| at + RDS_AUTO_START + AUTO_START_GRACE)
        .collect()
}

/// The next check after one made (or a hibernation finished) at `since`: `interval` later, or
/// at the first predicted auto-start after `since` when that comes sooner.
pub fn next_check(
    since: Timestamp,
    interval: SignedDuration,
    auto_starts: &[Timestamp],
) -> Timestamp {
    auto_starts
        .iter()
        .copied()
        .filter(|&a| a > since)
        .fold(since + interval, Timestamp::min)
}

fn listed(targets: &[DriftedTarget]) -> String {
    targets
        .iter()
        .map(|t| format!("{}: {}", t.name, t.keys.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `Drifted=True` while resources are known awake (or a `Reapply` check failed), `False` once
/// a check found everything asleep; absent before the first check.
fn drifted_condition(
    status: &mut HibernationPlanStatus,
    e: &EnforcementStatus,
    failed: Vec<String>,
    o: &Observed<'_>,
) {
    let Some(n) = e.counted_check else {
        remove_condition(&mut status.conditions, condition_types::DRIFTED);
        return;
    };
    let (drifted, reason, message) = if !e.drifted.is_empty() {
        (
            true,
            "ResourcesAwake",
            format!("in-sleep check {n} found awake: {}", listed(&e.drifted)),
        )
    } else if e.mode == EnforceMode::Reapply && !failed.is_empty() {
        (
            true,
            "ReapplyFailed",
            format!(
                "in-sleep check {n} could not check or put back to sleep: {}",
                failed.join("; ")
            ),
        )
    } else {
        (
            false,
            "Asleep",
            format!(
                "in-sleep check {n} found every checked resource asleep{}",
                if e.reapplied > 0 {
                    format!(" ({} put back to sleep this cycle)", e.reapplied)
                } else {
                    String::new()
                }
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        condition(
            condition_types::DRIFTED,
            drifted,
            reason,
            message,
            o.plan.metadata.generation,
            o.now,
        ),
    );
}
