//! A moto server for tests and demos: [moto](https://pypi.org/project/moto/) is an AWS API
//! emulator. [`MotoServer::start`] installs a pinned moto into a Python venv under the
//! workspace's `target/` directory (once; later calls reuse it), starts `moto_server` on
//! 127.0.0.1 with a port of its own choosing, waits until it answers and kills it on drop.
//!
//! Point an AWS SDK at it with `AWS_ENDPOINT_URL=<endpoint>` (any access key works unless the
//! server was started with [`Builder::require_auth`]); moto's account is [`ACCOUNT_ID`].
//!
//! Never part of an image: test and demo infrastructure only.

mod faults;

pub use faults::{Fault, FaultAction, FaultProxy, Inspector};

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The moto release installed (`moto[server]==MOTO_VERSION`).
pub const MOTO_VERSION: &str = "5.2.5";

/// The AWS account moto answers for.
pub const ACCOUNT_ID: &str = "123456789012";

/// Overrides the venv directory (default `${XDG_CACHE_HOME:-$HOME/.cache}/hibernator/moto-<version>`).
pub const VENV_ENV: &str = "MOTO_SERVER_VENV";

/// Overrides the Python interpreter used to create the venv (default `python3`).
pub const PYTHON_ENV: &str = "MOTO_SERVER_PYTHON";

/// Starts `moto_server` and ends it when its parent goes away, so a test process that is
/// killed (and so never drops its [`MotoServer`]) leaves no server behind.
const LAUNCHER: &str = r#"
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
sys.exit(main(sys.argv[1:]))
"#;

/// How long moto may take to start and answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of moto's output kept for error messages.
const KEPT_LINES: usize = 30;

/// Why moto could not be installed, started or reset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command of the installation could not run.
    #[error("failed to run `{command}` (is Python 3 with venv installed?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command of the installation failed.
    #[error("failed to {what}: `{command}` exited with {status}: {output}")]
    Command {
        /// What the command was for.
        what: &'static str,
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its output.
        output: String,
    },
    /// A file of the installation could not be written.
    #[error("failed to prepare the moto venv at {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// moto did not print its address in time, or exited.
    #[error("failed to start moto_server within {timeout:?}; its last output: {output}")]
    Start {
        /// How long we waited.
        timeout: Duration,
        /// The end of moto's output.
        output: String,
    },
    /// An HTTP call to moto failed.
    #[error("failed to {what} at {url}")]
    Http {
        /// What the call was for.
        what: &'static str,
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
}

/// A running `moto_server`, killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    endpoint: String,
    port: u16,
}

/// Options for starting moto.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    env: Vec<(String, String)>,
}

impl Builder {
    /// Sets an environment variable of the moto process (moto reads several, e.g.
    /// `MOTO_EC2_...`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Makes moto check credentials: every request must be signed with keys moto issued
    /// (`INITIAL_NO_AUTH_ACTION_COUNT=0`), so made-up keys are rejected as AWS would.
    pub fn require_auth(self) -> Self {
        self.env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    }

    /// Installs moto if needed and starts it.
    pub fn start(self) -> Result<MotoServer, Error> {
        let venv = install()?;
        let program = venv.join("bin").join("python");
        let mut command = Command::new(&program);
        command
            .arg("-c")
            .arg(LAUNCHER)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            command: format!("{} -c <moto launcher> -H 127.0.0.1 -p 0", program.display()),
            source,
        })?;

        // moto prints ` * Running on http://127.0.0.1:PORT` on stderr. Both pipes are drained
        // for the server's whole life, otherwise a full pipe would block it.
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stderr.take().expect("stderr is piped")),
            Box::new(child.stdout.take().expect("stdout is piped")),
        ];
        for stream in streams {
            let kept = Arc::clone(&kept);
            let port_tx = port_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = parse_port(&line) {
                        let _ = port_tx.send(port);
                    }
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == KEPT_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        drop(port_tx);

        let started = Instant::now();
        let output = |kept: &Arc<Mutex<VecDeque<String>>>| {
            let kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.iter().cloned().collect::<Vec<_>>().join(" | ")
        };
        let port = match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Start {
                    timeout: START_TIMEOUT,
                    output: output(&kept),
                });
            }
        };
        let server = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        // Listening once it printed the address; one request proves it answers.
        loop {
            match server.ping() {
                Ok(()) => break,
                Err(_) if started.elapsed() < START_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(_) => {
                    return Err(Error::Start {
                        timeout: START_TIMEOUT,
                        output: output(&kept),
                    });
                }
            }
        }
        Ok(server)
    }
}

