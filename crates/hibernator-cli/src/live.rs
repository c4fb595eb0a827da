//! Live commands against a cluster (the current kubeconfig context): `status`, `retry`,
//! `suspend`, `resume`, `logs`, `restore`.

use anyhow::{Context, Result, bail};
use hibernator_api::naming::restore_config_map;
use hibernator_api::plan::{HibernationPlan, RESTORE_ACK_ANNOTATION, RETRY_ANNOTATION};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::{Output, exit};

/// The field manager of the CLI's writes.
pub(crate) const FIELD_MANAGER: &str = "kubectl-hibernator";

/// Which namespace to act in.
#[derive(clap::Args, Debug, Clone)]
pub struct Scope {
    /// Namespace (default: the kubeconfig context's).
    #[arg(long, short)]
    namespace: Option<String>,
}

/// Arguments of `status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// A plan; every plan of the namespace when absent.
    plan: Option<String>,
    #[command(flatten)]
    scope: Scope,
    /// All namespaces.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
}

/// Arguments naming one plan.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The plan.
    plan: String,
    #[command(flatten)]
    scope: Scope,
}

/// Arguments of `suspend`.
#[derive(clap::Args, Debug)]
pub struct SuspendArgs {
    /// The plan.
    plan: String,
    #[command(flatten)]
    scope: Scope,
    /// Suspend until this instant (RFC 3339) instead of until `resume`.
    #[arg(long)]
    until: Option<String>,
}

/// Arguments of `logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The plan.
    plan: String,
    #[command(flatten)]
    scope: Scope,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
}

/// Arguments of `restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The plan.
    plan: String,
    #[command(flatten)]
    scope: Scope,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
    /// Acknowledge what the plan reports as not restored (`Restored=False`): the condition
    /// becomes True, the records stay (shown here as acknowledged) and no wake-up acts on
    /// them again.
    #[arg(long)]
    acknowledge: bool,
}

pub(crate) async fn client_and_namespace(scope: &Scope) -> Result<(Client, String)> {
    let config = kube::Config::infer()
        .await
        .context("failed to load a kubeconfig (set KUBECONFIG or use a context)")?;
    let namespace = scope
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("failed to create a Kubernetes client")?;
    Ok((client, namespace))
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

pub(crate) async fn get_plan(
    api: &Api<HibernationPlan>,
    name: &str,
    ns: &str,
) -> Result<HibernationPlan> {
    api.get_opt(name)
        .await
        .with_context(|| format!("failed to read HibernationPlan {ns}/{name}"))?
        .with_context(|| format!("HibernationPlan {ns}/{name} not found"))
}

/// The plans and ScheduleExceptions of a namespace, as documents (for `preview --live`).
pub fn documents(namespace: Option<String>) -> Result<crate::input::Inputs> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&Scope { namespace }).await?;
        let mut inputs = crate::input::Inputs::default();
        let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
        for p in plans
            .list(&ListParams::default())
            .await
            .context("failed to list plans")?
            .items
        {
            inputs.documents.push(hibernator_api::validate::Document {
                source: format!("{ns}/{}", p.name_any()),
                value: serde_json::to_value(&p)?,
            });
        }
        let exceptions: Api<hibernator_api::ScheduleException> =
            Api::namespaced(client.clone(), &ns);
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, &ns);
        let mut calendars = std::collections::BTreeSet::new();
        for e in exceptions
            .list(&ListParams::default())
            .await
            .context("failed to list ScheduleExceptions")?
            .items
        {
            if let Some(r) = &e.spec.calendar_ref {
                calendars.insert(r.name.clone());
            }
            inputs.documents.push(hibernator_api::validate::Document {
                source: format!("{ns}/{}", e.name_any()),
                value: serde_json::to_value(&e)?,
            });
        }
        // The holiday calendars the exceptions refer to.
        for name in calendars {
            if let Some(cm) = config_maps
                .get_opt(&name)
                .await
                .with_context(|| format!("failed to read ConfigMap {ns}/{name}"))?
            {
                let mut value = serde_json::to_value(&cm)?;
                value["apiVersion"] = "v1".into();
                value["kind"] = "ConfigMap".into();
                inputs.documents.push(hibernator_api::validate::Document {
                    source: format!("{ns}/{name}"),
                    value,
                });
            }
        }
        Ok(inputs)
    })
}

