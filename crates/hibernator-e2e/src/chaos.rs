//! The fault-injection suite: many nights of a multi-target plan (rds + eks + ec2 + workloads,
//! a DAG) on the test cluster and moto, with faults injected at random (seeded) moments:
//! SIGKILL of the controller, SIGKILL of runner pods, deletion of runner Jobs and of the
//! restore ConfigMap, AWS errors and latency (a fault proxy in front of moto), a restart of
//! kube-apiserver, and resources started by hand during the night.
//!
//! After every morning it checks the invariant: every resource is back in its recorded state,
//! or the plan shows `Restored=False` naming exactly the resources that are not; never a silent
//! `Ready=True` with something asleep. Throughout, the proxy holds every AWS call that stops a
//! resource until the restore ConfigMap is seen holding that resource's record: nothing is
//! stopped without its prior state recorded. Then it acts as the person who is told: asks for
//! a retry, restores by hand what is still asleep, acknowledges, and the next night begins.
//!
//! Nights are driven by `spec.suspend` over a schedule that is always in off-hours, so each
//! night waits for its operations to settle instead of a clock (the same decision path as a
//! scheduled boundary). The workloads are not behind the proxy: the write-ahead check covers the
//! AWS resources.
//!
//! Run it with `cargo xtask chaos --seed N --nights K`; `cargo test` runs a short seed set
//! (`tests/e2e/chaos.rs`). It restarts the API server, so it runs on a test cluster of its own
//! (`World::alone`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use hibernator_api::plan::{
    HibernationPlan, Operation, Phase, RESTORE_ACK_ANNOTATION, RETRY_ANNOTATION,
};
use hibernator_api::restore::RestoreView;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use moto_server::{Fault, FaultAction, FaultProxy};
use serde_json::{Value, json};

use crate::world::{
    ControllerOptions, ControllerProcess, SLEEPER, World, condition, estate_at, sim_now, wait_for,
};

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Seed of the fault choices and timings.
    pub seed: u64,
    /// Nights (a hibernation and a wake-up each).
    pub nights: u32,
    /// Print what happens.
    pub verbose: bool,
}

/// The kinds of fault, in the order of the report.
pub const FAULT_KINDS: &[&str] = &[
    "controller SIGKILL",
    "runner pod SIGKILL",
    "runner Job deleted",
    "restore ConfigMap deleted",
    "AWS 5xx",
    "AWS throttling",
    "AWS latency",
    "API server restart",
    "started by hand at night",
];

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Nights run.
    pub nights: u32,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Invariant violations (each one line).
    pub violations: Vec<String>,
    /// Resources put to sleep that were back in the morning, summed over the nights.
    pub resources_restored: u32,
    /// Resources put to sleep in all.
    pub resources_asleep: u32,
    /// Mornings the plan reported `Restored=False` (naming what was not back).
    pub mornings_reported: u32,
    /// Resources a person had to restore by hand after a retry.
    pub restored_by_hand: u32,
    /// How long the run took.
    pub elapsed: Duration,
}

impl ChaosReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| measure | value |\n|---|---|");
        let _ = writeln!(out, "| seed | {} |", self.seed);
        let _ = writeln!(out, "| nights | {} |", self.nights);
        for kind in FAULT_KINDS {
            let _ = writeln!(
                out,
                "| faults: {kind} | {} |",
                self.faults.get(kind).copied().unwrap_or(0)
            );
        }
        let total: u32 = self.faults.values().sum();
        let _ = writeln!(out, "| faults in all | {total} |");
        let _ = writeln!(
            out,
            "| resources back in the morning | {} of {} |",
            self.resources_restored, self.resources_asleep
        );
        let _ = writeln!(
            out,
            "| mornings with Restored=False (every resource not back named) | {} |",
            self.mornings_reported
        );
        let _ = writeln!(
            out,
            "| resources restored by hand after a retry | {} |",
            self.restored_by_hand
        );
        let _ = writeln!(out, "| invariant violations | {} |", self.violations.len());
        let _ = writeln!(out, "| time | {:.0} s |", self.elapsed.as_secs_f64());
        out
    }
}

