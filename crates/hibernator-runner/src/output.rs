//! The runner's story: one line per step on stdout (text or JSON), the same lines streamed to
//! the controller, and the one-line summary in the termination-message file.

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hibernator_api::runner::Execution;
use hibernator_proto::v1::LogEntry;
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::LogFormat;

/// Severity of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// A step.
    Info,
    /// Something skipped or odd, not a failure.
    Warn,
    /// The failure.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Writes the story.
#[derive(Debug)]
pub struct Reporter {
    format: LogFormat,
    started: Instant,
    execution: Mutex<Option<Execution>>,
    stream: Mutex<Option<UnboundedSender<LogEntry>>>,
}

impl Reporter {
    /// A reporter writing `format` lines on stdout.
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            started: Instant::now(),
            execution: Mutex::new(None),
            stream: Mutex::new(None),
        }
    }

    /// Adds the execution's fields to JSON lines and log entries.
    pub fn set_execution(&self, execution: &Execution) {
        *self.execution.lock().unwrap_or_else(|e| e.into_inner()) = Some(execution.clone());
    }

    /// Also sends every line to the controller through `sender` (best effort).
    pub fn stream_to(&self, sender: UnboundedSender<LogEntry>) {
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
    }

    /// Stops streaming (closes the stream so it can finish).
    pub fn close_stream(&self) {
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Time since the runner started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A step.
    pub fn info(&self, message: impl AsRef<str>) {
        self.line(Level::Info, message.as_ref());
    }

    /// Something skipped or odd.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.line(Level::Warn, message.as_ref());
    }

    /// The failure.
    pub fn error(&self, message: impl AsRef<str>) {
        self.line(Level::Error, message.as_ref());
    }

    /// Writes one line.
    pub fn line(&self, level: Level, message: &str) {
        // One line per step, whatever a message contains.
        let message = message.replace(['\n', '\r'], " ");
        let time = jiff::Timestamp::now().to_string();
        let execution = self
            .execution
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let fields = execution.as_ref().map(|e| {
            json!({
                "plan": e.plan,
                "namespace": e.namespace,
                "target": e.target,
                "targetType": e.target_type.as_str(),
                "operation": e.operation.as_str(),
                "cycle": e.cycle_id,
                "attempt": e.attempt,
            })
        });
        let text = match self.format {
            LogFormat::Text => match level {
                Level::Info => message.clone(),
                Level::Warn => format!("warning: {message}"),
                Level::Error => format!("error: {message}"),
            },
            LogFormat::Json => {
                let mut line = json!({"time": time, "level": level.as_str(), "msg": message});
                if let (Some(obj), Some(serde_json::Value::Object(f))) =
                    (line.as_object_mut(), fields.clone())
                {
                    obj.extend(f);
                }
                line.to_string()
            }
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout must not end the run.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        drop(out);
        if let Some(sender) = self
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = sender.send(LogEntry {
                execution_id: execution
                    .as_ref()
                    .map(|e| e.execution_id.clone())
                    .unwrap_or_default(),
                time,
                level: level.as_str().into(),
                message,
                fields_json: fields.map(|f| f.to_string()).unwrap_or_default(),
            });
        }
    }
}

/// Formats a duration for people: `0.4 s`, `12 s`, `3 min 5 s`.
pub fn took(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{} s", secs.round() as u64)
    } else {
        let whole = secs.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// The longest termination message Kubernetes keeps.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Writes the one-line summary; a file that cannot be written is reported, not fatal.
pub fn write_termination_message(path: &Path, summary: &str) -> Result<(), std::io::Error> {
    let mut text = summary.replace(['\n', '\r'], " ");
    if text.len() > TERMINATION_MESSAGE_LIMIT {
        let mut end = TERMINATION_MESSAGE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    std::fs::write(path, text)
}

/// The line of a termination message that lists the resources a hibernation recorded:
/// `recorded: KEY KEY ...`. The controller reads it when the runner's report to it was lost
/// (a controller restarted between the record and its status write), so that restore data lost
/// in that window is still reported missing.
pub const RECORDED_LINE: &str = "recorded: ";

/// [`write_termination_message`], followed by a [`RECORDED_LINE`] with as many of `recorded` as
/// fit in the kubelet's 4 KiB.
pub fn write_termination_report(
    path: &Path,
    summary: &str,
    recorded: &[String],
) -> Result<(), std::io::Error> {
    let mut text = summary.replace(['\n', '\r'], " ");
    if !recorded.is_empty() {
        let mut line = String::from(RECORDED_LINE);
        for key in recorded {
            if text.len() + 1 + line.len() + key.len() + 1 > TERMINATION_MESSAGE_LIMIT {
                break;
            }
            line.push_str(key);
            line.push(' ');
        }
        if text.len() + 1 + line.len() <= TERMINATION_MESSAGE_LIMIT {
            text = format!("{text}\n{}", line.trim_end());
            return std::fs::write(path, text);
        }
    }
    write_termination_message(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hibernation_lists_its_records_after_the_summary_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("hibernator-runner-tr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("termination-log");
        let keys = vec!["instance:db-1".to_string(), "cluster:aurora".to_string()];
        write_termination_report(&path, "stopped 2 databases in 3 s", &keys).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "stopped 2 databases in 3 s\nrecorded: instance:db-1 cluster:aurora"
        );
        let many: Vec<String> = (0..1000).map(|i| format!("ec2:i-{i:017}")).collect();
        write_termination_report(&path, "stopped 1000 instances", &many).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= TERMINATION_MESSAGE_LIMIT, "{}", text.len());
        assert!(text.starts_with("stopped 1000 instances\nrecorded: ec2:i-00000000000000000 "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(took(Duration::from_millis(420)), "0.4 s");
        assert_eq!(took(Duration::from_secs(42)), "42 s");
        assert_eq!(took(Duration::from_secs(185)), "3 min 5 s");
    }

    #[test]
    fn termination_messages_are_one_bounded_line() {
        let dir = std::env::temp_dir().join(format!("hibernator-runner-tm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("termination-log");
        write_termination_message(&path, &"é".repeat(5000)).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.len() <= TERMINATION_MESSAGE_LIMIT);
        write_termination_message(&path, "a\nb").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a b");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(write_termination_message(Path::new("/nonexistent/dir/file"), "x").is_err());
    }
}
