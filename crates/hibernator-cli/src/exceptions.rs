//! `wake`, `sleep` and `exceptions`: bending a plan's schedule without editing Git. Each change
//! is a ScheduleException (the plan's `spec` is never touched), labelled as made by this
//! command, with the reason and the requester in annotations.

use anyhow::{Context, Result, bail};
use hibernator_api::exception::{ExceptionState, ScheduleException, parse_lead_time};
use hibernator_api::plan::HibernationPlan;
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;
use serde_json::json;

use crate::live::{FIELD_MANAGER, Scope, client_and_namespace, get_plan, runtime};
use crate::{Output, exit};

/// Label on the ScheduleExceptions this command creates (`exceptions prune` deletes only those).
pub const CREATED_BY_LABEL: &str = "hibernator.ardikasaputro.io/created-by";
/// Why the exception was made (`--reason`).
pub const REASON_ANNOTATION: &str = "hibernator.ardikasaputro.io/reason";
/// Who asked for it: the user of the kubeconfig context.
pub const REQUESTED_BY_ANNOTATION: &str = "hibernator.ardikasaputro.io/requested-by";

/// Arguments of `wake` and `sleep`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("length").required(true).args(["for_", "until"])))]
pub struct ChangeArgs {
    /// The plan.
    plan: String,
    #[command(flatten)]
    scope: Scope,
    /// How long, from `--from` (`2h`, `90m`, `1h30m`; at most 24h, use --until beyond).
    #[arg(long = "for", value_name = "DURATION")]
    for_: Option<String>,
    /// Until this instant (RFC 3339).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Start at this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Why (kept in an annotation, shown by `exceptions`).
    #[arg(long)]
    reason: Option<String>,
    /// Only this target of the plan (repeatable); the targets it needs in the wake-up order
    /// follow it (waking), as do those that need it (sleeping).
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
}

/// Arguments of `exceptions`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ListArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Only this plan's exceptions.
    plan: Option<String>,
    #[command(flatten)]
    scope: Scope,
    /// Also the expired ones.
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
}

/// What `exceptions` does besides listing.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Delete the expired ScheduleExceptions made by `wake` and `sleep` (never others).
    Prune {
        /// Only this plan's.
        plan: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
}

/// Runs `wake` (a `suspend` exception: the targets stay awake) or `sleep` (`extend`).
pub fn change(args: ChangeArgs, wake: bool) -> Result<u8> {
    let from = match &args.from {
        Some(s) => instant("--from", s)?,
        None => Timestamp::now(),
    };
    let until = match (&args.for_, &args.until) {
        (Some(d), _) => {
            let secs = parse_lead_time(d)
                .filter(|s| (1..=24 * 3600).contains(s))
                .with_context(|| {
                    format!("--for {d:?} is not a duration such as 2h or 1h30m of at most 24h (use --until for longer)")
                })?;
            from + SignedDuration::from_secs(secs)
        }
        (None, Some(u)) => instant("--until", u)?,
        (None, None) => unreachable!("clap requires --for or --until"),
    };
    if until <= from {
        bail!("--until {until} is not after the start ({from})");
    }
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&args.scope).await?;
        let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &ns);
        let plan = get_plan(&plans, &args.plan, &ns).await?;
        check_targets(&plan, &args.targets)?;
        let verb = if wake { "wake" } else { "sleep" };
        let name = exception_name(&args.plan, verb, from);
        let mut annotations = serde_json::Map::new();
        annotations.insert(REQUESTED_BY_ANNOTATION.into(), json!(requester()));
        if let Some(r) = &args.reason {
            annotations.insert(REASON_ANNOTATION.into(), json!(r));
        }
        // Two windows covering every day end to end: the exception holds its whole validity.
        let days = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
        let mut e: ScheduleException = serde_json::from_value(json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "ScheduleException",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {CREATED_BY_LABEL: FIELD_MANAGER},
                "annotations": annotations,
            },
            "spec": {
                "planRef": {"name": args.plan},
                "type": if wake { "suspend" } else { "extend" },
                "validFrom": from.to_string(),
                "validUntil": until.to_string(),
                "windows": [
                    {"start": "00:00", "end": "12:00", "daysOfWeek": days},
                    {"start": "12:00", "end": "00:00", "daysOfWeek": days},
                ],
            },
        }))
        .context("the ScheduleException is well-formed")?;
        if !args.targets.is_empty() {
            e.spec.targets = Some(args.targets.clone());
        }
        let api: Api<ScheduleException> = Api::namespaced(client, &ns);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        api.create(&params, &e)
            .await
            .with_context(|| format!("failed to create ScheduleException {ns}/{name}"))?;
        let what = if wake { "awake" } else { "asleep" };
        let who = if args.targets.is_empty() {
            args.plan.clone()
        } else {
            format!("{} of {}", args.targets.join(", "), args.plan)
        };
        println!("ScheduleException {ns}/{name}: {who} {what} from {from} until {until}");
        eprintln!(
            "note: the controller acts within seconds; `kubectl hibernator exceptions {}` lists it, and `kubectl delete hexc {name} -n {ns}` ends it early",
            args.plan
        );
        Ok(exit::OK)
    })
}