const PLAN: &str = "chaos";
/// Monday 00:00:30 New York; the schedule is always in off-hours.
const CLOCK_START: &str = "2026-11-30T05:00:30Z";
/// 30x: a retry's minute of backoff takes two seconds.
const CLOCK_SPEED: f64 = 30.0;
/// Longest wait for an operation to settle.
const SETTLE: Duration = Duration::from_secs(180);

/// Runs the suite on a test cluster of its own.
pub async fn run(opts: ChaosOptions) -> Result<ChaosReport> {
    let started = Instant::now();
    let w = World::alone("chaos").await?;
    let mut c = Chaos::setup(&w, opts.clone()).await?;
    for night in 1..=opts.nights {
        c.night(night)
            .await
            .with_context(|| format!("night {night}"))?;
    }
    let mut report = c.report.clone();
    report.violations = c
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    report.elapsed = started.elapsed();
    Ok(report)
}

struct Chaos<'a> {
    w: &'a World,
    opts: ChaosOptions,
    rng: fastrand::Rng,
    proxy: FaultProxy,
    ctl: Option<ControllerProcess>,
    ctl_opts: ControllerOptions,
    ctl_started: Instant,
    run_started: Instant,
    restart_at: Option<Instant>,
    /// EC2 instance ids by name.
    ids: BTreeMap<String, String>,
    /// The state every resource must be in each morning.
    baseline: Value,
    deployments: BTreeMap<String, i32>,
    /// Resource keys the restore ConfigMap was seen holding (live) since the hibernation began.
    seen: Arc<Mutex<BTreeSet<String>>>,
    violations: Arc<Mutex<Vec<String>>>,
    report: ChaosReport,
}

fn deployment(name: &str, replicas: i32, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "main", "image": SLEEPER, "args": ["3600"]}]}}},
    })
}

fn plan() -> Value {
    let days = json!(["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]);
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": PLAN},
        "spec": {
            "schedule": {"timezone": "America/New_York", "offHours": [
                {"start": "00:00", "end": "12:00", "daysOfWeek": days},
                {"start": "12:00", "end": "00:00", "daysOfWeek": days},
            ]},
            "suspend": true,
            "execution": {"strategy": {"type": "DAG", "maxConcurrency": 2, "dependencies": [
                {"from": "apps", "to": "cluster"},
                {"from": "vms", "to": "db"},
            ]}},
            "targets": [
                {"name": "db", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws"},
                 "parameters": {"selector": {"instanceIds": ["db-1", "db-2"]}}},
                {"name": "cluster", "type": "eks", "connectorRef": {"kind": "CloudProvider", "name": "aws"},
                 "parameters": {"clusterName": "eks-1"}},
                {"name": "vms", "type": "ec2", "connectorRef": {"kind": "CloudProvider", "name": "aws"},
                 "parameters": {"selector": {"tags": {"chaos": "yes"}}}},
                {"name": "apps", "type": "workloads", "connectorRef": {"kind": "K8SCluster", "name": "here"},
                 "parameters": {"namespaces": ["NS"], "selector": {"matchLabels": {"tier": "app"}}}},
            ],
        },
    })
}

/// The resource keys a stopping AWS call acts on (write-ahead check).
fn stopping(line: &str, body: &str) -> Vec<String> {
    let form = |name: &str| -> Vec<String> {
        body.split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}.")))
            .map(|(_, v)| v.to_string())
            .collect()
    };
    if body.contains("Action=StopDBInstance") {
        return form("DBInstanceIdentifier")
            .into_iter()
            .map(|id| format!("instance:{id}"))
            .collect();
    }
    if body.contains("Action=StopInstances") {
        return form("InstanceId")
            .into_iter()
            .map(|id| format!("ec2:{id}"))
            .collect();
    }
    if line.starts_with("POST /clusters/") && line.contains("/update-config") {
        let desired = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["scalingConfig"]["desiredSize"].as_i64());
        if desired == Some(0)
            && let Some(ng) = line
                .split("/node-groups/")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
        {
            return vec![format!("nodegroup:{ng}")];
        }
    }
    vec![]
}

