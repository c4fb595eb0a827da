//! The controller side of the runner protocol (`proto/hibernator/runner/v1`).
//!
//! Every call is authenticated: the bearer token must be valid for audience `hibernator`
//! (verified against the API server's signing keys, or by TokenReview), be bound to a pod, and that pod must belong to the runner Job named by the
//! call's `execution_id`. Restore records are persisted before the answer; progress and
//! completions are kept in memory for the reconciler (the single status writer), which they
//! wake up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hibernator_api::plan::{AsleepTarget, HibernationPlan, HibernationPlanStatus, Operation};
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
use kube::{Client, Resource, ResourceExt};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::jobs::{MANAGER, label_value, labels};
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
    /// The Job's UID (the pod's controlling owner).
    pub job_uid: String,
    /// Plan name.
    pub plan: String,
    /// Plan UID (from the Job's controlling owner reference).
    pub plan_uid: String,
    /// Target name.
    pub target: String,
    /// Operation (`Hibernate` for an in-sleep check).
    pub operation: Operation,
    /// An in-sleep check rather than an operation.
    pub check: bool,
    /// Cycle.
    pub cycle: String,
    /// Target type (from the Job's annotation).
    pub target_type: String,
}

/// Checks a caller's token and finds out which execution it belongs to.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller's identity, or why it is refused. `source` is the caller's address.
    async fn authenticate(&self, token: &str, source: Option<IpAddr>) -> Result<Identity, Status>;

    /// Whether `id` may still act for its plan: its Job exists, has not finished, and is the
    /// newest runner Job of its target (a Job of an earlier attempt or cycle may not). Returns
    /// the plan, for the checks that depend on its spec.
    async fn current(&self, id: &Identity) -> Result<HibernationPlan, Status>;
}

/// How long a successful review is trusted.
const REVIEW_CACHE: Duration = Duration::from_secs(60);
/// How long a refused token is refused without asking the API server again.
const REFUSAL_CACHE: Duration = Duration::from_secs(30);
/// Entries kept in each cache (the oldest are evicted first).
const CACHE_ENTRIES: usize = 4096;
/// Refused tokens a source may present per window before its unknown tokens are refused
/// unreviewed until the window ends.
const REFUSALS_PER_SOURCE: u32 = 10;
/// The window of [`REFUSALS_PER_SOURCE`].
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// TokenReviews in flight at once, whatever the callers do.
const CONCURRENT_REVIEWS: usize = 8;

