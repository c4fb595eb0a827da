//! `cargo xtask demo`: a full night of the seed's plan on a real Kubernetes control plane with
//! AWS emulated by moto, in about a minute once the tools are built.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hibernator_api::plan::{HibernationPlan, Phase};
use hibernator_api::{Operation, TargetState};
use hibernator_e2e::gitops::{self, StackRepository};
use hibernator_e2e::gitserver::GitServer;
use hibernator_e2e::stack::{Stack, StackOptions, seed_estate};
use jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube_testbed::{ClusterOptions, TestCluster};
use serde_json::Value;

/// Arguments of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Leave the cluster running at the end and print how to explore it (Ctrl-C stops it).
    #[arg(long)]
    keep_running: bool,
    /// Schedule seconds per real second (1200: a ten-hour night in 30 seconds).
    #[arg(long, default_value_t = 1200.0)]
    speed: f64,
    /// Plain lines instead of a table updated in place (the default when not on a terminal).
    #[arg(long)]
    plain: bool,
    /// Deliver the seed's manifests from Git, synced by the real Flux or Argo CD (built from
    /// their Go modules on first use, then cached), instead of `kubectl apply`.
    #[arg(long, value_enum)]
    gitops: Option<GitOps>,
}

/// The GitOps tool of `--gitops`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum GitOps {
    /// Flux: source-controller and kustomize-controller, the seed's GitRepository and
    /// Kustomization.
    Flux,
    /// Argo CD: the application controller and the repo server, the seed's Application.
    Argocd,
}

/// Thursday 17:00 in New York: three hours before the plan's first hibernation.
const CLOCK_START: &str = "2026-11-26T22:00:00Z";
const PLAN: &str = "prod-offhours";
const NAMESPACE: &str = "hibernator-system";

/// Runs the demo; returns whether every resource was restored.
pub fn run(args: Args) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::select! {
            r = demo(&args) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: stopping every process the demo started");
                Ok(false)
            }
        }
    })
}

fn say(step: &str) {
    eprintln!("==> {step}");
}

