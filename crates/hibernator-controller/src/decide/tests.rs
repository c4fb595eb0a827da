//! Scenario tests of the decision: a small world where the test plays the Job controller and
//! the runners.

use std::collections::BTreeMap;

use hibernator_api::common::find_condition;
use hibernator_api::fixtures::PlanBuilder;
use hibernator_api::params::TargetType;
use hibernator_api::plan::{FailureMode, HibernationPlan, Operation, Phase, TargetState};
use hibernator_api::schedule::{CompiledSchedule, Exception};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use hibernator_api::restore::{
    MAX_DATA_BYTES, WakeUpOutcome, acknowledge, mark_wake_up, merge_record, retire,
};

use hibernator_api::plan::RESTORE_ACK_ANNOTATION;

use super::*;

struct World {
    plan: HibernationPlan,
    jobs: Vec<JobObservation>,
    /// The restore ConfigMap's data.
    restore: BTreeMap<String, String>,
    now: Timestamp,
    reference_problem: Option<(String, String)>,
    refuse_hibernation: Option<(&'static str, String)>,
    events: Vec<EventRequest>,
    released: bool,
    /// ScheduleExceptions of the plan.
    exceptions: Vec<hibernator_api::schedule::Exception>,
    /// The controller is crowded: at most this many targets start per reconcile.
    start_limit: Option<StartLimit>,
}

fn ny(s: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = s.parse().unwrap();
    dt.to_zoned(jiff::tz::TimeZone::get("America/New_York").unwrap())
        .unwrap()
        .timestamp()
}

fn seed_plan() -> HibernationPlan {
    let mut p = PlanBuilder::new("prod-offhours")
        .namespace("hibernator-system")
        .target_with(
            "prod-db",
            TargetType::Rds,
            json!({"snapshotBeforeStop": true}),
        )
        .target_with(
            "prod-cluster",
            TargetType::Eks,
            json!({"clusterName": "eks-prod"}),
        )
        .dag(&[("prod-db", "prod-cluster")])
        .max_concurrency(2)
        .build();
    p.metadata.generation = Some(1);
    p.metadata.uid = Some("uid-1".into());
    p
}

impl World {
    fn new(plan: HibernationPlan, now: Timestamp) -> Self {
        Self {
            plan,
            jobs: vec![],
            restore: BTreeMap::new(),
            now,
            reference_problem: None,
            refuse_hibernation: None,
            events: vec![],
            released: false,
            exceptions: vec![],
            start_limit: None,
        }
    }

    /// A hibernation runner's record of a resource of `target` (what the real one sends).
    fn record(&mut self, target: &str, cycle: &str, key: &str) {
        self.try_record(target, cycle, key).unwrap();
    }

    /// The same, with the store's guard: what the status counts as asleep.
    fn try_record(
        &mut self,
        target: &str,
        cycle: &str,
        key: &str,
    ) -> Result<(), hibernator_api::restore::RestoreDataError> {
        let asleep: std::collections::BTreeSet<String> = self
            .plan
            .status
            .iter()
            .flat_map(|s| &s.asleep)
            .filter(|a| a.name == target)
            .flat_map(|a| a.keys.clone())
            .collect();
        merge_record(
            &mut self.restore,
            target,
            cycle,
            key,
            json!({"wasRunning": true}),
            self.now,
            MAX_DATA_BYTES,
            &asleep,
        )
        .map(|_| ())
    }

