//! A full night of a plan shaped like the seed's, end to end: the real control plane, the
//! controller as a process with its own ClusterRole, real runner pods (processes run by the
//! test kubelet), moto for AWS, and a simulated clock (ten hours pass in about a minute).

use std::time::Duration;

use hibernator_api::common::find_condition;
use hibernator_api::plan::{HibernationPlan, Phase};
use hibernator_e2e::world::{ControllerOptions, World, wait_for};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

fn condition(p: &HibernationPlan, t: &str) -> Option<(String, String)> {
    p.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, t))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn phase(p: &HibernationPlan) -> Option<Phase> {
    p.status.as_ref().and_then(|s| s.phase)
}

fn seed_plan() -> Value {
    json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": "prod-offhours"},
        "spec": {
            "schedule": {"timezone": "America/New_York",
                         "offHours": [{"start": "20:00", "end": "06:00", "daysOfWeek": ["MON", "TUE", "WED", "THU", "FRI"]}]},
            "execution": {"strategy": {"type": "DAG", "maxConcurrency": 2,
                                       "dependencies": [{"from": "prod-db", "to": "prod-cluster"}]}},
            "targets": [
                {"name": "prod-db", "type": "rds", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
                 "parameters": {"snapshotBeforeStop": true}},
                {"name": "prod-cluster", "type": "eks", "connectorRef": {"kind": "CloudProvider", "name": "aws-prod"},
                 "parameters": {"clusterName": "eks-prod", "nodeGroups": [{"name": "default-ng"}, {"name": "gpu-ng"}]}},
            ],
        },
    })
}

