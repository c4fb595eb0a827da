//! Helpers shared by the end-to-end tests.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{LogParams, PostParams};
use kube_testbed::{Image, TestCluster};
use serde::de::DeserializeOwned;

/// An image that runs the host's `/bin/sh`: `command: ["sh", "-c", "..."]`.
pub const SHELL: &str = "testbed.example/shell:1";
/// An image that runs the in-cluster probe (a kube-rs program using `Config::incluster()`).
pub const PROBE: &str = "testbed.example/incluster-probe:1";

/// The shared cluster, with the test images mapped.
pub async fn cluster() -> anyhow::Result<&'static TestCluster> {
    let cluster = TestCluster::shared().await?;
    cluster.map_image(SHELL, Image::new("/bin/sh"));
    cluster.map_image(
        PROBE,
        Image::new(env!("CARGO_BIN_EXE_testbed-incluster-probe")),
    );
    Ok(cluster)
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("timed out after {limit:?} waiting for {what}; last error: {e:#}"),
                None => bail!("timed out after {limit:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deserialises a JSON literal into a Kubernetes type.
pub fn object<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object literal")
}

/// A pod running `script` with the shell image.
pub fn shell_pod(name: &str, restart_policy: &str, script: &str) -> Pod {
    object(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": SHELL, "command": ["sh", "-c", script]}],
        }
    }))
}

/// Creates a pod and waits until its phase is one of `phases`.
pub async fn create_and_wait(pods: &Api<Pod>, pod: &Pod, phases: &[&str]) -> anyhow::Result<Pod> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.create(&PostParams::default(), pod)
        .await
        .with_context(|| format!("create pod {name}"))?;
    wait_phase(pods, &name, phases).await
}

/// Waits until the pod's phase is one of `phases`.
pub async fn wait_phase(pods: &Api<Pod>, name: &str, phases: &[&str]) -> anyhow::Result<Pod> {
    eventually(
        &format!("pod {name} in phase {phases:?}"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await?;
            let phase = phase(&pod);
            Ok(phases.contains(&phase.as_str()).then_some(pod))
        },
    )
    .await
}

/// The pod's phase.
pub fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// The pod's logs through the API server (which asks the kubelet).
pub async fn logs(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    Ok(pods.logs(name, &LogParams::default()).await?)
}

/// The first container's status as JSON (easier to assert on).
pub fn container_status(pod: &Pod) -> serde_json::Value {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|s| s.first())
        .cloned();
    serde_json::to_value(status).unwrap_or_default()
}