/// Runs `status`.
/// The plan named `plan`, or every plan of the scope's namespace (`all_namespaces`: of the
/// cluster).
pub(crate) async fn plans(
    scope: &Scope,
    all_namespaces: bool,
    plan: Option<&str>,
) -> Result<Vec<HibernationPlan>> {
    let (client, ns) = client_and_namespace(scope).await?;
    let api: Api<HibernationPlan> = if all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, &ns)
    };
    Ok(match plan {
        Some(name) => vec![get_plan(&api, name, &ns).await?],
        None => {
            api.list(&ListParams::default())
                .await
                .context("failed to list plans")?
                .items
        }
    })
}

pub fn status(args: StatusArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let plans = plans(&args.scope, args.all_namespaces, args.plan.as_deref()).await?;
        match args.output {
            Output::Json => {
                let rows: Vec<Value> = plans
                    .iter()
                    .map(|p| {
                        json!({
                            "name": p.name_any(),
                            "namespace": p.namespace(),
                            "status": p.status,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
            Output::Text if args.plan.is_some() => print_plan(&plans[0]),
            Output::Text => {
                println!(
                    "{:<20} {:<24} {:<12} {:<6} NEXT",
                    "NAMESPACE", "NAME", "PHASE", "READY"
                );
                for p in &plans {
                    let s = p.status.clone().unwrap_or_default();
                    let ready = hibernator_api::common::find_condition(&s.conditions, "Ready")
                        .map(|c| c.status.clone())
                        .unwrap_or_default();
                    println!(
                        "{:<20} {:<24} {:<12} {:<6} {}",
                        p.namespace().unwrap_or_default(),
                        p.name_any(),
                        s.phase.map(|p| p.as_str()).unwrap_or("-"),
                        ready,
                        s.schedule
                            .and_then(|s| s.next_transition)
                            .unwrap_or_default()
                    );
                }
            }
        }
        Ok(exit::OK)
    })
}

fn print_plan(p: &HibernationPlan) {
    let s = p.status.clone().unwrap_or_default();
    println!(
        "{} ({}): {}",
        p.name_any(),
        p.namespace().unwrap_or_default(),
        s.phase.map(|p| p.as_str()).unwrap_or("not reconciled yet")
    );
    for c in &s.conditions {
        println!("  {}={} ({}): {}", c.type_, c.status, c.reason, c.message);
    }
    if let Some(sch) = &s.schedule {
        println!(
            "  schedule ({}): {}{}",
            p.spec.schedule.timezone,
            sch.reason.clone().unwrap_or_default(),
            sch.next_transition
                .as_ref()
                .map(|n| format!("; next: {n}"))
                .unwrap_or_default()
        );
    }
    if let Some(c) = &s.current_cycle {
        println!(
            "  cycle {} {}{}: started {}{}",
            c.id,
            c.operation,
            if c.targets.is_empty() {
                String::new()
            } else {
                format!(" of {}", c.targets.join(", "))
            },
            c.started_at.0,
            c.finished_at
                .as_ref()
                .map(|f| format!(", finished {}", f.0))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &s.enforcement {
        println!(
            "  in-sleep checks ({}) of cycle {}: {} made{}{}{}",
            e.mode.as_str(),
            e.cycle_id,
            e.checks,
            e.last_check_at
                .as_ref()
                .map(|t| format!(", last {}", t.0))
                .unwrap_or_default(),
            e.next_check_at
                .as_ref()
                .map(|t| format!(", next {}", t.0))
                .unwrap_or_default(),
            if e.reapplied > 0 {
                format!("; {} put back to sleep", e.reapplied)
            } else {
                String::new()
            }
        );
        for d in &e.drifted {
            println!("    found awake in {}: {}", d.name, d.keys.join(", "));
        }
    }
    if let Some(e) = &s.last_error {
        println!("  last error: {e}");
    }
    if let Some(r) = &s.retry {
        println!(
            "  retries: {}{}",
            r.count,
            r.next_at
                .as_ref()
                .map(|t| format!(", next at {}", t.0))
                .unwrap_or_default()
        );
    }
    print_targets(&s);
    for a in &s.asleep {
        println!(
            "  asleep: {} {} resource(s){}",
            a.name,
            a.resources,
            if p.spec.targets.iter().any(|t| t.name == a.name) {
                ""
            } else {
                " (target no longer in the plan)"
            }
        );
    }
    for h in &s.history {
        let part = |name: &str, o: &Option<hibernator_api::plan::OperationRecord>| {
            o.as_ref()
                .map(|r| {
                    format!(
                        "{name} {}{}",
                        if r.succeeded { "ok" } else { "FAILED" },
                        if r.failed_targets.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", r.failed_targets.join(", "))
                        }
                    )
                })
                .unwrap_or_default()
        };
        println!(
            "  history {}: {} {}",
            h.id,
            part("hibernate", &h.hibernate),
            part("wake-up", &h.wake_up)
        );
    }
}

/// The table of a plan's targets: state, the side each is on, attempts, Job, and what it
/// says (with why it departs from the plan's schedule).
fn print_targets(s: &hibernator_api::plan::HibernationPlanStatus) {
    if s.targets.is_empty() {
        return;
    }
    println!(
        "  {:<20} {:<10} {:<7} {:<8} {:<44} MESSAGE",
        "TARGET", "STATE", "SIDE", "ATTEMPTS", "JOB"
    );
    for t in &s.targets {
        let side = match s.side_of(t) {
            Some(hibernator_api::Operation::Hibernate) => "asleep",
            Some(hibernator_api::Operation::WakeUp) => "awake",
            None => "",
        };
        println!(
            "  {:<20} {:<10} {:<7} {:<8} {:<44} {}{}",
            t.name,
            format!("{:?}", t.state),
            side,
            t.attempts,
            t.job.clone().unwrap_or_default(),
            {
                let text = if t.state.is_terminal() {
                    t.message.clone().or(t.progress.clone())
                } else {
                    t.progress.clone().or(t.message.clone())
                }
                .unwrap_or_default();
                match (t.resources_restored, t.resources_recorded) {
                    (Some(r), Some(m)) if m > 0 => {
                        format!("restored {r} of {m} resources; {text}")
                    }
                    _ => text,
                }
            },
            t.schedule_override
                .as_ref()
                .map(|o| format!(" [{o}]"))
                .unwrap_or_default()
        );
    }
}

/// Runs `retry`: sets the retry annotation to a new token.
pub fn retry(args: PlanArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&args.scope).await?;
        let api: Api<HibernationPlan> = Api::namespaced(client, &ns);
        get_plan(&api, &args.plan, &ns).await?;
        let token = jiff::Timestamp::now().to_string();
        let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: token}}});
        api.patch(&args.plan, &patch_params(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("failed to annotate HibernationPlan {ns}/{}", args.plan))?;
        println!("retry requested for {ns}/{} (token {token})", args.plan);
        Ok(exit::OK)
    })
}