    /// A wake-up runner's results for `target`: every live record gets `outcome`, except
    /// those in `other`.
    fn wake_results(
        &mut self,
        target: &str,
        outcome: WakeUpOutcome,
        other: &[(&str, WakeUpOutcome)],
    ) {
        let cycle = self.status().current_cycle.clone().unwrap().id;
        let view = RestoreView::from_data(&self.restore);
        let results: Vec<(String, WakeUpOutcome, Option<String>)> = view
            .targets
            .get(target)
            .map(|t| {
                t.live
                    .keys()
                    .map(|k| {
                        let o = other
                            .iter()
                            .find(|(key, _)| key == k)
                            .map(|(_, o)| *o)
                            .unwrap_or(outcome);
                        (
                            k.clone(),
                            o,
                            (o != WakeUpOutcome::Restored).then(|| "gone".into()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        mark_wake_up(&mut self.restore, target, &cycle, &results, self.now).unwrap();
    }

    /// One reconcile: decide, then apply (create Jobs, clear restore data, write status).
    /// The decision on the world as it is, applying nothing.
    fn decide(&self) -> Decision {
        let graph = ExecutionGraph::compile(&self.plan.spec).unwrap();
        let compiled =
            CompiledSchedule::new(&self.plan.spec.schedule, self.exceptions.clone()).unwrap();
        let schedule = compiled.evaluate(self.now);
        let wishes = hibernator_api::wishes::target_wishes(&compiled, &schedule, &graph, self.now);
        let (checks, jobs): (Vec<JobObservation>, Vec<JobObservation>) =
            self.jobs.iter().cloned().partition(|j| j.check);
        decide(&Observed {
            plan: &self.plan,
            graph: &graph,
            schedule: &schedule,
            wishes: &wishes,
            now: self.now,
            real_now: self.now,
            jobs: &jobs,
            checks: &checks,
            restore: &RestoreView::from_data(&self.restore),
            restore_problem: None,
            refuse_hibernation: self.refuse_hibernation.clone(),
            reference_problem: self.reference_problem.clone(),
            reference_grace: SignedDuration::from_mins(5),
            deletion_timeout: SignedDuration::from_mins(30),
            start_limit: self.start_limit,
        })
    }

    fn reconcile(&mut self) -> Decision {
        let d = self.decide();
        self.create_jobs(&d);
        if d.more_to_start {
            // A crowded pass only creates its Jobs (see `Decision::more_to_start`).
            return d;
        }
        if let Some(targets) = &d.acknowledge {
            acknowledge(&mut self.restore, targets, self.now);
        }
        self.plan.status = Some(d.status.clone());
        retire(&mut self.restore, &d.retire);
        self.events.extend(d.events.clone());
        self.released |= d.release_finalizer;
        d
    }

    /// The Jobs a decision asks for, as the API server would hold them.
    fn create_jobs(&mut self, d: &Decision) {
        for req in &d.create {
            let target = self.plan.spec.targets[req.target].name.clone();
            let name = match req.check {
                Some(_) => hibernator_api::naming::enforce_job_name(
                    "prod-offhours",
                    &target,
                    &req.cycle,
                    req.attempt,
                ),
                None => crate::jobs::job_name(
                    "prod-offhours",
                    &target,
                    req.operation,
                    &req.cycle,
                    req.attempt,
                ),
            };
            assert!(
                !self.jobs.iter().any(|j| j.name == name),
                "Job {name} created twice"
            );
            self.jobs.push(JobObservation {
                name,
                target,
                operation: req.operation,
                cycle: req.cycle.clone(),
                attempt: req.attempt,
                outcome: JobOutcome::Running,
                message: None,
                progress: None,
                recorded: vec![],
                restored: vec![],
                check: req.check.is_some(),
                drifted: vec![],
                reapplied: vec![],
            });
        }
    }

    fn running(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.outcome == JobOutcome::Running)
            .map(|j| j.target.clone())
            .collect()
    }

    /// The runner of `target` ends; a successful hibernation leaves restore data.
    fn finish(&mut self, target: &str, ok: bool) {
        let job = self
            .jobs
            .iter_mut()
            .find(|j| j.target == target && j.outcome == JobOutcome::Running)
            .unwrap_or_else(|| panic!("{target} is not running"));
        job.outcome = if ok {
            JobOutcome::Succeeded
        } else {
            JobOutcome::Failed
        };
        job.message = Some(if ok {
            "done".into()
        } else {
            "AccessDenied".into()
        });
        let (operation, cycle) = (job.operation, job.cycle.clone());
        if ok && operation == Operation::Hibernate {
            self.record(target, &cycle, &format!("res:{target}"));
        }
        if ok && operation == Operation::WakeUp {
            self.wake_results(target, WakeUpOutcome::Restored, &[]);
        }
    }

    fn status(&self) -> &hibernator_api::HibernationPlanStatus {
        self.plan.status.as_ref().unwrap()
    }

    fn phase(&self) -> Phase {
        self.status().phase.unwrap()
    }

    fn condition(&self, t: &str) -> Option<(String, String)> {
        find_condition(&self.status().conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn state(&self, target: &str) -> TargetState {
        self.status()
            .targets
            .iter()
            .find(|t| t.name == target)
            .unwrap()
            .state
    }

    fn advance(&mut self, d: SignedDuration) {
        self.now += d;
    }
}

fn cond(s: &str, r: &str) -> Option<(String, String)> {
    Some((s.to_string(), r.to_string()))
}

#[test]
fn a_night_of_the_seed_plan() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T19:00"));
    let d = w.reconcile();
    assert!(d.create.is_empty());
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Ready"), cond("True", "Active"));
    assert_eq!(w.condition("Hibernated"), cond("False", "Awake"));
    assert_eq!(w.status().observed_generation, Some(1));
    assert_eq!(
        d.requeue_at,
        Some(ny("2026-11-26T20:00")),
        "requeue at the boundary"
    );

    w.now = ny("2026-11-26T20:00");
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernating);
    assert_eq!(w.running(), ["prod-db"], "the DAG starts with prod-db");
    assert_eq!(
        w.condition("Ready"),
        cond("True", "Hibernating"),
        "a scheduled hibernation is steady state"
    );
    let cycle = w.status().current_cycle.clone().unwrap();
    assert_eq!(cycle.id, "20261127t0100");
    assert_eq!(cycle.operation, Operation::Hibernate);

    w.advance(SignedDuration::from_secs(30));
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.state("prod-db"), TargetState::Completed);
    assert_eq!(w.running(), ["prod-cluster"]);

    w.advance(SignedDuration::from_secs(30));
    w.finish("prod-cluster", true);
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernated);
    assert_eq!(w.condition("Ready"), cond("True", "Hibernated"));
    assert_eq!(w.condition("Hibernated"), cond("True", "Hibernated"));
    assert_eq!(
        d.requeue_at,
        Some(ny("2026-11-27T02:01")),
        "the first in-sleep check (Report, every 6 h) comes before the 06:00 wake-up"
    );
    assert!(w.events.iter().any(|e| e.reason == "Hibernated"));
    let h = &w.status().history[0];
    assert_eq!(h.id, "20261127t0100");
    assert!(h.hibernate.as_ref().unwrap().succeeded);

    // Nothing more happens until the wake-up, and repeated reconciles change nothing.
    let before = w.status().clone();
    let d = w.reconcile();
    assert!(d.create.is_empty());
    assert_eq!(w.status(), &before, "no status churn");

    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    assert_eq!(w.phase(), Phase::WakingUp);
    assert_eq!(
        w.running(),
        ["prod-cluster"],
        "wake-up runs the reversed graph"
    );
    assert_eq!(
        w.status().current_cycle.as_ref().unwrap().id,
        "20261127t0100",
        "same cycle"
    );
    w.finish("prod-cluster", true);
    let d = w.reconcile();
    assert!(
        d.retire.is_empty(),
        "prod-cluster's restored record waits for the end of the wake-up: {:?}",
        d.retire
    );
    assert_eq!(
        w.status()
            .asleep
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["prod-db"],
        "the status no longer counts prod-cluster as asleep"
    );
    assert_eq!(w.running(), ["prod-db"]);
    w.finish("prod-db", true);
    let d = w.reconcile();
    assert_eq!(
        d.retire,
        std::collections::BTreeSet::from([
            ("prod-cluster".to_string(), "res:prod-cluster".to_string()),
            ("prod-db".to_string(), "res:prod-db".to_string())
        ]),
        "the restored records go together when the wake-up ends"
    );
    assert_eq!(w.phase(), Phase::Active);
    assert!(
        w.restore.is_empty(),
        "restore data cleared after a successful wake-up"
    );
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
    assert!(w.status().asleep.is_empty());
    let t = w
        .status()
        .targets
        .iter()
        .find(|t| t.name == "prod-db")
        .unwrap();
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(1), Some(1))
    );
    assert_eq!(w.condition("Hibernated"), cond("False", "Awake"));
    assert!(w.status().history[0].wake_up.as_ref().unwrap().succeeded);
    assert_eq!(w.jobs.len(), 4, "one Job per target and operation");
}

#[test]
fn a_plan_created_inside_off_hours_hibernates_at_once() {
    let mut w = World::new(seed_plan(), ny("2026-11-28T12:00")); // Saturday
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernating);
    assert_eq!(
        w.status().current_cycle.as_ref().unwrap().id,
        "20261128t0100",
        "the sleep began Friday 20:00"
    );
}

#[test]
fn a_missed_wake_up_happens_on_start() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    // The controller was down across 06:00; it comes back at 09:00.
    w.now = ny("2026-11-27T09:00");
    w.reconcile();
    assert_eq!(w.phase(), Phase::WakingUp);
}

#[test]
fn strict_failure_retries_with_backoff_then_stalls_and_the_token_retries_at_once() {
    let mut plan = seed_plan();
    plan.spec.behavior = Some(hibernator_api::plan::Behavior {
        mode: Some(FailureMode::Strict),
        retries: Some(2),
        ..Default::default()
    });
    let mut w = World::new(plan, ny("2026-11-26T20:00"));
    w.reconcile();
    w.finish("prod-db", false);
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::Error);
    assert_eq!(w.condition("Ready"), cond("False", "TargetFailed"));
    assert_eq!(
        w.condition("Stalled"),
        None,
        "retries are automatic: nobody must act yet"
    );
    assert!(
        w.running().is_empty(),
        "strict: nothing new starts after a failure"
    );
    let retry = w.status().retry.clone().unwrap();
    assert_eq!(retry.count, 0);
    assert_eq!(
        retry.next_at,
        Some(Time(ny("2026-11-26T20:01"))),
        "first retry after one minute"
    );
    assert_eq!(d.requeue_at, Some(ny("2026-11-26T20:01")));
    assert!(
        w.status()
            .last_error
            .as_ref()
            .unwrap()
            .contains("prod-db: AccessDenied")
    );

    // Too early: nothing.
    w.advance(SignedDuration::from_secs(30));
    w.reconcile();
    assert!(w.running().is_empty());
    // Due: attempt 2.
    w.now = ny("2026-11-26T20:01");
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    assert_eq!(w.phase(), Phase::Hibernating);
    assert_eq!(w.jobs.last().unwrap().attempt, 2);
    w.finish("prod-db", false);
    w.reconcile();
    assert_eq!(
        w.status().retry.as_ref().unwrap().next_at,
        Some(Time(ny("2026-11-26T20:03"))),
        "second retry after two more minutes"
    );
    w.now = ny("2026-11-26T20:03");
    w.reconcile();
    w.finish("prod-db", false);
    w.reconcile();
    assert_eq!(w.condition("Stalled"), cond("True", "RetriesExhausted"));
    assert_eq!(w.phase(), Phase::Error);
    assert!(w.events.iter().any(|e| e.reason == "Stalled"));
    w.advance(SignedDuration::from_hours(1));
    w.reconcile();
    assert!(w.running().is_empty(), "stalled: waits for a person");

    // The retry annotation retries at once.
    w.plan
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            hibernator_api::plan::RETRY_ANNOTATION.into(),
            "2026-11-26T21:03:00Z".into(),
        );
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    assert_eq!(w.condition("Stalled"), None);
    assert_eq!(
        w.status().last_handled_retry_token.as_deref(),
        Some("2026-11-26T21:03:00Z")
    );
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernated);
    assert_eq!(w.condition("Ready"), cond("True", "Hibernated"));
    // The same token again does nothing.
    w.reconcile();
    assert!(w.running().is_empty());
}

