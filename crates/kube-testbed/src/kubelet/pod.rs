//! One pod's life on the process kubelet: sandbox and volumes, init containers, containers as
//! local processes, restarts with back-off, status reports, graceful deletion.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use rustix::process::Signal;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::env::{Objects, container_env, expand};
use super::logs::{LogInstance, copy_stream, create_log_file, tail_text};
use super::sandbox::{BindMount, ContainerLaunch, ScriptPrograms, parse_mountinfo, script};
use super::volumes::{Ownership, PodVolumes, VolumeContext, materialize, refresh_token};
use crate::process::{signal_group, supervised_command};

/// The kubelet's field manager for status writes (what the real kubelet's user agent yields).
pub(crate) const FIELD_MANAGER: &str = "kubelet";
/// Restart back-off cap (the kubelet's).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Termination messages are cut to this many bytes.
const MAX_TERMINATION_MESSAGE: usize = 4096;

#[derive(Debug, Clone)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started_at: Timestamp,
    finished_at: Timestamp,
    container_id: String,
}

#[derive(Debug, Clone)]
enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

struct Run {
    signals: mpsc::UnboundedSender<Signal>,
    started: Instant,
    started_at: Timestamp,
    container_id: String,
    instance_dir: PathBuf,
    log: LogInstance,
    termination_file: PathBuf,
    generation: u64,
}

struct Ctr {
    spec: Container,
    init: bool,
    state: State,
    last: Option<Terminated>,
    restart_count: i32,
    backoff_step: u32,
    next_start: Instant,
    run: Option<Run>,
    image_id: String,
    /// Starts seen so far (log instance numbering).
    starts: u64,
    /// An init container that finished successfully.
    done: bool,
    /// The readiness probe of the running instance, if the container has one.
    readiness: Option<super::probe::Readiness>,
}

impl Ctr {
    fn new(spec: Container, init: bool) -> Ctr {
        Ctr {
            spec,
            init,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
            backoff_step: 0,
            next_start: Instant::now(),
            run: None,
            readiness: None,
            image_id: String::new(),
            starts: 0,
            done: false,
        }
    }

    fn running(&self) -> bool {
        self.run.is_some()
    }

    /// Running and, if it has a readiness probe, passing it.
    fn ready(&self) -> bool {
        self.running() && self.readiness.as_ref().is_none_or(|r| r.ok)
    }
}