/// Every `--target` must be a target of the plan.
fn check_targets(plan: &HibernationPlan, targets: &[String]) -> Result<()> {
    let names: Vec<&str> = plan.spec.targets.iter().map(|t| t.name.as_str()).collect();
    for t in targets {
        if !names.contains(&t.as_str()) {
            bail!(
                "--target {t:?} is not a target of plan {} (its targets: {})",
                plan.name_any(),
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// One exception, as listed.
#[derive(Serialize, Debug)]
struct Row {
    name: String,
    plan: String,
    #[serde(rename = "type")]
    type_: &'static str,
    valid_from: String,
    valid_until: String,
    /// The targets it applies to; empty: the whole plan.
    targets: Vec<String>,
    state: &'static str,
    created_by: String,
    requested_by: Option<String>,
    reason: Option<String>,
}

/// Runs `exceptions` (list) and `exceptions prune`.
pub fn exceptions(args: ListArgs) -> Result<u8> {
    match args.action {
        Some(Action::Prune { plan, scope }) => prune(plan, scope),
        None => list(args.plan, args.scope, args.all, args.output),
    }
}

fn list(plan: Option<String>, scope: Scope, all: bool, output: Output) -> Result<u8> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&scope).await?;
        let api: Api<ScheduleException> = Api::namespaced(client, &ns);
        let now = Timestamp::now();
        let mut rows: Vec<Row> = api
            .list(&ListParams::default())
            .await
            .with_context(|| format!("failed to list ScheduleExceptions in {ns}"))?
            .items
            .into_iter()
            .filter(|e| plan.as_ref().is_none_or(|p| *p == e.spec.plan_ref.name))
            .map(|e| row(&e, now))
            .filter(|r| all || r.state != "Expired")
            .collect();
        rows.sort_by(|a, b| (&a.plan, &a.valid_from).cmp(&(&b.plan, &b.valid_from)));
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(exit::OK);
        }
        if rows.is_empty() {
            println!(
                "no ScheduleExceptions{} in {ns}",
                if all { "" } else { " active or upcoming" }
            );
            return Ok(exit::OK);
        }
        println!(
            "{:<40} {:<24} {:<8} {:<8} {:<21} {:<21} BY / REASON",
            "NAME", "PLAN[/TARGETS]", "TYPE", "STATE", "FROM", "UNTIL"
        );
        for r in rows {
            let by = match (&r.requested_by, &r.reason) {
                (Some(u), Some(why)) => format!("{} {u}: {why}", r.created_by),
                (Some(u), None) => format!("{} {u}", r.created_by),
                (None, Some(why)) => format!("{}: {why}", r.created_by),
                (None, None) => r.created_by.clone(),
            };
            let plan = if r.targets.is_empty() {
                r.plan.clone()
            } else {
                format!("{}/{}", r.plan, r.targets.join(","))
            };
            println!(
                "{:<40} {:<24} {:<8} {:<8} {:<21} {:<21} {by}",
                r.name, plan, r.type_, r.state, r.valid_from, r.valid_until
            );
        }
        Ok(exit::OK)
    })
}

