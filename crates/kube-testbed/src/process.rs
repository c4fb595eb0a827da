//! Supervised child processes: started so that they die with us, stopped with SIGTERM then
//! SIGKILL, plus a watchdog that cleans up after a test binary that exits without dropping its
//! cluster (the process-wide shared cluster is never dropped).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use std::sync::{Arc, Mutex};

use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::tools::HostPrograms;

/// A `Command` that runs `program args...` through `setpriv --pdeathsig KILL`, in a process group
/// of its own (so a Ctrl-C in a terminal reaches only our process, which then stops the
/// components in order).
///
/// The parent-death signal fires when the *thread* that forked the child ends; every spawn in
/// this crate happens on the cluster's dedicated runtime thread, which lives as long as the
/// cluster.
pub(crate) fn supervised_command(program: &Path, args: &[OsString]) -> Result<Command> {
    let host = HostPrograms::get()?;
    let mut command = Command::new(&host.setpriv);
    command
        .arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null());
    Ok(command)
}

/// Sends a signal to one process, ignoring "no such process".
pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Sends a signal to a process group, ignoring "no such process".
pub(crate) fn signal_group(pgid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// A control-plane component: etcd, kube-apiserver, ...
pub(crate) struct Component {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
    /// How it was started, for a restart.
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Component {
    /// Starts `program args...` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: Vec<OsString>,
        log: PathBuf,
    ) -> Result<Component> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io("create", &log, e))?;
        let err = file.try_clone().map_err(|e| Error::io("open", &log, e))?;
        let mut command = supervised_command(program, &args)?;
        let (program, saved_args) = (program.to_path_buf(), args.clone());
        // Anything a component writes relative to its working directory stays in the cluster
        // directory (where its log is).
        if let Some(dir) = log.parent() {
            command.current_dir(dir);
        }
        let child = command
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_string(),
                source,
            })?;
        Ok(Component {
            name,
            child,
            log,
            program,
            args: saved_args,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Err` if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status.to_string())),
            Err(e) => Err(self.exited(format!("unknown: {e}"))),
        }
    }

    fn exited(&self, status: String) -> Error {
        Error::ProcessExited {
            name: self.name.to_string(),
            status,
            log: self.log.clone(),
            log_tail: log_tail(&self.log, 15),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            signal(pid, Signal::TERM);
            if tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    component = self.name,
                    "did not stop after SIGTERM; killing it"
                );
                let _ = self.child.start_kill();
            }
        }
        let _ = self.child.wait().await;
    }
}

/// The last `lines` lines of a component log, without klog's `I` (info) lines.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::from("(no log)");
    };
    let interesting: Vec<&str> = text.lines().filter(|line| !line.starts_with('I')).collect();
    let start = interesting.len().saturating_sub(lines);
    interesting[start..].join("\n")
}

/// A shell process that outlives us by a moment: when our end of its stdin closes (we exit,
/// however that happens), it kills the process groups we registered with it and removes the
/// cluster's directory. This is what cleans up after a test binary, which exits without running
/// destructors of statics (the shared cluster), and what reaches grandchildren of pods, which
/// the parent-death signal of the pod's main process does not.
pub(crate) struct Watchdog {
    child: std::process::Child,
    handle: WatchdogHandle,
}

/// Registers process groups with the [`Watchdog`]; cheap to clone.
#[derive(Clone)]
pub(crate) struct WatchdogHandle {
    stdin: Arc<Mutex<Option<std::process::ChildStdin>>>,
}

const WATCHDOG_SCRIPT: &str = r#"
dir=$1
groups=" "
while IFS= read -r line; do
  case $line in
    +*) groups="$groups${line#+} " ;;
    -*) groups=$(printf '%s' "$groups" | sed "s/ ${line#-} / /") ;;
  esac
done
for g in $groups; do kill -TERM -- "-$g" 2>/dev/null; done
sleep 0.3
for g in $groups; do kill -KILL -- "-$g" 2>/dev/null; done
if [ -n "$dir" ]; then rm -rf -- "$dir"; fi
"#;

impl Watchdog {
    /// Starts the watchdog; `dir` is removed at the end unless `None`.
    pub fn spawn(dir: Option<&Path>) -> Result<Watchdog> {
        let host = HostPrograms::get()?;
        let mut child = std::process::Command::new(&host.sh)
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("kube-testbed-watchdog")
            .arg(dir.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: "the cleanup watchdog".into(),
                source,
            })?;
        let stdin = child.stdin.take();
        Ok(Watchdog {
            child,
            handle: WatchdogHandle {
                stdin: Arc::new(Mutex::new(stdin)),
            },
        })
    }

    pub fn handle(&self) -> WatchdogHandle {
        self.handle.clone()
    }

    /// Lets the watchdog run its cleanup now and waits for it (up to 10 s).
    pub async fn finish(mut self) {
        self.handle.close();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WatchdogHandle {
    /// Registers a process group to kill if we die.
    pub fn add_group(&self, pgid: u32) {
        self.send(&format!("+{pgid}\n"));
    }

    /// Unregisters a process group that ended.
    pub fn remove_group(&self, pgid: u32) {
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&self, line: &str) {
        use std::io::Write;
        // A few bytes into a pipe the watchdog drains continuously: this does not block.
        let mut guard = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stdin) = guard.as_mut()
            && stdin.write_all(line.as_bytes()).is_err()
        {
            tracing::warn!("the cleanup watchdog is gone");
            *guard = None;
        }
    }

    fn close(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
