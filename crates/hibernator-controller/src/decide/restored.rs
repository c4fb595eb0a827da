//! The morning guarantee: every resource put to sleep is back in its recorded state, or the
//! plan says which are not (`Restored=False`).
//!
//! The status keeps its own account of what is asleep (`status.asleep`: per target, the
//! resource keys recorded since the hibernation began), fed from the restore ConfigMap and from
//! the hibernation runners' completion reports. Comparing that account with the ConfigMap finds
//! what the ConfigMap lost (deleted, pruned, edited) and targets removed from the plan while
//! asleep, at once, not only at the wake-up. The wake-up runners' per-resource results (stored
//! on the records) say what could not be restored.
//!
//! Reasons, most serious first: `RestoreDataMissing`, `TargetRemovedWhileAsleep`,
//! `ResourceNotFound`, `RestoreIncomplete`. The condition stays False until a person
//! acknowledges it (annotation [`RESTORE_ACK_ANNOTATION`]) or a later wake-up restores
//! everything; the account starts afresh with each hibernation.

use std::collections::{BTreeMap, BTreeSet};

use hibernator_api::common::{condition, condition_types, find_condition, set_condition};
use hibernator_api::plan::{
    ASLEEP_KEYS_LISTED, AsleepTarget, HibernationPlanStatus, Operation, RESTORE_ACK_ANNOTATION,
    TargetState,
};
use hibernator_api::restore::WakeUpOutcome;

use super::{Decision, EventRequest, Observed, in_operation};

/// Reasons of `Restored=False`, most serious first.
pub const RESTORE_DATA_MISSING: &str = "RestoreDataMissing";
/// A target was removed from the plan while its resources slept.
pub const TARGET_REMOVED: &str = "TargetRemovedWhileAsleep";
/// A wake-up did not find a recorded resource.
pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFound";
/// A wake-up could not restore a recorded resource.
pub const RESTORE_INCOMPLETE: &str = "RestoreIncomplete";

/// Longest message of the condition (the full list is in the Event and the CLI).
const MESSAGE_LIMIT: usize = 1500;

/// Targets of the plan with resources still asleep, with the cycle of their oldest record.
pub fn asleep_in_spec(o: &Observed<'_>, names: &[&str]) -> BTreeMap<String, String> {
    o.restore
        .asleep()
        .into_iter()
        .filter(|(t, _)| names.contains(&t.as_str()))
        .collect()
}

