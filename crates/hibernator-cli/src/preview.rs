//! `kubectl hibernator preview`: the next transitions of each plan, from manifests (offline)
//! or from the cluster (`--live`), as a list or as a picture (`--format`, see [`crate::picture`]).

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;

use hibernator_api::Operation;
use hibernator_api::exception::ScheduleException;
use hibernator_api::graph::ExecutionGraph;
use hibernator_api::plan::HibernationPlan;
use hibernator_api::schedule::{CompiledSchedule, Exception, Holiday, Transition};
use hibernator_api::validate::{DEFAULT_NAMESPACE, Document};
use hibernator_api::wishes::{Wishes, target_wishes};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::picture::{self, Format};
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
    /// End at this instant (RFC 3339): only earlier transitions are listed, and a picture ends
    /// there (default for pictures: 7 days after the start; at most 62 days).
    #[arg(long)]
    until: Option<String>,
    /// How many transitions per plan (lists only).
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Output format of the list.
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
    /// Draw the coming days instead of listing transitions: an SVG image, or an HTML page with
    /// the image and no external resources.
    #[arg(long, value_enum, conflicts_with = "output")]
    format: Option<Format>,
}

/// How long a picture spans without `--until`.
const PICTURE_DAYS: i64 = 7;
/// The longest picture.
const MAX_PICTURE_DAYS: i64 = 62;

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
    /// The targets that change, when not all of them do (ScheduleExceptions for some
    /// targets, with the dependencies they take along).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    targets: Vec<String>,
    /// Why the schedule changes then (a holiday by name, say).
    reason: String,
}

/// A change of some or all targets at one instant: what [`changes`] returns.
struct Change {
    at: Timestamp,
    operation: Operation,
    /// The targets that change; empty when all of them do.
    targets: Vec<String>,
    /// Why, for a change of some targets (each with its reason).
    why: Option<String>,
}

