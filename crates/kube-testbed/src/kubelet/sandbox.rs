//! A container's file-system view: a private mount namespace in which volumes appear at their
//! real `mountPath`s, without touching the host file system.
//!
//! Each container runs as `unshare --mount --uts --propagation private -- sh SCRIPT`. The
//! script, generated here with every path spelled out, builds a root for the container:
//!
//! 1. a tmpfs (per container, inside its sandbox directory) holds overlay upper/work
//!    directories, so nothing the container or the setup writes reaches the host's disk;
//! 2. the new root is an overlay whose lower layer is the host's `/` (read-only use of the host's
//!    files, writes go to the tmpfs); every other host mount is bind-mounted recursively into it,
//!    except that a mount in which a mount point has to be *created* gets an overlay of its own
//!    (a mount point under it, e.g. `/run/secrets/...` when `/run` is a tmpfs, must not be
//!    created on the host);
//! 3. `/dev` is a fresh tmpfs with the usual device nodes bind-mounted from the host, a private
//!    `/dev/shm` and the host's `/dev/pts` (what container runtimes give containers);
//! 4. volumes and the termination-message file are bind-mounted at their targets (read-only
//!    where Kubernetes mounts them read-only);
//! 5. `chroot` into the new root, `setpriv` to the container's user and groups (and a
//!    parent-death signal), `env -i -C WORKDIR VARS... EXECUTABLE ARGS...`.
//!
//! Every process spawned this way keeps its PID through all the `exec`s, so the kubelet signals
//! the container's main process directly.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BindMount {
    /// Host path (file or directory) to mount.
    pub source: PathBuf,
    /// Where the container sees it (its `mountPath`).
    pub target: PathBuf,
    /// Whether `source` is a file (then `target` is created as a file).
    pub is_file: bool,
    /// Mount read-only.
    pub read_only: bool,
}

/// Everything needed to start one container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerLaunch {
    /// A per-container directory the script may mount a tmpfs on.
    pub scratch: PathBuf,
    /// Bind mounts (volumes, termination message file).
    pub mounts: Vec<BindMount>,
    /// UTS host name.
    pub hostname: Option<String>,
    /// Working directory inside the container.
    pub workdir: String,
    /// uid, gid and supplementary groups.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The environment (exactly these variables).
    pub env: Vec<(String, String)>,
    /// Executable and arguments.
    pub argv: Vec<String>,
    /// Host file receiving the setup commands' output.
    pub setup_log: PathBuf,
    /// Host file created when the setup succeeded, right before the container's program runs.
    pub started_marker: PathBuf,
}

/// Paths of the util-linux and coreutils programs the script calls.
#[derive(Debug, Clone)]
pub(crate) struct ScriptPrograms {
    pub mount: PathBuf,
    pub chroot: PathBuf,
    pub setpriv: PathBuf,
    pub hostname: Option<PathBuf>,
}

/// One entry of `/proc/self/mountinfo`: only the mount point matters here.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(digits) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(v) = u8::from_str_radix(digits, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How one host mount appears in the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootOp {
    /// `mount --rbind PATH ROOT/PATH`: the mount and everything below it, as on the host.
    Rbind(PathBuf),
    /// An overlay with the host mount as lower layer (mount points get created under it).
    Overlay(PathBuf),
}

