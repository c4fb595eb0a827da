//! The morning guarantee end to end (issue "The morning guarantee", paths 1-8): every target
//! is back after the night, or the plan says so loudly. Real control plane, real controller
//! and runner pods, moto (behind a fault proxy where AWS must refuse something).

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_api::{Operation, TargetState};
use hibernator_e2e::world::{
    ControllerOptions, ControllerProcess, World, cond, condition, noop_plan, phase, target_state,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use moto_server::{Fault, FaultAction, FaultProxy};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// Thursday 19:59:50 New York: the night of cycle 20261127t0100 begins ten seconds later.
const THURSDAY_EVENING: &str = "2026-11-27T00:59:50Z";

/// `kubectl-hibernator ARGS`, which must succeed.
fn cli(w: &World, args: &[&str]) -> String {
    let (ok, text) = w.cli(args);
    assert!(ok, "kubectl-hibernator {args:?}: {text}");
    text
}

/// Starts a controller for plan `p` and waits until the plan is asleep.
async fn hibernated(w: &World, opts: ControllerOptions) -> ControllerProcess {
    let c = w.controller(opts).unwrap();
    w.wait_plan("p", SECS(60), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    c
}

fn restored_message(p: &hibernator_api::HibernationPlan) -> String {
    p.status
        .as_ref()
        .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Restored"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn events(w: &World, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(w.client.clone(), &w.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

fn rds_plan(
    name: &str,
    targets: &[(&str, &[&str])],
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut spec = json!({
        "schedule": {"timezone": "America/New_York",
                     "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
        "execution": {"strategy": {"type": "Parallel"}},
        "targets": targets.iter().map(|(t, ids)| json!({
            "name": t, "type": "rds",
            "connectorRef": {"kind": "CloudProvider", "name": "aws"},
            "parameters": {"selector": {"instanceIds": ids}},
        })).collect::<Vec<_>>(),
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Path 1: a runner Job deleted by hand, and a Job name taken by a foreign Job, are failed
/// attempts: retried under the plan's policy, with an Event, and the night completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_and_foreign_runner_jobs_are_failed_attempts_that_are_retried() {
    let w = World::new("lostjob").await.unwrap();
    w.apply(noop_plan(
        "p",
        &[("slow", json!({"delaySeconds": 6})), ("taken", json!({}))],
        json!({}),
    ))
    .await
    .unwrap();
    // A Job of someone else's already has the name of `taken`'s first runner Job.
    let jobs: Api<Job> = Api::namespaced(w.client.clone(), &w.ns);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "p-taken-h-20261127t0100-1"},
            "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "somebody/else:1"}]}}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    // 60x: the first retry comes a (schedule) minute after the failure, a second later.
    let c = w
        .controller(ControllerOptions::at(THURSDAY_EVENING, 60.0))
        .unwrap();
    hibernator_e2e::world::wait_for(SECS(90), "slow's runner Job", || async {
        (!w.jobs("slow", "hibernate").await.ok()?.is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    // Deleted by hand while its runner works.
    jobs.delete("p-slow-h-20261127t0100-1", &DeleteParams::background())
        .await
        .unwrap();
    let p = w
        .wait_plan("p", SECS(120), "Hibernated after the retries", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    let attempts = |t: &str| {
        p.status
            .as_ref()
            .unwrap()
            .targets
            .iter()
            .find(|s| s.name == t)
            .unwrap()
            .attempts
    };
    assert_eq!(attempts("slow"), 2, "the lost attempt counted");
    assert_eq!(
        attempts("taken"),
        2,
        "the taken name counted as a failed attempt"
    );
    let lost = events(&w, "RunnerJobLost").await;
    assert!(
        lost.iter()
            .any(|n| n.contains("p-slow-h-20261127t0100-1") && n.contains("no longer exists")),
        "{lost:?}"
    );
    assert!(
        lost.iter()
            .any(|n| n.contains("p-taken-h-20261127t0100-1") && n.contains("not this plan's")),
        "{lost:?}"
    );
    // The foreign Job is left alone.
    let foreign = jobs.get("p-taken-h-20261127t0100-1").await.unwrap();
    assert_eq!(foreign.spec.unwrap().suspend, Some(true));
}

/// Path 2: restore data lost (a key edited away, then the whole ConfigMap pruned) while asleep
/// is reported at once; the wake-up leaves those resources as they are and says so; it stays
/// so until acknowledged with the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_restore_data_is_reported_at_once_and_until_acknowledged() {
    let w = World::new("lostdata").await.unwrap();
    w.estate(json!({"rds": ["db-a", "db-b"]})).unwrap();
    w.cloud_provider("aws").await.unwrap();
    w.apply(rds_plan(
        "p",
        &[("a", &["db-a"]), ("b", &["db-b"])],
        json!({}),
    ))
    .await
    .unwrap();
    // 600x: the night (ten hours) takes a minute.
    let c = hibernated(&w, ControllerOptions::at(THURSDAY_EVENING, 600.0)).await;
    let cms: Api<ConfigMap> = Api::namespaced(w.client.clone(), &w.ns);
    let name = hibernator_api::naming::restore_config_map("p");
    // Someone edits target a's records away.
    cms.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"a": null}})),
    )
    .await
    .unwrap();
    let p = w
        .wait_plan("p", SECS(20), "Restored=False for a", |p| {
            condition(p, "Restored") == cond("False", "RestoreDataMissing")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(
        phase(&p),
        Some(Phase::Hibernated),
        "noticed during the night"
    );
    assert_eq!(condition(&p, "Ready"), cond("False", "RestoreDataMissing"));
    assert_eq!(condition(&p, "Stalled"), cond("True", "RestoreDataMissing"));
    let msg = restored_message(&p);
    assert!(
        msg.contains("a: instance:db-a") && !msg.contains("b: instance:db-b"),
        "{msg}"
    );
    // Then a GitOps prune deletes the whole ConfigMap.
    cms.delete(&name, &DeleteParams::default()).await.unwrap();
    let p = w
        .wait_plan("p", SECS(20), "Restored=False naming b too", |p| {
            restored_message(p).contains("b: instance:db-b")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert!(restored_message(&p).contains("a: instance:db-a"));
    assert!(!events(&w, "RestoreDataMissing").await.is_empty());

    // The morning: nothing can be woken up, and the plan says so.
    let p = w
        .wait_plan("p", SECS(90), "the wake-up ended", |p| {
            phase(p) == Some(Phase::Active)
                && p.status
                    .as_ref()
                    .unwrap()
                    .current_cycle
                    .as_ref()
                    .unwrap()
                    .operation
                    == Operation::WakeUp
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(target_state(&p, "a"), Some(TargetState::Skipped));
    let a = p
        .status
        .as_ref()
        .unwrap()
        .targets
        .iter()
        .find(|t| t.name == "a")
        .unwrap();
    assert!(
        a.message
            .as_deref()
            .unwrap()
            .contains("restore data missing"),
        "{a:?}"
    );
    assert_eq!(
        (a.resources_recorded, a.resources_restored),
        (Some(1), Some(0))
    );
    assert_eq!(
        condition(&p, "Restored"),
        cond("False", "RestoreDataMissing")
    );
    assert_eq!(condition(&p, "Ready"), cond("False", "RestoreDataMissing"));
    let s = w.snapshot().unwrap();
    assert_eq!(
        s["rds"],
        json!({"db-a": "stopped", "db-b": "stopped"}),
        "left as they are"
    );

    // A person looks, starts the databases by hand, and acknowledges.
    let text = cli(&w, &["status", "p"]);
    assert!(
        text.contains("Restored=False (RestoreDataMissing)"),
        "{text}"
    );
    let text = cli(&w, &["restore", "p", "--acknowledge"]);
    assert!(text.contains("acknowledged"), "{text}");
    let p = w
        .wait_plan("p", SECS(20), "acknowledged", |p| {
            condition(p, "Restored") == cond("True", "Acknowledged")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(condition(&p, "Ready"), cond("True", "Active"));
    assert_eq!(condition(&p, "Stalled"), None);
    assert!(!events(&w, "RestoreAcknowledged").await.is_empty());
}

/// Path 3 (and 5): a wake-up that does not find a recorded resource (the CloudProvider now
/// names another region) reports it, keeps its record and counts what it restored; once the
/// connector is fixed a retry wakes it up and the plan is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_not_found_keeps_its_record_until_a_retry_finds_it() {
    let w = World::new("notfound").await.unwrap();
    w.estate(json!({"rds": ["db-a"]})).unwrap();
    w.cloud_provider("aws").await.unwrap();
    w.apply(rds_plan("p", &[("db", &["db-a"])], json!({})))
        .await
        .unwrap();
    let c = hibernated(&w, ControllerOptions::at(THURSDAY_EVENING, 600.0)).await;
    // Someone points the CloudProvider at another region while the database sleeps.
    let region = |r: &str| {
        json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "CloudProvider",
            "metadata": {"name": "aws"},
            "spec": {"type": "aws", "aws": {"accountId": moto_server::ACCOUNT_ID, "region": r,
                     "auth": {"static": {"secretRef": {"name": "aws-keys"}}}}},
        })
    };
    w.apply(region("us-west-2")).await.unwrap();
    let p = w
        .wait_plan("p", SECS(90), "Restored=False after the wake-up", |p| {
            condition(p, "Restored") == cond("False", "ResourceNotFound")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", c.log(), ""));
    assert_eq!(phase(&p), Some(Phase::Active));
    assert_eq!(condition(&p, "Ready"), cond("False", "ResourceNotFound"));
    assert!(
        restored_message(&p).contains("db: instance:db-a"),
        "{}",
        restored_message(&p)
    );
    let t = &p.status.as_ref().unwrap().targets[0];
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(1), Some(0))
    );
    assert_eq!(
        t.state,
        TargetState::Completed,
        "a retry cannot bring back what is not there"
    );
    assert!(
        w.restore_data("p").await.unwrap().contains_key("db"),
        "the record is kept"
    );
    assert_eq!(w.snapshot().unwrap()["rds"]["db-a"], "stopped");
    let shown = cli(&w, &["restore", "p"]);
    assert!(
        shown.contains("instance:db-a: not found by the wake-up"),
        "{shown}"
    );

    // Fixed, and retried on request: the database is woken up.
    w.apply(region("us-east-1")).await.unwrap();
    cli(&w, &["retry", "p"]);
    let p = match w
        .wait_plan("p", SECS(60), "Restored=True after the retry", |p| {
            condition(p, "Restored") == cond("True", "Restored")
        })
        .await
    {
        Ok(p) => p,
        Err(e) => panic!("{e:#}\n{}\n{}", c.log(), w.dump().await),
    };
    assert_eq!(condition(&p, "Ready"), cond("True", "Active"));
    let t = &p.status.as_ref().unwrap().targets[0];
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(1), Some(1))
    );
    assert_eq!(w.snapshot().unwrap()["rds"]["db-a"], "available");
    assert!(w.restore_data("p").await.unwrap().is_empty());
}

/// Path 4 (and 5): AWS refuses to start one database of three: the other two are started, the
/// target fails naming it, retries are spent, and the plan says which resource is asleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_resource_that_cannot_be_started_does_not_keep_its_siblings_asleep() {
    let w = World::new("onebad").await.unwrap();
    w.estate(json!({"rds": ["db-a", "db-b", "db-c"]})).unwrap();
    w.cloud_provider("aws").await.unwrap();
    w.apply(rds_plan(
        "p",
        &[("dbs", &["db-a", "db-b", "db-c"])],
        json!({"behavior": {"retries": 1}}),
    ))
    .await
    .unwrap();
    let proxy = FaultProxy::start(w.moto.endpoint()).unwrap();
    let mut opts = ControllerOptions::at(THURSDAY_EVENING, 600.0);
    opts.aws_endpoint = Some(proxy.endpoint());
    let c = hibernated(&w, opts).await;
    proxy.add(Fault::new(
        &["Action=StartDBInstance", "DBInstanceIdentifier=db-a"],
        FaultAction::query_error(400, "InvalidDBInstanceState", "db-a cannot be started now"),
    ));
    let p = w
        .wait_plan("p", SECS(120), "the wake-up gave up", |p| {
            condition(p, "Stalled") == cond("True", "RetriesExhausted")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let s = w.snapshot().unwrap();
    assert_eq!(
        s["rds"],
        json!({"db-a": "stopped", "db-b": "available", "db-c": "available"})
    );
    assert_eq!(
        condition(&p, "Restored"),
        cond("False", "RestoreIncomplete")
    );
    let msg = restored_message(&p);
    assert!(
        msg.contains("dbs: instance:db-a") && msg.contains("InvalidDBInstanceState"),
        "{msg}"
    );
    assert!(!msg.contains("db-b") && !msg.contains("db-c"), "{msg}");
    let t = &p.status.as_ref().unwrap().targets[0];
    assert_eq!(t.state, TargetState::Failed);
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(3), Some(2))
    );
    assert!(!proxy.applied().is_empty());

    // AWS recovers; a retry finishes the job.
    proxy.clear();
    cli(&w, &["retry", "p"]);
    let p = w
        .wait_plan("p", SECS(60), "whole again", |p| {
            condition(p, "Restored") == cond("True", "Restored")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(condition(&p, "Ready"), cond("True", "Active"));
    let t = &p.status.as_ref().unwrap().targets[0];
    assert_eq!(
        (t.resources_recorded, t.resources_restored),
        (Some(3), Some(3))
    );
    assert_eq!(w.snapshot().unwrap()["rds"]["db-a"], "available");
}

/// Path 2 (renames): a target renamed in Git while asleep leaves its records orphaned; the
/// plan says so, the CLI shows them, and an acknowledgement keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_renamed_while_asleep_is_reported_and_its_records_kept() {
    let w = World::new("renamed").await.unwrap();
    w.apply(noop_plan(
        "p",
        &[("t0", json!({})), ("t1", json!({}))],
        json!({}),
    ))
    .await
    .unwrap();
    let c = hibernated(&w, ControllerOptions::at(THURSDAY_EVENING, 60.0)).await;
    w.patch_plan(
        "p",
        json!({"spec": {"targets": [{"name": "t0", "type": "noop", "parameters": {}},
                                     {"name": "t9", "type": "noop", "parameters": {}}]}}),
    )
    .await
    .unwrap();
    let p = w
        .wait_plan("p", SECS(30), "TargetRemovedWhileAsleep", |p| {
            condition(p, "Restored") == cond("False", "TargetRemovedWhileAsleep")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert!(
        restored_message(&p).contains("t1 (noop:t1)"),
        "{}",
        restored_message(&p)
    );
    let shown = cli(&w, &["restore", "p"]);
    assert!(shown.contains("t1: (orphaned"), "{shown}");
    cli(&w, &["restore", "p", "--acknowledge"]);
    w.wait_plan("p", SECS(30), "acknowledged", |p| {
        condition(p, "Restored") == cond("True", "Acknowledged")
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let data = w.restore_data("p").await.unwrap();
    assert!(
        data["t1"].contains("\"acknowledged\":true"),
        "kept, acknowledged: {data:?}"
    );
}

/// Path 6: a plan that would scale the controller's own Deployment, or the node group of its
/// node, is refused before anything changes; an empty selector is refused as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_that_would_put_the_controller_to_sleep_are_refused() {
    let w = World::new("selfguard").await.unwrap();
    w.cloud_provider("aws").await.unwrap();
    w.apply(json!({
        "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
        "kind": "K8SCluster",
        "metadata": {"name": "here"},
        "spec": {"k8s": {"inCluster": true}},
    }))
    .await
    .unwrap();
    // The controller's Deployment, as the chart labels it.
    w.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hibernator", "labels": {"app.kubernetes.io/name": "hibernator"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "ctl"}},
                 "template": {"metadata": {"labels": {"app": "ctl"}},
                              "spec": {"containers": [{"name": "c", "image": "not/pulled:1"}]}}},
    }))
    .await
    .unwrap();
    let schedule = json!({"timezone": "America/New_York",
        "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]});
    let plan = |name: &str, target: serde_json::Value| {
        json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "HibernationPlan",
            "metadata": {"name": name},
            "spec": {"schedule": schedule, "execution": {"strategy": {"type": "Parallel"}},
                     "targets": [target]},
        })
    };
    w.apply(plan(
        "apps",
        json!({"name": "apps", "type": "workloads",
        "connectorRef": {"kind": "K8SCluster", "name": "here"},
        "parameters": {"namespaces": [w.ns]}}),
    ))
    .await
    .unwrap();
    w.apply(plan(
        "nodes",
        json!({"name": "nodes", "type": "eks",
        "connectorRef": {"kind": "CloudProvider", "name": "aws"},
        "parameters": {"clusterName": "eks-1", "nodeGroups": [{"name": format!("ng-{}", w.ns)}]}}),
    ))
    .await
    .unwrap();
    w.apply(plan(
        "everything",
        json!({"name": "all", "type": "workloads",
        "connectorRef": {"kind": "K8SCluster", "name": "here"},
        "parameters": {"namespaceSelector": {}}}),
    ))
    .await
    .unwrap();
    // The node the controller runs on belongs to a node group of this test's own name.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(w.client.clone());
    let node = nodes.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"eks.amazonaws.com/nodegroup": format!("ng-{}", w.ns)}}})),
        )
        .await
        .unwrap();
    let mut opts = ControllerOptions::at(THURSDAY_EVENING, 60.0);
    opts.extra_args = vec![
        format!("--self-namespace={}", w.ns),
        "--self-labels=app.kubernetes.io/name=hibernator,app.kubernetes.io/component=controller"
            .into(),
        format!("--node-name={node}"),
    ];
    let c = w.controller(opts).unwrap();
    for (name, target) in [("apps", "apps"), ("nodes", "nodes")] {
        let p = w
            .wait_plan(name, SECS(60), "refused", |p| {
                condition(p, "Stalled") == cond("True", "SelfHibernation")
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
        let msg = p
            .status
            .as_ref()
            .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Ready"))
            .unwrap()
            .message
            .clone();
        assert!(msg.contains(&format!("target {target}")), "{msg}");
        assert_eq!(condition(&p, "Ready").unwrap().1, "SelfHibernation");
        assert!(
            w.jobs(target, "hibernate").await.unwrap().is_empty(),
            "nothing started"
        );
    }
    let p = w
        .wait_plan("everything", SECS(30), "invalid", |p| {
            condition(p, "Stalled") == cond("True", "InvalidSpec")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let msg = &p.status.as_ref().unwrap().conditions[0].message;
    assert!(
        msg.contains("spec.targets[0].parameters.namespaceSelector"),
        "{msg}"
    );
    // Still one replica.
    let d: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(w.client.clone(), &w.ns);
    assert_eq!(
        d.get("hibernator").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
}

/// Path 7: a runner pod evicted (node drain) is replaced by the Job without using up the
/// plan's retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_runner_pod_is_replaced_without_counting_as_a_failure() {
    let w = World::new("evict").await.unwrap();
    w.apply(noop_plan(
        "p",
        &[("t0", json!({"delaySeconds": 8}))],
        json!({"behavior": {"retries": 0}}),
    ))
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at(THURSDAY_EVENING, 60.0))
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &w.ns);
    let selector = "job-name=p-t0-h-20261127t0100-1";
    let first = w
        .running_pod(selector, SECS(90))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let name = first.metadata.name.clone().unwrap();
    pods.evict(&name, &Default::default()).await.unwrap();
    let p = match w
        .wait_plan("p", SECS(90), "Hibernated", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
    {
        Ok(p) => p,
        Err(e) => panic!("{e:#}\n{}\n{}", c.log(), w.dump().await),
    };
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    let t = &p.status.as_ref().unwrap().targets[0];
    assert_eq!(t.attempts, 1, "no retry used");
    assert_eq!(w.jobs("t0", "hibernate").await.unwrap().len(), 1);
    let all = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    let names: Vec<String> = all
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        names.iter().any(|n| *n != name),
        "a replacement of {name} ran: {names:?}"
    );
    let job = w.jobs("t0", "hibernate").await.unwrap().remove(0);
    assert_eq!(
        job.status.unwrap().failed.unwrap_or(0),
        0,
        "the evicted pod is not counted as a failure"
    );
    let evicted = all
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
    if let Some(e) = evicted {
        assert!(
            e.status
                .as_ref()
                .unwrap()
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "DisruptionTarget"),
            "{e:?}"
        );
    }
}

