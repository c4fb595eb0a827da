//! The process kubelet: a Node whose pods run as local processes.
//!
//! It registers a Ready Node (address 127.0.0.1, capacity, the kubelet port in
//! `daemonEndpoints`), keeps its Lease fresh, watches the pods bound to it (by the real
//! kube-scheduler), and runs each container's image as a mapped local executable in a private
//! mount namespace where volumes appear at their real paths (see [`sandbox`]). It reports pod
//! status as a kubelet does, serves container logs over HTTPS on the kubelet port (so
//! `kubectl logs` works through the API server) and honours graceful deletion. It talks to the
//! API server as `system:node:<name>` (group `system:nodes`), so the Node authorizer applies.
//!
//! Deviations from a real kubelet are listed in the crate documentation.

mod env;
mod logs;
mod pod;
mod probe;
pub(crate) mod sandbox;
mod server;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::process::WatchdogHandle;
use crate::tools::HostPrograms;

pub(crate) use env::NodeFacts;
pub(crate) use logs::LogInstance;

/// What a container image runs on the process kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The executable. The container's `command[0]`, whatever path it names, runs this file;
    /// the rest of `command` and `args` are its arguments (see the crate documentation).
    pub executable: PathBuf,
    /// The image's default user (its `USER`); `None` runs as root unless the pod sets
    /// `runAsUser`.
    pub user: Option<u32>,
}

impl Image {
    /// An image running `executable` as root by default. A relative path is taken relative to
    /// the current directory now (containers start in their own working directory).
    pub fn new(executable: impl Into<PathBuf>) -> Image {
        let executable = executable.into();
        Image {
            executable: std::path::absolute(&executable).unwrap_or(executable),
            user: None,
        }
    }

    /// Sets the image's default user.
    pub fn with_user(mut self, uid: u32) -> Image {
        self.user = Some(uid);
        self
    }
}

/// The image → executable map of a cluster; shared, so images can be mapped while it runs.
#[derive(Debug, Clone, Default)]
pub struct Images(Arc<RwLock<BTreeMap<String, Image>>>);

impl Images {
    /// Maps `image` (exactly as written in pod specs) to `target`.
    pub fn insert(&self, image: impl Into<String>, target: Image) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image.into(), target);
    }

    /// The mapping of `image`, if any.
    pub fn get(&self, image: &str) -> Option<Image> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(image)
            .cloned()
    }
}

/// Parses `IMAGE=EXECUTABLE`.
pub fn parse_image_mapping(text: &str) -> Result<(String, Image)> {
    let (image, path) = text
        .split_once('=')
        .filter(|(i, p)| !i.is_empty() && !p.is_empty())
        .ok_or_else(|| Error::InvalidOption(format!("expected IMAGE=EXECUTABLE, got {text:?}")))?;
    Ok((image.to_string(), Image::new(path)))
}

/// Log files of one container, for the log endpoint.
#[derive(Debug, Default)]
pub(crate) struct ContainerLogs {
    pub instances: Vec<LogInstance>,
    pub waiting_reason: Option<String>,
}

/// Log files of one pod.
#[derive(Debug)]
pub(crate) struct PodLogs {
    pub uid: String,
    pub containers: Mutex<BTreeMap<String, ContainerLogs>>,
}

