//! [`TestCluster`]: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
//! process kubelet on free 127.0.0.1 ports in a temporary directory.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{OnceCell, oneshot};

use crate::audit::{self, AuditEvent};
use crate::error::{Error, Result, error_chain};
use crate::kubectl::{Helm, Kubectl};
use crate::kubelet::{Image, Images, Kubelet, KubeletConfig, kubelet_root};
use crate::pki::{CertFiles, Pki};
use crate::process::{Component, Watchdog, log_tail};
use crate::tools::{Tools, find_kubectl};

/// Environment variable: when set (to anything but `0`), the cluster directory (certificates,
/// logs, audit log, pod sandboxes) is kept after teardown and its path is printed.
pub const KEEP_ENV: &str = "KUBE_TESTBED_KEEP";

/// Controllers the testbed's kube-controller-manager runs (1.37 names).
pub const CONTROLLERS: &[&str] = &[
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "disruption-controller",
    "garbage-collector-controller",
    "pod-garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "horizontal-pod-autoscaler-controller",
];

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Image → executable mappings for the process kubelet (more can be added later with
    /// [`TestCluster::map_image`]).
    pub images: Vec<(String, Image)>,
    /// Run the process kubelet (one Node). Default: true.
    pub kubelet: bool,
    /// Run kube-scheduler. Default: true (without it pods stay unscheduled).
    pub scheduler: bool,
    /// The Node's name. Default: `kube-testbed`.
    pub node_name: String,
    /// Keep the cluster directory after teardown. Default: from `KUBE_TESTBED_KEEP`.
    pub keep_dir: bool,
    /// The kubelet's first restart back-off (a real kubelet: 10 s, doubling up to 5 min).
    pub restart_backoff: Duration,
    /// Limit for each readiness wait.
    pub start_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            images: Vec::new(),
            kubelet: true,
            scheduler: true,
            node_name: "kube-testbed".into(),
            keep_dir: std::env::var_os(KEEP_ENV).is_some_and(|v| v != "0"),
            restart_backoff: Duration::from_secs(10),
            start_timeout: Duration::from_secs(120),
        }
    }
}

impl ClusterOptions {
    /// Maps `image` to run `executable`.
    pub fn image(mut self, image: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        self.images.push((image.into(), Image::new(executable)));
        self
    }

    /// Without the process kubelet (control plane only).
    pub fn without_kubelet(mut self) -> Self {
        self.kubelet = false;
        self
    }
}

/// How long start-up took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartupTimings {
    /// Running `tools/k8s/build.sh` (milliseconds when cached).
    pub tools: Duration,
    /// Generating the PKI.
    pub pki: Duration,
    /// From starting etcd to kube-apiserver's `/readyz` answering 200.
    pub apiserver: Duration,
    /// From starting etcd to everything ready (the `default` ServiceAccount, the
    /// `kube-root-ca.crt` ConfigMap, an untainted Ready Node, the scheduler's `/healthz`).
    pub ready: Duration,
}

impl StartupTimings {
    /// Everything, tools included.
    pub fn total(&self) -> Duration {
        self.tools + self.pki + self.ready
    }
}

