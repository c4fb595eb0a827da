//! HibernationNotification: who hears about a plan's nights (Slack, Microsoft Teams, a
//! CloudEvents webhook), kept in Git next to the plans.
//!
//! What is sent is derived from the plans' status ([`occurrences`]), never from the
//! controller's memory: an occurrence has a stable id, and the notification's status keeps the
//! ids each sink has handled (its ledger), so a restart or a new leader sends what was due and
//! not what was sent.

pub mod render;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{NAME_PATTERN, condition_types, find_condition};
use crate::exception::{PlanRef, parse_lead_time};
use crate::plan::{HibernationPlan, HibernationPlanStatus, Operation, Phase, TargetState};

/// `headsUpBefore` when absent.
pub const DEFAULT_HEADS_UP_BEFORE: &str = "15m";
/// Most TargetFailed occurrences of one operation sent one by one; more become one summary.
pub const TARGET_FAILED_SUMMARY_THRESHOLD: usize = 3;

/// Specification of a HibernationNotification.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hibernator.ardikasaputro.io",
    version = "v1alpha1",
    kind = "HibernationNotification",
    plural = "hibernationnotifications",
    singular = "hibernationnotification",
    shortname = "hnotif",
    category = "hibernator",
    namespaced,
    status = "HibernationNotificationStatus",
    derive = "PartialEq",
    doc = "Sends a plan's events (a heads-up before the night, hibernation and wake-up, failures) to Slack, Microsoft Teams or a CloudEvents webhook.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.selector) != has(self.planRefs)")
    .message("give exactly one of selector and planRefs")
    .field_path(".selector"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.headsUpBefore) || self.events.exists(e, e == 'HeadsUp')")
    .message("headsUpBefore applies only when events include HeadsUp")
    .field_path(".headsUpBefore"))]
pub struct HibernationNotificationSpec {
    /// The plans of this namespace whose labels match; an empty selector selects none (not
    /// all). Exclusive with `planRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The plans of this namespace, by name. Exclusive with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub plan_refs: Option<Vec<PlanRef>>,
    /// What to send.
    #[schemars(length(min = 1, max = 9))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub events: Vec<NotificationEvent>,
    /// For `HeadsUp`: how long before a hibernation starts (`15m`, `1h`, `1h30m`; at most
    /// `24h`). Default `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"),
        length(min = 2, max = 16)
    )]
    pub heads_up_before: Option<String>,
    /// Where to send them; each sink is one of `slack`, `teams` or `webhook`.
    #[schemars(length(min = 1, max = 10))]
    pub sinks: Vec<Sink>,
}

/// The events a notification can send.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum NotificationEvent {
    /// `headsUpBefore` before a hibernation starts, with the command that keeps the plan awake
    /// tonight.
    HeadsUp,
    /// A hibernation started.
    HibernationStarted,
    /// A hibernation finished with every target asleep.
    Hibernated,
    /// A wake-up started.
    WakeUpStarted,
    /// A wake-up finished with every target awake.
    Awake,
    /// A target's runner failed (several at once become one summary).
    TargetFailed,
    /// The plan is stalled (`Stalled=True`): it needs a person.
    Stalled,
    /// A stalled plan is no longer stalled.
    Recovered,
    /// Restore data is missing or incomplete (`Restored=False`).
    RestoreIncomplete,
}

impl NotificationEvent {
    /// Every event, in the order of a night.
    pub const ALL: [NotificationEvent; 9] = [
        Self::HeadsUp,
        Self::HibernationStarted,
        Self::Hibernated,
        Self::WakeUpStarted,
        Self::Awake,
        Self::TargetFailed,
        Self::Stalled,
        Self::Recovered,
        Self::RestoreIncomplete,
    ];

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeadsUp => "HeadsUp",
            Self::HibernationStarted => "HibernationStarted",
            Self::Hibernated => "Hibernated",
            Self::WakeUpStarted => "WakeUpStarted",
            Self::Awake => "Awake",
            Self::TargetFailed => "TargetFailed",
            Self::Stalled => "Stalled",
            Self::Recovered => "Recovered",
            Self::RestoreIncomplete => "RestoreIncomplete",
        }
    }

    /// Parses the manifest spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The CloudEvents `type` (`io.ardikasaputro.hibernator.plan.hibernated`).
    pub fn cloud_event_type(self) -> String {
        format!(
            "io.ardikasaputro.hibernator.plan.{}",
            self.as_str().to_ascii_lowercase()
        )
    }

    /// True for events that say something went wrong.
    pub fn is_bad_news(self) -> bool {
        matches!(
            self,
            Self::TargetFailed | Self::Stalled | Self::RestoreIncomplete
        )
    }
}

