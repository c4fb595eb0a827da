//! The cluster itself: it serves, reports its start-up time, audits writes with their field
//! manager, and a private cluster leaves nothing behind when dropped.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube_testbed::{ClusterOptions, TestCluster};

use crate::common::{cluster, eventually, object};

#[tokio::test]
async fn the_shared_cluster_serves_a_ready_node() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let timings = cluster.timings();
    eprintln!(
        "start-up: tools {:?}, pki {:?}, etcd+apiserver {:?}, ready {:?}",
        timings.tools, timings.pki, timings.apiserver, timings.ready
    );
    assert!(timings.ready < Duration::from_secs(60), "{timings:?}");

    // A kube client with the aws-lc-rs provider really connects (TLS + client certificate).
    let client = cluster.client()?;
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "37")
    );

    let node = Api::<Node>::all(client).get("kube-testbed").await?;
    let status = node.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"));
    let addresses: Vec<String> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.address)
        .collect();
    assert!(
        addresses.contains(&"127.0.0.1".to_string()),
        "{addresses:?}"
    );
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .unwrap_or_default();
    assert!(port > 0);
    assert!(
        node.spec
            .unwrap_or_default()
            .taints
            .unwrap_or_default()
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn the_audit_log_shows_who_wrote_what_with_which_field_manager() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("audit").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client()?, &ns);
    let cm: ConfigMap = object(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "audited"},
        "data": {"k": "v"},
    }));
    config_maps
        .patch(
            "audited",
            &PatchParams::apply("audit-probe"),
            &Patch::Apply(&cm),
        )
        .await?;
    // Blocking audit mode: the event is on disk when the response arrives.
    let events = cluster.audit_events()?;
    let write = events
        .iter()
        .find(|e| e.namespace() == Some(ns.as_str()) && e.name() == Some("audited"))
        .expect("an audit event for the ConfigMap");
    assert_eq!(write.verb, "patch");
    assert_eq!(write.field_manager.as_deref(), Some("audit-probe"));
    assert_eq!(write.user.username, "admin");
    assert_eq!(write.name(), Some("audited"));
    assert_eq!(write.code(), 201);
    // Reads are not logged.
    assert!(events.iter().all(|e| e.is_write()));
    Ok(())
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(cmdline)
        })
        .collect()
}

#[tokio::test]
async fn a_private_cluster_stops_everything_and_removes_its_directory() -> anyhow::Result<()> {
    // Without the kubelet: this test is about the control plane's life cycle.
    let cluster = TestCluster::start(ClusterOptions {
        keep_dir: false,
        ..ClusterOptions::default().without_kubelet()
    })
    .await?;
    let dir = cluster.dir().to_path_buf();
    let running = processes_using(&dir);
    assert!(
        running.iter().any(|p| p.contains("etcd"))
            && running.iter().any(|p| p.contains("kube-apiserver")),
        "{running:?}"
    );
    cluster.client()?.apiserver_version().await?;
    let started = std::time::Instant::now();
    cluster.shutdown().await;
    eprintln!("teardown took {:?}", started.elapsed());
    assert!(!dir.exists(), "{} still exists", dir.display());
    eventually(
        "the cluster's processes to be gone",
        Duration::from_secs(5),
        || {
            let left = processes_using(&dir);
            async move { Ok(left.is_empty().then_some(())) }
        },
    )
    .await?;
    Ok(())
}