fn is_under(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// Plans how host mounts enter the container root. `mounts` are the host's mount points
/// (`/` and everything under `/dev` are handled separately and ignored here); `anchors` are
/// the deepest existing ancestors of paths that have to be created.
pub(crate) fn plan_root(mounts: &[PathBuf], anchors: &[PathBuf]) -> Vec<RootOp> {
    let dev = Path::new("/dev");
    let set: BTreeSet<PathBuf> = mounts
        .iter()
        .filter(|m| m.as_path() != Path::new("/") && m.as_path() != dev && !is_under(m, dev))
        .cloned()
        .collect();
    let parent_of = |m: &Path| -> Option<PathBuf> {
        set.iter()
            .filter(|p| is_under(m, p))
            .max_by_key(|p| p.components().count())
            .cloned()
    };
    // Mounts containing an anchor, and all their ancestors, are expanded.
    let mut expanded = BTreeSet::new();
    for anchor in anchors {
        let containing = set
            .iter()
            .filter(|m| anchor == *m || is_under(anchor, m))
            .max_by_key(|m| m.components().count())
            .cloned();
        let mut current = containing;
        while let Some(m) = current {
            current = parent_of(&m);
            expanded.insert(m);
        }
    }
    let mut ops = Vec::new();
    fn walk(
        parent: Option<&Path>,
        set: &BTreeSet<PathBuf>,
        expanded: &BTreeSet<PathBuf>,
        parent_of: &dyn Fn(&Path) -> Option<PathBuf>,
        ops: &mut Vec<RootOp>,
    ) {
        for m in set {
            if parent_of(m).as_deref() != parent {
                continue;
            }
            if expanded.contains(m) {
                ops.push(RootOp::Overlay(m.clone()));
                walk(Some(m), set, expanded, parent_of, ops);
            } else {
                ops.push(RootOp::Rbind(m.clone()));
            }
        }
    }
    walk(None, &set, &expanded, &parent_of, &mut ops);
    ops
}

/// Splits `target` into its deepest existing ancestor on the host (canonicalised, so the
/// container's root, which mirrors the host's, resolves it the same way) and the remaining
/// components, which do not exist yet. `exists` and `canonical` are the host's file system.
pub(crate) fn resolve_target(
    target: &Path,
    exists: &dyn Fn(&Path) -> bool,
    canonical: &dyn Fn(&Path) -> Option<PathBuf>,
) -> (PathBuf, PathBuf) {
    let normal: PathBuf = target
        .components()
        .filter(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        .collect();
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    loop {
        if exists(&existing) {
            break;
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let base = canonical(&existing).unwrap_or(existing);
    let rest: PathBuf = rest.into_iter().rev().collect();
    (base, rest)
}

/// Single-quotes a word for `sh`.
pub(crate) fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn q(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// `ROOT` joined with an absolute container path.
fn under(root: &Path, path: &Path) -> PathBuf {
    let relative: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative)
}

/// Device nodes a container gets (what runc gives by default).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The setup script for `launch`. `host_mounts` is the host's mount table; `exists` and
/// `canonical` inspect the host file system (parameters so the planner is testable).
pub(crate) fn script(
    launch: &ContainerLaunch,
    programs: &ScriptPrograms,
    host_mounts: &[PathBuf],
    exists: &dyn Fn(&Path) -> bool,
    canonical: &dyn Fn(&Path) -> Option<PathBuf>,
) -> String {
    let mount = q(&programs.mount);
    let scratch = &launch.scratch;
    let root = scratch.join("root");
    // Setup output goes to its own log; the container's stdout/stderr (fds 1 and 2 now) are
    // kept as 3 and 4 and restored right before the program runs.
    let mut s = format!("exec 3>&1 4>&2 >{} 2>&1\nset -e\n", q(&launch.setup_log));
    s += &format!(
        "{mount} -t tmpfs -o mode=0755 kube-testbed {}\n",
        q(scratch)
    );
    s += &format!(
        "mkdir {} {} {}\n",
        q(&scratch.join("upper")),
        q(&scratch.join("work")),
        q(&root)
    );
    s += &format!(
        "{mount} -t overlay overlay -o lowerdir=/,upperdir={},workdir={} {}\n",
        scratch.join("upper").display(),
        scratch.join("work").display(),
        q(&root)
    );

    // Resolve targets against the host (= the lower layer of the new root).
    let mut mounts: Vec<(PathBuf, &BindMount, bool)> = launch
        .mounts
        .iter()
        .map(|m| {
            let (base, rest) = resolve_target(&m.target, exists, canonical);
            let create = !rest.as_os_str().is_empty();
            (base.join(rest), m, create)
        })
        .collect();
    let anchors: Vec<PathBuf> = launch
        .mounts
        .iter()
        .filter_map(|m| {
            let (base, rest) = resolve_target(&m.target, exists, canonical);
            (!rest.as_os_str().is_empty()).then_some(base)
        })
        .collect();

    let mut overlay_index = 0;
    for op in plan_root(host_mounts, &anchors) {
        match op {
            RootOp::Rbind(path) => {
                s += &format!("{mount} --rbind {} {}\n", q(&path), q(&under(&root, &path)));
            }
            RootOp::Overlay(path) => {
                overlay_index += 1;
                let upper = scratch.join(format!("upper{overlay_index}"));
                let work = scratch.join(format!("work{overlay_index}"));
                s += &format!("mkdir {} {}\n", q(&upper), q(&work));
                s += &format!(
                    "{mount} -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}\n",
                    path.display(),
                    upper.display(),
                    work.display(),
                    q(&under(&root, &path))
                );
            }
        }
    }

    // /dev
    let dev = root.join("dev");
    s += &format!(
        "{mount} -t tmpfs -o mode=0755,nosuid kube-testbed-dev {}\n",
        q(&dev)
    );
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if exists(&host) {
            s += &format!(
                ": > {target}; {mount} --bind {} {target}\n",
                q(&host),
                target = q(&dev.join(name))
            );
        }
    }
    s += &format!("mkdir {} {}\n", q(&dev.join("pts")), q(&dev.join("shm")));
    if exists(Path::new("/dev/pts/ptmx")) {
        s += &format!("{mount} --rbind /dev/pts {}\n", q(&dev.join("pts")));
        s += &format!("ln -s pts/ptmx {}\n", q(&dev.join("ptmx")));
    }
    s += &format!(
        "{mount} -t tmpfs -o mode=1777,nosuid,nodev shm {}\n",
        q(&dev.join("shm"))
    );
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        s += &format!("ln -s {to} {}\n", q(&dev.join(link)));
    }

    // Volumes: parents before children.
    mounts.sort_by_key(|(target, _, _)| target.components().count());
    for (target, m, create) in mounts {
        let inside = under(&root, &target);
        if create {
            if m.is_file {
                if let Some(parent) = inside.parent() {
                    s += &format!("mkdir -p {}\n", q(parent));
                }
                s += &format!(": > {}\n", q(&inside));
            } else {
                s += &format!("mkdir -p {}\n", q(&inside));
            }
        }
        s += &format!("{mount} --bind {} {}\n", q(&m.source), q(&inside));
        if m.read_only {
            s += &format!("{mount} -o remount,bind,ro {}\n", q(&inside));
        }
    }

    if let (Some(name), Some(hostname)) = (&launch.hostname, &programs.hostname) {
        s += &format!("{} {} || true\n", q(hostname), quote(name));
    }

    s += &format!(
        ": > {}\nexec 1>&3 2>&4 3>&- 4>&-\n",
        q(&launch.started_marker)
    );
    let groups = if launch.groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            launch
                .groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    s += &format!(
        "exec {} {} {} --reuid={} --regid={} {groups} --pdeathsig=KILL -- env -i -C {}",
        q(&programs.chroot),
        q(&root),
        q(&programs.setpriv),
        launch.uid,
        launch.gid,
        quote(&launch.workdir),
    );
    for (key, value) in &launch.env {
        s += " ";
        s += &quote(&format!("{key}={value}"));
    }
    for arg in &launch.argv {
        s += " ";
        s += &quote(arg);
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn mountinfo_mount_points() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    28 27 0:25 / /mnt/with\\040space ro - tmpfs x ro\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![p("/proc"), p("/"), p("/mnt/with space")]
        );
    }

    #[test]
    fn untouched_mounts_are_bound_recursively() {
        let mounts = [
            p("/"),
            p("/proc"),
            p("/sys"),
            p("/sys/fs/cgroup"),
            p("/dev"),
            p("/dev/pts"),
        ];
        assert_eq!(
            plan_root(&mounts, &[p("/run")]),
            vec![RootOp::Rbind(p("/proc")), RootOp::Rbind(p("/sys"))]
        );
    }

    #[test]
    fn a_mount_that_needs_a_new_mount_point_gets_an_overlay() {
        let mounts = [
            p("/"),
            p("/run"),
            p("/run/lock"),
            p("/run/user"),
            p("/run/user/1000"),
            p("/tmp"),
        ];
        assert_eq!(
            plan_root(&mounts, &[p("/run/user")]),
            vec![
                RootOp::Overlay(p("/run")),
                RootOp::Rbind(p("/run/lock")),
                RootOp::Overlay(p("/run/user")),
                RootOp::Rbind(p("/run/user/1000")),
                RootOp::Rbind(p("/tmp")),
            ]
        );
    }

    #[test]
    fn targets_resolve_through_host_symlinks() {
        // /var/run -> /run exists; /run/secrets does not.
        let exists =
            |path: &Path| ["/", "/var", "/var/run", "/run"].contains(&path.to_str().unwrap());
        let canonical = |path: &Path| {
            Some(if path == Path::new("/var/run") {
                p("/run")
            } else {
                path.to_path_buf()
            })
        };
        assert_eq!(
            resolve_target(
                Path::new("/var/run/secrets/kubernetes.io/serviceaccount"),
                &exists,
                &canonical
            ),
            (p("/run"), p("secrets/kubernetes.io/serviceaccount"))
        );
        assert_eq!(
            resolve_target(Path::new("/var/run"), &exists, &canonical),
            (p("/run"), p(""))
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(x) \n"), "'$(x) \n'");
    }

    #[test]
    fn the_script_creates_mount_points_only_inside_the_new_root() {
        let launch = ContainerLaunch {
            scratch: p("/sb/c/ns"),
            mounts: vec![
                BindMount {
                    source: p("/sb/vol/sa"),
                    target: p("/var/run/secrets/kubernetes.io/serviceaccount"),
                    is_file: false,
                    read_only: true,
                },
                BindMount {
                    source: p("/sb/c/termination-log"),
                    target: p("/dev/termination-log"),
                    is_file: true,
                    read_only: false,
                },
            ],
            hostname: Some("pod-1".into()),
            workdir: "/".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![2000],
            env: vec![("A".into(), "x y".into())],
            argv: vec!["/bin/prog".into(), "--flag".into()],
            setup_log: p("/sb/c/setup.log"),
            started_marker: p("/sb/c/started"),
        };
        let programs = ScriptPrograms {
            mount: p("/bin/mount"),
            chroot: p("/sbin/chroot"),
            setpriv: p("/bin/setpriv"),
            hostname: Some(p("/bin/hostname")),
        };
        let exists = |path: &Path| {
            [
                "/",
                "/var",
                "/var/run",
                "/run",
                "/dev",
                "/dev/null",
                "/proc",
            ]
            .contains(&path.to_str().unwrap())
        };
        let canonical = |path: &Path| {
            Some(if path == Path::new("/var/run") {
                p("/run")
            } else {
                path.to_path_buf()
            })
        };
        let text = script(
            &launch,
            &programs,
            &[p("/"), p("/proc"), p("/dev")],
            &exists,
            &canonical,
        );
        let expected = [
            "'/bin/mount' -t overlay overlay -o lowerdir=/,upperdir=/sb/c/ns/upper,workdir=/sb/c/ns/work '/sb/c/ns/root'",
            "'/bin/mount' --rbind '/proc' '/sb/c/ns/root/proc'",
            ": > '/sb/c/ns/root/dev/null'; '/bin/mount' --bind '/dev/null' '/sb/c/ns/root/dev/null'",
            "mkdir -p '/sb/c/ns/root/run/secrets/kubernetes.io/serviceaccount'",
            "'/bin/mount' --bind '/sb/vol/sa' '/sb/c/ns/root/run/secrets/kubernetes.io/serviceaccount'",
            "'/bin/mount' -o remount,bind,ro '/sb/c/ns/root/run/secrets/kubernetes.io/serviceaccount'",
            ": > '/sb/c/ns/root/dev/termination-log'",
            "'/bin/mount' --bind '/sb/c/termination-log' '/sb/c/ns/root/dev/termination-log'",
            "'/bin/hostname' 'pod-1' || true",
            "exec '/sbin/chroot' '/sb/c/ns/root' '/bin/setpriv' --reuid=1000 --regid=1000 --groups=2000 --pdeathsig=KILL -- env -i -C '/' 'A=x y' '/bin/prog' '--flag'",
        ];
        for line in expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in\n{text}"
            );
        }
        // Nothing is created outside the new root, the scratch directory or the marker.
        for line in text
            .lines()
            .filter(|l| l.starts_with("mkdir") || l.starts_with(": >"))
        {
            assert!(
                line.contains("'/sb/c/ns/") || line == ": > '/sb/c/started'",
                "writes outside the sandbox: {line}"
            );
        }
    }
}
