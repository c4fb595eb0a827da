//! HibernationNotifications through a whole night: local HTTPS receivers stand in for Slack,
//! Microsoft Teams and a CloudEvents endpoint (one of them failing five times first, another
//! down all night), the controller trusting their certificate through `SSL_CERT_FILE`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hibernator_api::common::find_condition;
use hibernator_api::notification::{DeliveryResult, HibernationNotification, NotificationEvent};
use hibernator_api::plan::{HibernationPlan, Operation, Phase};
use hibernator_e2e::checkers::{self, Format};
use hibernator_e2e::receiver::{Received, Receiver, ReceiverCert};
use hibernator_e2e::world::{ControllerOptions, World, binaries, free_port, phase, wait_for};
use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use serde_json::{Value, json};

const PLAN: &str = "nightly";
const NIGHT: [&str; 5] = [
    "HeadsUp",
    "HibernationStarted",
    "Hibernated",
    "WakeUpStarted",
    "Awake",
];

/// Thursdays 20:00-20:30 New York: a short night.
fn plan() -> Value {
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": PLAN, "labels": {"notify": "platform"}},
        "spec": {
            "schedule": {"timezone": "America/New_York",
                         "offHours": [{"start": "20:00", "end": "20:30", "daysOfWeek": ["THU"]}]},
            "execution": {"strategy": {"type": "Parallel"}},
            "targets": [
                {"name": "db", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws"},
                 "parameters": {"snapshotBeforeStop": false}},
                {"name": "batch", "type": "noop", "parameters": {"delaySeconds": 1}},
            ],
        },
    })
}

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
}

