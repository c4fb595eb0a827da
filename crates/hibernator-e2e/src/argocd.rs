//! Argo CD on a test cluster: the application controller and the repo server (one binary,
//! built from the `argo-cd` Go module by `tools/argocd/build.sh`, cached outside the
//! repository) with Redis, run as processes; Argo CD's own CRDs; `argocd-cm` carrying
//! Hibernator's health checks (`deploy/argocd/argocd-cm.yaml`, unchanged).
//!
//! The application controller deploys to the cluster it runs in (`https://kubernetes.default.svc`)
//! through the admin kubeconfig: `ARGOCD_FAKE_IN_CLUSTER` is Argo CD's own switch for running
//! it outside a pod (what its local development setup uses).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Result;
use kube_testbed::TestCluster;
use serde_json::json;

use crate::processes::Processes;
use crate::world::{apply, apply_crds, free_port, yaml_dir, yaml_docs};

/// Argo CD's namespace.
pub const NAMESPACE: &str = "argocd";

/// The directory `tools/argocd/build.sh` built into (`bin/`, `crds/`), built once per process.
pub fn build_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::built_by(&DIR, "tools/argocd/build.sh")
}

/// Redis, the repo server and the application controller, running; killed when dropped.
pub struct ArgoCd {
    processes: Processes,
}

impl ArgoCd {
    /// Installs Argo CD's CRDs, namespace, `argocd-cm` (with Hibernator's health checks),
    /// `argocd-secret` and the `default` AppProject (which Argo CD's API server would create),
    /// and starts Redis (`redis_server`, Debian's), the repo server and the application
    /// controller, with their files under `dir`.
    pub async fn start(cluster: &TestCluster, dir: &Path, redis_server: &Path) -> Result<ArgoCd> {
        let built = build_dir()?;
        let client = cluster.client()?;
        apply_crds(&client, &yaml_dir(&built.join("crds"))?).await?;
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "argocd-secret", "namespace": NAMESPACE,
                                "labels": {"app.kubernetes.io/part-of": "argocd"}},
                   "stringData": {"server.secretkey": format!("e2e-{}", fastrand::u64(..))}}),
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
                   "metadata": {"name": "default", "namespace": NAMESPACE},
                   "spec": {"sourceRepos": ["*"],
                            "destinations": [{"server": "*", "namespace": "*"}],
                            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}),
        ];
        objects.extend(yaml_docs("deploy/argocd/argocd-cm.yaml")?);
        for o in &objects {
            apply(&client, o).await?;
        }

        let mut processes = Processes::default();
        let redis = free_port()?;
        let repo_server = free_port()?;
        let redis_addr = format!("127.0.0.1:{redis}");
        let home = dir.join("argocd-home");
        let tmp = dir.join("argocd-tmp");
        std::fs::create_dir_all(&home)?;
        std::fs::create_dir_all(&tmp)?;
        let path = format!(
            "{}:{}",
            built.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut redis_cmd = Command::new(redis_server);
        redis_cmd.args([
            "--port",
            &redis.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        processes.spawn(dir, "redis", redis_cmd)?;
        let mut repo_cmd = Command::new(built.join("bin/argocd-repo-server"));
        repo_cmd
            .args(["--port", &repo_server.to_string()])
            .args(["--metrics-port", &free_port()?.to_string()])
            .args([
                "--redis",
                &redis_addr,
                "--disable-tls",
                "--loglevel",
                "info",
            ])
            // Without TLS there is no client CA to check (the default names a mounted Secret).
            .arg("--client-ca-path=")
            .env("PATH", &path)
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .env("ARGOCD_GPG_ENABLED", "false");
        processes.spawn(dir, "argocd-repo-server", repo_cmd)?;
        let mut controller_cmd = Command::new(built.join("bin/argocd-application-controller"));
        controller_cmd
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path())
            .args(["--namespace", NAMESPACE])
            .args(["--repo-server", &format!("127.0.0.1:{repo_server}")])
            .arg("--repo-server-plaintext")
            .args(["--redis", &redis_addr])
            .args(["--metrics-port", &free_port()?.to_string()])
            .args(["--status-processors", "2", "--operation-processors", "2"])
            // Each resource's health in the Application's status (off by default since
            // Argo CD 3.0), so that the tests read the plan's health as Argo CD judged it.
            .arg("--persist-resource-health")
            .args(["--loglevel", "info"])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("ARGOCD_FAKE_IN_CLUSTER", "true")
            .env("PATH", &path)
            .env("HOME", &home)
            .env("TMPDIR", &tmp);
        processes.spawn(dir, "argocd-application-controller", controller_cmd)?;
        Ok(ArgoCd { processes })
    }

    /// Every process's log so far (the last `lines` lines of each).
    pub fn logs(&self, lines: usize) -> String {
        self.processes.logs(lines)
    }
}