#[test]
fn best_effort_aborts_dependents_and_finishes_the_independent_branch() {
    let mut plan = PlanBuilder::new("prod-offhours")
        .noop_targets(3)
        .dag(&[("t0", "t1")])
        .mode(FailureMode::BestEffort)
        .build();
    plan.metadata.generation = Some(1);
    let mut w = World::new(plan, ny("2026-11-26T20:00"));
    w.reconcile();
    assert_eq!(w.running(), ["t0", "t2"]);
    w.finish("t0", false);
    w.reconcile();
    assert_eq!(w.state("t1"), TargetState::Aborted);
    assert_eq!(w.running(), ["t2"], "the independent branch continues");
    w.finish("t2", true);
    w.reconcile();
    assert_eq!(w.state("t2"), TargetState::Completed);
    assert_eq!(
        w.phase(),
        Phase::Hibernated,
        "best effort ends the operation"
    );
    assert_eq!(w.condition("Ready"), cond("False", "TargetFailed"));
    assert_eq!(
        w.condition("Hibernated"),
        cond("False", "PartiallyHibernated")
    );
    assert!(
        w.events
            .iter()
            .any(|e| e.reason == "TargetAborted" && e.note.contains("t0"))
    );
    assert!(!w.status().history[0].hibernate.as_ref().unwrap().succeeded);
    // The wake-up still wakes what was recorded.
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    assert_eq!(w.running(), ["t2"]);
    assert_eq!(w.state("t0"), TargetState::Skipped);
}

#[test]
fn a_failed_hibernation_never_blocks_the_wake_up() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", false);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Error);
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    assert_eq!(w.phase(), Phase::WakingUp);
    // Only what was recorded is woken: prod-cluster never hibernated.
    assert_eq!(w.state("prod-cluster"), TargetState::Skipped);
    assert_eq!(w.running(), ["prod-db"]);
}

#[test]
fn a_change_of_direction_lets_running_jobs_finish_first() {
    let mut plan = seed_plan();
    plan.spec.execution.strategy = hibernator_api::plan::Strategy {
        type_: hibernator_api::plan::StrategyType::Sequential,
        max_concurrency: None,
        dependencies: None,
        stages: None,
    };
    let mut w = World::new(plan, ny("2026-11-26T20:00"));
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    // Suspended while prod-db hibernates.
    w.plan.spec.suspend = Some(true);
    w.reconcile();
    assert_eq!(
        w.running(),
        ["prod-db"],
        "nothing new starts, nothing is killed"
    );
    assert_eq!(w.state("prod-cluster"), TargetState::Pending);
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::WakingUp);
    assert_eq!(w.running(), ["prod-db"]);
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Suspended);
    assert_eq!(w.condition("Ready"), cond("True", "Suspended"));
    assert!(w.events.iter().any(|e| e.reason == "OperationSuperseded"));
}

#[test]
fn deletion_wakes_up_first_unless_leave() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernated);
    let mut leave = w.plan.clone();
    leave.spec.on_delete = Some(hibernator_api::plan::OnDelete::Leave);
    let asleep = w.restore.clone();

    w.plan.metadata.deletion_timestamp = Some(Time(w.now));
    w.reconcile();
    assert!(!w.released);
    assert_eq!(w.phase(), Phase::WakingUp);
    w.finish("prod-cluster", true);
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    assert!(w.released, "released once everything is awake");

    leave.metadata.deletion_timestamp = Some(Time(w.now));
    let mut w2 = World::new(leave, w.now);
    w2.restore = asleep;
    w2.reconcile();
    assert!(w2.released, "Leave releases at once");
    assert!(w2.jobs.is_empty());
}

#[test]
fn a_missing_connector_starts_nothing_and_stalls_after_the_grace_period() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reference_problem = Some((
        "ReferenceNotFound".into(),
        "CloudProvider hibernator-system/aws-prod not found".into(),
    ));
    let d = w.reconcile();
    assert!(d.create.is_empty());
    assert_eq!(w.condition("Ready"), cond("False", "ReferenceNotFound"));
    assert_eq!(w.condition("Stalled"), None);
    assert_eq!(d.requeue_at, Some(ny("2026-11-26T20:05")));
    w.advance(SignedDuration::from_mins(6));
    w.reconcile();
    assert_eq!(w.condition("Stalled"), cond("True", "ReferenceNotFound"));
    // The connector appears.
    w.reference_problem = None;
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    assert_eq!(w.condition("Stalled"), None);
    assert_eq!(w.condition("Ready"), cond("True", "Hibernating"));
}

#[test]
fn a_crash_between_job_creation_and_status_write_creates_no_second_job() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    // The status write was lost: the controller restarts with the old status.
    w.plan.status = None;
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    assert_eq!(w.jobs.len(), 1);
    w.finish("prod-db", true);
    w.plan.status = None;
    w.reconcile();
    assert_eq!(w.running(), ["prod-cluster"]);
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(0), SignedDuration::from_mins(1));
    assert_eq!(backoff(1), SignedDuration::from_mins(2));
    assert_eq!(backoff(4), SignedDuration::from_mins(16));
    assert_eq!(backoff(5), SignedDuration::from_mins(30));
    assert_eq!(backoff(12), SignedDuration::from_mins(30));
}

#[test]
fn cycle_ids_are_sortable_and_unique_per_sleep() {
    let t: Timestamp = "2026-11-27T01:00:00Z".parse().unwrap();
    assert_eq!(cycle_id(t, None), "20261127t0100");
    assert_eq!(cycle_id(t, Some("20261127t0100")), "20261127t0100-2");
    assert_eq!(cycle_id(t, Some("20261127t0100-2")), "20261127t0100-3");
    assert_eq!(cycle_id(t, Some("20261126t0100")), "20261127t0100");
}

/// A night of the seed plan up to Hibernated, both targets recorded.
fn hibernated() -> World {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernated);
    assert_eq!(w.status().asleep.len(), 2);
    w
}

