//! The controller side of the runner protocol (`proto/hibernator/runner/v1`).
//!
//! Every call is authenticated: the bearer token must pass a TokenReview for audience
//! `hibernator`, be bound to a pod, and that pod must belong to the runner Job named by the
//! call's `execution_id`. Restore records are persisted before the answer; progress and
//! completions are kept in memory for the reconciler (the single status writer), which they
//! wake up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hibernator_api::plan::{HibernationPlan, Operation};
use hibernator_proto::v1::runner_server::Runner;
use hibernator_proto::v1::{
    Ack, Completion, FetchRestoreStateRequest, FetchRestoreStateResponse, HeartbeatRequest,
    HeartbeatResponse, LogEntry, ProgressReport, RecordRestoreStateRequest,
    RecordRestoreStateResponse,
};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::jobs::{MANAGER, labels};
use crate::metrics::Metrics;
use crate::restore::{PlanKey, RestoreError, RestoreStore};
use hibernator_api::common::error_chain;
use hibernator_api::restore::{RecordOutcome, WakeUpOutcome};
use hibernator_proto::v1::resource_result::Result as ResourceResult;

/// Who is calling: a runner pod of a known execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Namespace of the plan, Job and pod.
    pub namespace: String,
    /// The runner pod.
    pub pod: String,
    /// The runner Job (execution id).
    pub job: String,
    /// Plan name.
    pub plan: String,
    /// Plan UID (from the Job's owner reference).
    pub plan_uid: String,
    /// Target name.
    pub target: String,
    /// Operation.
    pub operation: Operation,
    /// Cycle.
    pub cycle: String,
    /// Target type (from the Job's annotation).
    pub target_type: String,
}

/// Checks a caller's token against the execution it claims.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller's identity, or why it is refused.
    async fn authenticate(&self, token: &str, execution_id: &str) -> Result<Identity, Status>;
}

/// Authentication through the Kubernetes API: TokenReview, then the pod and its Job.
pub struct TokenReviewAuthenticator {
    client: Client,
    cache: Mutex<HashMap<(String, String), (Identity, Instant)>>,
}

/// How long a successful review is trusted.
const REVIEW_CACHE: Duration = Duration::from_secs(120);

impl TokenReviewAuthenticator {
    /// An authenticator using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(&self, token: &str, execution_id: &str) -> Result<Identity, Status> {
        let key = (token.to_string(), execution_id.to_string());
        if let Some((id, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < REVIEW_CACHE
        {
            return Ok(id.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![hibernator_proto::TOKEN_AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let reviewed = api
            .create(&pp, &review)
            .await
            .map_err(|e| Status::unavailable(format!("failed to review the token: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Status::unauthenticated(format!(
                "token rejected by the API server{}",
                status.error.map(|e| format!(": {e}")).unwrap_or_default()
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let namespace = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split(':').next())
            .ok_or_else(|| {
                Status::permission_denied(format!("{username} is not a service account"))
            })?
            .to_string();
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (
            first("authentication.kubernetes.io/pod-name"),
            first("authentication.kubernetes.io/pod-uid"),
        ) else {
            return Err(Status::permission_denied("the token is not bound to a pod"));
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let pod = pods
            .get_opt(&pod_name)
            .await
            .map_err(|e| {
                Status::unavailable(format!("failed to read pod {namespace}/{pod_name}: {e}"))
            })?
            .filter(|p| p.metadata.uid.as_deref() == Some(pod_uid.as_str()))
            .ok_or_else(|| {
                Status::permission_denied(format!("pod {namespace}/{pod_name} no longer exists"))
            })?;
        let owned_by_job = pod
            .owner_references()
            .iter()
            .any(|o| o.kind == "Job" && o.name == execution_id);
        if !owned_by_job {
            return Err(Status::permission_denied(format!(
                "pod {namespace}/{pod_name} does not belong to execution {execution_id}"
            )));
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let job = jobs
            .get_opt(execution_id)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "failed to read Job {namespace}/{execution_id}: {e}"
                ))
            })?
            .ok_or_else(|| {
                Status::permission_denied(format!("execution {execution_id} does not exist"))
            })?;
        let (plan, plan_uid) = job
            .owner_references()
            .iter()
            .find(|o| o.kind == "HibernationPlan")
            .map(|o| (o.name.clone(), o.uid.clone()))
            .ok_or_else(|| {
                Status::permission_denied(format!("Job {execution_id} is not a runner Job"))
            })?;
        let label = |k: &str| job.labels().get(k).cloned().unwrap_or_default();
        let identity = Identity {
            namespace,
            pod: pod_name,
            job: execution_id.to_string(),
            plan,
            plan_uid,
            target: label(labels::TARGET),
            operation: Operation::parse(&label(labels::OPERATION)).ok_or_else(|| {
                Status::permission_denied(format!("Job {execution_id} has no operation label"))
            })?,
            cycle: label(labels::CYCLE),
            target_type: job
                .annotations()
                .get("hibernator.ardikasaputro.io/target-type")
                .cloned()
                .unwrap_or_default(),
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (identity.clone(), Instant::now()));
        Ok(identity)
    }
}

/// What runners reported, per execution, for the reconciler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Last progress line.
    pub progress: Option<String>,
    /// Completion: success and summary (or error).
    pub completion: Option<(bool, String)>,
    /// The resource keys a hibernation runner reported recorded.
    pub recorded: Vec<String>,
    /// The resource keys a wake-up runner reported restored.
    pub restored: Vec<String>,
    /// When it was last updated.
    pub updated: Option<Instant>,
}

/// Reports by (namespace, Job name).
#[derive(Clone, Default)]
pub struct Reports(Arc<Mutex<HashMap<(String, String), Report>>>);

impl Reports {
    /// The report of a Job.
    pub fn get(&self, namespace: &str, job: &str) -> Option<Report> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_string(), job.to_string()))
            .cloned()
    }

