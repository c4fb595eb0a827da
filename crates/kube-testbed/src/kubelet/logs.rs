//! Container logs, stored the way CRI runtimes store them: one record per line (or per chunk of
//! a line still being written), `<RFC 3339 time> <stream> <F|P> <content>`, stdout and stderr
//! interleaved in arrival order. Read back with the options of the kubelet's `containerLogs`
//! endpoint (`tailLines`, `limitBytes`, `sinceSeconds`/`sinceTime`, `timestamps`, `follow`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line kept in one record; longer lines are split into partial records.
const MAX_RECORD: usize = 16 * 1024;

fn record(stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {stream} {} ",
        Timestamp::now(),
        if partial { "P" } else { "F" }
    )
    .into_bytes();
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Copies one output stream of a container into its log file until EOF.
pub(crate) async fn copy_stream(
    mut input: impl AsyncRead + Unpin,
    stream: &'static str,
    file: Arc<Mutex<std::fs::File>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let write = |bytes: Vec<u8>| {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk loses log lines, as it does on a real node.
        let _ = file.write_all(&bytes);
    };
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            out.extend(record(stream, false, &line[..line.len() - 1]));
        }
        while pending.len() >= MAX_RECORD {
            let chunk: Vec<u8> = pending.drain(..MAX_RECORD).collect();
            out.extend(record(stream, true, &chunk));
        }
        if !out.is_empty() {
            write(out);
        }
    }
    if !pending.is_empty() {
        write(record(stream, true, &pending));
    }
}

/// Opens (creating) a container instance's log file for appending.
pub(crate) fn create_log_file(path: &Path) -> std::io::Result<Arc<Mutex<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Arc::new(Mutex::new(file)))
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub time: Timestamp,
    pub content: Vec<u8>,
    /// The record ends a line.
    pub full: bool,
}

