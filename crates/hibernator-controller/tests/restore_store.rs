//! The restore store against a real API server (kube-testbed): the first record of a resource
//! wins, records carry the restore-data labels and the plan's UID, a ConfigMap of someone
//! else's is refused, and concurrent writers (optimistic concurrency) lose no record: their
//! conflicts (409) are retried.

use std::collections::BTreeSet;

use hibernator_api::restore::RecordOutcome;
use hibernator_controller::restore::{PlanKey, RestoreError, RestoreStore};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube_testbed::TestCluster;
use serde_json::json;

/// The shared test cluster with the CRDs (the store reads the plan's status).
async fn cluster_with_crds() -> &'static TestCluster {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    let cluster = TestCluster::shared().await.unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client().unwrap());
    for (_, crd) in hibernator_api::crds::all() {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("restore-store-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    for (_, crd) in hibernator_api::crds::all() {
        for _ in 0..300 {
            let c = api.get(&crd.name_any()).await.unwrap();
            let established = c.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    cluster
}

fn plan(ns: &str, name: &str) -> PlanKey {
    PlanKey {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-of-{name}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_record_wins_and_foreign_config_maps_are_refused() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.create_namespace("store-first").await.unwrap();
    let client = cluster.client().unwrap();
    let store = RestoreStore::new(client.clone());
    let p = plan(&ns, "p");
    let out = store
        .record(
            &p,
            "db",
            "c1",
            "instance:db",
            json!({"status": "available"}),
        )
        .await
        .unwrap();
    assert_eq!(out, RecordOutcome::Stored(json!({"status": "available"})));
    // A retried runner sees the instance stopped: the first record stays.
    let out = store
        .record(&p, "db", "c1", "instance:db", json!({"status": "stopped"}))
        .await
        .unwrap();
    assert_eq!(
        out,
        RecordOutcome::AlreadyRecorded(json!({"status": "available"}))
    );
    let (records, cycle) = store.fetch(&p, "db").await.unwrap();
    assert_eq!(records["instance:db"], json!({"status": "available"}));
    assert_eq!(cycle, "c1");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("hibernator-restore-p")
        .await
        .unwrap();
    let labels = cm.metadata.labels.unwrap();
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "hibernator-controller"
    );
    assert_eq!(labels["hibernator.ardikasaputro.io/restore-data"], "true");
    assert_eq!(labels["hibernator.ardikasaputro.io/plan-uid"], "uid-of-p");
    assert!(
        cm.metadata.owner_references.is_none(),
        "onDelete: Leave keeps it"
    );

    // Someone else's ConfigMap under the name of another plan's restore data.
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "hibernator-restore-q"},
                "data": {"db": "not restore data"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let err = store
        .record(&plan(&ns, "q"), "db", "c1", "instance:db", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::Foreign { .. }), "{err}");
    assert!(err.is_permanent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_retry_conflicts_and_lose_no_record() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.create_namespace("store-race").await.unwrap();
    let client = cluster.client().unwrap();
    let p = plan(&ns, "race");
    // Three stores, as three controller replicas would be: each has its own lock, so only
    // the API server's optimistic concurrency keeps their writes apart.
    let mut tasks = Vec::new();
    for writer in 0..3 {
        let store = RestoreStore::new(client.clone());
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let key = format!("instance:db-{writer}-{i}");
                let out = store
                    .record(&p, &format!("t{writer}"), "c1", &key, json!({"n": i}))
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                assert!(matches!(out, RecordOutcome::Stored(_)), "{key}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = RestoreStore::new(client.clone());
    let mut keys = BTreeSet::new();
    for writer in 0..3 {
        let (records, _) = store.fetch(&p, &format!("t{writer}")).await.unwrap();
        keys.extend(records.into_keys());
    }
    assert_eq!(keys.len(), 45, "every record survived: {keys:?}");
    // The retries happened: the API server refused some updates with 409 Conflict.
    let conflicts = cluster
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.verb == "update"
                && e.request_uri.contains(&format!(
                    "/namespaces/{ns}/configmaps/hibernator-restore-race"
                ))
                && e.response_status.as_ref().and_then(|s| s.code) == Some(409)
        })
        .count();
    assert!(conflicts > 0, "no write conflicted, so no retry was tested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arriving_together_share_a_write_and_a_bad_one_fails_alone() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.create_namespace("store-batch").await.unwrap();
    let client = cluster.client().unwrap();
    let p = plan(&ns, "batch");
    let store = RestoreStore::new(client.clone());
    // Twelve runners of one plan record at once (one of them sends a record that is not a
    // JSON object), through one controller's store.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, p) = (store.clone(), p.clone());
            tokio::spawn(async move {
                let state = if i == 5 {
                    json!("not an object")
                } else {
                    json!({"n": i})
                };
                store
                    .record(
                        &p,
                        &format!("t{i}"),
                        "c1",
                        &format!("instance:db-{i}"),
                        state,
                    )
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (5, Err(RestoreError::Data { .. })) => {}
            (5, other) => panic!("the bad record must fail alone: {other:?}"),
            (_, Ok(RecordOutcome::Stored(v))) => assert_eq!(v, &json!({"n": i})),
            (_, other) => panic!("record {i}: {other:?}"),
        }
    }
    for i in (0..12).filter(|i| *i != 5) {
        let (records, _) = store.fetch(&p, &format!("t{i}")).await.unwrap();
        assert_eq!(records[&format!("instance:db-{i}")], json!({"n": i}));
    }
    assert!(store.fetch(&p, "t5").await.unwrap().0.is_empty());
    // Every answer came after a successful write holding its record, and the records shared
    // writes: fewer successful writes of the ConfigMap than records.
    let writes = cluster
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| {
            (e.verb == "update" || e.verb == "create")
                && e.request_uri
                    .contains(&format!("/namespaces/{ns}/configmaps"))
                && e.response_status
                    .as_ref()
                    .and_then(|s| s.code)
                    .is_some_and(|c| (200..300).contains(&c))
        })
        .count();
    assert!(
        (1..11).contains(&writes),
        "11 records in {writes} ConfigMap writes: they did not share writes"
    );
}

/// Records one resource of target `db` of `p` through `store`.
async fn record_db(store: &RestoreStore, p: &PlanKey) {
    store
        .record(p, "db", "c1", "instance:db", json!({"status": "available"}))
        .await
        .unwrap();
}

/// Whether the reconciler's read of `p` through `store` finds target `db`'s record.
async fn reads_db(store: &RestoreStore, p: &PlanKey, expects: bool) -> bool {
    store
        .load_watched(p, expects)
        .await
        .unwrap()
        .data
        .contains_key("db")
}

/// The reconciler's read of a plan without restore data is made once: later reads ask the API
/// server nothing (they would find what another replica wrote meanwhile, and do not) until a
/// change is seen (the watch of restore ConfigMaps, here called by hand, or a write of the same
/// store). The gRPC service's read always asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_map_is_read_once_until_a_change_is_seen() {
    use hibernator_controller::restore::config_map_name;
    let cluster = cluster_with_crds().await;
    let ns = cluster.create_namespace("store-absent").await.unwrap();
    let client = cluster.client().unwrap();
    let leader = RestoreStore::new(client.clone());
    // Another replica, whose gRPC service takes a runner's record.
    let other = RestoreStore::new(client.clone());
    let (p, q) = (plan(&ns, "quiet"), plan(&ns, "own"));
    assert!(!reads_db(&leader, &p, false).await);
    record_db(&other, &p).await;
    // Not read again: until the watch reports the new ConfigMap the reconciler keeps what it
    // found...
    assert!(!reads_db(&leader, &p, false).await);
    // ...while the gRPC service's read asks and finds it...
    assert!(leader.load(&p).await.unwrap().data.contains_key("db"));
    // ...and once the watch reports it, the reconciler reads it too.
    leader.changed(&ns, &config_map_name("quiet"));
    assert!(reads_db(&leader, &p, false).await);

    // A write of the store itself ends the memory at once.
    assert!(!reads_db(&leader, &q, false).await);
    record_db(&leader, &q).await;
    assert!(reads_db(&leader, &q, false).await);

    // A replica that starts to lead forgets every ConfigMap found missing.
    let r = plan(&ns, "later");
    assert!(!reads_db(&leader, &r, false).await);
    record_db(&other, &r).await;
    assert!(!reads_db(&leader, &r, false).await);
    leader.forget_absent();
    assert!(reads_db(&leader, &r, false).await);
}

/// With the leader's cache of restore ConfigMaps synced, the reconciler's read of a plan that
/// expects no record asks the API server nothing when the cache holds no ConfigMap for it and
/// this store wrote none; a plan that expects records, one the cache holds, and one this store
/// wrote are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synced_cache_answers_for_plans_without_a_config_map() {
    use hibernator_controller::restore::config_map_name;
    use kube::api::PartialObjectMeta;
    use kube::runtime::{reflector, watcher};
    let cluster = cluster_with_crds().await;
    let ns = cluster.create_namespace("store-cache").await.unwrap();
    let client = cluster.client().unwrap();
    let leader = RestoreStore::new(client.clone());
    let other = RestoreStore::new(client.clone());
    let (cache, mut writer) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    leader.watch_with(cache);
    let p = plan(&ns, "cached");
    record_db(&other, &p).await;
    // Not synced yet: read.
    assert!(reads_db(&leader, &p, false).await);
    // Synced without the ConfigMap (the watch has not delivered it): not read...
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    assert!(!reads_db(&leader, &p, false).await);
    // ...unless the plan's status counts records asleep.
    assert!(reads_db(&leader, &p, true).await);
    // Once the cache holds it, it is read.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let meta = cms.get_metadata(&config_map_name("cached")).await.unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(meta));
    assert!(reads_db(&leader, &p, false).await);
    // A ConfigMap this store wrote is read before the cache shows it.
    let q = plan(&ns, "own-write");
    assert!(!reads_db(&leader, &q, false).await);
    record_db(&leader, &q).await;
    assert!(reads_db(&leader, &q, false).await);
}
