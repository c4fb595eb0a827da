//! `cargo xtask bench`: the performance targets of docs/architecture.md ("Scaling"), measured
//! and printed as a table (a benchmark, not a test: nothing here fails on a slow machine).
//! Every scenario runs `--runs` times and each run is a column, so noise is visible.
//!
//! 1. Scale (a cluster without a kubelet): N plans x 10 targets on one controller, awake and
//!    idle: time until every plan is reconciled and the CPU the controller, the API server and
//!    etcd used meanwhile; resident memory (anonymous and file-backed apart); CPU used while
//!    idle, with the reconciles in that time and the CPU of each (`--resync-seconds` shortens
//!    the controller's safety net so that they come within the idle time).
//! 2. A shared boundary (the same cluster): M plans x 10 targets reach 20:00 together:
//!    the lag from the boundary to each plan's first runner Job, from the API server's audit
//!    log (first, median, p99, last).
//! 3. A night (a cluster with the process kubelet, moto): K plans x 10 targets (8 noop, one
//!    ec2 instance in moto, one Deployment) hibernate and wake up through real runner pods:
//!    every API write the controller's ServiceAccount made per target per cycle, by kind, from
//!    the audit log; the boundary lag from the controller's metrics; the peak resident memory
//!    of each runner process (sampled from /proc), by target type. Everything must be back as
//!    it was, or the run fails.
//! 4. The runner: time from process start to its first AWS request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use hibernator_api::plan::HibernationPlan;
use hibernator_e2e::world::{
    Binaries, ControllerOptions, RUNNER_IMAGE, SLEEPER, World, binaries, free_port, http_get,
    noop_plan, wait_for,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_testbed::{ClusterOptions, Image, TestCluster};
use serde_json::json;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Plans in the scale run (10 targets each); a comma-separated list runs each size, 0
    /// skips it.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    plans: Vec<usize>,
    /// Plans sharing one schedule boundary (10 targets each; 0 skips it).
    #[arg(long, default_value_t = 1000)]
    boundary_plans: usize,
    /// Plans in the night run (10 targets each; 0 skips it).
    #[arg(long, default_value_t = 5)]
    night_plans: usize,
    /// Seconds of idle CPU measured after the scale run settled (900 covers one safety-net
    /// reconcile of every plan, which comes every 12 to 15 minutes).
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// The controller's `--resync-seconds` in the scale run (its safety-net interval; default
    /// 900). A shorter one makes every plan come back within the idle time, so that the CPU
    /// of one such reconcile can be measured without waiting a quarter of an hour.
    #[arg(long)]
    resync_seconds: Option<u64>,
    /// How often each scenario runs; each run is a column of the table.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Use the release build of the controller and runner (what images ship).
    #[arg(long)]
    release: bool,
    /// Write the controller's API writes of each night run to this file, one JSON line each
    /// (time, verb, object, response code, body), to see what a cycle writes and why.
    #[arg(long)]
    night_writes: Option<PathBuf>,
}

/// Schedule seconds per real second in the night run.
const NIGHT_SPEED: f64 = 600.0;

/// Thursday 26 November 2026, 20:00 New York: the boundary of the boundary and night runs
/// (the plans wake up on Friday at 06:00).
const THURSDAY_2000: &str = "2026-11-27T01:00:00Z";

/// The table: one row per measure, one value per run.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<String>, String)>,
}

impl Table {
    fn put(&mut self, run: usize, measure: impl Into<String>, value: String, target: &str) {
        let measure = measure.into();
        let i = match self.rows.iter().position(|r| r.0 == measure) {
            Some(i) => i,
            None => {
                self.rows.push((measure, Vec::new(), target.to_string()));
                self.rows.len() - 1
            }
        };
        // Printed as it is measured too: a long run that is stopped still tells.
        eprintln!("    {}: {value}", self.rows[i].0.trim());
        let values = &mut self.rows[i].1;
        if values.len() <= run {
            values.resize(run + 1, "-".into());
        }
        values[run] = value;
    }

