//! The runner's side of the protocol with the controller (`proto/hibernator/runner/v1`).
//!
//! `RecordRestoreState` and `FetchRestoreState` must succeed (a runner that cannot record does
//! not act), and so must a wake-up's completion (it carries the per-resource results); progress,
//! logs, heartbeats and a hibernation's completion are best effort.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hibernator_proto::v1::runner_client::RunnerClient;
use hibernator_proto::v1::{
    Completion, FetchRestoreStateRequest, HeartbeatRequest, LogEntry, ProgressReport,
    RecordRestoreStateRequest,
};
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// The first pause before retrying a restore-data call; it doubles after each failure.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// A failed call to the controller, as one line (code and message, never metadata).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RpcError(String);

impl RpcError {
    fn from_status(status: &Status) -> Self {
        let mut text = format!("{:?}", status.code());
        if !status.message().is_empty() {
            text.push_str(": ");
            text.push_str(status.message());
        }
        // Transport failures carry their cause (connection refused, ...) as a source.
        let mut source = std::error::Error::source(status);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        if tls_trust_failure(status) {
            text.push_str(&format!(
                " (the controller's TLS certificate is not trusted: {} does not hold the CA that signed it, or it does not name the endpoint)",
                hibernator_api::runner::env::CONTROLLER_CA
            ));
        }
        Self(text)
    }
}

/// Whether a call failed because the controller's certificate was refused: retrying cannot
/// fix that.
fn tls_trust_failure(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        if s.to_string().contains("invalid peer certificate") {
            return true;
        }
        source = s.source();
    }
    false
}

/// Why the controller could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The token file could not be read.
    #[error("failed to read the controller token from {path}")]
    Token {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token has characters that cannot go into a header (its content is never shown).
    #[error("failed to use the controller token from {path}: it is not printable ASCII")]
    TokenText {
        /// The file.
        path: String,
    },
    /// An `https://` endpoint without the CA to trust.
    #[error(
        "failed to set up TLS to the controller endpoint {endpoint:?}: HIBERNATOR_CONTROLLER_CA (the PEM of the CA of its certificate) is not set"
    )]
    MissingCa {
        /// The endpoint.
        endpoint: String,
    },
    /// The endpoint is not a URL, or its TLS settings are unusable.
    #[error("failed to use the controller endpoint {endpoint:?}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// Write-ahead failed: nothing was changed.
    #[error(
        "failed to record the state of {key} with the controller at {endpoint}; changed nothing"
    )]
    Record {
        /// The resource key.
        key: String,
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: RpcError,
    },
    /// The controller answered with a record that is not the executor's.
    #[error("failed to read the stored record of {key} ({stored})")]
    StoredRecord {
        /// The resource key.
        key: String,
        /// The record as stored.
        stored: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The restore data of a wake-up could not be fetched.
    #[error("failed to fetch the restore data from the controller at {endpoint}; changed nothing")]
    Fetch {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: RpcError,
    },
}

/// A record as kept by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// True when an earlier record of the resource was kept.
    pub already_recorded: bool,
    /// The record the controller holds (the earlier one when `already_recorded`).
    pub stored_state_json: String,
}

/// The controller's stop request, set by heartbeats.
#[derive(Debug, Default)]
pub struct StopSignal {
    requested: AtomicBool,
    reason: Mutex<String>,
}

impl StopSignal {
    /// The reason, when the controller asked the runner to stop.
    pub fn requested(&self) -> Option<String> {
        self.requested.load(Ordering::SeqCst).then(|| {
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    fn request(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        self.requested.store(true, Ordering::SeqCst);
    }
}

/// A client of the controller for one execution.
#[derive(Debug, Clone)]
pub struct Controller {
    client: RunnerClient<Channel>,
    authorization: MetadataValue<Ascii>,
    execution_id: String,
    endpoint: String,
    call_timeout: Duration,
    retry_window: Duration,
}

impl Controller {
    /// Reads the token and prepares a lazily connecting channel (nothing is sent yet). Each
    /// call has `call_timeout`; restore-data calls are retried for `retry_window` while the
    /// controller is unavailable.
    pub fn new(
        endpoint: &str,
        ca_pem: Option<&str>,
        token_path: &Path,
        execution_id: &str,
        call_timeout: Duration,
        retry_window: Duration,
    ) -> Result<Self, ControllerError> {
        let path = token_path.display().to_string();
        let token =
            std::fs::read_to_string(token_path).map_err(|source| ControllerError::Token {
                path: path.clone(),
                source,
            })?;
        let authorization = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| ControllerError::TokenText { path })?;
        let mut channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|source| ControllerError::Endpoint {
                endpoint: endpoint.to_string(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5));
        if endpoint.starts_with("https://") {
            let ca = ca_pem.ok_or_else(|| ControllerError::MissingCa {
                endpoint: endpoint.to_string(),
            })?;
            channel = channel
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .map_err(|source| ControllerError::Endpoint {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
        }
        let channel = channel.connect_lazy();
        Ok(Self {
            client: RunnerClient::new(channel),
            authorization,
            execution_id: execution_id.to_string(),
            endpoint: endpoint.to_string(),
            call_timeout,
            retry_window,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(hibernator_proto::AUTHORIZATION, self.authorization.clone());
        request
    }

    /// Runs one unary call with the call deadline (not set on the channel, which also
    /// carries the long-lived log stream).
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {} s",
                self.call_timeout.as_secs()
            ))),
        }
    }

    fn retryable(status: &Status) -> bool {
        matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
        ) && !tls_trust_failure(status)
    }