impl std::fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One destination: exactly one of `slack`, `teams` and `webhook`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.slack) ? 1 : 0) + (has(self.teams) ? 1 : 0) + (has(self.webhook) ? 1 : 0) == 1")
    .message("give exactly one of slack, teams and webhook"))]
pub struct Sink {
    /// The sink's name in status and metrics; default: its type (`slack`, `teams`, `webhook`).
    /// Names must differ within a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = NAME_PATTERN))]
    pub name: Option<String>,
    /// A Slack incoming webhook; the message uses Block Kit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<WebhookSecret>,
    /// A Microsoft Teams workflow webhook; the message is an Adaptive Card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<WebhookSecret>,
    /// Any HTTPS endpoint; the message is a CloudEvents 1.0 event in structured JSON mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<CloudEventsWebhook>,
    /// Allow an `http://` URL (the URL and the messages then cross the network unencrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// The kinds of sink.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    /// Slack incoming webhook.
    Slack,
    /// Microsoft Teams workflow webhook.
    Teams,
    /// CloudEvents webhook.
    Webhook,
}

impl SinkType {
    /// The type as written in manifests and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::Webhook => "webhook",
        }
    }
}

impl Sink {
    /// The sink's type (the first of the three that is set).
    pub fn type_(&self) -> Option<SinkType> {
        if self.slack.is_some() {
            Some(SinkType::Slack)
        } else if self.teams.is_some() {
            Some(SinkType::Teams)
        } else if self.webhook.is_some() {
            Some(SinkType::Webhook)
        } else {
            None
        }
    }

    /// The Secret key holding the URL.
    pub fn url_secret(&self) -> Option<&SecretKeyRef> {
        self.slack
            .as_ref()
            .or(self.teams.as_ref())
            .map(|w| &w.webhook_secret_ref)
            .or(self.webhook.as_ref().map(|w| &w.url_secret_ref))
    }

    /// The name in status and metrics.
    pub fn effective_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.type_()
                .map(SinkType::as_str)
                .unwrap_or("sink")
                .to_string()
        })
    }
}

/// A webhook URL kept in a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecret {
    /// The Secret (this namespace) and key holding the webhook URL, which carries its token.
    pub webhook_secret_ref: SecretKeyRef,
}

/// A CloudEvents receiver.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CloudEventsWebhook {
    /// The Secret (this namespace) and key holding the URL.
    pub url_secret_ref: SecretKeyRef,
    /// The Secret and key holding an HMAC key: each request then carries
    /// `X-Hibernator-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,
    /// Extra request headers (not secret: they are kept in Git and shown in status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 20))]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A key of a Secret in the notification's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Observed state of a HibernationNotification. Written only by the controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HibernationNotificationStatus {
    /// The generation the controller last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (`Ready`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::status::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The plans it selects now (at most 100 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub plans: Vec<String>,
    /// Per sink: the last delivery and counters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sinks: Vec<SinkStatus>,
    /// Per plan and sink, the occurrences handled (delivered, or given up on): what keeps a
    /// restarted controller from sending them again. Ids no plan status can produce any more
    /// are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ledger: Vec<LedgerEntry>,
}

/// One sink's deliveries.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// `slack`, `teams` or `webhook`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The last delivery (or the last one given up on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<Delivery>,
    /// Messages delivered.
    #[serde(default)]
    pub delivered: i64,
    /// Messages given up on after the last retry (or refused with a 4xx answer).
    #[serde(default)]
    pub failed: i64,
    /// Attempts that failed and were retried.
    #[serde(default)]
    pub retries: i64,
}

/// One delivery.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// When it ended.
    pub time: Time,
    /// The plan.
    pub plan: String,
    /// The event.
    pub event: NotificationEvent,
    /// `Delivered` or `Failed`.
    pub result: DeliveryResult,
    /// Attempts made.
    pub attempts: i32,
    /// Why the last attempt failed (never the URL or any Secret value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a delivery ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver accepted it (2xx).
    Delivered,
    /// Given up on.
    Failed,
}