    fn update(&self, namespace: &str, job: &str, f: impl FnOnce(&mut Report)) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: forget reports nobody asked for within a day.
        if map.len() > 10_000 {
            map.retain(|_, r| {
                r.updated
                    .is_some_and(|u| u.elapsed() < Duration::from_secs(86_400))
            });
        }
        let r = map
            .entry((namespace.to_string(), job.to_string()))
            .or_default();
        f(r);
        r.updated = Some(Instant::now());
    }
}

/// The gRPC service.
pub struct RunnerService<A> {
    auth: A,
    store: RestoreStore,
    reports: Reports,
    wake: broadcast::Sender<ObjectRef<HibernationPlan>>,
    metrics: Metrics,
}

impl<A: Authenticator> RunnerService<A> {
    /// A service persisting into `store` and waking the reconciler through `wake`.
    pub fn new(
        auth: A,
        store: RestoreStore,
        reports: Reports,
        wake: broadcast::Sender<ObjectRef<HibernationPlan>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            auth,
            store,
            reports,
            wake,
            metrics,
        }
    }

    async fn identify<T>(
        &self,
        request: &Request<T>,
        execution_id: &str,
        rpc: &'static str,
    ) -> Result<Identity, Status> {
        self.check(bearer(request.metadata()).as_deref(), execution_id, rpc)
            .await
    }

    async fn check(
        &self,
        token: Option<&str>,
        execution_id: &str,
        rpc: &'static str,
    ) -> Result<Identity, Status> {
        let result = match token {
            None => Err(Status::unauthenticated("missing bearer token")),
            Some(_) if execution_id.is_empty() => {
                Err(Status::invalid_argument("execution_id is empty"))
            }
            Some(t) => self.auth.authenticate(t, execution_id).await,
        };
        if let Err(e) = &result {
            warn!(rpc, execution = execution_id, code = ?e.code(), "refused runner call: {}", e.message());
            self.metrics.grpc_refused(rpc);
        }
        result
    }

    fn poke(&self, id: &Identity) {
        let _ = self
            .wake
            .send(ObjectRef::new(&id.plan).within(&id.namespace));
    }
}

#[tonic::async_trait]
impl<A: Authenticator> Runner for RunnerService<A> {
    async fn record_restore_state(
        &self,
        request: Request<RecordRestoreStateRequest>,
    ) -> Result<Response<RecordRestoreStateResponse>, Status> {
        let id = self
            .identify(
                &request,
                &request.get_ref().execution_id,
                "RecordRestoreState",
            )
            .await?;
        let req = request.into_inner();
        if id.operation != Operation::Hibernate {
            return Err(Status::failed_precondition(
                "restore data is recorded only while hibernating",
            ));
        }
        if req.resource_key.is_empty() {
            return Err(Status::invalid_argument("resource_key is empty"));
        }
        let state: serde_json::Value = serde_json::from_str(&req.state_json).map_err(|e| {
            Status::invalid_argument(format!(
                "state_json of {} is not JSON: {e}",
                req.resource_key
            ))
        })?;
        let outcome = self
            .store
            .record(
                &id.plan_key(),
                &id.target,
                &id.cycle,
                &req.resource_key,
                state,
            )
            .await
            .map_err(|e| {
                warn!(plan = %id.plan, target = %id.target, "failed to persist restore data: {e}");
                restore_status("persist restore data", &e)
            })?;
        self.metrics
            .restore_record(matches!(outcome, RecordOutcome::Stored(_)));
        // The plan's account of what is asleep catches up at once.
        self.poke(&id);
        info!(plan = %id.plan, target = %id.target, cycle = %id.cycle, resource = %req.resource_key,
            stored = matches!(outcome, RecordOutcome::Stored(_)), "restore data recorded");
        let (already_recorded, stored) = match outcome {
            RecordOutcome::Stored(v) => (false, v),
            RecordOutcome::AlreadyRecorded(v) => (true, v),
        };
        Ok(Response::new(RecordRestoreStateResponse {
            already_recorded,
            stored_state_json: stored.to_string(),
        }))
    }

