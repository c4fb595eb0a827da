//! A plan partly awake: `kubectl hibernator wake PLAN --target T` on a hibernated plan shaped
//! like the seed's (RDS, EKS node groups, EC2 on moto) wakes the target and what it needs, in
//! wake-up order, while the rest sleeps on; at the exception's end they sleep again in
//! hibernation order. An exception naming a target the plan does not have is reported on the
//! exception and changes nothing.

use std::time::{Duration, Instant};

use hibernator_api::common::find_condition;
use hibernator_api::plan::{HibernationPlan, Phase, TargetStatus};
use hibernator_e2e::world::{ControllerOptions, World, phase, sim_now};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

const PLAN: &str = "prod-offhours";

/// The seed's plan with its dependency turned around (the cluster sleeps before the database
/// and wakes after it, so the cluster needs the database), and EC2 instances beside them.
fn plan() -> Value {
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": PLAN},
        "spec": {
            "schedule": {"timezone": "America/New_York",
                         "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
            "execution": {"strategy": {"type": "DAG", "maxConcurrency": 2,
                                       "dependencies": [{"from": "prod-cluster", "to": "prod-db"}]}},
            "targets": [
                {"name": "prod-db", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
                 "parameters": {"snapshotBeforeStop": false}},
                {"name": "prod-cluster", "type": "eks", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
                 "parameters": {"clusterName": "eks-prod", "nodeGroups": [{"name": "default-ng"}]}},
                {"name": "prod-vms", "type": "ec2", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
                 "parameters": {"selector": {"tags": {"env": "prod"}}}},
            ],
        },
    })
}

fn condition(p: &HibernationPlan, t: &str) -> Option<(String, String)> {
    p.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, t))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn target<'a>(p: &'a HibernationPlan, name: &str) -> &'a TargetStatus {
    p.status
        .as_ref()
        .and_then(|s| s.targets.iter().find(|t| t.name == name))
        .unwrap_or_else(|| panic!("no status of target {name}: {:?}", p.status))
}

