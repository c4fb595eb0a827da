//! The real helm built by the tools module renders and lints a chart; the rendered manifests
//! run on the testbed.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::common::{cluster, eventually, logs};

fn chart() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chart")
        .display()
        .to_string()
}

#[tokio::test]
async fn helm_lints_and_templates_a_chart_that_runs_on_the_testbed() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let helm = cluster.helm()?;
    let version = helm.run(["version", "--short"]).await?;
    assert!(version.stdout.starts_with("v3."), "{}", version.stdout);

    let lint = helm.run(["lint", &chart()]).await?;
    assert!(
        lint.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{}",
        lint.stdout
    );

    let rendered = helm
        .run([
            "template",
            "demo",
            &chart(),
            "--set",
            "message=rendered by helm",
        ])
        .await?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered.stdout)?;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment"], "{}", rendered.stdout);
    assert_eq!(docs[0]["data"]["message"], "rendered by helm");
    assert_eq!(docs[1]["metadata"]["name"], "demo-demo");

    // The rendered chart, applied with kubectl, runs.
    let ns = cluster.create_namespace("helm").await?;
    let kubectl = cluster.kubectl()?;
    kubectl
        .run_with_input(
            ["apply", "-n", &ns, "-f", "-"],
            Some(rendered.stdout.as_bytes()),
        )
        .await?;
    let client = cluster.client()?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the chart's deployment to be available",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("demo-demo").await?;
            Ok((d.status.and_then(|s| s.available_replicas) == Some(1)).then_some(()))
        },
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await?
        .items
        .remove(0);
    let name = pod.name_any();
    eventually(
        "the chart's message in the logs",
        Duration::from_secs(10),
        || async { Ok((logs(&pods, &name).await? == "rendered by helm\n").then_some(())) },
    )
    .await?;
    Ok(())
}
