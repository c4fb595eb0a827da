//! Executors: one per target type. Each finds its resources, records their state with the
//! controller before changing them (write-ahead), changes them, and waits until they reach
//! the target state.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use hibernator_api::runner::Execution;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aws::{AwsCallError, SetupError};
use crate::config::{ConfigError, Timing};
use crate::controller::{Controller, ControllerError, StopSignal};
use crate::k8s::KubeCallError;
use crate::output::Reporter;
use crate::wait::WaitError;

pub mod asg;
pub mod ec2;
pub mod ecs;
pub mod eks;
pub mod gitops;
pub mod karpenter;
pub mod noop;
pub mod rds;
mod scale;
mod switch;
pub mod toggle;
pub mod workloads;

/// A failed AWS call on a resource.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {resource}")]
pub struct AwsError {
    /// What was attempted, e.g. `stop`.
    pub action: &'static str,
    /// The resource, e.g. `DB instance prod-db`.
    pub resource: String,
    /// The cause.
    #[source]
    pub source: AwsCallError,
}

impl AwsError {
    /// Wraps an SDK error.
    pub fn new<E>(
        action: &'static str,
        resource: impl Into<String>,
        error: &aws_sdk_sts::error::SdkError<E>,
    ) -> Self
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        Self {
            action,
            resource: resource.into(),
            source: AwsCallError::from_sdk(error),
        }
    }
}

/// A failed Kubernetes API call on a resource.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {resource}")]
pub struct KubeError {
    /// What was attempted, e.g. `scale`.
    pub action: &'static str,
    /// The resource, e.g. `Deployment team-a/web`.
    pub resource: String,
    /// The cause.
    #[source]
    pub source: KubeCallError,
}

