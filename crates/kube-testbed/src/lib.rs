//! A real Kubernetes control plane for end-to-end tests and the demo, plus a process kubelet.
//!
//! Test and demo infrastructure only; never part of an image.
//!
//! [`TestCluster::start`] (or the process-wide [`TestCluster::shared`]) builds the tools with
//! `tools/k8s/build.sh` (a no-op when cached), generates a PKI, and starts on free 127.0.0.1
//! ports: etcd, kube-apiserver (RBAC and Node authorization, audit log of every write),
//! kube-controller-manager (job, cronjob, ttl-after-finished, deployment, replicaset,
//! statefulset, disruption, garbage collector, pod garbage collector, namespace, serviceaccount,
//! serviceaccount-token, root-ca-certificate-publisher, clusterrole-aggregation,
//! endpointslice, node-lifecycle and horizontal-pod-autoscaler controllers, the last syncing
//! every 2 s), kube-scheduler and the process kubelet. Everything but the kubelet is the
//! official Kubernetes v1.37.2 code.
//!
//! [`crds::install_third_party_crds`] installs the real CRDs of Flux, Argo CD, Argo Rollouts and
//! KEDA, fetched from the Go module proxy by `tools/crds/fetch.sh` (cached).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_testbed::{Image, TestCluster};
//! let cluster = TestCluster::shared().await?;            // one cluster per test binary
//! cluster.map_image("example.com/shell", Image::new("/bin/sh"));
//! let namespace = cluster.create_namespace("my-test").await?;
//! let client = cluster.client()?;                         // kube::Client, admin
//! let out = cluster.kubectl()?.run(["get", "pods", "-n", &namespace]).await?;
//! let writes = cluster.audit_events()?;                   // who wrote what, with which field manager
//! # let _ = (client, out, writes); Ok(()) }
//! ```
//!
//! # The process kubelet
//!
//! One Node (`kube-testbed` by default, address 127.0.0.1) runs pods as local processes. A
//! container image is mapped to a local executable (`--image IMAGE=EXECUTABLE`,
//! [`ClusterOptions::image`], [`TestCluster::map_image`]); an unmapped image leaves the
//! container waiting with `ErrImagePull`. Each container runs in a private mount and UTS
//! namespace whose root mirrors the host's through an overlay (writes land in a tmpfs), with
//! volumes bind-mounted at their real `mountPath`s, as the configured user and groups. What it
//! does like a kubelet:
//!
//! - registers a Ready Node (capacity, `daemonEndpoints`, Lease heartbeats) as
//!   `system:node:<name>`, so the Node authorizer limits it to its own pods' objects;
//! - environment: `env` with `$(VAR)` expansion, `valueFrom` (`secretKeyRef`,
//!   `configMapKeyRef`, `fieldRef`, `resourceFieldRef`), `envFrom`, plus
//!   `KUBERNETES_SERVICE_HOST=127.0.0.1` and `KUBERNETES_SERVICE_PORT=<API server port>`;
//! - volumes: `secret`, `configMap`, `downwardAPI`, `projected` (those plus
//!   `serviceAccountToken` from the real TokenRequest API, bound to the pod, refreshed at 80 % of
//!   its lifetime; the `kube-root-ca.crt` ConfigMap), `emptyDir`, existing `hostPath` paths;
//!   `subPath`/`subPathExpr`; `runAsUser`, `runAsGroup`, `fsGroup`, `supplementalGroups` and
//!   `runAsNonRoot` are honoured (volume files group-owned by `fsGroup`, tokens owned by a
//!   common `runAsUser` with mode 0600);
//! - status: `Pending` with `ContainerCreating`, `Running` with the `PodReadyToStartContainers`,
//!   `Initialized`, `ContainersReady` and `Ready` conditions and running states, then
//!   `Succeeded`/`Failed` with exit codes, reasons (`Completed`, `Error`, `StartError`), the
//!   termination message from `terminationMessagePath` (read inside the container's view) and
//!   `FallbackToLogsOnError`; init containers in order; restarts per `restartPolicy` with
//!   `CrashLoopBackOff` back-off; pod `activeDeadlineSeconds` (`DeadlineExceeded`); Events;
//! - logs: stdout and stderr in CRI format, served over HTTPS on the kubelet port
//!   (`kubectl logs` with `-f`, `--tail`, `--since`, `--timestamps`, `--limit-bytes`,
//!   `--previous`);
//! - graceful deletion: SIGTERM, the grace period, SIGKILL, a terminal phase, then a delete
//!   with grace period 0.
//!
//! # Deviations (all inside the kubelet)
//!
//! - **No container runtime, no image contents.** An image is one executable: `command[0]`,
//!   whatever path it names, runs the mapped executable with `command[1..]` and `args`. The
//!   file system is the host's (through an overlay), not the image's; `PATH`, `HOME` and
//!   `HOSTNAME` are set as a runtime would for an image without `ENV`.
//! - **Host network, host PID namespace.** Pod IP = host IP = 127.0.0.1; ports of different pods
//!   collide; Services have no endpoints reachable by cluster IP (only the `kubernetes` Service
//!   is emulated through `KUBERNETES_SERVICE_HOST/PORT`). The main process is not PID 1, so
//!   default signal dispositions apply (a shell without a `TERM` trap exits on SIGTERM); the
//!   rest of a container's process group is killed when its main process exits.
//! - **No resource isolation**: requests/limits are not enforced (no cgroups); QoS, OOM kills,
//!   eviction and pressure conditions never happen.
//! - **Probes**: readiness probes run (`httpGet` over HTTP and `tcpSocket`, against
//!   127.0.0.1), so a pod is Ready only once they pass; `exec`, `grpc` and HTTPS readiness
//!   probes count as passing; liveness and startup probes and lifecycle hooks are ignored.
//! - **Volumes**: no `..data` symlink swap; secret and configMap contents are read when the pod
//!   starts and not refreshed (tokens are); persistent volumes, CSI, `image` volumes,
//!   `clusterTrustBundle` and `podCertificate` projections are not supported (the pod stays in
//!   `ContainerCreating` with a `FailedMount` event); `hostPath` is never created.
//! - **Sidecar init containers** (`restartPolicy: Always` on an init container), ephemeral
//!   containers, `exec`/`attach`/`port-forward` are not supported.
//! - **Log endpoint authorization**: any client certificate signed by the cluster CA is
//!   accepted (a kubelet asks the API server with a SubjectAccessReview).
//! - Requires root, util-linux (`unshare`, `mount`, `setpriv`) and coreutils (`chroot`, `env`).
//!
//! What the testbed therefore cannot prove: the container runtime and image contents,
//! node-level isolation, networking between pods and nodes, real cloud IAM. The README says how
//! to run the same tests on a real cluster.

mod audit;
pub mod cli;
mod cluster;
pub mod crds;
mod error;
mod kubectl;
mod kubelet;
mod pki;
mod process;
mod tools;

pub use audit::{
    AuditEvent, AuditObjectRef, AuditResponseStatus, AuditUser, POLICY as AUDIT_POLICY,
    read_audit_log,
};
pub use cluster::{
    CONTROLLERS, ClusterOptions, KEEP_ENV, StartupTimings, TestCluster, install_crypto_provider,
};
pub use error::{Error, Result};
pub use kubectl::{Helm, Kubectl, Output, run_tool};
pub use kubelet::{Image, Images, parse_image_mapping};
pub use pki::{CertFiles, Pki};
pub use tools::{KUBECTL_ENV, TOOLS_BIN_ENV, Tools, build_script, find_kubectl};
