//! A `workloads` target through the real controller: a K8SCluster with `k8s: {inCluster: true}`,
//! runner pods whose ServiceAccount is bound to the runner's ClusterRole
//! (`deploy/rbac/runner-in-cluster-clusterrole.yaml`), a Deployment and a StatefulSet with
//! running pods, and a simulated night (ten hours in about a minute).

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{ControllerOptions, SLEEPER, World, cond, condition, phase, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

fn template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "main", "image": SLEEPER, "args": ["3600"]}]},
    })
}

fn plan(ns: &str) -> Value {
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": "apps-offhours"},
        "spec": {
            "schedule": {"timezone": "America/New_York",
                         "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
            "execution": {"strategy": {"type": "Sequential"}},
            "targets": [{"name": "apps", "type": "workloads",
                         "connectorRef": {"kind": "K8SCluster", "name": "this-cluster"},
                         "parameters": {"namespaces": [ns]}}],
        },
    })
}

async fn replicas(w: &World) -> (Option<i32>, Option<i32>, Option<i32>, Option<i32>) {
    let d = Api::<Deployment>::namespaced(w.client.clone(), &w.ns)
        .get("web")
        .await
        .unwrap();
    let s = Api::<StatefulSet>::namespaced(w.client.clone(), &w.ns)
        .get("db")
        .await
        .unwrap();
    (
        d.spec.and_then(|s| s.replicas),
        d.status.and_then(|s| s.ready_replicas),
        s.spec.and_then(|s| s.replicas),
        s.status.and_then(|s| s.ready_replicas),
    )
}

async fn sleeper_pods(w: &World) -> usize {
    Api::<Pod>::namespaced(w.client.clone(), &w.ns)
        .list(&ListParams::default().labels("app in (web,db)"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_of_a_workloads_target_in_the_controllers_cluster() {
    let w = World::new("workloads").await.unwrap();
    w.runners_in_cluster().await.unwrap();
    w.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")},
    }))
    .await
    .unwrap();
    w.apply(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "db"}}, "template": template("db")},
    }))
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(90),
        "the workloads to be ready",
        || async { (replicas(&w).await == (Some(3), Some(3), Some(2), Some(2))).then_some(()) },
    )
    .await
    .unwrap();
    w.apply(json!({
        "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
        "kind": "K8SCluster",
        "metadata": {"name": "this-cluster"},
        "spec": {"k8s": {"inCluster": true}},
    }))
    .await
    .unwrap();
    w.apply(plan(&w.ns)).await.unwrap();

    // Thursday 19:59 New York; 600x: ten hours take a minute.
    let controller = w
        .controller(ControllerOptions::at("2026-11-27T00:59:00Z", 600.0))
        .unwrap();
    let report = |e: anyhow::Error| format!("{e:#}\n--- controller log:\n{}", controller.log());

    let p = w
        .wait_plan(
            "apps-offhours",
            Duration::from_secs(90),
            "Hibernated",
            |p| phase(p) == Some(Phase::Hibernated),
        )
        .await
        .map_err(report)
        .unwrap();
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    assert_eq!(replicas(&w).await, (Some(0), None, Some(0), None));
    assert_eq!(
        sleeper_pods(&w).await,
        0,
        "the runner waited for the pods to go"
    );
    // The runner pod used the pod's own service-account token, and only it got one.
    let job = &w.jobs("apps", "hibernate").await.unwrap()[0];
    let pod_spec = job.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(pod_spec.automount_service_account_token, Some(true));
    let restore = w.restore_data("apps-offhours").await.unwrap();
    let record: Value = serde_json::from_str(&restore["apps"]).unwrap();
    assert_eq!(
        record["resources"][format!("deployment:{}/web", w.ns)]["state"],
        json!({"replicas": 3}),
        "{record}"
    );
    assert_eq!(
        record["resources"][format!("statefulset:{}/db", w.ns)]["state"],
        json!({"replicas": 2}),
        "{record}"
    );
    // The runner's story, as `kubectl logs` shows it.
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &w.ns);
    let runner_pod = pods
        .list(
            &ListParams::default()
                .labels(&format!("job-name={}", job.metadata.name.clone().unwrap())),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let logs = pods
        .logs(
            &runner_pod.metadata.name.unwrap(),
            &kube::api::LogParams::default(),
        )
        .await
        .unwrap();
    assert!(
        logs.contains(&format!(
            "reached with in-cluster credentials as system:serviceaccount:{}:hibernator-runner",
            w.ns
        )),
        "{logs}"
    );
    assert!(
        logs.contains("done: scaled to zero 1 of 1 Deployments and 1 of 1 StatefulSets"),
        "{logs}"
    );

    // 06:00: the wake-up restores the replicas and waits until they are ready.
    let p = w
        .wait_plan(
            "apps-offhours",
            Duration::from_secs(150),
            "awake again",
            |p| {
                phase(p) == Some(Phase::Active)
                    && p.status
                        .as_ref()
                        .and_then(|s| s.current_cycle.as_ref())
                        .is_some_and(|c| {
                            c.operation == hibernator_api::Operation::WakeUp
                                && c.finished_at.is_some()
                        })
            },
        )
        .await
        .map_err(report)
        .unwrap();
    assert_eq!(condition(&p, "Hibernated"), cond("False", "Awake"));
    assert_eq!(replicas(&w).await, (Some(3), Some(3), Some(2), Some(2)));
    assert_eq!(sleeper_pods(&w).await, 5);
    let history = &p.status.as_ref().unwrap().history;
    assert!(
        history[0].hibernate.as_ref().unwrap().succeeded
            && history[0].wake_up.as_ref().unwrap().succeeded
    );
    assert!(
        w.restore_data("apps-offhours").await.unwrap().is_empty(),
        "the restore data is gone once everything woke up"
    );
}
