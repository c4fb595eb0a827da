//! Jobs run by the real Job controller on the process kubelet: output in the logs, exit codes,
//! `backoffLimit`, `activeDeadlineSeconds`, `ttlSecondsAfterFinished`.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::common::{SHELL, cluster, container_status, eventually, object};

fn job(name: &str, script: &str, extra: serde_json::Value) -> Job {
    let mut spec = json!({
        "template": {"spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": SHELL, "command": ["sh", "-c", script]}],
        }},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    object(json!({"metadata": {"name": name}, "spec": spec}))
}

/// Waits for a `True` condition of kind `kind` and returns its reason.
async fn condition(jobs: &Api<Job>, name: &str, kind: &str) -> anyhow::Result<String> {
    eventually(
        &format!("job {name} condition {kind}"),
        Duration::from_secs(90),
        || async {
            let job = jobs.get(name).await?;
            let found = job
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == kind && c.status == "True")
                .map(|c| c.reason.unwrap_or_default());
            Ok(found)
        },
    )
    .await
}

#[tokio::test]
async fn a_job_runs_a_local_program_and_completes_with_its_output_in_the_logs() -> anyhow::Result<()>
{
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("job-ok").await?;
    let client = cluster.client()?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    jobs.create(
        &PostParams::default(),
        &job("ok", "echo out; echo err >&2; exit 0", json!({})),
    )
    .await?;
    assert_eq!(
        condition(&jobs, "ok", "Complete").await?,
        "CompletionsReached"
    );
    let list = pods
        .list(&ListParams::default().labels("job-name=ok"))
        .await?;
    assert_eq!(list.items.len(), 1);
    let pod = &list.items[0];
    let status = container_status(pod);
    assert_eq!(status["state"]["terminated"]["exitCode"], 0);
    assert_eq!(status["state"]["terminated"]["reason"], "Completed");
    // stdout and stderr are two pipes: both lines are there, in either order.
    let logs = pods.logs(&pod.name_any(), &Default::default()).await?;
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort();
    assert_eq!(lines, ["err", "out"]);
    assert_eq!(
        jobs.get("ok").await?.status.and_then(|s| s.succeeded),
        Some(1)
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_job_is_retried_up_to_its_backoff_limit_then_fails() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("job-fail").await?;
    let client = cluster.client()?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    jobs.create(
        &PostParams::default(),
        &job("fails", "echo trying; exit 3", json!({"backoffLimit": 1})),
    )
    .await?;
    assert_eq!(
        condition(&jobs, "fails", "Failed").await?,
        "BackoffLimitExceeded"
    );
    assert_eq!(
        jobs.get("fails").await?.status.and_then(|s| s.failed),
        Some(2)
    );
    let list = pods
        .list(&ListParams::default().labels("job-name=fails"))
        .await?;
    assert_eq!(list.items.len(), 2);
    for pod in &list.items {
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed")
        );
        let status = container_status(pod);
        assert_eq!(status["state"]["terminated"]["exitCode"], 3);
        assert_eq!(status["state"]["terminated"]["reason"], "Error");
    }
    Ok(())
}

#[tokio::test]
async fn a_job_past_its_active_deadline_fails_and_its_pod_is_stopped() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("job-deadline").await?;
    let client = cluster.client()?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            "echo started; exec sleep 300",
            json!({"activeDeadlineSeconds": 2}),
        ),
    )
    .await?;
    assert_eq!(
        condition(&jobs, "slow", "Failed").await?,
        "DeadlineExceeded"
    );
    // The Job controller deletes the running pod; the kubelet stops it (SIGTERM) and removes it.
    eventually(
        "the deadline job's pod to be gone",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("job-name=slow"))
                .await?;
            Ok(list.items.is_empty().then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_finished_job_is_deleted_after_its_ttl_with_its_pods() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("job-ttl").await?;
    let client = cluster.client()?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "short-lived",
            "echo done",
            json!({"ttlSecondsAfterFinished": 1}),
        ),
    )
    .await?;
    condition(&jobs, "short-lived", "Complete").await?;
    eventually(
        "the job and its pods to be deleted",
        Duration::from_secs(60),
        || async {
            let job_gone = jobs.get_opt("short-lived").await?.is_none();
            let pods_left = pods.list(&ListParams::default()).await?.items.len();
            Ok((job_gone && pods_left == 0).then_some(()))
        },
    )
    .await?;
    Ok(())
}
