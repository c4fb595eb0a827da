//! Readiness probes, so that a pod is Ready only once its containers say so (a Deployment's
//! rollout and `helm install --wait` depend on it). `httpGet` (HTTP) and `tcpSocket` probes run
//! against 127.0.0.1, where every pod's ports are; `exec`, `grpc` and HTTPS probes count as
//! passing (the test kubelet cannot run them faithfully), which the crate documentation lists
//! as a deviation.

use std::time::Duration;

use tokio::time::Instant;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The state of one container's readiness probe.
#[derive(Debug, Clone)]
pub(crate) struct Readiness {
    probe: Probe,
    ports: Vec<ContainerPort>,
    /// When to probe next.
    pub(crate) next: Instant,
    /// Whether the container counts as ready.
    pub(crate) ok: bool,
    successes: i32,
    failures: i32,
}

impl Readiness {
    /// The probe of a container that has just started.
    pub(crate) fn start(probe: Probe, ports: Vec<ContainerPort>) -> Readiness {
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        Readiness {
            probe,
            ports,
            next: Instant::now() + Duration::from_secs(delay),
            ok: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Probes once; returns true when readiness changed.
    pub(crate) async fn run(&mut self) -> bool {
        let passed = check(&self.probe, &self.ports).await;
        let period = self.probe.period_seconds.unwrap_or(10).max(1) as u64;
        self.next = Instant::now() + Duration::from_secs(period);
        let before = self.ok;
        if passed {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                self.ok = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                self.ok = false;
            }
        }
        before != self.ok
    }
}

fn port(p: &IntOrString, ports: &[ContainerPort]) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => ports
            .iter()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// One probe attempt.
async fn check(probe: &Probe, ports: &[ContainerPort]) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref() == Some("HTTPS") {
            return true;
        }
        let Some(port) = port(&http.port, ports) else {
            return false;
        };
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return tokio::time::timeout(timeout, http_get(port, &path))
            .await
            .unwrap_or(false);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port, ports) else {
            return false;
        };
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(("127.0.0.1", port)))
                .await,
            Ok(Ok(_))
        );
    }
    true
}

async fn http_get(port: u16, path: &str) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let Ok(request) = http::Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("user-agent", "kube-probe/testbed")
        .body(Empty::<Bytes>::new())
    else {
        return false;
    };
    match sender.send_request(request).await {
        Ok(response) => (200..400).contains(&response.status().as_u16()),
        Err(_) => false,
    }
}
