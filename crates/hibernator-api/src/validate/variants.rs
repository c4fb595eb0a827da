//! The seed's documents and the invalid variants of them that validation must reject, each
//! with the field, message and value it must name. Shared by the unit tests and by the
//! end-to-end check that the real API server agrees with the client-side CEL rules.

use serde_json::{Value, json};

use super::Document;

const SEED: &[(&str, &str)] = &[
    (
        "namespaces/hibernator-system.yaml",
        include_str!("../../../../examples/gitops/hibernator/namespaces/hibernator-system.yaml"),
    ),
    (
        "cloudproviders/aws-prod.yaml",
        include_str!("../../../../examples/gitops/hibernator/cloudproviders/aws-prod.yaml"),
    ),
    (
        "k8sclusters/eks-prod.yaml",
        include_str!("../../../../examples/gitops/hibernator/k8sclusters/eks-prod.yaml"),
    ),
    (
        "hibernateplans/prod-offhours.yaml",
        include_str!("../../../../examples/gitops/hibernator/hibernateplans/prod-offhours.yaml"),
    ),
];

/// The seed's documents (examples/gitops/hibernator).
pub fn seed() -> Vec<Document> {
    SEED.iter()
        .map(|(name, text)| Document {
            source: name.to_string(),
            value: serde_saphyr::from_str(text).unwrap(),
        })
        .collect()
}

/// The document of `kind`.
pub fn doc_mut<'a>(docs: &'a mut [Document], kind: &str) -> &'a mut Value {
    &mut docs
        .iter_mut()
        .find(|d| d.value["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
        .value
}

/// Sets the value at a JSON pointer (appending to an array at its length).
pub fn set(v: &mut Value, pointer: &str, new: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        &mut *v
    } else {
        v.pointer_mut(parent).unwrap_or_else(|| panic!("{parent}"))
    };
    match parent {
        Value::Object(m) => {
            m.insert(key.to_string(), new);
        }
        Value::Array(a) => {
            let i: usize = key.parse().unwrap();
            if i == a.len() {
                a.push(new);
            } else {
                a[i] = new;
            }
        }
        _ => panic!("cannot set {pointer}"),
    }
}

/// Removes the value at a JSON pointer.
pub fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap() {
        Value::Object(m) => {
            m.remove(key);
        }
        Value::Array(a) => {
            a.remove(key.parse().unwrap());
        }
        _ => panic!(),
    }
}

/// A valid ScheduleException of the seed's plan.
pub fn exception() -> Document {
    Document {
        source: "exceptions/launch.yaml".into(),
        value: json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1",
            "kind": "ScheduleException",
            "metadata": {"name": "launch", "namespace": "hibernator-system"},
            "spec": {
                "planRef": {"name": "prod-offhours"},
                "validFrom": "2026-12-05T00:00:00Z",
                "validUntil": "2026-12-07T00:00:00Z",
                "type": "suspend",
                "leadTime": "1h",
                "windows": [{"start": "08:00", "end": "20:00", "daysOfWeek": ["SAT"]}]
            }
        }),
    }
}

/// One invalid variant: a change to the seed and the problem it must produce.
pub struct Case {
    /// What is wrong.
    pub name: &'static str,
    /// The kind of the document changed.
    pub kind: &'static str,
    /// The change.
    pub change: fn(&mut Value),
    /// The field the problem must name.
    pub field: &'static str,
    /// Part of its message.
    pub message: &'static str,
    /// The value it must show.
    pub value: Option<&'static str>,
}

/// The plan's kind.
pub const PLAN: &str = "HibernationPlan";