/// The plan's next `count` changes, target by target: the plan's own transitions when no
/// ScheduleException names targets, otherwise every instant at which the set of asleep
/// targets changes (the same closure under dependencies the controller applies).
fn changes(
    schedule: &CompiledSchedule,
    graph: &ExecutionGraph,
    from: Timestamp,
    count: usize,
) -> Vec<Change> {
    if !schedule.has_scoped_exceptions() {
        return schedule
            .transitions(from, count)
            .into_iter()
            .map(|t| Change {
                at: t.at,
                operation: t.operation,
                targets: vec![],
                why: None,
            })
            .collect();
    }
    let names = graph.names();
    let mut sides = sides(schedule, graph, from, |s| s.transitions(from, count));
    let (_, mut prev) = sides.next().expect("the sides at `from` come first");
    let mut out = Vec::new();
    for (at, now) in sides {
        // Waking comes first at a shared instant, as in the controller.
        for operation in [Operation::WakeUp, Operation::Hibernate] {
            let asleep = operation == Operation::Hibernate;
            let changed: Vec<usize> = (0..names.len())
                .filter(|&i| prev.targets[i].asleep != asleep && now.targets[i].asleep == asleep)
                .collect();
            if changed.is_empty() {
                continue;
            }
            let all = changed.len() == names.len() && !now.departs();
            out.push(Change {
                at,
                operation,
                targets: if all {
                    vec![]
                } else {
                    changed.iter().map(|&i| names[i].clone()).collect()
                },
                why: (!all).then(|| {
                    changed
                        .iter()
                        .map(|&i| {
                            let why = now.targets[i].departs.as_deref().unwrap_or("as the plan");
                            format!("{} ({why})", names[i])
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
            });
        }
        prev = now;
        if out.len() >= count {
            break;
        }
    }
    out.truncate(count);
    out
}

/// Every target's wishes at `from`, then at each later instant at which the plan's or some
/// target's own schedule changes; `transitions` lists those changes of a view of the schedule.
/// A target's wish, closed under the dependencies, only changes at such an instant.
pub(crate) fn sides<'a>(
    schedule: &'a CompiledSchedule,
    graph: &'a ExecutionGraph,
    from: Timestamp,
    transitions: impl Fn(&CompiledSchedule) -> Vec<Transition>,
) -> impl Iterator<Item = (Timestamp, Wishes)> + 'a {
    let mut instants: BTreeSet<Timestamp> = transitions(schedule).iter().map(|t| t.at).collect();
    for n in graph.names() {
        instants.extend(transitions(&schedule.for_target(n)).iter().map(|t| t.at));
    }
    std::iter::once(from).chain(instants).map(move |at| {
        (
            at,
            target_wishes(schedule, &schedule.evaluate(at), graph, at),
        )
    })
}

/// Why the schedule changes at `at`; for a hibernation, also the holidays the sleep spans
/// (until `next`, the wake-up).
fn reason(
    schedule: &CompiledSchedule,
    holidays: &[(Timestamp, Timestamp, Holiday)],
    at: Timestamp,
    next: Option<Timestamp>,
) -> String {
    let e = schedule.evaluate(at);
    let Some(until) = next.or(e.next_wake_up_at).filter(|_| e.in_off_hours) else {
        return e.reason;
    };
    let tz = schedule.time_zone();
    let (first, last) = (
        at.to_zoned(tz.clone()).date(),
        until.to_zoned(tz.clone()).date(),
    );
    let mut names: Vec<String> = holidays
        .iter()
        .filter(|(from, to, h)| h.date >= first && h.date <= last && *from < until && *to > at)
        .map(|(_, _, h)| match &h.name {
            Some(n) => format!("{n} ({})", h.date),
            None => format!("holiday {}", h.date),
        })
        .collect();
    names.dedup();
    if names.is_empty() {
        e.reason
    } else {
        format!("{}; holidays: {}", e.reason, names.join(", "))
    }
}

/// The iCalendar text of a `calendarRef`, from a ConfigMap among the documents.
fn calendar<'a>(docs: &'a [Document], ns: &str, name: &str, key: &str) -> Result<&'a str, String> {
    let cm = docs
        .iter()
        .find(|d| {
            d.value.get("kind").and_then(Value::as_str) == Some("ConfigMap")
                && d.value.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && d.value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_NAMESPACE)
                    == ns
        })
        .ok_or_else(|| format!("calendarRef: ConfigMap {ns}/{name} is not among the documents"))?;
    cm.value
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("calendarRef: ConfigMap {ns}/{name} has no key {key:?}"))
}

