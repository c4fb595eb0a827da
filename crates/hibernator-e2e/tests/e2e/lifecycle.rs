//! The controller's behaviour end to end (issue "Controller", acceptance 2-6, 8, 9): failures
//! and retries, crashes, catch-up, spec edits, suspension, exceptions, status for GitOps and
//! deletion. Each test has its own namespace, moto and controller with a simulated clock.

use std::time::{Duration, Instant};

use hibernator_api::plan::{Phase, RETRY_ANNOTATION};
use hibernator_api::{Operation, TargetState};
use hibernator_e2e::world::{
    ControllerOptions, World, cond, condition, noop_plan, phase, sim_now, target_state,
};
use kube::api::{Api, DeleteParams};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_failure_retries_with_backoff_then_stalls_and_the_annotation_retries_at_once() {
    let w = World::new("strict").await.unwrap();
    w.apply(noop_plan(
        "p",
        &[("t0", json!({"fail": "hibernate"})), ("t1", json!({}))],
        json!({"behavior": {"mode": "Strict", "retries": 2},
               "execution": {"strategy": {"type": "Sequential"}}}),
    ))
    .await
    .unwrap();
    // Thursday 19:59:50 New York; 60x: a minute of backoff takes a second.
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:50Z", 60.0))
        .unwrap();
    let p = w
        .wait_plan("p", SECS(60), "Error after the first failure", |p| {
            phase(p) == Some(Phase::Error)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(condition(&p, "Ready"), cond("False", "TargetFailed"));
    assert_eq!(
        condition(&p, "Stalled"),
        None,
        "automatic retries pending: nobody must act yet"
    );
    assert_eq!(
        target_state(&p, "t1"),
        Some(TargetState::Pending),
        "strict: t1 never started"
    );
    assert!(
        p.status
            .as_ref()
            .unwrap()
            .last_error
            .as_ref()
            .unwrap()
            .contains("t0")
    );

    let p = w
        .wait_plan("p", SECS(90), "Stalled after two retries", |p| {
            condition(p, "Stalled") == cond("True", "RetriesExhausted")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(phase(&p), Some(Phase::Error));
    let jobs = w.jobs("t0", "hibernate").await.unwrap();
    assert_eq!(jobs.len(), 3, "the first attempt and two retries");
    assert!(w.jobs("t1", "hibernate").await.unwrap().is_empty());
    // Backoff: the retries started one and two (schedule) minutes after the failures, so at
    // 60x they are at least a second apart in real time.
    let created: Vec<_> = jobs
        .iter()
        .map(|j| j.metadata.creation_timestamp.clone().unwrap().0)
        .collect();
    assert!(
        created[1].duration_since(created[0]) >= jiff::SignedDuration::from_millis(900),
        "{created:?}"
    );
    assert!(
        created[2].duration_since(created[1]) >= jiff::SignedDuration::from_millis(1900),
        "{created:?}"
    );

    // Fix the cause and ask for a retry: it runs at once.
    w.patch_plan("p", json!({"spec": {"targets": [{"name": "t0", "type": "noop", "parameters": {"fail": "none"}},
                                                   {"name": "t1", "type": "noop", "parameters": {}}]},
                            "metadata": {"annotations": {RETRY_ANNOTATION: "fixed-1"}}}))
        .await
        .unwrap();
    let p = w
        .wait_plan("p", SECS(60), "Hibernated after the requested retry", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    assert_eq!(condition(&p, "Stalled"), None);
    assert_eq!(
        p.status
            .as_ref()
            .unwrap()
            .last_handled_retry_token
            .as_deref(),
        Some("fixed-1")
    );
    assert_eq!(w.jobs("t0", "hibernate").await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_aborts_dependents_and_completes_the_independent_branch() {
    let w = World::new("besteffort").await.unwrap();
    w.apply(noop_plan(
        "p",
        &[("t0", json!({"fail": "hibernate"})), ("t1", json!({})), ("t2", json!({}))],
        json!({"behavior": {"mode": "BestEffort"},
               "execution": {"strategy": {"type": "DAG", "dependencies": [{"from": "t0", "to": "t1"}]}}}),
    ))
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:50Z", 60.0))
        .unwrap();
    let p = w
        .wait_plan("p", SECS(60), "the operation ended", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(target_state(&p, "t0"), Some(TargetState::Failed));
    assert_eq!(target_state(&p, "t1"), Some(TargetState::Aborted));
    assert_eq!(target_state(&p, "t2"), Some(TargetState::Completed));
    assert!(
        w.jobs("t1", "hibernate").await.unwrap().is_empty(),
        "an aborted target never runs"
    );
    assert_eq!(condition(&p, "Ready"), cond("False", "TargetFailed"));
    assert_eq!(
        condition(&p, "Hibernated"),
        cond("False", "PartiallyHibernated")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_hibernation_finishes_the_cycle_after_restart() {
    let w = World::new("crash").await.unwrap();
    let before = w
        .estate(json!({"rds": ["db-a", "db-b"], "eks": {"eks-1": {"ng-1": [1, 3, 5]}}}))
        .unwrap();
    w.cloud_provider("aws").await.unwrap();
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": "p"},
        "spec": {
            "schedule": {"timezone": "America/New_York", "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
            "execution": {"strategy": {"type": "Sequential"}},
            "targets": [
                {"name": "db-a", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws"}},
                {"name": "db-b", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws"}},
                {"name": "cluster", "type": "eks", "connectorRef": {"kind": "CloudProvider", "name": "aws"}, "parameters": {"clusterName": "eks-1"}},
            ],
        },
    }))
    .await
    .unwrap();
    let opts = ControllerOptions::at("2026-11-27T00:59:00Z", 120.0);
    let started = Instant::now();
    let mut c = w.controller(opts.clone()).unwrap();
    // Kill it as soon as the second target's Job exists.
    hibernator_e2e::world::wait_for(SECS(90), "db-b's runner Job", || async {
        (!w.jobs("db-b", "hibernate").await.ok()?.is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    c.kill();
    tokio::time::sleep(SECS(2)).await;
    // The schedule clock goes on where it was; the controller comes back at the same address
    // (as behind its Service), so the runner that waited for it carries on.
    let mut again = opts.clone();
    again.clock_start = sim_now(&opts, started);
    again.clock_speed = 600.0;
    again.ports = Some(c.ports());
    let c = w.controller(again).unwrap();
    let p = w
        .wait_plan("p", SECS(120), "Hibernated after the restart", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await;
    let p = match p {
        Ok(p) => p,
        Err(e) => panic!("{e:#}\n{}\n{}", c.log(), w.dump().await),
    };
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    // No second Job for a completed target: db-a had finished before the crash. db-b's runner
    // may have failed while the controller was away (no answer, no action) and been retried.
    assert_eq!(
        w.jobs("db-a", "hibernate").await.unwrap().len(),
        1,
        "no second Job for db-a"
    );
    for t in ["db-a", "db-b", "cluster"] {
        let jobs = w.jobs(t, "hibernate").await.unwrap();
        let complete = |j: &k8s_openapi::api::batch::v1::Job| {
            j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
        };
        assert_eq!(
            jobs.iter().filter(|j| complete(j)).count(),
            1,
            "{t} completed once"
        );
        assert!(
            complete(jobs.last().unwrap()),
            "nothing ran for {t} after it completed"
        );
    }
    let data = w.restore_data("p").await.unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["cluster", "db-a", "db-b"],
        "restore data intact"
    );
    let cluster: serde_json::Value = serde_json::from_str(&data["cluster"]).unwrap();
    assert_eq!(
        cluster["resources"]["nodegroup:ng-1"]["state"],
        json!({"minSize": 1, "desiredSize": 3, "maxSize": 5}),
        "the node group's sizes from before the night: {data:?}"
    );
    let asleep = w.snapshot().unwrap();
    assert_eq!(asleep["rds"]["db-a"], "stopped");
    assert_eq!(asleep["nodegroups"]["eks-1/ng-1"], json!([0, 0, 5]));
    w.wait_plan("p", SECS(120), "awake", |p| {
        phase(p) == Some(Phase::Active)
            && p.status
                .as_ref()
                .and_then(|s| s.current_cycle.as_ref())
                .is_some_and(|c| c.operation == Operation::WakeUp)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let after = w.snapshot().unwrap();
    assert_eq!(after["rds"], before["rds"]);
    assert_eq!(after["nodegroups"], before["nodegroups"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_off_hours_it_sleeps_at_once_and_a_missed_wake_up_happens_on_start() {
    let w = World::new("catchup").await.unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    // Saturday noon New York: inside the weekend's sleep.
    let mut c = w
        .controller(ControllerOptions::at("2026-11-28T17:00:00Z", 1.0))
        .unwrap();
    let p = w
        .wait_plan("p", SECS(60), "Hibernated at once", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(
        p.status.unwrap().current_cycle.unwrap().id,
        "20261128t0100",
        "the cycle of the sleep that began Friday 20:00"
    );
    c.kill();
    // The controller was down across Monday 06:00; it comes back at 09:00.
    let c = w
        .controller(ControllerOptions::at("2026-11-30T14:00:00Z", 1.0))
        .unwrap();
    w.wait_plan("p", SECS(60), "awake after the restart", |p| {
        phase(p) == Some(Phase::Active)
            && p.status
                .as_ref()
                .and_then(|s| s.current_cycle.as_ref())
                .is_some_and(|c| c.operation == Operation::WakeUp)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_start_time_moves_the_next_hibernation_and_reverting_moves_it_back() {
    let w = World::new("edit").await.unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    // Wednesday noon New York, real speed: nothing happens but the status.
    let c = w
        .controller(ControllerOptions::at("2026-11-25T17:00:00Z", 1.0))
        .unwrap();
    let next = |p: &hibernator_api::HibernationPlan| {
        p.status
            .as_ref()
            .and_then(|s| s.schedule.as_ref())
            .and_then(|s| s.next_hibernate_at.as_ref())
            .map(|t| t.0.to_string())
    };
    let gen_seen = |p: &hibernator_api::HibernationPlan| {
        p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    };
    let p = w
        .wait_plan("p", SECS(30), "Ready", |p| {
            condition(p, "Ready") == cond("True", "Active") && gen_seen(p)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(next(&p).as_deref(), Some("2026-11-26T01:00:00Z"));
    let window = |start: &str| {
        json!({"spec": {"schedule": {"timezone": "America/New_York",
        "offHours": [{"start": start, "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]}}})
    };
    w.patch_plan("p", window("19:00")).await.unwrap();
    let p = w
        .wait_plan("p", SECS(30), "19:00 taken in", |p| {
            p.metadata.generation == Some(2) && gen_seen(p)
        })
        .await
        .unwrap();
    assert_eq!(next(&p).as_deref(), Some("2026-11-26T00:00:00Z"));
    assert_eq!(condition(&p, "Ready"), cond("True", "Active"));
    w.patch_plan("p", window("20:00")).await.unwrap();
    let p = w
        .wait_plan("p", SECS(30), "20:00 again", |p| {
            p.metadata.generation == Some(3) && gen_seen(p)
        })
        .await
        .unwrap();
    assert_eq!(next(&p).as_deref(), Some("2026-11-26T01:00:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_suspend_until() {
    let w = World::new("suspend").await.unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    w.apply(noop_plan(
        "q",
        &[("t0", json!({}))],
        json!({"suspendUntil": "2026-11-27T01:30:00Z"}),
    ))
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:50Z", 60.0))
        .unwrap();
    w.wait_plan("p", SECS(60), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    // q is suspended until 20:30 New York.
    let q = w.plan("q").await.unwrap();
    assert_eq!(phase(&q), Some(Phase::Suspended));
    assert_eq!(condition(&q, "Ready"), cond("True", "Suspended"));
    assert!(
        w.jobs("t0", "hibernate").await.unwrap().len() == 1,
        "only p hibernated so far"
    );

    // Suspending a hibernated plan wakes it up.
    w.patch_plan("p", json!({"spec": {"suspend": true}}))
        .await
        .unwrap();
    w.wait_plan("p", SECS(60), "Suspended", |p| {
        phase(p) == Some(Phase::Suspended)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    w.patch_plan("p", json!({"spec": {"suspend": null}}))
        .await
        .unwrap();
    w.wait_plan("p", SECS(60), "asleep again after resume", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    // After 20:30, q follows the schedule again.
    w.wait_plan("q", SECS(90), "q hibernated after suspendUntil", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_exceptions_extend_replace_and_suspend_with_lead_time() {
    let w = World::new("exceptions").await.unwrap();
    let exception =
        |name: &str, plan: &str, t: &str, lead: Option<&str>, start: &str, end: &str| {
            let mut e = json!({
                "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
                "kind": "ScheduleException",
                "metadata": {"name": name},
                "spec": {"planRef": {"name": plan}, "type": t,
                         "validFrom": "2026-11-25T05:00:00Z", "validUntil": "2026-11-26T05:00:00Z",
                         "windows": [{"start": start, "end": end, "daysOfWeek": ["WED"]}]},
            });
            if let Some(l) = lead {
                e["spec"]["leadTime"] = json!(l);
            }
            e
        };
    for plan in ["ext", "rep", "sus"] {
        w.apply(noop_plan(plan, &[("t0", json!({}))], json!({})))
            .await
            .unwrap();
    }
    w.apply(exception(
        "more-sleep",
        "ext",
        "extend",
        None,
        "12:00",
        "13:00",
    ))
    .await
    .unwrap();
    w.apply(exception(
        "other-hours",
        "rep",
        "replace",
        None,
        "14:00",
        "15:00",
    ))
    .await
    .unwrap();
    w.apply(exception(
        "late-release",
        "sus",
        "suspend",
        Some("2h"),
        "21:00",
        "23:00",
    ))
    .await
    .unwrap();
    // Wednesday 11:59:30 New York, 60x.
    let c = w
        .controller(ControllerOptions::at("2026-11-25T16:59:30Z", 60.0))
        .unwrap();
    let s = |p: &hibernator_api::HibernationPlan| {
        p.status
            .clone()
            .unwrap_or_default()
            .schedule
            .unwrap_or_default()
    };

    // extend: the extra window sleeps at noon.
    let p = w
        .wait_plan("ext", SECS(60), "asleep in the extra window", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(s(&p).active_exceptions, ["more-sleep"]);
    assert!(
        s(&p)
            .reason
            .unwrap()
            .contains("extend exception \"more-sleep\"")
    );
    // replace: today's windows are the exception's, not the plan's.
    let r = w.plan("rep").await.unwrap();
    assert_eq!(
        s(&r).next_hibernate_at.unwrap().0.to_string(),
        "2026-11-25T19:00:00Z"
    );
    // suspend: the 20:00 hibernation would be undone at 21:00 (within the 2 h lead time), so it
    // does not start; the plan sleeps after the suspension, at 23:00.
    let x = w.plan("sus").await.unwrap();
    assert_eq!(
        s(&x).next_hibernate_at.unwrap().0.to_string(),
        "2026-11-26T04:00:00Z"
    );
    assert_eq!(phase(&x), Some(Phase::Active));
    // The exceptions report their state.
    let exc: Api<hibernator_api::ScheduleException> = Api::namespaced(w.client.clone(), &w.ns);
    let e = exc.get("more-sleep").await.unwrap();
    assert_eq!(
        e.status.unwrap().state,
        Some(hibernator_api::exception::ExceptionState::Active)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_status_invalid_specs_stall_and_missing_connectors_resolve() {
    let w = World::new("kstatus").await.unwrap();
    let mut bad = noop_plan("bad", &[("t0", json!({}))], json!({}));
    bad["spec"]["schedule"]["timezone"] = json!("Mars/Olympus_Mons");
    w.apply(bad).await.unwrap();
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": "waiting"},
        "spec": {"schedule": {"timezone": "UTC", "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
                 "execution": {"strategy": {"type": "Parallel"}},
                 "targets": [{"name": "db", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws-late"}}]},
    }))
    .await
    .unwrap();
    w.apply(noop_plan("good", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    // A K8SCluster applied before its CloudProvider (GitOps applies in any order).
    w.apply(json!({
        "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
        "kind": "K8SCluster",
        "metadata": {"name": "late-cluster"},
        "spec": {"providerRef": {"kind": "CloudProvider", "name": "aws-late"}, "eks": {"name": "eks-late", "region": "us-east-1"}},
    }))
    .await
    .unwrap();
    let created = Instant::now();
    let c = w
        .controller(ControllerOptions::at("2026-11-25T17:00:00Z", 1.0))
        .unwrap();
    let g = w
        .wait_plan("good", SECS(30), "Ready", |p| {
            condition(p, "Ready") == cond("True", "Active")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(
        g.status.as_ref().unwrap().observed_generation,
        g.metadata.generation
    );
    assert!(
        created.elapsed() < SECS(15),
        "Ready within seconds of the controller starting"
    );
    let b = w
        .wait_plan("bad", SECS(30), "Stalled", |p| {
            condition(p, "Stalled") == cond("True", "InvalidSpec")
        })
        .await
        .unwrap();
    let stalled = b
        .status
        .as_ref()
        .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Stalled").cloned())
        .unwrap();
    assert!(
        stalled
            .message
            .contains("spec.schedule.timezone: unknown time zone \"Mars/Olympus_Mons\""),
        "{}",
        stalled.message
    );
    let p = w
        .wait_plan("waiting", SECS(30), "ReferenceNotFound", |p| {
            condition(p, "Ready") == cond("False", "ReferenceNotFound")
        })
        .await
        .unwrap();
    assert_eq!(condition(&p, "Stalled"), None, "within the grace period");
    w.cloud_provider("aws-late").await.unwrap();
    w.wait_plan(
        "waiting",
        SECS(30),
        "Ready once the connector exists",
        |p| condition(p, "Ready") == cond("True", "Active"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
}

/// A plan that never started anything is deleted without a reconcile (it has no finalizer);
/// its per-plan gauge series still go, because the plan watch itself marks the gauges stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awake_plan_deleted_without_a_reconcile_loses_its_gauges() {
    let w = World::new("gauges").await.unwrap();
    w.apply(noop_plan("only", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    // Wednesday noon New York: awake for hours.
    let c = w
        .controller(ControllerOptions::at("2026-11-25T17:00:00Z", 1.0))
        .unwrap();
    let series = format!(
        "hibernator_plan_asleep{{namespace=\"{}\",plan=\"only\"}} 0\n",
        w.ns
    );
    hibernator_e2e::world::wait_for(SECS(60), "the plan's gauge", || async {
        c.metrics().await.ok()?.contains(&series).then_some(())
    })
    .await
    .unwrap();
    let api: Api<hibernator_api::HibernationPlan> = Api::namespaced(w.client.clone(), &w.ns);
    api.delete("only", &DeleteParams::default()).await.unwrap();
    hibernator_e2e::world::wait_for(SECS(30), "the deleted plan's gauge gone", || async {
        (!c.metrics().await.ok()?.contains("plan=\"only\"")).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_hibernated_plan_wakes_it_up_unless_leave() {
    let w = World::new("delete").await.unwrap();
    w.estate(json!({"rds": ["db-wake", "db-leave"]})).unwrap();
    w.cloud_provider("aws").await.unwrap();
    let plan = |name: &str, db: &str, on_delete: &str| {
        json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "HibernationPlan",
            "metadata": {"name": name},
            "spec": {"schedule": {"timezone": "America/New_York", "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
                     "execution": {"strategy": {"type": "Parallel"}},
                     "onDelete": on_delete,
                     "targets": [{"name": db, "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws"}}]},
        })
    };
    w.apply(plan("wake", "db-wake", "WakeUp")).await.unwrap();
    w.apply(plan("leave", "db-leave", "Leave")).await.unwrap();
    w.apply(noop_plan("broken", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    // Sleeps on Sundays from 03:00 to 04:00 only: awake all of this test (Thursday evening
    // and night), it never starts anything.
    let mut sunday = plan("sunday", "db-leave", "WakeUp");
    sunday["spec"]["schedule"]["offHours"] =
        json!([{"start": "03:00", "end": "04:00", "daysOfWeek": ["SUN"]}]);
    w.apply(sunday).await.unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:50Z", 30.0))
        .unwrap();
    let has_finalizer = |p: &hibernator_api::HibernationPlan| {
        p.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == hibernator_api::plan::FINALIZER)
    };
    for p in ["wake", "leave"] {
        let p = w
            .wait_plan(p, SECS(90), "Hibernated", |p| {
                phase(p) == Some(Phase::Hibernated)
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
        assert!(has_finalizer(&p), "{:?}", p.metadata.finalizers);
    }
    // A plan that never started a runner has nothing to wake up: no finalizer, and a deletion
    // is done at once.
    let p = w
        .wait_plan("sunday", SECS(30), "Active", |p| {
            phase(p) == Some(Phase::Active)
        })
        .await
        .unwrap();
    assert!(!has_finalizer(&p), "{:?}", p.metadata.finalizers);
    // The per-plan gauges follow the cache: asleep and awake plans are there, and a deleted
    // plan's series go (checked after the deletions below).
    let series = |plan: &str, value: &str| {
        format!(
            "hibernator_plan_asleep{{namespace=\"{}\",plan=\"{plan}\"}} {value}\n",
            w.ns
        )
    };
    hibernator_e2e::world::wait_for(SECS(30), "plan gauges", || async {
        let m = c.metrics().await.ok()?;
        (m.contains(&series("wake", "1")) && m.contains(&series("sunday", "0"))).then_some(())
    })
    .await
    .unwrap();
    let s = w.snapshot().unwrap();
    assert_eq!(
        (s["rds"]["db-wake"].as_str(), s["rds"]["db-leave"].as_str()),
        (Some("stopped"), Some("stopped"))
    );
    let api: Api<hibernator_api::HibernationPlan> = Api::namespaced(w.client.clone(), &w.ns);
    api.delete("leave", &DeleteParams::default()).await.unwrap();
    api.delete("wake", &DeleteParams::default()).await.unwrap();
    api.delete("sunday", &DeleteParams::default())
        .await
        .unwrap();
    for gone in ["leave", "sunday"] {
        hibernator_e2e::world::wait_for(SECS(10), &format!("plan {gone} gone at once"), || async {
            api.get_opt(gone).await.ok()?.is_none().then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    }
    assert!(
        api.get_opt("wake").await.unwrap().is_some(),
        "plan wake waits for its wake-up"
    );
    hibernator_e2e::world::wait_for(SECS(120), "plan wake gone after waking up", || async {
        api.get_opt("wake").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let s = w.snapshot().unwrap();
    assert_eq!(
        s["rds"]["db-wake"], "available",
        "woken before the plan went"
    );
    assert_eq!(s["rds"]["db-leave"], "stopped", "Leave leaves it asleep");
    hibernator_e2e::world::wait_for(SECS(30), "gauges of deleted plans gone", || async {
        let m = c.metrics().await.ok()?;
        (!m.lines().any(|l| {
            l.starts_with("hibernator_plan_")
                && (l.contains("plan=\"sunday\"") || l.contains("plan=\"wake\""))
        }))
        .then_some(())
    })
    .await
    .unwrap();
    assert!(
        !w.restore_data("leave").await.unwrap().is_empty(),
        "Leave keeps the restore data"
    );
}

/// Issue "wake on demand, target-scoped exceptions and holiday calendars", acceptance: a
/// holiday on a weekday keeps the plan asleep all day and wakes it the next working morning; a
/// malformed calendar is a clear error in the exception's status and changes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekday_holiday_sleeps_all_day_and_a_broken_calendar_changes_nothing() {
    let w = World::new("holidays").await.unwrap();
    let calendar = |name: &str, ics: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"holidays.ics": ics},
        })
    };
    let exception = |name: &str, plan: &str, cm: &str| {
        json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "ScheduleException",
            "metadata": {"name": name},
            "spec": {"planRef": {"name": plan}, "type": "extend",
                     "validFrom": "2026-11-01T00:00:00Z", "validUntil": "2027-01-01T00:00:00Z",
                     "calendarRef": {"name": cm, "key": "holidays.ics"}},
        })
    };
    w.apply(calendar(
        "us-holidays",
        "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261126\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH\nSUMMARY:Thanksgiving\nEND:VEVENT\nEND:VCALENDAR\n",
    ))
    .await
    .unwrap();
    w.apply(calendar(
        "broken",
        "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nSUMMARY:Offsite\nDTSTART:20261126T090000Z\nEND:VEVENT\nEND:VCALENDAR\n",
    ))
    .await
    .unwrap();
    for plan in ["hol", "bad"] {
        w.apply(noop_plan(plan, &[("t0", json!({}))], json!({})))
            .await
            .unwrap();
    }
    w.apply(exception("holidays", "hol", "us-holidays"))
        .await
        .unwrap();
    w.apply(exception("broken", "bad", "broken")).await.unwrap();

    // Thursday 2026-11-26 (Thanksgiving) 05:00 New York, inside Wednesday night's off-hours;
    // 1200x: a simulated day is 72 real seconds.
    let c = w
        .controller(ControllerOptions::at("2026-11-26T10:00:00Z", 1200.0))
        .unwrap();
    let wake_at = |p: &hibernator_api::HibernationPlan| {
        p.status
            .as_ref()
            .and_then(|s| s.schedule.as_ref())
            .and_then(|s| s.next_wake_up_at.as_ref())
            .map(|t| t.0.to_string())
    };
    // The holiday plan sleeps through Thursday: its wake-up is Friday 06:00, not Thursday's.
    let p = w
        .wait_plan("hol", SECS(120), "hibernated until Friday", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(wake_at(&p).as_deref(), Some("2026-11-27T11:00:00Z"));
    // The broken calendar: its exception says why (ConfigMap, key, line), its plan keeps its
    // own schedule (wakes on Thursday, once its hibernation is done).
    let exc: Api<hibernator_api::ScheduleException> = Api::namespaced(w.client.clone(), &w.ns);
    let deadline = Instant::now() + SECS(120);
    let message = loop {
        let e = exc.get("broken").await.unwrap();
        let ready = e
            .status
            .as_ref()
            .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Ready").cloned());
        if let Some(r) = ready.filter(|r| r.status == "False") {
            assert_eq!(r.reason, "InvalidSpec");
            break r.message;
        }
        assert!(
            Instant::now() < deadline,
            "no Ready=False on the broken exception\n{}",
            c.log()
        );
        tokio::time::sleep(SECS(1)).await;
    };
    assert!(
        message.contains("ConfigMap broken key holidays.ics: line 5: event \"Offsite\": DTSTART 20261126T090000Z is not a date"),
        "{message}"
    );
    let good = exc.get("holidays").await.unwrap();
    assert_eq!(
        good.status.unwrap().state,
        Some(hibernator_api::exception::ExceptionState::Active)
    );
    let bad = w
        .wait_plan("bad", SECS(240), "awake on Thursday morning", |p| {
            phase(p) == Some(Phase::Active)
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.history.iter().any(|h| h.wake_up.is_some()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let woke = bad.status.unwrap().history[0].wake_up.clone().unwrap();
    assert!(
        woke.started_at.0.to_string().as_str() < "2026-11-27T05:00:00Z",
        "the plan with the broken calendar woke at {}, not on Thursday (its own schedule)",
        woke.started_at.0
    );
    // Meanwhile the holiday plan is still asleep on Thursday and says why.
    let p = w.plan("hol").await.unwrap();
    assert_eq!(phase(&p), Some(Phase::Hibernated), "{}", c.log());
    let reason = p
        .status
        .unwrap()
        .schedule
        .unwrap()
        .reason
        .unwrap_or_default();
    assert!(
        reason.contains("holiday \"Thanksgiving\" (2026-11-26)"),
        "{reason}"
    );
    // Friday 06:00 New York: the next working morning, it wakes up.
    let p = w
        .wait_plan("hol", SECS(360), "awake on Friday morning", |p| {
            phase(p) == Some(Phase::Active)
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.history.iter().any(|h| h.wake_up.is_some()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let woke = p.status.unwrap().history[0].wake_up.clone().unwrap();
    assert!(
        woke.started_at.0.to_string().as_str() >= "2026-11-27T11:00:00Z",
        "woke at {}, before Friday 06:00 New York",
        woke.started_at.0
    );
}
