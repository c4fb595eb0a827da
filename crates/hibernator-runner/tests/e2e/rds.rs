use anyhow::Result;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn instances_hibernate_with_snapshot_and_wake_to_their_exact_state() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "app-db", &[]).await?;
    create_db(&h, "old-db", &[]).await?;
    h.rds()
        .stop_db_instance()
        .db_instance_identifier("old-db")
        .send()
        .await?;
    let params = json!({
        "snapshotBeforeStop": true,
        "selector": {"instanceIds": ["app-db", "old-db", "ghost-db"]}
    });

    let ran = h
        .runner("rds", "databases", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("found DB instance app-db (available)"),
        "{}",
        ran.stdout
    );
    assert!(ran.has("recorded app-db: was available"), "{}", ran.stdout);
    assert!(
        ran.has("DB instance ghost-db does not exist; skipped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("DB instance old-db is already stopped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("snapshot app-db-hibernate-20261126-2000 created"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination
            .starts_with("stopped 1 of 3 DB instances (1 already stopped, 1 no longer there) in "),
        "{}",
        ran.termination
    );
    assert_eq!(db_status(&h, "app-db").await?, "stopped");
    assert_eq!(db_status(&h, "old-db").await?, "stopped");
    let snapshot = h
        .rds()
        .describe_db_snapshots()
        .db_snapshot_identifier("app-db-hibernate-20261126-2000")
        .send()
        .await?;
    assert_eq!(snapshot.db_snapshots()[0].status(), Some("available"));
    assert_eq!(
        snapshot.db_snapshots()[0].db_instance_identifier(),
        Some("app-db")
    );
    let recorded = records(&h.controller);
    assert_eq!(
        recorded,
        [
            (
                "instance:app-db".to_string(),
                json!({"status": "available", "wasRunning": true})
            ),
            (
                "instance:old-db".to_string(),
                json!({"status": "stopped", "wasRunning": false})
            ),
        ]
        .into()
    );
    // What sizes each database's cost rides beside its record, for the savings ledger.
    let sizings = h.controller.sizings();
    let sizing: serde_json::Value = serde_json::from_str(&sizings["instance:app-db"])?;
    assert_eq!(
        sizing,
        json!({"service": "rds", "instanceType": "db.t3.micro", "engine": "postgres",
               "multiAz": false, "count": 1.0, "region": "us-east-1"})
    );
    assert!(sizings.contains_key("instance:old-db"), "{sizings:?}");

    // A second hibernation changes nothing and keeps the records.
    let again = h
        .runner("rds", "databases", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again.has("app-db was recorded earlier in this cycle (was available); keeping that record"),
        "{}",
        again.stdout
    );
    assert!(
        again.has("DB instance app-db is already stopped"),
        "{}",
        again.stdout
    );
    assert!(!again.has("snapshot"), "no new snapshot: {}", again.stdout);
    assert_eq!(records(&h.controller), recorded);
    let completions = h.controller.observed().completions;
    assert_eq!(completions.last().map(|c| c.changed), Some(0));
    assert_eq!(completions.first().map(|c| c.changed), Some(1));

    let woke = h
        .runner("rds", "databases", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke.has("fetched restore data of cycle 20261126-2000: 2 records"),
        "{}",
        woke.stdout
    );
    assert!(
        woke.has("DB instance old-db was stopped before hibernation; leaving it as it is"),
        "{}",
        woke.stdout
    );
    assert!(
        woke.termination.starts_with(
            "started 1 of 2 DB instances (1 left as they were before hibernation) in "
        ),
        "{}",
        woke.termination
    );
    assert_eq!(db_status(&h, "app-db").await?, "available");
    assert_eq!(db_status(&h, "old-db").await?, "stopped");
    Ok(())
}

#[tokio::test]
async fn the_target_name_is_an_instance_or_else_an_aurora_cluster() -> Result<()> {
    let h = Harness::start().await?;
    create_aurora(&h, "orders", &[]).await?;
    let ran = h
        .runner("rds", "orders", "hibernate")
        .param(json!({"snapshotBeforeStop": true}))
        .run()
        .await?
        .ok();
    assert!(
        ran.has("found Aurora cluster orders (available)"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination
            .starts_with("stopped 1 of 1 Aurora clusters in "),
        "{}",
        ran.termination
    );
    assert_eq!(cluster_status(&h, "orders").await?, "stopped");
    let snapshot = h
        .rds()
        .describe_db_cluster_snapshots()
        .db_cluster_snapshot_identifier("orders-hibernate-20261126-2000")
        .send()
        .await?;
    assert_eq!(snapshot.db_cluster_snapshots().len(), 1);
    assert_eq!(
        records(&h.controller).keys().cloned().collect::<Vec<_>>(),
        vec!["cluster:orders".to_string()]
    );
    h.runner("rds", "orders", "wakeUp").run().await?.ok();
    assert_eq!(cluster_status(&h, "orders").await?, "available");

    // A name that is neither: nothing to do, and no failure.
    let none = h
        .runner("rds", "nothing-here", "hibernate")
        .run()
        .await?
        .ok();
    assert!(
        none.has("warning: no DB instance or Aurora cluster is named nothing-here; nothing to do"),
        "{}",
        none.stdout
    );
    Ok(())
}

#[tokio::test]
async fn tags_select_instances_and_clusters_and_leave_members_to_their_cluster() -> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "tagged-db", &[("env", "dev"), ("team", "a")]).await?;
    create_db(&h, "prod-db", &[("env", "prod")]).await?;
    create_aurora(&h, "tagged-cluster", &[("env", "dev")]).await?;
    // The member instance carries the tag too: it must not be stopped on its own.
    h.rds()
        .add_tags_to_resource()
        .resource_name(format!(
            "arn:aws:rds:{REGION}:{}:db:tagged-cluster-writer",
            moto_server::ACCOUNT_ID
        ))
        .tags(
            aws_sdk_rds::types::Tag::builder()
                .key("env")
                .value("dev")
                .build(),
        )
        .send()
        .await?;
    let params = json!({"selector": {"tags": {"env": "dev"}}});
    let ran = h
        .runner("rds", "dev-dbs", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("DB instance tagged-cluster-writer belongs to Aurora cluster tagged-cluster"),
        "{}",
        ran.stdout
    );
    assert_eq!(db_status(&h, "tagged-db").await?, "stopped");
    assert_eq!(db_status(&h, "prod-db").await?, "available");
    assert_eq!(cluster_status(&h, "tagged-cluster").await?, "stopped");
    let keys: Vec<String> = records(&h.controller).keys().cloned().collect();
    assert_eq!(keys, vec!["cluster:tagged-cluster", "instance:tagged-db"]);

    h.runner("rds", "dev-dbs", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(db_status(&h, "tagged-db").await?, "available");
    assert_eq!(cluster_status(&h, "tagged-cluster").await?, "available");
    assert_eq!(db_status(&h, "prod-db").await?, "available");
    Ok(())
}

/// One resource that cannot be started does not keep its siblings asleep: the others are
/// started, the run fails naming it, and the completion reports each resource.
#[tokio::test]
async fn one_refused_start_leaves_the_other_instances_started() -> Result<()> {
    use hibernator_proto::v1::resource_result::Result as R;
    use moto_server::{Fault, FaultAction, FaultProxy};
    let h = Harness::start().await?;
    for id in ["db-a", "db-b", "db-c"] {
        create_db(&h, id, &[]).await?;
    }
    let params = json!({"selector": {"instanceIds": ["db-a", "db-b", "db-c"]}});
    h.runner("rds", "databases", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    // AWS refuses to start db-b (the first in the order the executor goes through).
    let proxy = FaultProxy::start(h.moto.endpoint())?;
    proxy.add(Fault::new(
        &["Action=StartDBInstance", "DBInstanceIdentifier=db-a"],
        FaultAction::query_error(
            400,
            "InvalidDBInstanceState",
            "Instance db-a cannot be started",
        ),
    ));
    let woke = h
        .runner("rds", "databases", "wakeUp")
        .param(params)
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .run()
        .await?
        .failed(1);
    assert_eq!(db_status(&h, "db-a").await?, "stopped");
    assert_eq!(db_status(&h, "db-b").await?, "available", "{}", woke.stdout);
    assert_eq!(db_status(&h, "db-c").await?, "available", "{}", woke.stdout);
    assert!(
        woke.termination
            .contains("1 of 3 recorded resources not restored: instance:db-a"),
        "{}",
        woke.termination
    );
    assert!(
        woke.termination.contains("InvalidDBInstanceState"),
        "{}",
        woke.termination
    );
    assert_eq!(
        last_results(&h),
        [
            ("instance:db-a".to_string(), R::Failed as i32),
            ("instance:db-b".to_string(), R::Restored as i32),
            ("instance:db-c".to_string(), R::Restored as i32),
        ]
    );
    assert!(!proxy.applied().is_empty(), "the fault was injected");
    Ok(())
}

/// Four nights with `snapshotRetention: {keep: 2}`: after each new snapshot only the two newest
/// this target took remain; the user's own snapshot of the database, another plan's and
/// another target's stay whatever their age.
#[tokio::test]
async fn snapshot_retention_keeps_the_newest_own_snapshots_and_nothing_else_is_touched()
-> Result<()> {
    let h = Harness::start().await?;
    create_db(&h, "app-db", &[]).await?;
    let tagged = |id: &str, tags: &[(&str, &str)]| {
        let mut r = h
            .rds()
            .create_db_snapshot()
            .db_instance_identifier("app-db")
            .db_snapshot_identifier(id);
        for (k, v) in tags {
            r = r.tags(aws_sdk_rds::types::Tag::builder().key(*k).value(*v).build());
        }
        r.send()
    };
    tagged("users-own-backup", &[]).await?;
    tagged(
        "other-plans-snapshot",
        &[
            ("hibernator.ardikasaputro.io/plan", "team-a/other"),
            ("hibernator.ardikasaputro.io/target", "databases"),
        ],
    )
    .await?;
    tagged(
        "other-targets-snapshot",
        &[
            ("hibernator.ardikasaputro.io/plan", "team-a/nightly"),
            ("hibernator.ardikasaputro.io/target", "reports"),
        ],
    )
    .await?;
    let params = json!({
        "snapshotBeforeStop": true,
        "snapshotRetention": {"keep": 2},
        "selector": {"instanceIds": ["app-db"]}
    });
    let nights = [
        "20261101-2000",
        "20261102-2000",
        "20261103-2000",
        "20261104-2000",
    ];
    let mut stories = Vec::new();
    for cycle in nights {
        let ran = h
            .runner("rds", "databases", "hibernate")
            .env("HIBERNATOR_CYCLE_ID", cycle)
            .param(params.clone())
            .run()
            .await?
            .ok();
        stories.push(ran.stdout);
        h.runner("rds", "databases", "wakeUp")
            .env("HIBERNATOR_CYCLE_ID", cycle)
            .param(params.clone())
            .run()
            .await?
            .ok();
    }
    assert!(
        stories[2].contains(
            "deleted snapshot app-db-hibernate-20261101-2000 of app-db (snapshotRetention keeps the 2 newest this target took)"
        ),
        "{}",
        stories[2]
    );
    assert!(!stories[1].contains("deleted snapshot"), "{}", stories[1]);
    let out = h
        .rds()
        .describe_db_snapshots()
        .db_instance_identifier("app-db")
        .snapshot_type("manual")
        .send()
        .await?;
    let mut left: Vec<&str> = out
        .db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "app-db-hibernate-20261103-2000",
            "app-db-hibernate-20261104-2000",
            "other-plans-snapshot",
            "other-targets-snapshot",
            "users-own-backup",
        ]
    );
    // The snapshots the target takes say who took them.
    let newest = out
        .db_snapshots()
        .iter()
        .find(|s| s.db_snapshot_identifier() == Some("app-db-hibernate-20261104-2000"))
        .unwrap();
    let tags: Vec<(&str, &str)> = newest
        .tag_list()
        .iter()
        .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
        .collect();
    assert_eq!(
        tags,
        [
            ("hibernator.ardikasaputro.io/plan", "team-a/nightly"),
            ("hibernator.ardikasaputro.io/target", "databases"),
            ("hibernator.ardikasaputro.io/cycle", "20261104-2000"),
        ]
    );
    assert_eq!(db_status(&h, "app-db").await?, "available");
    Ok(())
}