/// A map bounded in size and age, for the authentication caches. Hand-written because it is
/// a dozen lines on top of `HashMap`; the caches are small and eviction scans are rare.
struct Bounded<K, V> {
    map: HashMap<K, (V, Instant)>,
    ttl: Duration,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Bounded<K, V> {
    fn new(ttl: Duration) -> Self {
        Self {
            map: HashMap::new(),
            ttl,
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        self.map
            .get(k)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.len() >= CACHE_ENTRIES {
            let ttl = self.ttl;
            self.map.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        if self.map.len() >= CACHE_ENTRIES
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        self.map.insert(k, (v, Instant::now()));
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A token as a cache key: a hash, so that refused tokens are not kept in memory.
fn token_key(token: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Randomly seeded per process: keys cannot be forced to collide from outside.
    static SEED: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(Default::default);
    let mut h = SEED.build_hasher();
    h.write(token.as_bytes());
    h.finish()
}

/// Authentication through the Kubernetes API: the token is verified against the API
/// server's published signing keys ([`LocalVerifier`]) or with a TokenReview (audience
/// `hibernator`), then the pod the token is bound to, its controlling Job, and that Job's
/// controlling plan are read, each matched by UID.
pub struct TokenReviewAuthenticator {
    client: Client,
    /// Verify tokens locally (by default; a TokenReview per token cost the API server a
    /// write per runner).
    local: Option<LocalVerifier>,
    /// When the signing keys cannot be read (a cluster that does not publish them, or denies
    /// reading them), review tokens with TokenReviews instead of refusing them.
    review_without_keys: bool,
    runner_service_account: String,
    accepted: Mutex<Bounded<u64, Identity>>,
    refused: Mutex<Bounded<u64, Status>>,
    sources: Mutex<Bounded<IpAddr, (u32, Instant)>>,
    reviews: tokio::sync::Semaphore,
    /// One review per token at a time: a runner's first calls arrive together (heartbeat,
    /// log stream, the first record), and the later ones take the first one's verdict from
    /// the cache instead of reviewing the same token again.
    in_flight: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenReviewAuthenticator {
    /// An authenticator using `client`, accepting pods of `runner_service_account` only, that
    /// verifies tokens against the API server's signing keys, and with TokenReviews when it
    /// cannot read them.
    pub fn new(client: Client, runner_service_account: &str) -> Self {
        Self {
            local: Some(LocalVerifier::new(client.clone())),
            review_without_keys: true,
            ..Self::reviewing(client, runner_service_account)
        }
    }

    /// Like [`Self::new`], reviewing every new token with a TokenReview.
    pub fn reviewing(client: Client, runner_service_account: &str) -> Self {
        Self {
            local: None,
            review_without_keys: true,
            client,
            runner_service_account: runner_service_account.to_string(),
            accepted: Mutex::new(Bounded::new(REVIEW_CACHE)),
            refused: Mutex::new(Bounded::new(REFUSAL_CACHE)),
            sources: Mutex::new(Bounded::new(REFUSAL_WINDOW)),
            reviews: tokio::sync::Semaphore::new(CONCURRENT_REVIEWS),
            in_flight: Default::default(),
        }
    }

    /// Like [`Self::new`], never making a TokenReview (namespaced permissions: TokenReview is
    /// cluster-scoped): a token is refused while the signing keys cannot be read.
    pub fn local(client: Client, runner_service_account: &str) -> Self {
        Self {
            review_without_keys: false,
            ..Self::new(client, runner_service_account)
        }
    }

    /// Entries in the caches of accepted and refused tokens (for tests of the bounds).
    pub fn cached(&self) -> (usize, usize) {
        (
            self.accepted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            self.refused.lock().unwrap_or_else(|e| e.into_inner()).len(),
        )
    }

    fn throttled(&self, source: Option<IpAddr>) -> bool {
        let Some(ip) = source else { return false };
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources
            .get(&ip)
            .is_some_and(|(n, since)| n >= REFUSALS_PER_SOURCE && since.elapsed() < REFUSAL_WINDOW)
    }

    /// The cached verdict on a token, if there is one.
    fn cached_verdict(&self, key: u64) -> Option<Result<Identity, Status>> {
        if let Some(id) = self
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(Ok(id));
        }
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(Err)
    }

    /// Reviews a token the caches know nothing of, and caches the verdict.
    async fn authenticate_uncached(
        &self,
        key: u64,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<Identity, Status> {
        if self.throttled(source) {
            return Err(Status::resource_exhausted(format!(
                "too many refused tokens from {}; try again later",
                source.map(|s| s.to_string()).unwrap_or_default()
            )));
        }
        let result = match self.review(token).await {
            Ok((namespace, pod, uid)) => self.identify(namespace, pod, uid).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(id) => self
                .accepted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, id.clone()),
            // An API server that could not answer is no verdict on the token.
            Err(e) if e.code() == tonic::Code::Unavailable => {}
            Err(e) => {
                self.count_refusal(source);
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, e.clone());
            }
        }
        result
    }

    fn count_refusal(&self, source: Option<IpAddr>) {
        let Some(ip) = source else { return };
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = sources
            .get(&ip)
            .filter(|(_, since)| since.elapsed() < REFUSAL_WINDOW)
            .unwrap_or((0, Instant::now()));
        sources.insert(ip, (n + 1, since));
    }

    /// TokenReview: the token must be valid for our audience (checked in the answer too, for
    /// authenticators that ignore requested audiences) and bound to a pod of the runner
    /// ServiceAccount. Returns (namespace, pod name, pod UID).
    async fn review(&self, token: &str) -> Result<(String, String, String), Status> {
        if let Some(local) = &self.local {
            match local.verify(token).await {
                Ok((namespace, account, pod, uid)) => {
                    if account != self.runner_service_account {
                        return Err(Status::permission_denied(format!(
                            "system:serviceaccount:{namespace}:{account} is not the runner ServiceAccount {:?}",
                            self.runner_service_account
                        )));
                    }
                    return Ok((namespace, pod, uid));
                }
                Err(Unverified::NoKeys(e)) if self.review_without_keys => {
                    local.warn_once(&e);
                }
                Err(Unverified::NoKeys(e) | Unverified::Refused(e)) => return Err(e),
            }
        }
        let _permit = self
            .reviews
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
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
        let ours = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == hibernator_proto::TOKEN_AUDIENCE));
        if !ours {
            return Err(Status::unauthenticated(format!(
                "the token is not for audience {:?} (the API server reported {:?})",
                hibernator_proto::TOKEN_AUDIENCE,
                status.audiences.unwrap_or_default()
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let (namespace, account) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                Status::permission_denied(format!("{username} is not a service account"))
            })?;
        if account != self.runner_service_account {
            return Err(Status::permission_denied(format!(
                "{username} is not the runner ServiceAccount {:?}",
                self.runner_service_account
            )));
        }
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (
            first("authentication.kubernetes.io/pod-name"),
            first("authentication.kubernetes.io/pod-uid"),
        ) else {
            return Err(Status::permission_denied("the token is not bound to a pod"));
        };
        Ok((namespace.to_string(), pod_name, pod_uid))
    }

    /// The pod's controlling Job, and that Job's controlling plan, matched by UID.
    async fn identify(
        &self,
        namespace: String,
        pod_name: String,
        pod_uid: String,
    ) -> Result<Identity, Status> {
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
        let (job_name, job_uid) = controller_of(pod.owner_references(), "batch/v1", "Job")
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "pod {namespace}/{pod_name} is not controlled by a Job"
                ))
            })?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let job = jobs
            .get_opt(&job_name)
            .await
            .map_err(|e| {
                Status::unavailable(format!("failed to read Job {namespace}/{job_name}: {e}"))
            })?
            .filter(|j| j.metadata.uid.as_deref() == Some(job_uid.as_str()))
            .ok_or_else(|| {
                Status::permission_denied(format!("Job {namespace}/{job_name} no longer exists"))
            })?;
        let (plan, plan_uid) = controller_of(
            job.owner_references(),
            &plan_api_version(),
            "HibernationPlan",
        )
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "Job {namespace}/{job_name} is not a runner Job (no controlling HibernationPlan)"
            ))
        })?;
        let label = |k: &str| job.labels().get(k).cloned().unwrap_or_default();
        let check = label(labels::OPERATION) == hibernator_api::naming::ENFORCE;
        Ok(Identity {
            namespace,
            pod: pod_name,
            operation: match check {
                true => Operation::Hibernate,
                false => Operation::parse(&label(labels::OPERATION)).ok_or_else(|| {
                    Status::permission_denied(format!("Job {job_name} has no operation label"))
                })?,
            },
            check,
            job: job_name,
            job_uid,
            plan,
            plan_uid,
            target: label(labels::TARGET),
            cycle: label(labels::CYCLE),
            target_type: job
                .annotations()
                .get("hibernator.ardikasaputro.io/target-type")
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// Verifies runner tokens without TokenReview (which is a request the API server handles like
/// a write, one per runner, and which a controller with namespaced permissions only cannot
/// make): the token's signature against the API server's published service-account signing
/// keys (`/openid/v1/jwks`, readable by every service account), its issuer, audience and
/// lifetime, and its pod binding. The pod is then read and
/// matched by UID like after a TokenReview, so a token of a deleted pod is refused.
pub struct LocalVerifier {
    client: Client,
    keys: tokio::sync::Mutex<Option<(String, jsonwebtoken::jwk::JwkSet, Instant)>>,
    /// Whether the keys could not be read before (said once in the log, not per token).
    warned: std::sync::atomic::AtomicBool,
}

/// Why [`LocalVerifier`] did not accept a token.
enum Unverified {
    /// The API server's signing keys could not be read: no verdict on the token.
    NoKeys(Status),
    /// The token is not valid.
    Refused(Status),
}

/// How long the signing keys are kept before they are read again (an unknown key id reads
/// them at once, at most every [`KEYS_MIN_REFRESH`]).
const KEYS_REFRESH: Duration = Duration::from_secs(600);
const KEYS_MIN_REFRESH: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize)]
struct KubernetesClaims {
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesIo,
}

