use anyhow::Result;
use hibernator_proto::testing::{FakeController, Rpc};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_refused_record_changes_nothing_and_fails_clearly() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "app-db", &[]).await?;
    h.controller
        .refuse_records(Some("the restore ConfigMap could not be written"));
    let ran = h
        .runner("rds", "app-db", "hibernate")
        .param(json!({"snapshotBeforeStop": true}))
        .run()
        .await?
        .failed(1);
    let endpoint = h.controller.endpoint();
    assert_eq!(
        ran.error_lines(),
        vec![format!(
            "error: failed to record the state of instance:app-db with the controller at {endpoint}; changed nothing: Unavailable: the restore ConfigMap could not be written"
        )]
    );
    assert!(
        ran.termination
            .starts_with("failed: failed to record the state of instance:app-db")
    );
    assert_eq!(db_status(&h, "app-db").await?, "available");
    let snapshots = h.rds().describe_db_snapshots().send().await?;
    let manual: Vec<_> = snapshots
        .db_snapshots()
        .iter()
        .filter(|s| s.snapshot_type() == Some("manual"))
        .collect();
    assert!(manual.is_empty(), "no snapshot may be taken: {manual:?}");
    // It retried within HIBERNATOR_CONTROLLER_RETRY_SECONDS (2 s here) before giving up, and
    // said so.
    let attempts = h.controller.observed().count(Rpc::RecordRestoreState);
    assert!((3..=6).contains(&attempts), "{attempts} attempts");
    assert!(
        ran.has("warning: the controller is not answering (Unavailable: the restore ConfigMap could not be written); retrying for up to 2 s"),
        "{}",
        ran.stdout
    );
    Ok(())
}