/// Runs `suspend`.
pub fn suspend_cmd(args: SuspendArgs) -> Result<u8> {
    suspend(args.plan, args.scope, args.until, true)
}

/// Runs `resume`.
pub fn resume_cmd(args: PlanArgs) -> Result<u8> {
    suspend(args.plan, args.scope, None, false)
}

/// Sets (or clears) `spec.suspend` / `spec.suspendUntil`.
fn suspend(plan: String, scope: Scope, until: Option<String>, suspend: bool) -> Result<u8> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&scope).await?;
        let api: Api<HibernationPlan> = Api::namespaced(client, &ns);
        get_plan(&api, &plan, &ns).await?;
        let patch = match (suspend, until) {
            (true, Some(u)) => {
                let t: jiff::Timestamp = u
                    .parse()
                    .with_context(|| format!("--until {u:?} is not an RFC 3339 instant"))?;
                json!({"spec": {"suspendUntil": t.to_string(), "suspend": null}})
            }
            (true, None) => json!({"spec": {"suspend": true}}),
            (false, _) => json!({"spec": {"suspend": null, "suspendUntil": null}}),
        };
        api.patch(&plan, &patch_params(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("failed to update HibernationPlan {ns}/{plan}"))?;
        println!("{} {ns}/{plan}", if suspend { "suspended" } else { "resumed" });
        eprintln!(
            "note: Argo CD and Flux revert changes to spec that are not in Git; for lasting changes commit \
             spec.suspend or a ScheduleException instead"
        );
        Ok(exit::OK)
    })
}

