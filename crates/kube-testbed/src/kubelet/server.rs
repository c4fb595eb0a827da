//! The kubelet's HTTPS endpoint: `GET /containerLogs/{namespace}/{pod}/{container}` (what the
//! API server calls for `kubectl logs`) and `/healthz`. Clients must present a certificate
//! signed by the cluster CA (the API server's kubelet client certificate).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::logs::{LogInstance, LogOptions, parse_records, render, select};
use crate::error::{Error, Result};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Binds a free port on 127.0.0.1.
pub(crate) async fn bind() -> Result<(TcpListener, u16)> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| Error::io("listen on", "127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("inspect", "the kubelet listener", e))?
        .port();
    Ok((listener, port))
}

/// TLS with the kubelet's serving certificate, requiring client certificates from the CA.
pub(crate) fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pem_error = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| {
            Error::io("read PEM from", path, std::io::Error::other(e.to_string()))
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem_error(cert))?
        .collect::<std::result::Result<_, _>>()
        .map_err(pem_error(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(client_ca).map_err(pem_error(client_ca))? {
        roots
            .add(ca.map_err(pem_error(client_ca))?)
            .map_err(|source| Error::Tls {
                what: "the kubelet's client CA",
                source,
            })?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| Error::Tls {
        what: "the kubelet's client verifier",
        source: rustls::Error::General(e.to_string()),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "the kubelet endpoint",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| Error::Tls {
            what: "the kubelet endpoint",
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until `stop` changes.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok".into());
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("kube-testbed kubelet: {path} is not served"),
        );
    };
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET".into());
    }
    let options = match LogOptions::from_query(&query) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(logs) = shared.pod_logs(namespace, pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {pod:?} not found"));
    };
    let instance = {
        let containers = logs.containers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = containers.get(*container) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is not valid"),
            );
        };
        if options.previous {
            match c
                .instances
                .len()
                .checked_sub(2)
                .map(|i| c.instances[i].clone())
            {
                Some(i) => i,
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "previous terminated container {container:?} in pod {pod:?} not found"
                        ),
                    );
                }
            }
        } else {
            match c.instances.last() {
                Some(i) => i.clone(),
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "container {container:?} in pod {pod:?} is waiting to start: {}",
                            c.waiting_reason.as_deref().unwrap_or("ContainerCreating")
                        ),
                    );
                }
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(stream_log(instance, options, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Sends the selected part of a log, then (with `follow`) new records until the container
/// instance has finished.
async fn stream_log(instance: LogInstance, options: LogOptions, tx: mpsc::Sender<Bytes>) {
    let mut offset = 0usize;
    let mut at_line_start = true;
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    let mut first = true;
    loop {
        let finished = instance.is_finished();
        let data = tokio::fs::read(&instance.path).await.unwrap_or_default();
        let (records, consumed) = parse_records(data.get(offset..).unwrap_or_default());
        offset += consumed;
        let records = if first {
            select(records, &options)
        } else {
            records
        };
        first = false;
        let mut out = render(&records, &options, &mut at_line_start);
        if out.len() > budget {
            out.truncate(budget);
        }
        budget -= out.len();
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        if !options.follow || budget == 0 || (finished && consumed == 0) {
            return;
        }
        if consumed == 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tx.closed() => return,
            }
        }
    }
}
