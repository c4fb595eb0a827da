//! In-sleep enforcement end to end: two plans sleep for eight (simulated) days; on day 7
//! their databases are started by hand (as AWS does after seven days, or a person "for a
//! minute"). Under `Reapply` the database is stopped again within one check interval and woken
//! normally at the end; under `Report` the plan says `Drifted=True` naming it, and stays Ready.

use std::time::{Duration, Instant};

use hibernator_api::plan::{HibernationPlan, Phase};
use hibernator_e2e::world::{ControllerOptions, World, cond, condition, estate_at, phase, sim_now};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

/// A plan asleep from Friday 2026-11-27 20:00 to Saturday 2026-12-05 20:00 New York: its
/// weekly window (Friday 20:00 to the next Friday 06:00), an `extend` exception that bridges
/// the Friday daytime gap, and a `suspend` exception that ends the sleep after eight days.
fn plan(name: &str, db: &str, mode: &str) -> Vec<Value> {
    let exception = |suffix: &str, type_: &str, from: &str, until: &str, windows: Value| {
        json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "ScheduleException",
            "metadata": {"name": format!("{name}-{suffix}")},
            "spec": {"planRef": {"name": name}, "type": type_,
                     "validFrom": from, "validUntil": until, "windows": windows},
        })
    };
    vec![
        json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "HibernationPlan",
            "metadata": {"name": name},
            "spec": {
                "schedule": {"timezone": "America/New_York",
                             "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["FRI"]}]},
                "execution": {"strategy": {"type": "Parallel"}},
                "behavior": {"enforce": {"mode": mode, "interval": "24h"}},
                "targets": [{"name": "db", "type": "rds",
                             "connectorRef": {"kind": "CloudProvider", "name": "aws"},
                             "parameters": {"selector": {"instanceIds": [db]}}}],
            },
        }),
        exception(
            "bridge",
            "extend",
            "2026-12-04T05:00:00Z",
            "2026-12-05T05:00:00Z",
            json!([{"start": "05:00", "end": "21:00", "daysOfWeek": ["FRI"]}]),
        ),
        exception(
            "end",
            "suspend",
            "2026-12-06T01:00:00Z",
            "2026-12-31T00:00:00Z",
            json!([{"start": "00:00", "end": "23:59", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]}]),
        ),
    ]
}

