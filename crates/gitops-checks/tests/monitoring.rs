//! The chart's monitoring: the Prometheus rules pass `promtool check rules` and their promtool
//! unit tests (every alert fires in one case and stays quiet in another), the chart ships the
//! dashboard and the rules exactly as the files hold them (and neither by default), and every
//! dashboard and rule expression is PromQL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use gitops_checks::{
    dashboard, dashboard_exprs, dashboard_panels, helm_command, helm_template, metric_names,
    promtool, relative, rule_exprs, rules, rules_file, rules_test_file,
};
use serde_json::Value;

fn run_promtool(args: &[&str], file: &Path) -> Output {
    let bin = promtool();
    Command::new(&bin)
        .args(args)
        .arg(file)
        .current_dir(file.parent().expect("the file is in a directory"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The alert names of the rule file, in order.
fn alert_names() -> Vec<String> {
    rules()["groups"]
        .as_array()
        .expect("the rule file has groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("a group has rules"))
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn promtool_checks_the_rules() {
    let file = rules_file();
    let out = run_promtool(&["check", "rules"], &file);
    let said = text(&out);
    assert!(
        out.status.success(),
        "promtool check rules {} failed: {said}",
        relative(&file)
    );
    let alerts = alert_names();
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "promtool found another number of rules than the {} alerts {alerts:?}: {said}",
        alerts.len()
    );
}

#[test]
fn promtool_unit_tests_pass_and_cover_every_alert() {
    let file = rules_test_file();
    let out = run_promtool(&["test", "rules"], &file);
    assert!(
        out.status.success(),
        "promtool test rules {} failed: {}",
        relative(&file),
        text(&out)
    );

    let tests: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(&file).expect("the rule tests are readable"),
    )
    .expect("the rule tests are YAML");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"]
        .as_array()
        .expect("tests is a list")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
    {
        let name = case["alertname"]
            .as_str()
            .unwrap_or_else(|| panic!("an alert_rule_test without alertname: {case}"))
            .to_string();
        let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
        if expected > 0 {
            fires.insert(name);
        } else {
            quiet.insert(name);
        }
    }
    let alerts: BTreeSet<String> = alert_names().into_iter().collect();
    // A misspelt alertname with `exp_alerts: []` would pass promtool and test nothing.
    let unknown: Vec<_> = fires
        .union(&quiet)
        .filter(|n| !alerts.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "alert_rule_test alertname(s) {unknown:?} are not alerts of {}",
        relative(&rules_file())
    );
    for alert in &alerts {
        assert!(
            fires.contains(alert),
            "no alert_rule_test of {} expects {alert} to fire",
            relative(&file)
        );
        assert!(
            quiet.contains(alert),
            "no alert_rule_test of {} expects {alert} to stay quiet",
            relative(&file)
        );
    }
}

#[test]
fn every_alert_has_a_duration_a_severity_and_words() {
    for group in rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("rule {rule} is not an alert"));
            assert!(
                rule["for"].as_str().is_some_and(|f| !f.is_empty()),
                "alert {name}: for is {}",
                rule["for"]
            );
            assert!(
                ["warning", "critical"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "alert {name}: labels.severity is {}",
                rule["labels"]["severity"]
            );
            for a in ["summary", "description"] {
                assert!(
                    rule["annotations"][a]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "alert {name}: annotations.{a} is {}",
                    rule["annotations"][a]
                );
            }
        }
    }
}

fn render(sets: &[&str]) -> Vec<Value> {
    let text = helm_template(sets);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("helm template with {sets:?} printed no YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn dashboard_config_maps(docs: &[Value]) -> Vec<&Value> {
    of_kind(docs, "ConfigMap")
        .into_iter()
        .filter(|d| !d["data"]["hibernator.json"].is_null())
        .collect()
}

#[test]
fn chart_ships_the_dashboard_and_the_rules_as_the_files_hold_them() {
    let docs = render(&[
        "grafana.dashboard.enabled=true",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kube-prometheus-stack",
    ]);

    let maps = dashboard_config_maps(&docs);
    assert_eq!(maps.len(), 1, "one dashboard ConfigMap");
    let cm = maps[0];
    assert_eq!(cm["metadata"]["name"], "hib-hibernator-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "hibernator-system");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert!(
        cm["metadata"]["annotations"].is_null(),
        "no folder annotation without grafana.dashboard.folder: {}",
        cm["metadata"]
    );
    let file = gitops_checks::dashboard_file();
    let shipped = cm["data"]["hibernator.json"].as_str().unwrap();
    assert!(
        shipped == std::fs::read_to_string(&file).unwrap(),
        "the ConfigMap's hibernator.json differs from {}",
        relative(&file)
    );

    let prs = of_kind(&docs, "PrometheusRule");
    assert_eq!(prs.len(), 1, "one PrometheusRule");
    let pr = prs[0];
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pr["metadata"]["name"], "hib-hibernator");
    assert_eq!(pr["metadata"]["namespace"], "hibernator-system");
    assert_eq!(pr["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(
        pr["spec"],
        serde_json::json!({"groups": rules()["groups"]}),
        "the PrometheusRule's groups differ from {}",
        relative(&rules_file())
    );
}

#[test]
fn dashboard_label_folder_and_namespace_are_settable() {
    let docs = render(&[
        "grafana.dashboard.enabled=true",
        "grafana.dashboard.label=dashboards",
        "grafana.dashboard.labelValue=hibernator",
        "grafana.dashboard.labels.team=platform",
        "grafana.dashboard.folder=Cost",
        "grafana.dashboard.folderAnnotation=k8s-sidecar-target-directory",
        "grafana.dashboard.namespace=monitoring",
    ]);
    let maps = dashboard_config_maps(&docs);
    assert_eq!(maps.len(), 1);
    let meta = &maps[0]["metadata"];
    assert_eq!(meta["namespace"], "monitoring");
    assert_eq!(meta["labels"]["dashboards"], "hibernator");
    assert_eq!(meta["labels"]["team"], "platform");
    assert!(meta["labels"]["grafana_dashboard"].is_null(), "{meta}");
    assert_eq!(
        meta["annotations"],
        serde_json::json!({"k8s-sidecar-target-directory": "Cost"})
    );
}

#[test]
fn chart_renders_neither_by_default() {
    let docs = render(&[]);
    assert!(
        dashboard_config_maps(&docs).is_empty(),
        "a dashboard ConfigMap with default values"
    );
    assert!(
        of_kind(&docs, "PrometheusRule").is_empty(),
        "a PrometheusRule with default values"
    );
}

#[test]
fn chart_lints_with_monitoring_on() {
    let out = helm_command(
        &["lint", "--strict"],
        &[
            "grafana.dashboard.enabled=true",
            "grafana.dashboard.folder=Cost",
            "prometheusRule.enabled=true",
            "serviceMonitor.enabled=true",
        ],
    );
    let said = text(&out);
    assert!(
        out.status.success() && said.contains("0 chart(s) failed"),
        "helm lint --strict failed: {said}"
    );
}

#[test]
fn dashboard_panels_query_promql() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
        "schemaVersion is {}",
        dashboard["schemaVersion"]
    );
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["namespace", "plan"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "variable {name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "variable {name}");
        let query = v["query"]["query"].as_str().unwrap_or_default();
        assert!(
            query.starts_with("label_values(") && query.ends_with(&format!(", {name})")),
            "variable {name}: query is {query:?}"
        );
    }

    let panels = dashboard_panels(&dashboard);
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let what = format!("panel {} ({})", p["id"], p["title"]);
        assert!(ids.insert(p["id"].to_string()), "{what}: id used twice");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{what}: datasource"
        );
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "{what} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "{what} target {}: no expr", t["refId"]);
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{what}: target datasource"
            );
        }
    }
    for title in [
        "Plans by phase",
        "Asleep now",
        "Next transitions",
        "Estimated savings per hour",
        "Resource hours asleep in the time range",
        "Schedule boundary lag",
        "Runner duration",
        "Runner failures per hour",
        "Notification deliveries per hour",
        "Leader",
        "Stalled plans",
        "Plans not restored",
    ] {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel titled {title:?}"
        );
    }

    let exprs = dashboard_exprs();
    let targets: usize = panels
        .iter()
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        exprs.len(),
        targets + 2,
        "every target and both query variables"
    );
    for (source, expr) in &exprs {
        let names =
            metric_names(expr).unwrap_or_else(|e| panic!("{source}: {expr:?} is not PromQL: {e}"));
        assert!(!names.is_empty(), "{source}: {expr:?} selects no metric");
        for n in &names {
            assert!(
                n.starts_with("hibernator_") || n == "up",
                "{source}: {expr:?} selects {n}, not a Hibernator metric"
            );
        }
    }
}

#[test]
fn rule_expressions_are_promql() {
    let exprs = rule_exprs();
    assert_eq!(exprs.len(), alert_names().len());
    for (source, expr) in &exprs {
        let names =
            metric_names(expr).unwrap_or_else(|e| panic!("{source}: {expr:?} is not PromQL: {e}"));
        assert!(!names.is_empty(), "{source}: {expr:?} selects no metric");
    }
}