/// Facts about a running cluster.
#[derive(Debug)]
struct Info {
    dir: PathBuf,
    kubeconfig: PathBuf,
    audit_log: PathBuf,
    api_port: u16,
    config: kube::Config,
    tools: Tools,
    pki: Pki,
    node_name: Option<String>,
    timings: StartupTimings,
    logs: Vec<(&'static str, PathBuf)>,
}

/// A running test cluster. Dropping it stops everything (in reverse start order: kubelet pods,
/// scheduler, controller manager, API server, etcd) and removes its directory.
#[derive(Debug)]
pub struct TestCluster {
    info: Arc<Info>,
    images: Images,
    control: Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
}

/// Requests to the cluster's control thread.
#[derive(Debug)]
enum Command {
    /// Stop kube-apiserver, start it again with the same flags, wait until it serves.
    RestartApiServer(oneshot::Sender<Result<Duration>>),
}

/// Makes aws-lc-rs the process's rustls crypto provider (a no-op if one is installed): kube's
/// TLS setup asks rustls for the process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

static SHARED: OnceCell<std::result::Result<TestCluster, String>> = OnceCell::const_new();
static NAMESPACE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestCluster {
    /// Starts a cluster (building the tools first if needed) and waits until it serves.
    pub async fn start(options: ClusterOptions) -> Result<TestCluster> {
        install_crypto_provider();
        let images = Images::default();
        for (image, target) in &options.images {
            images.insert(image.clone(), target.clone());
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (commands, command_rx) = tokio::sync::mpsc::unbounded_channel();
        let thread_images = images.clone();
        // All processes are spawned from this thread: their parent-death signal fires when it
        // ends, which is when the cluster is stopped or the process exits.
        let thread = std::thread::Builder::new()
            .name("kube-testbed".into())
            .spawn(move || cluster_thread(options, thread_images, ready_tx, stop_rx, command_rx))
            .map_err(|source| Error::Spawn {
                name: "the kube-testbed thread".into(),
                source,
            })?;
        match ready_rx.await {
            Ok(Ok(info)) => Ok(TestCluster {
                info: Arc::new(info),
                images,
                control: Some((stop_tx, thread)),
                commands,
            }),
            Ok(Err(e)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                Err(e)
            }
            Err(_) => Err(Error::ClusterThread),
        }
    }

    /// The process-wide cluster, started on first use with default options and never stopped
    /// explicitly: its processes die with the process (parent-death signal), and a watchdog
    /// removes its directory. Tests share it and isolate themselves by namespace
    /// ([`TestCluster::create_namespace`]).
    pub async fn shared() -> Result<&'static TestCluster> {
        SHARED
            .get_or_init(|| async {
                TestCluster::start(ClusterOptions::default())
                    .await
                    .map_err(|e| error_chain(&e))
            })
            .await
            .as_ref()
            .map_err(|e| Error::SharedStart(e.clone()))
    }

    /// A new client for the admin user (`system:masters`), bound to the caller's runtime.
    pub fn client(&self) -> Result<kube::Client> {
        install_crypto_provider();
        kube::Client::try_from(self.info.config.clone())
            .map_err(|e| Error::kube("create a client for the test cluster", e))
    }

    /// The admin client configuration.
    pub fn config(&self) -> kube::Config {
        self.info.config.clone()
    }

    /// The admin kubeconfig (for kubectl, helm, or `KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// The API server's URL.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.info.api_port)
    }

    /// The API server's port.
    pub fn api_port(&self) -> u16 {
        self.info.api_port
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.info.pki.ca_pem
    }

