//! An in-memory controller side of the protocol, for tests (feature `testing`).
//!
//! [`FakeController`] serves the `Runner` service on 127.0.0.1 with the semantics the real
//! controller promises: a bearer token is required, restore records are kept per resource and
//! the first record wins until [`FakeController::forget_records`] (the real controller retires
//! the records a wake-up's completion reports restored; the fake keeps completions for tests to
//! read, but does not act on their per-resource results). It records every call, and a test can
//! make it refuse
//! `RecordRestoreState`, stall at a chosen call (so the runner can be killed at that moment) or
//! ask the runner to stop through `Heartbeat`.
//!
//! It treats every execution as the same target: use one fake per target.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

use crate::v1::runner_server::{Runner, RunnerServer};
use crate::v1::{
    Ack, Completion, FetchRestoreStateRequest, FetchRestoreStateResponse, HeartbeatRequest,
    HeartbeatResponse, LogEntry, ProgressReport, RecordRestoreStateRequest,
    RecordRestoreStateResponse,
};

/// The calls of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// `RecordRestoreState`.
    RecordRestoreState,
    /// `FetchRestoreState`.
    FetchRestoreState,
    /// `ReportProgress`.
    ReportProgress,
    /// `StreamLogs` (the stream's opening).
    StreamLogs,
    /// `Heartbeat`.
    Heartbeat,
    /// `Complete`.
    Complete,
}

/// Everything the fake saw and holds.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Restore records: resource key -> state JSON.
    pub records: BTreeMap<String, String>,
    /// Sizings sent with the records that were stored: resource key -> sizing JSON.
    pub sizings: BTreeMap<String, String>,
    /// Every call, in order of arrival, with its execution id.
    pub calls: Vec<(Rpc, String)>,
    /// Every streamed log line.
    pub logs: Vec<LogEntry>,
    /// Every progress report.
    pub progress: Vec<ProgressReport>,
    /// Every completion.
    pub completions: Vec<Completion>,
    /// Calls rejected for a missing or wrong token.
    pub unauthenticated: usize,
}

impl Observed {
    /// How many calls of `rpc` arrived.
    pub fn count(&self, rpc: Rpc) -> usize {
        self.calls.iter().filter(|(r, _)| *r == rpc).count()
    }
}

#[derive(Debug, Default)]
struct Behaviour {
    refuse_records: Option<String>,
    stall: Option<(Rpc, usize)>,
    stop: Option<String>,
}

#[derive(Debug)]
struct Shared {
    token: String,
    cycle_id: String,
    observed: Mutex<Observed>,
    behaviour: Mutex<Behaviour>,
    stalled: watch::Sender<Option<(Rpc, usize)>>,
}

impl Shared {
    fn observed(&self) -> MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn behaviour(&self) -> MutexGuard<'_, Behaviour> {
        self.behaviour.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let expected = format!("Bearer {}", self.token);
        let given = request
            .metadata()
            .get(crate::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given == Some(expected.as_str()) {
            Ok(())
        } else {
            self.observed().unauthenticated += 1;
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }

    /// Notes the call; true when the test asked to stall at it.
    fn arrive(&self, rpc: Rpc, execution_id: &str) -> bool {
        let n = {
            let mut observed = self.observed();
            observed.calls.push((rpc, execution_id.to_string()));
            observed.count(rpc)
        };
        self.behaviour().stall == Some((rpc, n))
    }

    async fn stall(&self, rpc: Rpc) -> ! {
        let n = self.observed().count(rpc);
        self.stalled.send_replace(Some((rpc, n)));
        std::future::pending().await
    }
}

#[derive(Clone, Debug)]
struct Service(Arc<Shared>);

#[tonic::async_trait]
impl Runner for Service {
    async fn record_restore_state(
        &self,
        request: Request<RecordRestoreStateRequest>,
    ) -> Result<Response<RecordRestoreStateResponse>, Status> {
        self.0.check(&request)?;
        let request = request.into_inner();
        let stall = self
            .0
            .arrive(Rpc::RecordRestoreState, &request.execution_id);
        if let Some(message) = self.0.behaviour().refuse_records.clone() {
            return Err(Status::unavailable(message));
        }
        let is_object = serde_json::from_str::<serde_json::Value>(&request.state_json)
            .is_ok_and(|v| v.is_object());
        if !is_object {
            return Err(Status::invalid_argument("state_json is not a JSON object"));
        }
        let response = {
            let mut observed = self.0.observed();
            match observed.records.get(&request.resource_key) {
                Some(stored) => RecordRestoreStateResponse {
                    already_recorded: true,
                    stored_state_json: stored.clone(),
                },
                None => {
                    if !request.sizing_json.is_empty() {
                        observed
                            .sizings
                            .insert(request.resource_key.clone(), request.sizing_json.clone());
                    }
                    observed
                        .records
                        .insert(request.resource_key, request.state_json.clone());
                    RecordRestoreStateResponse {
                        already_recorded: false,
                        stored_state_json: request.state_json,
                    }
                }
            }
        };
        if stall {
            // Persisted, but the acknowledgement never leaves: the worst moment to die.
            self.0.stall(Rpc::RecordRestoreState).await;
        }
        Ok(Response::new(response))
    }