async fn events(w: &World, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(w.client.clone(), &w.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

fn enforcement(p: &HibernationPlan) -> hibernator_api::plan::EnforcementStatus {
    p.status
        .as_ref()
        .and_then(|s| s.enforcement.clone())
        .expect("status.enforcement")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_days_asleep_with_a_database_started_by_hand_on_day_seven() {
    let w = World::new("enforce").await.unwrap();
    let before = w
        .estate(json!({"rds": ["db-reapply", "db-report"]}))
        .unwrap();
    w.cloud_provider("aws").await.unwrap();
    for doc in plan("reapply", "db-reapply", "Reapply")
        .into_iter()
        .chain(plan("report", "db-report", "Report"))
    {
        w.apply(doc).await.unwrap();
    }
    // Friday 19:00 New York; 10,000x: a simulated day takes 8.6 s, so each check interval
    // (24 h) and the two days from the start by hand to the wake-up leave the checks plenty
    // of real time on a loaded machine.
    let opts = ControllerOptions::at("2026-11-28T00:00:00Z", 10_000.0);
    let started = Instant::now();
    let c = w.controller(opts.clone()).unwrap();
    let report = |e: anyhow::Error| format!("{e:#}\n--- controller log:\n{}", c.log());

    for name in ["reapply", "report"] {
        w.wait_plan(name, Duration::from_secs(60), "Hibernated", |p| {
            phase(p) == Some(Phase::Hibernated)
        })
        .await
        .map_err(report)
        .unwrap();
    }
    let asleep = w.snapshot().unwrap();
    assert_eq!(asleep["rds"]["db-reapply"], "stopped", "{asleep}");
    assert_eq!(asleep["rds"]["db-report"], "stopped", "{asleep}");

    // Day 7 (six days after the 20:00 start): both databases are started by hand.
    let day7: Timestamp = "2026-12-04T01:00:00Z".parse().unwrap();
    while sim_now(&opts, started) < day7 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["reapply", "report"] {
        let p = w.plan(name).await.unwrap();
        assert_eq!(
            phase(&p),
            Some(Phase::Hibernated),
            "{name} still asleep on day 7"
        );
    }
    // The start by hand takes real seconds (a process that calls moto), which are hours of
    // simulated time: a check may run while it happens, so the window is measured from
    // before the call to after it.
    let starting_by_hand = sim_now(&opts, started);
    estate_at(
        w.moto.endpoint(),
        &[
            "set",
            &json!({"rds": {"db-reapply": "available", "db-report": "available"}}).to_string(),
        ],
    )
    .unwrap();
    let started_by_hand = sim_now(&opts, started);

    // Reapply: stopped again by the next check, within one interval; the plan stays
    // Hibernated and says how often it put something back to sleep.
    let p = w
        .wait_plan(
            "reapply",
            Duration::from_secs(60),
            "a check put db-reapply back to sleep",
            |p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.enforcement.as_ref())
                    .is_some_and(|e| e.reapplied >= 1)
            },
        )
        .await
        .map_err(report)
        .unwrap();
    assert_eq!(phase(&p), Some(Phase::Hibernated));
    let e = enforcement(&p);
    let check_at = e.last_check_at.clone().unwrap().0;
    assert!(
        check_at >= starting_by_hand - SignedDuration::from_hours(1)
            && check_at <= started_by_hand + SignedDuration::from_hours(24),
        "the check that put it back to sleep ran within one interval (24 h) of the start by hand ({starting_by_hand} to {started_by_hand}): {e:?}"
    );
    assert_eq!(w.snapshot().unwrap()["rds"]["db-reapply"], "stopped");
    assert_eq!(condition(&p, "Drifted"), cond("False", "Asleep"));
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    let reapplied = events(&w, "DriftReapplied").await;
    assert!(
        reapplied
            .iter()
            .any(|n| n.contains("db: instance:db-reapply")),
        "{reapplied:?}"
    );

    // Report: Drifted=True naming the database, which is left as found; Ready stays True.
    let p = w
        .wait_plan("report", Duration::from_secs(60), "Drifted=True", |p| {
            condition(p, "Drifted").is_some_and(|(s, _)| s == "True")
        })
        .await
        .map_err(report)
        .unwrap();
    let drifted = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Drifted")
        .unwrap()
        .clone();
    assert_eq!(drifted.reason, "ResourcesAwake");
    assert!(
        drifted.message.contains("db: instance:db-report"),
        "{}",
        drifted.message
    );
    assert_eq!(condition(&p, "Ready"), cond("True", "Hibernated"));
    assert_eq!(enforcement(&p).drifted[0].keys, ["instance:db-report"]);
    assert!(!events(&w, "Drifted").await.is_empty());
    assert_eq!(w.snapshot().unwrap()["rds"]["db-report"], "available");

    // Day 8, 20:00: both wake up normally; everything is as it was before the night, and the
    // night's account of drift ends with it.
    for name in ["reapply", "report"] {
        let p = w
            .wait_plan(
                name,
                Duration::from_secs(90),
                "awake after eight days",
                |p| {
                    phase(p) == Some(Phase::Active)
                        && p.status
                            .as_ref()
                            .and_then(|s| s.current_cycle.as_ref())
                            .is_some_and(|c| {
                                c.operation == hibernator_api::Operation::WakeUp
                                    && c.finished_at.is_some()
                            })
                },
            )
            .await
            .map_err(report)
            .unwrap();
        assert_eq!(condition(&p, "Drifted"), None, "{name}");
        assert_eq!(
            condition(&p, "Restored").map(|c| c.0),
            Some("True".into()),
            "{name}"
        );
        let woke = p
            .status
            .as_ref()
            .unwrap()
            .current_cycle
            .clone()
            .unwrap()
            .started_at
            .0;
        assert!(
            woke >= "2026-12-06T01:00:00Z".parse::<Timestamp>().unwrap(),
            "{name} woke at the end of the eighth day, not before: {woke}"
        );
    }
    let after = w.snapshot().unwrap();
    assert_eq!(after["rds"], before["rds"]);
    let metrics = c.metrics().await.unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in\n{metrics}"))
    };
    // One database put back to sleep; both found awake (the reported one by every check
    // until the wake-up).
    assert!(value("hibernator_drift_reapplied_total{target_type=\"rds\"}") >= 1.0);
    assert!(value("hibernator_drift_found_total{target_type=\"rds\"}") >= 2.0);
    assert_eq!(
        value("hibernator_drift_found_total{target_type=\"ec2\"}"),
        0.0
    );
}