impl KubeError {
    /// Wraps a kube error.
    pub fn new(action: &'static str, resource: impl Into<String>, error: &kube::Error) -> Self {
        Self {
            action,
            resource: resource.into(),
            source: KubeCallError::from_kube(error),
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The controller could not record or fetch.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The AWS account could not be used.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A wait failed.
    #[error(transparent)]
    Wait(#[from] WaitError<AwsError>),
    /// The Kubernetes cluster could not be used.
    #[error(transparent)]
    KubeSetup(#[from] crate::k8s::SetupError),
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// A wait on a Kubernetes resource failed.
    #[error(transparent)]
    KubeWait(WaitError<KubeError>),
    /// A resource is in a state that cannot be changed as needed.
    #[error("cannot {verb} {resource}: it is {status}")]
    Unactionable {
        /// `start`, `resize`, ...
        verb: &'static str,
        /// The resource.
        resource: String,
        /// Its state.
        status: String,
    },
    /// The controller asked the runner to stop.
    #[error("stopped at the controller's request: {reason}")]
    StopRequested {
        /// The controller's reason.
        reason: String,
    },
    /// A noop target told to fail.
    #[error("failed on purpose (noop target with fail: {fail})")]
    NoopFailure {
        /// The `fail` parameter.
        fail: &'static str,
    },
    /// The overall deadline passed.
    #[error("did not finish within HIBERNATOR_TIMEOUT_SECONDS = {seconds}")]
    Deadline {
        /// The deadline.
        seconds: u64,
    },
    /// A wake-up left recorded resources as they were; each was logged.
    #[error("{failed} of {total} recorded resources not restored: {first}")]
    NotRestored {
        /// How many.
        failed: usize,
        /// Of how many.
        total: usize,
        /// The first one's key and reason.
        first: String,
    },
    /// An in-sleep check could not check (or put back to sleep) recorded resources.
    #[error("{failed} of {total} recorded resources not checked: {first}")]
    NotChecked {
        /// How many.
        failed: usize,
        /// Of how many.
        total: usize,
        /// The first one's key and reason.
        first: String,
    },
    /// Several resources failed; the first error is shown, the others were logged.
    #[error("{failed} of {total} {noun} failed; the first failure")]
    Several {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
        /// What they are.
        noun: String,
        /// The first failure.
        #[source]
        first: Box<RunError>,
    },
}

impl RunError {
    /// True for the controller's stop request, which ends a run at once.
    pub fn is_stop(&self) -> bool {
        matches!(self, Self::StopRequested { .. })
    }

    /// Exit code: 2 for configuration problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The outcome of a successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One line, e.g. `stopped 2 of 3 DB instances (1 already stopped)`.
    pub summary: String,
    /// Resources changed by this run.
    pub changed: u32,
}

/// What became of one resource in this run (sent to the controller with the completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceOutcome {
    /// Hibernation: the resource has a record.
    Recorded,
    /// Wake-up: the resource is in its recorded state.
    Restored,
    /// Wake-up: the resource does not exist where the runner looked.
    NotFound(String),
    /// Wake-up: the resource could not be restored; in-sleep check: it could not be checked or
    /// put back to sleep.
    Failed(String),
    /// In-sleep check: the resource is in its hibernated state.
    Asleep,
    /// In-sleep check (`Report`): found awake (the state it was found in) and left so.
    Drifted(String),
    /// In-sleep check (`Reapply`): found awake (the state it was found in), asleep again.
    Reapplied(String),
}

/// What a run needs besides its cloud client.
pub struct Ctx<'a> {
    /// The story.
    pub reporter: &'a Reporter,
    /// The controller.
    pub controller: &'a Controller,
    /// Waits.
    pub timing: Timing,
    /// The execution.
    pub execution: &'a Execution,
    /// The controller's stop request.
    pub stop: &'a StopSignal,
    done: Cell<u32>,
    total: Cell<u32>,
    progress_lost: Cell<bool>,
    outcomes: RefCell<BTreeMap<String, ResourceOutcome>>,
    fetched: RefCell<Vec<String>>,
}

impl<'a> Ctx<'a> {
    /// A context.
    pub fn new(
        reporter: &'a Reporter,
        controller: &'a Controller,
        timing: Timing,
        execution: &'a Execution,
        stop: &'a StopSignal,
    ) -> Self {
        Self {
            reporter,
            controller,
            timing,
            execution,
            stop,
            done: Cell::new(0),
            total: Cell::new(0),
            progress_lost: Cell::new(false),
            outcomes: RefCell::new(BTreeMap::new()),
            fetched: RefCell::new(Vec::new()),
        }
    }

    /// A recorded resource that could not be restored: logged, reported, and the run goes on
    /// with the others.
    pub async fn failed(&self, key: &str, error: &RunError) {
        let message = crate::aws::chain(error);
        self.reporter
            .error(format!("{key} not restored: {message}"));
        self.outcome(key, ResourceOutcome::Failed(message));
        self.progress(&format!("{key} not restored"), true).await;
    }

    /// A recorded resource that does not exist where the runner looked: its record is kept.
    pub async fn not_found(&self, key: &str, resource: &str) {
        let message = format!(
            "{resource} does not exist where this runner looked; its record is kept (was it deleted, or does the connector now point elsewhere?)"
        );
        self.reporter.warn(format!("{key} not restored: {message}"));
        self.outcome(key, ResourceOutcome::NotFound(message));
        self.progress(&format!("{key} not found"), true).await;
    }

    /// An in-sleep check could not look at (or put back to sleep) a recorded resource:
    /// logged, reported, and the check goes on with the others.
    pub async fn check_failed(&self, key: &str, error: &RunError) {
        let message = crate::aws::chain(error);
        self.reporter.error(format!("{key} not checked: {message}"));
        self.outcome(key, ResourceOutcome::Failed(message));
        self.progress(&format!("{key} not checked"), true).await;
    }

    /// An in-sleep check did not find a recorded resource: its record is kept for the wake-up,
    /// which reports it.
    pub async fn check_not_found(&self, key: &str, resource: &str) {
        let message = format!(
            "{resource} does not exist where this runner looked; its record is kept for the wake-up"
        );
        self.reporter.warn(format!("{key}: {message}"));
        self.outcome(key, ResourceOutcome::NotFound(message));
        self.progress(&format!("{key} not found"), true).await;
    }

    /// What became of the resource with record `key`, if known yet.
    pub fn outcome_of(&self, key: &str) -> Option<ResourceOutcome> {
        self.outcomes.borrow().get(key).cloned()
    }

    /// Notes what became of the resource with record `key` (the last word counts).
    pub fn outcome(&self, key: &str, outcome: ResourceOutcome) {
        self.outcomes.borrow_mut().insert(key.to_string(), outcome);
    }

    /// Every resource's outcome. After a wake-up that ran to its end (`finished`), a fetched
    /// record that no executor claimed is reported as not restored, so that the controller
    /// keeps it and says so; after a run that stopped early such records are left unreported
    /// (they stay as they are for the next attempt).
    pub fn outcomes(&self, finished: bool) -> Vec<(String, ResourceOutcome)> {
        let mut out = self.outcomes.borrow().clone();
        if finished {
            for key in self.fetched.borrow().iter() {
                out.entry(key.clone()).or_insert_with(|| {
                    ResourceOutcome::Failed(format!(
                        "no {} executor handles this record",
                        self.execution.target_type
                    ))
                });
            }
        }
        out.into_iter().collect()
    }

    /// Fails when the controller asked the runner to stop (checked between resources).
    pub fn check_stop(&self) -> Result<(), RunError> {
        match self.stop.requested() {
            Some(reason) => Err(RunError::StopRequested { reason }),
            None => Ok(()),
        }
    }

    /// Adds resources to the progress total.
    pub fn add_total(&self, n: usize) {
        self.total.set(self.total.get() + n as u32);
    }

    /// Reports progress (best effort): `message`, and whether one more resource is done.
    pub async fn progress(&self, message: &str, one_more_done: bool) {
        if one_more_done {
            self.done.set(self.done.get() + 1);
        }
        let result = self
            .controller
            .progress(message, self.done.get(), self.total.get())
            .await;
        if let Err(e) = result
            && !self.progress_lost.replace(true)
        {
            self.reporter.warn(format!(
                "could not report progress to the controller ({e}); carrying on"
            ));
        }
    }

    /// Write-ahead: records `current` for `key` and returns the record the controller keeps
    /// (the earlier one if the resource was recorded before in this cycle) and whether it is
    /// that earlier one.
    pub async fn record<R>(&self, key: &str, current: &R) -> Result<(R, bool), RunError>
    where
        R: Serialize + DeserializeOwned,
    {
        self.record_sized(key, current, None).await
    }

    /// [`Self::record`] with what sizes the resource's cost while awake, for the savings
    /// ledger (kept beside the record, never used to restore).
    pub async fn record_sized<R>(
        &self,
        key: &str,
        current: &R,
        sizing: Option<&hibernator_api::savings::Sizing>,
    ) -> Result<(R, bool), RunError>
    where
        R: Serialize + DeserializeOwned,
    {
        let json = serde_json::to_string(current).expect("records serialize");
        let sizing = sizing
            .map(|s| serde_json::to_string(s).expect("sizings serialize"))
            .unwrap_or_default();
        let recorded = self
            .controller
            .record_sized(key, &json, &sizing, &|m| self.reporter.warn(m))
            .await?;
        self.outcome(key, ResourceOutcome::Recorded);
        let stored: R = serde_json::from_str(&recorded.stored_state_json).map_err(|source| {
            ControllerError::StoredRecord {
                key: key.to_string(),
                stored: recorded.stored_state_json.clone(),
                source,
            }
        })?;
        Ok((stored, recorded.already_recorded))
    }

    /// The records of a wake-up whose key starts with `prefix:`, as `(id, record)`.
    pub fn records_of<R: DeserializeOwned>(
        &self,
        records: &BTreeMap<String, String>,
        prefix: &str,
    ) -> Result<Vec<(String, R)>, RunError> {
        let mut out = Vec::new();
        for (key, json) in records {
            let Some(id) = key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(':'))
            else {
                continue;
            };
            // One unreadable record must not keep the others asleep: it is reported as not
            // restored and kept.
            match serde_json::from_str(json) {
                Ok(record) => out.push((id.to_string(), record)),
                Err(source) => {
                    let e = ControllerError::StoredRecord {
                        key: key.clone(),
                        stored: json.clone(),
                        source,
                    };
                    let message = crate::aws::chain(&e);
                    self.reporter
                        .error(format!("{key} not restored: {message}"));
                    self.outcome(key, ResourceOutcome::Failed(message));
                }
            }
        }
        Ok(out)
    }

    /// Fetches the restore data of a wake-up and says what it holds.
    pub async fn fetch(&self) -> Result<BTreeMap<String, String>, RunError> {
        let (records, cycle) = self.controller.fetch(&|m| self.reporter.warn(m)).await?;
        self.fetched.borrow_mut().extend(records.keys().cloned());
        let cycle = if cycle.is_empty() {
            String::new()
        } else {
            format!(" of cycle {cycle}")
        };
        self.reporter.info(format!(
            "fetched restore data{cycle}: {} record{}",
            records.len(),
            if records.len() == 1 { "" } else { "s" }
        ));
        Ok(records)
    }

    /// Warns about records no executor claimed.
    pub fn ignore_other_records(&self, records: &BTreeMap<String, String>, prefixes: &[&str]) {
        for key in records.keys() {
            let ours = prefixes
                .iter()
                .any(|p| key.strip_prefix(p).is_some_and(|r| r.starts_with(':')));
            if !ours {
                let message = format!(
                    "not a resource of a {} target; its record is kept",
                    self.execution.target_type
                );
                self.reporter
                    .warn(format!("ignoring restore record {key}: {message}"));
                self.outcome(key, ResourceOutcome::Failed(message));
            }
        }
    }
}

/// Counts of one kind of resource, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Resources looked at.
    pub total: u32,
    /// Changed by this run.
    pub changed: u32,
    /// Already in the target state.
    pub already: u32,
    /// Left as they were on purpose (stopped before hibernation, not changeable).
    pub left: u32,
    /// Vanished.
    pub missing: u32,
    /// Could not be changed (wake-up: not restored, reported per resource).
    pub failed: u32,
}