/// A controller restart or leader hand-over takes seconds: the runner waits for the controller
/// (the restore-data calls are retried with backoff) and acts only once its record is
/// acknowledged.
#[tokio::test]
async fn a_controller_that_comes_back_within_the_retry_window_gets_the_records_first() -> Result<()>
{
    let h = Harness::start().await?;
    let ids = run_instances(&h, 2, &[]).await?;
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let child = h
        .runner("ec2", "vms", "hibernate")
        .env("HIBERNATOR_CONTROLLER_ENDPOINT", &format!("http://{addr}"))
        .env("HIBERNATOR_CONTROLLER_RETRY_SECONDS", "30")
        .param(json!({"selector": {"instanceIds": ids}}))
        .spawn()?;
    // Nobody answers for four seconds: nothing may change meanwhile.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    for id in &ids {
        assert_eq!(instance_state(&h, id).await?, "running");
    }
    let controller = FakeController::start_at(addr, TOKEN, CYCLE).await?;
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for id in &ids {
        assert_eq!(instance_state(&h, id).await?, "stopped");
    }
    let recorded = controller.records();
    for id in &ids {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&recorded[&format!("ec2:{id}")])?,
            json!({"status": "running", "wasRunning": true}),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("warning: the controller is not answering (Unavailable")
            && stdout.contains("retrying for up to 30 s"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_controller_changes_nothing_and_fails_clearly() -> Result<()> {
    let h = Harness::start().await?;
    let ids = run_instances(&h, 2, &[("env", "dev")]).await?;
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let ran = h
        .runner("ec2", "vms", "hibernate")
        .env(
            "HIBERNATOR_CONTROLLER_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )
        .param(json!({"selector": {"tags": {"env": "dev"}}}))
        .run()
        .await?
        .failed(1);
    let errors = ran.error_lines();
    assert_eq!(errors.len(), 1, "{}", ran.stdout);
    assert!(
        errors[0].starts_with(&format!(
            "error: failed to record the state of ec2:{} with the controller at http://127.0.0.1:{port}; changed nothing: Unavailable",
            ids[0]
        )),
        "{}",
        errors[0]
    );
    for id in &ids {
        assert_eq!(instance_state(&h, id).await?, "running");
    }
    Ok(())
}

#[tokio::test]
async fn losing_the_log_stream_or_progress_does_not_fail_the_run() -> Result<()> {
    let h = Harness::start().await?;
    let ids = run_instances(&h, 1, &[]).await?;
    h.controller.stall_at(Rpc::StreamLogs, 1);
    let ran = h
        .runner("ec2", "vm", "hibernate")
        .param(json!({"selector": {"instanceIds": [ids[0]]}}))
        .run()
        .await?
        .ok();
    assert!(
        ran.has("warning: the log stream to the controller did not finish in time"),
        "{}",
        ran.stdout
    );
    assert_eq!(instance_state(&h, &ids[0]).await?, "stopped");

    // Progress answered by nobody: the run goes on after the call deadline.
    let other = run_instances(&h, 1, &[]).await?;
    let controller = FakeController::start(TOKEN, CYCLE).await?;
    controller.stall_at(Rpc::ReportProgress, 1);
    let ran = h
        .runner("ec2", "vm2", "hibernate")
        .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
        .env("HIBERNATOR_CONTROLLER_TIMEOUT_SECONDS", "1")
        .param(json!({"selector": {"instanceIds": [other[0]]}}))
        .run()
        .await?
        .ok();
    assert!(
        ran.has("warning: could not report progress to the controller"),
        "{}",
        ran.stdout
    );
    assert_eq!(instance_state(&h, &other[0]).await?, "stopped");
    Ok(())
}

/// SIGKILL the runner at every step of a multi-resource hibernation (each call to the
/// controller is a step: the records, and the progress reports after each change), run it
/// again, then wake up: every instance that was running is running again, and the one that
/// was stopped before stays stopped.
#[tokio::test]
async fn killed_at_any_step_a_rerun_and_a_wake_up_restore_everything() -> Result<()> {
    let h = Harness::start().await?;
    let mut killed_at = Vec::new();
    for rpc in [Rpc::RecordRestoreState, Rpc::ReportProgress] {
        for n in 1.. {
            let running = run_instances(&h, 3, &[]).await?;
            let stopped = run_instances(&h, 1, &[]).await?;
            stop_instance(&h, &stopped[0]).await?;
            let mut all = running.clone();
            all.insert(1, stopped[0].clone());
            let params = json!({"selector": {"instanceIds": all}});
            let controller = FakeController::start(TOKEN, CYCLE).await?;
            let endpoint = controller.endpoint();
            let runner = h
                .runner("ec2", "vms", "hibernate")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone());
            if !kill_at_call(&controller, rpc, n, runner).await? {
                // No such step: this kind of call happens fewer than n times.
                assert!(n > 1, "{rpc:?} must happen at least once");
                break;
            }
            killed_at.push((rpc, n));
            let before = controller.records();

            let rerun = h
                .runner("ec2", "vms", "hibernate")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone())
                .run()
                .await?
                .ok();
            // Records only grow: what was recorded before the crash is kept as it was.
            let after = controller.records();
            for (key, value) in &before {
                assert_eq!(
                    after.get(key),
                    Some(value),
                    "record {key} changed: {}",
                    rerun.stdout
                );
            }
            for id in &all {
                assert_eq!(instance_state(&h, id).await?, "stopped", "{}", rerun.stdout);
            }
            let woke = h
                .runner("ec2", "vms", "wakeUp")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params)
                .run()
                .await?
                .ok();
            for id in &running {
                assert_eq!(
                    instance_state(&h, id).await?,
                    "running",
                    "killed at {rpc:?} #{n}: {id} must run again\n{}\n{}",
                    rerun.stdout,
                    woke.stdout
                );
            }
            assert_eq!(instance_state(&h, &stopped[0]).await?, "stopped");
        }
    }
    // 4 records, and progress after each stop request and each finished resource.
    let records = killed_at
        .iter()
        .filter(|(r, _)| *r == Rpc::RecordRestoreState)
        .count();
    let progress = killed_at
        .iter()
        .filter(|(r, _)| *r == Rpc::ReportProgress)
        .count();
    assert_eq!(records, 4, "{killed_at:?}");
    assert!(progress >= 7, "{killed_at:?}");
    Ok(())
}

#[tokio::test]
async fn a_stop_request_from_the_controller_ends_the_run_before_anything_changes() -> Result<()> {
    let h = Harness::start().await?;
    let ids = run_instances(&h, 2, &[]).await?;
    h.controller
        .ask_to_stop("the plan was deleted with onDelete: Leave");
    let ran = h
        .runner("ec2", "vms", "hibernate")
        .param(json!({"selector": {"instanceIds": ids}}))
        .run()
        .await?
        .failed(1);
    assert_eq!(
        ran.error_lines(),
        vec![
            "error: stopped at the controller's request: the plan was deleted with onDelete: Leave"
        ]
    );
    assert!(h.controller.records().is_empty());
    for id in &ids {
        assert_eq!(instance_state(&h, id).await?, "running");
    }
    Ok(())
}
