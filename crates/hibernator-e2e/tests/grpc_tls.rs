//! Runners reach the controller over TLS: the controller serves its gRPC with a certificate,
//! runner Jobs carry the CA to trust, a night's hibernation goes through, and plaintext
//! clients are refused.

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_api::runner::env;
use hibernator_e2e::world::{ControllerOptions, World, noop_plan, phase};
use hibernator_proto::v1::RecordRestoreStateRequest;
use hibernator_proto::v1::runner_client::RunnerClient;
use serde_json::json;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn request() -> tonic::Request<RecordRestoreStateRequest> {
    tonic::Request::new(RecordRestoreStateRequest {
        execution_id: "nobody".into(),
        resource_key: "instance:x".into(),
        state_json: "{}".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_report_over_tls_and_plaintext_is_refused() {
    let w = World::new("tls").await.unwrap();
    // A self-signed serving certificate: the controller hands it to runners as their CA.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = w.dir().join("grpc-tls.crt");
    let key_path = w.dir().join("grpc-tls.key");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    let c = w
        .controller(ControllerOptions {
            grpc_tls: Some((cert_path, key_path)),
            ..ControllerOptions::at("2026-11-27T00:59:50Z", 60.0)
        })
        .unwrap();
    w.wait_plan("p", Duration::from_secs(60), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    // Write-ahead restore data only arrives over gRPC: the runner got through.
    let data = w.restore_data("p").await.unwrap();
    assert!(data.contains_key("t0"), "{data:?}");

    let job = w.jobs("t0", "hibernate").await.unwrap().remove(0);
    let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
    let var = |name: &str| {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let (grpc, _) = c.ports();
    assert_eq!(
        var(env::CONTROLLER_ENDPOINT).as_deref(),
        Some(format!("https://127.0.0.1:{grpc}").as_str())
    );
    assert_eq!(var(env::CONTROLLER_CA).as_deref(), Some(cert_pem.as_str()));

    // Plaintext HTTP/2 gets no answer from a TLS listener.
    let plain = async {
        RunnerClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await?
            .record_restore_state(request())
            .await
            .map_err(anyhow::Error::from)
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), plain).await;
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
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{grpc}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert_pem)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = RunnerClient::new(channel)
        .record_restore_state(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}