/// Parses the complete records in `data`; returns them and the number of bytes consumed (a
/// record still being written is left for later).
pub(crate) fn parse_records(data: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut consumed = 0;
    while let Some(end) = data[consumed..].iter().position(|&b| b == b'\n') {
        let line = &data[consumed..consumed + end];
        consumed += end + 1;
        let mut parts = line.splitn(4, |&b| b == b' ');
        let (Some(time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let content = parts.next().unwrap_or_default();
        let Some(time) = std::str::from_utf8(time)
            .ok()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        records.push(Record {
            time,
            content: content.to_vec(),
            full: tag == b"F",
        });
    }
    (records, consumed)
}

/// Options of a log request (the kubelet's query parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub since: Option<Timestamp>,
}

impl LogOptions {
    /// Parses a query string such as `follow=true&tailLines=10`.
    pub fn from_query(query: &str) -> Result<LogOptions, String> {
        let mut options = LogOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let value = value
                .replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2B", "+");
            let flag = || value == "true" || value == "1";
            let number = || {
                value
                    .parse::<i64>()
                    .map_err(|_| format!("invalid value {value:?} for {key}"))
            };
            match key {
                "follow" => options.follow = flag(),
                "previous" => options.previous = flag(),
                "timestamps" => options.timestamps = flag(),
                "tailLines" => {
                    let n = number()?;
                    options.tail_lines = (n >= 0).then_some(n as usize);
                }
                "limitBytes" => {
                    let n = number()?;
                    if n < 1 {
                        return Err("limitBytes must be greater than zero".into());
                    }
                    options.limit_bytes = Some(n as usize);
                }
                "sinceSeconds" => {
                    let n = number()?;
                    if n < 1 {
                        return Err("sinceSeconds must be greater than zero".into());
                    }
                    options.since = Some(
                        Timestamp::now()
                            .checked_sub(jiff::SignedDuration::from_secs(n))
                            .map_err(|e| e.to_string())?,
                    );
                }
                "sinceTime" => {
                    options.since = Some(
                        value
                            .parse::<Timestamp>()
                            .map_err(|e| format!("invalid sinceTime: {e}"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

/// Renders records to what `kubectl logs` prints. `at_line_start` tracks whether the next
/// record starts a line (for timestamps across follow-up calls).
pub(crate) fn render(
    records: &[Record],
    options: &LogOptions,
    at_line_start: &mut bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        if *at_line_start && options.timestamps {
            out.extend_from_slice(format_rfc3339_nano(r.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.content);
        if r.full {
            out.push(b'\n');
        }
        *at_line_start = r.full;
    }
    out
}

/// Go's RFC3339Nano: fraction without trailing zeros, `Z`.
fn format_rfc3339_nano(t: Timestamp) -> String {
    t.to_string()
}

/// The records of the lines selected by `since` and `tail_lines`.
pub(crate) fn select(records: Vec<Record>, options: &LogOptions) -> Vec<Record> {
    // Group records into lines.
    let mut lines: Vec<Vec<Record>> = Vec::new();
    let mut open = false;
    for r in records {
        let full = r.full;
        if open {
            if let Some(line) = lines.last_mut() {
                line.push(r);
            }
        } else {
            lines.push(vec![r]);
        }
        open = !full;
    }
    if let Some(since) = options.since {
        lines.retain(|line| line.first().is_some_and(|r| r.time >= since));
    }
    if let Some(n) = options.tail_lines {
        let start = lines.len().saturating_sub(n);
        lines.drain(..start);
    }
    lines.into_iter().flatten().collect()
}

/// A log file of one container instance, with its end flag.
#[derive(Debug, Clone)]
pub(crate) struct LogInstance {
    pub path: PathBuf,
    /// Set when the process has exited and both streams are fully written.
    pub finished: Arc<std::sync::atomic::AtomicBool>,
}

impl LogInstance {
    pub fn new(path: PathBuf) -> LogInstance {
        LogInstance {
            path,
            finished: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn finish(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The last `max_lines` lines of a log, at most `max_bytes` bytes (for
/// `FallbackToLogsOnError` termination messages).
pub(crate) fn tail_text(path: &Path, max_lines: usize, max_bytes: usize) -> String {
    let Ok(data) = std::fs::read(path) else {
        return String::new();
    };
    let (records, _) = parse_records(&data);
    let options = LogOptions {
        tail_lines: Some(max_lines),
        ..LogOptions::default()
    };
    let mut start = true;
    let out = render(&select(records, &options), &options, &mut start);
    let from = out.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&out[from..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(secs: i64, content: &str, full: bool) -> Record {
        Record {
            time: Timestamp::from_second(secs).unwrap(),
            content: content.as_bytes().to_vec(),
            full,
        }
    }

    #[tokio::test]
    async fn streams_become_records_and_render_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let file = create_log_file(&path).unwrap();
        copy_stream(&b"one\ntwo\npartial"[..], "stdout", file.clone()).await;
        copy_stream(&b"err\n"[..], "stderr", file).await;
        let data = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&data);
        assert!(
            text.lines().nth(2).unwrap().contains(" stdout P partial"),
            "{text}"
        );
        assert!(
            text.lines().nth(3).unwrap().contains(" stderr F err"),
            "{text}"
        );
        let (records, consumed) = parse_records(&data);
        assert_eq!(consumed, data.len());
        let mut start = true;
        let out = render(&records, &LogOptions::default(), &mut start);
        assert_eq!(out, b"one\ntwo\npartialerr\n");
    }

    #[test]
    fn tail_and_since_select_whole_lines() {
        let records = vec![
            rec(10, "a", true),
            rec(20, "b1", false),
            rec(30, "b2", true),
            rec(40, "c", true),
        ];
        let tail = LogOptions {
            tail_lines: Some(2),
            ..LogOptions::default()
        };
        let mut start = true;
        assert_eq!(
            render(&select(records.clone(), &tail), &tail, &mut start),
            b"b1b2\nc\n"
        );
        let since = LogOptions {
            since: Some(Timestamp::from_second(25).unwrap()),
            timestamps: true,
            ..LogOptions::default()
        };
        let mut start = true;
        assert_eq!(
            String::from_utf8(render(&select(records, &since), &since, &mut start)).unwrap(),
            "1970-01-01T00:00:40Z c\n"
        );
    }

    #[test]
    fn query_options() {
        let o = LogOptions::from_query("follow=true&tailLines=5&timestamps=true&limitBytes=10")
            .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.limit_bytes, Some(10));
        let o = LogOptions::from_query("sinceTime=2024-01-02T03%3A04%3A05Z").unwrap();
        assert_eq!(o.since, Some("2024-01-02T03:04:05Z".parse().unwrap()));
        assert!(LogOptions::from_query("limitBytes=0").is_err());
    }
}