/// The occurrences of one plan a sink has handled.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The plan.
    pub plan: String,
    /// The sink's name.
    pub sink: String,
    /// Handled occurrence ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handled: Vec<String>,
}

impl HibernationNotificationStatus {
    /// The ledger entry of `plan` and `sink`; `None` when the pair is new.
    pub fn ledger_of(&self, plan: &str, sink: &str) -> Option<&LedgerEntry> {
        self.ledger
            .iter()
            .find(|l| l.plan == plan && l.sink == sink)
    }
}

impl HibernationNotification {
    /// `headsUpBefore` with its default applied; `None` when it cannot be read.
    pub fn heads_up_before(&self) -> Option<SignedDuration> {
        let text = self
            .spec
            .heads_up_before
            .as_deref()
            .unwrap_or(DEFAULT_HEADS_UP_BEFORE);
        parse_lead_time(text)
            .filter(|s| *s <= crate::exception::MAX_LEAD_TIME_SECONDS)
            .map(SignedDuration::from_secs)
    }

    /// True when the plan `name` with `labels` is selected.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        use kube::core::{Selector, SelectorExt};
        if let Some(refs) = &self.spec.plan_refs {
            return refs.iter().any(|r| r.name == name);
        }
        match &self.spec.selector {
            // An empty selector selects nothing: a notification for every plan is asked for
            // with a label, not by omission.
            Some(s)
                if s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty()) =>
            {
                Selector::try_from(s.clone()).is_ok_and(|s| s.matches(labels))
            }
            _ => false,
        }
    }

    /// Problems with the spec the schema cannot see (duplicate sink names, an unreadable
    /// `headsUpBefore`, an empty or unreadable selector), each as `field: message`.
    pub fn spec_problems(&self) -> Vec<String> {
        crate::validate::notification_semantics(self)
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

/// One thing that happened to a plan, as its status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// The event.
    pub event: NotificationEvent,
    /// Stable id within the plan: the same occurrence always has the same id.
    pub id: String,
    /// When it happened (for HeadsUp: when it became due).
    pub time: Timestamp,
    /// The cycle it belongs to.
    pub cycle: Option<String>,
    /// The operation it belongs to.
    pub operation: Option<Operation>,
    /// When the operation started and finished.
    pub started_at: Option<Timestamp>,
    /// When the operation finished.
    pub finished_at: Option<Timestamp>,
    /// The targets concerned, with what became of them.
    pub targets: Vec<TargetLine>,
    /// Detail (a condition's message, a target's error).
    pub detail: Option<String>,
}

/// A target in a message.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetLine {
    /// Target name.
    pub name: String,
    /// Its state (`Completed`, `Failed`, ...) or `-` when unknown.
    pub outcome: String,
    /// How long it took.
    pub duration: Option<SignedDuration>,
    /// Its message.
    pub message: Option<String>,
}

/// The occurrences a plan's status shows at `now`, oldest first. Cycle occurrences come from
/// the current cycle and `status.history`; `Stalled` and `RestoreIncomplete` from conditions;
/// `HeadsUp` from `status.schedule.nextHibernateAt` while the plan is awake; `Recovered` for
/// each stall in `stalls_seen` (ids of Stalled occurrences handled before) that is over.
pub fn occurrences(
    plan: &HibernationPlan,
    now: Timestamp,
    heads_up_before: SignedDuration,
    stalls_seen: &[String],
) -> Vec<Occurrence> {
    let Some(status) = plan.status.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // The current cycle first: of two occurrences with one id, the first (with the targets'
    // outcomes) is kept.
    current_cycle_occurrences(status, &mut out);
    history_occurrences(status, &mut out);
    condition_occurrences(status, stalls_seen, now, &mut out);
    if let Some(h) = heads_up(status, now, heads_up_before) {
        out.push(h);
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|o| seen.insert(o.id.clone()));
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    out
}

fn op_key(cycle: &str, op: Operation, started: Timestamp) -> String {
    format!("{cycle}/{op}@{}", started.as_second())
}

fn kinds(op: Operation) -> (NotificationEvent, NotificationEvent) {
    match op {
        Operation::Hibernate => (
            NotificationEvent::HibernationStarted,
            NotificationEvent::Hibernated,
        ),
        Operation::WakeUp => (NotificationEvent::WakeUpStarted, NotificationEvent::Awake),
    }
}

