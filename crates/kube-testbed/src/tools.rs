//! Finding the programs the testbed runs: the Kubernetes tools built by `tools/k8s/build.sh`,
//! kubectl, and the util-linux helpers the process kubelet and the process supervisor use.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Environment variable naming a directory with prebuilt tools (skips `build.sh`).
pub const TOOLS_BIN_ENV: &str = "KUBE_TESTBED_TOOLS_BIN";
/// Environment variable naming the kubectl binary to use.
pub const KUBECTL_ENV: &str = "KUBE_TESTBED_KUBECTL";

/// The build script of the tools module, located from this crate's source directory (the
/// testbed is test infrastructure: it always runs from a checkout of this repository).
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/k8s/build.sh")
}

/// The directory holding `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `etcd`,
/// `helm` and `kubeconform`.
#[derive(Debug, Clone)]
pub struct Tools {
    bin: PathBuf,
}

impl Tools {
    /// Builds the tools (a no-op taking milliseconds when cached; about 6.5 minutes cold) and
    /// returns their directory. `KUBE_TESTBED_TOOLS_BIN=DIR` skips the build and uses `DIR`.
    ///
    /// Blocking; the result is computed once per process.
    pub fn get() -> Result<Tools> {
        static TOOLS: OnceLock<std::result::Result<Tools, String>> = OnceLock::new();
        TOOLS
            .get_or_init(|| Self::build().map_err(|e| crate::error::error_chain(&e)))
            .clone()
            .map_err(|detail| Error::BuildTools {
                script: build_script(),
                detail,
            })
    }

    fn build() -> Result<Tools> {
        if let Some(dir) = std::env::var_os(TOOLS_BIN_ENV) {
            return Ok(Tools {
                bin: PathBuf::from(dir),
            });
        }
        let script = build_script();
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|source| Error::Spawn {
                name: script.display().to_string(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stdout.lines().last().map(str::trim).unwrap_or_default();
        if !output.status.success() || last.is_empty() {
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::BuildTools {
                script,
                detail: format!("{}; stderr:\n{}", output.status, tail.join("\n")),
            });
        }
        Ok(Tools {
            bin: PathBuf::from(last),
        })
    }

    /// The directory itself.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The path of one tool, e.g. `helm`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The `helm` binary.
    pub fn helm(&self) -> PathBuf {
        self.path("helm")
    }
}

/// Finds a real kubectl: `KUBE_TESTBED_KUBECTL`, then `kubectl.1.33` from the Google Cloud CLI
/// `kubectl` package (asked through `dpkg -L kubectl`, then its usual install locations), then
/// `kubectl` on `PATH`.
pub fn find_kubectl() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(KUBECTL_ENV) {
        return Ok(PathBuf::from(path));
    }
    const WANTED: &str = "kubectl.1.33";
    if let Ok(output) = Command::new("dpkg").args(["-L", "kubectl"]).output()
        && output.status.success()
    {
        let listing = String::from_utf8_lossy(&output.stdout);
        if let Some(line) = listing
            .lines()
            .find(|line| Path::new(line).file_name() == Some(OsStr::new(WANTED)))
            && is_executable(Path::new(line))
        {
            return Ok(PathBuf::from(line));
        }
    }
    for dir in [
        "/usr/lib/google-cloud-sdk/bin",
        "/usr/share/google-cloud-sdk/bin",
        "/opt/google-cloud-sdk/bin",
    ] {
        let candidate = Path::new(dir).join(WANTED);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    which("kubectl").ok_or_else(|| Error::MissingProgram {
        program: "kubectl".into(),
        hint: format!(
            "set {KUBECTL_ENV}, install the Google Cloud CLI kubectl package (it ships {WANTED}) or put kubectl on PATH"
        ),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Looks a program up on `PATH` and in the usual system directories.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// util-linux and coreutils programs used to supervise processes and build pod sandboxes.
///
/// `unsafe_code` is forbidden in this workspace, so nothing can run between `fork` and `exec`
/// in our own process (`Command::pre_exec` is unsafe). These small, ubiquitous programs do that
/// part instead: `setpriv --pdeathsig` ties a child's life to ours, `unshare` gives a pod its
/// own mount and UTS namespaces, `mount`/`chroot` build its file system view.
#[derive(Debug, Clone)]
pub(crate) struct HostPrograms {
    pub setpriv: PathBuf,
    pub unshare: PathBuf,
    pub mount: PathBuf,
    pub chroot: PathBuf,
    pub sh: PathBuf,
    pub hostname: Option<PathBuf>,
}

impl HostPrograms {
    pub fn get() -> Result<&'static HostPrograms> {
        static PROGRAMS: OnceLock<std::result::Result<HostPrograms, (String, String)>> =
            OnceLock::new();
        PROGRAMS
            .get_or_init(|| {
                let need = |name: &str| {
                    which(name).ok_or_else(|| {
                        (
                            name.to_string(),
                            "it is part of util-linux/coreutils; install them".to_string(),
                        )
                    })
                };
                Ok(HostPrograms {
                    setpriv: need("setpriv")?,
                    unshare: need("unshare")?,
                    mount: need("mount")?,
                    chroot: need("chroot")?,
                    sh: need("sh")?,
                    hostname: which("hostname"),
                })
            })
            .as_ref()
            .map_err(|(program, hint)| Error::MissingProgram {
                program: program.clone(),
                hint: hint.clone(),
            })
    }
}
