//! A tiny HTTP proxy in front of moto that makes transitions slow: moto jumps straight to
//! `stopped` or `available`, so the proxy rewrites status fields in responses for the first N
//! looks after a chosen call, as AWS would show `stopping` or `starting` for a while.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Rewrites `from` to `to` in the responses to requests containing `request_contains`, for
/// `times` responses, starting once a request containing `after` went through.
#[derive(Clone, Debug)]
pub struct Rule {
    pub after: String,
    pub request_contains: String,
    pub from: String,
    pub to: String,
    pub times: usize,
    active: bool,
    pub hits: usize,
}

impl Rule {
    pub fn new(after: &str, request_contains: &str, from: &str, to: &str, times: usize) -> Self {
        Self {
            after: after.into(),
            request_contains: request_contains.into(),
            from: from.into(),
            to: to.into(),
            times,
            active: false,
            hits: 0,
        }
    }
}

pub struct SlowProxy {
    addr: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    pub async fn start(upstream: &str, rules: Vec<Rule>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let rules = Arc::new(Mutex::new(rules));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = Arc::clone(&rules);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let client = client.clone();
                let upstream = upstream.clone();
                let rules = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(
                            request,
                            client.clone(),
                            upstream.clone(),
                            Arc::clone(&rules),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, rules, task })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn rules(&self) -> Vec<Rule> {
        self.rules.lock().unwrap().clone()
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    request: Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    rules: Arc<Mutex<Vec<Rule>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let signature = format!("{} {path} {}", parts.method, String::from_utf8_lossy(&body));
    let mut upstream_request = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        upstream_request = upstream_request.header(name, value);
    }
    let upstream_request = upstream_request
        .body(Full::new(body))
        .expect("a valid request");
    let response = match client.request(upstream_request).await {
        Ok(response) => response,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: {e}"))))
                .expect("a valid response"));
        }
    };
    let (mut parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&body).into_owned();
    {
        let mut rules = rules.lock().unwrap();
        for rule in rules.iter_mut() {
            if rule.active
                && rule.hits < rule.times
                && signature.contains(&rule.request_contains)
                && text.contains(&rule.from)
            {
                text = text.replace(&rule.from, &rule.to);
                rule.hits += 1;
            }
        }
        for rule in rules.iter_mut() {
            if !rule.active && signature.contains(&rule.after) {
                rule.active = true;
            }
        }
    }
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, Full::new(Bytes::from(text))))
}
