//! The Flux `healthCheckExprs` of `deploy/flux/health-check-exprs.yaml`, evaluated the way
//! kustomize-controller evaluates them (RFC 0009): a stale `status.observedGeneration` is
//! InProgress; then `inProgress`, `failed` and `current` in that order, the first true one
//! deciding; none true is InProgress. The object's top-level fields are the CEL variables, as
//! in Flux.
//!
//! The fixtures are the Argo CD health-check fixtures, so both tools are checked against the
//! same status shapes and must agree.

use std::path::Path;

use cel::Context;
use cel::objects::Value as CelValue;
use cel::parser::Parser;
use gitops_checks::{relative, repo_root};
use serde_json::Value;

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", relative(path)));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", relative(path)))
}

fn snippet() -> Value {
    read_yaml(&repo_root().join("deploy/flux/health-check-exprs.yaml"))
}

/// The expressions for a kind.
fn exprs_for(kind: &str) -> Value {
    snippet()["healthCheckExprs"]
        .as_array()
        .expect("a healthCheckExprs list")
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no healthCheckExprs entry for {kind}"))
        .clone()
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum FluxStatus {
    InProgress,
    Failed,
    Current,
}

/// Evaluates one boolean expression on an object; `Err` when CEL cannot (Flux then reports
/// the resource's status as Unknown and keeps waiting).
fn eval(expr: &str, obj: &Value) -> Result<bool, String> {
    let ast = Parser::new()
        .parse(expr)
        .map_err(|e| format!("parse: {e:?}"))?;
    let mut ctx = Context::default();
    for (k, v) in obj.as_object().expect("an object") {
        ctx.add_variable(k.as_str(), v.clone())
            .map_err(|e| format!("variable {k}: {e}"))?;
    }
    match CelValue::resolve(&ast, &ctx) {
        Ok(CelValue::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("not a boolean: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// kustomize-controller's evaluation of one custom health check.
fn flux_status(exprs: &Value, obj: &Value) -> Result<FluxStatus, String> {
    let observed = &obj["status"]["observedGeneration"];
    if observed.is_i64()
        && obj["metadata"]["generation"].is_i64()
        && observed != &obj["metadata"]["generation"]
    {
        return Ok(FluxStatus::InProgress);
    }
    for (field, status) in [
        ("inProgress", FluxStatus::InProgress),
        ("failed", FluxStatus::Failed),
        ("current", FluxStatus::Current),
    ] {
        if let Some(expr) = exprs[field].as_str()
            && eval(expr, obj)?
        {
            return Ok(status);
        }
    }
    Ok(FluxStatus::InProgress)
}

/// `(fixture path, object, Argo CD's expected health)` of a kind's health-check tests.
fn argocd_cases(group: &str, kind: &str) -> Vec<(String, Value, String)> {
    let dir = repo_root()
        .join("deploy/argocd/resource_customizations")
        .join(group)
        .join(kind);
    let tests = read_yaml(&dir.join("health_test.yaml"));
    tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let input = t["inputPath"].as_str().unwrap().to_string();
            let obj = read_yaml(&dir.join(&input));
            let health = t["healthStatus"]["status"].as_str().unwrap().to_string();
            (input, obj, health)
        })
        .collect()
}

/// What Flux must say where Argo CD says `health`. Flux has no Suspended: a suspended plan is
/// Current when Ready (InProgress while, say, its wake-up is retried). An object without status cannot be read by CEL (Flux keeps waiting).
/// An object being deleted is not waited on by Flux's health checks at all.
fn expected(input: &str, obj: &Value, health: &str) -> Option<Result<FluxStatus, ()>> {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return None;
    }
    if obj.get("status").is_none() {
        return Some(Err(()));
    }
    let ready = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    Some(Ok(match health {
        "Healthy" => FluxStatus::Current,
        "Suspended" if ready => FluxStatus::Current,
        "Suspended" => FluxStatus::InProgress,
        "Degraded" => FluxStatus::Failed,
        "Progressing" => FluxStatus::InProgress,
        other => panic!("{input}: unexpected health {other}"),
    }))
}

fn check_kind(group: &str, kind: &str) -> usize {
    let exprs = exprs_for(kind);
    assert_eq!(
        exprs["apiVersion"],
        format!("{group}/v1alpha1").as_str(),
        "{kind}"
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    for (input, obj, health) in argocd_cases(group, kind) {
        let Some(want) = expected(&input, &obj, &health) else {
            continue;
        };
        let got = flux_status(&exprs, &obj);
        checked += 1;
        let ok = match (&want, &got) {
            (Ok(w), Ok(g)) => w == g,
            (Err(()), Err(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{kind} {input} (Argo CD {health}): want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

#[test]
fn plan_expressions_agree_with_the_argocd_health_check_on_every_fixture() {
    let n = check_kind("hibernator.ardikasaputro.io", "HibernationPlan");
    assert!(n >= 20, "only {n} fixtures checked");
}

#[test]
fn exception_expressions_agree_with_the_argocd_health_check() {
    let n = check_kind("hibernator.ardikasaputro.io", "ScheduleException");
    assert!(n >= 4, "only {n} fixtures checked");
}

#[test]
fn the_expressions_parse_and_name_only_our_kinds() {
    for e in snippet()["healthCheckExprs"].as_array().unwrap() {
        let kind = e["kind"].as_str().unwrap();
        assert!(
            ["HibernationPlan", "ScheduleException"].contains(&kind),
            "{kind}"
        );
        assert!(e["current"].is_string(), "{kind}: current is required");
        for field in ["inProgress", "failed", "current"] {
            if let Some(expr) = e[field].as_str() {
                Parser::new()
                    .parse(expr)
                    .unwrap_or_else(|err| panic!("{kind}.{field}: {err:?}"));
            }
        }
    }
}

#[test]
fn a_plan_without_a_ready_condition_is_not_current() {
    // The reason for `exists` over `filter(...).all(...)`: `all` is true on an empty list.
    let obj = serde_json::json!({
        "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
        "kind": "HibernationPlan",
        "metadata": {"name": "p", "generation": 1},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Hibernated", "status": "False", "reason": "Awake", "message": ""}
        ]}
    });
    let exprs = exprs_for("HibernationPlan");
    assert_eq!(flux_status(&exprs, &obj), Ok(FluxStatus::InProgress));
    let naive = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')";
    assert_eq!(
        eval(naive, &obj),
        Ok(true),
        "the naive form would say Current"
    );
}

#[test]
fn the_flux_layout_uses_the_same_expressions() {
    let path = repo_root().join("examples/gitops/layouts/flux/hibernator-kustomizations.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let plans = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "hibernator")
        .expect("the plans Kustomization");
    assert_eq!(
        plans["spec"]["healthCheckExprs"],
        snippet()["healthCheckExprs"]
    );
    assert_eq!(plans["spec"]["wait"], true);
    assert_eq!(plans["spec"]["deletionPolicy"], "WaitForTermination");
    assert_eq!(
        plans["spec"]["dependsOn"][0]["name"], "hibernator-operator",
        "the plans wait for the operator"
    );
}