/// DocumentDB and Neptune clusters are clusters of the RDS API: `engines` picks them among the
/// tagged clusters, and they sleep and wake like Aurora's. moto's RDS API creates Neptune
/// clusters but refuses the `docdb` engine, so the DocumentDB cluster is an Aurora MySQL
/// cluster that a proxy in front of moto reports with engine `docdb`, as RDS does.
#[tokio::test]
async fn documentdb_and_neptune_clusters_are_chosen_by_engine_and_restored() -> Result<()> {
    use crate::slow_proxy::{Rule, SlowProxy};
    let h = Harness::start().await?;
    create_aurora(&h, "app-aurora", &[("env", "dev")]).await?;
    let proxy = SlowProxy::start(
        h.moto.endpoint(),
        vec![Rule::new(
            "Action=",
            "Action=DescribeDBClusters",
            "<Engine>aurora-mysql</Engine>",
            "<Engine>docdb</Engine>",
            usize::MAX,
        )],
    )
    .await?;
    for (id, engine) in [("docs", "aurora-mysql"), ("graph", "neptune")] {
        h.rds()
            .create_db_cluster()
            .db_cluster_identifier(id)
            .engine(engine)
            .master_username("admin")
            .master_user_password("password123")
            .tags(
                aws_sdk_rds::types::Tag::builder()
                    .key("env")
                    .value("dev")
                    .build(),
            )
            .send()
            .await?;
    }
    let params = json!({"selector": {"tags": {"env": "dev"}, "engines": ["docdb", "neptune"]}});
    let ran = h
        .runner("rds", "document-stores", "hibernate")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("DB cluster app-aurora is not of engine docdb or neptune; skipped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("engines docdb,neptune keep 0 DB instance(s) and 2 cluster(s)"),
        "{}",
        ran.stdout
    );
    assert_eq!(cluster_status(&h, "docs").await?, "stopped");
    assert_eq!(cluster_status(&h, "graph").await?, "stopped");
    assert_eq!(cluster_status(&h, "app-aurora").await?, "available");
    let recorded = records(&h.controller);
    assert_eq!(
        recorded.keys().cloned().collect::<Vec<_>>(),
        ["cluster:docs", "cluster:graph"]
    );
    h.runner("rds", "document-stores", "wakeUp")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint())
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(cluster_status(&h, "docs").await?, "available");
    assert_eq!(cluster_status(&h, "graph").await?, "available");
    Ok(())
}
