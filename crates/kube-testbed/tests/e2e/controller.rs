//! A kube-rs `Controller` for a test CRD that owns Jobs: create, update and delete are
//! reconciled against the real API server, Job controller and garbage collector.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{SHELL, cluster, eventually, object};

const MANAGER: &str = "batch-controller";
const FINALIZER: &str = "testbed.example.com/cleanup";

/// A unit of work run as a Job.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "controller.testbed.example.com",
    version = "v1",
    kind = "Batch",
    namespaced,
    status = "BatchStatus",
    shortname = "tbatch"
)]
pub struct BatchSpec {
    /// Printed by the Job.
    message: String,
}

/// What the controller observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    job: Option<String>,
    phase: Option<String>,
    observed_generation: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

struct Ctx {
    client: Client,
}

fn job_for(batch: &Batch) -> Job {
    let name = batch.name_any();
    let generation = batch.metadata.generation.unwrap_or_default();
    let owner = batch.controller_owner_ref(&()).expect("batch has a uid");
    object(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": format!("{name}-g{generation}"),
            "labels": {"batch": name},
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "work",
                    "image": SHELL,
                    "command": ["sh", "-c", "echo \"$MESSAGE\""],
                    "env": [{"name": "MESSAGE", "value": batch.spec.message}],
                }],
            }},
        },
    }))
}

async fn apply(batch: Arc<Batch>, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let ns = batch.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let batches: Api<Batch> = Api::namespaced(ctx.client.clone(), &ns);
    let wanted = job_for(&batch);
    let wanted_name = wanted.name_any();
    jobs.patch(
        &wanted_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&wanted),
    )
    .await?;
    // Jobs of older generations go (their pods with them).
    let owned = jobs
        .list(&ListParams::default().labels(&format!("batch={}", batch.name_any())))
        .await?;
    for old in owned.items.iter().filter(|j| j.name_any() != wanted_name) {
        jobs.delete(&old.name_any(), &DeleteParams::background())
            .await?;
    }
    let job = jobs.get(&wanted_name).await?;
    let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
    let done = |kind: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    let phase = if done("Complete") {
        "Complete"
    } else if done("Failed") {
        "Failed"
    } else {
        "Running"
    };
    let status = json!({
        "apiVersion": "controller.testbed.example.com/v1",
        "kind": "Batch",
        "status": {
            "job": wanted_name,
            "phase": phase,
            "observedGeneration": batch.metadata.generation,
        }
    });
    batches
        .patch_status(
            &batch.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn cleanup(batch: Arc<Batch>, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let ns = batch.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    jobs.delete_collection(
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        },
        &ListParams::default().labels(&format!("batch={}", batch.name_any())),
    )
    .await?;
    Ok(Action::await_change())
}

async fn reconcile(batch: Arc<Batch>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = batch.namespace().unwrap_or_default();
    let api: Api<Batch> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, batch, |event| async {
        match event {
            Finalizer::Apply(b) => apply(b, &ctx).await,
            Finalizer::Cleanup(b) => cleanup(b, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Batch>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(500))
}

async fn batch_status(api: &Api<Batch>, name: &str) -> anyhow::Result<BatchStatus> {
    Ok(api.get(name).await?.status.unwrap_or_default())
}

#[tokio::test]
async fn a_controller_reconciles_create_update_and_delete_with_owned_jobs() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let client = cluster.client()?;
    let ns = cluster.create_namespace("controller").await?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let _ = crds.create(&PostParams::default(), &Batch::crd()).await;
    eventually(
        "the Batch CRD to be established",
        Duration::from_secs(30),
        || async {
            let crd = crds.get(Batch::crd_name()).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        },
    )
    .await?;

    let batches: Api<Batch> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let controller = tokio::spawn(
        Controller::new(batches.clone(), watcher::Config::default())
            .owns(jobs.clone(), watcher::Config::default())
            .run(
                reconcile,
                error_policy,
                Arc::new(Ctx {
                    client: client.clone(),
                }),
            )
            .for_each(|_| async {}),
    );

    // Create.
    let batch = Batch::new(
        "nightly",
        BatchSpec {
            message: "first run".into(),
        },
    );
    batches.create(&PostParams::default(), &batch).await?;
    let status = eventually(
        "the first Job to complete",
        Duration::from_secs(60),
        || async {
            let s = batch_status(&batches, "nightly").await?;
            Ok((s.phase.as_deref() == Some("Complete")).then_some(s))
        },
    )
    .await?;
    assert_eq!(status.job.as_deref(), Some("nightly-g1"));
    let job = jobs.get("nightly-g1").await?;
    let owner = &job.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Batch", "nightly", Some(true))
    );
    let job_pods = pods
        .list(&ListParams::default().labels("job-name=nightly-g1"))
        .await?;
    let pod_name = job_pods.items[0].name_any();
    assert_eq!(
        pods.logs(&pod_name, &Default::default()).await?,
        "first run\n"
    );

    // Update: a new generation gets a new Job; the old one goes.
    batches
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"message": "second run"}})),
        )
        .await?;
    let status = eventually(
        "the second Job to complete",
        Duration::from_secs(60),
        || async {
            let s = batch_status(&batches, "nightly").await?;
            Ok(
                (s.job.as_deref() == Some("nightly-g2") && s.phase.as_deref() == Some("Complete"))
                    .then_some(s),
            )
        },
    )
    .await?;
    assert_eq!(status.observed_generation, Some(2));
    eventually(
        "the first Job to be deleted",
        Duration::from_secs(30),
        || async { Ok(jobs.get_opt("nightly-g1").await?.is_none().then_some(())) },
    )
    .await?;

    // Delete: the finalizer cleans up the Jobs, then the Batch is gone.
    batches.delete("nightly", &DeleteParams::default()).await?;
    eventually(
        "the Batch and its Jobs to be gone",
        Duration::from_secs(60),
        || async {
            let batch_gone = batches.get_opt("nightly").await?.is_none();
            let jobs_left = jobs.list(&ListParams::default()).await?.items.len();
            Ok((batch_gone && jobs_left == 0).then_some(()))
        },
    )
    .await?;
    controller.abort();

    // The audit log shows the controller's writes and their field manager.
    let events = cluster.audit_events()?;
    let ours: Vec<_> = events
        .iter()
        .filter(|e| {
            e.namespace() == Some(ns.as_str()) && e.field_manager.as_deref() == Some(MANAGER)
        })
        .collect();
    assert!(
        ours.iter()
            .any(|e| e.resource() == Some("batches") && e.subresource() == Some("status")),
        "no status write by {MANAGER}"
    );
    assert!(
        ours.iter()
            .any(|e| e.resource() == Some("jobs") && e.verb == "patch" && e.code() == 201),
        "no Job created by {MANAGER}"
    );
    // The Job's pods were created by the real Job controller, under its own identity.
    assert!(events.iter().any(|e| e.namespace() == Some(ns.as_str())
        && e.resource() == Some("pods")
        && e.verb == "create"
        && e.user.username == "system:serviceaccount:kube-system:job-controller"));
    Ok(())
}