fn annotate(w: &mut World, key: &str, value: &str) {
    w.plan
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
}

fn restored_message(w: &World) -> String {
    find_condition(&w.status().conditions, "Restored")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[test]
fn a_vanished_runner_job_is_a_failed_attempt_and_is_retried() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    // The Job is gone: the reconciler reports it as lost.
    let job = w.jobs.pop().unwrap();
    w.jobs.push(JobObservation {
        outcome: JobOutcome::Lost,
        message: Some(format!("runner Job {} no longer exists", job.name)),
        ..job
    });
    w.advance(SignedDuration::from_secs(10));
    w.reconcile();
    assert_eq!(w.state("prod-db"), TargetState::Failed);
    assert!(
        w.events
            .iter()
            .any(|e| e.reason == "RunnerJobLost" && e.note.contains("no longer exists"))
    );
    assert_eq!(w.condition("Ready"), cond("False", "TargetFailed"));
    // Strict: retried with the next attempt (a new Job name) after the backoff.
    w.advance(SignedDuration::from_mins(2));
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    let attempts: Vec<i32> = w.jobs.iter().map(|j| j.attempt).collect();
    assert_eq!(attempts, [1, 2]);
}

#[test]
fn restore_data_lost_while_asleep_is_reported_at_once_and_until_acknowledged() {
    let mut w = hibernated();
    // A GitOps prune deletes the ConfigMap at 23:00.
    w.now = ny("2026-11-26T23:00");
    w.restore.clear();
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("False", "RestoreDataMissing"));
    assert_eq!(w.condition("Ready"), cond("False", "RestoreDataMissing"));
    assert_eq!(w.condition("Stalled"), cond("True", "RestoreDataMissing"));
    let msg = restored_message(&w);
    assert!(
        msg.contains("prod-db: res:prod-db") && msg.contains("prod-cluster: res:prod-cluster"),
        "{msg}"
    );
    assert_eq!(
        w.events
            .iter()
            .filter(|e| e.reason == "RestoreDataMissing")
            .count(),
        1
    );
    // Reconciling again repeats no Event.
    w.reconcile();
    assert_eq!(
        w.events
            .iter()
            .filter(|e| e.reason == "RestoreDataMissing")
            .count(),
        1
    );

    // The wake-up cannot wake them: Skipped, saying why; the plan stays loud.
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    assert_eq!(w.state("prod-db"), TargetState::Skipped);
    let t = w
        .status()
        .targets
        .iter()
        .find(|t| t.name == "prod-db")
        .unwrap();
    assert!(
        t.message
            .as_deref()
            .unwrap()
            .contains("restore data missing"),
        "{t:?}"
    );
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(1), Some(0))
    );
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("False", "RestoreDataMissing"));
    assert_eq!(w.condition("Ready"), cond("False", "RestoreDataMissing"));

    // A person acknowledges.
    annotate(&mut w, RESTORE_ACK_ANNOTATION, "seen-1");
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("True", "Acknowledged"));
    assert_eq!(w.condition("Ready"), cond("True", "Active"));
    assert_eq!(w.condition("Stalled"), None);
    assert!(w.status().asleep.is_empty());
    assert!(w.events.iter().any(|e| e.reason == "RestoreAcknowledged"));
    w.reconcile();
    assert_eq!(
        w.condition("Restored"),
        cond("True", "Acknowledged"),
        "stays acknowledged"
    );
}

#[test]
fn a_record_lost_during_the_hibernation_is_not_made_again_as_asleep() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.reconcile();
    w.record("prod-db", "20261127t0100", "res:prod-db");
    w.reconcile();
    assert_eq!(w.status().asleep.len(), 1, "the account has it");
    // The ConfigMap is deleted, the runner dies, and its retry finds prod-db stopped.
    w.restore.clear();
    let err = w
        .try_record("prod-db", "20261127t0100", "res:prod-db")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("refused to record res:prod-db again"),
        "{err}"
    );
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("False", "RestoreDataMissing"));
}

#[test]
fn lost_restore_data_stays_reported_through_the_next_night_until_acknowledged() {
    let mut w = hibernated();
    w.restore.clear();
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("False", "RestoreDataMissing"));
    // The next night: nobody knows what state those resources are in, so they are not recorded
    // again (their runner fails) and the plan keeps saying so.
    w.now = ny("2026-11-27T20:00");
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernating);
    let err = w
        .try_record("prod-db", "20261128t0100", "res:prod-db")
        .unwrap_err();
    assert!(err.to_string().contains("refused to record"), "{err}");
    w.finish("prod-db", false);
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("False", "RestoreDataMissing"));
    // A person restores them by hand and acknowledges; the retry then records afresh.
    annotate(&mut w, RESTORE_ACK_ANNOTATION, "restored-by-hand");
    annotate(&mut w, hibernator_api::plan::RETRY_ANNOTATION, "after-ack");
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("True", "Acknowledged"));
    assert!(
        w.running().contains(&"prod-db".to_string()),
        "{:?}",
        w.running()
    );
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Hibernated);
    assert_eq!(w.condition("Ready"), cond("True", "Hibernated"));
}

#[test]
fn a_resource_not_found_is_whole_again_after_a_successful_cycle() {
    let mut w = hibernated();
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    // prod-cluster's runner does not find its node group and says so.
    w.wake_results("prod-cluster", WakeUpOutcome::NotFound, &[]);
    let job = w
        .jobs
        .iter_mut()
        .find(|j| j.target == "prod-cluster" && j.outcome == JobOutcome::Running)
        .unwrap();
    job.outcome = JobOutcome::Succeeded;
    job.message = Some("restored 0 of 1 node groups (1 no longer there)".into());
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("False", "ResourceNotFound"));
    // Friday night and Monday morning: found again (the connector was fixed), restored.
    w.now = ny("2026-11-27T20:00");
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    assert_eq!(
        w.condition("Restored"),
        cond("False", "ResourceNotFound"),
        "still, until a wake-up"
    );
    w.now = ny("2026-11-30T06:00");
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
    assert_eq!(w.condition("Ready"), cond("True", "Active"));
    assert!(w.events.iter().any(|e| e.reason == "Restored"));
}

#[test]
fn a_target_removed_while_asleep_keeps_its_records_and_is_reported() {
    let mut w = hibernated();
    // prod-cluster is renamed in Git while asleep.
    w.plan.spec.targets[1].name = "cluster".into();
    w.plan.spec.execution.strategy.dependencies = Some(vec![]);
    w.reconcile();
    assert_eq!(
        w.condition("Restored"),
        cond("False", "TargetRemovedWhileAsleep")
    );
    assert!(
        restored_message(&w).contains("prod-cluster (res:prod-cluster)"),
        "{}",
        restored_message(&w)
    );
    // The renamed target is a new one: it is put to sleep too (its runner finds the node groups
    // already at zero and records that).
    assert_eq!(w.running(), ["cluster"]);
    w.finish("cluster", true);
    w.reconcile();
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    let mut running = w.running();
    running.sort();
    assert_eq!(running, ["cluster", "prod-db"]);
    w.finish("cluster", true);
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Active, "{:#?}", w.status());
    assert_eq!(
        w.condition("Restored"),
        cond("False", "TargetRemovedWhileAsleep")
    );
    assert!(
        w.restore.contains_key("prod-cluster"),
        "orphaned records are kept"
    );
    // Acknowledged: the records stay (acknowledged), nothing counts them as asleep.
    annotate(&mut w, RESTORE_ACK_ANNOTATION, "ok");
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("True", "Acknowledged"));
    assert!(w.restore.contains_key("prod-cluster"));
    assert!(RestoreView::from_data(&w.restore).asleep().is_empty());
}