async fn demo(args: &Args) -> Result<bool> {
    let started = Instant::now();
    eprintln!("Hibernator demo: one night of the seed's plan `prod-offhours` (America/New_York,");
    eprintln!("weekdays 20:00-06:00; an RDS database, then an EKS cluster's node groups).\n");
    say(
        "building the controller, the runner and the CLI (cargo build; the first build takes minutes)",
    );
    tokio::task::spawn_blocking(|| hibernator_e2e::world::binaries().map(|_| ()))
        .await?
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    say(
        "building or reusing the Kubernetes tools (tools/k8s/build.sh; cached outside the repository)",
    );
    tokio::task::spawn_blocking(kube_testbed::Tools::get).await??;
    say("installing or reusing moto, the AWS emulator (a Python venv under target/)");
    tokio::task::spawn_blocking(moto_server::install).await??;
    say(
        "starting Kubernetes (etcd, kube-apiserver, controller-manager, scheduler, a test kubelet)",
    );
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let opts = StackOptions {
        clock_start: CLOCK_START.into(),
        clock_speed: args.speed,
        apply_seed: args.gitops.is_none(),
        ..StackOptions::default()
    };
    let stack = Stack::install(&cluster, &opts, seed_estate(), &mut |s| say(s)).await?;
    let _from_git = match args.gitops {
        Some(tool) => Some(from_git(&cluster, tool).await?),
        None => None,
    };
    let client = cluster.client()?;
    let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), NAMESPACE);
    let tz = jiff::tz::TimeZone::get("America/New_York")?;
    // The controller's schedule clock started with its process: CLOCK_START then.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, NAMESPACE);
    let controller_started = pods
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=controller"))
        .await?
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.start_time.as_ref().map(|t| t.0))
        .unwrap_or_else(Timestamp::now);
    let start: Timestamp = CLOCK_START.parse()?;
    let schedule_now = || {
        let real = Timestamp::now()
            .duration_since(controller_started)
            .as_secs_f64()
            .max(0.0);
        start + SignedDuration::from_secs_f64(real * args.speed)
    };

    say("watching the night (times are New York schedule time, approximately)\n");
    let tty = std::io::stderr().is_terminal() && !args.plain;
    let mut view = View::new(tty);
    let mut asleep: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let plan = plans.get_opt(PLAN).await?;
        if let Some(p) = &plan {
            view.show(p, schedule_now().to_zoned(tz.clone()));
            let status = p.status.clone().unwrap_or_default();
            let cycle = status.current_cycle.clone();
            if asleep.is_none() && status.phase == Some(Phase::Hibernated) {
                asleep = Some(stack.snapshot()?);
            }
            if asleep.is_some()
                && cycle
                    .as_ref()
                    .is_some_and(|c| c.operation == Operation::WakeUp && c.finished_at.is_some())
            {
                break true;
            }
            if status.phase == Some(Phase::Error)
                && status.retry.as_ref().is_some_and(|r| r.next_at.is_none())
            {
                break false;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    view.finish();
    if !done {
        eprintln!(
            "\nthe night did not complete; controller and runner logs are in {}",
            cluster.dir().display()
        );
        return Ok(false);
    }
    let after = stack.snapshot()?;
    let ok = verify(&stack.before, asleep.as_ref().expect("seen asleep"), &after);
    eprintln!("\n(took {:.0} s)", started.elapsed().as_secs_f64());
    if args.keep_running {
        keep_running(&cluster).await?;
    }
    Ok(ok)
}

/// What keeps the seed flowing from Git: the tool, the Git server and the repository.
struct FromGit {
    _tool: gitops::Running,
    _git: GitServer,
    _repo: StackRepository,
}

/// Starts `tool` and a Git server on 127.0.0.1 holding the seed's manifests, and applies the
/// seed's objects that make the tool sync them.
async fn from_git(cluster: &TestCluster, tool: GitOps) -> Result<FromGit> {
    let (tool, name, script) = match tool {
        GitOps::Flux => (gitops::Tool::Flux, "Flux", "tools/flux/build.sh"),
        GitOps::Argocd => (gitops::Tool::ArgoCd, "Argo CD", "tools/argocd/build.sh"),
    };
    say(&format!(
        "building or reusing {name} ({script}; cached outside the repository, minutes the first time)"
    ));
    tokio::task::spawn_blocking(move || match tool {
        gitops::Tool::Flux => hibernator_e2e::flux::build_dir().map(|_| ()),
        gitops::Tool::ArgoCd => hibernator_e2e::argocd::build_dir().map(|_| ()),
    })
    .await??;
    say(&format!("starting {name} next to the cluster"));
    let running = gitops::start(tool, cluster, cluster.dir()).await?;
    let git = GitServer::start(&cluster.dir().join("git")).await?;
    let repo = StackRepository::create(&git, &cluster.dir().join("git-work")).await?;
    gitops::sync(tool, &cluster.client()?, &git).await?;
    say(&format!(
        "pushed the seed's manifests to {} (commit {}); {name} syncs them into the cluster",
        git.url(gitops::REPO),
        &repo.first[..12]
    ));
    Ok(FromGit {
        _tool: running,
        _git: git,
        _repo: repo,
    })
}

/// The live table: plan phase, each target's state and progress, next transition.
struct View {
    tty: bool,
    lines: usize,
    last: String,
}

impl View {
    fn new(tty: bool) -> Self {
        Self {
            tty,
            lines: 0,
            last: String::new(),
        }
    }

    fn show(&mut self, p: &HibernationPlan, now: jiff::Zoned) {
        let s = p.status.clone().unwrap_or_default();
        let ready = hibernator_api::common::find_condition(&s.conditions, "Ready")
            .map(|c| c.status.clone())
            .unwrap_or_else(|| "-".into());
        let local = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
            t.0.to_zoned(now.time_zone().clone())
                .strftime("%a %H:%M")
                .to_string()
        };
        let next = s
            .schedule
            .as_ref()
            .and_then(|x| match (&x.next_hibernate_at, &x.next_wake_up_at) {
                (Some(h), Some(w)) if w.0 < h.0 => Some(format!("wake up {}", local(w))),
                (Some(h), _) => Some(format!("hibernate {}", local(h))),
                (None, Some(w)) => Some(format!("wake up {}", local(w))),
                _ => None,
            })
            .unwrap_or_default();
        let mut text = format!(
            "{}  {PLAN}  {:<12} Ready={ready:<5}  next: {next}\n",
            now.strftime("%a %H:%M"),
            s.phase.map(|p| p.as_str()).unwrap_or("-")
        );
        for t in &s.targets {
            text.push_str(&format!(
                "    {:<13} {:<10} {}\n",
                t.name,
                state(t.state),
                if t.state.is_terminal() {
                    t.message.clone().or(t.progress.clone())
                } else {
                    t.progress.clone()
                }
                .unwrap_or_default()
            ));
        }
        if self.tty {
            let mut err = std::io::stderr();
            if self.lines > 0 {
                let _ = write!(err, "\x1b[{}A\x1b[J", self.lines);
            }
            let _ = write!(err, "{text}");
            self.lines = text.lines().count();
        } else {
            // Plain lines, only when something other than the clock changed.
            let key = text
                .split_once("  ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default();
            if key != self.last {
                eprint!("{text}");
                self.last = key;
            }
        }
    }

    fn finish(&mut self) {
        self.lines = 0;
    }
}

fn state(s: TargetState) -> &'static str {
    match s {
        TargetState::Pending => "pending",
        TargetState::Running => "running",
        TargetState::Completed => "completed",
        TargetState::Failed => "FAILED",
        TargetState::Aborted => "aborted",
        TargetState::Skipped => "skipped",
    }
}

