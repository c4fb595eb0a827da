//! A `workloads` target through the real controller: a K8SCluster with `k8s: {inCluster: true}`,
//! runner pods whose ServiceAccount is bound to the runner's ClusterRole
//! (`deploy/rbac/runner-in-cluster-clusterrole.yaml`), a Deployment and a StatefulSet with
//! running pods, and a simulated night (ten hours in about a minute). A `gitops` target before
//! it in the plan's DAG pauses the Flux Kustomization and the Argo CD Application that deploy
//! them (the real CRDs of both): paused before the first workload is scaled, resumed only once
//! the workloads are ready again.

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
            "execution": {"strategy": {"type": "DAG",
                                       "dependencies": [{"from": "pause-git", "to": "apps"}]}},
            "targets": [
                {"name": "pause-git", "type": "gitops",
                 "connectorRef": {"kind": "K8SCluster", "name": "this-cluster"},
                 "parameters": {"flux": {"kustomizations": [{"namespace": ns, "name": "apps"}]},
                                "argocd": {"applications": [{"namespace": ns, "name": "apps"}]}}},
                {"name": "apps", "type": "workloads",
                 "connectorRef": {"kind": "K8SCluster", "name": "this-cluster"},
                 "parameters": {"namespaces": [ns]}},
            ],
        },
    })
}

/// The Kustomization and Application that deploy the workloads, as Git and their controllers
/// would hold them.
async fn gitops_objects(w: &World) {
    kube_testbed::crds::install_third_party_crds(
        &w.client,
        &[
            "kustomizations.kustomize.toolkit.fluxcd.io",
            "applications.argoproj.io",
        ],
    )
    .await
    .unwrap();
    w.apply(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps"},
        "spec": {"interval": "5m", "path": "./apps", "prune": true,
                 "sourceRef": {"kind": "GitRepository", "name": "platform"}},
    }))
    .await
    .unwrap();
    w.apply(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "apps"},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://git.example.com/platform.git", "path": "apps"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": w.ns},
                 "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}},
    }))
    .await
    .unwrap();
}

/// `(spec.suspend of the Kustomization, spec.syncPolicy of the Application)`.
async fn gitops_state(w: &World) -> (Option<Value>, Value) {
    let get = |group: &str, version: &str, kind: &str, plural: &str| {
        let ar = kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(group, version, kind),
            plural,
        );
        Api::<kube::api::DynamicObject>::namespaced_with(w.client.clone(), &w.ns, &ar)
    };
    let k = get(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    )
    .get("apps")
    .await
    .unwrap();
    let a = get("argoproj.io", "v1alpha1", "Application", "applications")
        .get("apps")
        .await
        .unwrap();
    (
        k.data.pointer("/spec/suspend").cloned(),
        a.data["spec"]["syncPolicy"].clone(),
    )
}

/// The runner's writes, in the order the API server received them: `(resource, name)`.
fn runner_writes(w: &World) -> Vec<(String, String)> {
    let user = format!("system:serviceaccount:{}:hibernator-runner", w.ns);
    let mut events: Vec<_> = w
        .cluster
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.user.username == user && e.is_write())
        .filter(|e| e.response_status.as_ref().and_then(|s| s.code) == Some(200))
        .collect();
    events.sort_by(|a, b| {
        a.request_received_timestamp
            .cmp(&b.request_received_timestamp)
    });
    events
        .into_iter()
        .filter_map(|e| {
            let r = e.object_ref?;
            Some((r.resource?, r.name.unwrap_or_default()))
        })
        .filter(|(resource, _)| resource != "selfsubjectreviews")
        .collect()
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
    gitops_objects(&w).await;
    let git_before = gitops_state(&w).await;
    assert_eq!(git_before.0, None);
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
    // Git was paused first: every write to the Flux and Argo CD objects came before the first
    // scale, and they stay paused through the night.
    let (suspend, sync) = gitops_state(&w).await;
    assert_eq!(suspend, Some(json!(true)));
    assert_eq!(sync.get("automated"), None, "{sync}");
    let writes = runner_writes(&w);
    let first_scale = writes
        .iter()
        .position(|(r, _)| r == "deployments" || r == "statefulsets")
        .unwrap_or_else(|| panic!("no scale among {writes:?}"));
    assert_eq!(
        writes[..first_scale],
        [
            ("kustomizations".to_string(), "apps".to_string()),
            ("applications".to_string(), "apps".to_string())
        ],
        "{writes:?}"
    );
    let night_writes = writes.len();
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
    let git: Value = serde_json::from_str(&restore["pause-git"]).unwrap();
    assert_eq!(
        git["resources"][format!("kustomization:{}/apps", w.ns)]["state"],
        json!({"suspend": null}),
        "{git}"
    );
    assert_eq!(
        git["resources"][format!("application:{}/apps", w.ns)]["state"],
        json!({"automated": {"prune": true, "selfHeal": true}}),
        "{git}"
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
        logs.contains("done: scaled to zero 1 of 1 Deployments and 1 of 1 StatefulSets in "),
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
    // Git resumed last, exactly as it was, and only after the workloads were ready: the
    // workloads target (which waits for readiness) finished before the gitops target began.
    assert_eq!(gitops_state(&w).await, git_before);
    let writes = runner_writes(&w);
    let morning = &writes[night_writes..];
    let last_scale = morning
        .iter()
        .rposition(|(r, _)| r == "deployments" || r == "statefulsets")
        .unwrap_or_else(|| panic!("no scale among {morning:?}"));
    assert_eq!(
        morning[last_scale + 1..],
        [
            ("kustomizations".to_string(), "apps".to_string()),
            ("applications".to_string(), "apps".to_string())
        ],
        "{morning:?}"
    );
    let targets = &p.status.as_ref().unwrap().targets;
    let at = |name: &str, f: fn(&hibernator_api::plan::TargetStatus) -> Option<_>| {
        targets
            .iter()
            .find(|t| t.name == name)
            .and_then(f)
            .unwrap_or_else(|| panic!("{name} in {targets:?}"))
    };
    let apps_done: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
        at("apps", |t| t.finished_at.clone());
    let git_started = at("pause-git", |t| t.started_at.clone());
    assert!(apps_done.0 <= git_started.0, "{targets:?}");
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