    fn print(&self, runs: usize) {
        print!("\n{:<62}", "MEASURE");
        for r in 0..runs {
            print!(" {:>16}", format!("run {}", r + 1));
        }
        println!("  TARGET");
        for (m, values, target) in &self.rows {
            print!("{m:<62}");
            for r in 0..runs {
                print!(" {:>16}", values.get(r).map(String::as_str).unwrap_or("-"));
            }
            println!("  {target}");
        }
    }
}

/// Runs the benchmarks and prints the table.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let table = runtime.block_on(bench(&args))?;
    table.print(args.runs);
    Ok(())
}

async fn bench(args: &Args) -> Result<Table> {
    let mut table = Table::default();
    let b = build(args.release).await?;
    let sizes: Vec<usize> = args.plans.iter().copied().filter(|n| *n > 0).collect();
    if !sizes.is_empty() || args.boundary_plans > 0 {
        eprintln!(
            "==> starting a test cluster without a kubelet (Jobs create pods that stay pending)"
        );
        let cluster = TestCluster::start(ClusterOptions::default().without_kubelet()).await?;
        install_crds(&cluster).await?;
        for run in 0..args.runs {
            for &plans in &sizes {
                scale(&cluster, &b, plans, args, run, &mut table).await?;
            }
            if args.boundary_plans > 0 {
                boundary(&cluster, &b, args.boundary_plans, run, &mut table).await?;
            }
        }
    }
    if args.night_plans > 0 {
        for run in 0..args.runs {
            night(&b, args, run, &mut table).await?;
        }
    }
    eprintln!("==> runner start-up");
    for run in 0..args.runs {
        let mut samples = Vec::new();
        for _ in 0..11 {
            samples.push(runner_first_request(&b.runner)?);
        }
        samples.sort();
        table.put(
            run,
            "runner: process start to first AWS request (median of 11)",
            format!("{:.0} ms", samples[5].as_secs_f64() * 1000.0),
            "<= 50 ms (release)",
        );
    }
    Ok(table)
}

/// The workspace's binaries, with the release controller and runner when asked.
async fn build(release: bool) -> Result<Binaries> {
    eprintln!("==> building binaries and tools");
    let debug = tokio::task::spawn_blocking(|| binaries().cloned())
        .await?
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    if !release {
        return Ok(debug);
    }
    eprintln!("==> building the release controller and runner");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "hibernator-controller"])
        .args(["-p", "hibernator-runner"])
        .current_dir(crate::root())
        .status()?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
        .join("release");
    Ok(Binaries {
        controller: dir.join("hibernator-controller"),
        runner: dir.join("hibernator-runner"),
        ..debug
    })
}

async fn install_crds(cluster: &TestCluster) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client()?);
    for (_, crd) in hibernator_api::crds::all() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    // The API server serves a new CRD's resources a moment after it is established.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// The ten noop targets of the scale and boundary plans.
fn noop_targets() -> Vec<(String, serde_json::Value)> {
    (0..10).map(|i| (format!("t{i}"), json!({}))).collect()
}

/// Creates `count` plans `<prefix>-<i>` of ten noop targets in `ns`.
async fn create_plans(
    client: &kube::Client,
    ns: &str,
    prefix: &str,
    count: usize,
    extra: serde_json::Value,
) -> Result<()> {
    let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), ns);
    let targets = noop_targets();
    let refs: Vec<(&str, serde_json::Value)> = targets
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let plans = plans.clone();
            let name = format!("{prefix}-{i}");
            let mut plan = noop_plan(&name, &refs, extra.clone());
            plan["metadata"]["namespace"] = json!(ns);
            async move {
                plans
                    .patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&plan))
                    .await
                    .with_context(|| format!("failed to create plan {name}"))
            }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    eprintln!(
        "    {count} plans created in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Counts the plans of `ns` whose status says their generation was reconciled, as a watch
/// sees them (a list of ten thousand plans every few seconds would load the API server that
/// is being measured).
fn count_reconciled(client: &kube::Client, ns: &str) -> tokio::sync::watch::Receiver<usize> {
    let (tx, rx) = tokio::sync::watch::channel(0);
    let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut done = HashSet::new();
        // With a backoff, and ending with its last reader: a watch of a cluster that was
        // stopped fails at once, and retried without pause it kept a core busy through the
        // scenarios that followed.
        let mut events = std::pin::pin!(
            watcher(plans, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                event = events.next() => event,
            };
            let Some(event) = event else { return };
            let Ok(p) = event else { continue };
            let reconciled = p.status.as_ref().and_then(|s| s.observed_generation)
                == p.metadata.generation
                && p.status.as_ref().is_some_and(|s| s.phase.is_some());
            let name = p.metadata.name.unwrap_or_default();
            if reconciled {
                done.insert(name);
            } else {
                done.remove(&name);
            }
            if tx.send(done.len()).is_err() {
                return;
            }
        }
    });
    rx
}