#[test]
fn resources_not_found_on_wake_up_keep_their_records_and_a_retry_runs_them_again() {
    let mut w = hibernated();
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    // prod-cluster's runner does not find its node group (the connector points elsewhere).
    let job = w
        .jobs
        .iter_mut()
        .find(|j| j.target == "prod-cluster" && j.outcome == JobOutcome::Running)
        .unwrap();
    job.outcome = JobOutcome::Succeeded;
    job.message = Some("restored 0 of 1 node groups (1 no longer there)".into());
    w.wake_results("prod-cluster", WakeUpOutcome::NotFound, &[]);
    w.reconcile();
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("False", "ResourceNotFound"));
    assert_eq!(w.condition("Ready"), cond("False", "ResourceNotFound"));
    assert!(restored_message(&w).contains("prod-cluster: res:prod-cluster"));
    assert!(w.restore.contains_key("prod-cluster"), "its record is kept");
    assert!(
        !w.restore.contains_key("prod-db"),
        "prod-db's record is retired"
    );
    let t = w
        .status()
        .targets
        .iter()
        .find(|t| t.name == "prod-cluster")
        .unwrap();
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(1), Some(0))
    );

    // The connector is fixed; a retry runs prod-cluster's wake-up again.
    annotate(&mut w, hibernator_api::plan::RETRY_ANNOTATION, "r1");
    w.reconcile();
    assert_eq!(w.running(), ["prod-cluster"]);
    assert_eq!(w.phase(), Phase::WakingUp);
    w.finish("prod-cluster", true);
    w.reconcile();
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
    assert!(w.restore.is_empty());
}

#[test]
fn a_crash_between_the_status_and_retiring_restored_records_is_not_a_loss() {
    let mut w = hibernated();
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    w.finish("prod-cluster", true);
    w.reconcile();
    w.finish("prod-db", true);
    // The status that ends the wake-up is written, then the controller dies before retiring
    // the records.
    let d = w.decide();
    w.plan.status = Some(d.status);
    assert!(w.restore.contains_key("prod-cluster"), "not retired yet");
    w.reconcile();
    assert_ne!(w.condition("Restored"), cond("False", "RestoreDataMissing"));
    assert!(!w.restore.contains_key("prod-cluster"), "retired now");
    w.reconcile();
    assert_eq!(w.condition("Stalled"), None);
}

#[test]
fn a_plan_that_would_hibernate_the_controller_starts_nothing() {
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    w.refuse_hibernation = Some((
        "SelfHibernation",
        "refused to hibernate: target prod-cluster would scale node group system-ng to zero".into(),
    ));
    let d = w.reconcile();
    assert!(d.create.is_empty());
    assert_eq!(w.condition("Stalled"), cond("True", "SelfHibernation"));
    assert_eq!(w.condition("Ready"), cond("False", "SelfHibernation"));
    w.refuse_hibernation = None;
    w.reconcile();
    assert_eq!(w.running(), ["prod-db"]);
    assert_eq!(w.condition("Stalled"), None);
}

#[test]
fn records_lost_after_the_wake_up_restored_them_are_not_reported() {
    let mut w = hibernated();
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    // prod-cluster's runner reports its node groups restored; the ConfigMap is deleted before
    // the controller retires the records.
    w.finish("prod-cluster", true);
    w.jobs
        .iter_mut()
        .find(|j| j.target == "prod-cluster" && j.operation == Operation::WakeUp)
        .unwrap()
        .restored = vec!["res:prod-cluster".into()];
    w.restore.remove("prod-cluster");
    w.reconcile();
    assert_eq!(
        w.condition("Restored"),
        None,
        "nothing lost: {:?}",
        w.status().asleep
    );
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
}

/// Three targets woken up in the order prod-db, prod-cluster, prod-app (hibernated the other
/// way round): the cluster needs the database, the app needs the cluster.
fn three_tier_plan() -> HibernationPlan {
    let mut p = PlanBuilder::new("prod-offhours")
        .namespace("hibernator-system")
        .target("prod-db", TargetType::Noop)
        .target("prod-cluster", TargetType::Noop)
        .target("prod-app", TargetType::Noop)
        .dag(&[("prod-app", "prod-cluster"), ("prod-cluster", "prod-db")])
        .max_concurrency(3)
        .build();
    p.metadata.generation = Some(1);
    p
}

/// A ScheduleException for some targets, all day from `from` to `until` (New York).
fn scoped(name: &str, type_: &str, targets: &[&str], from: &str, until: &str) -> Exception {
    let e: hibernator_api::ScheduleException = serde_json::from_value(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "ScheduleException",
        "metadata": {"name": name, "namespace": "hibernator-system"},
        "spec": {
            "planRef": {"name": "prod-offhours"},
            "type": type_,
            "validFrom": ny(from).to_string(),
            "validUntil": ny(until).to_string(),
            "targets": targets,
            "windows": [
                {"start": "00:00", "end": "12:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]},
                {"start": "12:00", "end": "00:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]},
            ],
        },
    }))
    .unwrap();
    Exception::from_object(&e).unwrap()
}

/// Runs the current operation to its end, every runner succeeding; returns the order in which
/// the targets ran.
fn run_to_end(w: &mut World) -> Vec<String> {
    let mut order = vec![];
    w.reconcile();
    for _ in 0..10 {
        let running = w.running();
        if running.is_empty() {
            break;
        }
        for t in running {
            w.advance(SignedDuration::from_secs(20));
            w.finish(&t, true);
            order.push(t);
        }
        w.reconcile();
    }
    order
}

fn entry<'a>(w: &'a World, target: &str) -> &'a hibernator_api::plan::TargetStatus {
    w.status()
        .targets
        .iter()
        .find(|t| t.name == target)
        .unwrap()
}

