//! Shared helpers of the end-to-end tests.

pub mod argocd;
pub mod chaos;
pub mod checkers;
pub mod flux;
pub mod gitops;
pub mod gitserver;
pub mod processes;
pub mod receiver;
pub mod stack;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/<name> sits two levels below the root")
        .to_path_buf()
}

/// The directory with the test-cluster tools (kube-apiserver, helm, ...), built on first use
/// by `tools/k8s/build.sh` and cached outside the repository.
pub fn tools_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_by(&BIN, "tools/k8s/build.sh")
}

/// The directory a build script of `tools/` prints as its last line (it builds on first use
/// and caches outside the repository), run once per process and remembered in `cell`.
pub fn built_by(cell: &OnceLock<Result<PathBuf, String>>, script: &str) -> Result<PathBuf> {
    cell.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join(script))
            .output()
            .map_err(|e| format!("failed to run {script}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{script} failed:\n{}",
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

/// Runs `helm` with `args`; returns stdout, or the error with stderr.
pub fn helm(args: &[&str]) -> Result<String> {
    let helm = tools_bin()?.join("helm");
    let home = tempdir_for("helm-home");
    let out = Command::new(&helm)
        .args(args)
        .current_dir(root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .with_context(|| format!("failed to run {}", helm.display()))?;
    if !out.status.success() {
        bail!(
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A scratch directory under the target directory, unique per process and name.
pub fn tempdir_for(name: &str) -> PathBuf {
    let dir = root()
        .join("target/e2e-tmp")
        .join(format!("{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Renders the chart with `--set` values; returns the documents.
pub fn render_chart(sets: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec![
        "template",
        "hib",
        "deploy/helm/hibernator",
        "--namespace",
        "hibernator-system",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let text = helm(&args)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).context("helm output is YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The documents of a kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}