async fn wait_count(
    rx: &mut tokio::sync::watch::Receiver<usize>,
    want: usize,
    limit: Duration,
) -> Result<()> {
    let reached = matches!(
        tokio::time::timeout(limit, rx.wait_for(|n| *n >= want)).await,
        Ok(Ok(_))
    );
    if !reached {
        bail!(
            "only {} of {want} plans reconciled after {limit:?}",
            *rx.borrow()
        );
    }
    Ok(())
}

/// 1. N plans on one controller.
async fn scale(
    cluster: &TestCluster,
    b: &Binaries,
    plans: usize,
    args: &Args,
    run: usize,
    table: &mut Table,
) -> Result<()> {
    let idle_seconds = args.idle_seconds;
    let client = cluster.client()?;
    let ns = cluster
        .create_namespace(&format!("bench-scale-{plans}"))
        .await?;
    eprintln!(
        "==> run {}: {plans} plans x 10 targets on one controller",
        run + 1
    );
    create_plans(&client, &ns, "plan", plans, json!({})).await?;
    let mut reconciled = count_reconciled(&client, &ns);
    // Wednesday noon New York: every plan is awake.
    let cluster_before = cluster_cpu(cluster);
    let started = Instant::now();
    let resync: Vec<String> = args
        .resync_seconds
        .iter()
        .flat_map(|s| ["--resync-seconds".to_string(), s.to_string()])
        .collect();
    let (mut controller, http_port) = spawn_controller(
        &b.controller,
        cluster.kubeconfig_path(),
        &ns,
        "2026-11-25T17:00:00Z",
        1.0,
        &resync,
    )?;
    wait_count(&mut reconciled, plans, Duration::from_secs(900)).await?;
    let took = started.elapsed().as_secs_f64();
    let cluster_after = cluster_cpu(cluster);
    let controller_cpu = cpu_seconds(controller.id())?;
    table.put(
        run,
        format!("{plans} plans x 10 targets: all reconciled after start"),
        format!("{took:.1} s"),
        "<= 60 s (10,000 plans)",
    );
    table.put(
        run,
        format!("  CPU in that time: controller / API server / etcd, {plans} plans"),
        format!(
            "{controller_cpu:.0} / {:.0} / {:.0} s",
            cluster_after.0 - cluster_before.0,
            cluster_after.1 - cluster_before.1
        ),
        "(2 cores)",
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = controller.id();
    let reconciles = || async {
        let text = http_get(http_port, "/metrics").await.unwrap_or_default();
        counter(&text, "hibernator_reconciles_total{result=\"ok\"}").unwrap_or(0.0)
    };
    let reconciles_before = reconciles().await;
    let cpu_before = cpu_seconds(pid)?;
    let idle = Duration::from_secs(idle_seconds);
    tokio::time::sleep(idle).await;
    let cpu_idle = cpu_seconds(pid)? - cpu_before;
    let idle_reconciles = reconciles().await - reconciles_before;
    table.put(
        run,
        format!("  controller resident memory (RSS), {plans} plans"),
        format!("{:.1} MiB", rss_mib(pid, "VmRSS")?),
        if plans <= 1000 {
            "<= 32 MiB (1,000)"
        } else {
            "<= 160 MiB (10,000)"
        },
    );
    table.put(
        run,
        format!("    of which heap and other anonymous memory, {plans} plans"),
        format!("{:.1} MiB", rss_mib(pid, "RssAnon")?),
        "",
    );
    table.put(
        run,
        format!("    of which the executable and libraries (file-backed), {plans} plans"),
        format!("{:.1} MiB", rss_mib(pid, "RssFile")?),
        "",
    );
    table.put(
        run,
        format!("  controller CPU while idle ({idle_seconds} s), {plans} plans"),
        format!("{:.2} %", cpu_idle / idle.as_secs_f64() * 100.0),
        "<= 1 % of a core",
    );
    table.put(
        run,
        format!("    reconciles in that time / CPU per reconcile, {plans} plans"),
        if idle_reconciles > 0.0 {
            format!(
                "{idle_reconciles:.0} / {:.2} ms",
                cpu_idle / idle_reconciles * 1000.0
            )
        } else {
            "0 / -".into()
        },
        "",
    );
    let _ = controller.kill();
    let _ = controller.wait();
    delete_namespace(&client, &ns).await;
    Ok(())
}

/// 2. M plans on one boundary: boundary to each plan's first runner Job.
async fn boundary(
    cluster: &TestCluster,
    b: &Binaries,
    plans: usize,
    run: usize,
    table: &mut Table,
) -> Result<()> {
    let client = cluster.client()?;
    let ns = cluster.create_namespace("bench-boundary").await?;
    eprintln!(
        "==> run {}: {plans} plans x 10 targets on one boundary",
        run + 1
    );
    create_plans(
        &client,
        &ns,
        "edge",
        plans,
        json!({"execution": {"strategy": {"type": "Parallel", "maxConcurrency": STEP_JOBS}}}),
    )
    .await?;
    let mut reconciled = count_reconciled(&client, &ns);
    // The controller starts early enough to have looked at every plan before the boundary
    // (real time: the clock runs at 1x).
    let lead = SignedDuration::from_secs(30 + (plans / 100) as i64);
    let boundary: Timestamp = THURSDAY_2000.parse()?;
    let audit_before = cluster.audit_events()?.len();
    let spawned_at = Timestamp::now();
    let (mut controller, _) = spawn_controller(
        &b.controller,
        cluster.kubeconfig_path(),
        &ns,
        &(boundary - lead).to_string(),
        1.0,
        &[],
    )?;
    // Where the boundary falls on the wall clock. The controller's clock starts a moment
    // after the spawn, so this errs early: the lags below are upper bounds.
    let boundary_at = spawned_at + lead;
    wait_count(&mut reconciled, plans, lead.unsigned_abs()).await?;
    // Every plan's first step started (maxConcurrency Jobs) and said so in its status (no
    // plan is starved by the priority of first Jobs), or three minutes.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let plan_api: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
    let plan_label = hibernator_api::naming::labels::PLAN;
    let deadline = Instant::now() + lead.unsigned_abs() + Duration::from_secs(180);
    let mut hibernating = 0;
    loop {
        let list = jobs
            .list_metadata(&kube::api::ListParams::default())
            .await?;
        let mut per_plan: HashMap<String, usize> = HashMap::new();
        for j in &list.items {
            if let Some(p) = j.metadata.labels.as_ref().and_then(|l| l.get(plan_label)) {
                *per_plan.entry(p.clone()).or_default() += 1;
            }
        }
        let started = per_plan.values().filter(|n| **n >= STEP_JOBS).count();
        if started >= plans {
            hibernating = plan_api
                .list(&kube::api::ListParams::default())
                .await?
                .items
                .iter()
                .filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase)
                        == Some(hibernator_api::plan::Phase::Hibernating)
                })
                .count();
        }
        if hibernating >= plans || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = controller.kill();
    let _ = controller.wait();
    let mut created: HashMap<String, Vec<Timestamp>> = HashMap::new();
    let events: Vec<_> = cluster
        .audit_events()?
        .into_iter()
        .skip(audit_before)
        .collect();
    for e in &events {
        let job_created = e.verb == "create"
            && e.response_status.as_ref().and_then(|s| s.code) == Some(201)
            && e.object_ref.as_ref().is_some_and(|r| {
                r.resource.as_deref() == Some("jobs") && r.namespace.as_deref() == Some(&ns)
            });
        if !job_created {
            continue;
        }
        let plan = e
            .request_object
            .as_ref()
            .and_then(|o| o["metadata"]["labels"][plan_label].as_str())
            .map(str::to_string);
        let at = e
            .request_received_timestamp
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let (Some(plan), Some(at)) = (plan, at) {
            created.entry(plan).or_default().push(at);
        }
    }
    for times in created.values_mut() {
        times.sort();
    }
    let first: HashMap<&String, Timestamp> = created.iter().map(|(p, t)| (p, t[0])).collect();
    let last_step_job = created
        .values()
        .filter_map(|t| t.get(STEP_JOBS - 1))
        .max()
        .map(|t| t.duration_since(boundary_at).as_secs_f64());
    let stepped = created.values().filter(|t| t.len() >= STEP_JOBS).count();
    // The API server's load while the first Jobs were made: every write from the boundary to
    // the last plan's first Job, the controller's (it runs as the admin here) and the Job
    // controller's (a pod per Job, and the Jobs' status).
    let last_first = first.values().max().copied();
    let (mut all_writes, mut ours, mut job_controller) = (0, 0, 0);
    for e in events.iter().filter(|e| e.is_write()) {
        let at = e
            .request_received_timestamp
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if at.is_none_or(|at| at < boundary_at || Some(at) > last_first) {
            continue;
        }
        all_writes += 1;
        match e.user.username.as_str() {
            "admin" => ours += 1,
            "system:serviceaccount:kube-system:job-controller" => job_controller += 1,
            _ => {}
        }
    }
    let mut lags: Vec<f64> = first
        .values()
        .map(|t| t.duration_since(boundary_at).as_secs_f64())
        .collect();
    lags.sort_by(f64::total_cmp);
    let title = format!("{plans} plans x 10 targets on one boundary");
    table.put(run, &title, format!("{} with a Job", lags.len()), "all");
    if !lags.is_empty() {
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
        table.put(
            run,
            "  boundary to the first plan's first runner Job",
            secs(lags[0]),
            "<= 1 s",
        );
        table.put(
            run,
            "  boundary to a plan's first runner Job: median",
            secs(at(0.5)),
            "",
        );
        table.put(
            run,
            "  boundary to a plan's first runner Job: p99",
            secs(at(0.99)),
            "",
        );
        table.put(
            run,
            "  boundary to the last plan's first runner Job",
            secs(lags[lags.len() - 1]),
            "<= 10 s",
        );
        table.put(
            run,
            "  API writes until then: all / controller / Job controller",
            format!("{all_writes} / {ours} / {job_controller}"),
            "",
        );
        table.put(
            run,
            "  plans with their first step's 5 Jobs / status Hibernating",
            format!("{stepped} / {hibernating}"),
            "all",
        );
        if let Some(s) = last_step_job {
            table.put(
                run,
                "  boundary to the last plan's fifth runner Job",
                secs(s),
                "",
            );
        }
    }
    // Not waited for: its hibernating plans carry the finalizer, and their wake-up cannot run
    // without a kubelet.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &Default::default()).await;
    Ok(())
}

