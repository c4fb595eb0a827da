//! `cargo xtask <task>`: project tasks that need more than a shell line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod argocd;
mod bench;
mod chaos;
mod crdgen;
mod demo;
mod schemas;

#[derive(Parser)]
#[command(about = "Hibernator project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write the CRD YAML under deploy/crds/ from the Rust types.
    Crdgen {
        /// Fail when the committed files differ from the generated ones instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// Write kubeconform-layout JSON schemas of the kinds under deploy/schemas/.
    Schemas {
        /// Fail when the committed files differ from the generated ones instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// Measure the performance targets (scale, API writes per target, boundary lag, runner
    /// start-up) and print a table.
    Bench(bench::Args),
    /// Run a full night of the seed's plan on a real control plane with AWS emulated by moto.
    Demo(demo::Args),
    /// The fault-injection suite: many nights of a multi-target plan with faults injected at
    /// random (seeded) moments; prints a table, fails on an invariant violation.
    Chaos(chaos::Args),
    /// Write deploy/argocd/argocd-cm.yaml from the Argo CD health checks (health.lua files).
    ArgocdCm {
        /// Fail when the committed file differs from the generated one instead of writing.
        #[arg(long)]
        check: bool,
    },
}

/// The repository root (the parent of this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}

/// Writes `content` to `path`, or with `check` compares and reports a stale file.
pub fn write_or_check(path: &Path, content: &str, check: bool) -> Result<bool> {
    let current = std::fs::read_to_string(path).ok();
    if current.as_deref() == Some(content) {
        return Ok(true);
    }
    if check {
        eprintln!(
            "stale: {}",
            path.strip_prefix(root()).unwrap_or(path).display()
        );
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!(
        "wrote {}",
        path.strip_prefix(root()).unwrap_or(path).display()
    );
    Ok(true)
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Crdgen { check } => {
            if !crdgen::run(check)? {
                bail!("generated files are stale: run `cargo xtask crdgen` and commit the result");
            }
        }
        Task::Schemas { check } => {
            if !schemas::run(check)? {
                bail!("generated files are stale: run `cargo xtask schemas` and commit the result");
            }
        }
        Task::Demo(args) => demo::exit_code(demo::run(args)?)?,
        Task::Bench(args) => bench::run(args)?,
        Task::Chaos(args) => chaos::run(args)?,
        Task::ArgocdCm { check } => {
            if !argocd::run(check)? {
                bail!(
                    "generated files are stale: run `cargo xtask argocd-cm` and commit the result"
                );
            }
        }
    }
    Ok(())
}
