//! In-sleep checks (`HIBERNATOR_OPERATION=enforce`): what a hibernation recorded is compared
//! with what AWS says now; `Report` only tells, `Reapply` puts it back to sleep through the
//! hibernation path, keeping the night's records.

use anyhow::Result;
use hibernator_proto::testing::{FakeController, Rpc};
use hibernator_proto::v1::resource_result::Result as R;
use serde_json::json;

use crate::common::*;
use crate::slow_proxy::{Rule, SlowProxy};

fn results(h: &Harness) -> Vec<(String, R)> {
    last_results(h)
        .into_iter()
        .map(|(k, r)| (k, R::try_from(r).unwrap()))
        .collect()
}

#[tokio::test]
async fn rds_checks_report_then_reapply_what_woke_up_and_keep_the_nights_records() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "app-db", &[]).await?;
    create_db(&h, "old-db", &[]).await?;
    create_db(&h, "gone-db", &[]).await?;
    create_aurora(&h, "app-aurora", &[]).await?;
    h.rds()
        .stop_db_instance()
        .db_instance_identifier("old-db")
        .send()
        .await?;
    let params = json!({
        "snapshotBeforeStop": true,
        "selector": {"instanceIds": ["app-db", "old-db", "gone-db"], "clusterIds": ["app-aurora"]}
    });
    h.runner("rds", "databases", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    let night = records(&h.controller);
    assert_eq!(night.len(), 4, "{night:?}");

    // Someone starts the database and the cluster "for a minute"; another database is deleted.
    h.rds()
        .start_db_instance()
        .db_instance_identifier("app-db")
        .send()
        .await?;
    h.rds()
        .start_db_cluster()
        .db_cluster_identifier("app-aurora")
        .send()
        .await?;
    h.rds()
        .delete_db_instance()
        .db_instance_identifier("gone-db")
        .skip_final_snapshot(true)
        .send()
        .await?;

    // Report: told, nothing changed.
    let report = h
        .runner("rds", "databases", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Report")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        report.has("DB instance app-db is available although it was put to sleep in cycle"),
        "{}",
        report.stdout
    );
    assert_eq!(
        report.termination.split(" in ").next().unwrap(),
        "checked 3 DB instances and 1 Aurora cluster: 1 asleep, 2 awake (drifted; left as found), 1 no longer there",
        "{}",
        report.stdout
    );
    assert_eq!(
        results(&h),
        [
            ("cluster:app-aurora".to_string(), R::Drifted),
            ("instance:app-db".to_string(), R::Drifted),
            ("instance:gone-db".to_string(), R::NotFound),
            ("instance:old-db".to_string(), R::Asleep),
        ]
    );
    assert_eq!(db_status(&h, "app-db").await?, "available");
    assert_eq!(cluster_status(&h, "app-aurora").await?, "available");
    assert_eq!(records(&h.controller), night);

    // Reapply, with the database still starting (as after an AWS auto-start): it is waited
    // for, then stopped again; no second snapshot is taken.
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![Rule::new(
            "Action=GetCallerIdentity",
            "DBInstanceIdentifier=app-db",
            "<DBInstanceStatus>available</DBInstanceStatus>",
            "<DBInstanceStatus>starting</DBInstanceStatus>",
            2,
        )],
    )
    .await?;
    let reapply = h
        .runner("rds", "databases", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Reapply")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        reapply
            .has("DB instance app-db is starting; waiting until it is available to stop it again"),
        "{}",
        reapply.stdout
    );
    assert!(
        reapply
            .has("app-db was recorded earlier in this cycle (was available); keeping that record"),
        "{}",
        reapply.stdout
    );
    assert_eq!(proxy.rules()[0].hits, 2, "{}", reapply.stdout);
    assert_eq!(
        results(&h),
        [
            ("cluster:app-aurora".to_string(), R::Reapplied),
            ("instance:app-db".to_string(), R::Reapplied),
            ("instance:gone-db".to_string(), R::NotFound),
            ("instance:old-db".to_string(), R::Asleep),
        ]
    );
    assert_eq!(db_status(&h, "app-db").await?, "stopped");
    assert_eq!(cluster_status(&h, "app-aurora").await?, "stopped");
    assert_eq!(
        records(&h.controller),
        night,
        "the night's records are kept"
    );
    let snapshots = h.rds().describe_db_snapshots().send().await?;
    let ours: Vec<&str> = snapshots
        .db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier())
        .filter(|s| s.starts_with("app-db-hibernate"))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");

    // Idempotent: a second check finds everything asleep and changes nothing.
    let again = h
        .runner("rds", "databases", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Reapply")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again.termination.starts_with(
            "checked 3 DB instances and 1 Aurora cluster: 3 asleep, 0 put back to sleep, 1 no longer there in "
        ),
        "{}",
        again.termination
    );

    // The morning restores the night's state exactly.
    h.runner("rds", "databases", "wakeUp")
        .param(params)
        .run()
        .await?;
    assert_eq!(db_status(&h, "app-db").await?, "available");
    assert_eq!(db_status(&h, "old-db").await?, "stopped");
    assert_eq!(cluster_status(&h, "app-aurora").await?, "available");
    Ok(())
}