/// Holds every AWS call that stops a resource until the restore ConfigMap has been seen
/// holding that resource's record; a violation when it never is.
fn write_ahead_check(
    seen: &Arc<Mutex<BTreeSet<String>>>,
    violations: &Arc<Mutex<Vec<String>>>,
    verbose: bool,
) -> moto_server::Inspector {
    let (seen, violations) = (Arc::clone(seen), Arc::clone(violations));
    Arc::new(move |line, body| {
        let keys = stopping(&line, &body);
        let (seen, violations) = (Arc::clone(&seen), Arc::clone(&violations));
        Box::pin(async move {
            for key in keys {
                // The record is acknowledged before the runner acts; the watch may deliver it
                // a moment later.
                let t0 = Instant::now();
                while !seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&key)
                {
                    if t0.elapsed() > Duration::from_secs(10) {
                        let text = format!("{line} stops {key}, which has no record");
                        if verbose {
                            eprintln!("[chaos] VIOLATION: {text}");
                        }
                        violations
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(text);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    })
}

/// Adds to `seen` every live record the restore ConfigMap holds, as the API server shows it.
fn watch_records(w: &World, seen: Arc<Mutex<BTreeSet<String>>>) {
    let api: Api<ConfigMap> = Api::namespaced(w.client.clone(), &w.ns);
    let name = hibernator_api::naming::restore_config_map(PLAN);
    tokio::spawn(async move {
        // With backoff: while the API server restarts (or after its cluster is gone) every
        // attempt fails at once, and a loop without a pause would never yield.
        let stream = watcher(
            api,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let cm = match event {
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
                _ => continue,
            };
            let view = RestoreView::from_data(&cm.data.unwrap_or_default());
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for t in view.targets.values() {
                seen.extend(t.live.keys().cloned());
            }
        }
    });
}

impl<'a> Chaos<'a> {
    fn say(&self, text: impl AsRef<str>) {
        if self.opts.verbose {
            eprintln!(
                "[chaos {:>6.1}s] {}",
                self.run_started.elapsed().as_secs_f64(),
                text.as_ref()
            );
        }
    }

    fn violation(&self, text: String) {
        self.say(format!("VIOLATION: {text}"));
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    fn count(&mut self, kind: &'static str) {
        *self.report.faults.entry(kind).or_default() += 1;
    }

    async fn setup(w: &'a World, opts: ChaosOptions) -> Result<Chaos<'a>> {
        w.runners_in_cluster().await?;
        let deployments = BTreeMap::from([
            ("app-0".to_string(), 0),
            ("app-1".to_string(), 2),
            ("app-2".to_string(), 1),
            ("other".to_string(), 1),
        ]);
        for (name, replicas) in &deployments {
            let labels = if name == "other" {
                json!({})
            } else {
                json!({"tier": "app"})
            };
            w.apply(deployment(name, *replicas, labels)).await?;
        }
        w.estate(json!({
            "rds": ["db-1", "db-2"],
            "eks": {"eks-1": {"ng-a": [1, 2, 4], "ng-b": [0, 1, 2]}},
            "ec2": [
                {"name": "web-1", "tags": {"chaos": "yes"}},
                {"name": "web-2", "tags": {"chaos": "yes"}},
                {"name": "batch-1", "tags": {"chaos": "yes"}, "running": false},
                {"name": "bastion", "tags": {"role": "bastion"}},
            ],
        }))?;
        let ids: BTreeMap<String, String> =
            serde_json::from_value(estate_at(w.moto.endpoint(), &["ids"])?)?;
        w.cloud_provider("aws").await?;
        w.in_cluster("here").await?;
        let mut p = plan();
        p["spec"]["targets"][3]["parameters"]["namespaces"] = json!([w.ns]);
        w.apply(p).await?;

        let proxy = FaultProxy::start(w.moto.endpoint())?;
        let seen: Arc<Mutex<BTreeSet<String>>> = Default::default();
        let violations: Arc<Mutex<Vec<String>>> = Default::default();
        proxy.inspect(write_ahead_check(&seen, &violations, opts.verbose));
        watch_records(w, Arc::clone(&seen));

        let mut ctl_opts = ControllerOptions::at(CLOCK_START, CLOCK_SPEED);
        ctl_opts.aws_endpoint = Some(proxy.endpoint());
        let ctl = w.controller(ctl_opts.clone())?;
        ctl_opts.ports = Some(ctl.ports());
        let mut c = Chaos {
            w,
            rng: fastrand::Rng::with_seed(opts.seed),
            report: ChaosReport {
                seed: opts.seed,
                ..Default::default()
            },
            opts,
            proxy,
            ctl: Some(ctl),
            ctl_opts,
            ctl_started: Instant::now(),
            run_started: Instant::now(),
            restart_at: None,
            ids,
            baseline: Value::Null,
            deployments,
            seen,
            violations,
        };
        wait_for(
            Duration::from_secs(120),
            "the workloads to be ready",
            || c.deployments_ready(),
        )
        .await?;
        c.wait_plan("the plan to be ready (awake, suspended)", |p| {
            p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Suspended)
                && condition(p, "Ready").is_some_and(|(s, _)| s == "True")
        })
        .await?;
        c.baseline = c.w.snapshot()?;
        Ok(c)
    }

    async fn deployments_ready(&self) -> Option<()> {
        let api: Api<Deployment> = Api::namespaced(self.w.client.clone(), &self.w.ns);
        for (name, replicas) in &self.deployments {
            let d = api.get(name).await.ok()?;
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            (ready == *replicas).then_some(())?;
        }
        Some(())
    }

    async fn plan(&self) -> Result<HibernationPlan> {
        self.w.plan(PLAN).await
    }

    async fn wait_plan(
        &mut self,
        what: &str,
        pred: impl Fn(&HibernationPlan) -> bool,
    ) -> Result<HibernationPlan> {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.tend_controller().await?;
            if let Ok(p) = self.plan().await
                && pred(&p)
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                let status = self.plan().await.ok().and_then(|p| p.status);
                anyhow::bail!(
                    "timed out after {SETTLE:?} waiting for {what}; status: {}\n{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default(),
                    self.ctl.as_ref().map(|c| c.log()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Restarts a killed controller when its time has come (at the same address, the schedule
    /// clock going on).
    async fn tend_controller(&mut self) -> Result<()> {
        if self.ctl.is_none() && self.restart_at.is_none_or(|t| Instant::now() >= t) {
            let mut opts = self.ctl_opts.clone();
            opts.clock_start = sim_now(&self.ctl_opts, self.ctl_started);
            opts.clock_speed = CLOCK_SPEED;
            let ctl = self.w.controller(opts.clone())?;
            self.ctl_opts.clock_start = opts.clock_start;
            self.ctl_started = Instant::now();
            self.ctl = Some(ctl);
            self.restart_at = None;
            self.say("controller restarted");
        }
        Ok(())
    }

    async fn annotate(&self, key: &str, value: &str) -> Result<()> {
        self.w
            .patch_plan(PLAN, json!({"metadata": {"annotations": {key: value}}}))
            .await
    }

    async fn night(&mut self, night: u32) -> Result<()> {
        self.say(format!("night {night}: hibernating"));
        // What the restore data holds now is what may be stopped tonight.
        {
            let live: BTreeSet<String> = RestoreView::from_data(&self.w.restore_data(PLAN).await?)
                .targets
                .values()
                .flat_map(|t| t.live.keys().cloned())
                .collect();
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = live;
        }
        self.w
            .patch_plan(PLAN, json!({"spec": {"suspend": false}}))
            .await?;
        self.operation(Operation::Hibernate).await?;
        if self.rng.u8(0..10) < 3 {
            self.start_by_hand().await?;
        }
        self.say(format!("night {night}: waking up"));
        self.w
            .patch_plan(PLAN, json!({"spec": {"suspend": true}}))
            .await?;
        self.operation(Operation::WakeUp).await?;
        let not_back = self.check_morning(night, "in the morning").await?;
        self.repair(night, not_back).await?;
        self.report.nights = night;
        Ok(())
    }

    /// Waits for an operation to settle while injecting faults at random moments.
    async fn operation(&mut self, op: Operation) -> Result<()> {
        let start = Instant::now();
        let n = self.rng.usize(0..=2);
        let mut due: Vec<(Duration, usize)> = (0..n)
            .map(|_| {
                let kind = self.rng.usize(0..FAULT_KINDS.len() - 1);
                // Runners live a second or two after their Job is created: faults aimed at
                // them come early.
                let within = match FAULT_KINDS[kind] {
                    "runner pod SIGKILL" | "runner Job deleted" => 1500,
                    _ => 6000,
                };
                (Duration::from_millis(self.rng.u64(0..within)), kind)
            })
            .collect();
        due.sort();
        let deadline = start + SETTLE;
        loop {
            self.tend_controller().await?;
            while let Some((at, kind)) = due.first().copied() {
                if start.elapsed() < at {
                    break;
                }
                due.remove(0);
                self.inject(kind, op).await?;
            }
            if due.is_empty() && self.ctl.is_some() && self.settled(op).await {
                break;
            }
            if Instant::now() > deadline {
                let status = self.plan().await.ok().and_then(|p| p.status);
                self.violation(format!(
                    "{op} did not settle within {SETTLE:?}: {}",
                    serde_json::to_string(&status).unwrap_or_default()
                ));
                if self.opts.verbose
                    && let Some(c) = &self.ctl
                {
                    let log = c.log();
                    let tail: Vec<&str> = log.lines().rev().take(60).collect();
                    eprintln!(
                        "controller log (end):\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.proxy.clear();
        Ok(())
    }

    /// The operation ran as far as it will: finished, or stopped and waiting for a person.
    async fn settled(&self, op: Operation) -> bool {
        let Ok(p) = self.plan().await else {
            return false;
        };
        let Some(s) = p.status.as_ref() else {
            return false;
        };
        let Some(cycle) = &s.current_cycle else {
            return false;
        };
        let stalled = condition(&p, "Stalled").is_some_and(|(st, _)| st == "True");
        cycle.operation == op
            && s.observed_generation == p.metadata.generation
            && !s
                .targets
                .iter()
                .any(|t| t.state == hibernator_api::TargetState::Running)
            && s.retry.as_ref().is_none_or(|r| r.next_at.is_none())
            && (cycle.finished_at.is_some() || stalled)
    }

    async fn inject(&mut self, kind: usize, op: Operation) -> Result<()> {
        match FAULT_KINDS[kind] {
            "controller SIGKILL" => self.kill_controller(),
            "runner pod SIGKILL" => self.kill_runner_pod().await,
            "runner Job deleted" => self.delete_runner_job(op).await,
            "restore ConfigMap deleted" => {
                let cms: Api<ConfigMap> = Api::namespaced(self.w.client.clone(), &self.w.ns);
                let name = hibernator_api::naming::restore_config_map(PLAN);
                if cms.delete(&name, &DeleteParams::default()).await.is_ok() {
                    self.count("restore ConfigMap deleted");
                    self.say("deleted the restore ConfigMap");
                }
            }
            kind @ ("AWS 5xx" | "AWS throttling" | "AWS latency") => self.aws_fault(kind, op),
            "API server restart" => {
                self.say("restarting kube-apiserver");
                let away = self.w.cluster.restart_api_server().await?;
                self.count("API server restart");
                self.say(format!(
                    "kube-apiserver back after {:.1} s",
                    away.as_secs_f64()
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn kill_controller(&mut self) {
        if let Some(mut c) = self.ctl.take() {
            c.kill();
            self.restart_at = Some(Instant::now() + Duration::from_millis(self.rng.u64(500..3000)));
            self.count("controller SIGKILL");
            self.say("killed the controller");
        }
    }

    async fn kill_runner_pod(&mut self) {
        let (w, ns) = (self.w, self.w.ns.clone());
        // Runners live a second or two: wait for one that has not ended (it may not have
        // reported Running yet).
        let pods: Api<Pod> = Api::namespaced(w.client.clone(), &ns);
        let running = wait_for(Duration::from_secs(8), "a running runner pod", || async {
            let names: Vec<String> = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=hibernator-runner"))
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Pending" | "Running")
                        )
                })
                .filter_map(|p| p.metadata.name)
                .collect();
            (!names.is_empty()).then_some(names)
        })
        .await
        .unwrap_or_default();
        if !running.is_empty() {
            let name = &running[self.rng.usize(0..running.len())];
            let _ = pods
                .delete(name, &DeleteParams::default().grace_period(0))
                .await;
            self.count("runner pod SIGKILL");
            self.say(format!("killed runner pod {name}"));
        } else {
            self.say("no runner pod ran to be killed");
        }
    }

    async fn delete_runner_job(&mut self, op: Operation) {
        let (w, ns) = (self.w, self.w.ns.clone());
        let jobs: Api<Job> = Api::namespaced(w.client.clone(), &ns);
        let selector = format!(
            "hibernator.ardikasaputro.io/plan={PLAN},hibernator.ardikasaputro.io/operation={}",
            op.as_str()
        );
        let active = wait_for(Duration::from_secs(8), "an active runner Job", || async {
            let names: Vec<String> = jobs
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0)
                .filter_map(|j| j.metadata.name)
                .collect();
            (!names.is_empty()).then_some(names)
        })
        .await
        .unwrap_or_default();
        if !active.is_empty() {
            let name = &active[self.rng.usize(0..active.len())];
            let _ = jobs.delete(name, &DeleteParams::background()).await;
            self.count("runner Job deleted");
            self.say(format!("deleted runner Job {name}"));
        } else {
            self.say("no runner Job ran to be deleted");
        }
    }

    /// An AWS error or delay on the calls of the operation, a few times.
    fn aws_fault(&mut self, kind: &'static str, op: Operation) {
        let (rds, ec2, eks) = match op {
            Operation::Hibernate => (
                "Action=StopDBInstance",
                "Action=StopInstances",
                "/update-config",
            ),
            Operation::WakeUp => (
                "Action=StartDBInstance",
                "Action=StartInstances",
                "/update-config",
            ),
        };
        let (matcher, action) = match (self.rng.usize(0..3), kind) {
            (0, "AWS 5xx") => (
                rds,
                FaultAction::query_error(500, "InternalFailure", "injected"),
            ),
            (1, "AWS 5xx") => (
                ec2,
                FaultAction::ec2_error(500, "InternalError", "injected"),
            ),
            (_, "AWS 5xx") => (
                eks,
                FaultAction::json_error(500, "ServerException", "injected"),
            ),
            (0, "AWS throttling") => (
                rds,
                FaultAction::query_error(400, "Throttling", "Rate exceeded"),
            ),
            (1, "AWS throttling") => (
                ec2,
                FaultAction::ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."),
            ),
            (_, "AWS throttling") => (
                eks,
                FaultAction::json_error(429, "ThrottlingException", "Rate exceeded"),
            ),
            (0, _) => (
                rds,
                FaultAction::Delay(Duration::from_millis(self.rng.u64(500..3000))),
            ),
            (1, _) => (
                ec2,
                FaultAction::Delay(Duration::from_millis(self.rng.u64(500..3000))),
            ),
            (_, _) => (
                eks,
                FaultAction::Delay(Duration::from_millis(self.rng.u64(500..3000))),
            ),
        };
        let times = self.rng.u32(1..=4);
        self.proxy.add(Fault::new(&[matcher], action).times(times));
        self.count(kind);
        self.say(format!("{kind} on {matcher}, {times} time(s)"));
    }

    /// Someone starts a sleeping resource "just for a minute" and forgets it.
    async fn start_by_hand(&mut self) -> Result<()> {
        let choice = self.rng.usize(0..3);
        match choice {
            0 => {
                estate_at(
                    self.w.moto.endpoint(),
                    &["set", &json!({"rds": {"db-2": "available"}}).to_string()],
                )?;
                self.say("started db-2 by hand");
            }
            1 => {
                estate_at(
                    self.w.moto.endpoint(),
                    &["set", &json!({"ec2": {"web-1": "running"}}).to_string()],
                )?;
                self.say("started web-1 by hand");
            }
            _ => {
                let api: Api<Deployment> = Api::namespaced(self.w.client.clone(), &self.w.ns);
                api.patch(
                    "app-1",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"replicas": 2}})),
                )
                .await?;
                self.say("scaled app-1 up by hand");
            }
        }
        self.count("started by hand at night");
        Ok(())
    }

    /// Every resource and its record key, with whether it is as in the baseline now.
    async fn resources(&self) -> Result<Vec<(String, bool, bool)>> {
        let now = self.w.snapshot()?;
        let mut out = Vec::new();
        let base = &self.baseline;
        for (id, status) in base["rds"].as_object().into_iter().flatten() {
            out.push((
                format!("instance:{id}"),
                now["rds"][id] == *status,
                status == "available",
            ));
        }
        for (name, status) in base["ec2"].as_object().into_iter().flatten() {
            if name == "bastion" {
                continue;
            }
            let id = self.ids.get(name).cloned().unwrap_or_default();
            out.push((
                format!("ec2:{id}"),
                now["ec2"][name] == *status,
                status == "running",
            ));
        }
        for (key, sizes) in base["nodegroups"].as_object().into_iter().flatten() {
            let ng = key.split('/').nth(1).unwrap_or_default();
            out.push((
                format!("nodegroup:{ng}"),
                now["nodegroups"][key] == *sizes,
                sizes[1].as_i64().unwrap_or(0) > 0,
            ));
        }
        let api: Api<Deployment> = Api::namespaced(self.w.client.clone(), &self.w.ns);
        for (name, replicas) in &self.deployments {
            let current = api
                .get(name)
                .await?
                .spec
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            out.push((
                format!("deployment:{}/{name}", self.w.ns),
                current == *replicas,
                *replicas > 0 && name != "other",
            ));
        }
        // Untouched: the bastion and the Deployment no plan selects.
        if now["ec2"]["bastion"] != base["ec2"]["bastion"] {
            self.violation("the bastion (no plan names it) changed".into());
        }
        Ok(out)
    }

    /// The invariant; returns the keys not back.
    async fn check_morning(&mut self, night: u32, when: &str) -> Result<Vec<String>> {
        let resources = self.resources().await?;
        let p = self.plan().await?;
        let restored = condition(&p, "Restored");
        let ready = condition(&p, "Ready");
        let message = p
            .status
            .as_ref()
            .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Restored"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let not_back: Vec<String> = resources
            .iter()
            .filter(|(_, back, _)| !back)
            .map(|(k, _, _)| k.clone())
            .collect();
        if when == "in the morning" {
            let slept = resources.iter().filter(|(_, _, awake)| *awake).count() as u32;
            self.report.resources_asleep += slept;
            self.report.resources_restored += resources
                .iter()
                .filter(|(_, back, awake)| *awake && *back)
                .count() as u32;
        }
        let is_false = restored.as_ref().is_some_and(|(s, _)| s == "False");
        if !not_back.is_empty() {
            if !is_false {
                self.violation(format!(
                    "night {night} {when}: {} not back, yet Restored={restored:?}",
                    not_back.join(", ")
                ));
            }
            if ready.as_ref().is_some_and(|(s, _)| s == "True") {
                self.violation(format!(
                    "night {night} {when}: Ready=True with {} asleep",
                    not_back.join(", ")
                ));
            }
            for key in &not_back {
                if !message.contains(key.as_str()) {
                    self.violation(format!(
                        "night {night} {when}: {key} is not back and Restored does not name it: {message}"
                    ));
                }
            }
        }
        if is_false {
            // Exactly: what the wake-up reports as not found or not restored is not back. (Lost
            // records are named whatever the resource's state: nobody can know it.)
            let wake_part = message
                .split(". ")
                .filter(|part| part.starts_with("not found") || part.starts_with("not restored"))
                .collect::<Vec<_>>()
                .join(". ");
            for (key, back, _) in &resources {
                if *back && wake_part.contains(key.as_str()) {
                    self.violation(format!(
                        "night {night} {when}: Restored names {key} as not restored, but it is back: {message}"
                    ));
                }
            }
        }
        self.say(format!(
            "night {night} {when}: not back [{}], Restored={restored:?}, Ready={ready:?}",
            not_back.join(", ")
        ));
        Ok(not_back)
    }

    /// Acts as the person who was told: a retry, then by hand, then an acknowledgement.
    async fn repair(&mut self, night: u32, not_back: Vec<String>) -> Result<()> {
        let p = self.plan().await?;
        let restored_false = condition(&p, "Restored").is_some_and(|(s, _)| s == "False");
        let ready = condition(&p, "Ready").is_some_and(|(s, _)| s == "True");
        if restored_false {
            self.report.mornings_reported += 1;
        }
        if not_back.is_empty() && ready {
            return Ok(());
        }
        let mut not_back = not_back;
        if !ready || !not_back.is_empty() {
            self.annotate(RETRY_ANNOTATION, &format!("chaos-{night}"))
                .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let deadline = Instant::now() + SETTLE;
            while !self.settled(Operation::WakeUp).await {
                self.tend_controller().await?;
                if Instant::now() > deadline {
                    self.violation(format!("night {night}: the retry did not settle"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            not_back = self.check_morning(night, "after a retry").await?;
        }
        if !not_back.is_empty() {
            self.report.restored_by_hand += not_back.len() as u32;
            let mut state = json!({"rds": {}, "ec2": {}, "nodegroups": {}});
            for (id, status) in self.baseline["rds"].as_object().into_iter().flatten() {
                state["rds"][id] = status.clone();
            }
            for (name, status) in self.baseline["ec2"].as_object().into_iter().flatten() {
                state["ec2"][name] = status.clone();
            }
            for (key, sizes) in self.baseline["nodegroups"]
                .as_object()
                .into_iter()
                .flatten()
            {
                state["nodegroups"][key] = sizes.clone();
            }
            estate_at(self.w.moto.endpoint(), &["set", &state.to_string()])?;
            let api: Api<Deployment> = Api::namespaced(self.w.client.clone(), &self.w.ns);
            for (name, replicas) in &self.deployments {
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
                )
                .await?;
            }
            self.say(format!("restored by hand: {}", not_back.join(", ")));
        }
        let p = self.plan().await?;
        if condition(&p, "Restored").is_some_and(|(s, _)| s == "False") {
            self.annotate(RESTORE_ACK_ANNOTATION, &format!("chaos-{night}"))
                .await?;
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            self.tend_controller().await?;
            let p = self.plan().await?;
            if condition(&p, "Ready").is_some_and(|(s, _)| s == "True") {
                break;
            }
            if Instant::now() > deadline {
                self.violation(format!(
                    "night {night}: not Ready after a retry, a repair by hand and an acknowledgement: {:?}",
                    p.status.map(|s| s.conditions)
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_for(
            Duration::from_secs(120),
            "the workloads to be ready again",
            || self.deployments_ready(),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::stopping;

    #[test]
    fn stopping_calls_name_their_records() {
        assert_eq!(
            stopping(
                "POST /",
                "Action=StopDBInstance&Version=2014-10-31&DBInstanceIdentifier=db-1"
            ),
            ["instance:db-1"]
        );
        assert_eq!(
            stopping(
                "POST /",
                "Action=StopInstances&Version=2016-11-15&InstanceId.1=i-a&InstanceId.2=i-b"
            ),
            ["ec2:i-a", "ec2:i-b"]
        );
        assert_eq!(
            stopping(
                "POST /clusters/eks-1/node-groups/ng-a/update-config",
                r#"{"scalingConfig":{"minSize":0,"desiredSize":0,"maxSize":4}}"#
            ),
            ["nodegroup:ng-a"]
        );
        assert!(
            stopping(
                "POST /clusters/eks-1/node-groups/ng-a/update-config",
                r#"{"scalingConfig":{"minSize":1,"desiredSize":2,"maxSize":4}}"#
            )
            .is_empty()
        );
        assert!(stopping("POST /", "Action=StartDBInstance&DBInstanceIdentifier=db-1").is_empty());
    }
}