/// Builds the summary line from per-kind tallies: `stopped 1 of 2 DB instances (1 already
/// stopped)`.
pub fn summary(verb: &str, already: &str, left: &str, parts: &[(&str, Tally)]) -> String {
    let counted: Vec<&(&str, Tally)> = parts.iter().filter(|(_, t)| t.total > 0).collect();
    if counted.is_empty() {
        let nouns: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
        return format!("nothing to do: no {} found", nouns.join(" or "));
    }
    let main: Vec<String> = counted
        .iter()
        .map(|(noun, t)| format!("{} of {} {noun}s", t.changed, t.total))
        .collect();
    let mut extra = Vec::new();
    let sum = |f: fn(&Tally) -> u32| counted.iter().map(|(_, t)| f(t)).sum::<u32>();
    let (a, l, m, f) = (
        sum(|t| t.already),
        sum(|t| t.left),
        sum(|t| t.missing),
        sum(|t| t.failed),
    );
    if a > 0 {
        extra.push(format!("{a} {already}"));
    }
    if l > 0 {
        extra.push(format!("{l} {left}"));
    }
    if m > 0 {
        extra.push(format!("{m} no longer there"));
    }
    if f > 0 {
        extra.push(format!("{f} failed"));
    }
    let mut line = format!("{verb} {}", main.join(" and "));
    if !extra.is_empty() {
        line.push_str(&format!(" ({})", extra.join(", ")));
    }
    line
}

