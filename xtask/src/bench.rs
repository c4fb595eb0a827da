//! `cargo xtask bench`: the performance targets of docs/architecture.md, measured and printed
//! as a table (a benchmark, not a test: nothing here fails on a slow machine).
//!
//! 1. Scale: N plans x 10 targets on one controller (awake, idle): time until every plan is
//!    reconciled, resident memory, CPU used while idle.
//! 2. A night of M plans x 10 targets (runner pods through the test kubelet, simulated clock):
//!    API writes per target per cycle (from the API server's audit log) and the lag between a
//!    schedule boundary and the start of its operation (from the controller's metrics).
//! 3. The runner: time from process start to its first AWS request.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hibernator_api::plan::HibernationPlan;
use hibernator_e2e::world::{RUNNER_IMAGE, binaries, free_port, noop_plan};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_testbed::{ClusterOptions, Image, TestCluster};
use serde_json::json;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Plans in the scale run (10 targets each).
    #[arg(long, default_value_t = 1000)]
    plans: usize,
    /// Plans in the night run (10 targets each; 0 skips it).
    #[arg(long, default_value_t = 5)]
    night_plans: usize,
    /// Use the release build of the controller and runner (what images ship).
    #[arg(long)]
    release: bool,
}

struct Row(String, String, String);

/// Schedule seconds per real second in the night run.
const NIGHT_SPEED: f64 = 600.0;

/// Runs the benchmarks and prints the table.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = runtime.block_on(bench(&args))?;
    println!("\n{:<58} {:>14}  TARGET", "MEASURE", "VALUE");
    for Row(m, v, t) in rows {
        println!("{m:<58} {v:>14}  {t}");
    }
    Ok(())
}