impl PodLogs {
    fn new(uid: &str, containers: Vec<String>) -> PodLogs {
        PodLogs {
            uid: uid.to_string(),
            containers: Mutex::new(
                containers
                    .into_iter()
                    .map(|name| {
                        (
                            name,
                            ContainerLogs {
                                instances: Vec::new(),
                                waiting_reason: Some("ContainerCreating".into()),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn set_waiting(&self, container: &str, reason: &str) {
        if let Some(c) = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(container)
        {
            c.waiting_reason = Some(reason.to_string());
        }
    }

    fn add_instance(&self, container: &str, instance: LogInstance) {
        if let Some(c) = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(container)
        {
            c.instances.push(instance);
            c.waiting_reason = None;
        }
    }
}

/// State shared by the kubelet's tasks.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub node_name: String,
    pub images: Images,
    pub root: PathBuf,
    pub facts: NodeFacts,
    pub host: &'static HostPrograms,
    pub watchdog: WatchdogHandle,
    pub restart_backoff: Duration,
    pods: Mutex<HashMap<(String, String), Arc<PodLogs>>>,
}

impl Shared {
    fn register_logs(&self, namespace: &str, name: &str, logs: Arc<PodLogs>) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.to_string(), name.to_string()), logs);
    }

    fn unregister_logs(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), name.to_string());
        if pods.get(&key).is_some_and(|p| p.uid == uid) {
            pods.remove(&key);
        }
    }

    pub(crate) fn pod_logs(&self, namespace: &str, name: &str) -> Option<Arc<PodLogs>> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// Settings of a [`Kubelet`].
pub(crate) struct KubeletConfig {
    pub node_name: String,
    pub images: Images,
    pub root: PathBuf,
    pub api_port: u16,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_ca: PathBuf,
    pub watchdog: WatchdogHandle,
    pub restart_backoff: Duration,
}

/// A running process kubelet.
pub(crate) struct Kubelet {
    tasks: Vec<JoinHandle<()>>,
    pods_task: JoinHandle<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

fn node_capacity() -> (i64, i64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(2);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30);
    (cpus * 1000, memory)
}

impl Kubelet {
    /// Binds the kubelet port, registers the Node and starts watching pods.
    pub async fn start(client: kube::Client, config: KubeletConfig) -> Result<Kubelet> {
        let host = HostPrograms::get()?;
        let (listener, port) = server::bind().await?;
        let (cpu_millis, memory_bytes) = node_capacity();
        let facts = NodeFacts {
            node_name: config.node_name.clone(),
            host_ip: "127.0.0.1".into(),
            api_port: config.api_port,
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes: 100 << 30,
        };
        std::fs::create_dir_all(config.root.join("pods"))
            .map_err(|e| Error::io("create", config.root.join("pods"), e))?;
        let shared = Arc::new(Shared {
            client,
            node_name: config.node_name.clone(),
            images: config.images,
            root: config.root,
            facts,
            host,
            watchdog: config.watchdog,
            restart_backoff: config.restart_backoff,
            pods: Mutex::new(HashMap::new()),
        });
        let tls = server::tls_config(&config.serving_cert, &config.serving_key, &config.client_ca)?;
        let (stop, stop_rx) = watch::channel(false);
        register_node(&shared, port).await?;
        let tasks = vec![
            tokio::spawn(server::serve(
                listener,
                tls,
                shared.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(heartbeat(shared.clone(), port, stop_rx.clone())),
        ];
        let pods_task = tokio::spawn(watch_pods(shared.clone(), stop_rx));
        Ok(Kubelet {
            tasks,
            pods_task,
            stop,
        })
    }

    /// Stops every pod (SIGTERM, a short grace period, SIGKILL) and the kubelet's tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(workers) = self.pods_task.await {
            for worker in workers {
                let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
            }
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

fn node_status(shared: &Shared, port: u16) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let capacity = json!({
        "cpu": format!("{}m", shared.facts.cpu_millis),
        "memory": format!("{}Ki", shared.facts.memory_bytes / 1024),
        "pods": "110",
        "ephemeral-storage": format!("{}Gi", shared.facts.ephemeral_storage_bytes >> 30),
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        })
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": shared.node_name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kube-testbed process kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "machineID": "kube-testbed",
                "systemUUID": "kube-testbed",
                "bootID": "kube-testbed",
                "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "osImage": "kube-testbed process kubelet",
                "containerRuntimeVersion": concat!("testbed://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": "v1.37.2-testbed",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        }
    })
}

async fn register_node(shared: &Arc<Shared>, port: u16) -> Result<()> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let name = shared.node_name.clone();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
                "node.kubernetes.io/instance-type": "kube-testbed",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
    }))
    .map_err(|e| Error::InvalidOption(e.to_string()))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(Error::kube(format!("register node {name}"), e)),
    }
    let params = PatchParams {
        field_manager: Some("kubelet".into()),
        ..PatchParams::default()
    };
    api.patch_status(&name, &params, &Patch::Strategic(node_status(shared, port)))
        .await
        .map_err(|e| Error::kube(format!("report the status of node {name}"), e))?;
    Ok(())
}

