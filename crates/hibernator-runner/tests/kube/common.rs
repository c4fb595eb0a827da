//! The harness of the Kubernetes tests: the shared test cluster (real kube-apiserver and
//! controllers, the process kubelet running pods as local processes), a namespace per test,
//! the in-memory controller, and the real runner binary, run as a process with the kubeconfig
//! of a ServiceAccount that has exactly the runner's ClusterRole
//! (`deploy/rbac/runner-in-cluster-clusterrole.yaml`), or as a pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use hibernator_proto::testing::FakeController;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use kube_testbed::{Image, TestCluster};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

pub const TOKEN: &str = "kube-tests-token-7f3a9c";
pub const CYCLE: &str = "20261126t0100";
/// An image the kubelet runs as `/bin/sleep` (its args: the seconds).
pub const SLEEPER: &str = "sleeper:e2e";
/// An image the kubelet runs as the runner binary.
pub const RUNNER_IMAGE: &str = "hibernator-runner:kube-tests";
/// The runner's ClusterRole as these tests install it (its own name, so that a Helm release in
/// the same cluster can own the chart's copy).
pub const RUNNER_CLUSTER_ROLE: &str = "kube-tests-hibernator-runner-in-cluster";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/<name> sits two levels below the root")
        .to_path_buf()
}