/// The summary of an in-sleep check: `checked 3 DB instances: 2 asleep, 1 put back to sleep`.
pub fn check_summary(mode: hibernator_api::plan::EnforceMode, parts: &[(&str, Tally)]) -> String {
    let counted: Vec<&(&str, Tally)> = parts.iter().filter(|(_, t)| t.total > 0).collect();
    if counted.is_empty() {
        return "nothing to check: no restore data recorded for this target".into();
    }
    let what: Vec<String> = counted
        .iter()
        .map(|(noun, t)| format!("{} {noun}{}", t.total, if t.total == 1 { "" } else { "s" }))
        .collect();
    let sum = |f: fn(&Tally) -> u32| counted.iter().map(|(_, t)| f(t)).sum::<u32>();
    let mut found = vec![format!("{} asleep", sum(|t| t.already))];
    let awake = sum(|t| t.left) + sum(|t| t.changed);
    if mode == hibernator_api::plan::EnforceMode::Reapply {
        found.push(format!("{} put back to sleep", sum(|t| t.changed)));
    } else if awake > 0 {
        found.push(format!("{awake} awake (drifted; left as found)"));
    }
    for (n, label) in [
        (sum(|t| t.missing), "no longer there"),
        (sum(|t| t.failed), "not checked"),
    ] {
        if n > 0 {
            found.push(format!("{n} {label}"));
        }
    }
    format!("checked {}: {}", what.join(" and "), found.join(", "))
}

