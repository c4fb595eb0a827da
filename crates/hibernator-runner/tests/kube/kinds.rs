//! More kinds in `workloads` targets, against the real API server: an Argo Rollout (the real
//! Rollout CRD from argo-rollouts' Go module, scaled through its scale subresource found by
//! discovery), CronJobs, Deployments driven by KEDA ScaledObjects (the real KEDA CRD) and a
//! Deployment under a HorizontalPodAutoscaler, which the test cluster's real HPA controller
//! acts on. No Argo Rollouts or KEDA controller runs: the test plays the Rollouts controller's
//! part (it copies `spec.replicas` into the Rollout's status), and for KEDA it proves the
//! annotation that tells KEDA to let go.

use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::common::*;
use crate::gitops::{apply_as, resource};

fn rollouts() -> kube::core::ApiResource {
    resource("argoproj.io", "v1alpha1", "Rollout", "rollouts")
}

fn scaled_objects() -> kube::core::ApiResource {
    resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
}

fn cronjobs() -> kube::core::ApiResource {
    resource("batch", "v1", "CronJob", "cronjobs")
}

fn hpas() -> kube::core::ApiResource {
    resource(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    )
}

const PAUSED: &str = "autoscaling.keda.sh/paused-replicas";

/// Plays the Argo Rollouts controller's part that the runner waits on: the replicas the
/// Rollout's status reports follow `spec.replicas`.
async fn play_rollouts_controller(client: kube::Client, ns: String) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &rollouts());
    loop {
        if let Ok(list) = api.list(&Default::default()).await {
            for r in list.items {
                let spec = r.data["spec"]["replicas"].as_i64().unwrap_or(1);
                if r.data["status"]["HPAReplicas"].as_i64() != Some(spec) {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    let status = json!({"status": {"HPAReplicas": spec, "replicas": spec,
                                                   "readyReplicas": spec, "availableReplicas": spec}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cronjob(ns: &str, name: &str, suspend: Option<bool>) -> Value {
    let mut o = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"schedule": "0 3 * * *",
                 "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": SLEEPER, "args": ["1"]}]}}}}},
    });
    if let Some(s) = suspend {
        o["spec"]["suspend"] = json!(s);
    }
    o
}

fn scaled_object(ns: &str, name: &str, target: &str, paused: Option<&str>) -> Value {
    let mut o = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": ns, "annotations": {"team": "a"}},
        "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": 1, "maxReplicaCount": 5,
                 "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}]},
    });
    if let Some(p) = paused {
        o["metadata"]["annotations"][PAUSED] = json!(p);
    }
    o
}

async fn get(kit: &Kit, ar: &kube::core::ApiResource, name: &str) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(kit.client.clone(), &kit.ns, ar);
    Ok(api.get(name).await?)
}

/// Everything the test compares before and after a night.
async fn state(kit: &Kit) -> Result<Value> {
    let (c, ns) = (&kit.client, kit.ns.as_str());
    let annotations = |o: &DynamicObject| json!(o.metadata.annotations.clone().unwrap_or_default());
    Ok(json!({
        "rollout": get(kit, &rollouts(), "canary").await?.data["spec"]["replicas"],
        "report": get(kit, &cronjobs(), "report").await?.data["spec"].get("suspend"),
        "monthly": get(kit, &cronjobs(), "monthly").await?.data["spec"].get("suspend"),
        "worker-so": annotations(&get(kit, &scaled_objects(), "worker").await?),
        "batch-so": annotations(&get(kit, &scaled_objects(), "batch").await?),
        "worker": replicas(c, ns, "deployments", "worker").await?.0,
        "batch": replicas(c, ns, "deployments", "batch").await?.0,
        "api": replicas(c, ns, "deployments", "api").await?.0,
    }))
}

/// `(reason of ScalingActive, status.currentReplicas)` of the HPA.
async fn hpa(kit: &Kit) -> Result<(String, i64)> {
    let h = get(kit, &hpas(), "api").await?;
    let reason = h.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ScalingActive")
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string();
    Ok((
        reason,
        h.data["status"]["currentReplicas"].as_i64().unwrap_or(-1),
    ))
}