/// The shared cluster with the images mapped and the runner's ClusterRole installed.
pub async fn cluster() -> Result<&'static TestCluster> {
    static READY: OnceCell<std::result::Result<(), String>> = OnceCell::const_new();
    let cluster = TestCluster::shared()
        .await
        .context("the test cluster must start for these tests")?;
    READY
        .get_or_init(|| async {
            cluster.map_image(SLEEPER, Image::new("/bin/sleep"));
            cluster.map_image(
                RUNNER_IMAGE,
                Image::new(env!("CARGO_BIN_EXE_hibernator-runner")),
            );
            install_runner_role(cluster)
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(cluster)
}

async fn install_runner_role(cluster: &TestCluster) -> Result<()> {
    let path = root().join("deploy/rbac/runner-in-cluster-clusterrole.yaml");
    let text = std::fs::read_to_string(&path)?;
    let mut role: Value = serde_saphyr::from_str(&text)?;
    role["metadata"]["name"] = json!(RUNNER_CLUSTER_ROLE);
    apply(&cluster.client()?, &role).await
}

/// Server-side apply of any object (field manager `kube-tests`).
pub async fn apply(client: &Client, obj: &Value) -> Result<()> {
    let api_version = obj["apiVersion"].as_str().context("apiVersion")?;
    let kind = obj["kind"].as_str().context("kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("failed to discover {api_version}/{kind}"))?;
    let name = obj["metadata"]["name"].as_str().context("metadata.name")?;
    let api: Api<DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        (kube::discovery::Scope::Namespaced, None) => bail!("{kind} {name} needs a namespace"),
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply("kube-tests").force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("failed to apply {kind} {name}"))?;
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
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

/// One test's world: a namespace, a ServiceAccount `runner` bound to the runner's ClusterRole
/// and a kubeconfig with its token, and an in-memory controller.
pub struct Kit {
    pub cluster: &'static TestCluster,
    pub client: Client,
    pub ns: String,
    pub controller: FakeController,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    runs: std::cell::Cell<u32>,
}

impl Kit {
    pub async fn new(prefix: &str) -> Result<Kit> {
        let cluster = cluster().await?;
        let client = cluster.client()?;
        let ns = cluster.create_namespace(prefix).await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        sas.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "runner"}}))?,
        )
        .await?;
        apply(
            &client,
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("hibernator-runner-{ns}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RUNNER_CLUSTER_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": ns}],
            }),
        )
        .await?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("token"), TOKEN)?;
        let kubeconfig = dir.path().join("runner.kubeconfig");
        let token = service_account_token(&client, &ns, "runner").await?;
        write_kubeconfig(&kubeconfig, cluster, &token)?;
        let controller = FakeController::start(TOKEN, CYCLE).await?;
        Ok(Kit {
            cluster,
            client,
            ns,
            controller,
            dir,
            kubeconfig,
            runs: std::cell::Cell::new(0),
        })
    }

    /// A runner process for `target` of `type_` doing `operation`, reaching the cluster with the
    /// `runner` ServiceAccount's kubeconfig.
    pub fn runner(&self, type_: &str, target: &str, operation: &str) -> Runner {
        self.runs.set(self.runs.get() + 1);
        let n = self.runs.get();
        let mut env = BTreeMap::new();
        for (k, v) in [
            (
                "HIBERNATOR_EXECUTION_ID",
                format!("{target}-{operation}-{n}").to_lowercase(),
            ),
            ("HIBERNATOR_PLAN", "nightly".into()),
            ("HIBERNATOR_NAMESPACE", self.ns.clone()),
            ("HIBERNATOR_TARGET", target.into()),
            ("HIBERNATOR_TARGET_TYPE", type_.into()),
            ("HIBERNATOR_OPERATION", operation.into()),
            ("HIBERNATOR_CYCLE_ID", CYCLE.into()),
            ("HIBERNATOR_ATTEMPT", "1".into()),
            (
                "HIBERNATOR_CONNECTOR",
                json!({"kind": "kubernetes", "kubeconfigPath": self.kubeconfig}).to_string(),
            ),
            ("HIBERNATOR_CONTROLLER_ENDPOINT", self.controller.endpoint()),
            (
                "HIBERNATOR_TOKEN_PATH",
                self.dir.path().join("token").display().to_string(),
            ),
            ("HIBERNATOR_POLL_INTERVAL_MS", "200".into()),
            ("HIBERNATOR_WAIT_TIMEOUT_SECONDS", "90".into()),
            ("HIBERNATOR_CONTROLLER_RETRY_SECONDS", "2".into()),
            (
                "HIBERNATOR_TERMINATION_MESSAGE_PATH",
                self.dir
                    .path()
                    .join(format!("termination-{n}"))
                    .display()
                    .to_string(),
            ),
        ] {
            env.insert(k.to_string(), v);
        }
        Runner { env }
    }

    /// The restore records as JSON.
    pub fn records(&self) -> BTreeMap<String, Value> {
        self.controller
            .records()
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).expect("records are JSON")))
            .collect()
    }

    /// An in-sleep check of `target` in `mode` (`Report`, `Reapply`) that must succeed.
    pub async fn check(
        &self,
        type_: &str,
        target: &str,
        mode: &str,
        params: &Value,
    ) -> Result<Ran> {
        Ok(self
            .runner(type_, target, "enforce")
            .env("HIBERNATOR_ENFORCE_MODE", mode)
            .param(params.clone())
            .run()
            .await?
            .ok())
    }

    /// The writes of the `runner` ServiceAccount that the API server accepted (a write that
    /// lost an optimistic-concurrency race, 409, changed nothing).
    pub fn runner_changes(&self) -> Result<Vec<kube_testbed::AuditEvent>> {
        Ok(self
            .runner_writes()?
            .into_iter()
            .filter(|e| (200..300).contains(&e.code()))
            .collect())
    }

    /// Every write the `runner` ServiceAccount made so far.
    pub fn runner_writes(&self) -> Result<Vec<kube_testbed::AuditEvent>> {
        let user = format!("system:serviceaccount:{}:runner", self.ns);
        Ok(self
            .cluster
            .audit_events()?
            .into_iter()
            .filter(|e| e.user.username == user && e.is_write())
            // Asking who it is (SelfSubjectReview) is a create, but changes nothing.
            .filter(|e| {
                e.object_ref.as_ref().and_then(|r| r.resource.as_deref())
                    != Some("selfsubjectreviews")
            })
            .collect())
    }
}

/// A token of a ServiceAccount (TokenRequest, one hour).
pub async fn service_account_token(client: &Client, ns: &str, name: &str) -> Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create_token_request(
        name,
        &PostParams::default(),
        &TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?
    .status
    .and_then(|s| s.token)
    .context("the token request returned no token")
}

fn write_kubeconfig(path: &Path, cluster: &TestCluster, token: &str) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(cluster.ca_pem());
    let text = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": cluster.server_url(), "certificate-authority-data": ca}}],
        "users": [{"name": "runner", "user": {"token": token}}],
        "contexts": [{"name": "runner", "context": {"cluster": "testbed", "user": "runner"}}],
        "current-context": "runner",
    });
    std::fs::write(path, serde_json::to_string_pretty(&text)?)?;
    Ok(())
}

