use serde_json::json;

use super::variants::*;
use super::*;

#[test]
fn the_seed_is_valid() {
    let mut docs = seed();
    docs.push(exception());
    let report = validate_documents(&docs, Options::default());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.ignored, 1, "the Namespace is not ours");
    assert_eq!(
        report.checked,
        [
            "CloudProvider hibernator-system/aws-prod",
            "K8SCluster hibernator-system/eks-prod",
            "HibernationPlan hibernator-system/prod-offhours",
            "ScheduleException hibernator-system/launch",
        ]
    );
}

#[test]
fn invalid_variants_are_rejected_naming_field_and_value() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let mut docs = seed();
        docs.push(exception());
        (case.change)(doc_mut(&mut docs, case.kind));
        let report = validate_documents(&docs, Options::default());
        let found = report.problems.iter().find(|p| {
            p.field == case.field
                && p.message.contains(case.message)
                && case.value.is_none_or(|v| p.value.as_deref() == Some(v))
        });
        if found.is_none() {
            failures.push(format!(
                "{}: expected {} ~ {:?} (value {:?}), got:\n  {}",
                case.name,
                case.field,
                case.message,
                case.value,
                report
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
        assert!(!report.is_valid(), "{} must be invalid", case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_at_once() {
    let mut docs = seed();
    let plan = doc_mut(&mut docs, PLAN);
    set(plan, "/spec/schedule/timezone", json!("Nowhere/City"));
    set(plan, "/spec/targets/0/connectorRef/name", json!("missing"));
    set(plan, "/spec/schedule/offHours/0/start", json!("99:00"));
    let report = validate_documents(&docs, Options::default());
    let fields: Vec<&str> = report.problems.iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"spec.schedule.timezone"), "{fields:?}");
    assert!(
        fields.contains(&"spec.schedule.offHours[0].start"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.targets[0].connectorRef.name"),
        "{fields:?}"
    );
}

#[test]
fn hints_suggest_the_likely_fix() {
    let mut docs = seed();
    let plan = doc_mut(&mut docs, PLAN);
    set(plan, "/spec/schedule/timezone", json!("America/New_Yrok"));
    set(plan, "/spec/schedual", json!({}));
    let report = validate_documents(&docs, Options::default());
    let hint = |field: &str| {
        report
            .problems
            .iter()
            .find(|p| p.field == field)
            .and_then(|p| p.hint.clone())
            .unwrap_or_default()
    };
    assert!(
        hint("spec.schedule.timezone").contains("America/New_York"),
        "{}",
        hint("spec.schedule.timezone")
    );
    assert!(
        hint("spec.schedual").contains("\"schedule\""),
        "{}",
        hint("spec.schedual")
    );
}

#[test]
fn missing_references_can_be_allowed() {
    let docs: Vec<Document> = seed()
        .into_iter()
        .filter(|d| d.value["kind"] == PLAN)
        .collect();
    assert!(!validate_documents(&docs, Options::default()).is_valid());
    let report = validate_documents(
        &docs,
        Options {
            allow_missing_refs: true,
            ..Options::default()
        },
    );
    assert!(report.is_valid(), "{:#?}", report.problems);
}

#[test]
fn other_kinds_are_ignored() {
    let docs = vec![Document {
        source: "cm.yaml".into(),
        value: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}),
    }];
    let report = validate_documents(&docs, Options::default());
    assert_eq!(report.ignored, 1);
    assert!(report.checked.is_empty());
    assert!(report.is_valid());
}

#[test]
fn controller_semantics_on_typed_plans() {
    use crate::fixtures::PlanBuilder;
    use crate::params::TargetType;
    let plan = PlanBuilder::new("p")
        .target("a", TargetType::Noop)
        .target("b", TargetType::Noop)
        .dag(&[("a", "b"), ("b", "a")])
        .schedule("Mars/Base", vec![])
        .build();
    let problems: Vec<String> = plan_semantics(&plan)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "spec.schedule.timezone: unknown time zone \"Mars/Base\"",
            "spec.execution.strategy.dependencies[1].to: dependencies form a cycle: a -> b -> a",
        ]
    );
}