/// A Rollout (scale subresource), two CronJobs (one already suspended), two KEDA-driven
/// Deployments (one paused at 1 by someone, paused at 0 for the night) and a Deployment under an HPA sleep and wake exactly:
/// ScaledObjects are paused before their workloads are scaled and get their annotation back
/// exactly; the Rollout is scaled through `/scale` and waited on through the replicas its scale
/// subresource reports; CronJobs are suspended and get `spec.suspend` back as it was (absent or
/// true). The real HPA controller leaves a target at zero alone (ScalingDisabled, its
/// minReplicas not enforced) and takes it up again after wake-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_cronjobs_keda_and_hpa_sleep_and_wake_exactly() -> Result<()> {
    let kit = Kit::new("kinds").await?;
    let (c, ns) = (&kit.client, kit.ns.clone());
    kube_testbed::crds::install_third_party_crds(
        c,
        &["rollouts.argoproj.io", "scaledobjects.keda.sh"],
    )
    .await?;
    let rollouts_task = tokio::spawn(play_rollouts_controller(c.clone(), ns.clone()));
    let _stop = scopeguard(rollouts_task);

    apply_as(
        &kit,
        "argocd-controller",
        &rollouts(),
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "canary", "namespace": ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "canary"}},
                     "template": {"metadata": {"labels": {"app": "canary"}},
                                  "spec": {"containers": [{"name": "main", "image": SLEEPER,
                                            "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}}]}},
                     "strategy": {"canary": {"steps": [{"setWeight": 20}]}}},
        }),
    )
    .await?;
    apply(c, &cronjob(&ns, "report", None)).await?;
    apply(c, &cronjob(&ns, "monthly", Some(true))).await?;
    apply(c, &deployment(&ns, "worker", 2, json!({}))).await?;
    apply(c, &deployment(&ns, "batch", 1, json!({}))).await?;
    apply(c, &deployment(&ns, "api", 3, json!({}))).await?;
    apply(c, &scaled_object(&ns, "worker", "worker", None)).await?;
    apply(c, &scaled_object(&ns, "batch", "batch", Some("1"))).await?;
    apply(
        c,
        &json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api", "namespace": ns},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                     "minReplicas": 2, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                  "target": {"type": "Utilization", "averageUtilization": 80}}}]},
        }),
    )
    .await?;
    for (name, n) in [("worker", 2), ("batch", 1), ("api", 3)] {
        wait_ready(c, &ns, "deployments", name, n).await?;
    }
    // The HPA controller has looked at its target before the night.
    eventually(
        "the HPA to see 3 replicas",
        Duration::from_secs(60),
        || async { Ok((hpa(&kit).await?.1 == 3).then_some(())) },
    )
    .await?;
    let before = state(&kit).await?;

    let params = json!({"namespaces": [ns],
                        "kinds": ["Deployment", "CronJob", "argoproj.io/v1alpha1/Rollout"]});
    let ran = kit
        .runner("workloads", "apps", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.done().starts_with(
            "done: scaled to zero 3 of 3 Deployments and 1 of 1 Rollouts; suspended 1 of 2 \
             CronJobs (1 already suspended); paused 2 of 2 KEDA ScaledObjects in "
        ),
        "{}",
        ran.stdout
    );
    // KEDA let go before its workload was scaled.
    let position = |text: &str| {
        ran.stdout
            .find(text)
            .with_context(|| format!("{text:?} in {}", ran.stdout))
    };
    assert!(
        position(&format!("pausing KEDA ScaledObject {ns}/worker"))?
            < position(&format!("scaling Deployment {ns}/worker from 2 to 0"))?
    );
    let records = kit.records();
    let record = |k: &str| records.get(k).cloned().unwrap_or(Value::Null);
    assert_eq!(
        record(&format!("rollout.argoproj.io:{ns}/canary")),
        json!({"replicas": 2, "apiVersion": "argoproj.io/v1alpha1"})
    );
    // The API server defaults a CronJob's spec.suspend to false: that is what was there.
    assert_eq!(
        record(&format!("cronjob:{ns}/report")),
        json!({"suspend": false})
    );
    assert_eq!(
        record(&format!("cronjob:{ns}/monthly")),
        json!({"suspend": true})
    );
    assert_eq!(
        record(&format!("scaledobject:{ns}/worker")),
        json!({"pausedReplicas": null})
    );
    assert_eq!(
        record(&format!("scaledobject:{ns}/batch")),
        json!({"pausedReplicas": "1"})
    );
    assert_eq!(
        record(&format!("deployment:{ns}/api")),
        json!({"replicas": 3})
    );
    // The savings ledger's sizing: a replica's requests times the replicas (none: no price).
    let sizings = kit.controller.sizings();
    let sizing = |k: &str| -> Value { serde_json::from_str(&sizings[k]).unwrap() };
    assert_eq!(
        sizing(&format!("rollout.argoproj.io:{ns}/canary")),
        json!({"service": "kubernetes", "count": 2.0, "cpu": 0.25, "memoryGib": 0.125})
    );
    assert_eq!(
        sizing(&format!("deployment:{ns}/api")),
        json!({"service": "kubernetes", "count": 3.0})
    );

    let asleep = state(&kit).await?;
    assert_eq!(asleep["rollout"], json!(0));
    assert_eq!(asleep["report"], json!(true));
    assert_eq!(asleep["monthly"], json!(true));
    assert_eq!(asleep["worker-so"][PAUSED], json!("0"));
    assert_eq!(
        asleep["worker-so"]["team"],
        json!("a"),
        "other annotations kept"
    );
    assert_eq!(asleep["batch-so"][PAUSED], json!("0"));
    for name in ["worker", "batch", "api"] {
        assert_eq!(asleep[name], json!(0), "{name}");
    }
    // The real HPA controller: scaling disabled while its target is at zero, and its
    // minReplicas (2) is not enforced on it, over several of its 2-second syncs.
    eventually(
        "the HPA to say ScalingDisabled",
        Duration::from_secs(60),
        || async { Ok((hpa(&kit).await?.0 == "ScalingDisabled").then_some(())) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(replicas(c, &ns, "deployments", "api").await?.0, 0);
    assert_eq!(hpa(&kit).await?.0, "ScalingDisabled");

    let woke = kit
        .runner("workloads", "apps", "wakeUp")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        woke.done().starts_with(
            "done: restored 3 of 3 Deployments and 1 of 1 Rollouts; restored 1 of 2 CronJobs \
             (1 already as recorded); restored 2 of 2 KEDA ScaledObjects in "
        ),
        "{}",
        woke.stdout
    );
    // KEDA takes its workloads back only once they are up again.
    assert!(
        woke.stdout
            .find(&format!("Deployment {ns}/worker is ready"))
            < woke
                .stdout
                .find(&format!("KEDA ScaledObject {ns}/worker restored"))
    );
    assert_eq!(state(&kit).await?, before);
    for (name, n) in [("worker", 2), ("batch", 1), ("api", 3)] {
        wait_ready(c, &ns, "deployments", name, n).await?;
    }
    // The HPA acts again: it sees the 3 replicas, and a higher minimum now scales its target.
    eventually(
        "the HPA to act on its target again",
        Duration::from_secs(60),
        || async {
            let (reason, current) = hpa(&kit).await?;
            Ok((reason != "ScalingDisabled" && current == 3).then_some(()))
        },
    )
    .await?;
    let hpa_api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns, &hpas());
    hpa_api
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReplicas": 4}})),
        )
        .await?;
    eventually(
        "the HPA to scale api to its new minimum",
        Duration::from_secs(60),
        || async { Ok((replicas(c, &ns, "deployments", "api").await?.0 == 4).then_some(())) },
    )
    .await?;
    Ok(())
}