#[test]
fn a_target_woken_by_an_exception_wakes_what_it_needs_and_sleeps_again_at_its_end() {
    let mut w = World::new(three_tier_plan(), ny("2026-11-26T20:00"));
    assert_eq!(run_to_end(&mut w), ["prod-app", "prod-cluster", "prod-db"]);
    assert_eq!(w.phase(), Phase::Hibernated);

    // 23:00: keep prod-cluster awake until 01:00.
    w.now = ny("2026-11-26T23:00");
    w.exceptions = vec![scoped(
        "wake-cluster",
        "suspend",
        &["prod-cluster"],
        "2026-11-26T23:00",
        "2026-11-27T01:00",
    )];
    w.reconcile();
    assert_eq!(w.phase(), Phase::WakingUp);
    assert_eq!(
        w.running(),
        ["prod-db"],
        "the database first: the cluster needs it"
    );
    let cycle = w.status().current_cycle.clone().unwrap();
    assert_eq!(cycle.operation, Operation::WakeUp);
    assert_eq!(cycle.targets, ["prod-db", "prod-cluster"]);
    assert_eq!(
        entry(&w, "prod-db").schedule_override.as_deref(),
        Some("awake: needed by prod-cluster")
    );
    assert_eq!(
        entry(&w, "prod-cluster").schedule_override.as_deref(),
        Some("awake: ScheduleException wake-cluster")
    );
    let app = entry(&w, "prod-app");
    assert_eq!(
        (app.state, app.operation, app.schedule_override.clone()),
        (TargetState::Completed, Some(Operation::Hibernate), None),
        "prod-app keeps its hibernation"
    );
    assert!(
        w.events.iter().any(|e| e.reason == "WakeUpStarted"
            && e.note.contains("prod-db (awake: needed by prod-cluster)")),
        "{:?}",
        w.events
    );
    w.advance(SignedDuration::from_secs(20));
    w.finish("prod-db", true);
    w.reconcile();
    assert_eq!(w.running(), ["prod-cluster"]);
    w.finish("prod-cluster", true);
    let d = w.reconcile();
    assert_eq!(w.phase(), Phase::PartlyAwake);
    assert_eq!(w.condition("Ready"), cond("True", "PartlyAwake"));
    assert_eq!(w.condition("Stalled"), None);
    assert_eq!(w.condition("Hibernated"), cond("False", "PartlyAwake"));
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
    assert!(
        restored_message(&w).contains("prod-db, prod-cluster woken up"),
        "{}",
        restored_message(&w)
    );
    assert_eq!(
        w.status()
            .asleep
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["prod-app"],
        "prod-app still counts as asleep"
    );
    assert_eq!(
        d.requeue_at,
        Some(ny("2026-11-27T01:00")),
        "the exception's end"
    );
    let steady = w.status().clone();
    let d = w.reconcile();
    assert!(d.create.is_empty());
    assert_eq!(w.status(), &steady, "no churn while partly awake");

    // 01:00: the exception is over; both sleep again in hibernation order, in a new cycle.
    w.now = ny("2026-11-27T01:00");
    assert_eq!(run_to_end(&mut w), ["prod-cluster", "prod-db"]);
    let cycle = w.status().current_cycle.clone().unwrap();
    assert_eq!(
        (cycle.id.as_str(), cycle.operation),
        ("20261127t0100-2", Operation::Hibernate)
    );
    assert_eq!(w.phase(), Phase::Hibernated);
    assert_eq!(w.condition("Hibernated"), cond("True", "Hibernated"));
    assert!(
        w.status()
            .targets
            .iter()
            .all(|t| t.schedule_override.is_none())
    );

    // The morning wakes everything, each from its own records.
    w.now = ny("2026-11-27T06:00");
    assert_eq!(run_to_end(&mut w), ["prod-db", "prod-cluster", "prod-app"]);
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
    assert!(w.restore.is_empty(), "every record restored and retired");
    assert!(
        w.status()
            .current_cycle
            .as_ref()
            .unwrap()
            .targets
            .is_empty()
    );
    assert_eq!(w.jobs.len(), 3 + 2 + 2 + 3);
}

#[test]
fn a_target_put_to_sleep_by_day_takes_what_needs_it_along() {
    // Wednesday noon, awake: put prod-cluster to sleep for an hour; prod-app needs it.
    let mut w = World::new(three_tier_plan(), ny("2026-11-25T12:00"));
    w.exceptions = vec![scoped(
        "sleep-cluster",
        "extend",
        &["prod-cluster"],
        "2026-11-25T12:00",
        "2026-11-25T13:00",
    )];
    assert_eq!(run_to_end(&mut w), ["prod-app", "prod-cluster"]);
    assert_eq!(w.phase(), Phase::PartlyAwake);
    assert_eq!(
        entry(&w, "prod-app").schedule_override.as_deref(),
        Some("asleep: needs prod-cluster, which sleeps")
    );
    assert_eq!(entry(&w, "prod-db").operation, Some(Operation::WakeUp));
    assert_eq!(w.condition("Ready"), cond("True", "PartlyAwake"));
    w.now = ny("2026-11-25T13:00");
    assert_eq!(run_to_end(&mut w), ["prod-cluster", "prod-app"]);
    assert_eq!(w.phase(), Phase::Active);
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
    assert!(w.restore.is_empty());
}

#[test]
fn the_night_comes_while_a_target_is_kept_awake() {
    // prod-db is kept awake from 19:00 to 22:00: at 20:00 only the others sleep; at 22:00
    // prod-db follows.
    let mut w = World::new(three_tier_plan(), ny("2026-11-26T19:00"));
    w.exceptions = vec![scoped(
        "keep-db",
        "suspend",
        &["prod-db"],
        "2026-11-26T19:00",
        "2026-11-26T22:00",
    )];
    run_to_end(&mut w);
    assert_eq!(w.phase(), Phase::Active);
    w.now = ny("2026-11-26T20:00");
    assert_eq!(run_to_end(&mut w), ["prod-app", "prod-cluster"]);
    assert_eq!(w.phase(), Phase::PartlyAwake);
    assert_eq!(
        w.status().current_cycle.as_ref().unwrap().targets,
        ["prod-cluster", "prod-app"]
    );
    w.now = ny("2026-11-26T22:00");
    assert_eq!(run_to_end(&mut w), ["prod-db"]);
    assert_eq!(w.phase(), Phase::Hibernated);
    w.now = ny("2026-11-27T06:00");
    assert_eq!(run_to_end(&mut w), ["prod-db", "prod-cluster", "prod-app"]);
    assert_eq!(w.phase(), Phase::Active);
    assert!(w.restore.is_empty());
    assert_eq!(w.condition("Restored"), cond("True", "Restored"));
}

/// A plan of one database.
fn db_plan() -> HibernationPlan {
    let mut p = PlanBuilder::new("prod-offhours")
        .namespace("hibernator-system")
        .target_with("prod-db", TargetType::Rds, json!({}))
        .build();
    p.metadata.generation = Some(1);
    p.metadata.uid = Some("uid-1".into());
    p
}

fn with_enforce(mut p: HibernationPlan, mode: &str, interval: &str) -> HibernationPlan {
    p.spec.behavior = Some(
        serde_json::from_value(json!({"enforce": {"mode": mode, "interval": interval}})).unwrap(),
    );
    p
}

/// The running in-sleep check of `target` ends with these results.
fn finish_check(w: &mut World, target: &str, ok: bool, drifted: &[&str], reapplied: &[&str]) {
    let job = w
        .jobs
        .iter_mut()
        .find(|j| j.check && j.target == target && j.outcome == JobOutcome::Running)
        .unwrap_or_else(|| panic!("no check of {target} is running"));
    job.outcome = if ok {
        JobOutcome::Succeeded
    } else {
        JobOutcome::Failed
    };
    job.message = Some(if ok { "checked" } else { "AccessDenied" }.into());
    job.drifted = drifted.iter().map(|k| k.to_string()).collect();
    job.reapplied = reapplied.iter().map(|k| k.to_string()).collect();
}

fn checks_created(d: &Decision) -> Vec<(usize, i32, Option<hibernator_api::plan::EnforceMode>)> {
    d.create
        .iter()
        .map(|r| (r.target, r.attempt, r.check))
        .collect()
}