fn cycle_base(
    event: NotificationEvent,
    key: &str,
    cycle: &str,
    op: Operation,
    started: Timestamp,
    finished: Option<Timestamp>,
) -> Occurrence {
    Occurrence {
        event,
        id: format!("{key}/{event}"),
        time: started,
        cycle: Some(cycle.to_string()),
        operation: Some(op),
        started_at: Some(started),
        finished_at: finished,
        targets: Vec::new(),
        detail: None,
    }
}

/// Occurrences of the operation under way or last finished, with its targets' outcomes.
fn current_cycle_occurrences(status: &HibernationPlanStatus, out: &mut Vec<Occurrence>) {
    let Some(cycle) = status.current_cycle.as_ref() else {
        return;
    };
    let started = cycle.started_at.0;
    let finished = cycle.finished_at.as_ref().map(|t| t.0);
    let key = op_key(&cycle.id, cycle.operation, started);
    let lines: Vec<TargetLine> = status
        .targets
        .iter()
        .filter(|t| t.operation.is_none() && cycle.runs(&t.name))
        .map(|t| TargetLine {
            name: t.name.clone(),
            outcome: format!("{:?}", t.state),
            duration: t
                .started_at
                .as_ref()
                .zip(t.finished_at.as_ref())
                .map(|(s, f)| f.0.duration_since(s.0)),
            message: t.message.clone(),
        })
        .collect();
    let (s, d) = kinds(cycle.operation);
    let mut start = cycle_base(s, &key, &cycle.id, cycle.operation, started, finished);
    start.targets = lines
        .iter()
        .map(|l| TargetLine {
            name: l.name.clone(),
            outcome: "-".into(),
            duration: None,
            message: None,
        })
        .collect();
    out.push(start);
    for t in status
        .targets
        .iter()
        .filter(|t| t.operation.is_none() && cycle.runs(&t.name) && t.state == TargetState::Failed)
    {
        let mut o = cycle_base(
            NotificationEvent::TargetFailed,
            &key,
            &cycle.id,
            cycle.operation,
            started,
            finished,
        );
        o.id = format!("{key}/TargetFailed/{}", t.name);
        o.time = t.finished_at.as_ref().map(|f| f.0).unwrap_or(started);
        o.targets = lines.iter().filter(|l| l.name == t.name).cloned().collect();
        out.push(o);
    }
    let all_done = lines
        .iter()
        .all(|l| l.outcome == "Completed" || l.outcome == "Skipped");
    if let Some(f) = finished.filter(|_| all_done) {
        let mut o = cycle_base(d, &key, &cycle.id, cycle.operation, started, Some(f));
        o.time = f;
        o.targets = lines;
        out.push(o);
    }
}

/// Occurrences of the operations `status.history` remembers (those the current cycle already
/// gave, with more detail, are dropped by the caller). Failed targets come from history only
/// for operations other than the current one, whose targets say which failed and which were
/// merely not run.
fn history_occurrences(status: &HibernationPlanStatus, out: &mut Vec<Occurrence>) {
    let current = status
        .current_cycle
        .as_ref()
        .map(|c| op_key(&c.id, c.operation, c.started_at.0));
    for record in &status.history {
        for (op, r) in [
            (Operation::Hibernate, record.hibernate.as_ref()),
            (Operation::WakeUp, record.wake_up.as_ref()),
        ] {
            let Some(r) = r else { continue };
            let started = r.started_at.0;
            let finished = r.finished_at.as_ref().map(|t| t.0);
            let key = op_key(&record.id, op, started);
            let (s, d) = kinds(op);
            out.push(cycle_base(s, &key, &record.id, op, started, finished));
            let Some(finished) = finished else { continue };
            if r.succeeded {
                let mut o = cycle_base(d, &key, &record.id, op, started, Some(finished));
                o.time = finished;
                out.push(o);
            }
            if current.as_deref() == Some(key.as_str()) {
                continue;
            }
            for failed in &r.failed_targets {
                let (name, message) = match failed.split_once(": ") {
                    Some((n, m)) => (n.to_string(), Some(m.to_string())),
                    None => (failed.clone(), None),
                };
                let mut o = cycle_base(
                    NotificationEvent::TargetFailed,
                    &key,
                    &record.id,
                    op,
                    started,
                    Some(finished),
                );
                o.id = format!("{key}/TargetFailed/{name}");
                o.time = finished;
                o.targets = vec![TargetLine {
                    name,
                    outcome: "Failed".into(),
                    duration: None,
                    message,
                }];
                out.push(o);
            }
        }
    }
}