/// Jobs a plan of the boundary run starts at once (`maxConcurrency`).
const STEP_JOBS: usize = 5;

fn secs(s: f64) -> String {
    format!("{s:.2} s")
}

/// Deletes `ns` and waits until it is gone (at most ten minutes), so that the API server is
/// not still deleting one run's plans while the next is measured.
async fn delete_namespace(client: &kube::Client, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &Default::default()).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        match api.get_opt(ns).await {
            Ok(None) => {
                eprintln!(
                    "    namespace {ns} deleted in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    eprintln!("    namespace {ns} still there after ten minutes");
}

/// The plan of the night run: eight noop targets, one ec2 instance, one Deployment.
fn night_plan(i: usize, ns: &str) -> serde_json::Value {
    let mut targets: Vec<serde_json::Value> = (0..8)
        .map(|t| json!({"name": format!("t{t}"), "type": "noop", "parameters": {}}))
        .collect();
    targets.push(json!({"name": "vms", "type": "ec2",
        "connectorRef": {"kind": "CloudProvider", "name": "aws"},
        "parameters": {"selector": {"tags": {"bench": format!("night-{i}")}}}}));
    targets.push(json!({"name": "apps", "type": "workloads",
        "connectorRef": {"kind": "K8SCluster", "name": "this-cluster"},
        "parameters": {"namespaces": [ns], "kinds": ["Deployment"],
                       "selector": {"matchLabels": {"app": format!("web-{i}")}}}}));
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": format!("night-{i}")},
        "spec": {
            "schedule": {"timezone": "America/New_York",
                         "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
            "execution": {"strategy": {"type": "Parallel", "maxConcurrency": 5}},
            // In-sleep checks (a Job per target every six hours by default) are not part of
            // the cycle measured here.
            "behavior": {"enforce": {"mode": "Off"}},
            "targets": targets,
        },
    })
}

/// 3. A night of K plans through real runner pods.
async fn night(b: &Binaries, args: &Args, run: usize, table: &mut Table) -> Result<()> {
    let plans = args.night_plans;
    eprintln!("==> run {}: a night of {plans} plans x 10 targets", run + 1);
    let w = World::alone("bench-night").await?;
    w.cluster.map_image(RUNNER_IMAGE, Image::new(&b.runner));
    w.runners_in_cluster().await?;
    w.cloud_provider("aws").await?;
    w.in_cluster("this-cluster").await?;
    let vms: Vec<_> = (0..plans)
        .map(|i| json!({"name": format!("vm-{i}"), "tags": {"bench": format!("night-{i}")}, "running": true}))
        .collect();
    let before = w.estate(json!({"ec2": vms}))?;
    for i in 0..plans {
        let app = format!("web-{i}");
        w.apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "labels": {"app": app}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "main", "image": SLEEPER, "args": ["3600"]}]}}},
        }))
        .await?;
        w.apply(night_plan(i, &w.ns)).await?;
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(w.client.clone(), &w.ns);
    let ready = || async {
        let list = deployments.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1))
            .then_some(())
    };
    wait_for(
        Duration::from_secs(120),
        "the Deployments to be ready",
        ready,
    )
    .await?;

    let sampler = RunnerSampler::start(&b.runner);
    // Twenty simulated minutes before the boundary: two real seconds to look at every plan.
    let mut reconciled = count_reconciled(&w.client, &w.ns);
    let opts = ControllerOptions {
        binary: Some(b.controller.clone()),
        ..ControllerOptions::at("2026-11-27T00:40:00Z", NIGHT_SPEED)
    };
    let c = w.controller(opts)?;
    wait_count(&mut reconciled, plans, Duration::from_secs(60)).await?;
    // Writes from here on are the night's (the first reconcile's finalizers and status, and
    // the controller's own certificate, are not part of a cycle).
    let audit_before = w.cluster.audit_events()?.len();
    let started = Instant::now();
    let plan_api: Api<HibernationPlan> = Api::namespaced(w.client.clone(), &w.ns);
    let woken = || async {
        let list = plan_api.list(&Default::default()).await.ok()?;
        let done = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.current_cycle.as_ref())
                    .is_some_and(|c| {
                        c.operation == hibernator_api::Operation::WakeUp && c.finished_at.is_some()
                    })
            })
            .count();
        (done == plans).then_some(())
    };
    wait_for(Duration::from_secs(900), "every plan to wake up", woken)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n--- controller log:\n{}", c.log()))?;
    let wall = started.elapsed();
    // Every target had something to wake up (a Skipped one would mean that its hibernation
    // found nothing: the night would then measure less than it claims).
    for p in plan_api.list(&Default::default()).await?.items {
        let skipped: Vec<_> = p
            .status
            .iter()
            .flat_map(|s| &s.targets)
            .filter(|t| t.state != hibernator_api::TargetState::Completed)
            .map(|t| {
                format!(
                    "{} {:?}: {}",
                    t.name,
                    t.state,
                    t.message.clone().unwrap_or_default()
                )
            })
            .collect();
        if !skipped.is_empty() {
            bail!(
                "plan {} woke up without every target: {skipped:?}",
                p.name_any()
            );
        }
    }
    // Late writes of the cycle (the last Events, retired records) land within a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = c.metrics().await.unwrap_or_default();
    drop(c);
    let peaks = sampler.stop();
    wait_for(
        Duration::from_secs(120),
        "the Deployments to be ready again",
        ready,
    )
    .await?;
    let after = w.snapshot()?;
    if after["ec2"] != before["ec2"] {
        bail!("the night did not restore EC2 exactly:\nbefore {before}\nafter {after}");
    }

    let user = format!("system:serviceaccount:{}:hibernator-controller", w.ns);
    let events = w.cluster.audit_events()?;
    let writes: Vec<_> = events[audit_before..]
        .iter()
        .filter(|e| e.is_write() && e.user.username == user)
        .collect();
    if let Some(path) = &args.night_writes {
        dump_writes(path, run, &writes)?;
    }
    let targets = (plans * 10) as f64;
    let kind = |e: &kube_testbed::AuditEvent| {
        let r = e.object_ref.clone().unwrap_or_default();
        match r.subresource {
            Some(s) => format!("{}/{s}", r.resource.unwrap_or_default()),
            None => r.resource.unwrap_or_default(),
        }
    };
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for e in &writes {
        *by_kind
            .entry(format!("{} {}", e.verb, kind(e)))
            .or_default() += 1;
    }
    table.put(
        run,
        format!("night of {plans} plans x 10 targets: wall time (600x clock)"),
        format!("{:.0} s", wall.as_secs_f64()),
        "",
    );
    table.put(
        run,
        "  API writes per target per cycle, all kinds",
        format!("{:.2}", writes.len() as f64 / targets),
        "<= 5",
    );
    for (k, n) in &by_kind {
        table.put(
            run,
            format!("    {k}"),
            format!("{:.2}", *n as f64 / targets),
            "",
        );
    }
    let failed = writes
        .iter()
        .filter(|e| {
            e.response_status
                .as_ref()
                .and_then(|s| s.code)
                .is_some_and(|c| c >= 300)
        })
        .count();
    table.put(
        run,
        "    of which refused (conflicts, already exists)",
        format!("{:.2}", failed as f64 / targets),
        "",
    );
    if let Some((sum, count)) = histogram(&metrics, "hibernator_schedule_boundary_lag_seconds") {
        table.put(
            run,
            "  mean lag from boundary to operation start (real time)",
            format!("{:.2} s", sum / count.max(1.0) / NIGHT_SPEED),
            "< 1 s",
        );
    }
    for (type_, (n, peak)) in peaks {
        table.put(
            run,
            format!("  runner peak RSS, {type_} target ({n} processes, highest)"),
            format!("{peak:.1} MiB"),
            "<= 32 MiB",
        );
    }
    Ok(())
}