#[test]
fn in_sleep_checks_report_drift_until_the_wake_up_and_never_touch_ready() {
    use hibernator_api::plan::EnforceMode::Report;
    let mut w = World::new(seed_plan(), ny("2026-11-26T20:00"));
    run_to_end(&mut w);
    assert_eq!(w.phase(), Phase::Hibernated);
    let done = w
        .status()
        .current_cycle
        .clone()
        .unwrap()
        .finished_at
        .unwrap()
        .0;
    let e = w
        .status()
        .enforcement
        .clone()
        .expect("enforcement on by default");
    assert_eq!((e.mode, e.checks), (Report, 0));
    assert_eq!(
        e.next_check_at.unwrap().0,
        done + SignedDuration::from_hours(6)
    );
    assert_eq!(w.condition("Drifted"), None, "no check yet");

    // Six hours after the hibernation ended: both targets are checked.
    w.now = done + SignedDuration::from_hours(6);
    let d = w.reconcile();
    assert_eq!(
        checks_created(&d),
        [(0, 1, Some(Report)), (1, 1, Some(Report))]
    );
    assert_eq!(w.phase(), Phase::Hibernated, "a check is not an operation");
    let job = w.jobs[w.jobs.len() - 2].name.clone();
    assert_eq!(job, "prod-offhours-prod-db-e-20261127t0100-1");
    // No second check while one runs (06:00 is still ahead).
    w.advance(SignedDuration::from_mins(90));
    assert!(w.reconcile().create.is_empty());

    finish_check(&mut w, "prod-db", true, &["res:prod-db"], &[]);
    finish_check(&mut w, "prod-cluster", true, &[], &[]);
    let before = w.events.len();
    let d = w.reconcile();
    assert_eq!(
        w.condition("Drifted"),
        cond("True", "ResourcesAwake"),
        "found awake"
    );
    assert_eq!(
        w.condition("Ready"),
        cond("True", "Hibernated"),
        "information only"
    );
    let e = w.status().enforcement.clone().unwrap();
    assert_eq!(e.counted_check, Some(1));
    assert_eq!(e.drifted.len(), 1);
    assert_eq!(
        (e.drifted[0].name.as_str(), e.drifted[0].keys.clone()),
        ("prod-db", vec!["res:prod-db".to_string()])
    );
    assert!(
        w.events[before..]
            .iter()
            .any(|e| e.reason == "Drifted" && e.warning && e.note.contains("prod-db: res:prod-db"))
    );
    // The interval counts from the last check; the results are counted once.
    assert_eq!(
        d.requeue_at,
        Some(ny("2026-11-27T06:00")),
        "the wake-up comes first"
    );
    let events = w.events.len();
    w.reconcile();
    assert_eq!(
        w.events.len(),
        events,
        "no second Drifted Event for the same check"
    );

    // The wake-up ends the night's enforcement: Drifted goes, the counts stay for the cycle.
    w.now = ny("2026-11-27T06:00");
    w.reconcile();
    assert_eq!(w.phase(), Phase::WakingUp);
    assert_eq!(w.condition("Drifted"), None);
    let e = w.status().enforcement.clone().unwrap();
    assert!(e.drifted.is_empty());
    assert_eq!(e.checks, 1);

    // The next hibernation starts afresh.
    run_to_end(&mut w);
    w.now = ny("2026-11-27T20:00");
    run_to_end(&mut w);
    let e = w.status().enforcement.clone().unwrap();
    assert_eq!(
        (e.cycle_id.as_str(), e.checks, e.counted_check),
        ("20261128t0100", 0, None)
    );
}

#[test]
fn reapply_counts_what_it_put_back_to_sleep_and_a_failed_check_says_so() {
    use hibernator_api::plan::EnforceMode::Reapply;
    let mut w = World::new(
        with_enforce(db_plan(), "Reapply", "1h"),
        ny("2026-11-26T20:00"),
    );
    run_to_end(&mut w);
    let done = w
        .status()
        .current_cycle
        .clone()
        .unwrap()
        .finished_at
        .unwrap()
        .0;
    w.now = done + SignedDuration::from_hours(1);
    assert_eq!(checks_created(&w.reconcile()), [(0, 1, Some(Reapply))]);
    finish_check(&mut w, "prod-db", true, &[], &["res:prod-db"]);
    w.advance(SignedDuration::from_mins(1));
    w.reconcile();
    let e = w.status().enforcement.clone().unwrap();
    assert_eq!((e.reapplied, e.drifted.len()), (1, 0));
    assert_eq!(
        w.condition("Drifted"),
        cond("False", "Asleep"),
        "asleep again"
    );
    assert!(
        w.events
            .iter()
            .any(|e| e.reason == "DriftReapplied" && e.note.contains("prod-db: res:prod-db"))
    );

    // An hour after that check: the next one, which fails.
    w.now = done + SignedDuration::from_hours(2);
    assert_eq!(checks_created(&w.reconcile()), [(0, 2, Some(Reapply))]);
    finish_check(&mut w, "prod-db", false, &[], &[]);
    w.advance(SignedDuration::from_mins(1));
    w.reconcile();
    assert_eq!(w.condition("Drifted"), cond("True", "ReapplyFailed"));
    assert_eq!(w.condition("Ready"), cond("True", "Hibernated"));
    assert!(
        w.events
            .iter()
            .any(|e| e.reason == "CheckFailed" && e.note.contains("AccessDenied"))
    );
    assert_eq!(w.status().enforcement.clone().unwrap().reapplied, 1);
}

#[test]
fn a_wake_up_waits_for_an_in_sleep_check_that_still_runs() {
    use hibernator_api::plan::EnforceMode::Reapply;
    let mut w = World::new(
        with_enforce(db_plan(), "Reapply", "1h"),
        ny("2026-11-26T20:00"),
    );
    run_to_end(&mut w);
    // The last check of the night starts a minute before the wake-up and is still running
    // (waiting out a database someone started, say) when the wake-up is due.
    w.now = ny("2026-11-27T05:59");
    assert_eq!(checks_created(&w.reconcile()), [(0, 1, Some(Reapply))]);
    let check = w.jobs.last().unwrap().name.clone();
    w.now = ny("2026-11-27T06:00");
    let d = w.reconcile();
    assert!(
        d.create.is_empty(),
        "no wake-up Job beside the check: {:?}",
        d.create
    );
    assert_eq!(w.phase(), Phase::WakingUp);
    let db = &w.status().targets[0];
    assert_eq!(db.state, TargetState::Pending);
    assert_eq!(
        db.message.as_deref(),
        Some(format!("waiting for in-sleep check Job {check} to end").as_str())
    );
    w.advance(SignedDuration::from_secs(30));
    assert!(w.reconcile().create.is_empty(), "still running");

    // The check ends (told to stop): the wake-up starts on the next pass.
    finish_check(&mut w, "prod-db", false, &[], &[]);
    w.advance(SignedDuration::from_secs(5));
    let d = w.reconcile();
    assert_eq!(
        d.create
            .iter()
            .map(|r| (r.target, r.operation, r.check))
            .collect::<Vec<_>>(),
        [(0, Operation::WakeUp, None)]
    );
    let db = &w.status().targets[0];
    assert_eq!(
        (db.state, db.message.as_deref()),
        (TargetState::Running, None)
    );
    run_to_end(&mut w);
    assert_eq!(w.phase(), Phase::Active);
}

