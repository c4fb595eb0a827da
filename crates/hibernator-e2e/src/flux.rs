//! Flux on a test cluster: source-controller and kustomize-controller, built from their Go
//! modules by `tools/flux/build.sh` (cached outside the repository), run as processes with an
//! admin kubeconfig, with the CRDs of the same builds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube_testbed::TestCluster;
use serde_json::{Value, json};

use crate::world::{apply, free_port, wait_for};

/// The namespace the Flux objects of the seed live in.
pub const NAMESPACE: &str = "flux-system";

/// The directory `tools/flux/build.sh` built into (`bin/`, `crds/`), built once per process.
pub fn build_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(crate::root().join("tools/flux/build.sh"))
            .output()
            .map_err(|e| format!("failed to run tools/flux/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tools/flux/build.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(PathBuf::from(
            stdout.lines().last().unwrap_or_default().trim(),
        ))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Both controllers, running; killed when dropped.
pub struct Flux {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Drop for Flux {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Flux {
    /// Installs Flux's CRDs and namespace into `cluster` and starts both controllers, with
    /// their files (artifact storage, logs) under `dir`.
    pub async fn start(cluster: &TestCluster, dir: &Path) -> Result<Flux> {
        let built = build_dir()?;
        let client = cluster.client()?;
        let mut crds = Vec::new();
        for entry in std::fs::read_dir(built.join("crds"))? {
            let text = std::fs::read_to_string(entry?.path())?;
            for mut doc in serde_saphyr::from_multiple::<Value>(&text)? {
                if !doc.is_null() {
                    serve_v1beta2(&mut doc);
                    apply(&client, &doc).await?;
                    crds.push(
                        doc["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        }
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in crds {
            wait_for(
                Duration::from_secs(60),
                &format!("CRD {name} established"),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        api.get(&name)
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
        let mut flux = Flux {
            children: vec![],
            logs: vec![],
        };
        for (name, extra) in [
            ("source-controller", source_args),
            ("kustomize-controller", vec![]),
        ] {
            let log_path = dir.join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path)?;
            // A temporary directory of its own: kustomize-controller removes the
            // `kustomization-*` directories it finds in its temporary directory when it starts
            // (those of an earlier process of its own), so with a shared /tmp a second test's
            // controller removed the build directory of one already running.
            let tmp = dir.join(format!("{name}-tmp"));
            std::fs::create_dir_all(&tmp)?;
            let child = Command::new(built.join("bin").join(name))
                .env("KUBECONFIG", cluster.kubeconfig_path())
                .env("RUNTIME_NAMESPACE", NAMESPACE)
                .env("TMPDIR", &tmp)
                .args(["--enable-leader-election=false", "--log-level=info"])
                .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()?))
                .arg(format!("--health-addr=127.0.0.1:{}", free_port()?))
                .args(extra)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("failed to start {name}"))?;
            flux.children.push(child);
            flux.logs.push(log_path);
        }
        Ok(flux)
    }

    /// Both controllers' logs so far (the last `lines` lines of each).
    pub fn logs(&self, lines: usize) -> String {
        tails(&self.logs, lines)
    }
}

/// The last `lines` lines of each log file, each under its name.
pub fn tails(logs: &[PathBuf], lines: usize) -> String {
    logs.iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            format!(
                "--- {}:\n{}",
                p.file_name().unwrap_or_default().to_string_lossy(),
                all[all.len().saturating_sub(lines)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
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