/// SIGKILL a Reapply check at each of its steps (each call to the controller), run it again,
/// then wake up: the instances end asleep after the re-run and awake after the wake-up, and
/// the night's records never change.
#[tokio::test]
async fn a_reapply_killed_at_any_step_is_finished_by_a_rerun_and_woken_exactly() -> Result<()> {
    let h = Harness::start().await?;
    let mut killed_at = Vec::new();
    for rpc in [Rpc::RecordRestoreState, Rpc::ReportProgress] {
        for n in 1.. {
            let ids = run_instances(&h, 2, &[]).await?;
            let params = json!({"selector": {"instanceIds": ids}});
            let controller = FakeController::start(TOKEN, CYCLE).await?;
            let endpoint = controller.endpoint();
            h.runner("ec2", "vms", "hibernate")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone())
                .run()
                .await?
                .ok();
            let night = controller.records();
            for id in &ids {
                h.ec2().start_instances().instance_ids(id).send().await?;
            }
            // Calls are counted since the controller started: the hibernation's come first.
            let base = controller.observed().count(rpc);
            let runner = h
                .runner("ec2", "vms", "enforce")
                .env("HIBERNATOR_ENFORCE_MODE", "Reapply")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone());
            if !kill_at_call(&controller, rpc, base + n, runner).await? {
                assert!(n > 1, "{rpc:?} must happen at least once");
                break;
            }
            killed_at.push((rpc, n));
            let rerun = h
                .runner("ec2", "vms", "enforce")
                .env("HIBERNATOR_ENFORCE_MODE", "Reapply")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone())
                .run()
                .await?
                .ok();
            assert_eq!(controller.records(), night, "{}", rerun.stdout);
            for id in &ids {
                assert_eq!(instance_state(&h, id).await?, "stopped", "{}", rerun.stdout);
            }
            h.runner("ec2", "vms", "wakeUp")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params)
                .run()
                .await?
                .ok();
            for id in &ids {
                assert_eq!(instance_state(&h, id).await?, "running");
            }
        }
    }
    let records = killed_at
        .iter()
        .filter(|(r, _)| *r == Rpc::RecordRestoreState)
        .count();
    assert_eq!(records, 2, "the records it re-sends: {killed_at:?}");
    Ok(())
}