fn sizes(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_else(|| "-".into())
}

/// Prints, per resource, before / asleep / after and checks everything was restored.
fn verify(before: &Value, asleep: &Value, after: &Value) -> bool {
    println!(
        "\n{:<30} {:<12} {:<12} {:<12} CHECK",
        "RESOURCE (min/desired/max)", "BEFORE", "ASLEEP", "AFTER"
    );
    let mut all = true;
    let mut row = |name: String, b: String, s: String, a: String, expect_asleep: Option<&str>| {
        let restored = b == a;
        let slept = expect_asleep.is_none_or(|e| s == e);
        let check = match (restored, slept, expect_asleep) {
            (true, true, Some(_)) => "ok: slept, restored".to_string(),
            (true, true, None) => "ok: untouched (no plan names it)".to_string(),
            (false, _, _) => "NOT RESTORED".to_string(),
            (true, false, Some(e)) => format!("DID NOT SLEEP (expected {e})"),
            (true, false, None) => "CHANGED WHILE ASLEEP".to_string(),
        };
        all &= restored && slept && (expect_asleep.is_some() || b == s);
        println!("{name:<30} {b:<12} {s:<12} {a:<12} {check}");
    };
    for (db, status) in before["rds"].as_object().into_iter().flatten() {
        row(
            format!("rds {db}"),
            status.as_str().unwrap_or_default().into(),
            asleep["rds"][db].as_str().unwrap_or("-").into(),
            after["rds"][db].as_str().unwrap_or("-").into(),
            Some("stopped"),
        );
    }
    for (ng, size) in before["nodegroups"].as_object().into_iter().flatten() {
        let max = size.get(2).cloned().unwrap_or_default();
        let expected = format!("0/0/{max}");
        row(
            format!("eks {ng}"),
            sizes(size),
            sizes(&asleep["nodegroups"][ng]),
            sizes(&after["nodegroups"][ng]),
            Some(expected.as_str()),
        );
    }
    for (inst, status) in before["ec2"].as_object().into_iter().flatten() {
        row(
            format!("ec2 {inst}"),
            status.as_str().unwrap_or_default().into(),
            asleep["ec2"][inst].as_str().unwrap_or("-").into(),
            after["ec2"][inst].as_str().unwrap_or("-").into(),
            None,
        );
    }
    let snapshots: Vec<String> = asleep["rdsSnapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
        .filter(|s| !s.starts_with("rds:"))
        .map(str::to_string)
        .collect();
    let snapshot_ok = snapshots.iter().any(|s| s.starts_with("prod-db"));
    all &= snapshot_ok;
    println!(
        "{:<30} {:<12} {:<38} {}",
        "rds snapshot before stopping",
        "-",
        snapshots.first().cloned().unwrap_or_else(|| "none".into()),
        if snapshot_ok { "ok: taken" } else { "MISSING" }
    );
    if all {
        println!("\nEvery resource slept during the night and is back exactly as it was.");
    } else {
        println!("\nSOME RESOURCES WERE NOT RESTORED (see above).");
    }
    all
}

async fn keep_running(cluster: &TestCluster) -> Result<()> {
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    println!("\nThe cluster keeps running. In another shell:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!(
        "  alias kubectl=\"$(dpkg -L kubectl 2>/dev/null | grep '/kubectl.1.33$' || echo kubectl)\""
    );
    println!("  kubectl get hplan -A");
    println!("  kubectl -n {NAMESPACE} get jobs");
    println!("  kubectl -n {NAMESPACE} logs job/<a runner Job>");
    println!("  target/debug/kubectl-hibernator status {PLAN} -n {NAMESPACE}");
    println!("Press Ctrl-C to stop everything.");
    tokio::signal::ctrl_c()
        .await
        .context("failed to wait for Ctrl-C")?;
    Ok(())
}

/// Fails when the demo could not complete.
pub fn exit_code(ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("the demo did not restore everything")
    }
}
