//! moto has no intermediate states, so these tests put a proxy in front of it that shows
//! `stopping` / `starting` / `UPDATING` for a while, as AWS does. If the runner stopped
//! waiting (or stopped looking), the counts below would not match.

use anyhow::Result;
use serde_json::json;

use crate::common::*;
use crate::slow_proxy::{Rule, SlowProxy};

#[tokio::test]
async fn rds_waits_through_stopping_and_starting() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "app-db", &[]).await?;
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![
            Rule::new(
                "Action=StopDBInstance",
                "Action=DescribeDBInstances",
                "<DBInstanceStatus>stopped</DBInstanceStatus>",
                "<DBInstanceStatus>stopping</DBInstanceStatus>",
                3,
            ),
            Rule::new(
                "Action=StartDBInstance",
                "Action=DescribeDBInstances",
                "<DBInstanceStatus>available</DBInstanceStatus>",
                "<DBInstanceStatus>starting</DBInstanceStatus>",
                4,
            ),
        ],
    )
    .await?;
    let ran = h
        .runner("rds", "app-db", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .run()
        .await?
        .ok();
    assert!(ran.has("stopped app-db (took "), "{}", ran.stdout);
    assert!(
        ran.has(", 4 looks)"),
        "three looks see stopping, the fourth stopped: {}",
        ran.stdout
    );
    let woke = h
        .runner("rds", "app-db", "wakeUp")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .run()
        .await?
        .ok();
    assert!(woke.has("app-db is available (took "), "{}", woke.stdout);
    assert!(woke.has(", 5 looks)"), "{}", woke.stdout);
    let hits: Vec<usize> = proxy.rules().iter().map(|r| r.hits).collect();
    assert_eq!(hits, vec![3, 4]);
    assert_eq!(db_status(&h, "app-db").await?, "available");
    Ok(())
}

#[tokio::test]
async fn a_resource_that_never_gets_there_times_out_clearly() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "stuck-db", &[]).await?;
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![Rule::new(
            "Action=StopDBInstance",
            "Action=DescribeDBInstances",
            "<DBInstanceStatus>stopped</DBInstanceStatus>",
            "<DBInstanceStatus>stopping</DBInstanceStatus>",
            usize::MAX,
        )],
    )
    .await?;
    let ran = h
        .runner("rds", "stuck-db", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .env("HIBERNATOR_WAIT_TIMEOUT_SECONDS", "1")
        .env("HIBERNATOR_POLL_INTERVAL_MS", "100")
        .run()
        .await?
        .failed(1);
    assert_eq!(
        ran.error_lines(),
        vec![
            "error: timed out after 1 s waiting for DB instance stuck-db to be stopped (last seen: stopping)"
        ]
    );
    let hits = proxy.rules()[0].hits;
    assert!(
        (5..=12).contains(&hits),
        "about ten looks in one second at 100 ms: {hits}"
    );
    Ok(())
}

#[tokio::test]
async fn ec2_waits_for_pending_and_stopping() -> Result<()> {
    let h = Harness::start().await?;
    let ids = run_instances(&h, 1, &[]).await?;
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![
            // A freshly looked-at instance is still pending: the runner waits for it to settle.
            Rule::new(
                "Action=GetCallerIdentity",
                "Action=DescribeInstances",
                "<name>running</name>",
                "<name>pending</name>",
                2,
            ),
            Rule::new(
                "Action=StopInstances",
                "Action=DescribeInstances",
                "<name>stopped</name>",
                "<name>stopping</name>",
                3,
            ),
        ],
    )
    .await?;
    let ran = h
        .runner("ec2", "vm", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(json!({"selector": {"instanceIds": ids}}))
        .run()
        .await?
        .ok();
    assert!(
        ran.has(&format!(
            "EC2 instance {} is pending; waiting for it to settle",
            ids[0]
        )),
        "{}",
        ran.stdout
    );
    assert!(ran.has(", 4 looks)"), "{}", ran.stdout);
    assert_eq!(
        proxy.rules().iter().map(|r| r.hits).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(instance_state(&h, &ids[0]).await?, "stopped");
    Ok(())
}

#[tokio::test]
async fn eks_waits_for_node_group_updates() -> Result<()> {
    let h = Harness::start().await?;
    create_eks(&h, "dev-eks", &[("general", (1, 2, 3))]).await?;
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![Rule::new(
            "/update-config",
            "/node-groups/general",
            "\"status\": \"ACTIVE\"",
            "\"status\": \"UPDATING\"",
            3,
        )],
    )
    .await?;
    let ran = h
        .runner("eks", "cluster", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .env("HIBERNATOR_CONNECTOR", &eks_connector("dev-eks"))
        .param(json!({"clusterName": "dev-eks"}))
        .run()
        .await?
        .ok();
    assert!(
        ran.has("general scaled to zero: min 0, desired 0, max 3 (took "),
        "{}",
        ran.stdout
    );
    assert!(ran.has(", 4 looks)"), "{}", ran.stdout);
    assert_eq!(proxy.rules()[0].hits, 3);
    Ok(())
}