/// Every invalid variant.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "hour out of range",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/start", json!("25:00")),
            field: "spec.schedule.offHours[0].start",
            message: "does not match",
            value: Some("\"25:00\""),
        },
        Case {
            name: "enforcement interval in seconds",
            kind: PLAN,
            change: |p| set(p, "/spec/behavior", json!({"enforce": {"interval": "30s"}})),
            field: "spec.behavior.enforce.interval",
            message: "does not match",
            value: Some("\"30s\""),
        },
        Case {
            name: "enforcement interval too short",
            kind: PLAN,
            change: |p| set(p, "/spec/behavior", json!({"enforce": {"interval": "5m"}})),
            field: "spec.behavior.enforce.interval",
            message: "outside 15m..168h",
            value: None,
        },
        Case {
            name: "unknown enforcement mode",
            kind: PLAN,
            change: |p| set(p, "/spec/behavior", json!({"enforce": {"mode": "Fix"}})),
            field: "spec.behavior.enforce.mode",
            message: "",
            value: Some("\"Fix\""),
        },
        Case {
            name: "one-digit hour",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/end", json!("6:00")),
            field: "spec.schedule.offHours[0].end",
            message: "does not match",
            value: Some("\"6:00\""),
        },
        Case {
            name: "start equals end",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/end", json!("20:00")),
            field: "spec.schedule.offHours[0].end",
            message: "start and end are both 20:00",
            value: Some("\"20:00\""),
        },
        Case {
            name: "unknown day",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/daysOfWeek/0", json!("MONDAY")),
            field: "spec.schedule.offHours[0].daysOfWeek[0]",
            message: "must be one of: MON, TUE",
            value: Some("\"MONDAY\""),
        },
        Case {
            name: "lower-case day",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/daysOfWeek/0", json!("mon")),
            field: "spec.schedule.offHours[0].daysOfWeek[0]",
            message: "must be one of",
            value: Some("\"mon\""),
        },
        Case {
            name: "duplicate day",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/daysOfWeek/1", json!("MON")),
            field: "spec.schedule.offHours[0].daysOfWeek[1]",
            message: "duplicate entry \"MON\"",
            value: Some("\"MON\""),
        },
        Case {
            name: "no days",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours/0/daysOfWeek", json!([])),
            field: "spec.schedule.offHours[0].daysOfWeek",
            message: "needs at least 1 items",
            value: Some("[]"),
        },
        Case {
            name: "unknown time zone",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/timezone", json!("America/New_Yrok")),
            field: "spec.schedule.timezone",
            message: "unknown time zone \"America/New_Yrok\"",
            value: Some("\"America/New_Yrok\""),
        },
        Case {
            name: "no windows",
            kind: PLAN,
            change: |p| set(p, "/spec/schedule/offHours", json!([])),
            field: "spec.schedule.offHours",
            message: "needs at least 1 items",
            value: Some("[]"),
        },
        Case {
            name: "unknown target in a dependency",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/execution/strategy/dependencies/0/to",
                    json!("prod-cache"),
                )
            },
            field: "spec.execution.strategy.dependencies[0].to",
            message: "unknown target \"prod-cache\"",
            value: Some("\"prod-cache\""),
        },
        Case {
            name: "self-edge",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/execution/strategy/dependencies/0/to",
                    json!("prod-db"),
                )
            },
            field: "spec.execution.strategy.dependencies[0].to",
            message: "target \"prod-db\" depends on itself",
            value: Some("\"prod-db\""),
        },
        Case {
            name: "cycle",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/execution/strategy/dependencies/1",
                    json!({"from": "prod-cluster", "to": "prod-db"}),
                )
            },
            field: "spec.execution.strategy.dependencies[1].to",
            message: "dependencies form a cycle: prod-db -> prod-cluster -> prod-db",
            value: Some("\"prod-db\""),
        },
        Case {
            name: "duplicate target name",
            kind: PLAN,
            change: |p| set(p, "/spec/targets/1/name", json!("prod-db")),
            field: "spec.targets[1].name",
            message: "duplicate name \"prod-db\"",
            value: Some("\"prod-db\""),
        },
        Case {
            name: "target in two stages",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/execution/strategy",
                    json!({"type": "Staged", "stages": [
                {"name": "data", "targets": ["prod-db"]},
                {"name": "compute", "targets": ["prod-cluster", "prod-db"]}]}),
                );
            },
            field: "spec.execution.strategy.stages",
            message: "target \"prod-db\" is in more than one stage: data, compute",
            value: None,
        },
        Case {
            name: "target in no stage",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/execution/strategy",
                    json!({"type": "Staged", "stages": [{"name": "data", "targets": ["prod-db"]}]}),
                );
            },
            field: "spec.execution.strategy.stages",
            message: "targets in no stage: prod-cluster",
            value: None,
        },
        Case {
            name: "connector kind does not fit the type",
            kind: PLAN,
            change: |p| set(p, "/spec/targets/1/connectorRef/kind", json!("K8SCluster")),
            field: "spec.targets[1].connectorRef.kind",
            message: "target type eks needs a connectorRef of kind CloudProvider, not K8SCluster",
            value: Some("\"K8SCluster\""),
        },
        Case {
            name: "eks without clusterName",
            kind: PLAN,
            change: |p| remove(p, "/spec/targets/1/parameters/clusterName"),
            field: "spec.targets[1].parameters",
            message: "eks targets need parameters.clusterName",
            value: None,
        },
        Case {
            name: "snapshot retention without snapshots",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/targets/0/parameters/snapshotBeforeStop",
                    json!(false),
                );
                set(
                    p,
                    "/spec/targets/0/parameters/snapshotRetention",
                    json!({"keep": 3}),
                );
            },
            field: "spec.targets[0].parameters",
            message: "snapshotRetention keeps snapshots the target takes: it needs snapshotBeforeStop: true",
            value: None,
        },
        Case {
            name: "snapshot retention of zero",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/targets/0/parameters/snapshotRetention",
                    json!({"keep": 0}),
                )
            },
            field: "spec.targets[0].parameters.snapshotRetention.keep",
            message: "",
            value: Some("0"),
        },
        Case {
            name: "unknown top-level field",
            kind: PLAN,
            change: |p| set(p, "/spec/schedual", json!({})),
            field: "spec.schedual",
            message: "unknown field \"schedual\"",
            value: Some("{}"),
        },
        Case {
            name: "unknown parameter",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/targets/0/parameters/snapshotBeforeStopp",
                    json!(true),
                )
            },
            field: "spec.targets[0].parameters.snapshotBeforeStopp",
            message: "unknown field \"snapshotBeforeStopp\"",
            value: Some("true"),
        },
        Case {
            name: "parameter of another type",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/targets/0/parameters/clusterName",
                    json!("eks-prod"),
                )
            },
            field: "spec.targets[0].parameters",
            message: "parameters.clusterName applies only to target type(s) eks, not rds",
            value: Some(r#"{"clusterName":"eks-prod","snapshotBeforeStop":true}"#),
        },
        Case {
            name: "selector field of another type",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/targets/0/parameters/selector",
                    json!({"instanceIds": ["db-1"], "names": ["web"]}),
                )
            },
            field: "spec.targets[0].parameters",
            message: "parameters.selector.names applies only to target type(s) asg, not rds",
            value: Some(
                r#"{"selector":{"instanceIds":["db-1"],"names":["web"]},"snapshotBeforeStop":true}"#,
            ),
        },
        Case {
            name: "dangling connector reference",
            kind: PLAN,
            change: |p| set(p, "/spec/targets/0/connectorRef/name", json!("aws-missing")),
            field: "spec.targets[0].connectorRef.name",
            message: "CloudProvider hibernator-system/aws-missing is not among the documents",
            value: Some("\"aws-missing\""),
        },
        Case {
            name: "dependencies without DAG",
            kind: PLAN,
            change: |p| set(p, "/spec/execution/strategy/type", json!("Sequential")),
            field: "spec.execution.strategy.dependencies",
            message: "dependencies are only allowed with type DAG, not Sequential",
            value: None,
        },
        Case {
            name: "stages without Staged",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/execution/strategy/stages",
                    json!([{"name": "a", "targets": ["prod-db"]}]),
                )
            },
            field: "spec.execution.strategy.stages",
            message: "stages are only allowed with type Staged, not DAG",
            value: None,
        },
        Case {
            name: "zero concurrency",
            kind: PLAN,
            change: |p| set(p, "/spec/execution/strategy/maxConcurrency", json!(0)),
            field: "spec.execution.strategy.maxConcurrency",
            message: "must be at least 1",
            value: Some("0"),
        },
        Case {
            name: "too many retries",
            kind: PLAN,
            change: |p| set(p, "/spec/behavior", json!({"retries": 11})),
            field: "spec.behavior.retries",
            message: "must be at most 10",
            value: Some("11"),
        },
        Case {
            name: "unknown failure mode",
            kind: PLAN,
            change: |p| set(p, "/spec/behavior", json!({"mode": "Lenient"})),
            field: "spec.behavior.mode",
            message: "must be one of: Strict, BestEffort",
            value: Some("\"Lenient\""),
        },
        Case {
            name: "unknown target type",
            kind: PLAN,
            change: |p| set(p, "/spec/targets/0/type", json!("rdss")),
            field: "spec.targets[0].type",
            message: "must be one of: rds, eks",
            value: Some("\"rdss\""),
        },
        Case {
            name: "unknown strategy",
            kind: PLAN,
            change: |p| set(p, "/spec/execution/strategy/type", json!("Dagg")),
            field: "spec.execution.strategy.type",
            message: "must be one of: Sequential, Parallel, DAG, Staged",
            value: Some("\"Dagg\""),
        },
        Case {
            name: "unknown onDelete",
            kind: PLAN,
            change: |p| set(p, "/spec/onDelete", json!("Delete")),
            field: "spec.onDelete",
            message: "must be one of: WakeUp, Leave",
            value: Some("\"Delete\""),
        },
        Case {
            name: "bad suspendUntil",
            kind: PLAN,
            change: |p| set(p, "/spec/suspendUntil", json!("next monday")),
            field: "spec.suspendUntil",
            message: "not an RFC 3339 date-time",
            value: Some("\"next monday\""),
        },
        Case {
            name: "no targets",
            kind: PLAN,
            change: |p| remove(p, "/spec/targets"),
            field: "spec.targets",
            message: "targets is required",
            value: None,
        },
        Case {
            name: "target name not a label",
            kind: PLAN,
            change: |p| {
                set(p, "/spec/targets/0/name", json!("Prod_DB"));
                set(
                    p,
                    "/spec/execution/strategy/dependencies/0/from",
                    json!("Prod_DB"),
                );
            },
            field: "spec.targets[0].name",
            message: "does not match",
            value: Some("\"Prod_DB\""),
        },
        Case {
            name: "ec2 without selector",
            kind: PLAN,
            change: |p| {
                set(p, "/spec/targets/0/type", json!("ec2"));
                remove(p, "/spec/targets/0/parameters/snapshotBeforeStop");
            },
            field: "spec.targets[0].parameters",
            message: "ec2 targets need parameters.selector with exactly one of instanceIds or tags",
            value: None,
        },
        Case {
            name: "ecs with both services and tags",
            kind: PLAN,
            change: |p| {
                set(p, "/spec/targets/0/type", json!("ecs"));
                set(
                    p,
                    "/spec/targets/0/parameters",
                    json!({"cluster": "shop", "selector": {"services": ["api"], "tags": {"env": "dev"}}}),
                );
            },
            field: "spec.targets[0].parameters",
            message: "ecs targets need parameters.cluster and parameters.selector with exactly one of services or tags",
            value: None,
        },
        Case {
            name: "string where a boolean goes",
            kind: PLAN,
            change: |p| {
                set(
                    p,
                    "/spec/targets/0/parameters/snapshotBeforeStop",
                    json!("yes"),
                )
            },
            field: "spec.targets[0].parameters.snapshotBeforeStop",
            message: "must be true or false, not a string",
            value: Some("\"yes\""),
        },
        Case {
            name: "account id not 12 digits",
            kind: "CloudProvider",
            change: |p| set(p, "/spec/aws/accountId", json!("12345")),
            field: "spec.aws.accountId",
            message: "does not match ^[0-9]{12}$",
            value: Some("\"12345\""),
        },
        Case {
            name: "account id as a number",
            kind: "CloudProvider",
            change: |p| set(p, "/spec/aws/accountId", json!(123456789012u64)),
            field: "spec.aws.accountId",
            message: "must be a string, not a number",
            value: Some("123456789012"),
        },
        Case {
            name: "two auth methods",
            kind: "CloudProvider",
            change: |p| {
                set(
                    p,
                    "/spec/aws/auth/static",
                    json!({"secretRef": {"name": "aws-keys"}}),
                )
            },
            field: "spec.aws.auth",
            message: "auth needs exactly one of serviceAccount or static",
            value: None,
        },
        Case {
            name: "unknown cloud",
            kind: "CloudProvider",
            change: |p| set(p, "/spec/type", json!("gcp")),
            field: "spec.type",
            message: "must be one of: aws",
            value: Some("\"gcp\""),
        },
        Case {
            name: "K8SCluster with a dangling provider",
            kind: "K8SCluster",
            change: |p| set(p, "/spec/providerRef/name", json!("aws-nope")),
            field: "spec.providerRef.name",
            message: "CloudProvider hibernator-system/aws-nope is not among the documents",
            value: Some("\"aws-nope\""),
        },
        Case {
            name: "K8SCluster with eks and k8s",
            kind: "K8SCluster",
            change: |p| set(p, "/spec/k8s", json!({"inCluster": true})),
            field: "spec",
            message: "a K8SCluster needs exactly one of eks or k8s",
            value: None,
        },
        Case {
            name: "exception ends before it starts",
            kind: "ScheduleException",
            change: |p| set(p, "/spec/validUntil", json!("2026-12-01T00:00:00Z")),
            field: "spec.validUntil",
            message: "validUntil must be after validFrom",
            value: Some("\"2026-12-01T00:00:00Z\""),
        },
        Case {
            name: "lead time on extend",
            kind: "ScheduleException",
            change: |p| set(p, "/spec/type", json!("extend")),
            field: "spec.leadTime",
            message: "leadTime applies only to type suspend, not extend",
            value: Some("\"1h\""),
        },
        Case {
            name: "lead time too long",
            kind: "ScheduleException",
            change: |p| set(p, "/spec/leadTime", json!("48h")),
            field: "spec.leadTime",
            message: "not a duration of at most 24h",
            value: Some("\"48h\""),
        },
        Case {
            name: "exception for a missing plan",
            kind: "ScheduleException",
            change: |p| set(p, "/spec/planRef/name", json!("staging-offhours")),
            field: "spec.planRef.name",
            message: "HibernationPlan hibernator-system/staging-offhours is not among the documents",
            value: Some("\"staging-offhours\""),
        },
        Case {
            name: "exception for a target the plan does not have",
            kind: "ScheduleException",
            change: |p| set(p, "/spec/targets", json!(["prod-db", "prod-clustr"])),
            field: "spec.targets[1]",
            message: "\"prod-clustr\" is not a target of the plan",
            value: Some("\"prod-clustr\""),
        },
        Case {
            name: "unknown kind in our group",
            kind: PLAN,
            change: |p| set(p, "/kind", json!("HibernatePlan")),
            field: "kind",
            message: "hibernator.ardikasaputro.io has no kind \"HibernatePlan\"",
            value: Some("\"HibernatePlan\""),
        },
        Case {
            name: "unserved version",
            kind: PLAN,
            change: |p| set(p, "/apiVersion", json!("hibernator.ardikasaputro.io/v1")),
            field: "apiVersion",
            message: "hibernator.ardikasaputro.io/v1 is not served",
            value: Some("\"hibernator.ardikasaputro.io/v1\""),
        },
    ]
}
