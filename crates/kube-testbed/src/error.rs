//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong while starting, using or stopping a test cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `tools/k8s/build.sh` failed or printed no directory.
    #[error("failed to build the Kubernetes tools with {script}: {detail}")]
    BuildTools {
        /// The script that was run.
        script: PathBuf,
        /// Exit status and the last lines of its output.
        detail: String,
    },
    /// `tools/crds/fetch.sh` failed or printed no directory.
    #[error("failed to fetch the third-party CRDs with {script}: {detail}")]
    FetchCrds {
        /// The script that was run.
        script: PathBuf,
        /// Exit status and the last lines of its output.
        detail: String,
    },
    /// A third-party CRD file is missing or is not one CustomResourceDefinition.
    #[error("invalid CRD file {}: {detail}", path.display())]
    CrdFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A required program (for example `setpriv`, `unshare`, `kubectl`) is missing.
    #[error("failed to find {program}: {hint}")]
    MissingProgram {
        /// The program looked for.
        program: String,
        /// Where it was looked for and how to provide it.
        hint: String,
    },
    /// A file system operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Spawning a process failed.
    #[error("failed to start {name}")]
    Spawn {
        /// The component or program.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A control-plane process exited while the cluster was starting or running.
    #[error("{name} exited unexpectedly ({status}); last log lines of {}:\n{log_tail}", log.display())]
    ProcessExited {
        /// The component.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last interesting lines of that log.
        log_tail: String,
    },
    /// Waiting for a readiness signal took too long.
    #[error("timed out after {seconds}s waiting for {what}{details}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        seconds: u64,
        /// Log tails or the last error seen.
        details: String,
    },
    /// Generating certificates or keys failed.
    #[error("failed to generate the cluster's certificates")]
    Certificate(#[source] rcgen::Error),
    /// Building a TLS configuration failed.
    #[error("failed to configure TLS for {what}")]
    Tls {
        /// Which endpoint.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// Loading a kubeconfig failed.
    #[error("failed to load the kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A call to the API server failed.
    #[error("failed to {action}")]
    Kube {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A helper command (kubectl, helm, ...) failed.
    #[error("command failed: {command} ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// A line of the audit log is not an audit event.
    #[error("failed to parse line {line} of the audit log {}", path.display())]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The process-wide shared cluster could not be started (the first attempt's error).
    #[error("the shared test cluster failed to start: {0}")]
    SharedStart(String),
    /// The cluster's background thread is gone.
    #[error("the test cluster's background thread stopped unexpectedly")]
    ClusterThread,
    /// Invalid option, for example a malformed `--image` mapping.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}

/// The error and all its causes on one line each: for messages that cross a thread boundary.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str("\n  caused by: ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