/// (creation time, completion time) of the Job of `target` and `operation`.
async fn job_times(jobs: &Api<Job>, target: &str, operation: &str) -> (Timestamp, Timestamp) {
    let list = jobs
        .list(&ListParams::default().labels(&format!(
            "hibernator.ardikasaputro.io/target={target},hibernator.ardikasaputro.io/operation={operation}"
        )))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one {operation} Job for {target}");
    let j = &list.items[0];
    let created = j.metadata.creation_timestamp.clone().unwrap().0;
    let done = j
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .expect("the Job completed")
        .0;
    (created, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_of_the_seed_plan() {
    let w = World::new("night").await.unwrap();
    let before = w
        .estate(json!({"rds": ["prod-db"], "eks": {"prod-eks-1": {"default-ng": [1, 2, 3], "gpu-ng": [1, 1, 2]}}}))
        .unwrap();
    w.cloud_provider("aws-prod").await.unwrap();
    w.eks_cluster("eks-prod", "aws-prod", "prod-eks-1")
        .await
        .unwrap();
    w.apply(seed_plan()).await.unwrap();

    // Thursday 16:00 New York; 600x: an hour takes six seconds, so the first status has 24 s
    // of real time before the 20:00 boundary, even on a loaded machine.
    let controller = w
        .controller(ControllerOptions::at("2026-11-26T21:00:00Z", 600.0))
        .unwrap();
    let report = |e: anyhow::Error| format!("{e:#}\n--- controller log:\n{}", controller.log());

    // Before 20:00: Active and Ready, with the next transition announced.
    let p = w
        .wait_plan(
            "prod-offhours",
            Duration::from_secs(20),
            "Active and Ready (before 20:00)",
            |p| {
                phase(p) == Some(Phase::Active)
                    && condition(p, "Ready") == Some(("True".into(), "Active".into()))
            },
        )
        .await
        .map_err(report)
        .unwrap();
    let s = p.status.clone().unwrap();
    assert_eq!(s.observed_generation, p.metadata.generation);
    assert_eq!(
        s.schedule.unwrap().next_hibernate_at.unwrap().0.to_string(),
        "2026-11-27T01:00:00Z"
    );

    // At 20:00 the hibernation runs in dependency order and the plan ends Hibernated.
    let p = w
        .wait_plan(
            "prod-offhours",
            Duration::from_secs(90),
            "Hibernated",
            |p| phase(p) == Some(Phase::Hibernated),
        )
        .await
        .map_err(report)
        .unwrap();
    assert_eq!(
        condition(&p, "Ready"),
        Some(("True".into(), "Hibernated".into()))
    );
    assert_eq!(
        condition(&p, "Hibernated"),
        Some(("True".into(), "Hibernated".into()))
    );
    let cycle = p.status.as_ref().unwrap().current_cycle.clone().unwrap();
    assert_eq!(cycle.id, "20261127t0100");
    let jobs: Api<Job> = Api::namespaced(w.client.clone(), &w.ns);
    let (_, db_done) = job_times(&jobs, "prod-db", "hibernate").await;
    let (cluster_created, _) = job_times(&jobs, "prod-cluster", "hibernate").await;
    assert!(
        cluster_created >= db_done,
        "prod-cluster started only after prod-db finished"
    );

    let asleep = w.snapshot().unwrap();
    assert_eq!(asleep["rds"]["prod-db"], "stopped", "{asleep}");
    assert_eq!(
        asleep["nodegroups"]["prod-eks-1/default-ng"],
        json!([0, 0, 3])
    );
    assert_eq!(asleep["nodegroups"]["prod-eks-1/gpu-ng"], json!([0, 0, 2]));
    let manual: Vec<&Value> = asleep["rdsSnapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.as_str().is_some_and(|s| s.starts_with("prod-db")))
        .collect();
    assert_eq!(
        manual.len(),
        1,
        "a snapshot was taken before stopping: {asleep}"
    );

    // At 06:00 the wake-up runs in reverse order and everything is as it was.
    w.wait_plan(
        "prod-offhours",
        Duration::from_secs(120),
        "awake again",
        |p| {
            phase(p) == Some(Phase::Active)
                && p.status
                    .as_ref()
                    .and_then(|s| s.current_cycle.as_ref())
                    .is_some_and(|c| {
                        c.operation == hibernator_api::Operation::WakeUp && c.finished_at.is_some()
                    })
        },
    )
    .await
    .map_err(report)
    .unwrap();
    // The restored records leave the ConfigMap in one write after the status that ends the
    // wake-up (their savings ids are forgotten with the plan's next status write, whenever
    // that comes).
    wait_for(
        Duration::from_secs(120),
        "restored records retired",
        || async {
            let data = w.restore_data("prod-offhours").await.ok()?;
            data.is_empty().then_some(())
        },
    )
    .await
    .map_err(report)
    .unwrap();
    let p = w.plan("prod-offhours").await.unwrap();
    let saved = p.status.as_ref().and_then(|s| s.savings.as_ref());
    assert!(saved.is_some_and(|s| s.total.hours > 0.0), "{saved:?}");
    let (_, cluster_woken) = job_times(&jobs, "prod-cluster", "wakeUp").await;
    let (db_wake_created, _) = job_times(&jobs, "prod-db", "wakeUp").await;
    assert!(
        db_wake_created >= cluster_woken,
        "prod-db woke only after prod-cluster: prod-db's wake-up Job created at {db_wake_created}, prod-cluster's completed at {cluster_woken}"
    );
    let after = w.snapshot().unwrap();
    assert_eq!(after["rds"], before["rds"]);
    assert_eq!(after["nodegroups"], before["nodegroups"]);
    assert_eq!(
        condition(&p, "Hibernated"),
        Some(("False".into(), "Awake".into()))
    );
    let history = &p.status.as_ref().unwrap().history;
    assert!(
        history[0].hibernate.as_ref().unwrap().succeeded
            && history[0].wake_up.as_ref().unwrap().succeeded
    );
    // The restore data is gone once everything woke up.
    let cm: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(w.client.clone(), &w.ns);
    let data = cm
        .get("hibernator-restore-prod-offhours")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert!(data.is_empty(), "{data:?}");
    let names: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    let (checks, operations): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| n.contains("-e-"));
    assert_eq!(
        operations.len(),
        4,
        "one Job per target and operation: {names:?}"
    );
    // Enforcement is on by default (Report, every 6 h): both targets were checked once during
    // the ten-hour night.
    assert_eq!(
        checks,
        [
            &"prod-offhours-prod-cluster-e-20261127t0100-1".to_string(),
            &"prod-offhours-prod-db-e-20261127t0100-1".to_string()
        ],
        "{names:?}"
    );
    assert_eq!(
        condition(&p, "Drifted"),
        None,
        "the wake-up ends the night's checks"
    );

    // The savings ledger: the RDS instance (db.t3.micro, 0.018 an hour in the shipped table)
    // and both node groups (t3.medium, 0.0416; 2 + 1 instances) asleep for about ten hours,
    // measured from each record to its wake-up on the schedule clock.
    let metrics = controller.metrics().await.unwrap();
    let sample = |name: &str, type_: &str| -> f64 {
        let prefix = format!(
            "{name}{{namespace=\"{}\",plan=\"prod-offhours\",target_type=\"{type_}\"}} ",
            w.ns
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in {metrics}"))
    };
    let (rds_hours, eks_hours) = (
        sample("hibernator_resource_hours_asleep_total", "rds"),
        sample("hibernator_resource_hours_asleep_total", "eks"),
    );
    let (rds_amount, eks_amount) = (
        sample("hibernator_estimated_savings_total", "rds"),
        sample("hibernator_estimated_savings_total", "eks"),
    );
    // About ten hours: the records come a few real seconds (at 600x, some simulated minutes
    // to an hour on a loaded machine) after 20:00, the wake-up at 06:00.
    assert!((8.0..=11.0).contains(&rds_hours), "{rds_hours}");
    assert!((3.0 * 8.0..=3.0 * 11.0).contains(&eks_hours), "{eks_hours}");
    assert!(
        (rds_amount - rds_hours * 0.018).abs() < 1e-6,
        "{rds_amount}"
    );
    assert!(
        (eks_amount - eks_hours * 0.0416).abs() < 1e-6,
        "{eks_amount}"
    );
    let savings = p.status.as_ref().unwrap().savings.clone();
    let savings = match savings {
        Some(s) => s,
        // The status read above may predate the last write: read it again.
        None => w
            .plan("prod-offhours")
            .await
            .unwrap()
            .status
            .unwrap()
            .savings
            .expect("status.savings after the night"),
    };
    assert_eq!(savings.currency, "USD");
    let last = savings.last_cycle.clone().unwrap();
    assert_eq!(
        Some(&last.period),
        p.status
            .as_ref()
            .unwrap()
            .current_cycle
            .as_ref()
            .map(|c| &c.id)
    );
    assert!(
        (last.hours - (rds_hours + eks_hours)).abs() < 1e-3,
        "{last:?}"
    );
    assert!(
        (last.amount - (rds_amount + eks_amount)).abs() < 1e-3,
        "{last:?}"
    );
    assert_eq!(last.unpriced_hours, 0.0);
    assert_eq!(
        (savings.total.hours, savings.total.amount),
        (last.hours, last.amount)
    );
    // The ids of the retired records are forgotten with the plan's next status write, which
    // the forgetting alone does not make (`urgency::Urgency::Lazy`); until then they name
    // only records of this night.
    assert!(
        savings.counted.iter().all(|id| id.contains("@2026-11-27T")),
        "{savings:?}"
    );
    // `kubectl hibernator savings` prints the same numbers.
    let (ok, out) = w.cli(&["savings", "prod-offhours", "-o", "json"]);
    assert!(ok, "{out}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    let periods = &printed[0]["periods"];
    assert_eq!(printed[0]["currency"], "USD", "{out}");
    assert_eq!(
        periods[0]["period"],
        format!("last cycle ({})", last.period),
        "{out}"
    );
    assert_eq!(periods[0]["hours"], json!(last.hours), "{out}");
    assert_eq!(periods[0]["amount"], json!(last.amount), "{out}");
    assert_eq!(periods[2]["period"], "total", "{out}");
    assert_eq!(periods[2]["amount"], json!(savings.total.amount), "{out}");
    let (ok, out) = w.cli(&["savings", "prod-offhours", "--since", "30d", "-o", "csv"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("namespace,plan,period,hours,amount,currency,unpriced_hours\n"),
        "{out}"
    );
}