fn row(e: &ScheduleException, now: Timestamp) -> Row {
    let annotations = e.annotations();
    // The controller's view when it has one (it runs on the schedule's clock); else ours.
    let state = match e.status.as_ref().and_then(|s| s.state) {
        Some(ExceptionState::Pending) => "Pending",
        Some(ExceptionState::Active) => "Active",
        Some(ExceptionState::Expired) => "Expired",
        None if now < e.spec.valid_from.0 => "Pending",
        None if now < e.spec.valid_until.0 => "Active",
        None => "Expired",
    };
    Row {
        name: e.name_any(),
        plan: e.spec.plan_ref.name.clone(),
        type_: e.spec.type_.as_str(),
        valid_from: e.spec.valid_from.0.to_string(),
        valid_until: e.spec.valid_until.0.to_string(),
        targets: e.spec.targets.clone().unwrap_or_default(),
        state,
        created_by: if made_here(e) { "cli" } else { "git" }.to_string(),
        requested_by: annotations.get(REQUESTED_BY_ANNOTATION).cloned(),
        reason: annotations.get(REASON_ANNOTATION).cloned(),
    }
}

fn made_here(e: &ScheduleException) -> bool {
    e.labels().get(CREATED_BY_LABEL).map(String::as_str) == Some(FIELD_MANAGER)
}

fn prune(plan: Option<String>, scope: Scope) -> Result<u8> {
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&scope).await?;
        let api: Api<ScheduleException> = Api::namespaced(client, &ns);
        let now = Timestamp::now();
        let selector = format!("{CREATED_BY_LABEL}={FIELD_MANAGER}");
        let mut pruned = 0;
        for e in api
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("failed to list ScheduleExceptions in {ns}"))?
            .items
        {
            if plan.as_ref().is_some_and(|p| *p != e.spec.plan_ref.name)
                || !made_here(&e)
                || row(&e, now).state != "Expired"
            {
                continue;
            }
            let name = e.name_any();
            api.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("failed to delete ScheduleException {ns}/{name}"))?;
            println!(
                "deleted ScheduleException {ns}/{name} (expired {})",
                e.spec.valid_until.0
            );
            pruned += 1;
        }
        if pruned == 0 {
            println!(
                "nothing to prune in {ns}: no expired ScheduleException made by wake or sleep"
            );
        }
        Ok(exit::OK)
    })
}

fn instant(flag: &str, s: &str) -> Result<Timestamp> {
    s.parse().with_context(|| {
        format!("{flag} {s:?} is not an RFC 3339 instant such as 2026-11-27T08:00:00Z")
    })
}

/// `PLAN-wake-20261127t0800`, the plan part cut so that the name stays valid.
fn exception_name(plan: &str, verb: &str, from: Timestamp) -> String {
    let stamp = from.strftime("%Y%m%dt%H%M%S").to_string();
    let room = 253 - verb.len() - stamp.len() - 2;
    let plan: String = plan.chars().take(room).collect();
    format!("{}-{verb}-{stamp}", plan.trim_end_matches(['-', '.']))
}

/// The user of the kubeconfig's current context, for the record.
fn requester() -> String {
    kube::config::Kubeconfig::read()
        .ok()
        .and_then(|k| {
            let current = k.current_context.clone()?;
            let named = k.contexts.into_iter().find(|c| c.name == current)?;
            named.context?.user
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::exception_name;

    #[test]
    fn names_stay_valid() {
        let t: jiff::Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
        assert_eq!(
            exception_name("prod-offhours", "wake", t),
            "prod-offhours-wake-20261127t080000"
        );
        let long = "p".repeat(253);
        assert_eq!(exception_name(&long, "sleep", t).len(), 253);
    }
}