/// Runs `preview`.
pub fn run(args: Args) -> Result<u8> {
    let now = Timestamp::now();
    let instant = |flag: &str, s: &String| -> Result<Timestamp> {
        s.parse().with_context(|| {
            format!("{flag} {s:?} is not an RFC 3339 instant such as 2026-11-27T00:00:00Z")
        })
    };
    let from = match &args.from {
        Some(s) => instant("--from", s)?,
        None => now,
    };
    let until = match &args.until {
        Some(s) => {
            let until = instant("--until", s)?;
            if until <= from {
                bail!("--until {s:?} is not after the start ({from})");
            }
            if args.format.is_some()
                && until.duration_since(from) > SignedDuration::from_hours(24 * MAX_PICTURE_DAYS)
            {
                bail!(
                    "--until {s:?} is more than {MAX_PICTURE_DAYS} days after the start ({from}): \
                     a picture spans at most {MAX_PICTURE_DAYS} days"
                );
            }
            Some(until)
        }
        None => None,
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
    let mut drawn = Vec::new();
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
                let unknown: Vec<&String> = e
                    .spec
                    .targets
                    .iter()
                    .flatten()
                    .filter(|t| !plan.spec.targets.iter().any(|x| x.name == **t))
                    .collect();
                if let Some(t) = unknown.first() {
                    let targets: Vec<&str> =
                        plan.spec.targets.iter().map(|x| x.name.as_str()).collect();
                    eprintln!(
                        "ScheduleException {ns}/{}: spec.targets: {t:?} is not a target of plan {name} (its targets: {}); the exception is left out until this is fixed",
                        e.metadata.name.as_deref().unwrap_or_default(),
                        targets.join(", ")
                    );
                    invalid = true;
                    continue;
                }
                let compiled = Exception::from_object(e)
                    .map_err(|err| err.to_string())
                    .and_then(|x| match &e.spec.calendar_ref {
                        None => Ok(x),
                        Some(r) => {
                            let text = calendar(&inputs.documents, ns, &r.name, &r.key)?;
                            x.with_calendar(text).map_err(|err| {
                                format!("calendarRef: ConfigMap {} key {}: {err}", r.name, r.key)
                            })
                        }
                    });
                match compiled {
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
        let holidays: Vec<(Timestamp, Timestamp, Holiday)> = applicable
            .iter()
            .flat_map(|x| {
                x.holidays
                    .iter()
                    .map(|h| (x.valid_from, x.valid_until, h.clone()))
            })
            .collect();
        let schedule = match CompiledSchedule::new(&plan.spec.schedule, applicable.clone()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("HibernationPlan {namespace}/{name}: {e}");
                invalid = true;
                continue;
            }
        };
        let graph = match ExecutionGraph::compile(&plan.spec) {
            Ok(g) => g,
            Err(errors) => {
                for e in errors {
                    eprintln!("HibernationPlan {namespace}/{name}: {}: {}", e.field(), e);
                }
                invalid = true;
                continue;
            }
        };
        if args.format.is_some() {
            drawn.push(picture::Plan {
                name,
                namespace,
                spec: plan.spec.schedule,
                exceptions: applicable,
                schedule,
                graph,
            });
            continue;
        }
        let tz = schedule.time_zone().clone();
        let mut transitions = changes(&schedule, &graph, from, args.count);
        if let Some(until) = until {
            transitions.retain(|t| t.at < until);
        }
        if args.output == Output::Text {
            println!("{name} ({namespace}), {}:", schedule.time_zone_name());
            if transitions.is_empty() {
                match until {
                    Some(until) => println!("  no transition before {until}"),
                    None => println!("  no transition within a year"),
                }
            }
        }
        let next_of: Vec<Option<Timestamp>> = (0..transitions.len())
            .map(|i| transitions.get(i + 1).map(|n| n.at))
            .collect();
        for (t, next) in transitions.into_iter().zip(next_of) {
            let local = t.at.to_zoned(tz.clone());
            let row = Row {
                plan: name.clone(),
                namespace: namespace.clone(),
                at: t.at.to_string(),
                local: local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                operation: t.operation.as_str(),
                reason: match &t.why {
                    Some(why) => why.clone(),
                    None => reason(&schedule, &holidays, t.at, next),
                },
                targets: t.targets,
            };
            if args.output == Output::Text {
                let verb = match t.operation {
                    hibernator_api::Operation::Hibernate => "hibernate",
                    hibernator_api::Operation::WakeUp => "wake up",
                };
                println!(
                    "  {}  {verb:<9}  ({})  {}",
                    local.strftime("%a %Y-%m-%d %H:%M %Z"),
                    row.at,
                    if row.targets.is_empty() {
                        row.reason.clone()
                    } else {
                        format!("only {}", row.reason)
                    }
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
    if let Some(format) = args.format {
        let until = until.unwrap_or_else(|| {
            from.saturating_add(SignedDuration::from_hours(24 * PICTURE_DAYS))
                .expect("in range")
        });
        let chart = picture::Chart::new(&drawn, from, until, now);
        print!(
            "{}",
            match format {
                Format::Svg => chart.svg(),
                Format::Html => chart.html(),
            }
        );
    } else if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(if invalid { exit::INVALID } else { exit::OK })
}
