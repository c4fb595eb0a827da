//! High availability and runner authentication (issue "Controller", acceptance 10 and 11).

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{ControllerOptions, RUNNER_IMAGE, World, noop_plan, phase, wait_for};
use hibernator_proto::v1::RecordRestoreStateRequest;
use hibernator_proto::v1::runner_client::RunnerClient;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn holder(w: &World) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    leases
        .get_opt("hibernator-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_killing_it_hands_over() {
    let w = World::new("ha").await.unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    let opts = |id: &str| ControllerOptions {
        identity: id.into(),
        leader_elect: true,
        ..ControllerOptions::at("2026-11-27T00:59:40Z", 60.0)
    };
    let mut a = w.controller(opts("controller-a")).unwrap();
    let mut b = w.controller(opts("controller-b")).unwrap();
    let first = wait_for(SECS(30), "a leader", || holder(&w)).await.unwrap();
    w.wait_plan("p", SECS(60), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n--- a:\n{}\n--- b:\n{}", a.log(), b.log()));
    let (leader, follower) = if first == "controller-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        leader.log().contains("runner Job created"),
        "{}",
        leader.log()
    );
    assert!(
        !follower.log().contains("runner Job created"),
        "the follower created Jobs:\n{}",
        follower.log()
    );
    assert!(
        follower.ready().await,
        "a follower serves runners and is ready"
    );

    leader.kill();
    // The Lease (10 s, so that a loaded machine's stall does not hand it over) expires first.
    let second = wait_for(SECS(60), "a new leader", || async {
        holder(&w).await.filter(|h| *h != first)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", follower.log()));
    assert_ne!(second, first);
    // The new leader acts: a suspension wakes the plan up.
    w.patch_plan("p", json!({"spec": {"suspend": true}}))
        .await
        .unwrap();
    w.wait_plan("p", SECS(60), "Suspended", |p| {
        phase(p) == Some(Phase::Suspended)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", follower.log()));
    assert!(follower.log().contains("became the leader"));
    assert!(
        follower.log().contains("runner Job created"),
        "{}",
        follower.log()
    );
    // Lease writes carry the controller's field manager too.
    hibernator_e2e::world::check_controller_writes(&w.controller_writes().unwrap()).unwrap();
}

async fn token(w: &World, audience: &str, bound: Option<&Pod>) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(w.client.clone(), &w.ns);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(600),
            bound_object_ref: bound.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(p.name_any()),
                uid: p.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    sas.create_token_request("hibernator-runner", &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_with_another_pods_token_or_none_are_refused() {
    let w = World::new("auth").await.unwrap();
    // A runner that stays a while, so that its Job and pod exist during the test.
    w.apply(noop_plan(
        "p",
        &[("t0", json!({"delaySeconds": 120}))],
        json!({}),
    ))
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:55Z", 60.0))
        .unwrap();
    let job = wait_for(SECS(60), "the runner Job", || async {
        w.jobs("t0", "hibernate")
            .await
            .ok()?
            .first()
            .map(|j| j.name_any())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &w.ns);
    let runner_pod = w
        .running_pod(&format!("job-name={job}"), SECS(60))
        .await
        .unwrap();
    // Another pod of the same ServiceAccount, not part of the execution.
    let impostor: Pod = serde_json::from_value(json!({
        "metadata": {"name": "impostor"},
        "spec": {"serviceAccountName": "hibernator-runner", "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": RUNNER_IMAGE, "args": ["--help"]}]},
    }))
    .unwrap();
    let impostor = pods
        .create(&PostParams::default(), &impostor)
        .await
        .unwrap();

    let mut client = RunnerClient::connect(c.grpc_endpoint()).await.unwrap();
    let call = |token: Option<String>| {
        let mut req = tonic::Request::new(RecordRestoreStateRequest {
            execution_id: job.clone(),
            resource_key: "instance:forged".into(),
            state_json: "{\"status\":\"available\"}".into(),
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let no_token = client.record_restore_state(call(None)).await.unwrap_err();
    assert_eq!(
        no_token.code(),
        tonic::Code::Unauthenticated,
        "{no_token:?}"
    );
    let unbound = client
        .record_restore_state(call(Some(token(&w, "hibernator", None).await)))
        .await
        .unwrap_err();
    assert_eq!(unbound.code(), tonic::Code::PermissionDenied, "{unbound:?}");
    assert!(
        unbound.message().contains("not bound to a pod"),
        "{unbound:?}"
    );
    let other_pod = client
        .record_restore_state(call(Some(token(&w, "hibernator", Some(&impostor)).await)))
        .await
        .unwrap_err();
    assert_eq!(
        other_pod.code(),
        tonic::Code::PermissionDenied,
        "{other_pod:?}"
    );
    assert!(
        other_pod.message().contains("does not belong to execution"),
        "{other_pod:?}"
    );
    let wrong_audience = client
        .record_restore_state(call(Some(
            token(&w, "someone-else", Some(&runner_pod)).await,
        )))
        .await
        .unwrap_err();
    assert_eq!(
        wrong_audience.code(),
        tonic::Code::Unauthenticated,
        "{wrong_audience:?}"
    );
    // Nothing was persisted.
    let data = w.restore_data("p").await.unwrap();
    assert!(data.values().all(|v| !v.contains("forged")), "{data:?}");
    // The runner's own token (same pod, right audience) is accepted.
    let own = client
        .record_restore_state(call(Some(token(&w, "hibernator", Some(&runner_pod)).await)))
        .await;
    assert!(own.is_ok(), "{own:?}");
    let metrics = c.metrics().await.unwrap();
    assert!(
        metrics.contains("hibernator_grpc_refused_total{rpc=\"RecordRestoreState\"} 4"),
        "{metrics}"
    );
}