    async fn fetch_restore_state(
        &self,
        request: Request<FetchRestoreStateRequest>,
    ) -> Result<Response<FetchRestoreStateResponse>, Status> {
        self.0.check(&request)?;
        let request = request.into_inner();
        if self.0.arrive(Rpc::FetchRestoreState, &request.execution_id) {
            self.0.stall(Rpc::FetchRestoreState).await;
        }
        Ok(Response::new(FetchRestoreStateResponse {
            resources: self.0.observed().records.clone().into_iter().collect(),
            cycle_id: self.0.cycle_id.clone(),
        }))
    }

    async fn report_progress(
        &self,
        request: Request<ProgressReport>,
    ) -> Result<Response<Ack>, Status> {
        self.0.check(&request)?;
        let request = request.into_inner();
        let stall = self.0.arrive(Rpc::ReportProgress, &request.execution_id);
        self.0.observed().progress.push(request);
        if stall {
            self.0.stall(Rpc::ReportProgress).await;
        }
        Ok(Response::new(Ack {}))
    }

    async fn stream_logs(
        &self,
        request: Request<tonic::Streaming<LogEntry>>,
    ) -> Result<Response<Ack>, Status> {
        self.0.check(&request)?;
        let mut stream = request.into_inner();
        let mut first = true;
        while let Some(entry) = stream.next().await {
            let entry = entry?;
            if first {
                first = false;
                if self.0.arrive(Rpc::StreamLogs, &entry.execution_id) {
                    self.0.stall(Rpc::StreamLogs).await;
                }
            }
            self.0.observed().logs.push(entry);
        }
        Ok(Response::new(Ack {}))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.0.check(&request)?;
        let request = request.into_inner();
        if self.0.arrive(Rpc::Heartbeat, &request.execution_id) {
            self.0.stall(Rpc::Heartbeat).await;
        }
        let stop = self.0.behaviour().stop.clone();
        Ok(Response::new(HeartbeatResponse {
            stop: stop.is_some(),
            reason: stop.unwrap_or_default(),
        }))
    }

    async fn complete(&self, request: Request<Completion>) -> Result<Response<Ack>, Status> {
        self.0.check(&request)?;
        let request = request.into_inner();
        let stall = self.0.arrive(Rpc::Complete, &request.execution_id);
        self.0.observed().completions.push(request);
        if stall {
            self.0.stall(Rpc::Complete).await;
        }
        Ok(Response::new(Ack {}))
    }
}

/// A running fake controller; stops serving when dropped.
#[derive(Debug)]
pub struct FakeController {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeController {
    /// Serves on 127.0.0.1 (a free port), accepting `Bearer <token>`; restore data belongs to
    /// cycle `cycle_id`.
    pub async fn start(token: &str, cycle_id: &str) -> std::io::Result<Self> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), token, cycle_id).await
    }

    /// Like [`Self::start`], on a chosen address.
    pub async fn start_at(addr: SocketAddr, token: &str, cycle_id: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.to_string(),
            cycle_id: cycle_id.to_string(),
            observed: Mutex::default(),
            behaviour: Mutex::default(),
            stalled: watch::Sender::new(None),
        });
        let service = RunnerServer::new(Service(Arc::clone(&shared)));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            // Errors end the server; the test then sees an unreachable controller.
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`, for `HIBERNATOR_CONTROLLER_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of everything observed so far.
    pub fn observed(&self) -> Observed {
        self.shared.observed().clone()
    }

    /// The restore records.
    pub fn records(&self) -> BTreeMap<String, String> {
        self.shared.observed().records.clone()
    }

    /// The sizings sent with stored records: resource key -> sizing JSON.
    pub fn sizings(&self) -> BTreeMap<String, String> {
        self.shared.observed().sizings.clone()
    }

    /// Replaces the restore records (to start a wake-up from crafted data).
    pub fn set_records(&self, records: BTreeMap<String, String>) {
        self.shared.observed().records = records;
    }

    /// Drops the restore records, as the controller does once a wake-up restored them.
    pub fn forget_records(&self) {
        self.shared.observed().records.clear();
    }

    /// Makes `RecordRestoreState` fail with `UNAVAILABLE: <message>` (`None`: accept again).
    pub fn refuse_records(&self, message: Option<&str>) {
        self.shared.behaviour().refuse_records = message.map(str::to_string);
    }

    /// Makes the `n`-th call (from 1, counted since start) of `rpc` never answer. A stalled
    /// `RecordRestoreState` has stored its record: the acknowledgement is what is lost.
    pub fn stall_at(&self, rpc: Rpc, n: usize) {
        self.shared.behaviour().stall = Some((rpc, n));
        self.shared.stalled.send_replace(None);
    }

    /// Cancels a stall set with [`Self::stall_at`] for calls still to come.
    pub fn no_stall(&self) {
        self.shared.behaviour().stall = None;
    }

    /// Waits until the stall set with [`Self::stall_at`] is reached.
    pub async fn stalled(&self) -> (Rpc, usize) {
        let mut rx = self.shared.stalled.subscribe();
        let reached = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        reached.expect("waited for Some")
    }

    /// Asks runners to stop through the heartbeat's answer.
    pub fn ask_to_stop(&self, reason: &str) {
        self.shared.behaviour().stop = Some(reason.to_string());
    }

    /// Stops serving (the endpoint becomes unreachable).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.task.abort();
    }
}