/// `Stalled`, `Recovered` and `RestoreIncomplete`, from the conditions.
fn condition_occurrences(
    status: &HibernationPlanStatus,
    stalls_seen: &[String],
    now: Timestamp,
    out: &mut Vec<Occurrence>,
) {
    let plain = |event, id: String, time, detail: Option<String>| Occurrence {
        event,
        id,
        time,
        cycle: status.current_cycle.as_ref().map(|c| c.id.clone()),
        operation: None,
        started_at: None,
        finished_at: None,
        targets: Vec::new(),
        detail,
    };
    let stalled =
        find_condition(&status.conditions, condition_types::STALLED).filter(|c| c.status == "True");
    let current_stall = stalled.map(|c| stall_id(c.last_transition_time.0));
    if let Some(c) = stalled {
        out.push(plain(
            NotificationEvent::Stalled,
            stall_id(c.last_transition_time.0),
            c.last_transition_time.0,
            Some(format!("{}: {}", c.reason, c.message)),
        ));
    }
    for seen in stalls_seen {
        if Some(seen) == current_stall.as_ref() || !seen.starts_with("stalled@") {
            continue;
        }
        let ready = find_condition(&status.conditions, condition_types::READY);
        out.push(plain(
            NotificationEvent::Recovered,
            format!("recovered/{seen}"),
            ready
                .filter(|r| r.status == "True")
                .map(|r| r.last_transition_time.0)
                .unwrap_or(now),
            ready.map(|r| format!("{}: {}", r.reason, r.message)),
        ));
    }
    if let Some(c) = find_condition(&status.conditions, condition_types::RESTORED)
        .filter(|c| c.status == "False")
    {
        out.push(plain(
            NotificationEvent::RestoreIncomplete,
            format!("restore@{}", c.last_transition_time.0.as_second()),
            c.last_transition_time.0,
            Some(format!("{}: {}", c.reason, c.message)),
        ));
    }
}

/// The ledger id of the stall that began at `since`.
pub fn stall_id(since: Timestamp) -> String {
    format!("stalled@{}", since.as_second())
}

/// `HeadsUp` while the plan is awake and its next hibernation is at most `before` away.
fn heads_up(
    status: &HibernationPlanStatus,
    now: Timestamp,
    before: SignedDuration,
) -> Option<Occurrence> {
    let at = status.schedule.as_ref()?.next_hibernate_at.as_ref()?.0;
    let awake = matches!(status.phase, Some(Phase::Active | Phase::PartlyAwake));
    let due = at - before;
    if !awake || now < due || now >= at {
        return None;
    }
    Some(Occurrence {
        event: NotificationEvent::HeadsUp,
        id: format!("headsUp@{}", at.as_second()),
        time: due,
        cycle: None,
        operation: Some(Operation::Hibernate),
        started_at: Some(at),
        finished_at: None,
        targets: Vec::new(),
        detail: None,
    })
}

/// When the next `HeadsUp` becomes due for a plan (to wake the notifier then).
pub fn next_heads_up(plan: &HibernationPlan, before: SignedDuration) -> Option<Timestamp> {
    let at = plan
        .status
        .as_ref()?
        .schedule
        .as_ref()?
        .next_hibernate_at
        .as_ref()?
        .0;
    Some(at - before)
}