/// Keys of a target's records still in the ConfigMap (asleep, restored or acknowledged).
fn present(o: &Observed<'_>, target: &str) -> BTreeSet<String> {
    o.restore
        .targets
        .get(target)
        .map(|t| {
            t.live
                .keys()
                .chain(&t.restored)
                .chain(&t.acknowledged)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Resources of the account missing from the ConfigMap: listed keys, and how many in all.
fn missing(o: &Observed<'_>, entry: &AsleepTarget) -> (Vec<String>, i32) {
    let present = present(o, &entry.name);
    let keys: Vec<String> = entry
        .keys
        .iter()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect();
    // Restored and acknowledged records have left the account already: what it counts beyond
    // the records still asleep is lost, listed or not.
    let live = o
        .restore
        .targets
        .get(&entry.name)
        .map(|t| t.live.len() as i32)
        .unwrap_or(0);
    let count = (keys.len() as i32).max(entry.resources - live);
    (keys, count)
}

/// At the start of a target's wake-up: how many of its resources are asleep, and how many of
/// them have lost their records.
pub fn counts_at_wake_up(
    status: &HibernationPlanStatus,
    o: &Observed<'_>,
    target: &str,
) -> (i32, i32) {
    let live = o
        .restore
        .targets
        .get(target)
        .map(|t| t.live.len() as i32)
        .unwrap_or(0);
    match status.asleep.iter().find(|a| a.name == target) {
        Some(entry) => {
            let (_, missing) = missing(o, entry);
            (live + missing, missing)
        }
        None => (live, 0),
    }
}

/// Keeps the account of what is asleep: keys from the ConfigMap and from the hibernation
/// runners' reports are added; restored ones leave it (acknowledged ones left it when they
/// were acknowledged). A new hibernation starts it afresh from the records still asleep, but
/// keeps what cannot be woken up until a person acknowledges it: targets removed from the plan
/// and resources whose records are gone.
pub fn update_ledger(
    status: &mut HibernationPlanStatus,
    o: &Observed<'_>,
    names: &[&str],
    new_hibernation: bool,
) {
    let prev: BTreeMap<String, AsleepTarget> = status
        .asleep
        .drain(..)
        .map(|a| (a.name.clone(), a))
        .collect();
    let mut ledger = if new_hibernation {
        prev.into_iter()
            .filter_map(|(name, mut entry)| {
                if !names.contains(&name.as_str()) {
                    return Some((name, entry));
                }
                let (keys, count) = missing(o, &entry);
                (count > 0).then(|| {
                    entry.keys = keys;
                    entry.resources = count;
                    (name, entry)
                })
            })
            .collect()
    } else {
        prev
    };
    for (target, view) in &o.restore.targets {
        if !names.contains(&target.as_str()) && !ledger.contains_key(target) {
            continue;
        }
        let entry = ledger
            .entry(target.clone())
            .or_insert_with(|| AsleepTarget {
                name: target.clone(),
                ..Default::default()
            });
        for key in &view.restored {
            forget(entry, key);
        }
        for key in view.live.keys() {
            remember(entry, key);
        }
        entry.resources = entry.resources.max(view.live.len() as i32);
        entry.cycle_id = view
            .live
            .values()
            .map(|r| r.cycle.clone())
            .min()
            .or(entry.cycle_id.take());
    }
    // What wake-up runners of this cycle reported restored is no longer asleep, even if the
    // ConfigMap lost the records before they were retired.
    if let Some(cycle) = &status.current_cycle
        && cycle.operation == Operation::WakeUp
    {
        for job in o.jobs {
            if job.cycle == cycle.id
                && job.operation == Operation::WakeUp
                && let Some(entry) = ledger.get_mut(&job.target)
            {
                for key in &job.restored {
                    if entry.keys.iter().any(|k| k == key) {
                        forget(entry, key);
                    }
                }
            }
        }
    }
    // What hibernation runners of this cycle reported recorded, in case the ConfigMap lost it
    // before this controller saw it.
    if let Some(cycle) = &status.current_cycle
        && cycle.operation == Operation::Hibernate
    {
        for job in o.jobs {
            if job.cycle != cycle.id || job.operation != Operation::Hibernate {
                continue;
            }
            let view = o.restore.targets.get(&job.target);
            let entry = ledger
                .entry(job.target.clone())
                .or_insert_with(|| AsleepTarget {
                    name: job.target.clone(),
                    cycle_id: Some(cycle.id.clone()),
                    ..Default::default()
                });
            for key in &job.recorded {
                let gone =
                    view.is_some_and(|v| v.restored.contains(key) || v.acknowledged.contains(key));
                if !gone {
                    remember(entry, key);
                }
            }
        }
    }
    status.asleep = ledger.into_values().filter(|a| a.resources > 0).collect();
}

fn remember(entry: &mut AsleepTarget, key: &str) {
    if entry.keys.iter().any(|k| k == key) {
        return;
    }
    if entry.keys.len() < ASLEEP_KEYS_LISTED {
        entry.keys.push(key.to_string());
        entry.keys.sort();
        entry.resources = entry.resources.max(entry.keys.len() as i32);
    }
}

fn forget(entry: &mut AsleepTarget, key: &str) {
    if let Some(i) = entry.keys.iter().position(|k| k == key) {
        entry.keys.remove(i);
        entry.resources = (entry.resources - 1).max(0);
    } else if entry.resources > entry.keys.len() as i32 {
        // Beyond the listed keys only the count is kept.
        entry.resources -= 1;
    }
}

/// What the condition reports.
#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    removed: Vec<String>,
    not_found: Vec<String>,
    incomplete: Vec<String>,
    /// Targets whose wake-up results (or lack of them) are reported.
    wake_targets: BTreeSet<String>,
    /// Removed targets.
    orphans: BTreeSet<String>,
    /// The ConfigMap itself must be fixed (unreadable or not Hibernator's): acknowledging does
    /// not make that go away.
    unresolvable: bool,
}

impl Problems {
    fn first(&self) -> Option<&'static str> {
        [
            (RESTORE_DATA_MISSING, &self.missing),
            (TARGET_REMOVED, &self.removed),
            (RESOURCE_NOT_FOUND, &self.not_found),
            (RESTORE_INCOMPLETE, &self.incomplete),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_empty())
        .map(|(r, _)| r)
    }

    fn message(&self) -> String {
        let parts: Vec<String> = [
            ("restore data missing", &self.missing),
            (
                "target removed from the plan while asleep (records kept; if it was renamed, the new name recorded its resources asleep: restore them from these records)",
                &self.removed,
            ),
            ("not found by the wake-up (records kept)", &self.not_found),
            ("not restored (records kept)", &self.incomplete),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(what, v)| format!("{what}: {}", v.join("; ")))
        .collect();
        let text = parts.join(". ");
        if text.chars().count() > MESSAGE_LIMIT {
            format!(
                "{}... (kubectl hibernator restore lists all)",
                text.chars().take(MESSAGE_LIMIT).collect::<String>()
            )
        } else {
            text
        }
    }
}

fn keys_text(keys: &[String], total: i32) -> String {
    let more = total - keys.len() as i32;
    if more > 0 {
        format!("{} and {more} more", keys.join(", "))
    } else {
        keys.join(", ")
    }
}

/// Finds what is not (or cannot be) restored.
fn find_problems(status: &HibernationPlanStatus, o: &Observed<'_>, names: &[&str]) -> Problems {
    let mut p = Problems::default();
    config_map_problems(&mut p, status, o, names);
    account_problems(&mut p, status, o, names);
    if wake_up_settled(status) {
        wake_up_problems(&mut p, status, o);
    }
    p
}

/// What the ConfigMap itself shows, whatever the account says: records of targets no longer in
/// the plan, unreadable targets, a ConfigMap that is not Hibernator's.
fn config_map_problems(
    p: &mut Problems,
    status: &HibernationPlanStatus,
    o: &Observed<'_>,
    names: &[&str],
) {
    let config_map = status.restore_ref.clone().unwrap_or_default();
    let accounted: BTreeSet<&str> = status.asleep.iter().map(|a| a.name.as_str()).collect();
    for (target, view) in &o.restore.targets {
        if !names.contains(&target.as_str())
            && !view.live.is_empty()
            && !accounted.contains(target.as_str())
        {
            let keys: Vec<String> = view.live.keys().cloned().collect();
            p.removed.push(format!(
                "{target} ({})",
                keys_text(&keys, keys.len() as i32)
            ));
            p.orphans.insert(target.clone());
        }
    }
    for target in &o.restore.corrupt {
        if !accounted.contains(target.as_str()) {
            p.missing.push(format!(
                "{target}: its records in ConfigMap {config_map} are unreadable (fix or remove that key)"
            ));
            p.unresolvable = true;
        }
    }
    if let Some(problem) = &o.restore_problem {
        p.missing.push(problem.clone());
        p.unresolvable = true;
    }
}

/// What the account of what is asleep holds that the ConfigMap lost, and targets that left the
/// plan.
fn account_problems(
    p: &mut Problems,
    status: &HibernationPlanStatus,
    o: &Observed<'_>,
    names: &[&str],
) {
    let config_map = status.restore_ref.clone().unwrap_or_default();
    for entry in &status.asleep {
        if !names.contains(&entry.name.as_str()) {
            p.removed.push(format!(
                "{} ({})",
                entry.name,
                keys_text(&entry.keys, entry.resources)
            ));
            p.orphans.insert(entry.name.clone());
            continue;
        }
        let (keys, count) = missing(o, entry);
        if count > 0 {
            let why = if o.restore.corrupt.contains(&entry.name) {
                p.unresolvable = true;
                "its records are unreadable".to_string()
            } else if o.restore_problem.is_some() {
                "the ConfigMap is not Hibernator's".to_string()
            } else {
                format!("no record left in ConfigMap {config_map}")
            };
            p.missing.push(format!(
                "{}: {} ({why}; they stay as they are)",
                entry.name,
                keys_text(&keys, count)
            ));
        }
    }
}

/// A wake-up has done what it will do: nothing runs, no retry is due, and either every target
/// is done or a failure halted the rest (Strict).
fn wake_up_settled(status: &HibernationPlanStatus) -> bool {
    let ours = || status.targets.iter().filter(|t| in_operation(t));
    let failed = ours().any(|t| matches!(t.state, TargetState::Failed | TargetState::Aborted));
    status
        .current_cycle
        .as_ref()
        .is_some_and(|c| c.operation == Operation::WakeUp)
        && !ours().any(|t| t.state == TargetState::Running)
        && status.retry.as_ref().is_none_or(|r| r.next_at.is_none())
        && (failed || ours().all(|t| t.state.is_terminal()))
}

/// The records a settled wake-up left asleep: not found, not restored, or never reported.
/// Targets outside a partial wake-up were not woken: their records are asleep on purpose.
fn wake_up_problems(p: &mut Problems, status: &HibernationPlanStatus, o: &Observed<'_>) {
    for t in status.targets.iter().filter(|t| in_operation(t)) {
        let Some(view) = o.restore.targets.get(&t.name) else {
            continue;
        };
        let mut not_found = Vec::new();
        let mut failed = Vec::new();
        for (key, record) in &view.live {
            match &record.wake_up {
                Some(w) if w.result == WakeUpOutcome::NotFound => not_found.push(key.clone()),
                Some(w) => failed.push(format!(
                    "{key}{}",
                    w.message
                        .as_ref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )),
                None => failed.push(format!("{key} ({})", unreported(t))),
            }
        }
        if !not_found.is_empty() {
            p.not_found
                .push(format!("{}: {}", t.name, not_found.join(", ")));
        }
        if !failed.is_empty() {
            p.incomplete
                .push(format!("{}: {}", t.name, failed.join(", ")));
        }
        if !not_found.is_empty() || !failed.is_empty() {
            p.wake_targets.insert(t.name.clone());
        }
    }
}

/// Why a target's runner reported nothing of a record.
fn unreported(t: &hibernator_api::plan::TargetStatus) -> String {
    match (t.state, &t.message) {
        (TargetState::Failed, Some(m)) => format!("its runner failed: {m}"),
        (TargetState::Aborted, Some(m)) => m.clone(),
        (TargetState::Pending, _) => "not started: the wake-up stopped after a failure".into(),
        _ => "not reported by a runner".into(),
    }
}

/// Counts restored resources per target of a wake-up, sets `Restored`, and handles an
/// acknowledgement. Returns the problem (reason, message) while `Restored` is False.
pub fn evaluate(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
    names: &[&str],
    ack_now: bool,
) -> Option<(&'static str, String)> {
    let prev = find_condition(&status.conditions, condition_types::RESTORED).cloned();
    // After an acknowledgement the counts stay as the wake-up left them: what was accepted as
    // not restored is not counted as restored.
    if !ack_now && prev.as_ref().is_none_or(|c| c.reason != "Acknowledged") {
        count_restored(status, o);
    }
    let problems = find_problems(status, o, names);
    if ack_now
        && !problems.unresolvable
        && let Some(prev) = prev.as_ref().filter(|c| c.status == "False")
    {
        acknowledge(status, d, o, names, &problems, &prev.message);
        return None;
    }
    if let Some(reason) = problems.first() {
        let message = problems.message();
        let changed = prev
            .as_ref()
            .is_none_or(|c| c.status != "False" || c.reason != reason || c.message != message);
        set_restored(status, o, false, reason, &message);
        if changed {
            d.events.push(EventRequest {
                warning: true,
                reason,
                note: message.clone(),
            });
        }
        return Some((reason, message));
    }
    if wake_up_restored_everything(status, d, o, prev.as_ref()) {
        return None;
    }
    // Otherwise the condition stays as the last wake-up (or acknowledgement) left it.
    match prev {
        Some(c) if c.status == "False" => Some((
            match c.reason.as_str() {
                RESTORE_DATA_MISSING => RESTORE_DATA_MISSING,
                TARGET_REMOVED => TARGET_REMOVED,
                RESOURCE_NOT_FOUND => RESOURCE_NOT_FOUND,
                _ => RESTORE_INCOMPLETE,
            },
            c.message,
        )),
        _ => None,
    }
}

fn set_restored(
    status: &mut HibernationPlanStatus,
    o: &Observed<'_>,
    restored: bool,
    reason: &str,
    message: &str,
) {
    set_condition(
        &mut status.conditions,
        condition(
            condition_types::RESTORED,
            restored,
            reason,
            message,
            o.plan.metadata.generation,
            o.now,
        ),
    );
}

/// A person acknowledged what was reported: the account drops lost keys and removed targets;
/// the records of removed targets are acknowledged, and those a wake-up left asleep too while
/// the plan is awake (asleep they are tonight's records and must still be woken up).
fn acknowledge(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
    names: &[&str],
    problems: &Problems,
    reported: &str,
) {
    for entry in &mut status.asleep {
        let present = present(o, &entry.name);
        entry.keys.retain(|k| present.contains(k));
        entry.resources = o
            .restore
            .targets
            .get(&entry.name)
            .map(|t| t.live.len() as i32)
            .unwrap_or(0);
    }
    status
        .asleep
        .retain(|a| names.contains(&a.name.as_str()) && a.resources > 0);
    let awake = status
        .current_cycle
        .as_ref()
        .is_none_or(|c| c.operation == Operation::WakeUp);
    let mut targets = problems.orphans.clone();
    if awake {
        targets.extend(problems.wake_targets.iter().cloned());
    }
    d.acknowledge = Some(targets);
    let note = format!("acknowledged with annotation {RESTORE_ACK_ANNOTATION}: {reported}");
    set_restored(status, o, true, "Acknowledged", &note);
    d.events.push(EventRequest {
        warning: false,
        reason: "RestoreAcknowledged",
        note,
    });
}

/// After a wake-up with nothing to report: `Restored=True`, unless an acknowledgement given
/// after that wake-up ended stands (until the next one). Returns whether it set the condition.
fn wake_up_restored_everything(
    status: &mut HibernationPlanStatus,
    d: &mut Decision,
    o: &Observed<'_>,
    prev: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> bool {
    let Some(cycle) = status
        .current_cycle
        .clone()
        .filter(|c| c.operation == Operation::WakeUp)
    else {
        return false;
    };
    let Some(finished) = cycle.finished_at else {
        return false;
    };
    let acknowledged_since = prev.is_some_and(|c| {
        c.status == "True" && c.reason == "Acknowledged" && c.last_transition_time.0 >= finished.0
    });
    if acknowledged_since {
        return false;
    }
    let (restored, recorded) =
        status
            .targets
            .iter()
            .filter(|t| in_operation(t))
            .fold((0, 0), |(r, t), s| {
                (
                    r + s.resources_restored.unwrap_or(0),
                    t + s.resources_recorded.unwrap_or(0),
                )
            });
    let message = if cycle.targets.is_empty() {
        format!(
            "every resource put to sleep in cycle {} is back ({restored} of {recorded})",
            cycle.id
        )
    } else {
        format!(
            "every resource of {} woken up in cycle {} is back ({restored} of {recorded}); the other targets sleep on",
            cycle.targets.join(", "),
            cycle.id
        )
    };
    set_restored(status, o, true, "Restored", &message);
    if prev.is_some_and(|c| c.status == "False") {
        d.events.push(EventRequest {
            warning: false,
            reason: "Restored",
            note: message,
        });
    }
    true
}

/// During a wake-up: how many of each target's resources are back.
fn count_restored(status: &mut HibernationPlanStatus, o: &Observed<'_>) {
    if status
        .current_cycle
        .as_ref()
        .is_none_or(|c| c.operation != Operation::WakeUp)
    {
        return;
    }
    for t in &mut status.targets {
        let Some(recorded) = t.resources_recorded.filter(|_| t.operation.is_none()) else {
            continue;
        };
        let view = o.restore.targets.get(&t.name);
        let left = view.map(|v| v.live.len() as i32).unwrap_or(0);
        let lost = status
            .asleep
            .iter()
            .find(|a| a.name == t.name)
            .map(|a| missing(o, a).1)
            .unwrap_or(0);
        t.resources_restored = Some((recorded - left - lost).clamp(0, recorded));
    }
}
