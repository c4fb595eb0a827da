//! The messages: Slack Block Kit, a Microsoft Teams Adaptive Card and a CloudEvents 1.0
//! structured-mode event, all from one [`Message`]. Pure functions of their input, so the
//! controller and `kubectl hibernator notify test` send the same bytes for the same occurrence.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{NotificationEvent, Occurrence};
use crate::plan::Phase;

/// Slack limits (Block Kit reference): a header's text, a section's text.
const SLACK_HEADER_MAX: usize = 150;
const SLACK_SECTION_MAX: usize = 3000;
/// Targets listed one per line before "and N more".
const TARGETS_LISTED: usize = 15;

/// One notification about one plan.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The plan's namespace.
    pub namespace: &'a str,
    /// The plan's name.
    pub plan: &'a str,
    /// The plan's uid (part of the CloudEvents id).
    pub plan_uid: &'a str,
    /// What happened.
    pub occurrence: &'a Occurrence,
    /// The plan's phase now.
    pub phase: Option<Phase>,
    /// The plan's next transition (`WakeUp at 2026-12-04T12:00:00Z`).
    pub next_transition: Option<String>,
    /// The next scheduled wake-up.
    pub next_wake_up_at: Option<Timestamp>,
}

impl Message<'_> {
    /// `team-a/prod`.
    pub fn plan_path(&self) -> String {
        format!("{}/{}", self.namespace, self.plan)
    }

    /// One line saying what happened.
    pub fn title(&self) -> String {
        let o = self.occurrence;
        let p = self.plan_path();
        let targets = o.targets.len();
        match o.event {
            NotificationEvent::HeadsUp => format!(
                "{p} goes to sleep at {}",
                o.started_at.map(|t| t.to_string()).unwrap_or_default()
            ),
            NotificationEvent::HibernationStarted => format!("{p} is going to sleep"),
            NotificationEvent::Hibernated => format!("{p} is asleep"),
            NotificationEvent::WakeUpStarted => format!("{p} is waking up"),
            NotificationEvent::Awake => format!("{p} is awake"),
            NotificationEvent::TargetFailed if targets == 1 => {
                format!("{p}: target {} failed to {}", o.targets[0].name, verb(o))
            }
            NotificationEvent::TargetFailed => {
                format!("{p}: {targets} targets failed to {}", verb(o))
            }
            NotificationEvent::Stalled => format!("{p} is stalled and needs attention"),
            NotificationEvent::Recovered => format!("{p} has recovered"),
            NotificationEvent::RestoreIncomplete => {
                format!("{p}: restore data is incomplete")
            }
        }
    }

    /// The facts under the title: cycle, operation, duration, phase, next transition.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let o = self.occurrence;
        let mut facts = vec![("Plan", self.plan_path())];
        if let Some(c) = &o.cycle {
            facts.push(("Cycle", c.clone()));
        }
        if let (Some(s), Some(f)) = (o.started_at, o.finished_at)
            && o.event != NotificationEvent::HeadsUp
        {
            facts.push(("Took", duration(f.duration_since(s))));
        }
        if let Some(p) = self.phase {
            facts.push(("Phase", p.as_str().to_string()));
        }
        if let Some(n) = &self.next_transition {
            facts.push(("Next", n.clone()));
        }
        facts
    }

    /// The targets, one line each (at most [`TARGETS_LISTED`], then "and N more").
    pub fn target_lines(&self) -> Vec<String> {
        let o = self.occurrence;
        let mut lines: Vec<String> = o
            .targets
            .iter()
            .take(TARGETS_LISTED)
            .map(|t| {
                let mut line = format!("{}: {}", t.name, t.outcome);
                if let Some(d) = t.duration {
                    line.push_str(&format!(" in {}", duration(d)));
                }
                if let Some(m) = &t.message {
                    line.push_str(&format!(" ({})", shorten(m, 100)));
                }
                line
            })
            .collect();
        if o.targets.len() > TARGETS_LISTED {
            lines.push(format!("and {} more", o.targets.len() - TARGETS_LISTED));
        }
        lines
    }

    /// For HeadsUp: the command that keeps the plan awake tonight.
    pub fn command(&self) -> Option<String> {
        if self.occurrence.event != NotificationEvent::HeadsUp {
            return None;
        }
        let until = match self.next_wake_up_at {
            Some(t) => format!("--until {t}"),
            None => "--for 12h".to_string(),
        };
        Some(format!(
            "kubectl hibernator wake {} -n {} {until} --reason \"needed tonight\"",
            self.plan, self.namespace
        ))
    }

    /// The whole message as plain text (Slack's notification fallback, logs of `notify test`).
    pub fn text(&self) -> String {
        let mut text = self.title();
        if let Some(d) = &self.occurrence.detail {
            text.push_str(&format!(": {}", shorten(d, 500)));
        }
        text
    }

    /// The CloudEvents `id`: stable for the plan (by uid) and the occurrence.
    pub fn cloud_event_id(&self) -> String {
        format!("{}/{}", self.plan_uid, self.occurrence.id)
    }
}