/// A kind the cluster does not serve, or one without a scale subresource, fails before
/// anything changes, naming the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_unscalable_kinds_are_refused_before_any_change() -> Result<()> {
    let kit = Kit::new("kinds-bad").await?;
    let ns = kit.ns.clone();
    apply(&kit.client, &deployment(&ns, "web", 1, json!({}))).await?;
    for (kind, why) in [
        (
            "example.com/v1/Widget",
            "parameters.kinds: example.com/v1/Widget is not served by this cluster",
        ),
        (
            "keda.sh/v1alpha1/ScaledObject",
            "parameters.kinds: keda.sh/v1alpha1/ScaledObject has no scale subresource",
        ),
    ] {
        kube_testbed::crds::install_third_party_crds(&kit.client, &["scaledobjects.keda.sh"])
            .await?;
        let ran = kit
            .runner("workloads", "apps", "hibernate")
            .param(json!({"namespaces": [ns], "kinds": ["Deployment", kind]}))
            .run()
            .await?
            .failed(2);
        assert!(
            ran.stdout
                .lines()
                .any(|l| l.starts_with(&format!("error: {why}"))),
            "{kind}: {}",
            ran.stdout
        );
    }
    assert!(kit.records().is_empty());
    assert!(kit.runner_writes()?.is_empty());
    assert_eq!(replicas(&kit.client, &ns, "deployments", "web").await?.0, 1);
    Ok(())
}