#[tokio::test]
async fn a_check_of_a_type_that_cannot_be_checked_is_refused_and_a_mode_is_required() -> Result<()>
{
    let h = Harness::start().await?;
    let noop = h
        .runner("noop", "t0", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Report")
        .run()
        .await?
        .failed(2);
    assert!(
        noop.has("in-sleep checks are made for rds, eks, ec2, asg, ecs, workloads, karpenter, gitops targets, not noop"),
        "{}",
        noop.stdout
    );
    let no_mode = h
        .runner("rds", "databases", "enforce")
        .run()
        .await?
        .failed(2);
    assert!(no_mode.has("HIBERNATOR_ENFORCE_MODE"), "{}", no_mode.stdout);
    let off = h
        .runner("rds", "databases", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Off")
        .run()
        .await?
        .failed(2);
    assert!(off.has("expected Report or Reapply"), "{}", off.stdout);
    Ok(())
}

#[tokio::test]
async fn an_auto_scaling_group_scaled_up_while_asleep_is_reported_then_scaled_to_zero_again()
-> Result<()> {
    let h = Harness::start().await?;
    create_asg(&h, "web", (1, 2, 4), &[]).await?;
    let params = json!({"selector": {"names": ["web"]}});
    h.runner("asg", "groups", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    let night = records(&h.controller);
    // Someone scales it up "for a minute".
    h.asg()
        .update_auto_scaling_group()
        .auto_scaling_group_name("web")
        .min_size(1)
        .desired_capacity(1)
        .send()
        .await?;
    let report = h
        .runner("asg", "groups", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Report")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        report.has("auto-scaling group web is at min 1, desired 1, max 4 although it was scaled to zero in cycle"),
        "{}",
        report.stdout
    );
    assert_eq!(results(&h), [("asg:web".to_string(), R::Drifted)]);
    assert_eq!(asg_sizes(&h, "web").await?.1, 1, "Report changes nothing");
    h.runner("asg", "groups", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Reapply")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert_eq!(results(&h), [("asg:web".to_string(), R::Reapplied)]);
    assert_eq!(asg_sizes(&h, "web").await?, (0, 0, 4, 0));
    assert_eq!(records(&h.controller), night, "the night's record is kept");
    h.runner("asg", "groups", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(asg_sizes(&h, "web").await?.0, 1);
    assert_eq!(asg_sizes(&h, "web").await?.1, 2);
    Ok(())
}

#[tokio::test]
async fn an_ecs_service_started_while_asleep_is_reported_then_scaled_to_zero_again() -> Result<()> {
    let h = Harness::start().await?;
    create_ecs_cluster(&h, "shop").await?;
    create_service(&h, "shop", "api", 2, Some((1, 4)), &[]).await?;
    create_service(&h, "shop", "worker", 1, None, &[]).await?;
    let params = json!({"cluster": "shop", "selector": {"services": ["api", "worker"]}});
    h.runner("ecs", "services", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    let night = records(&h.controller);
    // Someone starts the API "for a minute", raising its auto-scaling bounds too.
    set_service_scaling(&h, "shop", "api", 1, 4).await?;
    h.ecs()
        .update_service()
        .cluster("shop")
        .service("api")
        .desired_count(1)
        .send()
        .await?;
    let report = h
        .runner("ecs", "services", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Report")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        report.has("ECS service shop/api is at desired 1, auto scaling min 1, max 4 although it was scaled to zero in cycle"),
        "{}",
        report.stdout
    );
    assert_eq!(
        results(&h),
        [
            ("ecs:shop/api".to_string(), R::Drifted),
            ("ecs:shop/worker".to_string(), R::Asleep)
        ]
    );
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (1, 1, Some((1, 4))),
        "Report changes nothing"
    );
    h.runner("ecs", "services", "enforce")
        .env("HIBERNATOR_ENFORCE_MODE", "Reapply")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert_eq!(
        results(&h),
        [
            ("ecs:shop/api".to_string(), R::Reapplied),
            ("ecs:shop/worker".to_string(), R::Asleep)
        ]
    );
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (0, 0, Some((0, 0)))
    );
    assert_eq!(
        records(&h.controller),
        night,
        "the night's records are kept"
    );
    h.runner("ecs", "services", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (2, 2, Some((1, 4)))
    );
    assert_eq!(service_state(&h, "shop", "worker").await?, (1, 1, None));
    Ok(())
}
