//! The command line, run as a user runs it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/gitops/hibernator")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-hibernator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    {
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// All example files concatenated as `kubectl kustomize` would print them.
fn stream() -> String {
    let mut out = String::new();
    for f in [
        "namespaces/hibernator-system.yaml",
        "cloudproviders/aws-prod.yaml",
        "k8sclusters/eks-prod.yaml",
        "hibernateplans/prod-offhours.yaml",
    ] {
        out.push_str("---\n");
        out.push_str(&std::fs::read_to_string(examples().join(f)).unwrap());
    }
    out
}

#[test]
fn validate_accepts_the_seed_directory() {
    let o = run(&["validate", examples().to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Two CloudProviders, two K8SClusters, three plans, the holiday exception (its calendar
    // ConfigMap is read, not counted) and the prod plan's Slack notification.
    assert!(stdout(&o).contains("9 objects valid"), "{}", stdout(&o));
}

#[test]
fn validate_reads_a_multi_document_stream_from_stdin() {
    let o = run(&["validate", "-", "--output", "json"], Some(&stream()));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["checked"].as_array().unwrap().len(), 3);
    assert_eq!(report["ignored"], 1);
}

#[test]
fn validate_reports_the_field_and_value_and_exits_1() {
    let broken = stream().replace("start: \"20:00\"", "start: \"20:61\"");
    let o = run(&["validate", "-"], Some(&broken));
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.contains("error: spec.schedule.offHours[0].start = \"20:61\": does not match"),
        "{text}"
    );
    assert!(
        text.contains("<stdin>#4: HibernationPlan hibernator-system/prod-offhours"),
        "{text}"
    );
    assert!(text.contains("hint: write times as HH:MM"), "{text}");
}

#[test]
fn validate_json_lists_problems() {
    let broken = stream().replace(
        "name: aws-prod\n      parameters:\n        snapshotBeforeStop",
        "name: aws-dev\n      parameters:\n        snapshotBeforeStop",
    );
    let o = run(&["validate", "-o", "json"], Some(&broken));
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &report["problems"][0];
    assert_eq!(p["field"], "spec.targets[0].connectorRef.name");
    assert_eq!(p["value"], "\"aws-dev\"");
    assert_eq!(p["severity"], "error");
    let o = run(&["validate", "--allow-missing-refs"], Some(&broken));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn unparsable_yaml_is_invalid_and_a_missing_path_is_an_io_error() {
    let o = run(&["validate", "-"], Some("kind: [unclosed\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not valid YAML"), "{}", stdout(&o));
    let o = run(&["validate", "/nonexistent/plans"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failed to read /nonexistent/plans"));
    let o = run(&["validate", "--no-such-flag"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn preview_shows_weeknights_and_the_weekend_asleep() {
    // Thursday 2026-11-26 07:00 New York.
    let o = run(
        &[
            "preview",
            examples().to_str().unwrap(),
            "--plan",
            "prod-offhours",
            "--from",
            "2026-12-03T12:00:00Z",
            "--count",
            "4",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let expected = serde_json::json!([
        {"plan": "prod-offhours", "namespace": "hibernator-system", "at": "2026-12-04T01:00:00Z", "local": "2026-12-03T20:00:00-05:00", "operation": "hibernate", "reason": WINDOW},
        {"plan": "prod-offhours", "namespace": "hibernator-system", "at": "2026-12-04T11:00:00Z", "local": "2026-12-04T06:00:00-05:00", "operation": "wakeUp", "reason": "outside off-hours"},
        {"plan": "prod-offhours", "namespace": "hibernator-system", "at": "2026-12-05T01:00:00Z", "local": "2026-12-04T20:00:00-05:00", "operation": "hibernate", "reason": WINDOW},
        {"plan": "prod-offhours", "namespace": "hibernator-system", "at": "2026-12-07T11:00:00Z", "local": "2026-12-07T06:00:00-05:00", "operation": "wakeUp", "reason": "outside off-hours"},
    ]);
    assert_eq!(rows, expected);
}

const WINDOW: &str = "inside off-hours window MON,TUE,WED,THU,FRI 20:00-06:00";

#[test]
fn preview_names_the_holidays_of_the_example_calendar() {
    // Thanksgiving (Thursday and Friday) joins the weekend: asleep from Wednesday 20:00 to
    // Monday 06:00.
    let o = run(
        &[
            "preview",
            examples().to_str().unwrap(),
            "--plan",
            "prod-offhours",
            "--from",
            "2026-11-25T12:00:00Z",
            "--count",
            "2",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["local"], "2026-11-25T20:00:00-05:00");
    assert_eq!(
        rows[0]["reason"],
        format!("{WINDOW}; holidays: Thanksgiving (2026-11-26), Thanksgiving (2026-11-27)")
    );
    assert_eq!(rows[1]["local"], "2026-11-30T06:00:00-05:00");
    assert_eq!(rows[1]["operation"], "wakeUp");
}

#[test]
fn validate_points_at_the_line_of_a_bad_calendar() {
    let docs = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cal, namespace: ns}
data:
  holidays.ics: |
    BEGIN:VCALENDAR
    VERSION:2.0
    BEGIN:VEVENT
    SUMMARY:Offsite
    DTSTART:20261201T090000Z
    END:VEVENT
    END:VCALENDAR
---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata: {name: holidays, namespace: ns}
spec:
  planRef: {name: p}
  type: extend
  validFrom: "2026-01-01T00:00:00Z"
  validUntil: "2027-01-01T00:00:00Z"
  calendarRef: {name: cal, key: holidays.ics}
"#;
    let o = run(&["validate", "--allow-missing-refs", "-"], Some(docs));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("spec.calendarRef") && text.contains("ConfigMap ns/cal key holidays.ics: line 5: event \"Offsite\": DTSTART 20261201T090000Z is not a date"),
        "{text}"
    );
}

#[test]
fn preview_applies_schedule_exceptions() {
    let exception = r#"---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata:
  name: black-friday
  namespace: hibernator-system
spec:
  planRef:
    name: prod-offhours
  validFrom: "2026-11-27T00:00:00Z"
  validUntil: "2026-11-29T00:00:00Z"
  type: suspend
  windows:
    - start: "00:00"
      end: "23:59"
      daysOfWeek: ["FRI", "SAT"]
"#;
    let input = format!("{}{exception}", stream());
    let o = run(
        &[
            "preview",
            "-",
            "--from",
            "2026-11-26T12:00:00Z",
            "--count",
            "2",
            "-o",
            "json",
        ],
        Some(&input),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Thursday night sleeps until the suspension starts at 00:00 UTC Friday (19:00 local),
    // then stays awake until the exception ends Sunday 00:00 UTC.
    assert_eq!(rows[0]["local"], "2026-11-26T20:00:00-05:00");
    assert_eq!(rows[1]["at"], "2026-11-27T05:00:00Z");
    assert_eq!(rows[1]["operation"], "wakeUp");
}

/// A ScheduleException for one target: `preview` lists which targets change, with the one the
/// woken target needs in wake-up order (the example's cluster wakes before its database).
#[test]
fn preview_shows_an_exception_for_some_targets_per_target() {
    let exception = |targets: &str| {
        format!(
            r#"---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata:
  name: db-migration
  namespace: hibernator-system
spec:
  planRef:
    name: prod-offhours
  targets: [{targets}]
  validFrom: "2026-11-27T02:00:00Z"
  validUntil: "2026-11-27T04:00:00Z"
  type: suspend
  windows:
    - start: "00:00"
      end: "23:59"
      daysOfWeek: ["THU", "FRI"]
"#
        )
    };
    let args = [
        "preview",
        "-",
        "--from",
        "2026-11-26T12:00:00Z",
        "--count",
        "4",
        "-o",
        "json",
    ];
    let o = run(
        &args,
        Some(&format!("{}{}", stream(), exception("prod-db"))),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |i: usize| {
        (
            rows[i]["at"].as_str().unwrap_or_default().to_string(),
            rows[i]["operation"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            rows[i]["targets"].clone(),
        )
    };
    let all = serde_json::Value::Null;
    let both = serde_json::json!(["prod-db", "prod-cluster"]);
    assert_eq!(
        row(0),
        (
            "2026-11-27T01:00:00Z".into(),
            "hibernate".into(),
            all.clone()
        )
    );
    assert_eq!(
        row(1),
        ("2026-11-27T02:00:00Z".into(), "wakeUp".into(), both)
    );
    assert_eq!(
        rows[1]["reason"],
        "prod-db (awake: ScheduleException db-migration), prod-cluster (awake: needed by prod-db)"
    );
    // Back on the plan's schedule: every target sleeps, as the plan says.
    assert_eq!(
        row(2),
        (
            "2026-11-27T04:00:00Z".into(),
            "hibernate".into(),
            all.clone()
        )
    );
    assert_eq!(
        row(3),
        ("2026-11-27T11:00:00Z".into(), "wakeUp".into(), all)
    );

    // A target the plan does not have: the exception is left out, and the exit code says so.
    let o = run(
        &args,
        Some(&format!("{}{}", stream(), exception("prod-dbb"))),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "db-migration: spec.targets: \"prod-dbb\" is not a target of plan prod-offhours (its targets: prod-db, prod-cluster)"
        ),
        "{err}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[1]["at"], "2026-11-27T11:00:00Z", "{rows}");
}

#[test]
fn preview_text_is_readable() {
    let o = run(
        &[
            "preview",
            examples().to_str().unwrap(),
            "--from",
            "2026-12-04T12:00:00Z",
            "--count",
            "2",
        ],
        None,
    );
    let text = stdout(&o);
    assert!(
        text.contains("prod-offhours (hibernator-system), America/New_York:"),
        "{text}"
    );
    assert!(
        text.contains("Fri 2026-12-04 20:00 EST  hibernate"),
        "{text}"
    );
    assert!(text.contains("Mon 2026-12-07 06:00 EST  wake up"), "{text}");
}

#[test]
fn validate_checks_notifications_against_their_plans_and_secrets() {
    let docs = r#"
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: HibernationPlan
metadata: {name: prod-offhours, namespace: team-a, labels: {notify: platform}}
spec:
  schedule: {timezone: UTC, offHours: [{start: "20:00", end: "06:00", daysOfWeek: [MON]}]}
  execution: {strategy: {type: Parallel}}
  targets: [{name: batch, type: noop}]
---
apiVersion: v1
kind: Secret
metadata: {name: hooks, namespace: team-a}
stringData: {slack: "https://hooks.example/T"}
---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: HibernationNotification
metadata: {name: by-name, namespace: team-a}
spec:
  planRefs: [{name: prod-ofhours}]
  events: [Hibernated, Awake]
  sinks:
    - slack: {webhookSecretRef: {name: hooks, key: slack}}
    - teams: {webhookSecretRef: {name: hooks, key: teams}}
    - slack: {webhookSecretRef: {name: kept-out-of-git, key: url}}
---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: HibernationNotification
metadata: {name: by-label, namespace: team-a}
spec:
  selector: {matchLabels: {notify: nobody}}
  events: [HeadsUp]
  headsUpBefore: 25h
  sinks: [{slack: {webhookSecretRef: {name: hooks, key: slack}}}]
"#;
    let o = run(&["validate", "-"], Some(docs));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for line in [
        "error: spec.planRefs[0].name = \"prod-ofhours\": HibernationPlan team-a/prod-ofhours is not among the documents",
        "hint: did you mean \"prod-offhours\"?",
        "error: spec.sinks[2].name: the name \"slack\" is taken by spec.sinks[0]",
        "error: spec.sinks[1].teams.webhookSecretRef.key = \"teams\": Secret team-a/hooks has no key \"teams\"",
        "error: spec.headsUpBefore = \"25h\": \"25h\" is not a duration of at most 24h",
    ] {
        assert!(out.contains(line), "{line}\nnot in:\n{out}");
    }
    assert!(
        !out.contains("kept-out-of-git"),
        "a Secret that is not among the documents is not reported: {out}"
    );
    // Fixed, the label selector that matches no plan is a warning only.
    let fixed = docs
        .replace("prod-ofhours", "prod-offhours")
        .replace("key: teams", "key: slack")
        .replace(
            "- slack: {webhookSecretRef: {name: kept-out-of-git, key: url}}",
            "- {name: other, slack: {webhookSecretRef: {name: kept-out-of-git, key: url}}}",
        )
        .replace("25h", "30m");
    let o = run(&["validate", "-"], Some(&fixed));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("warning: spec.selector")
            && out.contains("selects none of the HibernationPlans of namespace team-a"),
        "{out}"
    );
}