struct Exit {
    init: bool,
    index: usize,
    generation: u64,
    status: ExitStatus,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Stopping {
    /// The pod is being deleted: stop, report, then delete it with grace period 0.
    Deleting,
    /// `activeDeadlineSeconds` passed: stop and stay `Failed`.
    Deadline,
}

struct Condition {
    status: bool,
    reason: Option<String>,
    message: Option<String>,
    since: Timestamp,
}

/// Everything about one pod.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    dir: PathBuf,
    logs: Arc<super::PodLogs>,
    start_time: Timestamp,
    volumes: Option<PodVolumes>,
    next_volume_try: Instant,
    ctrs: Vec<Ctr>,
    phase: Phase,
    pod_reason: Option<(String, String)>,
    stopping: Option<(Stopping, Instant, bool)>,
    delete_sent: bool,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits_rx: mpsc::UnboundedReceiver<Exit>,
    conditions: BTreeMap<&'static str, Condition>,
    dirty: bool,
    deadline: Option<Instant>,
    next_status_retry: Option<Instant>,
    recorder: Recorder,
    /// Warning events already published (a real kubelet aggregates repeats too).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
    volume_failures: u32,
    generation: u64,
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl Worker {
    /// Runs the pod until its API object is gone.
    pub(crate) async fn run(shared: Arc<Shared>, mut updates: watch::Receiver<Option<Arc<Pod>>>) {
        let Some(pod) = updates.borrow_and_update().clone() else {
            return;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let dir = shared.root.join("pods").join(&uid);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ctrs: Vec<Ctr> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Ctr::new(c.clone(), true))
            .collect();
        ctrs.extend(spec.containers.iter().map(|c| Ctr::new(c.clone(), false)));
        for c in ctrs.iter_mut().filter(|c| c.init) {
            c.state = State::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            };
        }
        let logs = Arc::new(super::PodLogs::new(
            &uid,
            ctrs.iter().map(|c| c.spec.name.clone()).collect(),
        ));
        shared.register_logs(&namespace, &name, logs.clone());
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let recorder = Recorder::new(
            shared.client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(shared.node_name.clone()),
            },
        );
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(now);
        let deadline = spec
            .active_deadline_seconds
            .map(|s| Instant::now() + Duration::from_secs(s.max(0) as u64));
        let existing_phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let mut worker = Worker {
            shared,
            pod,
            uid,
            namespace,
            name,
            dir,
            logs,
            start_time,
            volumes: None,
            next_volume_try: Instant::now(),
            ctrs,
            phase: Phase::Pending,
            pod_reason: None,
            stopping: None,
            delete_sent: false,
            exits_tx,
            exits_rx,
            conditions: BTreeMap::new(),
            dirty: true,
            deadline,
            next_status_retry: None,
            recorder,
            warned: std::sync::Mutex::new(std::collections::HashSet::new()),
            volume_failures: 0,
            generation: 0,
        };
        // A pod that finished before this kubelet saw it (a restart of `kube-testbed up` does
        // not happen, but be safe): never run it again.
        match existing_phase.as_deref() {
            Some("Succeeded") => {
                worker.phase = Phase::Succeeded;
                worker.dirty = false;
            }
            Some("Failed") => {
                worker.phase = Phase::Failed;
                worker.dirty = false;
            }
            _ => {}
        }
        // First report: Pending, containers waiting in ContainerCreating (as a kubelet's first
        // sync does, before the sandbox exists).
        if worker.dirty && worker.pod.metadata.deletion_timestamp.is_none() {
            worker.send_status().await;
        }
        worker.main_loop(&mut updates).await;
        worker.cleanup().await;
    }

    async fn main_loop(&mut self, updates: &mut watch::Receiver<Option<Arc<Pod>>>) {
        loop {
            let latest = updates.borrow_and_update().clone();
            match latest {
                None => {
                    // The object is gone (deleted with grace period 0 by us or forcibly).
                    self.kill_all(Signal::KILL);
                    self.wait_all_exits(Duration::from_secs(5)).await;
                    return;
                }
                Some(pod) => {
                    if pod.metadata.uid.as_deref() != Some(self.uid.as_str()) {
                        return;
                    }
                    self.pod = pod;
                }
            }

            if self.pod.metadata.deletion_timestamp.is_some() {
                // The grace period counts from when the kubelet sees the deletion (as a
                // kubelet's kill does); a later deletion with a shorter one moves it earlier.
                let grace = self
                    .pod
                    .metadata
                    .deletion_grace_period_seconds
                    .unwrap_or(30)
                    .max(0) as u64;
                self.begin_stop(
                    Stopping::Deleting,
                    Instant::now() + Duration::from_secs(grace),
                )
                .await;
            }

            if self.stopping.is_none() && !self.phase.terminal() {
                self.progress().await;
                self.run_probes().await;
            }
            self.check_stopping().await;
            self.update_phase();
            self.maybe_delete().await;
            if self.dirty && self.next_status_retry.is_none_or(|t| t <= Instant::now()) {
                self.send_status().await;
            }
            let wake = self.next_wakeup();
            tokio::select! {
                Some(exit) = self.exits_rx.recv() => self.on_exit(exit),
                changed = updates.changed() => {
                    if changed.is_err() {
                        // The kubelet is shutting down: a short grace period for everything.
                        self.kill_all(Signal::TERM);
                        self.wait_all_exits(Duration::from_secs(2)).await;
                        self.kill_all(Signal::KILL);
                        self.wait_all_exits(Duration::from_secs(3)).await;
                        return;
                    }
                }
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// Runs the readiness probes that are due.
    async fn run_probes(&mut self) {
        let now = Instant::now();
        for c in &mut self.ctrs {
            if let Some(r) = c.readiness.as_mut()
                && r.next <= now
                && r.run().await
            {
                self.dirty = true;
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        if self.stopping.is_none() && !self.phase.terminal() {
            times.extend(
                self.ctrs
                    .iter()
                    .filter_map(|c| c.readiness.as_ref().map(|r| r.next)),
            );
            if self.volumes.is_none() {
                times.push(self.next_volume_try);
            } else {
                for c in &self.ctrs {
                    if !c.running() && !c.done && self.wants_start(c) {
                        times.push(c.next_start);
                    }
                }
            }
            if let Some(d) = self.deadline {
                times.push(d);
            }
        }
        if let Some((_, t, false)) = &self.stopping {
            times.push(*t);
        }
        // Tokens are refreshed by `progress`, which runs while the pod is neither stopping nor
        // finished.
        if let Some(v) = &self.volumes
            && self.stopping.is_none()
            && !self.phase.terminal()
        {
            times.extend(v.tokens.iter().map(|t| t.refresh_at));
        }
        if self.dirty
            && let Some(t) = self.next_status_retry
        {
            times.push(t);
        }
        times.into_iter().min()
    }

    /// Whether a not-running container should be (re)started at its `next_start`.
    fn wants_start(&self, c: &Ctr) -> bool {
        if c.init {
            // Only the first unfinished init container.
            let first = self.ctrs.iter().position(|x| x.init && !x.done);
            return first.is_some_and(|i| std::ptr::eq(&self.ctrs[i], c))
                && !matches!(c.state, State::Terminated(_) if self.restart_policy() == "Never");
        }
        if self.ctrs.iter().any(|x| x.init && !x.done) {
            return false;
        }
        match &c.state {
            State::Terminated(t) => match self.restart_policy() {
                "Always" => true,
                "OnFailure" => t.exit_code != 0,
                _ => false,
            },
            _ => true,
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    fn pod_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: Some(self.uid.clone()),
            ..ObjectReference::default()
        }
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        if type_ == EventType::Warning
            && !self
                .warned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(format!("{reason}/{note}"))
        {
            return;
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &self.pod_ref()).await {
            tracing::debug!(pod = %self.name, error = %e, "failed to publish an event");
        }
    }

    fn ownership(&self) -> Ownership {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        let users: Vec<Option<i64>> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|s| s.run_as_user)
                    .or(pod_sc.run_as_user)
            })
            .collect();
        let common = users
            .first()
            .copied()
            .flatten()
            .filter(|u| users.iter().all(|x| *x == Some(*u)));
        Ownership {
            fs_group: pod_sc.fs_group.map(|g| g as u32),
            token_owner: common.map(|u| u as u32),
        }
    }

    /// Prepares volumes and starts containers that are due.
    async fn progress(&mut self) {
        let now_i = Instant::now();
        if let Some(d) = self.deadline
            && d <= now_i
        {
            self.pod_reason = Some((
                "DeadlineExceeded".into(),
                "Pod was active on the node longer than the specified deadline".into(),
            ));
            self.event(
                EventType::Normal,
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline".into(),
            )
            .await;
            let grace = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            self.begin_stop(
                Stopping::Deadline,
                Instant::now() + Duration::from_secs(grace.max(0) as u64),
            )
            .await;
            return;
        }
        if self.volumes.is_none() {
            if self.next_volume_try > now_i {
                return;
            }
            let mut objects = Objects::new(self.shared.client.clone(), &self.namespace);
            let ctx = VolumeContext {
                client: &self.shared.client,
                facts: &self.shared.facts,
                ownership: self.ownership(),
            };
            let root = self.dir.join("volumes");
            match materialize(&ctx, &self.pod, &mut objects, &root).await {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.dirty = true;
                }
                Err(message) => {
                    tracing::debug!(pod = %self.name, %message, "volumes not ready");
                    self.event(
                        EventType::Warning,
                        "FailedMount",
                        format!("MountVolume.SetUp failed: {message}"),
                    )
                    .await;
                    // 1 s, 2 s, 4 s ... up to 30 s between attempts.
                    let delay = Duration::from_secs(1 << self.volume_failures.min(5))
                        .min(Duration::from_secs(30));
                    self.volume_failures += 1;
                    self.next_volume_try = now_i + delay;
                    return;
                }
            }
        }
        // Refresh service-account tokens that are due.
        let ownership = self.ownership();
        if let Some(volumes) = self.volumes.as_mut() {
            for token in volumes.tokens.iter_mut().filter(|t| t.refresh_at <= now_i) {
                if let Err(e) =
                    refresh_token(&self.shared.client, &self.pod, token, ownership).await
                {
                    tracing::warn!(pod = %self.name, error = %e, "failed to refresh a token");
                    token.refresh_at = now_i + Duration::from_secs(10);
                }
            }
        }
        for index in 0..self.ctrs.len() {
            let c = &self.ctrs[index];
            if c.running() || c.done || !self.wants_start(c) || c.next_start > Instant::now() {
                continue;
            }
            self.start(index).await;
            // Init containers run one at a time.
            if self.ctrs[index].init && self.ctrs[index].running() {
                break;
            }
        }
    }

    async fn start(&mut self, index: usize) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let container = self.ctrs[index].spec.clone();
        let image_name = container.image.clone().unwrap_or_default();
        let Some(image) = self.shared.images.get(&image_name) else {
            let message = format!(
                "kube-testbed: image {image_name:?} is not mapped to a local executable (map it with --image {image_name}=PATH or ClusterOptions::image)"
            );
            let c = &mut self.ctrs[index];
            if !matches!(&c.state, State::Waiting { reason, .. } if reason == "ErrImagePull") {
                c.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message: Some(message.clone()),
                };
                self.dirty = true;
                self.logs.set_waiting(&container.name, "ErrImagePull");
                self.event(
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image {image_name:?}: {message}"),
                )
                .await;
            }
            self.ctrs[index].next_start = Instant::now() + Duration::from_secs(2);
            return;
        };
        self.ctrs[index].image_id = format!("testbed://{}", image.executable.display());

        // Environment.
        let mut objects = Objects::new(self.shared.client.clone(), &self.namespace);
        let env = match container_env(&self.pod, &container, &self.shared.facts, &mut objects).await
        {
            Ok(env) => env,
            Err(message) => {
                self.config_error(index, message).await;
                return;
            }
        };

        // User and groups.
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        let sc = container.security_context.clone().unwrap_or_default();
        let uid = sc
            .run_as_user
            .or(pod_sc.run_as_user)
            .map(|u| u as u32)
            .or(image.user)
            .unwrap_or(0);
        let gid = sc
            .run_as_group
            .or(pod_sc.run_as_group)
            .map(|g| g as u32)
            .unwrap_or(0);
        if sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) && uid == 0 {
            let message = format!(
                "container has runAsNonRoot and image will run as root (pod: \"{}_{}({})\", container: {})",
                self.name, self.namespace, self.uid, container.name
            );
            self.config_error(index, message).await;
            return;
        }
        let mut groups: Vec<u32> = pod_sc.fs_group.iter().map(|g| *g as u32).collect();
        groups.extend(
            pod_sc
                .supplemental_groups
                .iter()
                .flatten()
                .map(|g| *g as u32),
        );

        // argv: the image is one executable; `command[0]`, whatever path it names, runs it.
        let lookup_env: BTreeMap<String, String> = env.iter().cloned().collect();
        let lookup = |name: &str| lookup_env.get(name).cloned();
        let mut argv = vec![image.executable.to_string_lossy().into_owned()];
        argv.extend(
            container
                .command
                .iter()
                .flatten()
                .skip(1)
                .chain(container.args.iter().flatten())
                .map(|a| expand(a, &lookup)),
        );

        // Base environment of an image with no ENV of its own.
        let mut full_env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), self.name.clone()),
            (
                "HOME".into(),
                if uid == 0 { "/root".into() } else { "/".into() },
            ),
        ];
        for (k, v) in env {
            full_env.retain(|(key, _)| *key != k);
            full_env.push((k, v));
        }

        // Files of this instance.
        let c = &mut self.ctrs[index];
        c.starts += 1;
        let instance_dir = self
            .dir
            .join("containers")
            .join(format!("{}-{}", container.name, c.starts));
        let scratch = instance_dir.join("ns");
        if let Err(e) = std::fs::create_dir_all(&scratch) {
            self.config_error(
                index,
                format!("failed to create {}: {e}", scratch.display()),
            )
            .await;
            return;
        }
        let termination_file = instance_dir.join("termination-log");
        let log_path = instance_dir.join("output.log");
        let setup_log = instance_dir.join("setup.log");
        let started_marker = instance_dir.join("started");
        let prepared = (|| -> std::io::Result<()> {
            std::fs::write(&termination_file, b"")?;
            std::os::unix::fs::chown(&termination_file, Some(uid), Some(gid))?;
            Ok(())
        })();
        if let Err(e) = prepared {
            self.config_error(
                index,
                format!("failed to prepare the termination message file: {e}"),
            )
            .await;
            return;
        }

        // Mounts.
        let volumes = self.volumes.as_ref().map(|v| &v.dirs);
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.and_then(|v| v.get(&vm.name)) else {
                self.config_error(index, format!("volume {:?} not found", vm.name))
                    .await;
                return;
            };
            let sub = vm
                .sub_path_expr
                .as_deref()
                .map(|e| expand(e, &lookup))
                .or_else(|| vm.sub_path.clone())
                .unwrap_or_default();
            let source = if sub.is_empty() {
                volume.path.clone()
            } else {
                volume.path.join(&sub)
            };
            if !source.exists()
                && let Err(e) = std::fs::create_dir_all(&source)
            {
                self.config_error(index, format!("failed to create subPath {sub:?}: {e}"))
                    .await;
                return;
            }
            mounts.push(BindMount {
                is_file: source.is_file(),
                source,
                target: PathBuf::from(&vm.mount_path),
                read_only: vm.read_only == Some(true) || volume.always_read_only,
            });
        }
        mounts.push(BindMount {
            source: termination_file.clone(),
            target: PathBuf::from(
                container
                    .termination_message_path
                    .clone()
                    .unwrap_or_else(|| "/dev/termination-log".into()),
            ),
            is_file: true,
            read_only: false,
        });
        let launch = ContainerLaunch {
            scratch: scratch.clone(),
            mounts,
            hostname: Some(self.name.clone()),
            workdir: container.working_dir.clone().unwrap_or_else(|| "/".into()),
            uid,
            gid,
            groups,
            env: full_env,
            argv,
            setup_log: setup_log.clone(),
            started_marker: started_marker.clone(),
        };
        let host = self.shared.host;
        let programs = ScriptPrograms {
            mount: host.mount.clone(),
            chroot: host.chroot.clone(),
            setpriv: host.setpriv.clone(),
            hostname: host.hostname.clone(),
        };
        let mount_table =
            parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let text = script(
            &launch,
            &programs,
            &mount_table,
            &|p: &Path| p.exists(),
            &|p: &Path| std::fs::canonicalize(p).ok(),
        );
        let script_path = instance_dir.join("setup.sh");
        if let Err(e) = std::fs::write(&script_path, text) {
            self.config_error(
                index,
                format!("failed to write {}: {e}", script_path.display()),
            )
            .await;
            return;
        }

        let args = vec![
            "--mount".into(),
            "--uts".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            host.sh.clone().into_os_string(),
            script_path.clone().into_os_string(),
        ];
        let mut command = match supervised_command(&host.unshare, &args) {
            Ok(c) => c,
            Err(e) => {
                self.config_error(index, e.to_string()).await;
                return;
            }
        };
        command
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(&instance_dir);
        let log_file = match create_log_file(&log_path) {
            Ok(f) => f,
            Err(e) => {
                self.config_error(index, format!("failed to create the log file: {e}"))
                    .await;
                return;
            }
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.config_error(index, format!("failed to start the container: {e}"))
                    .await;
                return;
            }
        };
        let pid = child.id().unwrap_or_default();
        self.shared.watchdog.add_group(pid);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let out_task = stdout.map(|s| tokio::spawn(copy_stream(s, "stdout", log_file.clone())));
        let err_task = stderr.map(|s| tokio::spawn(copy_stream(s, "stderr", log_file.clone())));

        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<Signal>();
        let log = LogInstance::new(log_path);
        self.generation += 1;
        let generation = self.generation;
        let exits = self.exits_tx.clone();
        let init = self.ctrs[index].init;
        let watchdog = self.shared.watchdog.clone();
        let finished_log = log.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(sig) = sig_rx.recv() => {
                        if let Some(pid) = child.id() {
                            crate::process::signal(pid, sig);
                        }
                    }
                }
            };
            // The rest of the container's processes go with its main process, as they would
            // with a PID namespace.
            signal_group(pid, Signal::KILL);
            watchdog.remove_group(pid);
            for task in [out_task, err_task].into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
            finished_log.finish();
            let status = status.unwrap_or_else(|_| ExitStatus::from_raw(255 << 8));
            let _ = exits.send(Exit {
                init,
                index,
                generation,
                status,
            });
        });

        let started_at = now();
        let c = &mut self.ctrs[index];
        if c.starts > 1 {
            c.restart_count += 1;
        }
        let container_id = format!("testbed://{}-{}-{}", self.uid, container.name, c.starts);
        c.run = Some(Run {
            signals: sig_tx,
            started: Instant::now(),
            started_at,
            container_id,
            instance_dir,
            log: log.clone(),
            termination_file,
            generation,
        });
        c.state = State::Running { started_at };
        c.readiness = (!c.init)
            .then(|| container.readiness_probe.clone())
            .flatten()
            .map(|p| {
                super::probe::Readiness::start(p, container.ports.clone().unwrap_or_default())
            });
        self.logs.add_instance(&container.name, log);
        self.dirty = true;
        let name = container.name.clone();
        self.event(
            EventType::Normal,
            "Pulled",
            format!("Container image {image_name:?} already present on machine"),
        )
        .await;
        self.event(
            EventType::Normal,
            "Created",
            format!("Created container: {name}"),
        )
        .await;
        self.event(
            EventType::Normal,
            "Started",
            format!("Started container {name}"),
        )
        .await;
    }

    async fn config_error(&mut self, index: usize, message: String) {
        let c = &mut self.ctrs[index];
        let name = c.spec.name.clone();
        c.state = State::Waiting {
            reason: "CreateContainerConfigError".into(),
            message: Some(message.clone()),
        };
        c.next_start = Instant::now() + Duration::from_secs(1);
        self.dirty = true;
        self.logs.set_waiting(&name, "CreateContainerConfigError");
        self.event(EventType::Warning, "Failed", format!("Error: {message}"))
            .await;
    }

    fn on_exit(&mut self, exit: Exit) {
        let index = exit.index;
        let Some(c) = self.ctrs.get_mut(index) else {
            return;
        };
        if c.init != exit.init || c.run.as_ref().map(|r| r.generation) != Some(exit.generation) {
            return;
        }
        let Some(run) = c.run.take() else {
            return;
        };
        c.readiness = None;
        let (exit_code, signal) = match (exit.status.code(), exit.status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (255, None),
        };
        let setup_ok = run.instance_dir.join("started").exists();
        let (exit_code, reason, mut message) = if !setup_ok && signal.is_none() {
            let setup =
                std::fs::read_to_string(run.instance_dir.join("setup.log")).unwrap_or_default();
            (
                128,
                "StartError".to_string(),
                Some(format!(
                    "kube-testbed: container setup failed: {}",
                    setup.trim()
                )),
            )
        } else if exit_code == 0 {
            (0, "Completed".to_string(), None)
        } else {
            (exit_code, "Error".to_string(), None)
        };
        if message.is_none() {
            let mut text = std::fs::read(&run.termination_file).unwrap_or_default();
            text.truncate(MAX_TERMINATION_MESSAGE);
            let text = String::from_utf8_lossy(&text).into_owned();
            if !text.is_empty() {
                message = Some(text);
            } else if exit_code != 0
                && c.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
            {
                let tail = tail_text(&run.log.path, 80, 2048);
                if !tail.is_empty() {
                    message = Some(tail);
                }
            }
        }
        let terminated = Terminated {
            exit_code,
            signal,
            reason,
            message,
            started_at: run.started_at,
            finished_at: now(),
            container_id: run.container_id.clone(),
        };
        if run.started.elapsed() >= BACKOFF_RESET {
            c.backoff_step = 0;
        }
        c.state = State::Terminated(terminated.clone());
        if c.init && exit_code == 0 {
            c.done = true;
        }
        self.dirty = true;

        // Schedule a restart if the policy wants one (checked again when it is due).
        let policy = self.restart_policy().to_string();
        let c = &mut self.ctrs[index];
        let restart = match policy.as_str() {
            "Always" => !c.init || exit_code != 0,
            "OnFailure" => exit_code != 0,
            _ => false,
        };
        if restart && self.stopping.is_none() && !c.done {
            let delay = if c.backoff_step == 0 {
                Duration::ZERO
            } else {
                let base = self.shared.restart_backoff;
                base.saturating_mul(1 << (c.backoff_step - 1).min(16))
                    .min(MAX_BACKOFF)
            };
            c.backoff_step += 1;
            c.next_start = Instant::now() + delay;
            c.last = Some(terminated);
            if !delay.is_zero() {
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        delay.as_secs(),
                        c.spec.name,
                        self.name,
                        self.namespace,
                        self.uid
                    )),
                };
            }
        }
    }

    fn kill_all(&mut self, sig: Signal) {
        for c in &self.ctrs {
            if let Some(run) = &c.run {
                let _ = run.signals.send(sig);
            }
        }
    }

    async fn wait_all_exits(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.ctrs.iter().any(Ctr::running) {
            match tokio::time::timeout_at(deadline, self.exits_rx.recv()).await {
                Ok(Some(exit)) => self.on_exit(exit),
                _ => break,
            }
        }
    }

    /// Starts (or tightens) stopping the pod: SIGTERM now, SIGKILL at `deadline`.
    async fn begin_stop(&mut self, kind: Stopping, deadline: Instant) {
        let (deadline, killed) = match &self.stopping {
            Some((_, previous, killed)) => ((*previous).min(deadline), *killed),
            None => (deadline, false),
        };
        if self.stopping.is_none() {
            let running: Vec<String> = self
                .ctrs
                .iter()
                .filter(|c| c.running())
                .map(|c| c.spec.name.clone())
                .collect();
            self.kill_all(Signal::TERM);
            for name in running {
                self.event(
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {name}"),
                )
                .await;
            }
            self.dirty = true;
        }
        let kind = match (&self.stopping, kind) {
            (Some((Stopping::Deleting, _, _)), _) => Stopping::Deleting,
            (_, kind) => kind,
        };
        self.stopping = Some((kind, deadline, killed));
    }

    async fn check_stopping(&mut self) {
        let Some((kind, deadline, killed)) = self.stopping.clone() else {
            return;
        };
        if !killed && deadline <= Instant::now() && self.ctrs.iter().any(Ctr::running) {
            self.kill_all(Signal::KILL);
            self.stopping = Some((kind, deadline, true));
        }
    }

    fn update_phase(&mut self) {
        if self.phase.terminal() {
            return;
        }
        let stopping = self.stopping.is_some();
        let any_running = self.ctrs.iter().any(Ctr::running);
        let policy = self.restart_policy().to_string();
        let init_failed = self.ctrs.iter().any(|c| {
            c.init
                && !c.done
                && matches!(&c.state, State::Terminated(t) if t.exit_code != 0)
                && policy == "Never"
        });
        let mains: Vec<&Ctr> = self.ctrs.iter().filter(|c| !c.init).collect();
        let all_terminated = mains
            .iter()
            .all(|c| matches!(c.state, State::Terminated(_)) && !c.running());
        let all_succeeded = mains
            .iter()
            .all(|c| matches!(&c.state, State::Terminated(t) if t.exit_code == 0));
        let phase = if self.pod_reason.is_some() && !any_running {
            Phase::Failed
        } else if stopping && !any_running {
            if all_succeeded && all_terminated {
                Phase::Succeeded
            } else {
                Phase::Failed
            }
        } else if init_failed {
            Phase::Failed
        } else if self.ctrs.iter().any(|c| c.init && !c.done) {
            Phase::Pending
        } else if any_running {
            Phase::Running
        } else if all_terminated {
            match policy.as_str() {
                "Never" if all_succeeded => Phase::Succeeded,
                "Never" => Phase::Failed,
                "OnFailure" if all_succeeded => Phase::Succeeded,
                _ => {
                    if mains
                        .iter()
                        .any(|c| c.last.is_some() || c.restart_count > 0)
                    {
                        Phase::Running
                    } else {
                        Phase::Pending
                    }
                }
            }
        } else if mains
            .iter()
            .any(|c| c.restart_count > 0 || c.last.is_some())
        {
            Phase::Running
        } else {
            Phase::Pending
        };
        if phase != self.phase {
            self.phase = phase;
            self.dirty = true;
        }
    }

    async fn maybe_delete(&mut self) {
        if self.delete_sent || self.pod.metadata.deletion_timestamp.is_none() {
            return;
        }
        if self.ctrs.iter().any(Ctr::running) || !self.phase.terminal() {
            return;
        }
        if self.dirty {
            // Report the final status first, as the kubelet's status manager does.
            self.send_status().await;
            if self.dirty {
                return;
            }
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => self.delete_sent = true,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => self.delete_sent = true,
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "failed to delete the pod");
            }
        }
    }

    fn set_condition(
        &mut self,
        kind: &'static str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) {
        let entry = self.conditions.get(kind);
        let changed = entry.is_none_or(|c| c.status != status);
        let since = match entry {
            Some(c) if !changed => c.since,
            _ => now(),
        };
        self.conditions.insert(
            kind,
            Condition {
                status,
                reason: reason.map(String::from),
                message,
                since,
            },
        );
    }

    fn container_status(&self, c: &Ctr) -> Value {
        let state = |s: &State| match s {
            State::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({ "waiting": w })
            }
            State::Running { started_at } => {
                json!({ "running": { "startedAt": started_at.to_string() } })
            }
            State::Terminated(t) => json!({ "terminated": terminated_json(t) }),
        };
        let running = c.running();
        let mut status = json!({
            "name": c.spec.name,
            "image": c.spec.image.clone().unwrap_or_default(),
            "imageID": c.image_id,
            "ready": c.ready() && !c.init,
            "started": running,
            "restartCount": c.restart_count,
            "state": state(&c.state),
            "lastState": c.last.as_ref().map(|t| json!({ "terminated": terminated_json(t) })).unwrap_or_else(|| json!({})),
        });
        if let Some(id) =
            c.run
                .as_ref()
                .map(|r| r.container_id.clone())
                .or_else(|| match &c.state {
                    State::Terminated(t) => Some(t.container_id.clone()),
                    _ => None,
                })
        {
            status["containerID"] = json!(id);
        }
        if c.init {
            status["ready"] = json!(c.done);
            status["started"] = json!(running);
        }
        status
    }

    fn status_body(&mut self) -> Value {
        let ip = self.shared.facts.host_ip.clone();
        let terminal = self.phase.terminal();
        let completed = self.phase == Phase::Succeeded;
        let inits_pending: Vec<String> = self
            .ctrs
            .iter()
            .filter(|c| c.init && !c.done)
            .map(|c| c.spec.name.clone())
            .collect();
        let unready: Vec<String> = self
            .ctrs
            .iter()
            .filter(|c| !c.init && !c.ready())
            .map(|c| c.spec.name.clone())
            .collect();
        let sandbox =
            self.volumes.is_some() && !(terminal && self.ctrs.iter().all(|c| !c.running()));
        self.set_condition("PodReadyToStartContainers", sandbox, None, None);
        if inits_pending.is_empty() {
            self.set_condition(
                "Initialized",
                true,
                completed.then_some("PodCompleted"),
                None,
            );
        } else {
            self.set_condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    inits_pending.join(" ")
                )),
            );
        }
        let ready =
            unready.is_empty() && inits_pending.is_empty() && !terminal && self.stopping.is_none();
        let (reason, message) = if ready {
            (None, None)
        } else if completed {
            (Some("PodCompleted"), None)
        } else {
            (
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    self.ctrs
                        .iter()
                        .filter(|c| !c.init && (!c.ready() || terminal || self.stopping.is_some()))
                        .map(|c| c.spec.name.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
            )
        };
        self.set_condition("ContainersReady", ready, reason, message.clone());
        self.set_condition("Ready", ready, reason, message);
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(kind, c)| {
                let mut v = json!({
                    "type": kind,
                    "status": if c.status { "True" } else { "False" },
                    "lastProbeTime": null,
                    "lastTransitionTime": c.since.to_string(),
                });
                if let Some(r) = &c.reason {
                    v["reason"] = json!(r);
                }
                if let Some(m) = &c.message {
                    v["message"] = json!(m);
                }
                v
            })
            .collect();
        let init_statuses: Vec<Value> = self
            .ctrs
            .iter()
            .filter(|c| c.init)
            .map(|c| self.container_status(c))
            .collect();
        let statuses: Vec<Value> = self
            .ctrs
            .iter()
            .filter(|c| !c.init)
            .map(|c| self.container_status(c))
            .collect();
        let mut status = json!({
            "phase": self.phase.as_str(),
            "conditions": conditions,
            "hostIP": ip,
            "hostIPs": [{ "ip": ip }],
            "podIP": ip,
            "podIPs": [{ "ip": ip }],
            "startTime": self.start_time.to_string(),
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some((reason, message)) = &self.pod_reason {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        if let Some(generation) = self.pod.metadata.generation {
            status["observedGeneration"] = json!(generation);
        }
        json!({ "metadata": { "uid": self.uid }, "status": status })
    }

    async fn send_status(&mut self) {
        let body = self.status_body();
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api
            .patch_status(&self.name, &params, &Patch::Strategic(body))
            .await
        {
            Ok(_) => {
                self.dirty = false;
                self.next_status_retry = None;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.dirty = false;
                self.next_status_retry = None;
            }
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "failed to update pod status");
                self.next_status_retry = Some(Instant::now() + Duration::from_millis(500));
            }
        }
    }

    async fn cleanup(&mut self) {
        self.shared
            .unregister_logs(&self.namespace, &self.name, &self.uid);
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": t.started_at.to_string(),
        "finishedAt": t.finished_at.to_string(),
        "containerID": t.container_id,
    });
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    v
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
