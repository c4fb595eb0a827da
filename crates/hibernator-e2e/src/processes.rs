//! Helper processes of a test (GitOps controllers, Redis), each logging to a file of its own;
//! all are killed when the set is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// Processes started by [`Processes::spawn`]; killed (last started first) when dropped.
#[derive(Default)]
pub struct Processes {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Processes {
    /// Starts `cmd` with stdout and stderr in `<dir>/<name>.log`.
    pub fn spawn(&mut self, dir: &Path, name: &str, mut cmd: Command) -> Result<()> {
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = cmd
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        self.children.push(child);
        self.logs.push(log_path);
        Ok(())
    }

    /// The last `lines` lines of each process's log, each under its file name.
    pub fn logs(&self, lines: usize) -> String {
        self.logs
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                format!(
                    "--- {}:\n{}",
                    p.file_name().unwrap_or_default().to_string_lossy(),
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