fn verb(o: &Occurrence) -> &'static str {
    match o.operation {
        Some(crate::plan::Operation::WakeUp) => "wake up",
        _ => "hibernate",
    }
}

/// `1h 5m`, `2m 10s`, `45s`.
pub fn duration(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m {sec}s"),
        _ => format!("{h}h {m}m"),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

fn emoji(event: NotificationEvent) -> &'static str {
    match event {
        NotificationEvent::HeadsUp => ":alarm_clock:",
        NotificationEvent::HibernationStarted => ":crescent_moon:",
        NotificationEvent::Hibernated => ":zzz:",
        NotificationEvent::WakeUpStarted => ":sunrise:",
        NotificationEvent::Awake => ":sunny:",
        NotificationEvent::Recovered => ":white_check_mark:",
        NotificationEvent::TargetFailed
        | NotificationEvent::Stalled
        | NotificationEvent::RestoreIncomplete => ":rotating_light:",
    }
}

/// A Slack incoming-webhook payload: `text` (the notification fallback) and Block Kit
/// `blocks` (header, fields, targets, detail, command, context).
pub fn slack(m: &Message) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": shorten(&format!("{} {}", emoji(m.occurrence.event), m.title()), SLACK_HEADER_MAX), "emoji": true}
    })];
    let fields: Vec<Value> = m
        .facts()
        .into_iter()
        .take(10)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": shorten(&format!("*{k}*\n{v}"), 2000)}))
        .collect();
    blocks.push(json!({"type": "section", "fields": fields}));
    let lines = m.target_lines();
    if !lines.is_empty() {
        let text = lines
            .iter()
            .map(|l| format!("• {l}"))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": shorten(&format!("*Targets*\n{text}"), SLACK_SECTION_MAX)}
        }));
    }
    if let Some(d) = &m.occurrence.detail {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": shorten(d, SLACK_SECTION_MAX)}
        }));
    }
    if let Some(c) = m.command() {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": shorten(&format!("Keep it awake tonight:\n```{c}```"), SLACK_SECTION_MAX)}
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("{} · {} · Hibernator", m.occurrence.event, m.occurrence.time)}]
    }));
    json!({"text": m.text(), "blocks": blocks})
}

/// A Microsoft Teams workflow-webhook payload: a `message` with one Adaptive Card (1.4).
pub fn teams(m: &Message) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": m.title(),
        "weight": "Bolder",
        "size": "Medium",
        "wrap": true,
        "color": if m.occurrence.event.is_bad_news() { "Attention" } else { "Default" }
    })];
    let facts: Vec<Value> = m
        .facts()
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    body.push(json!({"type": "FactSet", "facts": facts}));
    let lines = m.target_lines();
    if !lines.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": lines.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n"),
            "wrap": true
        }));
    }
    if let Some(d) = &m.occurrence.detail {
        body.push(json!({"type": "TextBlock", "text": shorten(d, 2000), "wrap": true}));
    }
    if let Some(c) = m.command() {
        body.push(json!({"type": "TextBlock", "text": "Keep it awake tonight:", "wrap": true}));
        body.push(json!({"type": "TextBlock", "text": c, "fontType": "Monospace", "wrap": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body
            }
        }]
    })
}

/// A CloudEvents 1.0 event in structured JSON mode (`application/cloudevents+json`).
pub fn cloud_event(m: &Message) -> Value {
    let o = m.occurrence;
    let targets: Vec<Value> = o
        .targets
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "outcome": t.outcome,
                "durationSeconds": t.duration.map(|d| d.as_secs()),
                "message": t.message,
            })
        })
        .collect();
    json!({
        "specversion": "1.0",
        "id": m.cloud_event_id(),
        "source": format!(
            "/apis/hibernator.ardikasaputro.io/v1alpha1/namespaces/{}/hibernationplans/{}",
            m.namespace, m.plan
        ),
        "type": o.event.cloud_event_type(),
        "subject": o.cycle.clone().unwrap_or_else(|| m.plan.to_string()),
        "time": o.time.to_string(),
        "datacontenttype": "application/json",
        "data": {
            "plan": {"namespace": m.namespace, "name": m.plan, "uid": m.plan_uid},
            "event": o.event.as_str(),
            "title": m.title(),
            "cycle": o.cycle,
            "operation": o.operation.map(|op| op.as_str()),
            "startedAt": o.started_at.map(|t| t.to_string()),
            "finishedAt": o.finished_at.map(|t| t.to_string()),
            "targets": targets,
            "detail": o.detail,
            "phase": m.phase.map(Phase::as_str),
            "nextTransition": m.next_transition,
            "command": m.command(),
        }
    })
}

