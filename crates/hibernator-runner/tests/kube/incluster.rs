use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, LogParams, PostParams};
use serde_json::json;

use crate::common::*;

/// The runner as a pod with `inCluster: true`: the pod's own ServiceAccount token (mounted
/// because the pod asks for it, as runner Jobs of in-cluster targets do), its permissions from
/// the runner's ClusterRole, the controller token from a Secret volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_pod_uses_its_in_cluster_service_account() -> Result<()> {
    let kit = Kit::new("incluster").await?;
    let (c, ns) = (&kit.client, kit.ns.as_str());
    apply(c, &deployment(ns, "web", 2, json!({}))).await?;
    wait_ready(c, ns, "deployments", "web", 2).await?;
    Api::<Secret>::namespaced(c.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "controller-token"},
                "stringData": {"token": TOKEN},
            }))?,
        )
        .await?;
    let env = |name: &str, value: String| json!({"name": name, "value": value});
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "runner-hibernate"},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "runner",
            "automountServiceAccountToken": true,
            "containers": [{
                "name": "runner",
                "image": RUNNER_IMAGE,
                "env": [
                    env("HIBERNATOR_EXECUTION_ID", "runner-hibernate".into()),
                    env("HIBERNATOR_PLAN", "nightly".into()),
                    env("HIBERNATOR_NAMESPACE", ns.into()),
                    env("HIBERNATOR_TARGET", "apps".into()),
                    env("HIBERNATOR_TARGET_TYPE", "workloads".into()),
                    env("HIBERNATOR_OPERATION", "hibernate".into()),
                    env("HIBERNATOR_CYCLE_ID", CYCLE.into()),
                    env("HIBERNATOR_PARAMETERS", json!({"namespaces": [ns]}).to_string()),
                    env("HIBERNATOR_CONNECTOR", json!({"kind": "kubernetes", "inCluster": true}).to_string()),
                    env("HIBERNATOR_CONTROLLER_ENDPOINT", kit.controller.endpoint()),
                    env("HIBERNATOR_POLL_INTERVAL_MS", "200".into()),
                ],
                "volumeMounts": [{"name": "controller-token", "mountPath": "/var/run/secrets/hibernator", "readOnly": true}],
            }],
            "volumes": [{"name": "controller-token", "secret": {"secretName": "controller-token"}}],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    pods.create(&PostParams::default(), &pod).await?;
    let done = eventually("the runner pod to finish", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            let p = pods.get("runner-hibernate").await?;
            let phase = p.status.clone().and_then(|s| s.phase).unwrap_or_default();
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(p))
        }
    })
    .await?;
    let logs = pods.logs("runner-hibernate", &LogParams::default()).await?;
    let phase = done
        .status
        .clone()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(
        logs.contains(&format!(
            "reached with in-cluster credentials as system:serviceaccount:{ns}:runner"
        )),
        "{logs}"
    );
    assert!(
        logs.contains("done: scaled to zero 1 of 1 Deployments"),
        "{logs}"
    );
    let message = done
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|s| s.first().cloned())
        .and_then(|s| s.state?.terminated?.message)
        .unwrap_or_default();
    assert!(
        message.starts_with("scaled to zero 1 of 1 Deployments"),
        "{message:?}"
    );
    assert_eq!(
        kit.records()[&format!("deployment:{ns}/web")],
        json!({"replicas": 2})
    );
    assert_eq!(replicas(c, ns, "deployments", "web").await?, (0, 0));
    Ok(())
}
