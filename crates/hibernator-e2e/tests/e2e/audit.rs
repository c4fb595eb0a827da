//! The audit-log check of the controller's writes looks at response codes: with a rule taken
//! out of the controller's ClusterRole, the refused writes (403) fail the check, while the same
//! night with the full role passes it.

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{
    ControllerOptions, E2E_CLUSTER_ROLE, World, apply, check_controller_writes, noop_plan, phase,
    wait_for, yaml_docs,
};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams};
use serde_json::json;

async fn night(w: &World) {
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:50Z", 60.0))
        .unwrap();
    w.wait_plan("p", Duration::from_secs(90), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    // The Events of the night have been attempted.
    wait_for(
        Duration::from_secs(30),
        "the controller's Event writes",
        || async {
            w.controller_writes()
                .ok()?
                .iter()
                .any(|e| {
                    e.object_ref.as_ref().and_then(|r| r.resource.as_deref()) == Some("events")
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_by_rbac_fails_the_check_and_the_full_role_passes() {
    let full = World::new("audit-full").await.unwrap();
    night(&full).await;
    let by_kind = check_controller_writes(&full.controller_writes().unwrap()).unwrap();
    assert!(
        by_kind.get("events").copied().unwrap_or(0) > 0,
        "{by_kind:?}"
    );

    // The same night with a role that may not create Events.
    let w = World::new("audit-noevents").await.unwrap();
    let role = format!("e2e-controller-no-events-{}", w.ns);
    for mut doc in yaml_docs("deploy/rbac/controller-clusterrole.yaml").unwrap() {
        if doc["kind"] == "ClusterRole" && doc["metadata"]["name"] == "hibernator-controller" {
            doc["metadata"]["name"] = json!(role);
            let rules = doc["rules"].as_array_mut().unwrap();
            let before = rules.len();
            rules.retain(|r| r["resources"] != json!(["events"]));
            assert_eq!(rules.len(), before - 1, "the events rule was taken out");
            apply(&w.client, &doc).await.unwrap();
        }
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(w.client.clone());
    bindings
        .delete(
            &format!("hibernator-controller-{}", w.ns),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    w.bind("hibernator-controller", &role, "-reduced")
        .await
        .unwrap();
    assert_ne!(role, E2E_CLUSTER_ROLE);
    night(&w).await;
    let err = check_controller_writes(&w.controller_writes().unwrap()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("refused with 403") && text.contains("events"),
        "{text}"
    );
}