impl MotoServer {
    /// Installs moto if needed and starts a server with default settings.
    pub fn start() -> Result<Self, Error> {
        Builder::default().start()
    }

    /// Options for a server (environment, authentication).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234` (for `AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Wipes every resource in every service (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), Error> {
        let url = format!("{}/moto-api/reset", self.endpoint);
        agent()
            .post(&url)
            .send_empty()
            .map(|_| ())
            .map_err(|source| Error::Http {
                what: "reset moto",
                url,
                source: Box::new(source),
            })
    }

    /// Blocks until the server exits (for the `moto-server` binary).
    pub fn wait(mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    /// Any HTTP answer, whatever its status, shows that the server is up.
    fn ping(&self) -> Result<(), Error> {
        let url = format!("{}/", self.endpoint);
        match agent().get(&url).call() {
            Ok(_) | Err(ureq::Error::StatusCode(_)) => Ok(()),
            Err(source) => Err(Error::Http {
                what: "reach moto",
                url,
                source: Box::new(source),
            }),
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn parse_port(line: &str) -> Option<u16> {
    let rest = line.split("http://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The venv directory: `$MOTO_SERVER_VENV`, else `<target dir>/moto-<version>`.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(VENV_ENV) {
        return PathBuf::from(dir);
    }
    // Outside the repository, like the Kubernetes tools: a clean clone (CI) reuses the venv
    // instead of installing moto again; without a home directory, the target directory.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(cache) => cache
            .join("hibernator")
            .join(format!("moto-{MOTO_VERSION}")),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
            .join(format!("moto-{MOTO_VERSION}")),
    }
}

/// Installs `moto[server]==MOTO_VERSION` into [`venv_dir`] unless it is already there, and
/// returns the venv. Safe to call from parallel threads and processes (a file lock
/// serialises the installation).
pub fn install() -> Result<PathBuf, Error> {
    let venv = venv_dir();
    let marker = venv.join(".hibernator-installed");
    if marker.exists() {
        return Ok(venv);
    }
    let parent = venv.parent().unwrap_or(Path::new("."));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let lock_path = venv.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    fs4::fs_std::FileExt::lock_exclusive(&lock).map_err(io(&lock_path))?;
    if marker.exists() {
        return Ok(venv);
    }
    if venv.exists() {
        // A half-finished installation: start over.
        std::fs::remove_dir_all(&venv).map_err(io(&venv))?;
    }
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".into());
    run(
        "create the moto venv",
        Command::new(&python).arg("-m").arg("venv").arg(&venv),
    )?;
    run(
        "install moto",
        Command::new(venv.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("moto[server]=={MOTO_VERSION}")),
    )?;
    std::fs::write(&marker, MOTO_VERSION).map_err(io(&marker))?;
    Ok(venv)
}

fn run(what: &'static str, command: &mut Command) -> Result<(), Error> {
    let line = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command.output().map_err(|source| Error::Spawn {
        command: line.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    Err(Error::Command {
        what,
        command: line,
        status: output.status,
        output: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_moto_prints() {
        assert_eq!(
            parse_port(" * Running on http://127.0.0.1:41234"),
            Some(41234)
        );
        assert_eq!(parse_port("Press CTRL+C to quit"), None);
    }

    #[test]
    fn starts_answers_resets_and_stops() {
        let server = MotoServer::start().expect("moto must start (tests never skip)");
        assert!(server.endpoint().starts_with("http://127.0.0.1:"));
        let url = format!("{}/moto-api/data.json", server.endpoint());
        let body = agent()
            .get(&url)
            .call()
            .expect("moto answers")
            .body_mut()
            .read_to_string()
            .expect("a body");
        assert!(body.starts_with('{'), "{body}");
        server.reset().expect("reset");
        let port = server.port();
        drop(server);
        // Killed on drop: nothing listens on the port any more.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn two_servers_run_side_by_side() {
        let a = MotoServer::start().expect("first moto");
        let b = MotoServer::start().expect("second moto");
        assert_ne!(a.port(), b.port());
    }
}