#[derive(serde::Deserialize)]
struct KubernetesIo {
    namespace: String,
    serviceaccount: Named,
    #[serde(default)]
    pod: Option<Named>,
}

#[derive(serde::Deserialize)]
struct Named {
    name: String,
    #[serde(default)]
    uid: String,
}

impl LocalVerifier {
    /// A verifier reading the keys through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            keys: tokio::sync::Mutex::new(None),
            warned: Default::default(),
        }
    }

    fn warn_once(&self, e: &Status) {
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            warn!(
                "cannot verify runner tokens against the API server's signing keys ({}); reviewing them with TokenReviews",
                e.message()
            );
        }
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, Status> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| Status::internal(format!("failed to build a request for {path}: {e}")))?;
        self.client
            .request::<serde_json::Value>(request)
            .await
            .map_err(|e| Status::unavailable(format!("failed to read {path}: {e}")))
    }

    /// The issuer and the signing keys; read again when older than [`KEYS_REFRESH`], or when
    /// `kid` is unknown and they are older than [`KEYS_MIN_REFRESH`].
    async fn keys(&self, kid: &str) -> Result<(String, jsonwebtoken::jwk::Jwk), Unverified> {
        let mut cached = self.keys.lock().await;
        let stale = match &*cached {
            None => true,
            Some((_, set, at)) => {
                at.elapsed() > KEYS_REFRESH
                    || (set.find(kid).is_none() && at.elapsed() > KEYS_MIN_REFRESH)
            }
        };
        if stale {
            let config = self
                .get_json("/.well-known/openid-configuration")
                .await
                .map_err(Unverified::NoKeys)?;
            let issuer = config["issuer"]
                .as_str()
                .ok_or_else(|| {
                    Unverified::NoKeys(Status::unavailable(
                        "the API server's OpenID configuration has no issuer",
                    ))
                })?
                .to_string();
            let jwks = self
                .get_json("/openid/v1/jwks")
                .await
                .map_err(Unverified::NoKeys)?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).map_err(|e| {
                Unverified::NoKeys(Status::unavailable(format!(
                    "the API server's signing keys cannot be read: {e}"
                )))
            })?;
            *cached = Some((issuer, set, Instant::now()));
        }
        let (issuer, set, _) = cached.as_ref().expect("set above");
        let jwk = set.find(kid).cloned().ok_or_else(|| {
            Unverified::Refused(Status::unauthenticated(
                "the token is not signed by a key of this cluster",
            ))
        })?;
        Ok((issuer.clone(), jwk))
    }

    /// (namespace, service account, pod name, pod UID) of a valid token for our audience.
    async fn verify(&self, token: &str) -> Result<(String, String, String, String), Unverified> {
        use jsonwebtoken::Algorithm as A;
        let bad = |e: jsonwebtoken::errors::Error| {
            Unverified::Refused(Status::unauthenticated(format!("token rejected: {e}")))
        };
        let header = jsonwebtoken::decode_header(token).map_err(bad)?;
        // Service-account tokens are signed with an asymmetric key; never accept a MAC.
        if !matches!(
            header.alg,
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 | A::ES256 | A::ES384
        ) {
            return Err(Unverified::Refused(Status::unauthenticated(format!(
                "token rejected: algorithm {:?} is not accepted",
                header.alg
            ))));
        }
        let kid = header.kid.ok_or_else(|| {
            Unverified::Refused(Status::unauthenticated("token rejected: no key id"))
        })?;
        let (issuer, jwk) = self.keys(&kid).await?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(bad)?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[hibernator_proto::TOKEN_AUDIENCE]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<KubernetesClaims>(token, &key, &validation)
            .map_err(bad)?
            .claims
            .kubernetes;
        let pod = claims.pod.ok_or_else(|| {
            Unverified::Refused(Status::permission_denied("the token is not bound to a pod"))
        })?;
        Ok((
            claims.namespace,
            claims.serviceaccount.name,
            pod.name,
            pod.uid,
        ))
    }
}