    async fn fetch_restore_state(
        &self,
        request: Request<FetchRestoreStateRequest>,
    ) -> Result<Response<FetchRestoreStateResponse>, Status> {
        let id = self
            .identify(
                &request,
                &request.get_ref().execution_id,
                "FetchRestoreState",
            )
            .await?;
        let (resources, cycle) = self
            .store
            .fetch(&id.plan_key(), &id.target)
            .await
            .map_err(|e| restore_status("read restore data", &e))?;
        Ok(Response::new(FetchRestoreStateResponse {
            resources: resources
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            cycle_id: cycle,
        }))
    }

    async fn report_progress(
        &self,
        request: Request<ProgressReport>,
    ) -> Result<Response<Ack>, Status> {
        let id = self
            .identify(&request, &request.get_ref().execution_id, "ReportProgress")
            .await?;
        let r = request.into_inner();
        let line = if r.total > 0 {
            format!("{}/{}: {}", r.completed, r.total, r.message)
        } else {
            r.message
        };
        self.reports.update(&id.namespace, &id.job, |rep| {
            rep.progress = Some(truncate(&line, 200))
        });
        self.poke(&id);
        Ok(Response::new(Ack {}))
    }

    async fn stream_logs(
        &self,
        request: Request<tonic::Streaming<LogEntry>>,
    ) -> Result<Response<Ack>, Status> {
        let token = bearer(request.metadata());
        let mut stream = request.into_inner();
        let mut identity: Option<Identity> = None;
        while let Some(entry) = stream.message().await? {
            // Each execution named in the stream is checked against the caller's token.
            let id = match &identity {
                Some(i) if i.job == entry.execution_id => i.clone(),
                _ => {
                    let i = self
                        .check(token.as_deref(), &entry.execution_id, "StreamLogs")
                        .await?;
                    identity = Some(i.clone());
                    i
                }
            };
            info!(
                target: "runner",
                plan = %id.plan,
                target_name = %id.target,
                execution = %id.job,
                level = %entry.level,
                "{}",
                truncate(&entry.message, 2000)
            );
        }
        Ok(Response::new(Ack {}))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.identify(&request, &request.get_ref().execution_id, "Heartbeat")
            .await?;
        Ok(Response::new(HeartbeatResponse {
            stop: false,
            reason: String::new(),
        }))
    }

    async fn complete(&self, request: Request<Completion>) -> Result<Response<Ack>, Status> {
        let id = self
            .identify(&request, &request.get_ref().execution_id, "Complete")
            .await?;
        let c = request.into_inner();
        // A wake-up's per-resource results are stored before the answer: the reconciler
        // retires restored records and reports the others by them.
        let results: Vec<(String, WakeUpOutcome, Option<String>)> = c
            .resources
            .iter()
            .filter_map(|r| {
                let outcome = match r.result() {
                    ResourceResult::Restored => WakeUpOutcome::Restored,
                    ResourceResult::NotFound => WakeUpOutcome::NotFound,
                    ResourceResult::Failed => WakeUpOutcome::Failed,
                    ResourceResult::Recorded | ResourceResult::Unspecified => return None,
                };
                let message = (!r.message.is_empty()).then(|| truncate(&r.message, 500));
                Some((r.resource_key.clone(), outcome, message))
            })
            .collect();
        if id.operation == Operation::WakeUp && !results.is_empty() {
            self.store
                .mark_wake_up(&id.plan_key(), &id.target, &id.cycle, &results)
                .await
                .map_err(|e| {
                    warn!(plan = %id.plan, target = %id.target, "failed to store the wake-up results: {e}");
                    restore_status("store the wake-up results", &e)
                })?;
        }
        let with = |result: ResourceResult| -> Vec<String> {
            c.resources
                .iter()
                .filter(|r| r.result() == result)
                .map(|r| r.resource_key.clone())
                .collect()
        };
        let (recorded, restored) = (
            with(ResourceResult::Recorded),
            with(ResourceResult::Restored),
        );
        self.metrics.runner_duration(
            &id.target_type,
            id.operation.as_str(),
            c.success,
            c.duration_ms as f64 / 1000.0,
        );
        let text = if c.success { c.summary } else { c.error };
        self.reports.update(&id.namespace, &id.job, |rep| {
            rep.completion = Some((c.success, truncate(&text, 500)));
            rep.recorded = recorded;
            rep.restored = restored;
        });
        info!(plan = %id.plan, target = %id.target, success = c.success, "runner completed: {text}");
        self.poke(&id);
        Ok(Response::new(Ack {}))
    }
}

impl Identity {
    /// The plan whose restore data this runner may use.
    pub fn plan_key(&self) -> PlanKey {
        PlanKey {
            namespace: self.namespace.clone(),
            name: self.plan.clone(),
            uid: self.plan_uid.clone(),
        }
    }
}

/// A restore-data failure as a gRPC status: permanent problems (a record too large, a foreign
/// ConfigMap) fail the call at once; the others ask the runner to try again.
fn restore_status(what: &str, e: &RestoreError) -> Status {
    let message = format!("failed to {what}: {}", error_chain(e));
    if e.is_permanent() {
        Status::failed_precondition(message)
    } else {
        Status::unavailable(message)
    }
}

/// The bearer token of a call, if any.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get(hibernator_proto::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}