/// The request body for a sink of `type_` about `plan`.
pub fn body(
    type_: super::SinkType,
    plan: &crate::plan::HibernationPlan,
    o: &Occurrence,
) -> Vec<u8> {
    use kube::ResourceExt;
    let ns = plan.namespace().unwrap_or_default();
    let name = plan.name_any();
    let uid = plan.uid().unwrap_or_default();
    let schedule = plan.status.as_ref().and_then(|s| s.schedule.as_ref());
    let m = Message {
        namespace: &ns,
        plan: &name,
        plan_uid: &uid,
        occurrence: o,
        phase: plan.status.as_ref().and_then(|s| s.phase),
        next_transition: schedule.and_then(|s| s.next_transition.clone()),
        next_wake_up_at: schedule.and_then(|s| s.next_wake_up_at.as_ref().map(|t| t.0)),
    };
    let value = match type_ {
        super::SinkType::Slack => slack(&m),
        super::SinkType::Teams => teams(&m),
        super::SinkType::Webhook => cloud_event(&m),
    };
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::TargetLine;
    use crate::plan::Operation;

    fn occurrence(event: NotificationEvent, targets: usize) -> Occurrence {
        Occurrence {
            event,
            id: format!("20261203t0100/hibernate@1/{event}"),
            time: "2026-12-03T01:00:00Z".parse().unwrap(),
            cycle: Some("20261203t0100".into()),
            operation: Some(Operation::Hibernate),
            started_at: Some("2026-12-03T01:00:00Z".parse().unwrap()),
            finished_at: Some("2026-12-03T01:02:10Z".parse().unwrap()),
            targets: (0..targets)
                .map(|i| TargetLine {
                    name: format!("t{i}"),
                    outcome: "Failed".into(),
                    duration: Some(SignedDuration::from_secs(65)),
                    message: Some("x".repeat(300)),
                })
                .collect(),
            detail: None,
        }
    }

    fn message(o: &Occurrence) -> Message<'_> {
        Message {
            namespace: "team-a",
            plan: "prod",
            plan_uid: "uid-1",
            occurrence: o,
            phase: Some(Phase::Hibernating),
            next_transition: Some("WakeUp at 2026-12-03T12:00:00Z".into()),
            next_wake_up_at: Some("2026-12-03T12:00:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn slack_respects_block_kit_limits() {
        let o = occurrence(NotificationEvent::TargetFailed, 50);
        let v = slack(&message(&o));
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= SLACK_HEADER_MAX);
        for b in blocks.iter().filter(|b| b["type"] == "section") {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= SLACK_SECTION_MAX, "{t}");
            }
            assert!(b["fields"].as_array().map_or(0, Vec::len) <= 10);
        }
        let targets = blocks[2]["text"]["text"].as_str().unwrap();
        assert!(targets.ends_with("and 35 more"), "{targets}");
        assert_eq!(
            v["text"], "team-a/prod: 50 targets failed to hibernate",
            "{v}"
        );
    }

    #[test]
    fn heads_up_carries_the_command() {
        let mut o = occurrence(NotificationEvent::HeadsUp, 0);
        o.finished_at = None;
        let m = message(&o);
        assert_eq!(
            m.command().unwrap(),
            "kubectl hibernator wake prod -n team-a --until 2026-12-03T12:00:00Z --reason \"needed tonight\""
        );
        assert!(
            slack(&m)
                .to_string()
                .contains("kubectl hibernator wake prod")
        );
        assert!(
            teams(&m)
                .to_string()
                .contains("kubectl hibernator wake prod")
        );
        assert_eq!(cloud_event(&m)["data"]["command"], m.command().unwrap());
    }

    #[test]
    fn cloud_event_has_the_required_attributes() {
        let o = occurrence(NotificationEvent::Hibernated, 2);
        let v = cloud_event(&message(&o));
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "io.ardikasaputro.hibernator.plan.hibernated");
        assert_eq!(v["id"], "uid-1/20261203t0100/hibernate@1/Hibernated");
        assert_eq!(v["data"]["targets"][0]["durationSeconds"], 65);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
