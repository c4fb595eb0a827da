//! Runners reach the controller over TLS by default: with no certificate given the controller
//! makes its own CA and serving certificate (Secret `hibernator-grpc-tls`), renews it while
//! runners work, hands the CA to runner Jobs, and a whole night (the hibernation's write-ahead
//! records and the wake-up's restore fetch) goes over it. Plaintext clients are refused, and a
//! runner that does not trust the certificate fails its Job saying why.

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_api::runner::env;
use hibernator_e2e::world::{ControllerOptions, World, noop_plan, phase, target_state};
use hibernator_proto::v1::RecordRestoreStateRequest;
use hibernator_proto::v1::runner_client::RunnerClient;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn request() -> tonic::Request<RecordRestoreStateRequest> {
    tonic::Request::new(RecordRestoreStateRequest {
        execution_id: "nobody".into(),
        resource_key: "noop:x".into(),
        state_json: "{}".into(),
        ..Default::default()
    })
}

fn env_of(job: &Job, name: &str) -> Option<String> {
    job.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

async fn serving_cert(w: &World) -> String {
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    let s = secrets.get("hibernator-grpc-tls").await.unwrap();
    String::from_utf8(s.data.unwrap()["tls.crt"].0.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_night_goes_over_the_controllers_own_tls_and_plaintext_is_refused() {
    let w = World::new("tls").await.unwrap();
    // Two targets, one of which works for a while: its runner holds a connection while the
    // certificate is renewed under it.
    w.apply(noop_plan(
        "p",
        &[("t0", json!({})), ("t1", json!({"delaySeconds": 10}))],
        json!({}),
    ))
    .await
    .unwrap();
    // Thursday 19:59 New York; the wake-up (06:00) comes about half a minute later. A serving
    // certificate of 12 s is renewed with 4 s left, so runners meet several.
    let c = w
        .controller(ControllerOptions {
            extra_args: vec![
                "--grpc-tls-cert-lifetime-seconds=12".into(),
                "--grpc-tls-check-seconds=1".into(),
            ],
            ..ControllerOptions::at("2026-11-27T00:59:00Z", 1200.0)
        })
        .unwrap();
    w.wait_plan("p", SECS(90), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    // Write-ahead restore data only arrives over gRPC: the runners got through.
    let data = w.restore_data("p").await.unwrap();
    assert!(
        data.contains_key("t0") && data.contains_key("t1"),
        "{data:?}"
    );
    let ca = w.grpc_ca().await.unwrap();
    let job = w.jobs("t0", "hibernate").await.unwrap().remove(0);
    let (grpc, _) = c.ports();
    assert_eq!(
        env_of(&job, env::CONTROLLER_ENDPOINT).as_deref(),
        Some(format!("https://127.0.0.1:{grpc}").as_str())
    );
    assert_eq!(
        env_of(&job, env::CONTROLLER_CA).as_deref(),
        Some(ca.as_str())
    );
    let first_cert = serving_cert(&w).await;

    // The wake-up fetches what was recorded, over TLS, with a renewed certificate.
    w.wait_plan("p", SECS(180), "awake again", |p| {
        phase(p) == Some(Phase::Active)
            && ["t0", "t1"]
                .iter()
                .all(|t| target_state(p, t) == Some(hibernator_api::TargetState::Completed))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let p = w.plan("p").await.unwrap();
    let restored = p
        .status
        .as_ref()
        .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Restored"))
        .map(|c| c.status.clone());
    assert_eq!(restored.as_deref(), Some("True"), "{:?}", p.status);
    let renewals = c
        .log()
        .matches("renewed the runners' gRPC certificate")
        .count();
    assert!(
        renewals >= 2,
        "the certificate was renewed {renewals} times:\n{}",
        c.log()
    );
    assert_ne!(serving_cert(&w).await, first_cert);
    // The CA did not change: Jobs created at any time trust every certificate.
    assert_eq!(w.grpc_ca().await.unwrap(), ca);
    let wake = w.jobs("t1", "wakeUp").await.unwrap().remove(0);
    assert_eq!(
        env_of(&wake, env::CONTROLLER_CA).as_deref(),
        Some(ca.as_str())
    );

    // Plaintext HTTP/2 gets no answer from a TLS listener.
    let plain = async {
        RunnerClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await?
            .record_restore_state(request())
            .await
            .map_err(anyhow::Error::from)
    };
    let refused = tokio::time::timeout(SECS(10), plain).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plaintext call succeeded: {refused:?}"
    );
    if let Ok(Err(e)) = &refused
        && let Some(status) = e.downcast_ref::<tonic::Status>()
    {
        assert_ne!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    // A TLS client that trusts the CA reaches the service (and is then asked who it is).
    let status = c
        .grpc_client(&ca)
        .await
        .unwrap()
        .record_restore_state(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_does_not_trust_the_certificate_fails_its_job_saying_why() {
    let w = World::new("tls-untrusted").await.unwrap();
    // The controller serves one self-signed certificate and hands runners another as the CA.
    let served = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key, ca) = (
        w.dir().join("grpc.crt"),
        w.dir().join("grpc.key"),
        w.dir().join("wrong-ca.crt"),
    );
    std::fs::write(&cert, served.cert.pem()).unwrap();
    std::fs::write(&key, served.signing_key.serialize_pem()).unwrap();
    std::fs::write(&ca, other.cert.pem()).unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    let c = w
        .controller(ControllerOptions {
            grpc_tls: Some((cert, key)),
            extra_args: vec![format!("--grpc-tls-ca={}", ca.display())],
            ..ControllerOptions::at("2026-11-27T00:59:50Z", 60.0)
        })
        .unwrap();
    let p = w
        .wait_plan("p", SECS(120), "t0 failed", |p| {
            target_state(p, "t0") == Some(hibernator_api::TargetState::Failed)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let message = p.status.unwrap().targets[0]
        .message
        .clone()
        .unwrap_or_default();
    for part in [
        "invalid peer certificate",
        "the controller's TLS certificate is not trusted",
        env::CONTROLLER_CA,
        "changed nothing",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    // Nothing was recorded, so nothing was changed.
    let data = w.restore_data("p").await.unwrap();
    assert!(!data.contains_key("t0"), "{data:?}");
}
