//! Readiness probes: a pod is Ready only once its containers' probes pass.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::common::{SHELL, cluster, eventually, object};

fn ready(pod: &Pod) -> Option<String> {
    let conditions: BTreeMap<String, String> = pod
        .status
        .clone()
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    conditions.get("Ready").cloned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn a_pod_is_ready_only_when_its_readiness_probe_passes() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("probes").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);
    let port = free_port();
    // Listens only after a few seconds, on a named port the probe refers to.
    let pod: Pod = object(json!({
        "metadata": {"name": "late-listener"},
        "spec": {"containers": [{
            "name": "main", "image": SHELL,
            "command": ["sh", "-c", format!("sleep 3; exec python3 -m http.server {port} --bind 127.0.0.1")],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
        }]},
    }));
    pods.create(&PostParams::default(), &pod).await?;
    let running = eventually("running", Duration::from_secs(30), || async {
        let p = pods.get("late-listener").await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Ok((phase == "Running").then_some(p))
    })
    .await?;
    assert_eq!(
        ready(&running).as_deref(),
        Some("False"),
        "running but not answering yet"
    );
    eventually(
        "ready once the probe passes",
        Duration::from_secs(30),
        || async {
            let p = pods.get("late-listener").await?;
            Ok((ready(&p).as_deref() == Some("True")).then_some(()))
        },
    )
    .await?;

    // A probe that never passes keeps the pod unready.
    let pod: Pod = object(json!({
        "metadata": {"name": "never-ready"},
        "spec": {"containers": [{
            "name": "main", "image": SHELL, "command": ["sh", "-c", "sleep 60"],
            "readinessProbe": {"tcpSocket": {"port": free_port()}, "periodSeconds": 1},
        }]},
    }));
    pods.create(&PostParams::default(), &pod).await?;
    eventually("running", Duration::from_secs(30), || async {
        let p = pods.get("never-ready").await?;
        Ok((p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pods.get("never-ready").await?;
    assert_eq!(ready(&p).as_deref(), Some("False"));
    let status = p.status.unwrap().container_statuses.unwrap();
    assert!(!status[0].ready);
    Ok(())
}