/// The controlling owner of `kind` (name, UID).
fn controller_of(
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    api_version: &str,
    kind: &str,
) -> Option<(String, String)> {
    owners
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind && o.api_version == api_version)
        .map(|o| (o.name.clone(), o.uid.clone()))
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(&self, token: &str, source: Option<IpAddr>) -> Result<Identity, Status> {
        let key = token_key(token);
        if let Some(verdict) = self.cached_verdict(key) {
            return verdict;
        }
        let turn = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let result = {
            let _turn = turn.lock().await;
            match self.cached_verdict(key) {
                Some(verdict) => verdict,
                None => self.authenticate_uncached(key, token, source).await,
            }
        };
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // The last of the callers that waited for this token's turn takes the entry away.
        if Arc::strong_count(&turn) <= 2 {
            in_flight.remove(&key);
        }
        result
    }

    async fn current(&self, id: &Identity) -> Result<HibernationPlan, Status> {
        let what = format!("execution {}", id.job);
        let plans: Api<HibernationPlan> = Api::namespaced(self.client.clone(), &id.namespace);
        let plan = plans
            .get_opt(&id.plan)
            .await
            .map_err(|e| Status::unavailable(format!("failed to read plan {}: {e}", id.plan)))?
            .filter(|p| p.metadata.uid.as_deref() == Some(id.plan_uid.as_str()))
            .ok_or_else(|| {
                Status::permission_denied(format!("{what}: its plan {} no longer exists", id.plan))
            })?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &id.namespace);
        let selector = format!(
            "{}={},{}={}",
            labels::PLAN,
            label_value(&id.plan),
            labels::TARGET,
            id.target
        );
        let runner_jobs = jobs
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| Status::unavailable(format!("failed to list runner Jobs: {e}")))?;
        let plan_api_version = plan_api_version();
        let ours = |j: &&Job| {
            controller_of(j.owner_references(), &plan_api_version, "HibernationPlan")
                .is_some_and(|(_, uid)| uid == id.plan_uid)
        };
        let this = runner_jobs
            .items
            .iter()
            .find(|j| j.metadata.uid.as_deref() == Some(id.job_uid.as_str()))
            .ok_or_else(|| Status::permission_denied(format!("{what} no longer exists")))?;
        if finished(this) {
            return Err(Status::failed_precondition(format!(
                "{what} has finished; it may not act any more"
            )));
        }
        if let Some(why) = check_out_of_force(&plan, this) {
            return Err(Status::failed_precondition(format!(
                "{what}: {why}; it may not act any more"
            )));
        }
        let newer = runner_jobs
            .items
            .iter()
            .filter(ours)
            .find(|j| execution_order(j) > execution_order(this));
        if let Some(newer) = newer {
            return Err(Status::failed_precondition(format!(
                "{what} is not the current execution of target {} ({} is); it may not act any more",
                id.target,
                newer.name_any()
            )));
        }
        Ok(plan)
    }
}

