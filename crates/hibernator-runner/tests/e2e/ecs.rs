//! `ecs`: services scaled to zero with their Application Auto Scaling bounds, restored exactly.

use anyhow::Result;
use hibernator_proto::testing::{FakeController, Rpc};
use serde_json::json;

use crate::common::*;
use crate::slow_proxy::{Rule, SlowProxy};

#[tokio::test]
async fn services_scale_to_zero_with_their_auto_scaling_and_come_back_exactly() -> Result<()> {
    let h = Harness::start().await?;
    create_ecs_cluster(&h, "shop").await?;
    create_service(&h, "shop", "api", 2, Some((1, 4)), &[]).await?;
    create_service(&h, "shop", "worker", 3, None, &[]).await?;
    create_service(&h, "shop", "idle", 0, None, &[]).await?;
    create_service(&h, "shop", "other", 1, None, &[]).await?;
    let params =
        json!({"cluster": "shop", "selector": {"services": ["api", "worker", "idle", "ghost"]}});

    let ran = h
        .runner("ecs", "services", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("recorded shop/api: was desired 2, auto scaling min 1, max 4"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("warning: ECS service ghost of cluster shop does not exist; skipped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination.starts_with(
            "scaled to zero 2 of 4 ECS services (1 already at zero, 1 no longer there) in "
        ),
        "{}",
        ran.termination
    );
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (0, 0, Some((0, 0)))
    );
    assert_eq!(service_state(&h, "shop", "worker").await?, (0, 0, None));
    assert_eq!(service_state(&h, "shop", "idle").await?, (0, 0, None));
    assert_eq!(
        service_state(&h, "shop", "other").await?.0,
        1,
        "not selected"
    );
    let recorded = records(&h.controller);
    assert_eq!(
        recorded,
        [
            (
                "ecs:shop/api".to_string(),
                json!({"desiredCount": 2, "scaling": {"minCapacity": 1, "maxCapacity": 4}})
            ),
            ("ecs:shop/idle".to_string(), json!({"desiredCount": 0})),
            ("ecs:shop/worker".to_string(), json!({"desiredCount": 3})),
        ]
        .into_iter()
        .collect()
    );

    // Again: nothing changes, the records stay.
    let again = h
        .runner("ecs", "services", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again.has("shop/api was recorded earlier in this cycle (was desired 2, auto scaling min 1, max 4); keeping that record"),
        "{}",
        again.stdout
    );
    assert!(
        again.termination.starts_with(
            "scaled to zero 0 of 4 ECS services (3 already at zero, 1 no longer there) in "
        ),
        "{}",
        again.termination
    );
    assert_eq!(records(&h.controller), recorded);

    let woke = h
        .runner("ecs", "services", "wakeUp")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        woke.has("shop/api restored: desired 2, auto scaling min 1, max 4"),
        "{}",
        woke.stdout
    );
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (2, 2, Some((1, 4)))
    );
    assert_eq!(service_state(&h, "shop", "worker").await?, (3, 3, None));
    assert_eq!(service_state(&h, "shop", "idle").await?, (0, 0, None));

    let woke_again = h
        .runner("ecs", "services", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke_again.has("ECS service shop/api is already at desired 2, auto scaling min 1, max 4"),
        "{}",
        woke_again.stdout
    );
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (2, 2, Some((1, 4)))
    );
    Ok(())
}

#[tokio::test]
async fn tags_and_a_cluster_arn_select_services() -> Result<()> {
    let h = Harness::start().await?;
    create_ecs_cluster(&h, "shop").await?;
    let arn = format!(
        "arn:aws:ecs:{REGION}:{}:cluster/shop",
        moto_server::ACCOUNT_ID
    );
    create_service(&h, "shop", "dev-web", 2, None, &[("env", "dev")]).await?;
    create_service(
        &h,
        "shop",
        "dev-jobs",
        1,
        Some((1, 2)),
        &[("env", "dev"), ("team", "x")],
    )
    .await?;
    create_service(&h, "shop", "prod-web", 2, None, &[("env", "prod")]).await?;
    create_service(&h, "shop", "untagged", 2, None, &[]).await?;
    let params = json!({"cluster": arn, "selector": {"tags": {"env": "dev"}}});
    let ran = h
        .runner("ecs", "services", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(ran.has("tags select 2 ECS service(s)"), "{}", ran.stdout);
    assert_eq!(service_state(&h, "shop", "dev-web").await?, (0, 0, None));
    assert_eq!(
        service_state(&h, "shop", "dev-jobs").await?,
        (0, 0, Some((0, 0)))
    );
    assert_eq!(service_state(&h, "shop", "prod-web").await?.0, 2);
    assert_eq!(service_state(&h, "shop", "untagged").await?.0, 2);
    let keys: Vec<String> = records(&h.controller).into_keys().collect();
    assert_eq!(keys, ["ecs:shop/dev-jobs", "ecs:shop/dev-web"]);

    h.runner("ecs", "services", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(service_state(&h, "shop", "dev-web").await?, (2, 2, None));
    assert_eq!(
        service_state(&h, "shop", "dev-jobs").await?,
        (1, 1, Some((1, 2)))
    );

    // A cluster that does not exist selects nothing and says so.
    let missing = h
        .runner("ecs", "services", "hibernate")
        .param(json!({"cluster": "no-such-cluster", "selector": {"services": ["api"]}}))
        .run()
        .await?
        .ok();
    assert!(
        missing
            .has("warning: ECS cluster no-such-cluster does not exist; its 1 service(s) skipped"),
        "{}",
        missing.stdout
    );
    Ok(())
}

/// AWS takes a while to stop tasks and to roll out new ones: the runner waits until no task
/// runs (hibernation) and until the service is steady (one deployment, every task running).
#[tokio::test]
async fn draining_tasks_and_a_running_deployment_are_waited_for() -> Result<()> {
    let h = Harness::start().await?;
    create_ecs_cluster(&h, "shop").await?;
    create_service(&h, "shop", "api", 2, Some((1, 4)), &[]).await?;
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![
            // After the scale to zero, two tasks are still running for three looks.
            Rule::new(
                "\"desiredCount\":0",
                "\"services\":[\"api\"]",
                "\"runningCount\": 0",
                "\"runningCount\": 2",
                3,
            ),
            // After the scale back up, an old deployment is still draining for three looks.
            Rule::new(
                "\"desiredCount\":2",
                "\"services\":[\"api\"]",
                "\"deployments\": [",
                "\"deployments\": [{\"id\": \"ecs-svc/1\", \"status\": \"ACTIVE\", \"desiredCount\": 2, \"runningCount\": 1}, ",
                3,
            ),
        ],
    )
    .await?;
    let params = json!({"cluster": "shop", "selector": {"services": ["api"]}});
    let slept = h
        .runner("ecs", "services", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        slept.has("shop/api scaled to zero: desired 0, auto scaling min 0, max 0 (took "),
        "{}",
        slept.stdout
    );
    assert!(slept.has(", 4 looks)"), "{}", slept.stdout);
    let woke = h
        .runner("ecs", "services", "wakeUp")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(params)
        .run()
        .await?
        .ok();
    assert!(woke.has(", 4 looks)"), "{}", woke.stdout);
    let hits: Vec<usize> = proxy.rules().iter().map(|r| r.hits).collect();
    assert_eq!(hits, [3, 3], "both slow transitions were seen");
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (2, 2, Some((1, 4)))
    );
    Ok(())
}

