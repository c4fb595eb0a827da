//! The CRDs' rules as the real API server applies them agree with what `kubectl hibernator
//! validate` checks client-side (its schema and CEL layers, kube-cel): every invalid variant of
//! the seed is rejected by both or by neither (the semantic checks, which only the CLI and the
//! controller make, are left out on both sides), and a set of valid objects is accepted by both.
//! Server side: a dry-run server-side apply with strict field validation.

use hibernator_api::validate::variants::{cases, doc_mut, exception, seed, set};
use hibernator_api::validate::{Document, Options, Severity, validate_documents};
use hibernator_e2e::world::World;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// What the client says the API server will reject, and why.
fn client(doc: &Value) -> Vec<String> {
    let report = validate_documents(
        &[Document {
            source: "doc".into(),
            value: doc.clone(),
        }],
        Options {
            allow_missing_refs: true,
            server_side_only: true,
        },
    );
    report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

/// Whether the API server accepts the object (dry run), and its answer.
async fn server(w: &World, doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, _) = kube::discovery::pinned_kind(&w.client, &gvk)
        .await
        .map_err(|e| format!("not served: {e}"))?;
    let api: Api<DynamicObject> = Api::namespaced_with(w.client.clone(), &w.ns, &ar);
    let name = doc["metadata"]["name"].as_str().unwrap_or("x");
    api.patch(
        name,
        &PatchParams::apply("e2e-parity")
            .dry_run()
            .validation_strict(),
        &Patch::Apply(doc),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn valid_objects(ns: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = seed()
        .into_iter()
        .chain([exception()])
        .filter(|d| d.value["kind"] != "Namespace")
        .map(|d| (d.source, d.value))
        .collect();
    let mut plan = out
        .iter()
        .find(|(_, v)| v["kind"] == "HibernationPlan")
        .unwrap()
        .1
        .clone();
    let targets = json!([
        {"name": "apps", "type": "workloads", "connectorRef": {"kind": "K8SCluster", "name": "eks-prod"},
         "parameters": {"namespaces": ["team-a"], "selector": {"matchLabels": {"tier": "web"}}}},
        {"name": "pools", "type": "karpenter", "connectorRef": {"kind": "K8SCluster", "name": "eks-prod"},
         "parameters": {"nodePools": ["default"]}},
        {"name": "vms", "type": "ec2", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
         "parameters": {"selector": {"tags": {"env": "dev"}}}},
        {"name": "asgs", "type": "asg", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
         "parameters": {"selector": {"names": ["web-asg"]}}},
        {"name": "services", "type": "ecs", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
         "parameters": {"cluster": "shop", "selector": {"tags": {"env": "dev"}}}},
        {"name": "later", "type": "noop"},
    ]);
    let mut all = plan.clone();
    set(&mut all, "/metadata/name", json!("every-type"));
    set(&mut all, "/spec/targets", targets);
    set(
        &mut all,
        "/spec/execution",
        json!({"strategy": {"type": "Staged", "stages": [
            {"name": "first", "targets": ["apps", "pools"], "parallel": true, "maxConcurrency": 2},
            {"name": "then", "targets": ["vms", "asgs", "services", "later"]},
        ]}}),
    );
    set(
        &mut all,
        "/spec/behavior",
        json!({"mode": "BestEffort", "retries": 5, "allowSelfHibernation": true}),
    );
    out.push(("staged plan of every type".into(), all));
    set(&mut plan, "/metadata/name", json!("sequential"));
    set(
        &mut plan,
        "/spec/execution",
        json!({"strategy": {"type": "Sequential"}}),
    );
    set(&mut plan, "/spec/onDelete", json!("Leave"));
    out.push(("sequential plan".into(), plan));
    out.push((
        "in-cluster K8SCluster".into(),
        json!({"apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1", "kind": "K8SCluster",
               "metadata": {"name": "here"}, "spec": {"k8s": {"inCluster": true}}}),
    ));
    for (_, v) in &mut out {
        v["metadata"]["namespace"] = json!(ns);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_and_the_client_side_rules_agree() {
    let w = World::new("parity").await.unwrap();
    let mut mismatches = Vec::new();
    let mut rejected_by_both = 0;
    for case in cases() {
        let mut docs = seed();
        docs.push(exception());
        let mut doc = doc_mut(&mut docs, case.kind).clone();
        // Some changes change the kind itself.
        (case.change)(&mut doc);
        doc["metadata"]["namespace"] = json!(w.ns);
        let client = client(&doc);
        let server = server(&w, &doc).await;
        // The rules tying parameters to target types name the field in their message; the API
        // server must say the same (its message comes from the same messageExpression).
        if case.message.contains("applies only to target type")
            && !server
                .as_ref()
                .is_err_and(|e| e.contains(case.message) && e.contains(case.field))
        {
            mismatches.push(format!(
                "{}: the API server does not say {:?} at {}: {server:?}",
                case.name, case.message, case.field
            ));
        }
        match (client.is_empty(), &server) {
            (true, Ok(())) => {}
            (false, Err(_)) => rejected_by_both += 1,
            _ => mismatches.push(format!(
                "{}: client {:?}, API server {:?}",
                case.name, client, server
            )),
        }
    }
    for (name, doc) in valid_objects(&w.ns) {
        let client = client(&doc);
        let server = server(&w, &doc).await;
        if !client.is_empty() || server.is_err() {
            mismatches.push(format!(
                "valid {name}: client {client:?}, API server {server:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(
        rejected_by_both >= 25,
        "most variants break a schema or CEL rule ({rejected_by_both})"
    );
}
