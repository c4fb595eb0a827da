//! The official libraries of the message formats, run on what the controller sent: Microsoft's
//! Adaptive Cards renderer for Teams cards and the CNCF CloudEvents SDK for events
//! (`checkers/payloads.js`). Installed once with `npm ci` from the committed lock file into
//! the target directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::root;

/// Which library reads a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Teams workflow message with an Adaptive Card.
    Teams,
    /// A CloudEvents 1.0 event in structured JSON mode.
    CloudEvent,
}

fn install() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let source = root().join("crates/hibernator-e2e/checkers");
        let lock = std::fs::read(source.join("package-lock.json")).map_err(|e| e.to_string())?;
        // The lock file's length and a cheap checksum name the installation: a changed lock
        // installs anew.
        let sum = lock
            .iter()
            .fold(0u32, |a, b| a.rotate_left(5) ^ u32::from(*b));
        let dir = root()
            .join("target")
            .join(format!("payload-checkers-{}-{sum:08x}", lock.len()));
        if dir.join("node_modules/.installed").exists() {
            return Ok(dir);
        }
        let staging = dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(f), staging.join(f)).map_err(|e| e.to_string())?;
        }
        let out = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&staging)
            .output()
            .map_err(|e| format!("failed to run npm (Debian: apt-get install npm): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm ci failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(staging.join("node_modules/.installed"), "").map_err(|e| e.to_string())?;
        // Another process may have finished first; either copy is complete.
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Ok(dir)
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// What the format's official library says about each message (empty: accepted).
pub fn check(messages: &[(Format, &[u8])]) -> Result<Vec<Vec<String>>> {
    let dir = install()?;
    let mut child = Command::new("node")
        .arg(root().join("crates/hibernator-e2e/checkers/payloads.js"))
        .env("NODE_PATH", dir.join("node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run node (Debian: apt-get install nodejs)")?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        for (format, body) in messages {
            let kind = match format {
                Format::Teams => "teams",
                Format::CloudEvent => "cloudevent",
            };
            let line = json!({"kind": kind, "body": String::from_utf8_lossy(body)});
            writeln!(stdin, "{line}")?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the payload checker failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            v["errors"]
                .as_array()
                .map(|a| a.iter().map(|e| e.to_string()).collect())
                .unwrap_or_else(|| vec![format!("unreadable answer: {l}")])
        })
        .collect();
    if results.len() != messages.len() {
        bail!(
            "the payload checker answered {} of {} messages",
            results.len(),
            messages.len()
        );
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkers are not fooled: a card with an unknown element and an event without a
    /// source are refused; well-formed ones pass.
    #[test]
    fn the_libraries_refuse_what_is_wrong() {
        let card = |element: &str| {
            json!({"type": "message", "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {"type": "AdaptiveCard", "version": "1.4",
                            "body": [{"type": element, "text": "hello"}]}}]})
            .to_string()
        };
        let event = |source: Option<&str>| {
            let mut e = json!({"specversion": "1.0", "id": "1", "type": "t",
                               "time": "2026-11-27T01:00:00Z"});
            if let Some(s) = source {
                e["source"] = json!(s);
            }
            e.to_string()
        };
        let (good_card, bad_card) = (card("TextBlock"), card("TextBlok"));
        let (good_event, bad_event) = (event(Some("/plans/p")), event(None));
        let results = check(&[
            (Format::Teams, good_card.as_bytes()),
            (Format::Teams, bad_card.as_bytes()),
            (Format::CloudEvent, good_event.as_bytes()),
            (Format::CloudEvent, bad_event.as_bytes()),
        ])
        .unwrap();
        assert!(results[0].is_empty(), "{results:?}");
        assert!(results[1][0].contains("TextBlok"), "{results:?}");
        assert!(results[2].is_empty(), "{results:?}");
        assert!(results[3][0].contains("source"), "{results:?}");
    }
}
