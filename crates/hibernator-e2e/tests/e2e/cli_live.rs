//! `kubectl-hibernator`'s live commands against a plan the controller runs: status, logs,
//! restore, retry, suspend and resume, wake, sleep and exceptions.

use std::time::{Duration, Instant};

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{ControllerOptions, World, noop_plan, phase, sim_now};
use kube::api::Api;
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

/// `wake` keeps a hibernated plan awake for a while through a ScheduleException (the spec is
/// not touched); at its end the plan sleeps again; `exceptions` lists it with who and why;
/// `exceptions prune` deletes it once expired and leaves exceptions that came from Git.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_for_a_while_then_asleep_again_and_prune() {
    let w = World::new("cli-wake").await.unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "ScheduleException",
        "metadata": {"name": "from-git"},
        "spec": {"planRef": {"name": "p"}, "type": "extend",
                 "validFrom": "2026-11-01T00:00:00Z", "validUntil": "2026-11-02T00:00:00Z",
                 "windows": [{"start": "12:00", "end": "13:00", "daysOfWeek": ["MON"]}]},
    }))
    .await
    .unwrap();
    let opts = ControllerOptions::at("2026-11-27T00:59:50Z", 120.0);
    let started = Instant::now();
    let c = w.controller(opts.clone()).unwrap();
    let p = w
        .wait_plan("p", Duration::from_secs(60), "Hibernated", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let generation = p.metadata.generation;

    let (ok, text) = w.cli(&["wake", "p", "--for", "3d"]);
    assert!(
        !ok && text.contains("--for \"3d\" is not a duration"),
        "{text}"
    );
    let (ok, text) = w.cli(&["wake", "nope", "--for", "1h"]);
    assert!(!ok && text.contains("nope not found"), "{text}");

    // One simulated hour awake (30 real seconds at 120x), in the middle of the night.
    let from = sim_now(&opts, started).to_string();
    let (ok, text) = w.cli(&[
        "wake", "p", "--from", &from, "--for", "1h", "--reason", "hotfix",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(": p awake from"), "{text}");
    let p = w
        .wait_plan(
            "p",
            Duration::from_secs(60),
            "woken by the exception",
            |p| phase(p) == Some(Phase::Active),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    assert_eq!(p.metadata.generation, generation, "the spec is not touched");
    let reason = p
        .status
        .unwrap()
        .schedule
        .unwrap()
        .reason
        .unwrap_or_default();
    assert!(
        reason.contains("kept awake by suspend exception \"p-wake-"),
        "{reason}"
    );

    let (ok, text) = w.cli(&["exceptions", "p", "-o", "json"]);
    assert!(ok, "{text}");
    let rows: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(1),
        "the expired Git one is hidden: {rows}"
    );
    assert_eq!(rows[0]["type"], "suspend", "{rows}");
    assert_eq!(rows[0]["state"], "Active", "{rows}");
    assert_eq!(rows[0]["created_by"], "cli", "{rows}");
    assert_eq!(rows[0]["reason"], "hotfix", "{rows}");
    assert!(
        rows[0]["requested_by"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{rows}"
    );
    let name = rows[0]["name"].as_str().unwrap().to_string();

    // `sleep` later in the day: an upcoming extend exception.
    let (ok, text) = w.cli(&[
        "sleep",
        "p",
        "--from",
        "2026-11-27T18:00:00Z",
        "--until",
        "2026-11-27T19:00:00Z",
    ]);
    assert!(ok, "{text}");
    // (`--all`: until the controller reports its state, the CLI judges by the real clock, and
    // this test's schedule runs in the past.)
    let (ok, text) = w.cli(&["exceptions", "p", "--all"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("p-sleep-20261127t180000") && text.contains("extend"),
        "{text}"
    );

    // The hour is over, the night is not: asleep again, in a new cycle.
    let p = w
        .wait_plan("p", Duration::from_secs(120), "asleep again", |p| {
            phase(p) == Some(Phase::Hibernated)
                && p.status.as_ref().is_some_and(|s| {
                    s.current_cycle
                        .as_ref()
                        .is_some_and(|c| c.id != "20261127t0100")
                })
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let history = p.status.unwrap().history;
    assert!(
        history
            .iter()
            .any(|h| h.id == "20261127t0100" && h.wake_up.as_ref().is_some_and(|w| w.succeeded)),
        "the night's first cycle was woken by the exception: {history:?}"
    );

    let exc: Api<hibernator_api::ScheduleException> = Api::namespaced(w.client.clone(), &w.ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while exc.get(&name).await.unwrap().status.and_then(|s| s.state)
        != Some(hibernator_api::exception::ExceptionState::Expired)
    {
        assert!(
            Instant::now() < deadline,
            "{name} never Expired\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (ok, text) = w.cli(&["exceptions", "prune"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("deleted ScheduleException {}/{name}", w.ns)),
        "{text}"
    );
    let left: Vec<String> = exc
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| e.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(left, ["from-git", "p-sleep-20261127t180000"], "{text}");
}