/// The event a message is about: the CloudEvents type, or the title of a Slack or Teams
/// message.
fn event_of(r: &Received) -> String {
    let v = r.json();
    let title = if let Some(t) = v["type"].as_str().filter(|t| t.starts_with("io.")) {
        return NotificationEvent::ALL
            .iter()
            .find(|e| e.cloud_event_type() == t)
            .unwrap_or_else(|| panic!("unknown type {t}"))
            .to_string();
    } else if let Some(blocks) = v["blocks"].as_array() {
        blocks[0]["text"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        v["attachments"][0]["content"]["body"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let by_title = [
        ("goes to sleep at", "HeadsUp"),
        ("is going to sleep", "HibernationStarted"),
        ("is asleep", "Hibernated"),
        ("is waking up", "WakeUpStarted"),
        ("is awake", "Awake"),
        ("failed to", "TargetFailed"),
    ];
    by_title
        .iter()
        .find(|(phrase, _)| title.contains(phrase))
        .map(|(_, e)| e.to_string())
        .unwrap_or_else(|| panic!("unknown message: {v}"))
}

fn events(rs: &[Received]) -> Vec<String> {
    rs.iter().map(event_of).collect()
}

/// Slack Block Kit as its reference describes it: a fallback `text`, at most 50 blocks of the
/// types used here, a plain-text header of at most 150 characters, sections of at most 3000
/// characters and 10 fields.
fn check_slack(v: &Value) {
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    let blocks = v["blocks"].as_array().expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= 50, "{v}");
    assert_eq!(blocks[0]["type"], "header", "{v}");
    assert_eq!(blocks[0]["text"]["type"], "plain_text", "{v}");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    for b in blocks {
        match b["type"].as_str() {
            Some("header") => {}
            Some("section") => {
                if let Some(t) = b.get("text") {
                    assert!(["mrkdwn", "plain_text"].contains(&t["type"].as_str().unwrap()));
                    assert!(t["text"].as_str().unwrap().chars().count() <= 3000);
                }
                if let Some(f) = b.get("fields") {
                    assert!(f.as_array().unwrap().len() <= 10, "{b}");
                }
                assert!(b.get("text").is_some() || b.get("fields").is_some(), "{b}");
            }
            Some("context") => assert!(!b["elements"].as_array().unwrap().is_empty()),
            other => panic!("unexpected block type {other:?}: {b}"),
        }
    }
}

/// A Teams workflow message: one Adaptive Card attachment.
fn check_teams(v: &Value) {
    assert_eq!(v["type"], "message", "{v}");
    let a = &v["attachments"][0];
    assert_eq!(
        a["contentType"], "application/vnd.microsoft.card.adaptive",
        "{v}"
    );
    assert_eq!(a["content"]["type"], "AdaptiveCard", "{v}");
    assert_eq!(a["content"]["version"], "1.4", "{v}");
    let body = a["content"]["body"].as_array().expect("card body");
    for element in body {
        assert!(
            ["TextBlock", "FactSet"].contains(&element["type"].as_str().unwrap()),
            "{element}"
        );
    }
}

/// CloudEvents 1.0 structured mode: the required attributes and the content type.
fn check_cloud_event(r: &Received, key: &[u8], ns: &str) -> String {
    let v = r.json();
    assert_eq!(
        r.headers["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(r.headers["x-team"], "platform", "a configured header");
    assert_eq!(v["specversion"], "1.0", "{v}");
    assert_eq!(
        v["source"],
        format!(
            "/apis/hibernator.ardikasaputro.io/v1alpha1/namespaces/{ns}/hibernationplans/{PLAN}"
        )
    );
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .starts_with("io.ardikasaputro.hibernator.plan.")
    );
    v["time"]
        .as_str()
        .unwrap()
        .parse::<Timestamp>()
        .expect("RFC 3339 time");
    assert_eq!(v["datacontenttype"], "application/json");
    assert_eq!(v["data"]["plan"]["name"], PLAN);
    // The signature, checked with another HMAC implementation than the controller's.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        r.headers["x-hibernator-signature-256"],
        format!("sha256={hex}").as_str()
    );
    v["id"].as_str().expect("an id").to_string()
}

fn started(p: &HibernationPlan, op: Operation) -> Timestamp {
    let h = &p.status.as_ref().unwrap().history[0];
    match op {
        Operation::Hibernate => h.hibernate.as_ref().unwrap().started_at.0,
        Operation::WakeUp => h.wake_up.as_ref().unwrap().started_at.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_reaches_slack_teams_and_a_cloudevents_webhook() {
    let w = World::new("notify").await.unwrap();
    w.estate(json!({"rds": ["db"]})).unwrap();
    w.cloud_provider("aws").await.unwrap();
    let cert = ReceiverCert::new().unwrap();
    let slack = Receiver::start(&cert, 0).await.unwrap();
    let teams = Receiver::start(&cert, 0).await.unwrap();
    let cloud = Receiver::start(&cert, 5).await.unwrap();
    let down = format!("https://127.0.0.1:{}/hook/D0WN-T0KEN", free_port().unwrap());
    let ca = w.dir().join("receivers.pem");
    std::fs::write(&ca, &cert.pem).unwrap();
    for (name, data) in [
        ("slack-hook", json!({"url": slack.url})),
        ("teams-hook", json!({"url": teams.url})),
        (
            "events-hook",
            json!({"url": cloud.url, "hmac": "s3cret-key"}),
        ),
        ("down-hook", json!({"url": down})),
    ] {
        w.apply(secret(name, data)).await.unwrap();
    }
    w.apply(plan()).await.unwrap();
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationNotification",
        "metadata": {"name": "platform"},
        "spec": {
            "selector": {"matchLabels": {"notify": "platform"}},
            "events": ["HeadsUp", "HibernationStarted", "Hibernated", "WakeUpStarted", "Awake", "TargetFailed"],
            "headsUpBefore": "15m",
            "sinks": [
                {"slack": {"webhookSecretRef": {"name": "slack-hook", "key": "url"}}},
                {"teams": {"webhookSecretRef": {"name": "teams-hook", "key": "url"}}},
                {"name": "events", "webhook": {"urlSecretRef": {"name": "events-hook", "key": "url"},
                                                "hmacSecretRef": {"name": "events-hook", "key": "hmac"},
                                                "headers": {"X-Team": "platform"}}},
                {"name": "down", "webhook": {"urlSecretRef": {"name": "down-hook", "key": "url"}}},
            ],
        },
    }))
    .await
    .unwrap();

    // Thursday 19:30 New York at 30x: the heads-up (sent up to five minutes early) after about
    // 20 s, the night from 60 s to 120 s. Six attempts: the `events` receiver refuses five.
    let opts = ControllerOptions {
        env: vec![("SSL_CERT_FILE".into(), ca.display().to_string())],
        extra_args: [
            "--notification-retry-base-ms",
            "100",
            "--notification-max-attempts",
            "6",
            "--notification-min-interval-ms",
            "50",
            "--notification-heads-up-lead-seconds",
            "300",
        ]
        .map(String::from)
        .to_vec(),
        ..ControllerOptions::at("2026-11-27T00:30:00Z", 30.0)
    };
    let t0 = Instant::now();
    let c = w.controller(opts.clone()).unwrap();
    let report = |e: anyhow::Error| format!("{e:#}\n--- controller log:\n{}", c.log());
    let p = w
        .wait_plan(
            PLAN,
            Duration::from_secs(300),
            "awake after the night",
            |p| {
                phase(p) == Some(Phase::Active)
                    && p.status.as_ref().is_some_and(|s| {
                        s.history
                            .first()
                            .is_some_and(|h| h.wake_up.as_ref().is_some_and(|r| r.succeeded))
                    })
            },
        )
        .await
        .map_err(report)
        .unwrap();
    let hibernation = started(&p, Operation::Hibernate);
    let wake_up = started(&p, Operation::WakeUp);
    // A sink down all night does not hold the night back.
    let boundary: Timestamp = "2026-11-27T01:00:00Z".parse().unwrap();
    for (what, at, due) in [
        ("hibernation", hibernation, boundary),
        ("wake-up", wake_up, boundary + SignedDuration::from_mins(30)),
    ] {
        let lag = at.duration_since(due);
        assert!(
            lag >= SignedDuration::ZERO && lag < SignedDuration::from_mins(3),
            "the {what} started {lag:?} after its boundary"
        );
    }

    for (name, r) in [("slack", &slack), ("teams", &teams), ("events", &cloud)] {
        wait_for(
            Duration::from_secs(60),
            &format!("{name} got the night"),
            || async { (r.accepted().len() >= NIGHT.len()).then_some(()) },
        )
        .await
        .map_err(report)
        .unwrap();
    }
    // Anything sent twice would arrive within these seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;

    for (name, r) in [("slack", &slack), ("teams", &teams), ("events", &cloud)] {
        assert_eq!(events(&r.accepted()), NIGHT, "{name}, in order, once each");
    }
    for m in slack.accepted() {
        check_slack(&m.json());
    }
    for m in teams.accepted() {
        check_teams(&m.json());
    }
    // The formats' own libraries read every card and every event without complaint.
    let bodies: Vec<(Format, Vec<u8>)> = teams
        .accepted()
        .into_iter()
        .map(|r| (Format::Teams, r.body))
        .chain(
            cloud
                .accepted()
                .into_iter()
                .map(|r| (Format::CloudEvent, r.body)),
        )
        .collect();
    let refs: Vec<(Format, &[u8])> = bodies.iter().map(|(f, b)| (*f, b.as_slice())).collect();
    for (result, (format, body)) in checkers::check(&refs).unwrap().iter().zip(&refs) {
        assert!(
            result.is_empty(),
            "{format:?} {}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
    let heads_up = &slack.accepted()[0];
    let text = heads_up.json().to_string();
    assert!(
        text.contains(&format!(
            "kubectl hibernator wake {PLAN} -n {} --until 2026-11-27T01:30:00Z",
            w.ns
        )),
        "the heads-up says how to keep the plan awake tonight: {text}"
    );
    // Schedule time of its arrival, reckoned from before the controller started (so late, if
    // anything).
    let arrived = opts.clock_start
        + SignedDuration::from_secs_f64(
            heads_up.at.duration_since(t0).as_secs_f64() * opts.clock_speed,
        );
    assert!(
        arrived <= hibernation - SignedDuration::from_mins(15),
        "the heads-up arrived at {arrived}, less than 15 minutes before the hibernation at {hibernation}"
    );

    // The CloudEvents sink: five refusals of the first message, then each message once.
    let all = cloud.requests();
    assert_eq!(all.len(), 5 + NIGHT.len(), "{:?}", events(&all));
    let ids: Vec<String> = all
        .iter()
        .map(|r| check_cloud_event(r, b"s3cret-key", &w.ns))
        .collect();
    assert!(
        ids[..6].iter().all(|id| *id == ids[0]),
        "the retries repeat the first message: {ids:?}"
    );
    let distinct: BTreeSet<&String> = ids[5..].iter().collect();
    assert_eq!(distinct.len(), NIGHT.len(), "{ids:?}");
    let cycle = &p.status.as_ref().unwrap().history[0].id;
    let hibernated = cloud.accepted()[2].json();
    assert_eq!(
        hibernated["type"],
        "io.ardikasaputro.hibernator.plan.hibernated"
    );
    assert_eq!(hibernated["subject"], cycle.as_str());
    let targets: BTreeSet<&str> = hibernated["data"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(targets, BTreeSet::from(["db", "batch"]));

    // The status: counters, the failing sink named, nothing secret.
    let api: Api<HibernationNotification> = Api::namespaced(w.client.clone(), &w.ns);
    let n = wait_for(
        Duration::from_secs(120),
        "the down sink given up on",
        || async {
            let n = api.get("platform").await.ok()?;
            let s = n.status.as_ref()?;
            let down = s.sinks.iter().find(|s| s.name == "down")?;
            (down.failed >= NIGHT.len() as i64).then_some(n)
        },
    )
    .await
    .map_err(report)
    .unwrap();
    let status = n.status.as_ref().unwrap();
    let sink = |name: &str| status.sinks.iter().find(|s| s.name == name).unwrap();
    assert_eq!(sink("slack").delivered, NIGHT.len() as i64);
    assert_eq!(sink("events").delivered, NIGHT.len() as i64);
    assert_eq!(sink("events").retries, 5);
    let last = sink("down").last_delivery.clone().unwrap();
    assert_eq!(last.result, DeliveryResult::Failed);
    let error = last.error.unwrap();
    assert!(error.starts_with("gave up after 6 attempts"), "{error}");
    let ready = find_condition(&status.conditions, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "DeliveryFailed"),
        "{ready:?}"
    );
    assert!(ready.message.contains("sink down"), "{}", ready.message);
    let everything = format!("{}\n{}", serde_json::to_string(&n).unwrap(), c.log());
    for token in ["T0KEN", "s3cret-key"] {
        assert!(
            !everything.contains(token),
            "{token} leaked into the status or the log"
        );
    }
    // The HeadsUp to the two webhooks: five retries to `events`, five to `down`, which then
    // gave up (six attempts).
    let metrics = c.metrics().await.unwrap();
    for line in [
        "hibernator_notifications_total{sink_type=\"webhook\",event=\"HeadsUp\",result=\"retried\"} 10",
        "hibernator_notifications_total{sink_type=\"webhook\",event=\"HeadsUp\",result=\"failed\"} 1",
        "hibernator_notifications_total{sink_type=\"webhook\",event=\"HeadsUp\",result=\"delivered\"} 1",
        "hibernator_notifications_total{sink_type=\"slack\",event=\"Awake\",result=\"delivered\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Every metric the chart's dashboard and alerts query is one this controller exports after
    // a night with deliveries and a database's savings (a family appears with its first
    // series, so the night must have produced them all).
    assert_eq!(
        gitops_checks::missing_metrics(&metrics),
        Vec::<String>::new(),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_due_when_the_controller_dies_arrives_once() {
    let w = World::new("notify-restart").await.unwrap();
    let cert = ReceiverCert::new().unwrap();
    let port = free_port().unwrap();
    let ca = w.dir().join("receivers.pem");
    std::fs::write(&ca, &cert.pem).unwrap();
    w.apply(secret(
        "hook",
        json!({"url": format!("https://127.0.0.1:{port}/hook")}),
    ))
    .await
    .unwrap();
    let mut p = plan();
    p["spec"]["targets"] =
        json!([{"name": "batch", "type": "noop", "parameters": {"delaySeconds": 1}}]);
    w.apply(p).await.unwrap();
    w.apply(json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationNotification",
        "metadata": {"name": "ops"},
        "spec": {
            "planRefs": [{"name": PLAN}],
            "events": ["Hibernated", "Awake"],
            "sinks": [
                {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}},
                // Its Secret was never created: reported, and the other sink goes on.
                {"name": "unready", "webhook": {"urlSecretRef": {"name": "not-there", "key": "url"}}},
            ],
        },
    }))
    .await
    .unwrap();
    // Thursday 19:58 at 30x; retries a second apart, so the receiver being away when the
    // hibernation ends is still being retried when the controller is killed.
    let opts = ControllerOptions {
        env: vec![("SSL_CERT_FILE".into(), ca.display().to_string())],
        extra_args: ["--notification-retry-base-ms", "1000"]
            .map(String::from)
            .to_vec(),
        ..ControllerOptions::at("2026-11-27T00:58:00Z", 30.0)
    };
    let mut first = w.controller(opts.clone()).unwrap();
    w.wait_plan(PLAN, Duration::from_secs(180), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .map_err(|e| format!("{e:#}\n--- controller log:\n{}", first.log()))
    .unwrap();
    // The notifier writes its own status, a moment after the plan's on a loaded machine.
    let api: Api<HibernationNotification> = Api::namespaced(w.client.clone(), &w.ns);
    let ready = wait_for(
        Duration::from_secs(60),
        "the notification to say Ready=False, SinkNotUsable",
        || async {
            let n = api.get("ops").await.ok()?;
            find_condition(&n.status?.conditions, "Ready")
                .filter(|c| c.reason == "SinkNotUsable")
                .cloned()
        },
    )
    .await
    .map_err(|e| format!("{e:#}\n--- controller log:\n{}", first.log()))
    .unwrap();
    first.kill();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SinkNotUsable"),
        "{ready:?}"
    );
    assert_eq!(
        ready.message,
        format!(
            "sink unready (webhook.urlSecretRef): Secret not-there not found in namespace {}",
            w.ns
        )
    );
    let receiver = Receiver::start_on(&cert, port, 0).await.unwrap();
    let second = w
        .controller(ControllerOptions {
            clock_start: "2026-11-27T01:05:00Z".parse().unwrap(),
            ..opts
        })
        .unwrap();
    wait_for(
        Duration::from_secs(180),
        "Hibernated and Awake delivered",
        || async { (receiver.accepted().len() >= 2).then_some(()) },
    )
    .await
    .map_err(|e| format!("{e:#}\n--- controller log:\n{}", second.log()))
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got = receiver.accepted();
    assert_eq!(events(&got), ["Hibernated", "Awake"], "once each, in order");
    let ids: BTreeSet<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);

    // `notify test`: a sample through every sink, with the user's credentials.
    let cli = binaries().unwrap().cli.clone();
    let kubeconfig = w.cluster.kubeconfig_path().to_path_buf();
    let ns = w.ns.clone();
    let out = tokio::task::spawn_blocking(move || {
        let run = |event: &str| {
            std::process::Command::new(&cli)
                .args(["notify", "test", "ops", "--event", event, "-n", &ns])
                .env("KUBECONFIG", &kubeconfig)
                .env("SSL_CERT_FILE", &ca)
                .output()
                .unwrap()
        };
        (run("TargetFailed"), run("Nope"))
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // One sink delivered, the one without its Secret failed: exit 1.
    assert_eq!(out.0.status.code(), Some(1), "{}", text(&out.0));
    for line in [
        "webhook (webhook): delivered TargetFailed about nightly",
        "unready (webhook): failed: sink unready (webhook.urlSecretRef): Secret not-there not found",
    ] {
        assert!(text(&out.0).contains(line), "{line} in {}", text(&out.0));
    }
    let sample = receiver.accepted().last().unwrap().json();
    assert_eq!(
        sample["type"],
        "io.ardikasaputro.hibernator.plan.targetfailed"
    );
    assert!(
        sample["data"]["detail"]
            .as_str()
            .unwrap()
            .contains("notify test"),
        "{sample}"
    );
    assert_eq!(out.1.status.code(), Some(2), "{}", text(&out.1));
    assert!(
        text(&out.1).contains("--event \"Nope\" is not an event; one of: HeadsUp,"),
        "{}",
        text(&out.1)
    );
}
