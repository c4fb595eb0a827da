//! The `kube-testbed` command line: `kube-testbed up --kubeconfig PATH [--image IMAGE=EXECUTABLE]...`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cluster::{ClusterOptions, TestCluster};
use crate::error::{Error, Result};
use crate::kubelet::{Image, parse_image_mapping};

/// A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler) and a process kubelet on 127.0.0.1, for tests and demos.
#[derive(Debug, Parser)]
#[command(name = "kube-testbed", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster, write its admin kubeconfig, print `ready`, run until SIGTERM/SIGINT.
    Up(UpArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where to write the admin kubeconfig (removed again on shutdown).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Map a container image to a local executable (repeatable).
    #[arg(long = "image", value_name = "IMAGE=EXECUTABLE", value_parser = parse_image_arg)]
    images: Vec<(String, Image)>,
    /// The node's name.
    #[arg(long, default_value = "kube-testbed")]
    node_name: String,
    /// Keep the cluster directory (certificates, logs, audit log) after shutdown.
    #[arg(long)]
    keep_dir: bool,
}

fn parse_image_arg(text: &str) -> std::result::Result<(String, Image), String> {
    parse_image_mapping(text).map_err(|e| e.to_string())
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(args) => up(args).await,
    }
}

async fn up(args: UpArgs) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Install the handlers first: a signal during start-up still shuts down cleanly.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::io("install a handler for", "SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("install a handler for", "SIGINT", e))?;
    let options = ClusterOptions {
        images: args.images,
        node_name: args.node_name,
        keep_dir: args.keep_dir || ClusterOptions::default().keep_dir,
        ..ClusterOptions::default()
    };
    let cluster = tokio::select! {
        cluster = TestCluster::start(options) => cluster?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    let contents = std::fs::read(cluster.kubeconfig_path())
        .map_err(|e| Error::io("read", cluster.kubeconfig_path(), e))?;
    std::fs::write(&args.kubeconfig, contents)
        .map_err(|e| Error::io("write", &args.kubeconfig, e))?;
    let t = cluster.timings();
    eprintln!(
        "kube-testbed: API server {} (ready in {:.1}s, tools {:.1}s), directory {}",
        cluster.server_url(),
        t.ready.as_secs_f64(),
        t.tools.as_secs_f64(),
        cluster.dir().display()
    );
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("kube-testbed: shutting down");
    let started = std::time::Instant::now();
    cluster.shutdown().await;
    tracing::debug!(took = ?started.elapsed(), "cluster shut down");
    let _ = std::fs::remove_file(&args.kubeconfig);
    Ok(())
}