    /// Runs `call` until it succeeds, fails with an error that retrying cannot fix, or the
    /// controller has been unavailable for the retry window. Pauses grow from 0.25 s to 4 s
    /// (a restart or a leader hand-over takes a few seconds); `note` hears about the first
    /// retry. Nothing is assumed done without the controller's answer.
    async fn with_retry<T, F, Fut>(&self, mut call: F, note: &dyn Fn(String)) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        let mut retries = 0u32;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(status)
                    if Self::retryable(&status)
                        && started.elapsed() + pause <= self.retry_window =>
                {
                    if retries == 0 {
                        note(format!(
                            "the controller is not answering ({}); retrying for up to {} s",
                            RpcError::from_status(&status),
                            self.retry_window.as_secs()
                        ));
                    }
                    retries += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// Write-ahead: stores `state_json` for `key` and returns what the controller holds.
    /// Retried while the controller is unavailable (`note` hears about it); an error means
    /// the controller never acknowledged the record.
    pub async fn record(
        &self,
        key: &str,
        state_json: &str,
        note: &dyn Fn(String),
    ) -> Result<Recorded, ControllerError> {
        self.record_sized(key, state_json, "", note).await
    }

    /// [`Self::record`] with what sizes the resource's cost (`sizing_json`, a
    /// `savings::Sizing`; empty for none), kept beside the record for the savings ledger.
    pub async fn record_sized(
        &self,
        key: &str,
        state_json: &str,
        sizing_json: &str,
        note: &dyn Fn(String),
    ) -> Result<Recorded, ControllerError> {
        let response = self
            .with_retry(
                || {
                    let request = self.request(RecordRestoreStateRequest {
                        execution_id: self.execution_id.clone(),
                        resource_key: key.to_string(),
                        state_json: state_json.to_string(),
                        sizing_json: sizing_json.to_string(),
                    });
                    let mut client = self.client.clone();
                    async move { self.call(client.record_restore_state(request)).await }
                },
                note,
            )
            .await
            .map_err(|status| ControllerError::Record {
                key: key.to_string(),
                endpoint: self.endpoint.clone(),
                source: RpcError::from_status(&status),
            })?;
        Ok(Recorded {
            already_recorded: response.already_recorded,
            stored_state_json: response.stored_state_json,
        })
    }

    /// The restore data of the target: resource key -> record, and the cycle it belongs to.
    /// Retried while the controller is unavailable, like [`Self::record`].
    pub async fn fetch(
        &self,
        note: &dyn Fn(String),
    ) -> Result<(BTreeMap<String, String>, String), ControllerError> {
        let response = self
            .with_retry(
                || {
                    let request = self.request(FetchRestoreStateRequest {
                        execution_id: self.execution_id.clone(),
                    });
                    let mut client = self.client.clone();
                    async move { self.call(client.fetch_restore_state(request)).await }
                },
                note,
            )
            .await
            .map_err(|status| ControllerError::Fetch {
                endpoint: self.endpoint.clone(),
                source: RpcError::from_status(&status),
            })?;
        Ok((response.resources.into_iter().collect(), response.cycle_id))
    }

    /// Progress (best effort: the error is returned for the caller to ignore or note).
    pub async fn progress(
        &self,
        message: &str,
        completed: u32,
        total: u32,
    ) -> Result<(), RpcError> {
        let request = self.request(ProgressReport {
            execution_id: self.execution_id.clone(),
            message: message.to_string(),
            completed,
            total,
        });
        let mut client = self.client.clone();
        self.call(client.report_progress(request))
            .await
            .map(|_| ())
            .map_err(|s| RpcError::from_status(&s))
    }

    /// The outcome. With `must_arrive` (a wake-up's per-resource results) it is retried like a
    /// restore-data call, since the controller keeps or retires records by it; otherwise it is
    /// sent once (the exit code tells the rest).
    pub async fn complete(
        &self,
        completion: Completion,
        must_arrive: bool,
        note: &dyn Fn(String),
    ) -> Result<(), RpcError> {
        let completion = Completion {
            execution_id: self.execution_id.clone(),
            ..completion
        };
        let once = || {
            let request = self.request(completion.clone());
            let mut client = self.client.clone();
            async move { self.call(client.complete(request)).await }
        };
        let result = if must_arrive {
            self.with_retry(once, note).await
        } else {
            once().await
        };
        result.map(|_| ()).map_err(|s| RpcError::from_status(&s))
    }

    /// Opens the log stream: lines sent to the returned sender are streamed until it is
    /// dropped. The task ends with the stream's outcome.
    pub fn stream_logs(
        &self,
    ) -> (
        mpsc::UnboundedSender<LogEntry>,
        tokio::task::JoinHandle<Result<(), RpcError>>,
    ) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let request = self.request(tokio_stream::wrappers::UnboundedReceiverStream::new(
            receiver,
        ));
        let mut client = self.client.clone();
        let task = tokio::spawn(async move {
            client
                .stream_logs(request)
                .await
                .map(|_| ())
                .map_err(|s| RpcError::from_status(&s))
        });
        (sender, task)
    }

