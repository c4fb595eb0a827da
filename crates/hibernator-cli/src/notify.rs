//! `notify test NOTIFICATION [--event E] [--plan P]`: sends a sample message through every sink
//! of a HibernationNotification, rendered and sent as the controller does, with the user's
//! credentials (the user must be allowed to read the sinks' Secrets).

use anyhow::{Context, Result, bail};
use hibernator_api::notification::{
    HibernationNotification, NotificationEvent, Occurrence, TargetLine, render,
};
use hibernator_api::plan::{HibernationPlan, Operation};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::exit;
use crate::live::{Scope, client_and_namespace, runtime};

/// Arguments of `notify`.
#[derive(clap::Args, Debug)]
pub struct NotifyArgs {
    #[command(subcommand)]
    action: Action,
}

/// What `notify` does.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Send a sample message through every sink of a HibernationNotification now. Exit 0 when
    /// every sink accepted it, 1 otherwise.
    Test {
        /// The HibernationNotification.
        notification: String,
        #[command(flatten)]
        scope: Scope,
        /// The event the sample is (HeadsUp, Hibernated, TargetFailed, ...).
        #[arg(long, default_value = "HeadsUp")]
        event: String,
        /// The plan the sample is about (default: the first plan the notification selects).
        #[arg(long)]
        plan: Option<String>,
    },
}

/// Runs `notify`.
pub fn notify(args: NotifyArgs) -> Result<u8> {
    let Action::Test {
        notification,
        scope,
        event,
        plan,
    } = args.action;
    let Some(event) = NotificationEvent::parse(&event) else {
        let all: Vec<&str> = NotificationEvent::ALL.iter().map(|e| e.as_str()).collect();
        bail!(
            "--event {event:?} is not an event; one of: {}",
            all.join(", ")
        );
    };
    runtime()?.block_on(async {
        let (client, ns) = client_and_namespace(&scope).await?;
        let n = Api::<HibernationNotification>::namespaced(client.clone(), &ns)
            .get_opt(&notification)
            .await
            .with_context(|| format!("failed to read HibernationNotification {ns}/{notification}"))?
            .with_context(|| format!("HibernationNotification {ns}/{notification} not found"))?;
        let plan = sample_plan(&client, &ns, &n, plan.as_deref()).await?;
        let occurrence = sample(event, &plan, Timestamp::now());
        let http = hibernator_notify::Http::new()?;
        let retry = hibernator_notify::Retry {
            max_attempts: 1,
            ..Default::default()
        };
        let mut failed = 0;
        for sink in &n.spec.sinks {
            let Some(type_) = sink.type_() else { continue };
            let body = render::body(type_, &plan, &occurrence);
            let message = hibernator_notify::Message {
                namespace: &ns,
                sink,
                body: &body,
            };
            let report = hibernator_notify::deliver(&client, &http, &retry, message, |_| {}).await;
            match report.error {
                None => println!(
                    "{} ({}): delivered {event} about {}",
                    sink.effective_name(),
                    type_.as_str(),
                    plan.name_any()
                ),
                Some(e) => {
                    failed += 1;
                    println!(
                        "{} ({}): failed: {e}",
                        sink.effective_name(),
                        type_.as_str()
                    );
                }
            }
        }
        Ok(if failed == 0 { exit::OK } else { exit::INVALID })
    })
}

/// `--plan`, or the first plan of the namespace the notification selects.
async fn sample_plan(
    client: &kube::Client,
    ns: &str,
    n: &HibernationNotification,
    name: Option<&str>,
) -> Result<HibernationPlan> {
    let api: Api<HibernationPlan> = Api::namespaced(client.clone(), ns);
    if let Some(name) = name {
        return crate::live::get_plan(&api, name, ns).await;
    }
    let mut plans = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("failed to list the plans of namespace {ns}"))?
        .items;
    plans.sort_by_key(|p| p.name_any());
    plans
        .into_iter()
        .find(|p| n.selects(&p.name_any(), p.labels()))
        .with_context(|| {
            format!(
                "HibernationNotification {ns}/{} selects no plan; name one with --plan",
                n.name_any()
            )
        })
}

/// A sample occurrence of `event` for `plan`, marked as a test, with an id of its own (a
/// receiver that de-duplicates does not drop the next test).
fn sample(event: NotificationEvent, plan: &HibernationPlan, now: Timestamp) -> Occurrence {
    let operation = match event {
        NotificationEvent::WakeUpStarted | NotificationEvent::Awake => Some(Operation::WakeUp),
        NotificationEvent::Stalled
        | NotificationEvent::Recovered
        | NotificationEvent::RestoreIncomplete => None,
        _ => Some(Operation::Hibernate),
    };
    let outcome = match event {
        NotificationEvent::TargetFailed => "Failed",
        NotificationEvent::Hibernated | NotificationEvent::Awake => "Completed",
        _ => "-",
    };
    let next_hibernation = plan
        .status
        .as_ref()
        .and_then(|s| s.schedule.as_ref())
        .and_then(|s| s.next_hibernate_at.as_ref())
        .map(|t| t.0);
    Occurrence {
        event,
        id: format!("test/{event}@{}", now.as_millisecond()),
        time: now,
        cycle: Some("test".into()),
        operation,
        started_at: if event == NotificationEvent::HeadsUp {
            next_hibernation.or(Some(now))
        } else {
            Some(now)
        },
        finished_at: None,
        targets: plan
            .spec
            .targets
            .iter()
            .take(if event == NotificationEvent::TargetFailed {
                1
            } else {
                usize::MAX
            })
            .map(|t| TargetLine {
                name: t.name.clone(),
                outcome: outcome.into(),
                duration: None,
                message: None,
            })
            .collect(),
        detail: Some("A test message from kubectl hibernator notify test.".into()),
    }
}
