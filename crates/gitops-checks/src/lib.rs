//! Helpers for the GitOps checks: where the repository is, and the real tools the checks run
//! (`kubectl kustomize`, `kubeconform`). A tool that cannot be found is a test failure with
//! the reason, never a skipped check.
//!
//! The tests live in `tests/`; other crates' tests (the `kubectl-hibernator` pipeline in
//! `hibernator-cli`) use these helpers as a dev-dependency.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Environment variable naming the `kubectl` to use.
pub const KUBECTL_ENV: &str = "HIBERNATOR_KUBECTL";
/// Environment variable naming the `kubeconform` to use instead of building it.
pub const KUBECONFORM_ENV: &str = "HIBERNATOR_KUBECONFORM";
/// The kubectl release the checks are written against (`kubectl.1.33` of the Google Cloud CLI
/// packages); any recent `kubectl` builds the same output.
pub const KUBECTL_VERSIONED: &str = "kubectl.1.33";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `examples/gitops` in the repository.
pub fn gitops_examples() -> PathBuf {
    repo_root().join("examples/gitops")
}

/// Every directory under `examples/gitops` holding a `kustomization.yaml`, sorted.
pub fn example_kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        if entries
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        {
            out.push(dir.to_path_buf());
        }
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&gitops_examples(), &mut out);
    out
}

/// Every `.yaml` file under `dir`, recursively, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// The repository-relative form of `path`, for messages.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A `kubectl` binary, run with its own empty home so no user configuration or cache leaks in.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The binary.
    pub path: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    /// Finds kubectl: `$HIBERNATOR_KUBECTL`, else `kubectl.1.33` (on `PATH`, in the files of
    /// the `kubectl` Debian package, or in the Google Cloud CLI's usual directory), else
    /// `kubectl` on `PATH`. Panics with what was tried when there is none. `home` becomes
    /// its `HOME`.
    pub fn find(home: &Path) -> Self {
        let mut tried = Vec::new();
        let path = find_kubectl(&mut tried).unwrap_or_else(|| {
            panic!(
                "kubectl not found (tried: {}); install kubectl or set {KUBECTL_ENV}",
                tried.join(", ")
            )
        });
        std::fs::create_dir_all(home)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", home.display()));
        Self {
            path,
            home: home.to_path_buf(),
        }
    }

    /// A command for this kubectl with a clean environment for configuration.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null());
        c
    }

    /// `kubectl kustomize DIR`: the built manifests. Panics with kubectl's error on failure.
    pub fn kustomize(&self, dir: &Path) -> String {
        let out = self.try_kustomize(dir);
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed: {}",
            relative(dir),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
    }

    /// `kubectl kustomize DIR`, whatever the outcome.
    pub fn try_kustomize(&self, dir: &Path) -> Output {
        self.command()
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()))
    }
}

fn find_kubectl(tried: &mut Vec<String>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(KUBECTL_ENV) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{KUBECTL_ENV}={} is not an executable file",
            p.display()
        );
        return Some(p);
    }
    tried.push(format!("${KUBECTL_ENV} (unset)"));
    tried.push(format!("{KUBECTL_VERSIONED} on PATH"));
    if let Some(p) = on_path(KUBECTL_VERSIONED) {
        return Some(p);
    }
    tried.push("dpkg -L kubectl".into());
    if let Ok(out) = Command::new("dpkg").args(["-L", "kubectl"]).output()
        && out.status.success()
    {
        let listing = String::from_utf8_lossy(&out.stdout);
        if let Some(p) = listing
            .lines()
            .map(PathBuf::from)
            .find(|p| p.file_name().is_some_and(|n| n == KUBECTL_VERSIONED) && is_executable(p))
        {
            return Some(p);
        }
    }
    let usual = Path::new("/usr/lib/google-cloud-sdk/bin").join(KUBECTL_VERSIONED);
    tried.push(usual.display().to_string());
    if is_executable(&usual) {
        return Some(usual);
    }
    tried.push("kubectl on PATH".into());
    on_path("kubectl")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `kubeconform` binary: `$HIBERNATOR_KUBECONFORM`, else the one `tools/k8s/build.sh`
/// builds (from its pinned Go module; cached after the first build). Panics when neither
/// works.
pub fn kubeconform() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_kubeconform).clone()
}

fn find_kubeconform() -> PathBuf {
    if let Some(p) = std::env::var_os(KUBECONFORM_ENV) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{KUBECONFORM_ENV}={} is not an executable file",
            p.display()
        );
        return p;
    }
    let script = repo_root().join("tools/k8s/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "tools/k8s/build.sh failed ({}); it builds kubeconform from its Go module. Set \
         {KUBECONFORM_ENV} to use another kubeconform",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .expect("tools/k8s/build.sh prints the tools directory last");
    let bin = Path::new(dir.trim()).join("kubeconform");
    assert!(
        is_executable(&bin),
        "tools/k8s/build.sh did not produce {}",
        bin.display()
    );
    bin
}