/// Renews the node Lease every 10 s and re-posts node status every minute.
async fn heartbeat(shared: Arc<Shared>, port: u16, mut stop: watch::Receiver<bool>) {
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let params = PatchParams {
        field_manager: Some("kubelet".into()),
        ..PatchParams::default()
    };
    let mut ticks: u64 = 0;
    loop {
        let node_uid = nodes
            .get(&shared.node_name)
            .await
            .ok()
            .and_then(|n| n.metadata.uid);
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": shared.node_name,
                "namespace": "kube-node-lease",
                "ownerReferences": node_uid.map(|uid| vec![json!({
                    "apiVersion": "v1", "kind": "Node", "name": shared.node_name, "uid": uid,
                })]),
            },
            "spec": {
                "holderIdentity": shared.node_name,
                "leaseDurationSeconds": 40,
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        let result = match leases.get_opt(&shared.node_name).await {
            Ok(Some(_)) => leases
                .patch(&shared.node_name, &params, &Patch::Merge(&lease))
                .await
                .map(|_| ()),
            Ok(None) => match serde_json::from_value::<Lease>(lease) {
                Ok(lease) => leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ()),
                Err(e) => {
                    tracing::warn!(error = %e, "invalid lease");
                    Ok(())
                }
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "failed to renew the node lease");
        }
        if ticks % 6 == 5
            && let Err(e) = nodes
                .patch_status(
                    &shared.node_name,
                    &params,
                    &Patch::Strategic(node_status(&shared, port)),
                )
                .await
        {
            tracing::debug!(error = %e, "failed to post node status");
        }
        ticks += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A pod worker's update channel and task.
type WorkerHandle = (watch::Sender<Option<Arc<Pod>>>, JoinHandle<()>);

/// Watches the pods bound to this node and runs one worker per pod. Returns the workers'
/// handles when told to stop (after closing their update channels).
async fn watch_pods(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name));
    let mut stream = watcher(api, config).boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut seen_in_relist: Option<Vec<String>> = None;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = stop.changed() => break,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::debug!(error = %e, "pod watch error");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        workers.retain(|_, (_, task)| !task.is_finished());
        let apply = |pod: Pod, workers: &mut HashMap<String, WorkerHandle>| {
            let Some(uid) = pod.metadata.uid.clone() else {
                return;
            };
            let pod = Arc::new(pod);
            match workers.get(&uid) {
                Some((tx, _)) => {
                    tx.send_replace(Some(pod));
                }
                None => {
                    let (tx, rx) = watch::channel(Some(pod));
                    let task = tokio::spawn(pod::Worker::run(shared.clone(), rx));
                    workers.insert(uid, (tx, task));
                }
            }
        };
        match event {
            watcher::Event::Init => seen_in_relist = Some(Vec::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (seen_in_relist.as_mut(), pod.metadata.uid.clone())
                {
                    seen.push(uid);
                }
                apply(pod, &mut workers);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen_in_relist.take() {
                    for (uid, (tx, _)) in workers.iter() {
                        if !seen.contains(uid) {
                            tx.send_replace(None);
                        }
                    }
                }
            }
            watcher::Event::Apply(pod) => apply(pod, &mut workers),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid
                    && let Some((tx, _)) = workers.get(&uid)
                {
                    tx.send_replace(None);
                }
            }
        }
    }
    // Closing the channels tells the workers to stop their containers.
    workers
        .into_values()
        .map(|(tx, task)| {
            drop(tx);
            task
        })
        .collect()
}

/// The directory a kubelet keeps its pods in, under the cluster directory.
pub(crate) fn kubelet_root(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("kubelet")
}