/// The messages to send for `due` occurrences of one plan (not yet handled, of the events a
/// notification wants): one per occurrence, except that more than
/// [`TARGET_FAILED_SUMMARY_THRESHOLD`] TargetFailed occurrences of one operation become one
/// summary. Each message lists the occurrence ids it covers.
pub fn batch(due: Vec<Occurrence>) -> Vec<(Vec<String>, Occurrence)> {
    let mut failures: BTreeMap<(Option<String>, Option<&'static str>), Vec<Occurrence>> =
        BTreeMap::new();
    let mut out: Vec<(Vec<String>, Occurrence)> = Vec::new();
    for o in due {
        if o.event == NotificationEvent::TargetFailed {
            failures
                .entry((o.cycle.clone(), o.operation.map(Operation::as_str)))
                .or_default()
                .push(o);
        } else {
            out.push((vec![o.id.clone()], o));
        }
    }
    for (_, group) in failures {
        if group.len() > TARGET_FAILED_SUMMARY_THRESHOLD {
            let ids = group.iter().map(|o| o.id.clone()).collect();
            let mut summary = group[0].clone();
            summary.time = group.iter().map(|o| o.time).max().unwrap_or(summary.time);
            summary.targets = group.into_iter().flat_map(|o| o.targets).collect();
            summary.id = format!(
                "{}/TargetFailed/{}-targets",
                summary
                    .id
                    .split("/TargetFailed/")
                    .next()
                    .unwrap_or_default(),
                summary.targets.len()
            );
            out.push((ids, summary));
        } else {
            out.extend(group.into_iter().map(|o| (vec![o.id.clone()], o)));
        }
    }
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then_with(|| a.1.id.cmp(&b.1.id)));
    out
}