pub struct Runner {
    pub env: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub termination: String,
}

impl Ran {
    /// Asserts exit 0 and returns self.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "runner failed (stderr: {}): {self:#?}",
            self.stderr
        );
        self
    }

    /// Asserts a failure with `code` and returns self.
    pub fn failed(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit {code}: {self:#?}");
        self
    }

    pub fn has(&self, text: &str) -> bool {
        self.stdout.contains(text)
    }

    /// The summary without its duration (`checked 3 NodePools: 1 asleep, ...`).
    pub fn summary(&self) -> &str {
        self.termination.split(" in ").next().unwrap_or_default()
    }

    /// The `done:` line.
    pub fn done(&self) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with("done: "))
            .unwrap_or_default()
    }
}

impl Runner {
    pub fn param(mut self, parameters: Value) -> Self {
        self.env
            .insert("HIBERNATOR_PARAMETERS".into(), parameters.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hibernator-runner"));
        command
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Starts the runner and leaves it running.
    pub fn spawn(self) -> Result<tokio::process::Child> {
        Ok(self.command().spawn()?)
    }

    /// Runs to the end (at most three minutes).
    pub async fn run(self) -> Result<Ran> {
        let termination = PathBuf::from(&self.env["HIBERNATOR_TERMINATION_MESSAGE_PATH"]);
        let child = self.command().spawn()?;
        let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .context("the runner did not finish within 3 minutes")??;
        Ok(Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            termination: std::fs::read_to_string(termination).unwrap_or_default(),
        })
    }
}

// ---- workloads ----

fn pod_template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": SLEEPER, "args": ["3600"]}],
        },
    })
}

/// A Deployment of sleepers.
pub fn deployment(ns: &str, name: &str, replicas: i32, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
        },
    })
}

/// A StatefulSet of sleepers.
pub fn statefulset(ns: &str, name: &str, replicas: i32, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
        },
    })
}

/// `(spec.replicas, status.readyReplicas)` of a Deployment or StatefulSet (`kind` lower case
/// plural: `deployments`, `statefulsets`).
/// `deployments` or `statefulsets` as an API resource.
fn workload_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "apps",
            "v1",
            if kind == "deployments" {
                "Deployment"
            } else {
                "StatefulSet"
            },
        ),
        kind,
    )
}

pub async fn replicas(client: &Client, ns: &str, kind: &str, name: &str) -> Result<(i64, i64)> {
    let ar = workload_resource(kind);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let o = api.get(name).await?;
    Ok((
        o.data["spec"]["replicas"].as_i64().unwrap_or(-1),
        o.data["status"]["readyReplicas"].as_i64().unwrap_or(0),
    ))
}

/// Waits until the workload has `n` desired and `n` ready replicas.
pub async fn wait_ready(client: &Client, ns: &str, kind: &str, name: &str, n: i64) -> Result<()> {
    eventually(
        &format!("{kind} {ns}/{name} to have {n} ready replicas"),
        Duration::from_secs(90),
        || async move {
            let (spec, ready) = replicas(client, ns, kind, name).await?;
            Ok((spec == n && ready == n).then_some(()))
        },
    )
    .await
}

/// Pods of the namespace that are not terminating, by name.
pub async fn live_pods(client: &Client, ns: &str) -> Result<Vec<String>> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect())
}

/// What the last completion said of each resource (in-sleep checks): `(key, result)` by key,
/// the test's namespace written `NS`.
pub fn last_results(kit: &Kit) -> Vec<(String, hibernator_proto::v1::resource_result::Result)> {
    let mut results: Vec<_> = kit
        .controller
        .observed()
        .completions
        .last()
        .map(|c| {
            c.resources
                .iter()
                .map(|r| {
                    let result = hibernator_proto::v1::resource_result::Result::try_from(r.result)
                        .expect("a known result");
                    (r.resource_key.replace(&kit.ns, "NS"), result)
                })
                .collect()
        })
        .unwrap_or_default();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}

/// Sets a workload's replicas through `/scale`, as someone with kubectl would.
pub async fn scale_by_hand(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    n: i32,
) -> Result<()> {
    let ar = workload_resource(kind);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": n}})),
    )
    .await?;
    Ok(())
}