#[test]
fn an_exception_target_that_is_almost_right_gets_a_suggestion() {
    let mut docs = seed();
    docs.push(exception());
    set(
        doc_mut(&mut docs, "ScheduleException"),
        "/spec/targets",
        json!(["prod-clustr"]),
    );
    let report = validate_documents(&docs, Options::default());
    let p = report
        .problems
        .iter()
        .find(|p| p.field == "spec.targets[0]")
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert_eq!(
        p.hint.as_deref(),
        Some("did you mean \"prod-cluster\"? its targets: prod-db, prod-cluster")
    );
}

#[test]
fn gitops_targets_must_pause_before_what_they_manage_sleeps() {
    use crate::fixtures::PlanBuilder;
    use crate::params::TargetType;
    let flux = json!({"flux": {"kustomizations": [{"namespace": "flux-system", "name": "apps"}]}});
    let apps = json!({"namespaces": ["team-a"]});
    let texts = |v: Vec<SemanticProblem>| v.iter().map(ToString::to_string).collect::<Vec<_>>();

    // DAG gitops -> workloads, and karpenter after the workloads: fine.
    let good = PlanBuilder::new("p")
        .target_with("pause-git", TargetType::Gitops, flux.clone())
        .target_with("apps", TargetType::Workloads, apps.clone())
        .target_with(
            "nodes",
            TargetType::Karpenter,
            json!({"nodePools": ["default"]}),
        )
        .dag(&[("pause-git", "apps"), ("apps", "nodes")])
        .build();
    assert_eq!(gitops_order(&good), (vec![], vec![]));

    // Parallel: the workloads may sleep before Git is paused.
    let parallel = PlanBuilder::new("p")
        .target_with("pause-git", TargetType::Gitops, flux.clone())
        .target_with("apps", TargetType::Workloads, apps.clone())
        .strategy(crate::plan::StrategyType::Parallel)
        .build();
    let (errors, warnings) = gitops_order(&parallel);
    assert!(warnings.is_empty());
    let errors = texts(errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "spec.targets[1]: workloads target apps hibernates before or alongside gitops target pause-git"
        ),
        "{errors:?}"
    );

    // Sequential in the wrong order.
    let backwards = PlanBuilder::new("p")
        .target_with("apps", TargetType::Workloads, apps.clone())
        .target_with("pause-git", TargetType::Gitops, flux.clone())
        .strategy(crate::plan::StrategyType::Sequential)
        .build();
    assert_eq!(gitops_order(&backwards).0.len(), 1);

    // No gitops target at all: a warning, not an error.
    let none = PlanBuilder::new("p")
        .target_with("apps", TargetType::Workloads, apps)
        .build();
    let (errors, warnings) = gitops_order(&none);
    assert!(errors.is_empty());
    let warnings = texts(warnings);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("no gitops target of this plan pauses Flux or Argo CD"),
        "{warnings:?}"
    );

    // validate shows the error with its field, and the warning without failing.
    let mut docs = vec![Document {
        source: "plan.yaml".into(),
        value: serde_json::to_value(&parallel).unwrap(),
    }];
    let report = validate_documents(
        &docs,
        Options {
            allow_missing_refs: true,
            ..Options::default()
        },
    );
    assert!(!report.is_valid());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.field == "spec.targets[1]" && p.message.contains("pause-git")),
        "{:#?}",
        report.problems
    );
    docs[0].value = serde_json::to_value(&none).unwrap();
    let report = validate_documents(
        &docs,
        Options {
            allow_missing_refs: true,
            ..Options::default()
        },
    );
    assert!(report.is_valid(), "{:#?}", report.problems);
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].severity, Severity::Warning);
}