/// Appends `writes` to `path` as JSON lines (the first run truncates it).
fn dump_writes(path: &Path, run: usize, writes: &[&kube_testbed::AuditEvent]) -> Result<()> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(run > 0)
        .truncate(run == 0)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for e in writes {
        let line = json!({
            "run": run + 1,
            "at": e.request_received_timestamp,
            "verb": e.verb,
            "resource": e.object_ref.as_ref().map(|r| (&r.resource, &r.subresource)),
            "name": e.object_ref.as_ref().and_then(|r| r.name.as_ref()),
            "code": e.code(),
            "body": e.request_object,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// Samples the peak resident memory (`VmHWM`) of every process running the runner
/// executable, every 20 ms, by its target type.
struct RunnerSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<u32, (String, f64)>>,
}

impl RunnerSampler {
    fn start(runner: &Path) -> Self {
        // A pod's process keeps its PID through the kubelet's exec chain (unshare, sh, chroot,
        // setpriv, env, then the runner), so a PID is matched on every pass by its command
        // name, not once by its first executable.
        let name: String = runner
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: BTreeMap<u32, (String, f64)> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for pid in std::fs::read_dir("/proc")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if comm.trim_end() != name {
                        continue;
                    }
                    if let std::collections::btree_map::Entry::Vacant(slot) = seen.entry(pid) {
                        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                        let type_ = env
                            .split(|b| *b == 0)
                            .filter_map(|kv| std::str::from_utf8(kv).ok())
                            .find_map(|kv| {
                                kv.strip_prefix(hibernator_api::runner::env::TARGET_TYPE)?
                                    .strip_prefix('=')
                            })
                            .unwrap_or("unknown")
                            .to_string();
                        slot.insert((type_, 0.0));
                    }
                    if let Ok(hwm) = rss_mib(pid, "VmHWM")
                        && let Some(entry) = seen.get_mut(&pid)
                    {
                        entry.1 = entry.1.max(hwm);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Self { stop, thread }
    }

    /// Per target type: how many runner processes were seen, and the highest peak.
    fn stop(self) -> BTreeMap<String, (usize, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.thread.join().unwrap_or_default();
        let mut by_type: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for (type_, peak) in seen.into_values() {
            let e = by_type.entry(type_).or_default();
            e.0 += 1;
            e.1 = e.1.max(peak);
        }
        by_type
    }
}

fn spawn_controller(
    bin: &Path,
    kubeconfig: &Path,
    ns: &str,
    clock: &str,
    speed: f64,
    extra: &[String],
) -> Result<(Child, u16)> {
    let mut cmd = Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        // As the image sets it (Dockerfile.controller).
        .env("MALLOC_ARENA_MAX", "1")
        .args([
            "--namespace",
            ns,
            // The controller's own gRPC certificate, as installed by default.
            "--grpc-tls-secret-namespace",
            ns,
            "--clock-start",
            clock,
            "--clock-speed",
            &speed.to_string(),
            "--runner-image",
            RUNNER_IMAGE,
        ]);
    let http_port = free_port()?;
    cmd.args(["--http-addr", &format!("127.0.0.1:{http_port}")]);
    cmd.args(["--grpc-addr", &format!("127.0.0.1:{}", free_port()?)]);
    cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().context("failed to start the controller")?;
    Ok((child, http_port))
}

/// The value of a counter line `name value` of a Prometheus text exposition.
fn counter(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn rss_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

/// CPU seconds used so far by the test cluster's API server and etcd (found by their
/// command lines, which name the cluster's directory).
fn cluster_cpu(cluster: &TestCluster) -> (f64, f64) {
    let dir = cluster
        .audit_log_path()
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let (mut apiserver, mut etcd) = (0.0, 0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if dir.is_empty() || !cmdline.contains(&dir) {
            continue;
        }
        let program = cmdline.split('\0').next().unwrap_or_default();
        let cpu = cpu_seconds(pid).unwrap_or_default();
        if program.ends_with("kube-apiserver") {
            apiserver += cpu;
        } else if program.ends_with("etcd") {
            etcd += cpu;
        }
    }
    (apiserver, etcd)
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
    Ok(ticks / 100.0)
}

fn histogram(metrics: &str, name: &str) -> Option<(f64, f64)> {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix} ")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((value("sum")?, value("count")?))
}

/// Starts the runner against a listener standing in for AWS and measures the time until the
/// first connection arrives.
fn runner_first_request(runner: &Path) -> Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let token = tempfile_path("bench-token");
    std::fs::write(&token, "t")?;
    let start = Instant::now();
    let mut child = Command::new(runner)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("HIBERNATOR_AWS_MAX_ATTEMPTS", "1")
        .args(["--execution-id", "bench", "--plan", "p", "--namespace", "n", "--target", "db"])
        .args(["--target-type", "rds", "--operation", "hibernate", "--cycle-id", "c", "--attempt", "1"])
        .args(["--parameters", "{}", "--controller-endpoint", "http://127.0.0.1:9"])
        .args([
            "--connector",
            r#"{"kind":"aws","accountId":"123456789012","region":"us-east-1","credentials":"static"}"#,
        ])
        .arg("--token-path")
        .arg(&token)
        .arg("--termination-message-path")
        .arg(tempfile_path("bench-termination"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    listener.set_nonblocking(false)?;
    let (mut conn, _) = listener.accept()?;
    let elapsed = start.elapsed();
    let mut buf = [0u8; 16];
    let _ = conn.read(&mut buf);
    drop(conn);
    let _ = child.kill();
    let _ = child.wait();
    Ok(elapsed)
}

fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hibernator-{name}-{}", std::process::id()))
}