/// (creation, completion) of every Job of `target` and `operation`, oldest first.
async fn jobs_of(jobs: &Api<Job>, target: &str, operation: &str) -> Vec<(Timestamp, Timestamp)> {
    let list = jobs
        .list(&ListParams::default().labels(&format!(
            "hibernator.ardikasaputro.io/target={target},hibernator.ardikasaputro.io/operation={operation}"
        )))
        .await
        .unwrap();
    let mut out: Vec<(Timestamp, Timestamp)> = list
        .items
        .iter()
        .map(|j| {
            let created = j.metadata.creation_timestamp.clone().unwrap().0;
            let done = j
                .status
                .as_ref()
                .and_then(|s| s.completion_time.clone())
                .map(|t| t.0)
                .unwrap_or_else(|| panic!("the {operation} Job of {target} completed"));
            (created, done)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_one_target_with_what_it_needs_and_sleep_again_in_order() {
    let w = World::new("partial").await.unwrap();
    let before = w
        .estate(json!({"rds": ["prod-db"],
                       "eks": {"prod-eks-1": {"default-ng": [1, 2, 3]}},
                       "ec2": [{"name": "vm-1", "tags": {"env": "prod"}, "running": true}]}))
        .unwrap();
    w.cloud_provider("aws-prod").await.unwrap();
    w.eks_cluster("eks-prod", "aws-prod", "prod-eks-1")
        .await
        .unwrap();
    w.apply(plan()).await.unwrap();
    // From Git, with a typo: it would keep "prod-dbb" awake all night, but the plan has no
    // such target, so it is reported and ignored.
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "ScheduleException",
        "metadata": {"name": "typo"},
        "spec": {"planRef": {"name": PLAN}, "type": "suspend", "targets": ["prod-dbb"],
                 "validFrom": "2026-11-26T00:00:00Z", "validUntil": "2026-11-28T00:00:00Z",
                 "windows": [{"start": "00:00", "end": "23:59", "daysOfWeek": ["THU", "FRI"]}]},
    }))
    .await
    .unwrap();

    // Thursday 19:59 New York, 60x: the two simulated hours of the wake take two real minutes.
    let opts = ControllerOptions::at("2026-11-27T00:59:00Z", 60.0);
    let started = Instant::now();
    let c = w.controller(opts.clone()).unwrap();
    let report = |e: anyhow::Error| format!("{e:#}\n--- controller log:\n{}", c.log());
    let p = w
        .wait_plan(PLAN, Duration::from_secs(150), "Hibernated", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .map_err(report)
        .unwrap();
    let generation = p.metadata.generation;
    let night = p.status.as_ref().unwrap().current_cycle.clone().unwrap().id;
    let asleep = w.snapshot().unwrap();
    assert_eq!(asleep["rds"]["prod-db"], "stopped", "{asleep}");
    assert_eq!(asleep["ec2"]["vm-1"], "stopped", "{asleep}");
    assert_eq!(
        asleep["nodegroups"]["prod-eks-1/default-ng"],
        json!([0, 0, 3])
    );

    let exc: Api<hibernator_api::ScheduleException> = Api::namespaced(w.client.clone(), &w.ns);
    let typo = exc.get("typo").await.unwrap();
    let ready = typo
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .cloned()
        .expect("the exception has a Ready condition");
    assert_eq!(ready.status, "False", "{ready:?}");
    assert!(
        ready
            .message
            .contains("spec.targets: \"prod-dbb\" is not a target of plan prod-offhours")
            && ready.message.contains("prod-db, prod-cluster, prod-vms"),
        "{}",
        ready.message
    );

    let (ok, text) = w.cli(&["wake", PLAN, "--target", "prod-clustr", "--for", "2h"]);
    assert!(
        !ok && text.contains("--target \"prod-clustr\" is not a target of plan prod-offhours"),
        "{text}"
    );
    let from = sim_now(&opts, started).to_string();
    let (ok, text) = w.cli(&[
        "wake",
        PLAN,
        "--target",
        "prod-cluster",
        "--from",
        &from,
        "--for",
        "2h",
        "--reason",
        "debug a node",
    ]);
    assert!(ok, "{text}");

    // The database, then the cluster; the instances sleep on.
    let p = w
        .wait_plan(PLAN, Duration::from_secs(100), "PartlyAwake", |p| {
            phase(p) == Some(Phase::PartlyAwake)
        })
        .await
        .map_err(report)
        .unwrap();
    assert_eq!(p.metadata.generation, generation, "the spec is not touched");
    assert_eq!(
        condition(&p, "Ready"),
        Some(("True".into(), "PartlyAwake".into())),
        "{:?}",
        p.status
    );
    assert_ne!(condition(&p, "Stalled").map(|c| c.0), Some("True".into()));
    let cycle = p.status.as_ref().unwrap().current_cycle.clone().unwrap();
    assert_eq!(cycle.operation, hibernator_api::Operation::WakeUp);
    assert_eq!(cycle.id, night, "the wake-up ends the night's cycle");
    assert_eq!(cycle.targets, ["prod-db", "prod-cluster"], "{cycle:?}");
    let db = target(&p, "prod-db").schedule_override.clone();
    assert_eq!(db.as_deref(), Some("awake: needed by prod-cluster"));
    let cluster = target(&p, "prod-cluster").schedule_override.clone();
    assert!(
        cluster
            .as_deref()
            .is_some_and(|o| o.starts_with("awake: ScheduleException prod-offhours-wake-")),
        "{cluster:?}"
    );
    let vms = target(&p, "prod-vms");
    assert_eq!(vms.schedule_override, None);
    assert_eq!(vms.operation, Some(hibernator_api::Operation::Hibernate));
    let jobs: Api<Job> = Api::namespaced(w.client.clone(), &w.ns);
    let db_woken = jobs_of(&jobs, "prod-db", "wakeUp").await;
    let cluster_woken = jobs_of(&jobs, "prod-cluster", "wakeUp").await;
    assert_eq!((db_woken.len(), cluster_woken.len()), (1, 1));
    assert!(
        cluster_woken[0].0 >= db_woken[0].1,
        "prod-cluster woke only after prod-db: {db_woken:?} {cluster_woken:?}"
    );
    assert!(jobs_of(&jobs, "prod-vms", "wakeUp").await.is_empty());
    let partly = w.snapshot().unwrap();
    assert_eq!(partly["rds"], before["rds"], "{partly}");
    assert_eq!(partly["nodegroups"], before["nodegroups"], "{partly}");
    assert_eq!(partly["ec2"]["vm-1"], "stopped", "{partly}");

    let (ok, text) = w.cli(&["status", PLAN]);
    assert!(ok, "{text}");
    assert!(text.contains("PartlyAwake"), "{text}");
    assert!(
        text.contains(&format!("cycle {night} wakeUp of prod-db, prod-cluster")),
        "{text}"
    );
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_string()
    };
    assert!(
        line("prod-db ").contains(" awake ")
            && line("prod-db ").contains("[awake: needed by prod-cluster]"),
        "{text}"
    );
    assert!(line("prod-vms").contains(" asleep "), "{text}");

    // Two hours later the night goes on: the cluster, then the database, back to sleep.
    let p = w
        .wait_plan(PLAN, Duration::from_secs(240), "Hibernated again", |p| {
            phase(p) == Some(Phase::Hibernated)
                && p.status
                    .as_ref()
                    .and_then(|s| s.current_cycle.as_ref())
                    .is_some_and(|c| c.id != night && c.finished_at.is_some())
        })
        .await
        .map_err(report)
        .unwrap();
    assert_eq!(
        p.status
            .as_ref()
            .unwrap()
            .current_cycle
            .as_ref()
            .unwrap()
            .targets,
        ["prod-db", "prod-cluster"]
    );
    for t in ["prod-db", "prod-cluster", "prod-vms"] {
        assert_eq!(target(&p, t).schedule_override, None, "{t}");
    }
    let db_slept = jobs_of(&jobs, "prod-db", "hibernate").await;
    let cluster_slept = jobs_of(&jobs, "prod-cluster", "hibernate").await;
    assert_eq!((db_slept.len(), cluster_slept.len()), (2, 2));
    assert!(
        db_slept[1].0 >= cluster_slept[1].1,
        "prod-db slept again only after prod-cluster: {db_slept:?} {cluster_slept:?}"
    );
    assert_eq!(jobs_of(&jobs, "prod-vms", "hibernate").await.len(), 1);
    let again = w.snapshot().unwrap();
    assert_eq!(again["rds"]["prod-db"], "stopped", "{again}");
    assert_eq!(
        again["nodegroups"]["prod-eks-1/default-ng"],
        json!([0, 0, 3])
    );
    assert_eq!(again["ec2"]["vm-1"], "stopped", "{again}");
}
