//! The real kubectl 1.33 (the Google Cloud CLI kubectl package) against the testbed.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::common::{cluster, eventually, logs, phase};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubectl")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn kubectl_applies_waits_reads_logs_and_deletes() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("kubectl").await?;
    let kubectl = cluster.kubectl()?;

    // A CRD, then wait until it is served. kubectl 1.33's `wait --for=condition` fails at once
    // instead of waiting while the object has no `status.conditions` at all (".status.conditions
    // accessor error: <nil>"), which a CRD has for a moment after its creation: the test waits
    // for the API server to write them first, then kubectl waits for Established.
    kubectl.run(["apply", "-f", &fixture("crd.yaml")]).await?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cluster.client()?);
    eventually(
        "the CRD to have conditions",
        Duration::from_secs(60),
        || async {
            let crd = crds.get("gadgets.kubectl.testbed.example.com").await?;
            Ok(crd
                .status
                .and_then(|s| s.conditions)
                .filter(|c| !c.is_empty())
                .map(|_| ()))
        },
    )
    .await?;
    kubectl
        .run([
            "wait",
            "--for=condition=Established",
            "crd/gadgets.kubectl.testbed.example.com",
            "--timeout=60s",
        ])
        .await?;

    // Client-side and server-side apply.
    let out = kubectl
        .run([
            "apply",
            "-n",
            &ns,
            "-f",
            &fixture("gadget-client-side.yaml"),
        ])
        .await?;
    assert!(
        out.stdout
            .contains("gadget.kubectl.testbed.example.com/small created"),
        "{}",
        out.stdout
    );
    let out = kubectl
        .run([
            "apply",
            "--server-side",
            "-n",
            &ns,
            "-f",
            &fixture("gadget-server-side.yaml"),
        ])
        .await?;
    assert!(out.stdout.contains("serverside-applied"), "{}", out.stdout);
    // Re-applying client-side is a no-op.
    let out = kubectl
        .run([
            "apply",
            "-n",
            &ns,
            "-f",
            &fixture("gadget-client-side.yaml"),
        ])
        .await?;
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);

    // Get by short name, with printer columns.
    let out = kubectl.run(["get", "gdt", "-n", &ns]).await?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("SIZE") && lines[0].contains("COLOR"),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("large") && l.contains("10") && l.contains("blue"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("small") && l.contains("red"))
    );

    // The managed fields tell the two apply flavours apart.
    let out = kubectl
        .run([
            "get",
            "gadget",
            "large",
            "-n",
            &ns,
            "--show-managed-fields",
            "-o",
            "json",
        ])
        .await?;
    let large: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(large["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(large["metadata"]["managedFields"][0]["operation"], "Apply");
    let out = kubectl
        .run([
            "get",
            "gadget",
            "small",
            "-n",
            &ns,
            "--show-managed-fields",
            "-o",
            "json",
        ])
        .await?;
    let small: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(
        small["metadata"]["managedFields"][0]["manager"],
        "kubectl-client-side-apply"
    );

    // A Job run by the process kubelet; wait for it and read its logs.
    kubectl
        .run(["apply", "-n", &ns, "-f", &fixture("job.yaml")])
        .await?;
    kubectl
        .run([
            "wait",
            "-n",
            &ns,
            "--for=condition=complete",
            "job/greeter",
            "--timeout=60s",
        ])
        .await?;
    let out = kubectl.run(["logs", "-n", &ns, "job/greeter"]).await?;
    assert_eq!(out.stdout, "hello from the greeter job\n");

    // kustomize, piped into apply.
    let rendered = kubectl.run(["kustomize", &fixture("kustomize")]).await?;
    assert!(
        rendered.stdout.contains("name: settings-"),
        "{}",
        rendered.stdout
    );
    let out = kubectl
        .run_with_input(
            ["apply", "-n", &ns, "-f", "-"],
            Some(rendered.stdout.as_bytes()),
        )
        .await?;
    assert!(out.stdout.contains("pod/reader created"), "{}", out.stdout);
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);
    eventually(
        "the kustomized pod to succeed",
        Duration::from_secs(60),
        || async {
            let pod = pods.get("reader").await?;
            Ok((phase(&pod) == "Succeeded").then_some(()))
        },
    )
    .await?;
    assert_eq!(logs(&pods, "reader").await?, "mode=fast\n");

    // Delete, waiting for the objects to go.
    let out = kubectl
        .run(["delete", "-n", &ns, "gdt", "small", "large"])
        .await?;
    assert!(out.stdout.contains("\"small\" deleted"), "{}", out.stdout);
    kubectl
        .run(["delete", "-n", &ns, "job/greeter", "pod/reader"])
        .await?;
    eventually(
        "everything in the namespace to be gone",
        Duration::from_secs(60),
        || async {
            let out = kubectl
                .run(["get", "gadgets,jobs,pods", "-n", &ns, "-o", "name"])
                .await?;
            Ok(out.stdout.trim().is_empty().then_some(()))
        },
    )
    .await?;
    kubectl.run(["delete", "-f", &fixture("crd.yaml")]).await?;
    Ok(())
}
