//! Flux on a test cluster: source-controller and kustomize-controller, built from their Go
//! modules by `tools/flux/build.sh` (cached outside the repository), run as processes with an
//! admin kubeconfig, with the CRDs of the same builds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Result;
use kube_testbed::TestCluster;
use serde_json::{Value, json};

use crate::processes::Processes;
use crate::world::{apply, apply_crds, free_port, yaml_dir};

/// The namespace the Flux objects of the seed live in.
pub const NAMESPACE: &str = "flux-system";

/// The directory `tools/flux/build.sh` built into (`bin/`, `crds/`), built once per process.
pub fn build_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::built_by(&DIR, "tools/flux/build.sh")
}

/// Both controllers, running; killed when dropped.
pub struct Flux {
    processes: Processes,
}

impl Flux {
    /// Installs Flux's CRDs and namespace into `cluster` and starts both controllers, with
    /// their files (artifact storage, logs) under `dir`.
    pub async fn start(cluster: &TestCluster, dir: &Path) -> Result<Flux> {
        let built = build_dir()?;
        let client = cluster.client()?;
        let mut crds = yaml_dir(&built.join("crds"))?;
        crds.iter_mut().for_each(serve_v1beta2);
        apply_crds(&client, &crds).await?;
        apply(
            &client,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        )
        .await?;

        let storage = free_port()?;
        std::fs::create_dir_all(dir.join("artifacts"))?;
        let source_args = vec![
            format!("--storage-path={}", dir.join("artifacts").display()),
            format!("--storage-addr=127.0.0.1:{storage}"),
            format!("--storage-adv-addr=127.0.0.1:{storage}"),
        ];
        let mut processes = Processes::default();
        for (name, extra) in [
            ("source-controller", source_args),
            ("kustomize-controller", vec![]),
        ] {
            // A temporary directory of its own: kustomize-controller removes the
            // `kustomization-*` directories it finds in its temporary directory when it starts
            // (those of an earlier process of its own), so with a shared /tmp a second test's
            // controller removed the build directory of one already running.
            let tmp = dir.join(format!("{name}-tmp"));
            std::fs::create_dir_all(&tmp)?;
            let mut cmd = Command::new(built.join("bin").join(name));
            cmd.env("KUBECONFIG", cluster.kubeconfig_path())
                .env("RUNTIME_NAMESPACE", NAMESPACE)
                .env("TMPDIR", &tmp)
                .args(["--enable-leader-election=false", "--log-level=info"])
                .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()?))
                .arg(format!("--health-addr=127.0.0.1:{}", free_port()?))
                .args(extra);
            processes.spawn(dir, name, cmd)?;
        }
        Ok(Flux { processes })
    }

    /// Both controllers' logs so far (the last `lines` lines of each).
    pub fn logs(&self, lines: usize) -> String {
        self.processes.logs(lines)
    }
}

/// The seed's GitRepository is `source.toolkit.fluxcd.io/v1beta2`, which source-controller
/// v1.8.5 and v1.9 no longer serve (their CRD has `v1` only). Until then the CRD served
/// `v1beta2` beside `v1` with the same schema for the fields the seed uses and no conversion
/// (`strategy: None`): this puts that version back, as a deprecated, served, non-storage copy
/// of `v1`, so that the seed's manifest applies unchanged. Objects are stored and read by the
/// controller as `v1`.
fn serve_v1beta2(crd: &mut Value) {
    if crd["metadata"]["name"] != "gitrepositories.source.toolkit.fluxcd.io" {
        return;
    }
    let Some(versions) = crd["spec"]["versions"].as_array_mut() else {
        return;
    };
    if versions.iter().any(|v| v["name"] == "v1beta2") {
        return;
    }
    let Some(mut v1beta2) = versions.iter().find(|v| v["name"] == "v1").cloned() else {
        return;
    };
    v1beta2["name"] = json!("v1beta2");
    v1beta2["storage"] = json!(false);
    v1beta2["deprecated"] = json!(true);
    v1beta2["deprecationWarning"] =
        json!("source.toolkit.fluxcd.io/v1beta2 GitRepository is deprecated, upgrade to v1");
    versions.push(v1beta2);
}