/// Why an in-sleep check Job may not act any more although no newer Job of its target exists:
/// the hibernation it checks is no longer the plan's operation in force (a wake-up began, or
/// another cycle). The wake-up of its target waits until the check's Job ended.
fn check_out_of_force(plan: &HibernationPlan, job: &Job) -> Option<String> {
    let label = |k: &str| job.labels().get(k).cloned().unwrap_or_default();
    if label(labels::OPERATION) != hibernator_api::naming::ENFORCE {
        return None;
    }
    let cycle = label(labels::CYCLE);
    match plan.status.as_ref().and_then(|s| s.current_cycle.as_ref()) {
        Some(c) if c.id == cycle && c.operation == Operation::Hibernate => None,
        Some(c) if c.id == cycle => Some(format!(
            "the hibernation of cycle {cycle} it checks has ended ({} began)",
            c.operation.as_str()
        )),
        _ => Some(format!(
            "the hibernation of cycle {cycle} it checks is no longer in force"
        )),
    }
}

/// Where a runner Job stands among its target's executions: cycle (its id is the hibernation's
/// start, fixed width, so it sorts in time), then hibernation, in-sleep checks, wake-up, then
/// attempt (a check's number). Labels, not creation times: two Jobs made within the same second
/// still compare right.
fn execution_order(job: &Job) -> (String, u8, i32) {
    let label = |k: &str| job.labels().get(k).cloned().unwrap_or_default();
    let operation = match Operation::parse(&label(labels::OPERATION)) {
        Some(Operation::Hibernate) => 0,
        Some(Operation::WakeUp) => 2,
        None if label(labels::OPERATION) == hibernator_api::naming::ENFORCE => 1,
        None => 0,
    };
    (
        label(labels::CYCLE),
        operation,
        label(labels::ATTEMPT).parse().unwrap_or(0),
    )
}

/// `apiVersion` of plans in owner references.
fn plan_api_version() -> String {
    format!(
        "{}/{}",
        HibernationPlan::group(&()),
        HibernationPlan::version(&())
    )
}

/// Whether a Job has finished (Complete or Failed).
fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
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
    /// The resource keys an in-sleep check found awake and left so.
    pub drifted: Vec<String>,
    /// The resource keys an in-sleep check put back to sleep.
    pub reapplied: Vec<String>,
    /// When it was last updated.
    pub updated: Option<Instant>,
}

/// Reports by (namespace, Job name), and the plans' accounts of what is asleep as this
/// replica last wrote them.
#[derive(Clone, Default)]
pub struct Reports {
    jobs: Arc<Mutex<HashMap<(String, String), Report>>>,
    accounts: Arc<Accounts>,
}

/// `status.asleep` of each plan as this replica's reconciler last wrote it, so that a record
/// waiting for the account reads the plan right after the write that counts it instead of on a
/// polling interval (which remains, for the replicas that do not lead).
#[derive(Default)]
struct Accounts {
    written: Mutex<HashMap<(String, String), Vec<AsleepTarget>>>,
    changed: tokio::sync::Notify,
}

/// Does the account count `key` of `target`? Beyond the keys the account lists only its count
/// is kept, and that is taken as counted.
fn counts(asleep: &[AsleepTarget], target: &str, key: &str) -> bool {
    asleep.iter().find(|a| a.name == target).is_some_and(|a| {
        a.keys.iter().any(|k| k == key) || a.keys.len() >= hibernator_api::plan::ASLEEP_KEYS_LISTED
    })
}

impl Reports {
    /// The reconciler wrote a plan's status.
    pub fn status_written(&self, namespace: &str, plan: &str, status: &HibernationPlanStatus) {
        let mut map = self
            .accounts
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Bounded: it is only a shortcut, the API server has the real thing.
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(
            (namespace.to_string(), plan.to_string()),
            status.asleep.clone(),
        );
        drop(map);
        self.accounts.changed.notify_waiters();
    }

