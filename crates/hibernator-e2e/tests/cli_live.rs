//! `kubectl-hibernator`'s live commands against a plan the controller runs: status, logs,
//! restore, retry, suspend and resume.

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{ControllerOptions, World, noop_plan, phase};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_logs_restore_retry_suspend_and_resume() {
    let w = World::new("cli").await.unwrap();
    w.apply(noop_plan(
        "p",
        &[("t0", json!({})), ("t1", json!({}))],
        json!({}),
    ))
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:50Z", 60.0))
        .unwrap();
    w.wait_plan("p", Duration::from_secs(60), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));

    let (ok, text) = w.cli(&["status", "p"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("p (") && text.contains("): Hibernated"),
        "{text}"
    );
    assert!(text.contains("Hibernated=True (Hibernated)"), "{text}");
    assert!(text.contains("t0") && text.contains("Completed"), "{text}");
    let (ok, text) = w.cli(&["status"]);
    assert!(ok && text.contains("Hibernated"), "{text}");

    let (ok, text) = w.cli(&["logs", "p", "--target", "t1"]);
    assert!(ok, "{text}");
    assert!(text.contains("== t1 (p-t1-h-20261127t0100-1-"), "{text}");
    assert!(text.contains("hibernate noop target t1"), "{text}");

    let (ok, text) = w.cli(&["restore", "p", "-o", "json"]);
    assert!(ok, "{text}");
    let data: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        data["t0"]["resources"]
            .as_object()
            .is_some_and(|r| !r.is_empty()),
        "{data}"
    );

    let (ok, text) = w.cli(&["retry", "p"]);
    assert!(ok, "{text}");
    let token = text
        .split("(token ")
        .nth(1)
        .and_then(|t| t.strip_suffix(")\n"))
        .unwrap()
        .to_string();
    w.wait_plan("p", Duration::from_secs(30), "the token handled", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.last_handled_retry_token.clone())
            == Some(token.clone())
    })
    .await
    .unwrap();

    let (ok, text) = w.cli(&["suspend", "p"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("revert changes to spec"),
        "the GitOps caveat is printed: {text}"
    );
    w.wait_plan("p", Duration::from_secs(60), "Suspended", |p| {
        phase(p) == Some(Phase::Suspended)
    })
    .await
    .unwrap();
    let (ok, text) = w.cli(&["resume", "p"]);
    assert!(ok, "{text}");
    let p = w
        .wait_plan("p", Duration::from_secs(60), "asleep again", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap();
    assert!(p.spec.suspend.is_none() && p.spec.suspend_until.is_none());

    let (ok, text) = w.cli(&[
        "preview",
        "--live",
        "--plan",
        "p",
        "--from",
        "2026-11-27T12:00:00Z",
        "--count",
        "2",
        "-o",
        "json",
    ]);
    assert!(ok, "{text}");
    let rows: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(rows[0]["at"], "2026-11-28T01:00:00Z", "{rows}");
    assert_eq!(rows[1]["operation"], "wakeUp", "{rows}");

    let (ok, text) = w.cli(&["status", "no-such-plan"]);
    assert!(!ok && text.contains("not found"), "{text}");
}