/// The phase a message reports next to the event, when the plan has one.
pub fn phase_of(plan: &HibernationPlan) -> Option<Phase> {
    plan.status.as_ref().and_then(|s| s.phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{CycleStatus, ScheduleStatus, TargetStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(status: HibernationPlanStatus) -> HibernationPlan {
        let mut p = crate::fixtures::PlanBuilder::new("prod").build();
        p.status = Some(status);
        p
    }

    fn target(name: &str, state: TargetState, finished: Option<&str>) -> TargetStatus {
        TargetStatus {
            name: name.into(),
            state,
            attempts: 1,
            job: None,
            progress: None,
            message: (state == TargetState::Failed).then(|| "AccessDenied".to_string()),
            started_at: Some(Time(ts("2026-12-01T20:00:00Z"))),
            finished_at: finished.map(|f| Time(ts(f))),
            resources_recorded: None,
            resources_restored: None,
            operation: None,
            cycle: None,
            schedule_override: None,
        }
    }

    fn kinds(os: &[Occurrence]) -> Vec<&'static str> {
        os.iter().map(|o| o.event.as_str()).collect()
    }

    const NOW: &str = "2026-12-01T21:00:00Z";
    const M15: SignedDuration = SignedDuration::from_mins(15);

    #[test]
    fn a_running_hibernation_shows_its_start_and_its_failures() {
        let status = HibernationPlanStatus {
            current_cycle: Some(CycleStatus {
                id: "c1".into(),
                operation: Operation::Hibernate,
                started_at: Time(ts("2026-12-01T20:00:00Z")),
                finished_at: None,
                targets: vec![],
            }),
            targets: vec![
                target("db", TargetState::Failed, Some("2026-12-01T20:01:00Z")),
                target("app", TargetState::Running, None),
            ],
            ..Default::default()
        };
        let os = occurrences(&plan(status), ts(NOW), M15, &[]);
        assert_eq!(kinds(&os), vec!["HibernationStarted", "TargetFailed"]);
        assert_eq!(os[1].targets[0].message.as_deref(), Some("AccessDenied"));
        assert!(os[1].id.ends_with("/TargetFailed/db"), "{}", os[1].id);
    }

    #[test]
    fn a_finished_operation_says_so_once_even_when_history_repeats_it() {
        let started = Time(ts("2026-12-01T20:00:00Z"));
        let finished = Time(ts("2026-12-01T20:02:00Z"));
        let status = HibernationPlanStatus {
            current_cycle: Some(CycleStatus {
                id: "c1".into(),
                operation: Operation::Hibernate,
                started_at: started.clone(),
                finished_at: Some(finished.clone()),
                targets: vec![],
            }),
            targets: vec![target(
                "db",
                TargetState::Completed,
                Some("2026-12-01T20:02:00Z"),
            )],
            history: vec![crate::plan::CycleRecord {
                id: "c1".into(),
                hibernate: Some(crate::plan::OperationRecord {
                    started_at: started,
                    finished_at: Some(finished),
                    succeeded: true,
                    retries: 0,
                    failed_targets: vec![],
                }),
                wake_up: None,
            }],
            ..Default::default()
        };
        let os = occurrences(&plan(status), ts(NOW), M15, &[]);
        assert_eq!(kinds(&os), vec!["HibernationStarted", "Hibernated"]);
        assert_eq!(
            os[1].targets.len(),
            1,
            "the current cycle's version, with targets"
        );
    }

    #[test]
    fn heads_up_only_inside_its_window_and_while_awake() {
        let status = |phase| HibernationPlanStatus {
            phase: Some(phase),
            schedule: Some(ScheduleStatus {
                next_hibernate_at: Some(Time(ts("2026-12-01T20:00:00Z"))),
                ..Default::default()
            }),
            ..Default::default()
        };
        let at = |now: &str, phase| kinds(&occurrences(&plan(status(phase)), ts(now), M15, &[]));
        assert!(at("2026-12-01T19:44:59Z", Phase::Active).is_empty());
        assert_eq!(at("2026-12-01T19:45:00Z", Phase::Active), vec!["HeadsUp"]);
        assert_eq!(
            at("2026-12-01T19:59:59Z", Phase::PartlyAwake),
            vec!["HeadsUp"]
        );
        assert!(at("2026-12-01T20:00:00Z", Phase::Active).is_empty());
        assert!(at("2026-12-01T19:50:00Z", Phase::Suspended).is_empty());
    }

    #[test]
    fn recovered_follows_a_stall_that_was_seen() {
        use crate::common::condition;
        let mut status = HibernationPlanStatus::default();
        status.conditions.push(condition(
            condition_types::STALLED,
            true,
            "ConnectorMissing",
            "CloudProvider aws not found",
            None,
            ts("2026-12-01T20:10:00Z"),
        ));
        let os = occurrences(&plan(status.clone()), ts(NOW), M15, &[]);
        assert_eq!(kinds(&os), vec!["Stalled"]);
        let seen = vec![os[0].id.clone()];
        assert!(
            occurrences(&plan(status.clone()), ts(NOW), M15, &seen)
                .iter()
                .all(|o| o.event != NotificationEvent::Recovered),
            "still stalled"
        );
        status.conditions = vec![condition(
            condition_types::READY,
            true,
            "Scheduled",
            "ok",
            None,
            ts("2026-12-01T20:30:00Z"),
        )];
        let os = occurrences(&plan(status), ts(NOW), M15, &seen);
        assert_eq!(kinds(&os), vec!["Recovered"]);
        assert_eq!(os[0].time, ts("2026-12-01T20:30:00Z"));
    }

    #[test]
    fn many_failures_of_one_operation_become_one_summary() {
        let o = |t: &str| Occurrence {
            event: NotificationEvent::TargetFailed,
            id: format!("c1/hibernate@1/TargetFailed/{t}"),
            time: ts(NOW),
            cycle: Some("c1".into()),
            operation: Some(Operation::Hibernate),
            started_at: None,
            finished_at: None,
            targets: vec![TargetLine {
                name: t.into(),
                outcome: "Failed".into(),
                duration: None,
                message: None,
            }],
            detail: None,
        };
        let few = batch(vec![o("a"), o("b")]);
        assert_eq!(few.len(), 2);
        let many = batch((0..50).map(|i| o(&format!("t{i}"))).collect());
        assert_eq!(many.len(), 1);
        assert_eq!(many[0].0.len(), 50, "the summary covers every id");
        assert_eq!(many[0].1.targets.len(), 50);
        assert_eq!(many[0].1.id, "c1/hibernate@1/TargetFailed/50-targets");
    }

    #[test]
    fn selectors_select_nothing_when_empty() {
        let mut n: HibernationNotification = serde_json::from_value(serde_json::json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "HibernationNotification",
            "metadata": {"name": "n", "namespace": "a"},
            "spec": {"selector": {}, "events": ["Hibernated"], "sinks": [
                {"slack": {"webhookSecretRef": {"name": "s", "key": "url"}}},
                {"slack": {"webhookSecretRef": {"name": "s", "key": "url"}}}
            ]}
        }))
        .unwrap();
        let labels = BTreeMap::from([("env".to_string(), "dev".to_string())]);
        assert!(!n.selects("p", &labels));
        n.spec.selector = Some(LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        });
        assert!(n.selects("p", &labels));
        assert_eq!(
            n.spec_problems(),
            vec!["spec.sinks[1].name: the name \"slack\" is taken by spec.sinks[0]"]
        );
    }
}
