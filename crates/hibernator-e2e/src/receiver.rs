//! HTTPS receivers for notification tests: each listens on 127.0.0.1 with a self-signed
//! certificate (the controller trusts it through `SSL_CERT_FILE`), records every request, and
//! answers 503 to the first `fail_first` of them.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate for `127.0.0.1` that receivers serve and the controller trusts.
pub struct ReceiverCert {
    /// The certificate, PEM (write it to a file for `SSL_CERT_FILE`).
    pub pem: String,
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

impl ReceiverCert {
    /// A new self-signed certificate.
    pub fn new() -> Result<Self> {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
        Ok(Self {
            pem: c.cert.pem(),
            der: c.cert.der().clone(),
            key: c.signing_key.serialize_der(),
        })
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A running receiver; stopped when dropped.
pub struct Receiver {
    /// `https://127.0.0.1:PORT/hook/<token>`.
    pub url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver that answers 503 to its first `fail_first`
    /// requests and 200 afterwards.
    pub async fn start(cert: &ReceiverCert, fail_first: usize) -> Result<Receiver> {
        Self::start_on(cert, 0, fail_first).await
    }

    /// [`Receiver::start`] on `port` (0: any free port).
    pub async fn start_on(cert: &ReceiverCert, port: u16, fail_first: usize) -> Result<Receiver> {
        let config = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone())),
        )
        .context("receiver TLS configuration")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let at = Instant::now();
                            let headers = req.headers().clone();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let mut list = recorded.lock().unwrap_or_else(|e| e.into_inner());
                            let status = if list.len() < fail_first {
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                StatusCode::OK
                            };
                            list.push(Received {
                                at,
                                headers,
                                body,
                                status: status.as_u16(),
                            });
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .expect("a response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            url: format!("https://127.0.0.1:{port}/hook/T0KEN-{port}"),
            requests,
            task,
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests it accepted (answered 200).
    pub fn accepted(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}
