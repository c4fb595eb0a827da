//! Namespace boundaries for connectors: a plan may use a CloudProvider of another namespace
//! only when the connector allows that namespace (`spec.allowedNamespaces`, by name or by
//! label selector), and a shared connector may not need a Secret (Secrets are never copied
//! across namespaces). A controller watching every namespace, on a test cluster of its own.

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{ControllerOptions, ControllerProcess, World, cond, condition, phase};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Waits until the plan is `Ready=False` with `ReferenceNotAllowed` saying `text`.
async fn not_allowed(w: &World, c: &ControllerProcess, text: &str) {
    w.wait_plan("p", SECS(60), text, |p| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Ready"));
        ready.is_some_and(|r| {
            r.status == "False" && r.reason == "ReferenceNotAllowed" && r.message.contains(text)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_of_another_namespace_is_used_only_where_it_allows_and_never_with_secrets() {
    let w = World::alone("team-a").await.unwrap();
    let shared = w.cluster.create_namespace("shared").await.unwrap();
    w.estate(json!({"rds": ["team-a-db"]})).unwrap();
    let provider = |allowed: serde_json::Value, auth: serde_json::Value| {
        let mut p = json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "CloudProvider",
            "metadata": {"name": "aws-shared", "namespace": shared},
            "spec": {"type": "aws", "aws": {"accountId": moto_server::ACCOUNT_ID, "region": "us-east-1",
                     "auth": auth}},
        });
        if !allowed.is_null() {
            p["spec"]["allowedNamespaces"] = allowed;
        }
        p
    };
    let irsa = json!({"serviceAccount": {}});
    hibernator_e2e::world::apply(&w.client, &provider(json!(null), irsa.clone()))
        .await
        .unwrap();
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": "p"},
        "spec": {
            "schedule": {"timezone": "America/New_York",
                         "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
            "execution": {"strategy": {"type": "Sequential"}},
            "targets": [{"name": "db", "type": "rds",
                         "connectorRef": {"kind": "CloudProvider", "name": "aws-shared", "namespace": shared},
                         "parameters": {"selector": {"instanceIds": ["team-a-db"]}}}],
        },
    }))
    .await
    .unwrap();
    // Thursday 19:59:56 New York, at twice real time: the night begins two seconds in.
    let c = w
        .controller(ControllerOptions {
            watch_all_namespaces: true,
            // The runner ServiceAccount's credentials (IRSA in a real cluster).
            extra_args: vec![
                "--runner-env=AWS_ACCESS_KEY_ID=testing".into(),
                "--runner-env=AWS_SECRET_ACCESS_KEY=testing-secret-value".into(),
            ],
            ..ControllerOptions::at("2026-11-27T00:59:56Z", 2.0)
        })
        .unwrap();
    not_allowed(&w, &c, "does not allow plans of namespace").await;
    // A selector that does not match yet.
    hibernator_e2e::world::apply(
        &w.client,
        &provider(
            json!({"selector": {"matchLabels": {"team": "a"}}}),
            irsa.clone(),
        ),
    )
    .await
    .unwrap();
    // Past 20:00 (the night has begun): still no runner Job.
    tokio::time::sleep(SECS(4)).await;
    not_allowed(&w, &c, "does not allow plans of namespace").await;
    assert!(w.jobs("db", "hibernate").await.unwrap().is_empty());

    // Allowed by name, but with static keys: a Secret is not shared.
    hibernator_e2e::world::apply(
        &w.client,
        &provider(
            json!({"names": [w.ns]}),
            json!({"static": {"secretRef": {"name": "aws-keys"}}}),
        ),
    )
    .await
    .unwrap();
    not_allowed(&w, &c, "Secrets are not shared across namespaces").await;
    assert!(w.jobs("db", "hibernate").await.unwrap().is_empty());

    // Allowed by label, with the runner's own credentials: the night goes ahead.
    hibernator_e2e::world::apply(
        &w.client,
        &provider(json!({"selector": {"matchLabels": {"team": "a"}}}), irsa),
    )
    .await
    .unwrap();
    Api::<Namespace>::all(w.client.clone())
        .patch(
            &w.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    // Namespace labels are read when the plan is reconciled: poke it (as any change would).
    w.patch_plan("p", json!({"metadata": {"annotations": {"poke": "1"}}}))
        .await
        .unwrap();
    w.wait_plan("p", SECS(120), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated) && condition(p, "Ready") == cond("True", "Hibernated")
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let job = w.jobs("db", "hibernate").await.unwrap().remove(0);
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter().all(|e| e.value_from.is_none()),
        "no Secret is referenced: {env:?}"
    );
    let after = w.snapshot().unwrap();
    assert_eq!(after["rds"]["team-a-db"], "stopped", "{after}");
}
