use super::*;
use hibernator_api::notification::{HibernationNotificationSpec, WebhookSecret};
use hibernator_api::plan::{
    CycleRecord, CycleStatus, HibernationPlanStatus, Operation, OperationRecord,
};

fn plan(status: HibernationPlanStatus) -> HibernationPlan {
    let mut p = hibernator_api::fixtures::PlanBuilder::new("prod")
        .namespace("team-a")
        .build();
    p.status = Some(status);
    p
}

fn notification(events: &[&str]) -> HibernationNotification {
    let mut n = HibernationNotification::new(
        "n",
        HibernationNotificationSpec {
            selector: None,
            plan_refs: Some(vec![hibernator_api::exception::PlanRef {
                name: "prod".into(),
            }]),
            events: events
                .iter()
                .map(|e| NotificationEvent::parse(e).unwrap())
                .collect(),
            heads_up_before: None,
            sinks: vec![Sink {
                name: None,
                slack: Some(WebhookSecret {
                    webhook_secret_ref: hibernator_api::notification::SecretKeyRef {
                        name: "s".into(),
                        key: "url".into(),
                    },
                }),
                teams: None,
                webhook: None,
                insecure: None,
            }],
        },
    );
    n.metadata.namespace = Some("team-a".into());
    n
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn hibernated_status() -> HibernationPlanStatus {
    let started = Time(ts("2026-12-01T20:00:00Z"));
    let finished = Time(ts("2026-12-01T20:03:00Z"));
    HibernationPlanStatus {
        current_cycle: Some(CycleStatus {
            id: "20261201t2000".into(),
            operation: Operation::Hibernate,
            started_at: started.clone(),
            finished_at: Some(finished.clone()),
            targets: vec![],
        }),
        history: vec![CycleRecord {
            id: "20261201t2000".into(),
            hibernate: Some(OperationRecord {
                started_at: started,
                finished_at: Some(finished),
                succeeded: true,
                retries: 0,
                failed_targets: vec![],
            }),
            wake_up: None,
        }],
        ..Default::default()
    }
}

#[test]
fn delivered_ids_join_the_ledger_and_the_counters() {
    let mut status = HibernationNotificationStatus::default();
    let outcome = Outcome {
        sink_name: "slack".into(),
        sink_type: SinkType::Slack,
        plan: "prod".into(),
        ids: vec!["a".into(), "b".into()],
        delivery: Delivery {
            time: Time(ts("2026-12-01T20:03:01Z")),
            plan: "prod".into(),
            event: NotificationEvent::Hibernated,
            result: DeliveryResult::Delivered,
            attempts: 3,
            error: None,
        },
        retries: 2,
    };
    merge_outcomes(&mut status, std::slice::from_ref(&outcome));
    merge_outcomes(&mut status, &[outcome]);
    assert_eq!(status.ledger[0].handled, vec!["a", "b"], "ids are a set");
    assert_eq!(status.sinks[0].delivered, 2);
    assert_eq!(status.sinks[0].retries, 4);
}

#[test]
fn the_ledger_keeps_only_what_a_plan_can_still_show() {
    let n = notification(&["Hibernated", "Stalled", "Recovered"]);
    let p = plan(hibernated_status());
    let now = ts("2026-12-01T21:00:00Z");
    let ids: Vec<String> = occurrences(&p, now, SignedDurationExt::mins(15), &[])
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(
        ids,
        vec![
            "20261201t2000/hibernate@1796155200/HibernationStarted",
            "20261201t2000/hibernate@1796155200/Hibernated"
        ]
    );
    let mut status = HibernationNotificationStatus {
        ledger: vec![LedgerEntry {
            plan: "prod".into(),
            sink: "slack".into(),
            handled: vec![
                ids[1].clone(),
                "20261130t2000/hibernate@1/Hibernated".into(),
                "stalled@5".into(),
            ],
        }],
        ..Default::default()
    };
    prune(&mut status, &n, std::slice::from_ref(&p), now);
    assert_eq!(
        status.ledger[0].handled,
        vec![ids[1].clone(), "stalled@5".to_string()],
        "an old cycle's id goes; a stall stays until its Recovered is handled"
    );
    status.ledger[0].handled.push("recovered/stalled@5".into());
    prune(&mut status, &n, std::slice::from_ref(&p), now);
    assert_eq!(status.ledger[0].handled, vec![ids[1].clone()]);
    // A plan no longer selected loses its entries.
    prune(&mut status, &n, &[], now);
    assert!(status.ledger.is_empty());
}

struct SignedDurationExt;
impl SignedDurationExt {
    fn mins(m: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_mins(m)
    }
}

#[test]
fn readiness_names_what_is_wrong() {
    let n = notification(&["Hibernated"]);
    let status = HibernationNotificationStatus::default();
    let none = BTreeMap::new();
    let (ready, reason, message) = readiness(&n, &[], &status, &none);
    assert!(!ready);
    assert_eq!(reason, "NoPlansSelected");
    assert_eq!(
        message,
        "spec.planRefs: no plan named prod in namespace team-a"
    );
    let p = plan(hibernated_status());
    let broken = BTreeMap::from([(
        "slack".to_string(),
        "sink slack: Secret s not found".to_string(),
    )]);
    assert_eq!(
        readiness(&n, std::slice::from_ref(&p), &status, &broken).1,
        "SinkNotUsable"
    );
    let mut failed = status.clone();
    failed.sinks.push(SinkStatus {
        name: "slack".into(),
        type_: "slack".into(),
        last_delivery: Some(Delivery {
            time: Time(ts("2026-12-01T20:03:01Z")),
            plan: "prod".into(),
            event: NotificationEvent::Hibernated,
            result: DeliveryResult::Failed,
            attempts: 8,
            error: Some("gave up after 8 attempts: the receiver answered HTTP 503".into()),
        }),
        ..Default::default()
    });
    let (ready, reason, message) = readiness(&n, std::slice::from_ref(&p), &failed, &none);
    assert_eq!((ready, reason), (false, "DeliveryFailed"));
    assert_eq!(
        message,
        "sink slack: gave up after 8 attempts: the receiver answered HTTP 503"
    );
    assert_eq!(
        readiness(&n, std::slice::from_ref(&p), &status, &none),
        (true, "Watching", "1 plan(s), 1 sink(s)".to_string())
    );
}
