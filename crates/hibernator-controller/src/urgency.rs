//! How soon a change of a plan's status has to reach the API server.
//!
//! Every status write costs the API server a CEL evaluation of the plan and every watcher an
//! event, and a night of a plan of ten targets changed its status about thirty times. Most of
//! those changes wait for nobody: a target that ended, the next one started, a line of
//! progress, a record restored and counted into the savings. Those are written at most every [`QUIET_WRITE_INTERVAL`]
//! per plan, together. What someone waits for is written at once: an operation that begins or
//! ends (phase, conditions, the GitOps tools' health), a failure (someone is told at once),
//! and the account of records asleep growing (a recording runner waits for it before it
//! changes anything, see `grpc.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use hibernator_api::plan::{AsleepTarget, HibernationPlanStatus, TargetState, TargetStatus};

/// A status change that waits for nobody is written at most this long after the plan's last
/// status write, and goes with any change that is written at once. Real time: on the tests'
/// fast clocks the times in the status then move by the clock's speed-up, so the reconciler
/// keeps the decided status meanwhile (`PlanVersions::defer`) instead of deciding it again.
pub const QUIET_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// How soon a status change has to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// Nothing changed.
    None,
    /// Only bookkeeping nobody reads (savings ids forgotten after their records were
    /// retired): written with the next write there is anyway.
    Lazy,
    /// Targets started, ended or reported progress; records left the account and were
    /// counted into the savings: written within [`QUIET_WRITE_INTERVAL`].
    Quiet,
    /// Anything else: written at once.
    Now,
}

/// How soon the change from `written` (the status as last written) to `new` must be written.
pub fn urgency(written: &HibernationPlanStatus, new: &HibernationPlanStatus) -> Urgency {
    if written == new {
        return Urgency::None;
    }
    if masked(written) != masked(new)
        || newly_failed(&written.targets, &new.targets)
        || account_grew(&written.asleep, &new.asleep)
    {
        return Urgency::Now;
    }
    let savings_grew = savings_ids_added(written, new);
    if written.targets == new.targets && written.asleep == new.asleep && !savings_grew {
        return Urgency::Lazy;
    }
    Urgency::Quiet
}

/// What becomes of a decided status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Not written: nothing in it needs to be (a status kept for a later write is forgotten:
    /// the written one says all it said).
    Skip,
    /// Kept for a later write: only quiet changes, and the plan's status was written less
    /// than [`QUIET_WRITE_INTERVAL`] ago.
    Defer,
    /// Written now.
    Write,
}

/// What to do with a status change of `urgency`. `follows`: the reconcile goes on to do
/// something (an Event, retired records, an acknowledged restore) that has to come after the
/// status says so, which makes every change worth its write. `written_lately`: the plan's
/// status was written within [`QUIET_WRITE_INTERVAL`].
pub fn due(urgency: Urgency, follows: bool, written_lately: bool) -> Due {
    match urgency {
        Urgency::None => Due::Skip,
        Urgency::Lazy if !follows => Due::Skip,
        Urgency::Quiet if !follows && written_lately => Due::Defer,
        _ => Due::Write,
    }
}

/// `s` without what a quiet change may change: the per-target fields that move as targets
/// run, the account of records asleep, and the savings (restored records counted).
fn masked(s: &HibernationPlanStatus) -> HibernationPlanStatus {
    let mut s = s.clone();
    for t in &mut s.targets {
        t.state = TargetState::Pending;
        t.attempts = 0;
        t.job = None;
        t.progress = None;
        t.message = None;
        t.started_at = None;
        t.finished_at = None;
        t.resources_recorded = None;
        t.resources_restored = None;
    }
    s.asleep.clear();
    s.savings = None;
    s
}

/// Did an attempt fail since `written`?
fn newly_failed(written: &[TargetStatus], new: &[TargetStatus]) -> bool {
    new.iter().any(|n| {
        n.state == TargetState::Failed
            && !written
                .iter()
                .any(|w| w.name == n.name && w.state == n.state && w.attempts == n.attempts)
    })
}

/// Does `new` count a record, a target or a cycle `written` did not?
fn account_grew(written: &[AsleepTarget], new: &[AsleepTarget]) -> bool {
    new.iter().any(|n| {
        let Some(w) = written
            .iter()
            .find(|w| w.name == n.name && w.cycle_id == n.cycle_id)
        else {
            return true;
        };
        let keys: BTreeSet<&String> = w.keys.iter().collect();
        n.resources > w.resources || n.keys.iter().any(|k| !keys.contains(k))
    })
}