/// One resource a wake-up waits for, with the state it waits for (`want`).
pub struct Pending<T = ()> {
    /// Its record key.
    pub key: String,
    /// How it is named in messages (`DB instance prod-db`).
    pub label: String,
    /// Short name for progress lines.
    pub id: String,
    /// Changed by this run (else someone else was already bringing it back).
    pub ours: bool,
    /// The state waited for.
    pub want: T,
}

/// Waits, all together, for resources to be back in their recorded state; `wait` returns the
/// story line when one is back, `None` when it vanished. Notes each resource's outcome and
/// counts it in `tally` (changed or already, missing, failed); a failed wait does not stop the
/// others.
pub async fn wait_restored<'p, T, F, Fut>(
    ctx: &Ctx<'_>,
    noun: &str,
    pending: &'p [Pending<T>],
    tally: &mut Tally,
    wait: F,
) -> Result<(), RunError>
where
    F: Fn(&'p Pending<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, RunError>>,
{
    let counts = [(); 4].map(|_| Cell::new(0u32));
    let futures: Vec<_> = pending
        .iter()
        .map(|p| {
            let counts = &counts;
            let waited = wait(p);
            async move {
                let [changed, already, missing, failed] = counts;
                match waited.await {
                    Ok(Some(line)) => {
                        ctx.reporter.info(line);
                        ctx.outcome(&p.key, ResourceOutcome::Restored);
                        ctx.progress(&format!("{} restored", p.id), true).await;
                        let count = if p.ours { changed } else { already };
                        count.set(count.get() + 1);
                    }
                    Ok(None) => {
                        missing.set(missing.get() + 1);
                        ctx.not_found(&p.key, &p.label).await;
                    }
                    Err(e) => {
                        failed.set(failed.get() + 1);
                        ctx.failed(&p.key, &e).await;
                    }
                }
                Ok(())
            }
        })
        .collect();
    all(ctx, noun, futures).await?;
    let [changed, already, missing, failed] = counts;
    tally.changed += changed.get();
    tally.already += already.get();
    tally.missing += missing.get();
    tally.failed += failed.get();
    Ok(())
}

/// Runs `futures` together and returns the first error after logging every failure.
pub async fn all<F>(ctx: &Ctx<'_>, noun: &str, futures: Vec<F>) -> Result<(), RunError>
where
    F: std::future::Future<Output = Result<(), RunError>>,
{
    let total = futures.len();
    let results = futures_util::future::join_all(futures).await;
    let mut errors: Vec<RunError> = results.into_iter().filter_map(Result::err).collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        failed => {
            for e in &errors[1..] {
                ctx.reporter.error(crate::aws::chain(e));
            }
            Err(RunError::Several {
                failed,
                total,
                noun: noun.to_string(),
                first: Box::new(errors.remove(0)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_well() {
        let t = |total, changed, already, left, missing| Tally {
            total,
            changed,
            already,
            left,
            missing,
            failed: 0,
        };
        assert_eq!(
            summary(
                "stopped",
                "already stopped",
                "left alone",
                &[
                    ("DB instance", t(1, 1, 0, 0, 0)),
                    ("Aurora cluster", t(0, 0, 0, 0, 0))
                ]
            ),
            "stopped 1 of 1 DB instances"
        );
        assert_eq!(
            summary(
                "stopped",
                "already stopped",
                "left alone",
                &[
                    ("DB instance", t(3, 1, 1, 0, 1)),
                    ("Aurora cluster", t(1, 1, 0, 0, 0))
                ]
            ),
            "stopped 1 of 3 DB instances and 1 of 1 Aurora clusters (1 already stopped, 1 no longer there)"
        );
        assert_eq!(
            summary("stopped", "a", "l", &[("EC2 instance", Tally::default())]),
            "nothing to do: no EC2 instance found"
        );
    }
}
