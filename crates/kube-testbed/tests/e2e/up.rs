//! The `kube-testbed up` binary: prints `ready` when the cluster serves, stops cleanly on
//! SIGTERM, and even when killed outright leaves no process or directory behind (the
//! parent-death signal and the watchdog, which also clean up after a test binary's exit).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::eventually;

struct Up {
    child: Child,
    kubeconfig: PathBuf,
    dir: PathBuf,
    _home: tempfile::TempDir,
}

/// Starts `kube-testbed up` and waits for `ready`.
async fn up() -> anyhow::Result<Up> {
    let home = tempfile::tempdir()?;
    let kubeconfig = home.path().join("testbed.kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-testbed"))
        .args(["up", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--image", "testbed.example/shell:1=/bin/sh"])
        .env("KUBE_TESTBED_KEEP", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(600), stdout.next_line())
        .await
        .context("kube-testbed up did not become ready")??;
    let mut err_lines = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(200), stderr.next_line()).await
    {
        err_lines.push(line);
    }
    assert_eq!(ready.as_deref(), Some("ready"), "stderr: {err_lines:?}");
    let dir = err_lines
        .iter()
        .find_map(|l| l.split("directory ").nth(1))
        .map(PathBuf::from)
        .with_context(|| format!("no directory in {err_lines:?}"))?;
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    Ok(Up {
        child,
        kubeconfig,
        dir,
        _home: home,
    })
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    kube_testbed::install_crypto_provider();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

fn processes_using(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .count()
}

async fn assert_nothing_left(dir: &Path) -> anyhow::Result<()> {
    eventually(
        "the cluster's processes and directory to be gone",
        Duration::from_secs(20),
        || {
            let left = processes_using(dir);
            let exists = dir.exists();
            async move { Ok((left == 0 && !exists).then_some(())) }
        },
    )
    .await
}

#[tokio::test]
async fn up_prints_ready_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    let mut up = up().await?;
    let nodes: Api<Node> = Api::all(client(&up.kubeconfig).await?);
    let node = eventually("the node", Duration::from_secs(30), || async {
        Ok(nodes.get_opt("kube-testbed").await?)
    })
    .await?;
    assert!(node.status.is_some());

    let pid = up.child.id().context("pid")?;
    rustix::process::kill_process(Pid::from_raw(pid as i32).context("pid")?, Signal::TERM)?;
    let status = tokio::time::timeout(Duration::from_secs(30), up.child.wait()).await??;
    assert!(status.success(), "{status}");
    assert!(
        !up.kubeconfig.exists(),
        "the kubeconfig is removed on shutdown"
    );
    assert_nothing_left(&up.dir).await
}

#[tokio::test]
async fn a_killed_owner_leaves_no_processes_or_files_behind() -> anyhow::Result<()> {
    let mut up = up().await?;
    assert!(
        processes_using(&up.dir) >= 4,
        "etcd, kube-apiserver, controller manager, scheduler"
    );
    // No chance to clean up: SIGKILL, as when a test binary exits without running destructors.
    up.child.start_kill()?;
    up.child.wait().await?;
    assert_nothing_left(&up.dir).await
}
