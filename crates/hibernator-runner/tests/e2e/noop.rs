use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn noop_records_waits_fails_on_request_and_speaks_json() -> Result<()> {
    let h = Harness::start().await?;
    let started = Instant::now();
    let ran = h
        .runner("noop", "demo", "hibernate")
        .unset("HIBERNATOR_CONNECTOR")
        .env("HIBERNATOR_LOG_FORMAT", "json")
        .param(json!({"delaySeconds": 1, "fail": "wake"}))
        .run()
        .await?
        .ok();
    assert!(started.elapsed().as_secs_f64() >= 1.0);
    let lines: Vec<Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{}", ran.stdout);
    for line in &lines {
        assert_eq!(line["target"], "demo");
        assert_eq!(line["operation"], "hibernate");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    assert!(lines.iter().any(|l| l["msg"] == "noop: waiting 1 s"));
    assert_eq!(
        records(&h.controller)["noop:demo"],
        json!({"wasRunning": true})
    );
    // The same lines reached the controller's log stream.
    let streamed: Vec<String> = h
        .controller
        .observed()
        .logs
        .iter()
        .map(|l| l.message.clone())
        .collect();
    assert!(
        streamed.iter().any(|m| m == "noop: waiting 1 s"),
        "{streamed:?}"
    );
    assert!(
        streamed
            .iter()
            .any(|m| m.starts_with("done: noop: hibernation of demo done")),
        "{streamed:?}"
    );

    let failed = h
        .runner("noop", "demo", "wakeUp")
        .unset("HIBERNATOR_CONNECTOR")
        .param(json!({"fail": "wake"}))
        .run()
        .await?
        .failed(1);
    assert_eq!(
        failed.error_lines(),
        vec!["error: failed on purpose (noop target with fail: wake)"]
    );
    assert_eq!(
        failed.termination,
        "failed: failed on purpose (noop target with fail: wake)"
    );
    let completion = h
        .controller
        .observed()
        .completions
        .last()
        .cloned()
        .expect("a completion");
    assert!(!completion.success);
    assert_eq!(
        completion.error,
        "failed on purpose (noop target with fail: wake)"
    );
    // An unwritable termination-message file is reported, never fatal.
    let unwritable = h
        .runner("noop", "demo", "hibernate")
        .unset("HIBERNATOR_CONNECTOR")
        .env(
            "HIBERNATOR_TERMINATION_MESSAGE_PATH",
            "/nonexistent/dir/termination-log",
        )
        .run()
        .await?
        .ok();
    assert!(
        unwritable.has("warning: could not write the summary to /nonexistent/dir/termination-log"),
        "{}",
        unwritable.stdout
    );
    Ok(())
}

#[tokio::test]
async fn the_overall_deadline_ends_a_run_that_takes_too_long() -> Result<()> {
    let h = Harness::start().await?;
    let started = Instant::now();
    let ran = h
        .runner("noop", "slow", "hibernate")
        .unset("HIBERNATOR_CONNECTOR")
        .env("HIBERNATOR_TIMEOUT_SECONDS", "1")
        .param(json!({"delaySeconds": 30}))
        .run()
        .await?
        .failed(1);
    assert!(started.elapsed().as_secs() < 15, "{:?}", started.elapsed());
    assert_eq!(
        ran.error_lines(),
        vec!["error: did not finish within HIBERNATOR_TIMEOUT_SECONDS = 1"]
    );
    Ok(())
}