/// Path 8 (and the ConfigMap's identity): a record that would push the restore data past its
/// safe size, or a ConfigMap under the restore data's name that is not Hibernator's, is
/// refused before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_fit_or_a_foreign_config_map_change_nothing() {
    let w = World::new("toolarge").await.unwrap();
    w.estate(json!({"rds": ["db-a", "db-b"]})).unwrap();
    w.cloud_provider("aws").await.unwrap();
    w.apply(rds_plan(
        "big",
        &[("db", &["db-a"])],
        json!({"behavior": {"retries": 0}}),
    ))
    .await
    .unwrap();
    w.apply(rds_plan(
        "foreign",
        &[("db", &["db-b"])],
        json!({"behavior": {"retries": 0}}),
    ))
    .await
    .unwrap();
    let uid = w.plan("big").await.unwrap().metadata.uid.unwrap();
    let pad = json!({"resources": {"blob": {"cycleId": "20261120t0100", "recordedAt": "2026-11-20T01:00:00Z",
        "state": {"pad": "x".repeat(900 * 1024)}}}});
    let cms: Api<ConfigMap> = Api::namespaced(w.client.clone(), &w.ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "hibernator-restore-big", "labels": {
                "app.kubernetes.io/managed-by": "hibernator-controller",
                "hibernator.ardikasaputro.io/restore-data": "true",
                "hibernator.ardikasaputro.io/plan": "big",
                "hibernator.ardikasaputro.io/plan-uid": uid}},
            "data": {"old": pad.to_string()},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "hibernator-restore-foreign"},
            "data": {"mine": "not yours"},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at(THURSDAY_EVENING, 60.0))
        .unwrap();
    for (plan, why) in [
        ("big", "above the limit of 921600 bytes"),
        ("foreign", "is not Hibernator's restore data"),
    ] {
        let p = w
            .wait_plan(plan, SECS(90), "the target failed", |p| {
                target_state(p, "db") == Some(TargetState::Failed)
                    && condition(p, "Stalled").is_some()
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
        let t = &p.status.as_ref().unwrap().targets[0];
        let msg = t.message.clone().unwrap_or_default();
        assert!(
            msg.contains(why) && msg.contains("changed nothing"),
            "{plan}: {msg}"
        );
    }
    let s = w.snapshot().unwrap();
    assert_eq!(s["rds"], json!({"db-a": "available", "db-b": "available"}));
    assert_eq!(
        cms.get("hibernator-restore-foreign")
            .await
            .unwrap()
            .data
            .unwrap()["mine"],
        "not yours",
        "left alone"
    );
}