/// In-sleep checks of a `workloads` target: while it sleeps someone scales a Deployment up,
/// resumes a CronJob, lets KEDA go again and deletes a StatefulSet. `Report` names each and
/// changes nothing; `Reapply` pauses KEDA, scales the Deployment to zero again (waiting for its
/// pods) and suspends the CronJob, keeping every record of the night; a second `Reapply`
/// changes nothing; the wake-up restores what the night recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_checks_report_then_reapply_and_keep_the_nights_records() -> Result<()> {
    use hibernator_proto::v1::resource_result::Result as R;
    let kit = Kit::new("kinds-check").await?;
    let (c, ns) = (&kit.client, kit.ns.clone());
    kube_testbed::crds::install_third_party_crds(c, &["scaledobjects.keda.sh"]).await?;
    apply(c, &deployment(&ns, "web", 2, json!({}))).await?;
    apply(c, &deployment(&ns, "idle", 0, json!({}))).await?;
    apply(c, &deployment(&ns, "worker", 1, json!({}))).await?;
    apply(c, &statefulset(&ns, "db", 1, json!({}))).await?;
    apply(c, &cronjob(&ns, "report", None)).await?;
    apply(c, &scaled_object(&ns, "worker", "worker", None)).await?;
    wait_ready(c, &ns, "deployments", "web", 2).await?;
    wait_ready(c, &ns, "deployments", "worker", 1).await?;
    wait_ready(c, &ns, "statefulsets", "db", 1).await?;
    let params = json!({"namespaces": [ns], "kinds": ["Deployment", "StatefulSet", "CronJob"]});
    kit.runner("workloads", "apps", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    let night = kit.records();
    assert_eq!(night.len(), 6, "{night:#?}");
    let (slept, slept_changes) = (kit.runner_writes()?.len(), kit.runner_changes()?.len());

    // While asleep: scaled up by hand, the CronJob resumed, KEDA unpaused, the StatefulSet gone.
    scale_by_hand(c, &ns, "deployments", "web", 3).await?;
    apply(c, &cronjob(&ns, "report", Some(false))).await?;
    let sos: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns, &scaled_objects());
    sos.patch(
        "worker",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {PAUSED: null}}})),
    )
    .await?;
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.clone(), &ns);
    sts.delete("db", &Default::default()).await?;
    eventually(
        "StatefulSet db to be deleted",
        Duration::from_secs(30),
        || {
            let sts = sts.clone();
            async move { Ok(sts.get_opt("db").await?.is_none().then_some(())) }
        },
    )
    .await?;
    let check = |mode: &'static str| kit.check("workloads", "apps", mode, &params);
    let report = check("Report").await?;
    assert_eq!(
        report.summary(),
        "checked 3 Deployments and 1 StatefulSet and 1 CronJob and 1 KEDA ScaledObject: \
         2 asleep, 3 awake (drifted; left as found), 1 no longer there",
        "{}",
        report.stdout
    );
    assert!(
        report.has(&format!(
            "Deployment {ns}/web has 3 replicas although it was scaled to zero in cycle {CYCLE}: drifted"
        )),
        "{}",
        report.stdout
    );
    let mut expected = vec![
        ("cronjob:NS/report".to_string(), R::Drifted),
        ("deployment:NS/idle".to_string(), R::Asleep),
        ("deployment:NS/web".to_string(), R::Drifted),
        ("deployment:NS/worker".to_string(), R::Asleep),
        ("scaledobject:NS/worker".to_string(), R::Drifted),
        ("statefulset:NS/db".to_string(), R::NotFound),
    ];
    assert_eq!(last_results(&kit), expected);
    assert_eq!(kit.runner_writes()?.len(), slept, "Report writes nothing");
    assert_eq!(replicas(c, &ns, "deployments", "web").await?.0, 3);
    assert_eq!(kit.records(), night);

    let reapply = check("Reapply").await?;
    assert_eq!(
        reapply.summary(),
        "checked 3 Deployments and 1 StatefulSet and 1 CronJob and 1 KEDA ScaledObject: \
         2 asleep, 3 put back to sleep, 1 no longer there",
        "{}",
        reapply.stdout
    );
    for (_, r) in expected.iter_mut() {
        if *r == R::Drifted {
            *r = R::Reapplied;
        }
    }
    assert_eq!(last_results(&kit), expected);
    // Back at zero with no pod left (the runner waited), through /scale; the record of the
    // night (2 replicas) kept.
    assert_eq!(replicas(c, &ns, "deployments", "web").await?, (0, 0));
    assert_eq!(
        get(&kit, &cronjobs(), "report").await?.data["spec"]["suspend"],
        json!(true)
    );
    let so = get(&kit, &scaled_objects(), "worker").await?;
    assert_eq!(so.metadata.annotations.unwrap_or_default()[PAUSED], "0");
    assert_eq!(kit.records(), night);
    assert_eq!(
        kit.runner_changes()?.len(),
        slept_changes + 3,
        "one change per drifted object"
    );
    let writes = kit.runner_writes()?.len();

    // A second Reapply finds everything asleep and writes nothing.
    let again = check("Reapply").await?;
    assert_eq!(
        again.summary(),
        "checked 3 Deployments and 1 StatefulSet and 1 CronJob and 1 KEDA ScaledObject: \
         5 asleep, 0 put back to sleep, 1 no longer there",
        "{}",
        again.stdout
    );
    assert_eq!(kit.runner_writes()?.len(), writes, "nothing written");

    // The wake-up puts back what the night recorded, not what was found in between.
    kit.runner("workloads", "apps", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(replicas(c, &ns, "deployments", "web").await?, (2, 2));
    assert_eq!(replicas(c, &ns, "deployments", "worker").await?, (1, 1));
    assert_eq!(replicas(c, &ns, "deployments", "idle").await?.0, 0);
    // The API server defaults spec.suspend to false; that is what the night recorded.
    assert_eq!(
        get(&kit, &cronjobs(), "report").await?.data["spec"]["suspend"],
        json!(false)
    );
    let so = get(&kit, &scaled_objects(), "worker").await?;
    assert!(
        !so.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(PAUSED)
    );
    Ok(())
}

/// Aborts the task when dropped (the test's end or a failed assertion).
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn scopeguard(task: tokio::task::JoinHandle<()>) -> Abort {
    Abort(task)
}