    /// Sends one heartbeat (best effort); a `stop` answer sets `signal`.
    pub async fn heartbeat(&self, signal: &StopSignal) {
        let request = self.request(HeartbeatRequest {
            execution_id: self.execution_id.clone(),
        });
        let mut client = self.client.clone();
        if let Ok(response) = self.call(client.heartbeat(request)).await
            && response.stop
        {
            signal.request(response.reason);
        }
    }

    /// Sends a heartbeat every `interval` (the first after one interval) until aborted.
    pub fn heartbeats(
        &self,
        interval: Duration,
        signal: Arc<StopSignal>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                this.heartbeat(&signal).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use hibernator_proto::testing::{FakeController, Rpc};

    use super::*;

    const TOKEN: &str = "unit-token";

    fn free_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn an_https_endpoint_needs_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t").unwrap();
        let Err(err) = Controller::new(
            "https://hibernator.hibernator-system.svc:9444",
            None,
            &path,
            "job-1",
            Duration::from_secs(2),
            Duration::from_secs(1),
        ) else {
            panic!("an https endpoint without a CA was accepted");
        };
        assert!(
            err.to_string().contains("HIBERNATOR_CONTROLLER_CA"),
            "{err}"
        );
    }

    fn client(dir: &tempfile::TempDir, addr: SocketAddr, token: &str, window: u64) -> Controller {
        let path = dir.path().join("token");
        std::fs::write(&path, token).unwrap();
        Controller::new(
            &format!("http://{addr}"),
            None,
            &path,
            "job-1",
            Duration::from_secs(2),
            Duration::from_secs(window),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_record_waits_for_a_controller_that_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let c = client(&dir, addr, TOKEN, 30);
        // The controller restarts: nobody listens for three seconds.
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            FakeController::start_at(addr, TOKEN, "c1").await.unwrap()
        });
        let notes = Mutex::new(Vec::new());
        let started = Instant::now();
        let recorded = c
            .record("noop:t", r#"{"wasRunning":true}"#, &|m| {
                notes.lock().unwrap().push(m)
            })
            .await
            .unwrap();
        let waited = started.elapsed();
        let fake = later.await.unwrap();
        assert!(!recorded.already_recorded);
        assert!(waited >= Duration::from_secs(3), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert_eq!(
            fake.records().get("noop:t").map(String::as_str),
            Some(r#"{"wasRunning":true}"#)
        );
        // Acknowledged once: the retries never reached a controller before it was there.
        assert_eq!(fake.observed().count(Rpc::RecordRestoreState), 1);
        let notes = notes.into_inner().unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("the controller is not answering (Unavailable")
                && notes[0].ends_with("retrying for up to 30 s"),
            "{notes:?}"
        );

        // A fetch after the same kind of outage.
        drop(fake);
        let c = client(&dir, addr, TOKEN, 30);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let fake = FakeController::start_at(addr, TOKEN, "c1").await.unwrap();
            fake.set_records(BTreeMap::from([("noop:t".to_string(), "{}".to_string())]));
            fake
        });
        let (records, cycle) = c.fetch(&|_| {}).await.unwrap();
        let _fake = later.await.unwrap();
        assert_eq!(cycle, "c1");
        assert_eq!(records.keys().collect::<Vec<_>>(), ["noop:t"]);
    }

    #[tokio::test]
    async fn the_retry_window_bounds_the_wait_and_the_error_says_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let c = client(&dir, addr, TOKEN, 2);
        let started = Instant::now();
        let err = c.record("noop:t", "{}", &|_| {}).await.unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        let text = crate::aws::chain(&err);
        assert!(
            text.starts_with(&format!(
                "failed to record the state of noop:t with the controller at http://{addr}; changed nothing: Unavailable"
            )),
            "{text}"
        );

        // A window of zero: one attempt.
        let c = client(&dir, addr, TOKEN, 0);
        let started = Instant::now();
        assert!(c.fetch(&|_| {}).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn errors_that_retrying_cannot_fix_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeController::start(TOKEN, "c1").await.unwrap();
        let addr: SocketAddr = fake
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let c = client(&dir, addr, "wrong-token", 30);
        let started = Instant::now();
        let err = c.record("noop:t", "{}", &|_| {}).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(crate::aws::chain(&err).contains("Unauthenticated"));
        assert_eq!(fake.observed().unauthenticated, 1);
        assert!(fake.records().is_empty());
    }
}