/// Were restored records counted into the savings since `written`? (Quiet: the retirement of
/// those records follows a written status, never a deferred one.)
fn savings_ids_added(written: &HibernationPlanStatus, new: &HibernationPlanStatus) -> bool {
    let ids = |s: &HibernationPlanStatus| -> BTreeSet<String> {
        s.savings
            .as_ref()
            .map(|s| s.counted.iter().cloned().collect())
            .unwrap_or_default()
    };
    !ids(new).is_subset(&ids(written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> HibernationPlanStatus {
        serde_json::from_value(v).unwrap()
    }

    fn night(targets: serde_json::Value, asleep: serde_json::Value) -> HibernationPlanStatus {
        status(json!({
            "phase": "Hibernating",
            "currentCycle": {"id": "c1", "operation": "hibernate", "startedAt": "2026-11-27T01:00:00Z"},
            "targets": targets,
            "asleep": asleep,
            "savings": {"currency": "USD", "total": {"period": "total", "amount": 0.1, "hours": 1.0},
                        "counted": ["db/instance:a@2026-11-27T01:00:00Z"]},
        }))
    }

    fn target(name: &str, state: &str, attempts: i32) -> serde_json::Value {
        json!({"name": name, "state": state, "attempts": attempts, "operation": "hibernate", "cycle": "c1"})
    }

    /// Bookkeeping waits for a write there is anyway, quiet changes for the interval unless
    /// something follows the write, and the rest is written at once.
    #[test]
    fn what_is_written_now_kept_or_skipped() {
        use Due::*;
        use Urgency::*;
        for (urgency, follows, lately, expected) in [
            (None, false, false, Skip),
            (None, true, true, Skip),
            (Lazy, false, false, Skip),
            (Lazy, false, true, Skip),
            (Lazy, true, true, Write),
            (Quiet, false, true, Defer),
            (Quiet, false, false, Write),
            (Quiet, true, true, Write),
            (Now, false, true, Write),
            (Now, false, false, Write),
        ] {
            assert_eq!(
                due(urgency, follows, lately),
                expected,
                "{urgency:?}, follows {follows}, written lately {lately}"
            );
        }
    }

    #[test]
    fn targets_that_run_and_end_are_quiet() {
        let before = night(
            json!([target("a", "Running", 1), target("b", "Pending", 0)]),
            json!([{"name": "a", "cycleId": "c1", "resources": 1, "keys": ["noop:a"]}]),
        );
        let mut ended = before.clone();
        ended.targets[0].state = TargetState::Completed;
        ended.targets[0].finished_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-27T01:10:00Z".parse().unwrap(),
        ));
        ended.targets[1].state = TargetState::Running;
        ended.targets[1].attempts = 1;
        ended.targets[1].progress = Some("1/3".into());
        assert_eq!(urgency(&before, &before), Urgency::None);
        assert_eq!(urgency(&before, &ended), Urgency::Quiet);
        // Records restored leave the account quietly, and are counted into the savings so.
        let mut restored = before.clone();
        restored.asleep.clear();
        assert_eq!(urgency(&before, &restored), Urgency::Quiet);
        let mut saved = before.clone();
        let savings = saved.savings.as_mut().unwrap();
        savings
            .counted
            .push("db/instance:b@2026-11-27T01:00:00Z".into());
        savings.total.hours = 11.0;
        assert_eq!(urgency(&before, &saved), Urgency::Quiet);
    }

    #[test]
    fn failures_a_growing_account_and_phases_are_written_at_once() {
        let before = night(
            json!([target("a", "Running", 1)]),
            json!([{"name": "a", "cycleId": "c1", "resources": 1, "keys": ["noop:a"]}]),
        );
        let mut failed = before.clone();
        failed.targets[0].state = TargetState::Failed;
        assert_eq!(urgency(&before, &failed), Urgency::Now);
        // The same failure, retried: the second failed attempt is news too.
        let mut again = failed.clone();
        again.targets[0].attempts = 2;
        assert_eq!(urgency(&failed, &again), Urgency::Now);

        let mut recorded = before.clone();
        recorded.asleep[0].keys.push("noop:b".into());
        recorded.asleep[0].resources = 2;
        assert_eq!(urgency(&before, &recorded), Urgency::Now);
        let mut other_target = before.clone();
        other_target.asleep.push(AsleepTarget {
            name: "b".into(),
            cycle_id: Some("c1".into()),
            resources: 1,
            keys: vec!["noop:b".into()],
        });
        assert_eq!(urgency(&before, &other_target), Urgency::Now);
        // Beyond the keys listed only the count grows.
        let mut counted = before.clone();
        counted.asleep[0].resources = 5;
        assert_eq!(urgency(&before, &counted), Urgency::Now);

        let mut phase = before.clone();
        phase.phase = Some(hibernator_api::plan::Phase::Hibernated);
        assert_eq!(urgency(&before, &phase), Urgency::Now);
        let mut message = before.clone();
        message.last_error = Some("boom".into());
        assert_eq!(urgency(&before, &message), Urgency::Now);
    }

    #[test]
    fn forgotten_savings_ids_wait_for_the_next_write() {
        let before = night(json!([target("a", "Completed", 1)]), json!([]));
        let mut forgotten = before.clone();
        forgotten.savings.as_mut().unwrap().counted.clear();
        assert_eq!(urgency(&before, &forgotten), Urgency::Lazy);
        // With a target's change it is written with it.
        forgotten.targets[0].message = Some("done".into());
        assert_eq!(urgency(&before, &forgotten), Urgency::Quiet);
    }
}