/// SIGKILL the runner at every call to the controller of a hibernation, run it again, then
/// wake up: the services end exactly as they were, and a record once made never changes.
#[tokio::test]
async fn killed_at_any_step_a_rerun_and_a_wake_up_restore_everything() -> Result<()> {
    let h = Harness::start().await?;
    let mut killed_at = Vec::new();
    let mut round = 0;
    for rpc in [Rpc::RecordRestoreState, Rpc::ReportProgress] {
        for n in 1.. {
            round += 1;
            let cluster = format!("shop-{round}");
            create_ecs_cluster(&h, &cluster).await?;
            create_service(&h, &cluster, "api", 2, Some((1, 4)), &[]).await?;
            create_service(&h, &cluster, "worker", 1, None, &[]).await?;
            let params = json!({"cluster": cluster, "selector": {"services": ["api", "worker"]}});
            let controller = FakeController::start(TOKEN, CYCLE).await?;
            let endpoint = controller.endpoint();
            let runner = h
                .runner("ecs", "services", "hibernate")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone());
            if !kill_at_call(&controller, rpc, n, runner).await? {
                assert!(n > 1, "{rpc:?} must happen at least once");
                break;
            }
            killed_at.push((rpc, n));
            let before = controller.records();
            let rerun = h
                .runner("ecs", "services", "hibernate")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params.clone())
                .run()
                .await?
                .ok();
            let after = controller.records();
            for (key, value) in &before {
                assert_eq!(
                    after.get(key),
                    Some(value),
                    "record {key} changed: {}",
                    rerun.stdout
                );
            }
            assert_eq!(
                service_state(&h, &cluster, "api").await?,
                (0, 0, Some((0, 0)))
            );
            assert_eq!(service_state(&h, &cluster, "worker").await?, (0, 0, None));
            let woke = h
                .runner("ecs", "services", "wakeUp")
                .env("HIBERNATOR_CONTROLLER_ENDPOINT", &endpoint)
                .param(params)
                .run()
                .await?
                .ok();
            assert_eq!(
                service_state(&h, &cluster, "api").await?,
                (2, 2, Some((1, 4))),
                "killed at {rpc:?} #{n}\n{}\n{}",
                rerun.stdout,
                woke.stdout
            );
            assert_eq!(service_state(&h, &cluster, "worker").await?, (1, 1, None));
        }
    }
    let records = killed_at
        .iter()
        .filter(|(r, _)| *r == Rpc::RecordRestoreState)
        .count();
    assert_eq!(records, 2, "one record per service: {killed_at:?}");
    Ok(())
}

/// A service deleted while asleep is reported and its record kept; auto scaling someone added
/// to a service recorded without it is theirs and left as it is.
#[tokio::test]
async fn a_service_deleted_while_asleep_is_reported_and_the_others_restored() -> Result<()> {
    let h = Harness::start().await?;
    create_ecs_cluster(&h, "shop").await?;
    create_service(&h, "shop", "api", 2, None, &[]).await?;
    create_service(&h, "shop", "old", 1, Some((1, 2)), &[]).await?;
    let params = json!({"cluster": "shop", "selector": {"services": ["api", "old"]}});
    h.runner("ecs", "services", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    h.ecs()
        .delete_service()
        .cluster("shop")
        .service("old")
        .force(true)
        .send()
        .await?;
    set_service_scaling(&h, "shop", "api", 0, 6).await?;
    let woke = h
        .runner("ecs", "services", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke.has("warning: ecs:shop/old not restored: ECS service shop/old does not exist where this runner looked; its record is kept"),
        "{}",
        woke.stdout
    );
    assert_eq!(
        service_state(&h, "shop", "api").await?,
        (2, 2, Some((0, 6)))
    );
    assert!(
        woke.termination
            .starts_with("restored 1 of 2 ECS services (1 no longer there) in "),
        "{}",
        woke.termination
    );
    Ok(())
}
