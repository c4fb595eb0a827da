//! `kubectl hibernator preview`: the next transitions of each plan, from manifests (offline)
//! or from the cluster (`--live`).

use anyhow::{Context, Result, bail};
use hibernator_api::exception::ScheduleException;
use hibernator_api::plan::HibernationPlan;
use hibernator_api::schedule::{CompiledSchedule, Exception};
use hibernator_api::validate::{DEFAULT_NAMESPACE, Document};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::{Output, exit, input};

/// Arguments of `preview`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories with plans (and their ScheduleExceptions); `-` or nothing reads
    /// standard input.
    paths: Vec<String>,
    /// Read the plans and ScheduleExceptions from the cluster instead of files.
    #[arg(long, conflicts_with = "paths")]
    live: bool,
    /// With --live: the namespace (default: the kubeconfig context's).
    #[arg(long, short, requires = "live")]
    namespace: Option<String>,
    /// Only this plan.
    #[arg(long)]
    plan: Option<String>,
    /// Start from this instant (RFC 3339) instead of now.
    #[arg(long)]
    from: Option<String>,
    /// How many transitions per plan.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
}

/// One transition, as printed with `--output json`.
#[derive(Serialize, Debug)]
struct Row {
    plan: String,
    namespace: String,
    /// RFC 3339, UTC.
    at: String,
    /// RFC 3339 with the plan's offset.
    local: String,
    operation: &'static str,
}

/// Runs `preview`.
pub fn run(args: Args) -> Result<u8> {
    let from: Timestamp = match &args.from {
        Some(s) => s.parse().with_context(|| {
            format!("--from {s:?} is not an RFC 3339 instant such as 2026-11-27T00:00:00Z")
        })?,
        None => Timestamp::now(),
    };
    let inputs = if args.live {
        crate::live::documents(args.namespace.clone())?
    } else {
        input::read(&args.paths)?
    };
    if let Some(f) = inputs.failures.first() {
        eprintln!("{}: not valid YAML: {}", f.source, f.message);
        return Ok(exit::INVALID);
    }
    fn of_kind<'a>(docs: &'a [Document], kind: &'a str) -> impl Iterator<Item = &'a Document> {
        docs.iter()
            .filter(move |d| d.value.get("kind").and_then(Value::as_str) == Some(kind))
    }
    let exceptions: Vec<ScheduleException> = of_kind(&inputs.documents, "ScheduleException")
        .filter_map(|d| serde_json::from_value(d.value.clone()).ok())
        .collect();
    let mut rows = Vec::new();
    let mut invalid = false;
    let mut found = false;
    for doc in of_kind(&inputs.documents, "HibernationPlan") {
        let plan: HibernationPlan = match serde_json::from_value(doc.value.clone()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!(
                    "{}: not a valid HibernationPlan ({e}); run `kubectl hibernator validate`",
                    doc.source
                );
                invalid = true;
                continue;
            }
        };
        let name = plan.metadata.name.clone().unwrap_or_default();
        if args.plan.as_ref().is_some_and(|p| *p != name) {
            continue;
        }
        found = true;
        let namespace = plan
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let mut applicable = Vec::new();
        for e in &exceptions {
            let ns = e.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            if ns == namespace && e.spec.plan_ref.name == name {
                match Exception::from_object(e) {
                    Ok(x) => applicable.push(x),
                    Err(err) => {
                        eprintln!(
                            "ScheduleException {ns}/{}: {err}",
                            e.metadata.name.as_deref().unwrap_or_default()
                        );
                        invalid = true;
                    }
                }
            }
        }
        let schedule = match CompiledSchedule::new(&plan.spec.schedule, applicable) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("HibernationPlan {namespace}/{name}: {e}");
                invalid = true;
                continue;
            }
        };
        let tz = schedule.time_zone().clone();
        let transitions = schedule.transitions(from, args.count);
        if args.output == Output::Text {
            println!("{name} ({namespace}), {}:", schedule.time_zone_name());
            if transitions.is_empty() {
                println!("  no transition within a year");
            }
        }
        for t in transitions {
            let local = t.at.to_zoned(tz.clone());
            let row = Row {
                plan: name.clone(),
                namespace: namespace.clone(),
                at: t.at.to_string(),
                local: local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                operation: t.operation.as_str(),
            };
            if args.output == Output::Text {
                let verb = match t.operation {
                    hibernator_api::Operation::Hibernate => "hibernate",
                    hibernator_api::Operation::WakeUp => "wake up",
                };
                println!(
                    "  {}  {verb:<9}  ({})",
                    local.strftime("%a %Y-%m-%d %H:%M %Z"),
                    row.at
                );
            }
            rows.push(row);
        }
    }
    if let Some(p) = &args.plan
        && !found
    {
        bail!("no HibernationPlan named {p:?} in the input");
    }
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(if invalid { exit::INVALID } else { exit::OK })
}