    /// The cluster's PKI files.
    pub fn pki(&self) -> &Pki {
        &self.info.pki
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// Start-up durations.
    pub fn timings(&self) -> StartupTimings {
        self.info.timings
    }

    /// The Node's name, if the kubelet runs.
    pub fn node_name(&self) -> Option<&str> {
        self.info.node_name.as_deref()
    }

    /// The tools directory (`helm`, `kubeconform`, the control-plane binaries).
    pub fn tools(&self) -> &Tools {
        &self.info.tools
    }

    /// The API server's audit log file.
    pub fn audit_log_path(&self) -> &Path {
        &self.info.audit_log
    }

    /// Every audit event so far (writes only: see [`audit::POLICY`]).
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        audit::read_audit_log(&self.info.audit_log)
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`).
    pub fn component_log(&self, name: &str) -> Option<&Path> {
        self.info
            .logs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.as_path())
    }

    /// Maps `image` to a local executable for pods started from now on.
    pub fn map_image(&self, image: impl Into<String>, target: Image) {
        self.images.insert(image, target);
    }

    /// The image map.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// A real kubectl (see [`find_kubectl`]); each call runs with its own home and cache
    /// directory.
    pub fn kubectl(&self) -> Result<Kubectl> {
        Ok(Kubectl::new(find_kubectl()?, self.info.kubeconfig.clone()))
    }

    /// The real helm built by the tools module, with its own home.
    pub fn helm(&self) -> Result<Helm> {
        Helm::new(self.info.tools.helm())
    }

    /// Creates a namespace `<prefix>-<n>` unique in this process and waits for its `default`
    /// ServiceAccount and `kube-root-ca.crt` ConfigMap (pods need both).
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client()?;
        let n = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{n}-{:x}", nanos & 0xffff);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .map_err(|e| Error::InvalidOption(e.to_string()))?;
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::kube(format!("create namespace {name}"), e))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let config_maps: Api<ConfigMap> = Api::namespaced(client, &name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sa = accounts.get_opt("default").await.ok().flatten().is_some();
            let ca = config_maps
                .get_opt("kube-root-ca.crt")
                .await
                .ok()
                .flatten()
                .is_some();
            if sa && ca {
                return Ok(name);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("the default ServiceAccount of namespace {name}"),
                    seconds: 60,
                    details: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the cluster and waits for it (what dropping does, without blocking a runtime
    /// thread).
    /// Restarts kube-apiserver (SIGTERM, then the same flags, same port and certificates) and
    /// waits until it serves again; returns how long it was away. Clients reconnect by
    /// themselves. For fault-injection tests: run them in a test binary of their own, since
    /// every test of a binary shares its cluster.
    pub async fn restart_api_server(&self) -> Result<Duration> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RestartApiServer(reply))
            .map_err(|_| Error::ClusterThread)?;
        answer.await.map_err(|_| Error::ClusterThread)?
    }

    pub async fn shutdown(mut self) {
        if let Some((stop, thread)) = self.control.take() {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.control.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

fn cluster_thread(
    options: ClusterOptions,
    images: Images,
    ready: oneshot::Sender<Result<Info>>,
    stop: oneshot::Receiver<()>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let _ = ready.send(Err(Error::Spawn {
                name: "the kube-testbed runtime".into(),
                source,
            }));
            return;
        }
    };
    runtime.block_on(async move {
        let mut plane = ControlPlane::default();
        match plane.start(&options, images).await {
            Err(e) => {
                plane.stop().await;
                let _ = ready.send(Err(e));
            }
            Ok(info) => {
                let admin = info.kubeconfig.clone();
                if ready.send(Ok(info)).is_ok() {
                    // Serves commands until stopped or until the TestCluster is gone.
                    tokio::pin!(stop);
                    loop {
                        tokio::select! {
                            _ = &mut stop => break,
                            command = commands.recv() => match command {
                                Some(Command::RestartApiServer(reply)) => {
                                    let _ = reply.send(plane.restart_api_server(&admin).await);
                                }
                                None => {
                                    let _ = (&mut stop).await;
                                    break;
                                }
                            },
                        }
                    }
                }
                plane.stop().await;
            }
        }
    });
}

/// The running processes, in start order.
#[derive(Default)]
struct ControlPlane {
    components: Vec<Component>,
    kubelet: Option<Kubelet>,
    watchdog: Option<Watchdog>,
    dir: Option<PathBuf>,
    keep: bool,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("listen on", "127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("inspect", "a free port", e))
}

fn kubeconfig_json(server: &str, ca: &Path, user: &str, cert: &CertFiles) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-testbed", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": cert.cert,
            "client-key": cert.key,
        }}],
        "contexts": [{"name": "kube-testbed", "context": {"cluster": "kube-testbed", "user": user}}],
        "current-context": "kube-testbed",
    })
    .to_string()
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io("write", path, e))
}

async fn load_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
}

fn args(list: &[String]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

impl ControlPlane {
    async fn restart_api_server(&mut self, admin_kubeconfig: &Path) -> Result<Duration> {
        let started = Instant::now();
        let i = self
            .components
            .iter()
            .position(|c| c.name == "kube-apiserver")
            .ok_or(Error::ClusterThread)?;
        let old = &mut self.components[i];
        old.stop(Duration::from_secs(10)).await;
        let (name, program, args, log) = (
            old.name,
            old.program.clone(),
            old.args.clone(),
            old.log.clone(),
        );
        if let (Some(w), Some(pid)) = (&self.watchdog, old.pid()) {
            w.handle().remove_group(pid);
        }
        let component = Component::spawn(name, &program, args, log)?;
        if let (Some(w), Some(pid)) = (&self.watchdog, component.pid()) {
            w.handle().add_group(pid);
        }
        self.components[i] = component;
        let client = kube::Client::try_from(load_config(admin_kubeconfig).await?)
            .map_err(|e| Error::kube("create the admin client", e))?;
        self.wait_until_serving(
            &client,
            "kube-apiserver /readyz after a restart",
            Duration::from_secs(60),
        )
        .await?;
        Ok(started.elapsed())
    }

    /// Waits until kube-apiserver's `/readyz` answers `ok`.
    async fn wait_until_serving(
        &mut self,
        client: &kube::Client,
        what: &str,
        limit: Duration,
    ) -> Result<()> {
        let client = client.clone();
        self.wait_for(what, limit, move || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                client
                    .request_text(request)
                    .await
                    .map(|body| body.trim() == "ok")
                    .map_err(|e| e.to_string())
            }
        })
        .await
    }

    fn check_running(&mut self) -> Result<()> {
        for c in &mut self.components {
            c.check_running()?;
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        self.components
            .iter()
            .map(|c| {
                format!(
                    "\n--- {} ({}):\n{}",
                    c.name,
                    c.log.display(),
                    log_tail(&c.log, 10)
                )
            })
            .collect()
    }

    /// Polls `check` every 50 ms until it says `true`, failing if a component exits or the
    /// time runs out.
    async fn wait_for<F, Fut>(&mut self, what: &str, limit: Duration, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<bool, String>>,
    {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            self.check_running()?;
            match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    seconds: limit.as_secs(),
                    details: format!("; last check: {last}{}", self.log_tails()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        program: PathBuf,
        args: Vec<OsString>,
        dir: &Path,
    ) -> Result<()> {
        let component = Component::spawn(name, &program, args, dir.join(format!("{name}.log")))?;
        if let (Some(w), Some(pid)) = (&self.watchdog, component.pid()) {
            w.handle().add_group(pid);
        }
        self.components.push(component);
        Ok(())
    }

    async fn start(&mut self, options: &ClusterOptions, images: Images) -> Result<Info> {
        let t_tools = Instant::now();
        let tools = tokio::task::spawn_blocking(Tools::get)
            .await
            .map_err(|_| Error::ClusterThread)??;
        let tools_time = t_tools.elapsed();

        let temp = tempfile::Builder::new()
            .prefix("kube-testbed.")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        let dir = temp.keep();
        self.dir = Some(dir.clone());
        self.keep = options.keep_dir;
        self.watchdog = Some(Watchdog::spawn((!self.keep).then_some(dir.as_path()))?);

        let t_pki = Instant::now();
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(|e| Error::io("create", &pki_dir, e))?;
        let node_name = options.node_name.clone();
        let pki = {
            let pki_dir = pki_dir.clone();
            tokio::task::spawn_blocking(move || Pki::generate(&pki_dir, &node_name))
                .await
                .map_err(|_| Error::ClusterThread)??
        };
        let pki_time = t_pki.elapsed();

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let api_port = free_port()?;
        let kcm_port = free_port()?;
        let scheduler_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_file(
            &admin_kubeconfig,
            &kubeconfig_json(&server, &pki.ca.cert, "admin", &pki.admin),
        )?;
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        write_file(
            &kcm_kubeconfig,
            &kubeconfig_json(
                &server,
                &pki.ca.cert,
                "system:kube-controller-manager",
                &pki.controller_manager,
            ),
        )?;
        let scheduler_kubeconfig = dir.join("scheduler.kubeconfig");
        write_file(
            &scheduler_kubeconfig,
            &kubeconfig_json(
                &server,
                &pki.ca.cert,
                "system:kube-scheduler",
                &pki.scheduler,
            ),
        )?;
        let kubelet_kubeconfig = dir.join("kubelet.kubeconfig");
        write_file(
            &kubelet_kubeconfig,
            &kubeconfig_json(
                &server,
                &pki.ca.cert,
                &format!("system:node:{}", options.node_name),
                &pki.kubelet_client,
            ),
        )?;
        let audit_policy = dir.join("audit-policy.json");
        write_file(&audit_policy, audit::POLICY)?;
        let audit_log = dir.join("audit.log");

        // etcd, then the API server right away (it waits for etcd itself).
        let t0 = Instant::now();
        let p = |path: &Path| path.display().to_string();
        self.spawn(
            "etcd",
            tools.path("etcd"),
            args(&[
                "--name=testbed".into(),
                format!("--data-dir={}", p(&dir.join("etcd"))),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=testbed=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ]),
            &dir,
        )?;
        self.spawn(
            "kube-apiserver",
            tools.path("kube-apiserver"),
            args(&[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--endpoint-reconciler-type=none".into(),
                format!("--tls-cert-file={}", p(&pki.apiserver.cert)),
                format!("--tls-private-key-file={}", p(&pki.apiserver.key)),
                format!("--client-ca-file={}", p(&pki.ca.cert)),
                format!("--requestheader-client-ca-file={}", p(&pki.ca.cert)),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p(&pki.service_account_pub)),
                format!(
                    "--service-account-signing-key-file={}",
                    p(&pki.service_account_key)
                ),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                format!(
                    "--kubelet-client-certificate={}",
                    p(&pki.apiserver_kubelet_client.cert)
                ),
                format!(
                    "--kubelet-client-key={}",
                    p(&pki.apiserver_kubelet_client.key)
                ),
                format!("--kubelet-certificate-authority={}", p(&pki.ca.cert)),
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                "--allow-privileged=true".into(),
                format!("--audit-policy-file={}", p(&audit_policy)),
                format!("--audit-log-path={}", p(&audit_log)),
                "--audit-log-mode=blocking".into(),
            ]),
            &dir,
        )?;
        let config = load_config(&admin_kubeconfig).await?;
        let client = kube::Client::try_from(config.clone())
            .map_err(|e| Error::kube("create the admin client", e))?;
        self.wait_until_serving(&client, "kube-apiserver /readyz", options.start_timeout)
            .await?;
        let apiserver_time = t0.elapsed();

        let controllers = CONTROLLERS.join(",");
        self.spawn(
            "kube-controller-manager",
            tools.path("kube-controller-manager"),
            args(&[
                format!("--kubeconfig={}", p(&kcm_kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kcm_kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--controllers={controllers}"),
                "--use-service-account-credentials".into(),
                format!(
                    "--service-account-private-key-file={}",
                    p(&pki.service_account_key)
                ),
                format!("--root-ca-file={}", p(&pki.ca.cert)),
                format!("--cluster-signing-cert-file={}", p(&pki.ca.cert)),
                format!("--cluster-signing-key-file={}", p(&pki.ca.key)),
                format!("--flex-volume-plugin-dir={}", p(&dir.join("flexvolume"))),
                // The default (15 s) would make tests wait long for an HPA to act.
                "--horizontal-pod-autoscaler-sync-period=2s".into(),
                // One instance: no leader election, so that it rides out an API server restart
                // (with it, a lost lease makes it exit).
                "--leader-elect=false".into(),
            ]),
            &dir,
        )?;
        if options.scheduler {
            self.spawn(
                "kube-scheduler",
                tools.path("kube-scheduler"),
                args(&[
                    format!("--kubeconfig={}", p(&scheduler_kubeconfig)),
                    format!("--authentication-kubeconfig={}", p(&scheduler_kubeconfig)),
                    format!("--authorization-kubeconfig={}", p(&scheduler_kubeconfig)),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={scheduler_port}"),
                    "--leader-elect=false".into(),
                ]),
                &dir,
            )?;
        }
        if options.kubelet {
            let kubelet_config = load_config(&kubelet_kubeconfig).await?;
            let kubelet_client = kube::Client::try_from(kubelet_config)
                .map_err(|e| Error::kube("create the kubelet's client", e))?;
            let watchdog = self
                .watchdog
                .as_ref()
                .map(Watchdog::handle)
                .ok_or(Error::ClusterThread)?;
            self.kubelet = Some(
                Kubelet::start(
                    kubelet_client,
                    KubeletConfig {
                        node_name: options.node_name.clone(),
                        images,
                        root: kubelet_root(&dir),
                        api_port,
                        serving_cert: pki.kubelet_serving.cert.clone(),
                        serving_key: pki.kubelet_serving.key.clone(),
                        client_ca: pki.ca.cert.clone(),
                        watchdog,
                        restart_backoff: options.restart_backoff,
                    },
                )
                .await?,
            );
        }

        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let nodes: Api<Node> = Api::all(client.clone());
        let node_name = options.kubelet.then(|| options.node_name.clone());
        let scheduler_client = if options.scheduler {
            let mut c = kube::Config::new(
                format!("https://127.0.0.1:{scheduler_port}")
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| Error::InvalidOption(e.to_string()))?,
            );
            // The scheduler's self-signed certificate; /healthz needs no authentication.
            c.accept_invalid_certs = true;
            Some(
                kube::Client::try_from(c)
                    .map_err(|e| Error::kube("create a scheduler health client", e))?,
            )
        } else {
            None
        };
        self.wait_for(
            "the controller manager, scheduler and node",
            options.start_timeout,
            || {
                let accounts = accounts.clone();
                let config_maps = config_maps.clone();
                let nodes = nodes.clone();
                let node_name = node_name.clone();
                let scheduler_client = scheduler_client.clone();
                async move {
                    if accounts
                        .get_opt("default")
                        .await
                        .map_err(|e| e.to_string())?
                        .is_none()
                    {
                        return Err("ServiceAccount default/default does not exist yet".into());
                    }
                    if config_maps
                        .get_opt("kube-root-ca.crt")
                        .await
                        .map_err(|e| e.to_string())?
                        .is_none()
                    {
                        return Err("ConfigMap default/kube-root-ca.crt does not exist yet".into());
                    }
                    if let Some(name) = node_name {
                        let node = nodes.get(&name).await.map_err(|e| e.to_string())?;
                        let tainted = node
                            .spec
                            .and_then(|s| s.taints)
                            .unwrap_or_default()
                            .iter()
                            .any(|t| t.key.starts_with("node.kubernetes.io/"));
                        if tainted {
                            return Err(format!(
                                "node {name} still has a node.kubernetes.io taint"
                            ));
                        }
                    }
                    if let Some(client) = scheduler_client {
                        let request = http::Request::get("/healthz")
                            .body(Vec::new())
                            .map_err(|e| e.to_string())?;
                        let body = client
                            .request_text(request)
                            .await
                            .map_err(|e| e.to_string())?;
                        if body.trim() != "ok" {
                            return Err(format!("scheduler /healthz: {body}"));
                        }
                    }
                    Ok(true)
                }
            },
        )
        .await?;
        let ready_time = t0.elapsed();
        let timings = StartupTimings {
            tools: tools_time,
            pki: pki_time,
            apiserver: apiserver_time,
            ready: ready_time,
        };
        tracing::info!(
            dir = %dir.display(),
            api_port,
            ?timings,
            "kube-testbed cluster ready"
        );
        Ok(Info {
            logs: self
                .components
                .iter()
                .map(|c| (c.name, c.log.clone()))
                .collect(),
            dir,
            kubeconfig: admin_kubeconfig,
            audit_log,
            api_port,
            config,
            tools,
            pki,
            node_name: options.kubelet.then(|| options.node_name.clone()),
            timings,
        })
    }

    async fn stop(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            let started = Instant::now();
            kubelet.stop().await;
            tracing::debug!(took = ?started.elapsed(), "stopped the kubelet");
        }
        while let Some(mut component) = self.components.pop() {
            let pid = component.pid();
            let started = Instant::now();
            component.stop(Duration::from_secs(10)).await;
            tracing::debug!(component = component.name, took = ?started.elapsed(), "stopped");
            if let (Some(w), Some(pid)) = (&self.watchdog, pid) {
                w.handle().remove_group(pid);
            }
        }
        if let Some(dir) = self.dir.take() {
            if self.keep {
                eprintln!("kube-testbed: kept {}", dir.display());
            } else {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            }
        }
        if let Some(w) = self.watchdog.take() {
            let started = Instant::now();
            w.finish().await;
            tracing::debug!(took = ?started.elapsed(), "the watchdog finished");
        }
    }
}