    fn written_counts(&self, id: &Identity, key: &str) -> bool {
        self.accounts
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id.namespace.clone(), id.plan.clone()))
            .is_some_and(|asleep| counts(asleep, &id.target, key))
    }

    /// The report of a Job.
    pub fn get(&self, namespace: &str, job: &str) -> Option<Report> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_string(), job.to_string()))
            .cloned()
    }

    fn update(&self, namespace: &str, job: &str, f: impl FnOnce(&mut Report)) {
        let mut map = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
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

/// How long a record waits for the plan's account (`status.asleep`) to count it; less than
/// the runner's call timeout (10 s), which then asks again.
const ACCOUNT_WAIT: Duration = Duration::from_secs(8);
/// How long a record waits for this replica's reconciler before asking the API server.
const ACCOUNT_POLL: Duration = Duration::from_millis(400);

/// The gRPC service.
pub struct RunnerService<A> {
    client: Client,
    auth: A,
    store: RestoreStore,
    reports: Reports,
    wake: broadcast::Sender<ObjectRef<HibernationPlan>>,
    metrics: Metrics,
    /// The schedule's clock: records and wake-ups are stamped with it, so that the savings
    /// ledger measures nights in the time the plan runs on.
    clock: crate::clock::Clock,
}

impl<A: Authenticator> RunnerService<A> {
    /// A service persisting into `store` and waking the reconciler through `wake`.
    pub fn new(
        client: Client,
        auth: A,
        store: RestoreStore,
        reports: Reports,
        wake: broadcast::Sender<ObjectRef<HibernationPlan>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            auth,
            store,
            reports,
            wake,
            metrics,
            clock: crate::clock::Clock::System,
        }
    }

    /// Stamps records and wake-ups with `clock` (the controller's schedule clock).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Who calls, for an execution: the token's identity, which must be `execution_id`'s.
    async fn identify<T>(
        &self,
        request: &Request<T>,
        execution_id: &str,
        rpc: &'static str,
    ) -> Result<Identity, Status> {
        let result = match bearer(request.metadata()) {
            None => Err(Status::unauthenticated("missing bearer token")),
            Some(_) if execution_id.is_empty() => {
                Err(Status::invalid_argument("execution_id is empty"))
            }
            Some(token) => self
                .auth
                .authenticate(&token, request.remote_addr().map(|a| a.ip()))
                .await
                .and_then(|id| same_execution(id, execution_id)),
        };
        self.refused(rpc, execution_id, result)
    }

    /// [`Self::identify`], for a call that acts on the plan's restore data or outcome: only the
    /// current execution of its target may. Returns the plan too.
    async fn identify_current<T>(
        &self,
        request: &Request<T>,
        execution_id: &str,
        rpc: &'static str,
    ) -> Result<(Identity, HibernationPlan), Status> {
        let id = self.identify(request, execution_id, rpc).await?;
        let plan = self.auth.current(&id).await;
        let plan = self.refused(rpc, execution_id, plan)?;
        Ok((id, plan))
    }

    /// Logs and counts a refusal.
    fn refused<T>(
        &self,
        rpc: &'static str,
        execution_id: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Err(e) = &result {
            warn!(rpc, execution = execution_id, code = ?e.code(), "refused runner call: {}", e.message());
            self.metrics.grpc_refused(rpc);
        }
        result
    }

    /// Waits until the plan's own account of what is asleep (`status.asleep`, written by the
    /// reconciler) counts `key` for the caller's target, so that a record acknowledged to a
    /// runner survives the loss of the ConfigMap the next moment (the runner changes nothing
    /// before the acknowledgement). Beyond the keys the account lists, only its count is kept,
    /// and that is taken as counted.
    async fn accounted(&self, id: &Identity, key: &str) -> Result<(), Status> {
        let plans: Api<HibernationPlan> = Api::namespaced(self.client.clone(), &id.namespace);
        let deadline = Instant::now() + ACCOUNT_WAIT;
        let mut last_read: Option<Instant> = None;
        loop {
            // Registered before looking, so that a write in between is not missed.
            let changed = self.reports.accounts.changed.notified();
            // The API server has the word: this replica's own write only says when to ask
            // (another replica may have written since, after a leader hand-over), and it is
            // asked at least every ACCOUNT_POLL when another replica leads.
            let due = last_read.is_none_or(|t| t.elapsed() >= ACCOUNT_POLL);
            if due || self.reports.written_counts(id, key) {
                last_read = Some(Instant::now());
                let counted = plans
                    .get_opt(&id.plan)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|p| p.status)
                    .is_some_and(|s| counts(&s.asleep, &id.target, key));
                if counted {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                info!(plan = %id.plan, target = %id.target, resource = key,
                    "the plan's status does not count the record yet; the runner will ask again");
                return Err(Status::unavailable(format!(
                    "the plan has not yet accounted for the record of {key}; ask again (it is stored)"
                )));
            }
            let since = last_read.map_or(ACCOUNT_POLL, |t| t.elapsed());
            let _ = tokio::time::timeout(ACCOUNT_POLL.saturating_sub(since), changed).await;
        }
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
        let (id, plan) = self
            .identify_current(
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
        let scope = key_in_scope(&plan, &id.target, &req.resource_key);
        self.refused("RecordRestoreState", &id.job, scope)?;
        if id.check {
            // An in-sleep check puts back to sleep only what the night recorded; its record
            // stays as it is (the first record wins).
            let (live, _) = self
                .store
                .fetch(&id.plan_key(), &id.target)
                .await
                .map_err(|e| restore_status("read restore data", &e))?;
            if !live.contains_key(&req.resource_key) {
                return Err(Status::failed_precondition(format!(
                    "an in-sleep check records nothing new: {} has no live record of target {}",
                    req.resource_key, id.target
                )));
            }
        }
        let state: serde_json::Value = serde_json::from_str(&req.state_json).map_err(|e| {
            Status::invalid_argument(format!(
                "state_json of {} is not JSON: {e}",
                req.resource_key
            ))
        })?;
        // The sizing only feeds the savings ledger: one that cannot be read is dropped, never a
        // reason to refuse the write-ahead record.
        let sizing = (!req.sizing_json.is_empty())
            .then(|| serde_json::from_str::<hibernator_api::savings::Sizing>(&req.sizing_json))
            .and_then(|parsed| match parsed {
                Ok(s) => serde_json::to_value(s).ok(),
                Err(e) => {
                    warn!(plan = %id.plan, target = %id.target, resource = %req.resource_key, "ignoring an unreadable sizing: {e}");
                    None
                }
            });
        let outcome = self
            .store
            .record_sized(
                &id.plan_key(),
                &id.target,
                &id.cycle,
                &req.resource_key,
                state,
                sizing,
                self.clock.now(),
            )
            .await
            .map_err(|e| {
                warn!(plan = %id.plan, target = %id.target, "failed to persist restore data: {e}");
                restore_status("persist restore data", &e)
            })?;
        self.metrics
            .restore_record(matches!(outcome, RecordOutcome::Stored(_)));
        // The plan's account of what is asleep catches up at once, and the runner hears back
        // only when it has.
        self.poke(&id);
        self.accounted(&id, &req.resource_key).await?;
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
        let (id, plan) = self
            .identify_current(
                &request,
                &request.get_ref().execution_id,
                "FetchRestoreState",
            )
            .await?;
        let (mut resources, cycle) = self
            .store
            .fetch(&id.plan_key(), &id.target)
            .await
            .map_err(|e| restore_status("read restore data", &e))?;
        // A record the target could not have made (an edited ConfigMap) is not acted on.
        resources.retain(|key, _| match key_in_scope(&plan, &id.target, key) {
            Ok(()) => true,
            Err(e) => {
                warn!(plan = %id.plan, target = %id.target, "ignoring a restore record: {}", e.message());
                false
            }
        });
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
        // The caller is authenticated before a single entry is read.
        let result = match bearer(request.metadata()) {
            None => Err(Status::unauthenticated("missing bearer token")),
            Some(token) => {
                self.auth
                    .authenticate(&token, request.remote_addr().map(|a| a.ip()))
                    .await
            }
        };
        let id = self.refused("StreamLogs", "", result)?;
        let mut stream = request.into_inner();
        while let Some(entry) = stream.message().await? {
            let checked = same_execution(id.clone(), &entry.execution_id);
            self.refused("StreamLogs", &entry.execution_id, checked)?;
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
        let id = self
            .identify(&request, &request.get_ref().execution_id, "Heartbeat")
            .await?;
        // A runner whose execution was superseded (or whose plan is gone) is told to stop.
        Ok(Response::new(match self.auth.current(&id).await {
            Err(e) if e.code() != tonic::Code::Unavailable => HeartbeatResponse {
                stop: true,
                reason: e.message().to_string(),
            },
            _ => HeartbeatResponse {
                stop: false,
                reason: String::new(),
            },
        }))
    }

    async fn complete(&self, request: Request<Completion>) -> Result<Response<Ack>, Status> {
        let (id, _) = self
            .identify_current(&request, &request.get_ref().execution_id, "Complete")
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
                    ResourceResult::Recorded
                    | ResourceResult::Asleep
                    | ResourceResult::Drifted
                    | ResourceResult::Reapplied
                    | ResourceResult::Unspecified => return None,
                };
                let message = (!r.message.is_empty()).then(|| truncate(&r.message, 500));
                Some((r.resource_key.clone(), outcome, message))
            })
            .collect();
        if id.operation == Operation::WakeUp && !id.check && !results.is_empty() {
            self.store
                .mark_wake_up(
                    &id.plan_key(),
                    &id.target,
                    &id.cycle,
                    &results,
                    self.clock.now(),
                )
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
        let (drifted, reapplied) = (
            with(ResourceResult::Drifted),
            with(ResourceResult::Reapplied),
        );
        if id.check {
            self.metrics.drift(
                &id.target_type,
                drifted.len() + reapplied.len(),
                reapplied.len(),
            );
        }
        self.metrics.runner_duration(
            &id.target_type,
            if id.check {
                hibernator_api::naming::ENFORCE
            } else {
                id.operation.as_str()
            },
            c.success,
            c.duration_ms as f64 / 1000.0,
        );
        let text = if c.success { c.summary } else { c.error };
        self.reports.update(&id.namespace, &id.job, |rep| {
            rep.completion = Some((c.success, truncate(&text, 500)));
            rep.recorded = recorded;
            rep.restored = restored;
            rep.drifted = drifted;
            rep.reapplied = reapplied;
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

/// `id`, if it is the identity of `execution_id`.
fn same_execution(id: Identity, execution_id: &str) -> Result<Identity, Status> {
    if id.job == execution_id {
        Ok(id)
    } else {
        Err(Status::permission_denied(format!(
            "pod {}/{} does not belong to execution {execution_id}",
            id.namespace, id.pod
        )))
    }
}

/// A record key the target may hold (see [`hibernator_api::restore::key_scope`]); for
/// `workloads` targets that name their namespaces, the key's namespace must be one of them.
fn key_in_scope(plan: &HibernationPlan, target: &str, key: &str) -> Result<(), Status> {
    let target = plan
        .spec
        .targets
        .iter()
        .find(|t| t.name == target)
        .ok_or_else(|| {
            Status::permission_denied(format!("target {target} is no longer in the plan"))
        })?;
    let params = hibernator_api::TargetParameters::parse(target.type_, target.parameters.as_ref())
        .map_err(|e| Status::failed_precondition(format!("target {}: {e}", target.name)))?;
    hibernator_api::restore::key_in_scope(&params, key).map_err(|why| {
        Status::permission_denied(format!(
            "resource key {key:?} is out of scope for target {} ({}): {why}; nothing was recorded",
            target.name,
            target.type_.as_str()
        ))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cycle: &str, op: &str, attempt: i32) -> Job {
        serde_json::from_value(serde_json::json!({"metadata": {"labels": {
            labels::CYCLE: cycle, labels::OPERATION: op, labels::ATTEMPT: attempt.to_string(),
        }}}))
        .unwrap()
    }

    #[test]
    fn executions_are_ordered_by_cycle_operation_and_attempt_not_by_name() {
        let order = [
            job("20261127t0100", "hibernate", 1),
            job("20261127t0100", "hibernate", 2),
            job("20261127t0100", "hibernate", 10),
            job("20261127t0100", "wakeUp", 1),
            job("20261127t0100-2", "hibernate", 1),
            job("20261128t0100", "hibernate", 1),
        ];
        for pair in order.windows(2) {
            assert!(
                execution_order(&pair[0]) < execution_order(&pair[1]),
                "{:?} before {:?}",
                execution_order(&pair[0]),
                execution_order(&pair[1])
            );
        }
    }

    #[test]
    fn an_in_sleep_check_may_act_only_while_the_hibernation_it_checks_is_in_force() {
        let plan = |cycle: Option<(&str, &str)>| -> HibernationPlan {
            let mut p = hibernator_api::fixtures::PlanBuilder::new("p").build();
            p.status = cycle.map(|(id, op)| {
                serde_json::from_value(serde_json::json!({
                    "currentCycle": {"id": id, "operation": op, "startedAt": "2026-11-27T01:00:00Z"}
                }))
                .unwrap()
            });
            p
        };
        let check = job("20261127t0100", hibernator_api::naming::ENFORCE, 3);
        let night = plan(Some(("20261127t0100", "hibernate")));
        assert_eq!(check_out_of_force(&night, &check), None);
        let why = check_out_of_force(&plan(Some(("20261127t0100", "wakeUp"))), &check).unwrap();
        assert_eq!(
            why,
            "the hibernation of cycle 20261127t0100 it checks has ended (wakeUp began)"
        );
        for other in [plan(Some(("20261128t0100", "hibernate"))), plan(None)] {
            assert_eq!(
                check_out_of_force(&other, &check).unwrap(),
                "the hibernation of cycle 20261127t0100 it checks is no longer in force"
            );
        }
        // Operations are judged by the Jobs that supersede them, not by the cycle.
        let wake = job("20261127t0100", "wakeUp", 1);
        assert_eq!(check_out_of_force(&night, &wake), None);
    }

    #[test]
    fn the_bounded_cache_forgets_the_oldest_entry_when_full_and_old_ones_after_their_age() {
        let mut cache: Bounded<u64, u64> = Bounded::new(Duration::from_secs(60));
        cache.insert(0, 0);
        std::thread::sleep(Duration::from_millis(5));
        for i in 1..CACHE_ENTRIES as u64 + 10 {
            cache.insert(i, i);
        }
        assert_eq!(cache.len(), CACHE_ENTRIES);
        assert_eq!(cache.get(&0), None);
        assert_eq!(
            cache.get(&(CACHE_ENTRIES as u64 + 9)),
            Some(CACHE_ENTRIES as u64 + 9)
        );
        let mut young: Bounded<u64, u64> = Bounded::new(Duration::ZERO);
        young.insert(1, 1);
        assert_eq!(young.get(&1), None);
    }
}