async fn bench(args: &Args) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    eprintln!("==> building binaries and tools");
    tokio::task::spawn_blocking(|| binaries().map(|_| ()))
        .await?
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let debug = binaries().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let b = if args.release {
        eprintln!("==> building the release controller and runner");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "hibernator-controller",
                "-p",
                "hibernator-runner",
            ])
            .current_dir(crate::root())
            .status()?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
        let dir = crate::root().join("target/release");
        hibernator_e2e::world::Binaries {
            controller: dir.join("hibernator-controller"),
            runner: dir.join("hibernator-runner"),
            cli: debug.cli.clone(),
            xtask: debug.xtask.clone(),
        }
    } else {
        debug.clone()
    };
    eprintln!("==> starting a test cluster");
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    cluster.map_image(RUNNER_IMAGE, Image::new(&b.runner));
    let client = cluster.client()?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (_, crd) in hibernator_api::crds::all() {
        use kube::ResourceExt;
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();

    // 1. Scale.
    let ns = cluster.create_namespace("bench-scale").await?;
    eprintln!("==> creating {} plans x 10 targets", args.plans);
    let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
    let targets: Vec<(String, serde_json::Value)> =
        (0..10).map(|i| (format!("t{i}"), json!({}))).collect();
    let refs: Vec<(&str, serde_json::Value)> = targets
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    futures::stream::iter(0..args.plans)
        .map(|i| {
            let plans = plans.clone();
            let mut plan = noop_plan(&format!("plan-{i}"), &refs, json!({}));
            plan["metadata"]["namespace"] = json!(ns);
            async move {
                plans
                    .patch(
                        &format!("plan-{i}"),
                        &PatchParams::apply("bench"),
                        &Patch::Apply(&plan),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("create failed: {e}");
            }
        })
        .await;
    // Wednesday noon New York: every plan is awake.
    let started = Instant::now();
    let mut controller = spawn_controller(
        &b.controller,
        &kubeconfig,
        &ns,
        "2026-11-25T17:00:00Z",
        1.0,
        &[],
    )?;
    loop {
        let list = plans.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
            })
            .count();
        if done == args.plans {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {done} of {} plans reconciled after 10 minutes",
                args.plans
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle = started.elapsed();
    rows.push(Row(
        format!(
            "{} plans x 10 targets: all reconciled after start",
            args.plans
        ),
        format!("{:.1} s", settle.as_secs_f64()),
        String::new(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = controller.id();
    let cpu_before = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let cpu_idle = cpu_seconds(pid)? - cpu_before;
    rows.push(Row(
        "  controller resident memory (RSS)".into(),
        format!("{:.1} MiB", rss_mib(pid, "VmRSS")?),
        "< 64 MiB".into(),
    ));
    rows.push(Row(
        "    of which heap and other anonymous memory".into(),
        format!("{:.1} MiB", rss_mib(pid, "RssAnon")?),
        String::new(),
    ));
    rows.push(Row(
        "  controller CPU while idle (30 s)".into(),
        format!("{:.2} %", cpu_idle / 30.0 * 100.0),
        "near zero".into(),
    ));
    let _ = controller.kill();
    let _ = controller.wait();

    // 2. A night.
    if args.night_plans > 0 {
        let ns = cluster.create_namespace("bench-night").await?;
        eprintln!(
            "==> a night of {} plans x 10 noop targets",
            args.night_plans
        );
        let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
        for i in 0..args.night_plans {
            let mut plan = noop_plan(
                &format!("night-{i}"),
                &refs,
                json!({"execution": {"strategy": {"type": "Parallel", "maxConcurrency": 5}}}),
            );
            plan["metadata"]["namespace"] = json!(ns);
            plans
                .patch(
                    &format!("night-{i}"),
                    &PatchParams::apply("bench"),
                    &Patch::Apply(&plan),
                )
                .await?;
        }
        let metrics_port = free_port()?;
        let grpc_port = free_port()?;
        let extra = [
            "--http-addr".to_string(),
            format!("127.0.0.1:{metrics_port}"),
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--controller-endpoint".into(),
            format!("https://127.0.0.1:{grpc_port}"),
            "--runner-image".into(),
            RUNNER_IMAGE.into(),
            "--runner-service-account".into(),
            "default".into(),
        ];
        let audit_before = cluster.audit_events()?.len();
        let mut controller = spawn_controller(
            &b.controller,
            &kubeconfig,
            &ns,
            "2026-11-27T00:59:30Z",
            NIGHT_SPEED,
            &extra,
        )?;
        let started = Instant::now();
        loop {
            let list = plans.list(&ListParams::default()).await?;
            let woken = list
                .items
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.current_cycle.as_ref())
                        .is_some_and(|c| {
                            c.operation == hibernator_api::Operation::WakeUp
                                && c.finished_at.is_some()
                        })
                })
                .count();
            if woken == args.night_plans {
                break;
            }
            if started.elapsed() > Duration::from_secs(900) {
                bail!("only {woken} of {} plans woke up", args.night_plans);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let metrics = http_get(metrics_port, "/metrics").await.unwrap_or_default();
        let _ = controller.kill();
        let _ = controller.wait();
        let events = cluster.audit_events()?;
        let admin_writes: Vec<_> = events[audit_before..]
            .iter()
            .filter(|e| e.is_write() && e.field_manager.as_deref() == Some("hibernator-controller"))
            .filter(|e| {
                e.object_ref.as_ref().and_then(|r| r.namespace.as_deref()) == Some(ns.as_str())
            })
            .collect();
        let targets = (args.night_plans * 10) as f64;
        let per = |kind: &str| {
            admin_writes
                .iter()
                .filter(|e| {
                    let r = e.object_ref.clone().unwrap_or_default();
                    let key = match r.subresource {
                        Some(s) => format!("{}/{s}", r.resource.unwrap_or_default()),
                        None => r.resource.unwrap_or_default(),
                    };
                    key == kind
                })
                .count() as f64
                / targets
        };
        rows.push(Row(
            format!(
                "night of {} plans x 10 targets: wall time (600x clock)",
                args.night_plans
            ),
            format!("{:.0} s", started.elapsed().as_secs_f64()),
            String::new(),
        ));
        rows.push(Row(
            "  API writes per target per cycle, all kinds".into(),
            format!("{:.2}", admin_writes.len() as f64 / targets),
            "minimal".into(),
        ));
        for kind in ["jobs", "hibernationplans/status", "configmaps", "events"] {
            rows.push(Row(
                format!("    of which {kind}"),
                format!("{:.2}", per(kind)),
                String::new(),
            ));
        }
        if let Some((sum, count)) = histogram(&metrics, "hibernator_schedule_boundary_lag_seconds")
        {
            rows.push(Row(
                "  mean lag from boundary to operation start (real time)".into(),
                format!("{:.2} s", sum / count.max(1.0) / NIGHT_SPEED),
                "< 1 s".into(),
            ));
        }
    }
    drop(cluster);

    // 3. Runner start-up.
    eprintln!("==> runner start-up");
    let mut samples = Vec::new();
    for _ in 0..10 {
        samples.push(runner_first_request(&b.runner)?);
    }
    samples.sort();
    rows.push(Row(
        "runner: process start to first AWS request (median of 10)".into(),
        format!("{:.0} ms", samples[5].as_secs_f64() * 1000.0),
        "< 100 ms".into(),
    ));
    Ok(rows)
}

fn spawn_controller(
    bin: &std::path::Path,
    kubeconfig: &std::path::Path,
    ns: &str,
    clock: &str,
    speed: f64,
    extra: &[String],
) -> Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .env(
            "MALLOC_ARENA_MAX",
            std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "8".into()),
        )
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
        ]);
    if !extra.iter().any(|a| a == "--http-addr") {
        cmd.args(["--http-addr", &format!("127.0.0.1:{}", free_port()?)]);
        cmd.args(["--grpc-addr", &format!("127.0.0.1:{}", free_port()?)]);
    }
    cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().context("failed to start the controller")
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

async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    Ok(buf)
}

/// Starts the runner against a listener standing in for AWS and measures the time until the
/// first connection arrives.
fn runner_first_request(runner: &std::path::Path) -> Result<Duration> {
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

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hibernator-{name}-{}", std::process::id()))
}