#[test]
fn targets_kept_awake_by_an_exception_or_suspended_plans_are_not_checked_and_off_means_off() {
    // Off: no checks, no enforcement status.
    let mut w = World::new(
        with_enforce(seed_plan(), "Off", "1h"),
        ny("2026-11-26T20:00"),
    );
    run_to_end(&mut w);
    w.advance(SignedDuration::from_hours(3));
    assert!(w.reconcile().create.is_empty());
    assert_eq!(w.status().enforcement, None);

    // A missing connector or a refused hibernation: no check (its Job could not be made, or a
    // Reapply would do what the self-guard forbids).
    let mut w = World::new(db_plan(), ny("2026-11-26T20:00"));
    run_to_end(&mut w);
    w.advance(SignedDuration::from_hours(7));
    w.refuse_hibernation = Some(("SelfHibernation", "the controller runs there".into()));
    assert!(w.reconcile().create.is_empty());
    w.refuse_hibernation = None;
    w.reference_problem = Some(("ReferenceNotFound".into(), "CloudProvider aws-prod".into()));
    assert!(w.reconcile().create.is_empty());
    w.reference_problem = None;
    assert_eq!(
        checks_created(&w.reconcile()).len(),
        1,
        "checked once both are gone"
    );

    // A target an exception keeps awake is not checked while it is awake.
    let mut w = World::new(
        with_enforce(three_tier_plan(), "Report", "1h"),
        ny("2026-11-26T20:00"),
    );
    run_to_end(&mut w);
    w.now = ny("2026-11-26T23:00");
    w.exceptions = vec![scoped(
        "wake-cluster",
        "suspend",
        &["prod-cluster"],
        "2026-11-26T23:00",
        "2026-11-27T03:00",
    )];
    run_to_end(&mut w);
    assert_eq!(w.phase(), Phase::PartlyAwake);
    w.advance(SignedDuration::from_hours(2));
    let d = w.reconcile();
    assert!(
        checks_created(&d)
            .iter()
            .all(|(i, _, _)| w.plan.spec.targets[*i].name != "prod-db"),
        "prod-db is awake on purpose: {:?}",
        d.create
    );
}

#[test]
fn the_next_check_comes_at_a_predicted_rds_auto_start_when_that_is_sooner() {
    let recorded: Timestamp = "2026-11-27T01:00:00Z".parse().unwrap();
    let auto_start = recorded + enforce::RDS_AUTO_START + enforce::AUTO_START_GRACE;
    // Checks every two days: the one on day 6 is followed by the auto-start's, not day 8's.
    let two_days = SignedDuration::from_hours(48);
    let day6 = recorded + SignedDuration::from_hours(6 * 24);
    assert_eq!(
        enforce::next_check(day6, two_days, &[auto_start]),
        auto_start
    );
    assert_eq!(
        enforce::next_check(day6, SignedDuration::from_hours(6), &[auto_start]),
        day6 + SignedDuration::from_hours(6)
    );
    // An auto-start predicted before the last check was seen by it.
    assert_eq!(
        enforce::next_check(auto_start, two_days, &[auto_start]),
        auto_start + two_days
    );
}

#[test]
fn a_check_after_a_predicted_rds_auto_start_runs_although_the_interval_is_longer() {
    let mut w = World::new(
        with_enforce(db_plan(), "Report", "144h"),
        ny("2026-11-26T20:00"),
    );
    // Asleep for two weeks (an exception extends the night).
    w.exceptions = vec![scoped(
        "long",
        "extend",
        &[],
        "2026-11-26T00:00",
        "2026-12-10T00:00",
    )];
    run_to_end(&mut w);
    let cycle = w.status().current_cycle.clone().unwrap();
    // What an rds runner records: a DB instance.
    w.record("prod-db", &cycle.id, "instance:prod-db");
    let done = cycle.finished_at.unwrap().0;
    // The interval's check on day 6 finds everything asleep.
    w.now = done + SignedDuration::from_hours(144);
    w.reconcile();
    finish_check(&mut w, "prod-db", true, &[], &[]);
    w.advance(SignedDuration::from_mins(1));
    w.reconcile();
    let recorded: Timestamp = {
        let view = RestoreView::from_data(&w.restore);
        view.targets["prod-db"].live["instance:prod-db"]
            .recorded_at
            .unwrap()
    };
    let due = recorded + enforce::RDS_AUTO_START + enforce::AUTO_START_GRACE;
    let e = w.status().enforcement.clone().unwrap();
    assert_eq!(e.next_check_at.unwrap().0, due);
    w.now = due - SignedDuration::from_mins(1);
    assert!(w.reconcile().create.is_empty());
    w.now = due;
    assert_eq!(
        checks_created(&w.reconcile()),
        [(0, 2, Some(hibernator_api::plan::EnforceMode::Report))],
        "a day before the interval's next check"
    );
}

#[test]
fn a_crowded_controller_starts_one_target_per_reconcile_and_comes_back_for_the_rest() {
    let mut plan = seed_plan();
    plan.spec.execution.strategy.dependencies = Some(vec![]);
    // Thursday 20:00: both targets may start at once (maxConcurrency 2).
    let mut alone = World::new(plan.clone(), ny("2026-11-26T20:00"));
    let d = alone.reconcile();
    assert_eq!(d.create.len(), 2);
    assert!(!d.more_to_start);

    let mut crowded = World::new(plan.clone(), ny("2026-11-26T20:00"));
    crowded.start_limit = Some(StartLimit { first: 1, more: 1 });
    let d = crowded.reconcile();
    assert_eq!(d.create.len(), 1);
    assert!(d.first_start);
    assert!(
        d.more_to_start,
        "the other target waits for the next reconcile"
    );
    assert_eq!(crowded.running().len(), 1);
    // That pass created a Job and nothing else: no status, no Event yet.
    assert!(crowded.plan.status.is_none());
    assert!(crowded.events.is_empty());
    // The next pass finds the first Job (never created twice), starts the other and writes
    // the status with both, and the start's Event once.
    let d = crowded.reconcile();
    assert_eq!(d.create.len(), 1);
    assert!(!d.more_to_start);
    assert_eq!(crowded.running().len(), 2);
    assert_eq!(crowded.phase(), Phase::Hibernating);
    for t in ["prod-db", "prod-cluster"] {
        assert_eq!(crowded.state(t), TargetState::Running, "{t}");
    }
    assert_eq!(crowded.events, alone.events);

    // While other plans still get their first Job, a plan whose operation has begun starts
    // nothing more and writes nothing; once they all have one, it goes on.
    let mut held = World::new(plan, ny("2026-11-26T20:00"));
    held.start_limit = Some(StartLimit { first: 1, more: 0 });
    let d = held.reconcile();
    assert_eq!(
        (d.create.len(), d.first_start, d.more_to_start),
        (1, true, true)
    );
    let d = held.reconcile();
    assert_eq!(
        (d.create.len(), d.first_start, d.more_to_start),
        (0, false, true),
        "held back"
    );
    assert!(held.plan.status.is_none());
    held.start_limit = None;
    let d = held.reconcile();
    assert_eq!(
        (d.create.len(), d.first_start, d.more_to_start),
        (1, false, false)
    );
    assert_eq!(held.running().len(), 2);
    assert_eq!(held.events, alone.events);
}
