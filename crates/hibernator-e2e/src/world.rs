//! A world for end-to-end tests: the shared test cluster (real control plane, process kubelet),
//! a namespace of the test's own, moto with a small AWS estate, and controller processes
//! running with the permissions of their own ClusterRole and a simulated clock.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hibernator_api::plan::HibernationPlan;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use kube_testbed::{Image, TestCluster};
use moto_server::MotoServer;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::root;

/// The controller's ClusterRole (the rules of `deploy/rbac/`) as the tests install it.
pub const E2E_CLUSTER_ROLE: &str = "e2e-hibernator-controller";

/// The image name runner Jobs use in these tests; the kubelet runs the runner binary for it.
pub const RUNNER_IMAGE: &str = "hibernator-runner:e2e";

/// Built binaries of the workspace.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// hibernator-controller.
    pub controller: PathBuf,
    /// hibernator-runner.
    pub runner: PathBuf,
    /// kubectl-hibernator.
    pub cli: PathBuf,
    /// xtask (what `cargo xtask` runs).
    pub xtask: PathBuf,
}

/// Builds (once per test process) and returns the workspace binaries.
pub fn binaries() -> Result<&'static Binaries> {
    static BINS: OnceLock<std::result::Result<Binaries, String>> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            // The same command `.ci/run` runs before the tests, so that this is a no-op there
            // (a different package selection would resolve features differently and rebuild).
            .args(["build", "--workspace", "--bins"])
            .current_dir(root())
            .output()
            .map_err(|e| format!("failed to run cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("debug");
        Ok(Binaries {
            controller: dir.join("hibernator-controller"),
            runner: dir.join("hibernator-runner"),
            cli: dir.join("kubectl-hibernator"),
            xtask: dir.join("xtask"),
        })
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The shared test cluster with the CRDs installed and the runner image mapped.
pub async fn cluster() -> Result<&'static TestCluster> {
    static READY: OnceCell<std::result::Result<(), String>> = OnceCell::const_new();
    let cluster = TestCluster::shared().await?;
    READY
        .get_or_init(|| async { prepare(cluster).await.map_err(|e| format!("{e:#}")) })
        .await
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(cluster)
}

/// A test cluster of the caller's own, prepared like the shared one, for a test that restarts
/// the API server, watches every namespace or uses fixed namespace names: it can then run
/// beside the others in one test binary. It stops when dropped.
pub async fn private_cluster() -> Result<TestCluster> {
    let cluster = TestCluster::start(Default::default()).await?;
    prepare(&cluster).await?;
    Ok(cluster)
}

/// The CRDs, the controller's ClusterRole and the runner image.
async fn prepare(cluster: &TestCluster) -> Result<()> {
    let b = binaries()?;
    cluster.map_image(RUNNER_IMAGE, Image::new(&b.runner));
    install_crds(cluster).await?;
    install_controller_role(cluster).await
}

/// The cluster of a [`World`]: the shared one, or one of its own.
pub enum WorldCluster {
    /// The process's shared cluster.
    Shared(&'static TestCluster),
    /// A cluster of this world alone, stopped with it.
    Own(Box<TestCluster>),
}

impl std::ops::Deref for WorldCluster {
    type Target = TestCluster;

    fn deref(&self) -> &TestCluster {
        match self {
            WorldCluster::Shared(c) => c,
            WorldCluster::Own(c) => c,
        }
    }
}

async fn install_crds(cluster: &TestCluster) -> Result<()> {
    let crds = hibernator_api::crds::all()
        .into_iter()
        .map(|(_, crd)| serde_json::to_value(crd))
        .collect::<serde_json::Result<Vec<Value>>>()?;
    apply_crds(&cluster.client()?, &crds).await
}

/// Applies CustomResourceDefinitions and waits until the API server serves each of them.
pub async fn apply_crds(client: &Client, crds: &[Value]) -> Result<()> {
    for crd in crds {
        apply(client, crd).await?;
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().context("a CRD's name")?;
        wait_for(
            Duration::from_secs(60),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                async move {
                    api.get(name)
                        .await
                        .ok()?
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// The documents of the YAML files in `dir` (its `*.yaml`, in name order).
pub fn yaml_dir(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        docs.extend(
            serde_saphyr::from_multiple::<Value>(&text)
                .with_context(|| format!("{}", f.display()))?
                .into_iter()
                .filter(|d| !d.is_null()),
        );
    }
    Ok(docs)
}

/// The documents of a YAML file of the repository.
pub fn yaml_docs(path: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(root().join(path))
        .with_context(|| format!("failed to read {path}"))?;
    Ok(serde_saphyr::from_multiple::<Value>(&text)?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect())
}

/// Applies any object (server-side apply, field manager `e2e`).
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
        (kube::discovery::Scope::Namespaced, None) => {
            Api::default_namespaced_with(client.clone(), &ar)
        }
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    };
    let _: &ApiResource = &ar;
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(obj))
        .await
        .with_context(|| format!("failed to apply {kind} {name}"))?;
    Ok(())
}

async fn install_controller_role(cluster: &TestCluster) -> Result<()> {
    let client = cluster.client()?;
    // Every ClusterRole of the file (the controller's and the notifications' Secret reading) as
    // one, under its own name, so that a Helm release in the same cluster can own its copies.
    let mut rules = Vec::new();
    for doc in yaml_docs("deploy/rbac/controller-clusterrole.yaml")? {
        if doc["kind"] == "ClusterRole" {
            rules.extend(doc["rules"].as_array().cloned().unwrap_or_default());
        }
    }
    apply(
        &client,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": E2E_CLUSTER_ROLE},
            "rules": rules,
        }),
    )
    .await?;
    Ok(())
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// One test's world.
pub struct World {
    /// The cluster.
    pub cluster: WorldCluster,
    /// An admin client.
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    /// The test's moto.
    pub moto: MotoServer,
    dir: PathBuf,
    controller_kubeconfig: PathBuf,
}

impl World {
    /// A namespace with the runner and controller ServiceAccounts (the controller bound to its
    /// ClusterRole and leader-election Role), a static-credentials Secret for moto, and moto.
    pub async fn new(prefix: &str) -> Result<World> {
        World::on(WorldCluster::Shared(cluster().await?), prefix).await
    }

    /// A world as [`World::new`] makes it, on a test cluster of its own
    /// ([`private_cluster`]).
    pub async fn alone(prefix: &str) -> Result<World> {
        let cluster = private_cluster().await?;
        World::on(WorldCluster::Own(Box::new(cluster)), prefix).await
    }

    async fn on(cluster: WorldCluster, prefix: &str) -> Result<World> {
        let client = cluster.client()?;
        let ns = cluster.create_namespace(prefix).await?;
        let dir = crate::tempdir_for(&ns);
        let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
        let pp = PostParams::default();
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        for name in ["hibernator-runner", "hibernator-controller"] {
            sas.create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await
            .with_context(|| format!("failed to create ServiceAccount {name}"))?;
        }
        // The controller's namespaced Roles (leader election, its own gRPC certificate).
        for mut doc in yaml_docs("deploy/rbac/controller-clusterrole.yaml")? {
            if doc["kind"] == "Role" {
                doc["metadata"]["namespace"] = json!(ns);
                apply(&client, &doc).await?;
                let name = doc["metadata"]["name"].clone();
                apply(
                    &client,
                    &json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": name, "namespace": ns},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                        "subjects": [{"kind": "ServiceAccount", "name": "hibernator-controller", "namespace": ns}],
                    }),
                )
                .await?;
            }
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        secrets
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "metadata": {"name": "aws-keys"},
                    "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-value"},
                }))?,
            )
            .await
            .context("failed to create Secret aws-keys")?;
        // The controller's own credentials: a token of its ServiceAccount.
        let token = sas
            .create_token_request(
                "hibernator-controller",
                &pp,
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(7200),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .context("failed to request a token for the controller")?
            .status
            .and_then(|s| s.token)
            .context("the token request returned no token")?;
        let controller_kubeconfig = dir.join("controller.kubeconfig");
        write_kubeconfig(
            &controller_kubeconfig,
            &cluster.server_url(),
            cluster.ca_pem(),
            &token,
            &ns,
        )?;
        let world = World {
            cluster,
            client,
            ns,
            moto,
            dir,
            controller_kubeconfig,
        };
        world
            .bind("hibernator-controller", E2E_CLUSTER_ROLE, "")
            .await?;
        Ok(world)
    }

    /// Creates AWS resources in moto (see `estate.py`); returns the snapshot after creation.
    pub fn estate(&self, spec: Value) -> Result<Value> {
        estate_at(self.moto.endpoint(), &["create", &spec.to_string()])
    }

    /// The state of every AWS resource in moto.
    pub fn snapshot(&self) -> Result<Value> {
        estate_at(self.moto.endpoint(), &["snapshot"])
    }

    /// Applies an object into the test's namespace.
    pub async fn apply(&self, mut obj: Value) -> Result<()> {
        obj["metadata"]["namespace"] = json!(self.ns);
        apply(&self.client, &obj).await
    }

    /// A CloudProvider `name` for moto's account with static keys from Secret aws-keys.
    pub async fn cloud_provider(&self, name: &str) -> Result<()> {
        self.apply(json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "CloudProvider",
            "metadata": {"name": name},
            "spec": {"type": "aws", "aws": {"accountId": moto_server::ACCOUNT_ID, "region": "us-east-1",
                     "auth": {"static": {"secretRef": {"name": "aws-keys"}}}}},
        }))
        .await
    }

    /// A K8SCluster `name` for the cluster the runners run in (`k8s: {inCluster: true}`).
    pub async fn in_cluster(&self, name: &str) -> Result<()> {
        self.apply(json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "K8SCluster",
            "metadata": {"name": name},
            "spec": {"k8s": {"inCluster": true}},
        }))
        .await
    }

    /// A K8SCluster `name` for the EKS cluster `cluster` in moto, through CloudProvider
    /// `provider`.
    pub async fn eks_cluster(&self, name: &str, provider: &str, cluster: &str) -> Result<()> {
        self.apply(json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "K8SCluster",
            "metadata": {"name": name},
            "spec": {"providerRef": {"kind": "CloudProvider", "name": provider},
                     "eks": {"name": cluster, "region": "us-east-1"}},
        }))
        .await
    }

    /// The plan `name`.
    pub async fn plan(&self, name: &str) -> Result<HibernationPlan> {
        Api::<HibernationPlan>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .with_context(|| format!("failed to read plan {name}"))
    }

    /// Waits until the plan satisfies `pred`; the error shows the last status.
    pub async fn wait_plan(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&HibernationPlan) -> bool,
    ) -> Result<HibernationPlan> {
        let api: Api<HibernationPlan> = Api::namespaced(self.client.clone(), &self.ns);
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(Some(p)) = api.get_opt(name).await {
                if pred(&p) {
                    return Ok(p);
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                let status = last
                    .and_then(|p| p.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
                    .unwrap_or_else(|| "no status".into());
                bail!(
                    "timed out after {timeout:?} waiting for plan {name}: {what}; last status:\n{status}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a controller for this namespace.
    pub fn controller(&self, opts: ControllerOptions) -> Result<ControllerProcess> {
        let b = binaries()?;
        let (grpc, http) = match opts.ports {
            Some(p) => p,
            None => (free_port()?, free_port()?),
        };
        let log_path = self
            .dir
            .join(format!("controller-{}-{grpc}.log", opts.identity));
        // Appended: a controller restarted at the same address keeps the earlier log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(opts.binary.as_ref().unwrap_or(&b.controller));
        cmd.env("KUBECONFIG", &self.controller_kubeconfig)
            // E2E_CONTROLLER_LOG overrides the controller's log filter when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("E2E_CONTROLLER_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .env_remove("WATCH_NAMESPACE")
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args([
                "--controller-endpoint",
                &format!(
                    "{}://127.0.0.1:{grpc}",
                    if opts.plaintext { "http" } else { "https" }
                ),
            ])
            .args(["--runner-image", RUNNER_IMAGE])
            .args(["--runner-service-account", "hibernator-runner"])
            .args(["--runner-ttl-seconds", "3600"])
            .args([
                "--runner-env",
                &format!(
                    "AWS_ENDPOINT_URL={}",
                    opts.aws_endpoint.as_deref().unwrap_or(self.moto.endpoint())
                ),
            ])
            .args(["--runner-env", "HIBERNATOR_POLL_INTERVAL_MS=100"])
            .args(["--pod-name", &opts.identity])
            .args(["--log-format", "text"])
            .args(["--clock-start", &opts.clock_start.to_string()])
            .args(["--clock-speed", &opts.clock_speed.to_string()]);
        if opts.leader_elect {
            cmd.args(["--leader-elect", "--leader-election-namespace", &self.ns])
                .args(["--leader-election-duration-seconds", "10"]);
        }
        if !opts.watch_all_namespaces {
            cmd.args(["--namespace", &self.ns]);
        }
        match (&opts.grpc_tls, opts.plaintext) {
            (_, true) => {
                cmd.arg("--grpc-plaintext");
            }
            (Some((cert, key)), false) => {
                cmd.arg("--grpc-tls-cert")
                    .arg(cert)
                    .arg("--grpc-tls-key")
                    .arg(key);
            }
            // The default: the controller's own certificate, in a Secret of this namespace.
            (None, false) => {
                cmd.args(["--grpc-tls-secret-namespace", &self.ns]);
            }
        }
        cmd.args(&opts.extra_args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("failed to start the controller")?;
        Ok(ControllerProcess {
            child,
            http_port: http,
            grpc_port: grpc,
            log: log_path,
        })
    }

    /// Where this world keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA bundle of the controller's own gRPC certificate (Secret `hibernator-grpc-tls`),
    /// once a controller has made it.
    pub async fn grpc_ca(&self) -> Result<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        wait_for(
            Duration::from_secs(60),
            "the controller's gRPC certificate Secret",
            || async {
                let s = secrets.get_opt("hibernator-grpc-tls").await.ok()??;
                let ca = s.data?.get("ca.crt")?.0.clone();
                String::from_utf8(ca).ok()
            },
        )
        .await
    }
}

/// How to start a controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Schedule time at start.
    pub clock_start: jiff::Timestamp,
    /// Schedule seconds per real second.
    pub clock_speed: f64,
    /// Instance name (pod name).
    pub identity: String,
    /// Run leader election.
    pub leader_elect: bool,
    /// Extra flags.
    pub extra_args: Vec<String>,
    /// Listen on these ports `(grpc, http)` instead of free ones (a restarted controller
    /// keeps its address, as a Service would).
    pub ports: Option<(u16, u16)>,
    /// Serve gRPC over TLS with this certificate and key (PEM files) instead of the
    /// controller's own certificate.
    pub grpc_tls: Option<(PathBuf, PathBuf)>,
    /// Serve gRPC without TLS (`--grpc-plaintext`).
    pub plaintext: bool,
    /// Watch every namespace, not only this world's (only for a test alone on its cluster:
    /// the controller acts on every plan it sees).
    pub watch_all_namespaces: bool,
    /// Where runners reach AWS (a fault proxy in front of moto); moto itself by default.
    pub aws_endpoint: Option<String>,
    /// Extra environment of the controller process.
    pub env: Vec<(String, String)>,
    /// Run this controller executable instead of the workspace's debug build (the benchmark
    /// runs the release build).
    pub binary: Option<PathBuf>,
}

impl ControllerOptions {
    /// A controller whose clock starts at `start` and runs `speed` times faster.
    pub fn at(start: &str, speed: f64) -> Self {
        Self {
            clock_start: start.parse().expect("an RFC 3339 instant"),
            clock_speed: speed,
            identity: "controller-0".into(),
            leader_elect: false,
            extra_args: vec![],
            ports: None,
            grpc_tls: None,
            plaintext: false,
            watch_all_namespaces: false,
            aws_endpoint: None,
            env: vec![],
            binary: None,
        }
    }
}

/// A running controller process; killed on drop.
pub struct ControllerProcess {
    child: Child,
    http_port: u16,
    grpc_port: u16,
    log: PathBuf,
}

impl ControllerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        http_get(self.http_port, "/metrics").await
    }

    /// The ports `(grpc, http)` it listens on.
    pub fn ports(&self) -> (u16, u16) {
        (self.grpc_port, self.http_port)
    }

    /// The gRPC endpoint for runners (TLS).
    pub fn grpc_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// A gRPC client of this controller that trusts `ca_pem` (see [`World::grpc_ca`]).
    pub async fn grpc_client(
        &self,
        ca_pem: &str,
    ) -> Result<hibernator_proto::v1::runner_client::RunnerClient<tonic::transport::Channel>> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let channel = Endpoint::from_shared(self.grpc_endpoint())?
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))?
            .connect()
            .await
            .context("failed to connect to the controller's gRPC service")?;
        Ok(hibernator_proto::v1::runner_client::RunnerClient::new(
            channel,
        ))
    }

    /// Whether `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        http_get(self.http_port, "/readyz").await.is_ok()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of `GET path` from 127.0.0.1:`port` (HTTP/1.0, plain).
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `estate.py` against moto at `endpoint` (see the script for the commands).
pub fn estate_at(endpoint: &str, args: &[&str]) -> Result<Value> {
    let venv = moto_server::install()?;
    let out = Command::new(venv.join("bin/python"))
        .arg(root().join("crates/hibernator-e2e/estate.py"))
        .arg(endpoint)
        .args(args)
        .output()
        .context("failed to run estate.py")?;
    if !out.status.success() {
        bail!(
            "estate.py {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("estate.py prints JSON")
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, token: &str, ns: &str) -> Result<()> {
    use base64::Engine as _;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: controller\n  user:\n    token: {token}\ncontexts:\n- name: controller\n  context:\n    cluster: testbed\n    user: controller\n    namespace: {ns}\ncurrent-context: controller\n",
        encode(ca_pem.as_bytes())
    );
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The status of every resource kind the tests compare.
pub type Snapshot = BTreeMap<String, Value>;

/// A plan of `noop` targets `t0..t{n-1}` (no connector) with the seed's schedule; `extra`
/// is merged into the spec.
pub fn noop_plan(name: &str, targets: &[(&str, Value)], extra: Value) -> Value {
    let mut spec = json!({
        "schedule": {"timezone": "America/New_York",
                     "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
        "execution": {"strategy": {"type": "Parallel"}},
        "targets": targets.iter().map(|(n, p)| json!({"name": n, "type": "noop", "parameters": p})).collect::<Vec<_>>(),
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The phase of a plan, if reported.
pub fn phase(p: &HibernationPlan) -> Option<hibernator_api::Phase> {
    p.status.as_ref().and_then(|s| s.phase)
}

/// `(status, reason)` of a plan condition.
pub fn condition(p: &HibernationPlan, t: &str) -> Option<(String, String)> {
    p.status
        .as_ref()
        .and_then(|s| hibernator_api::common::find_condition(&s.conditions, t))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// `(status, reason)` as owned strings, for comparisons.
pub fn cond(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.to_string(), reason.to_string()))
}

/// A target's state in the plan's status.
pub fn target_state(p: &HibernationPlan, target: &str) -> Option<hibernator_api::TargetState> {
    p.status
        .as_ref()?
        .targets
        .iter()
        .find(|t| t.name == target)
        .map(|t| t.state)
}

impl World {
    /// Runner Jobs of a target and operation (`hibernate` / `wakeUp`), oldest first.
    pub async fn jobs(
        &self,
        target: &str,
        operation: &str,
    ) -> Result<Vec<k8s_openapi::api::batch::v1::Job>> {
        let api: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(self.client.clone(), &self.ns);
        let mut items = api
            .list(&kube::api::ListParams::default().labels(&format!(
                "hibernator.ardikasaputro.io/target={target},hibernator.ardikasaputro.io/operation={operation}"
            )))
            .await?
            .items;
        items.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
        Ok(items)
    }

    /// Merge-patches the plan (as a user would, with kubectl).
    pub async fn patch_plan(&self, name: &str, patch: Value) -> Result<()> {
        Api::<HibernationPlan>::namespaced(self.client.clone(), &self.ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("failed to patch plan {name}"))?;
        Ok(())
    }

    /// The restore data of a plan, by target.
    pub async fn restore_data(&self, plan: &str) -> Result<BTreeMap<String, String>> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &self.ns);
        Ok(api
            .get_opt(&hibernator_api::naming::restore_config_map(plan))
            .await?
            .and_then(|c| c.data)
            .unwrap_or_default())
    }
}

/// The runner's in-cluster ClusterRole as the tests install it (renamed, so that a Helm
/// release in the same cluster can own the chart's copy).
pub const RUNNER_CLUSTER_ROLE: &str = "e2e-hibernator-runner-in-cluster";

/// An image whose pods run `/bin/sleep` (for workloads to scale).
pub const SLEEPER: &str = "sleeper:e2e";

impl World {
    /// Runs `kubectl-hibernator ARGS -n <namespace>` as the cluster admin: success and output.
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&binaries().expect("binaries").cli)
            .args(args)
            .args(["-n", &self.ns])
            .env("KUBECONFIG", self.cluster.kubeconfig_path())
            .output()
            .expect("kubectl-hibernator runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Waits for a pod with these labels to be Running.
    pub async fn running_pod(&self, selector: &str, timeout: Duration) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        wait_for(timeout, &format!("a running pod {selector}"), || async {
            pods.list(&kube::api::ListParams::default().labels(selector))
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await
    }

    /// Lets this namespace's runner pods act on workloads of the cluster they run in: the
    /// runner's in-cluster ClusterRole (`deploy/rbac/`), bound to their ServiceAccount; and maps
    /// [`SLEEPER`] for the workloads' pods.
    pub async fn runners_in_cluster(&self) -> Result<()> {
        self.cluster
            .map_image(SLEEPER, kube_testbed::Image::new("/bin/sleep"));
        for mut doc in yaml_docs("deploy/rbac/runner-in-cluster-clusterrole.yaml")? {
            doc["metadata"]["name"] = json!(RUNNER_CLUSTER_ROLE);
            apply(&self.client, &doc).await?;
        }
        self.bind("hibernator-runner", RUNNER_CLUSTER_ROLE, "")
            .await
    }

    /// Binds the namespace's ServiceAccount `account` to ClusterRole `role` (binding
    /// `<account>-<namespace><suffix>`).
    pub async fn bind(&self, account: &str, role: &str, suffix: &str) -> Result<()> {
        apply(
            &self.client,
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("{account}-{}{suffix}", self.ns)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": self.ns}],
            }),
        )
        .await
    }
}

/// Schedule time of a controller started at `start` with `speed`, `elapsed` real time later.
pub fn sim_now(opts: &ControllerOptions, started: Instant) -> jiff::Timestamp {
    opts.clock_start
        + jiff::SignedDuration::from_secs_f64(started.elapsed().as_secs_f64() * opts.clock_speed)
}

impl World {
    /// Every write the API server recorded from this namespace's controller ServiceAccount.
    pub fn controller_writes(&self) -> Result<Vec<kube_testbed::AuditEvent>> {
        let user = format!("system:serviceaccount:{}:hibernator-controller", self.ns);
        Ok(self
            .cluster
            .audit_events()?
            .into_iter()
            .filter(|e| e.user.username == user && e.is_write())
            .collect())
    }
}

/// Checks that every write of the controller was accepted (or refused only in the ways it
/// expects) and that it wrote only what it may: plan status and its own finalizer (never
/// spec, labels or annotations), exception and connector status, runner Jobs, the restore ConfigMap, Events,
/// TokenReviews and Leases, always with field manager `hibernator-controller` (Leases:
/// `hibernator-controller-<instance>`). Returns the writes by kind, for further checks.
pub fn check_controller_writes(
    writes: &[kube_testbed::AuditEvent],
) -> Result<BTreeMap<String, usize>> {
    let mut by_kind = BTreeMap::new();
    for e in writes {
        let r = e.object_ref.clone().unwrap_or_default();
        let resource = r.resource.clone().unwrap_or_default();
        let sub = r.subresource.clone().unwrap_or_default();
        let key = if sub.is_empty() {
            resource.clone()
        } else {
            format!("{resource}/{sub}")
        };
        let manager = e.field_manager.clone().unwrap_or_default();
        // A write counts only when the API server accepted it. Refusals the controller expects
        // and handles are fine (a Job or ConfigMap created concurrently, an optimistic update
        // that lost, a status patch of a plan deleted meanwhile); any other refusal (401, 403,
        // 422, ...) means the controller lacks a permission or sends what it must not.
        let code = e
            .response_status
            .as_ref()
            .and_then(|s| s.code)
            .unwrap_or_default();
        let expected_refusal = matches!(
            (code, key.as_str(), e.verb.as_str()),
            (409, "jobs" | "configmaps" | "secrets", "create")
                | (409, "configmaps" | "secrets", "update")
                // Leader election: two replicas creating or taking the Lease at once.
                | (409, "leases", "create" | "update" | "patch")
                | (404, _, "patch")
        );
        if !(200..300).contains(&code) && !expected_refusal {
            bail!(
                "a write by the controller was refused with {code}: {} {} (field manager {manager:?})",
                e.verb,
                e.request_uri
            );
        }
        let allowed = match (key.as_str(), e.verb.as_str()) {
            ("hibernationplans/status", "patch")
            | ("scheduleexceptions/status", "patch")
            | ("cloudproviders/status", "patch")
            | ("k8sclusters/status", "patch") => manager == "hibernator-controller",
            ("hibernationplans", "patch") => {
                // Only its finalizer: the applied object holds nothing but identity and finalizers.
                let obj = e.request_object.clone().unwrap_or_default();
                let meta_keys: Vec<&String> = obj["metadata"]
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                let top_keys: Vec<&String> = obj
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                manager == "hibernator-controller"
                    && top_keys
                        .iter()
                        .all(|k| ["apiVersion", "kind", "metadata"].contains(&k.as_str()))
                    && meta_keys
                        .iter()
                        .all(|k| ["name", "finalizers"].contains(&k.as_str()))
            }
            ("jobs", "create") | ("events", "create") | ("tokenreviews", "create") => {
                manager == "hibernator-controller"
            }
            ("configmaps", "create") | ("configmaps", "update") => {
                manager == "hibernator-controller"
            }
            ("leases", "create") => manager == "hibernator-controller",
            // Its own gRPC certificate, and no other Secret.
            ("secrets", "create") | ("secrets", "update") => {
                let name = r.name.clone().or_else(|| {
                    e.request_object.as_ref()?["metadata"]["name"]
                        .as_str()
                        .map(str::to_string)
                });
                manager == "hibernator-controller" && name.as_deref() == Some("hibernator-grpc-tls")
            }
            ("leases", "patch") | ("leases", "update") => {
                manager.starts_with("hibernator-controller")
            }
            _ => false,
        };
        if !allowed {
            bail!(
                "unexpected write by the controller: {} {} (field manager {manager:?}): {}",
                e.verb,
                e.request_uri,
                e.request_object.clone().unwrap_or_default()
            );
        }
        if (200..300).contains(&code) {
            *by_kind.entry(key).or_insert(0) += 1;
        }
    }
    Ok(by_kind)
}

impl World {
    /// Jobs, pods and every runner's log, for failure messages.
    pub async fn dump(&self) -> String {
        let mut out = String::new();
        let Ok(kubectl) = self.cluster.kubectl() else {
            return out;
        };
        for args in [
            vec!["-n", self.ns.as_str(), "get", "jobs,pods", "-o", "wide"],
            vec![
                "-n",
                self.ns.as_str(),
                "get",
                "events",
                "--sort-by=.metadata.creationTimestamp",
            ],
        ] {
            if let Ok(o) = kubectl.run(&args).await {
                out.push_str(&o.stdout);
            }
        }
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        if let Ok(pods) = api.list(&Default::default()).await {
            for p in pods.items {
                let name = p.name_any();
                if let Ok(log) = api.logs(&name, &Default::default()).await {
                    out.push_str(&format!("--- {name}\n{log}"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check_controller_writes;

    fn write(resource: &str, sub: &str, verb: &str, code: u16) -> kube_testbed::AuditEvent {
        let mut e: kube_testbed::AuditEvent = serde_json::from_value(json!({
            "level": "Metadata",
            "auditID": "x",
            "stage": "ResponseComplete",
            "requestURI": format!("/apis/x/{resource}/{sub}"),
            "verb": verb,
            "user": {"username": "system:serviceaccount:ns:hibernator-controller"},
            "objectRef": {"resource": resource, "subresource": sub},
            "responseStatus": {"code": code},
        }))
        .unwrap();
        if sub.is_empty() {
            e.object_ref.as_mut().unwrap().subresource = None;
        }
        e.field_manager = Some("hibernator-controller".into());
        e
    }

    #[test]
    fn only_accepted_writes_count_and_a_refusal_fails_the_check() {
        let ok = [
            write("hibernationplans", "status", "patch", 200),
            write("events", "", "create", 201),
            // Expected refusals: a Job created before, a status patch of a deleted plan.
            write("jobs", "", "create", 409),
            write("hibernationplans", "status", "patch", 404),
        ];
        let by_kind = check_controller_writes(&ok).unwrap();
        assert_eq!(by_kind.get("hibernationplans/status"), Some(&1));
        assert_eq!(by_kind.get("jobs"), None, "a refused create is not a write");
        for refused in [
            write("events", "", "create", 403),
            write("hibernationplans", "status", "patch", 422),
            write("configmaps", "", "update", 401),
        ] {
            let err = check_controller_writes(&[refused]).unwrap_err();
            assert!(err.to_string().contains("was refused with"), "{err}");
        }
        // Allowed codes, but not an allowed write: still an error.
        assert!(check_controller_writes(&[write("hibernationplans", "", "update", 200)]).is_err());
    }
}