/// Runs `logs`: the logs of the latest runner of each target of the current cycle.
pub fn logs(args: LogsArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&args.scope).await?;
        let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
        let plan = get_plan(&plans, &args.plan, &ns).await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let status = plan.status.unwrap_or_default();
        let mut shown = 0;
        for t in &status.targets {
            if args.target.as_ref().is_some_and(|x| *x != t.name) {
                continue;
            }
            let Some(job) = &t.job else { continue };
            if jobs.get_opt(job).await?.is_none() {
                println!(
                    "== {} ({job}): the Job is gone (cleaned up after its TTL)",
                    t.name
                );
                continue;
            }
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await
                .context("failed to list runner pods")?;
            for pod in list.items {
                println!("== {} ({})", t.name, pod.name_any());
                match pods.logs(&pod.name_any(), &LogParams::default()).await {
                    Ok(text) => print!("{text}"),
                    Err(e) => println!("(no logs: {e})"),
                }
                shown += 1;
            }
        }
        if shown == 0 && args.target.is_some() {
            bail!(
                "no runner of target {:?} in the current cycle",
                args.target.unwrap_or_default()
            );
        }
        Ok(exit::OK)
    })
}

/// Runs `restore`: prints the restore data recorded for each target, what the last wake-up did
/// with each record, records of targets no longer in the plan, and the plan's `Restored`
/// condition; with `--acknowledge`, acknowledges what was not restored.
pub fn restore(args: RestoreArgs) -> Result<u8> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&args.scope).await?;
        let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
        let plan = get_plan(&plans, &args.plan, &ns).await?;
        if args.acknowledge {
            let token = jiff::Timestamp::now().to_string();
            let patch = json!({"metadata": {"annotations": {RESTORE_ACK_ANNOTATION: token}}});
            plans
                .patch(&args.plan, &patch_params(), &Patch::Merge(&patch))
                .await
                .with_context(|| {
                    format!("failed to annotate HibernationPlan {ns}/{}", args.plan)
                })?;
            println!(
                "acknowledged what {ns}/{} did not restore (token {token}); the records are kept",
                args.plan
            );
            return Ok(exit::OK);
        }
        let api: Api<ConfigMap> = Api::namespaced(client, &ns);
        let name = restore_config_map(&args.plan);
        let data = api
            .get_opt(&name)
            .await
            .with_context(|| format!("failed to read ConfigMap {ns}/{name}"))?
            .and_then(|c| c.data)
            .unwrap_or_default();
        let in_plan: Vec<&str> = plan.spec.targets.iter().map(|t| t.name.as_str()).collect();
        match args.output {
            Output::Json => {
                let parsed: serde_json::Map<String, Value> = data
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::from_str(v).unwrap_or(Value::String(v.clone())),
                        )
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&parsed)?);
            }
            Output::Text => print_restore(&plan, &ns, &args.plan, &data, &in_plan),
        }
        Ok(exit::OK)
    })
}

fn print_restore(
    plan: &HibernationPlan,
    ns: &str,
    name: &str,
    data: &std::collections::BTreeMap<String, String>,
    in_plan: &[&str],
) {
    use hibernator_api::restore::{WakeUpOutcome, read_target};
    if let Some(c) = plan
        .status
        .as_ref()
        .and_then(|s| hibernator_api::common::find_condition(&s.conditions, "Restored").cloned())
    {
        println!("Restored={} ({}): {}", c.status, c.reason, c.message);
    }
    if data.is_empty() {
        println!("no restore data for {ns}/{name} (nothing asleep)");
    }
    for target in data.keys() {
        let orphan = if in_plan.contains(&target.as_str()) {
            ""
        } else {
            " (orphaned: no longer in the plan; its records are kept)"
        };
        println!("{target}:{orphan}");
        let records = match read_target(data, target) {
            Ok(r) => r,
            Err(e) => {
                println!("  unreadable: {e}");
                continue;
            }
        };
        for (key, r) in &records.resources {
            let what = match &r.wake_up {
                None => "asleep".to_string(),
                Some(w) => {
                    let why = w
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    let done = match w.result {
                        WakeUpOutcome::Restored => "restored".to_string(),
                        WakeUpOutcome::NotFound => format!("not found by the wake-up{why}"),
                        WakeUpOutcome::Failed => format!("not restored{why}"),
                    };
                    let ack = if w.acknowledged { ", acknowledged" } else { "" };
                    format!("{done} (cycle {}{ack})", w.cycle_id)
                }
            };
            println!(
                "  {key}: {what}; recorded {} (cycle {}, {})",
                r.state, r.cycle_id, r.recorded_at
            );
        }
    }
}
