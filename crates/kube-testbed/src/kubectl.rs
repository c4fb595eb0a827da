//! Running real command-line clients (kubectl, helm) against the testbed, each invocation
//! isolated: its own `HOME` and discovery cache, so no state leaks between calls or from the
//! user's own configuration.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// The captured result of a successful command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error (kubectl prints warnings there, e.g. about version skew).
    pub stderr: String,
}

/// Runs `program args...` with `input` on stdin and the given environment; a non-zero exit is
/// an [`Error::Command`] carrying both outputs.
pub async fn run_tool(
    program: &Path,
    args: &[&OsStr],
    env: &[(&str, &OsStr)],
    input: Option<&[u8]>,
) -> Result<Output> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let line = std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        name: line.clone(),
        source,
    })?;
    if let Some(input) = input
        && let Some(mut stdin) = child.stdin.take()
    {
        // A failed write shows up as the command's own error below.
        let _ = stdin.write_all(input).await;
        drop(stdin);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| Error::Spawn {
            name: line.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(Error::Command {
            command: line,
            status: output.status.to_string(),
            stdout,
            stderr,
        });
    }
    Ok(Output { stdout, stderr })
}

/// A real kubectl bound to one kubeconfig. Every call gets a fresh `HOME` and `--cache-dir`, so
/// no discovery cache or configuration leaks between calls (or from the user's own).
#[derive(Debug, Clone)]
pub struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl `program` talking to the cluster in `kubeconfig`.
    pub fn new(program: PathBuf, kubeconfig: PathBuf) -> Kubectl {
        Kubectl {
            program,
            kubeconfig,
        }
    }

    /// The kubectl binary.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The kubeconfig it uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl --kubeconfig K --cache-dir C args...`.
    pub async fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_with_input(args, None).await
    }

    /// Like [`Kubectl::run`], with `input` on stdin (for `apply -f -`).
    pub async fn run_with_input<I, S>(&self, args: I, input: Option<&[u8]>) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let home = tempfile::Builder::new()
            .prefix("kube-testbed-kubectl.")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        let args: Vec<S> = args.into_iter().collect();
        let cache = home.path().join(".kube/cache");
        let mut all: Vec<&OsStr> = vec![
            OsStr::new("--kubeconfig"),
            self.kubeconfig.as_os_str(),
            OsStr::new("--cache-dir"),
            cache.as_os_str(),
        ];
        all.extend(args.iter().map(AsRef::as_ref));
        let env = [("HOME", home.path().as_os_str())];
        run_tool(&self.program, &all, &env, input).await
    }
}

/// The real helm binary with a private home, cache, config and data directory.
#[derive(Debug)]
pub struct Helm {
    program: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// Helm at `program`.
    pub fn new(program: PathBuf) -> Result<Helm> {
        let home = tempfile::Builder::new()
            .prefix("kube-testbed-helm.")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        Ok(Helm { program, home })
    }

    /// Runs `helm args...`.
    pub async fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let home = self.home.path();
        let cache = home.join("cache");
        let config = home.join("config");
        let data = home.join("data");
        let env = [
            ("HOME", home.as_os_str()),
            ("HELM_CACHE_HOME", cache.as_os_str()),
            ("HELM_CONFIG_HOME", config.as_os_str()),
            ("HELM_DATA_HOME", data.as_os_str()),
        ];
        run_tool(&self.program, &all, &env, None).await
    }
}
