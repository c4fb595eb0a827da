//! A fault-injecting proxy in front of moto: runners pointed at [`FaultProxy::endpoint`] reach
//! moto through it, and a test makes chosen AWS calls fail (server errors, throttling, a
//! refusal) or slow down, a given number of times or until told otherwise.
//!
//! A request matches a [`Fault`] when its method, path and body contain every one of the
//! fault's strings (`Action=StartDBInstance`, `DBInstanceIdentifier=db-b`,
//! `/node-groups/gpu-ng/update-config`). The first matching fault with uses left applies.
//! Written here because it must understand nothing of HTTP beyond one request and one answer,
//! and no published proxy injects AWS-shaped errors.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status, content type and body instead of moto.
    Respond {
        /// HTTP status.
        status: u16,
        /// Extra headers (e.g. `x-amzn-ErrorType`).
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
    /// Wait, then forward to moto.
    Delay(Duration),
}

impl FaultAction {
    /// An error of an AWS query-protocol service (RDS, Auto Scaling, STS).
    pub fn query_error(status: u16, code: &str, message: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>",
                if status >= 500 { "Receiver" } else { "Sender" }
            ),
        }
    }

    /// An error of EC2 (its own XML shape).
    pub fn ec2_error(status: u16, code: &str, message: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
            ),
        }
    }

    /// An error of a REST-JSON service (EKS).
    pub fn json_error(status: u16, code: &str, message: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-amzn-errortype".into(), code.into()),
            ],
            body: format!(r#"{{"message":"{message}"}}"#),
        }
    }
}

/// A rule of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Strings that must all occur in `METHOD PATH` or the body.
    pub matches: Vec<String>,
    /// What happens.
    pub action: FaultAction,
    /// How many requests it applies to (`None`: all, until removed).
    pub times: Option<u32>,
}

impl Fault {
    /// A fault for requests containing all of `matches`, applied every time.
    pub fn new(matches: &[&str], action: FaultAction) -> Self {
        Self {
            matches: matches.iter().map(|s| s.to_string()).collect(),
            action,
            times: None,
        }
    }

    /// The same fault, applied `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// Looks at a request (`METHOD PATH`, body) before it is forwarded; the request waits for it.
pub type Inspector = Arc<
    dyn Fn(String, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

#[derive(Default)]
struct Shared {
    upstream: String,
    faults: Mutex<Vec<Fault>>,
    applied: Mutex<Vec<(String, FaultAction)>>,
    inspector: Mutex<Option<Inspector>>,
}

/// The proxy; it stops when dropped. It runs on a thread of its own, so it can be started
/// and dropped from synchronous and asynchronous code alike.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (moto's endpoint) on 127.0.0.1.
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            ..Default::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
        })
    }

    /// The URL to give runners as `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a fault (after the existing ones).
    pub fn add(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Has every request that reaches moto looked at first (a write-ahead check, say).
    pub fn inspect(&self, inspector: Inspector) {
        *lock(&self.shared.inspector) = Some(inspector);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The requests a fault applied to, as `(request line, action)`.
    pub fn applied(&self) -> Vec<(String, FaultAction)> {
        lock(&self.shared.applied).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first fault matching the request, with one use taken.
fn take_fault(shared: &Shared, line: &str, body: &str) -> Option<FaultAction> {
    let mut faults = lock(&shared.faults);
    let i = faults.iter().position(|f| {
        f.times != Some(0)
            && f.matches
                .iter()
                .all(|m| line.contains(m.as_str()) || body.contains(m.as_str()))
    })?;
    if let Some(n) = faults[i].times.as_mut() {
        *n -= 1;
    }
    let action = faults[i].action.clone();
    lock(&shared.applied).push((line.to_string(), action.clone()));
    Some(action)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let line = format!("{method} {path}");
    let text = String::from_utf8_lossy(&body).to_string();
    match take_fault(&shared, &line, &text) {
        Some(FaultAction::Respond {
            status,
            headers,
            body,
        }) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::try_from(k.as_str()),
                    HeaderValue::try_from(v.as_str()),
                ) {
                    response.headers_mut().insert(k, v);
                }
            }
            return response;
        }
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let inspector = lock(&shared.inspector).clone();
    if let Some(inspect) = inspector {
        inspect(line.clone(), text.clone()).await;
    }
    let url = format!("{}{path}", shared.upstream);
    let forwarded = tokio::task::spawn_blocking(move || forward(&method, &url, &headers, body))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match forwarded {
        Ok(r) => r,
        Err(e) => {
            let mut response = Response::new(Body::from(format!("fault proxy: {e}")));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

/// Sends the request to moto as it came (the signature covers the original host, which moto
/// does not check) and returns moto's answer as it is.
fn forward(
    method: &Method,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = axum::http::Request::builder()
        .method(method.clone())
        .uri(url);
    for (k, v) in headers {
        if k == axum::http::header::HOST || k == axum::http::header::CONTENT_LENGTH {
            continue;
        }
        request = request.header(k, v);
    }
    let request = request.body(body.to_vec()).map_err(|e| e.to_string())?;
    let mut answer = agent.run(request).map_err(|e| e.to_string())?;
    let status = answer.status();
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    for (k, v) in answer.headers() {
        if k == axum::http::header::TRANSFER_ENCODING || k == axum::http::header::CONTENT_LENGTH {
            continue;
        }
        response.headers_mut().append(k.clone(), v.clone());
    }
    let bytes = answer.body_mut().read_to_vec().map_err(|e| e.to_string())?;
    *response.body_mut() = Body::from(bytes);
    Ok(response)
}
