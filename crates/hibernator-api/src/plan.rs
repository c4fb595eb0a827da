//! HibernationPlan: when a set of targets sleeps, in which order, and what happened.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{NAME_PATTERN, OffHourWindow};
use crate::params::TargetType;

/// Annotation whose value, when it differs from `status.lastHandledRetryToken`, asks the
/// controller to retry failed targets now. The controller never removes it.
pub const RETRY_ANNOTATION: &str = "hibernator.ardikasaputro.io/retry-requested-at";
/// Annotation a person sets (to any new value) to acknowledge that a wake-up could not restore
/// something (`Restored=False`); `kubectl hibernator restore PLAN --acknowledge` sets it.
pub const RESTORE_ACK_ANNOTATION: &str = "hibernator.ardikasaputro.io/restore-acknowledged-at";
/// Most resource keys listed per target in `status.asleep`.
pub const ASLEEP_KEYS_LISTED: usize = 200;
/// Finalizer the controller puts on plans so that deletion can wake the targets first.
pub const FINALIZER: &str = "hibernator.ardikasaputro.io/wake-on-delete";
/// Default number of retries of a failed target in Strict mode.
pub const DEFAULT_RETRIES: i32 = 3;
/// Largest number of targets in one plan.
pub const MAX_TARGETS: usize = 50;

/// Specification of a HibernationPlan.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hibernator.ardikasaputro.io",
    version = "v1alpha1",
    kind = "HibernationPlan",
    plural = "hibernationplans",
    singular = "hibernationplan",
    shortname = "hplan",
    category = "hibernator",
    namespaced,
    status = "HibernationPlanStatus",
    derive = "PartialEq",
    doc = "A plan that puts a set of cloud and cluster resources to sleep during off-hours and wakes them up again, restoring what it found.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the plan is in its cycle"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "Next Transition",
        type_ = "string",
        json_path = ".status.schedule.nextTransition",
        description = "Next scheduled hibernation or wake-up"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// Spec-level rules carry static messages: CEL message expressions that list names cost too much
// for the API server's budget. `kubectl hibernator validate` and the controller name the
// offending targets.
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.execution.strategy.dependencies) || self.execution.strategy.dependencies.all(d, self.targets.exists(t, t.name == d.from) && self.targets.exists(t, t.name == d.to))"
).message("every dependency must name targets of this plan").field_path(".execution.strategy.dependencies"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.execution.strategy.stages) || self.execution.strategy.stages.all(s, s.targets.all(n, self.targets.exists(t, t.name == n)))"
).message("every stage must name targets of this plan").field_path(".execution.strategy.stages"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.execution.strategy.type != 'Staged' || !has(self.execution.strategy.stages) || self.targets.all(t, self.execution.strategy.stages.exists_one(s, t.name in s.targets))"
).message("with type Staged every target must be in exactly one stage").field_path(".execution.strategy.stages"))]
pub struct HibernationPlanSpec {
    /// When the targets sleep.
    pub schedule: Schedule,
    /// In which order the targets are hibernated (and, reversed, woken up).
    pub execution: Execution,
    /// How failures are handled. Defaults: `mode: Strict`, `retries: 3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
    /// Keep the targets awake and stop acting on the schedule while true. A hibernated plan is
    /// woken up when suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Suspend until this instant (RFC 3339), then follow the schedule again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_until: Option<Time>,
    /// What deleting a hibernated plan does: `WakeUp` (default) wakes the targets before the
    /// plan goes away; `Leave` leaves them asleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<OnDelete>,
    /// The resources this plan puts to sleep, each handled by one runner Job per operation.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub targets: Vec<Target>,
}

/// When the targets sleep.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// IANA time zone in which the windows are read, for example `America/New_York`.
    #[schemars(length(min = 1, max = 64))]
    pub timezone: String,
    /// Off-hours windows; the targets sleep while any window is open.
    #[schemars(length(min = 1, max = 20))]
    pub off_hours: Vec<OffHourWindow>,
}

/// In which order the targets are hibernated.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// The execution strategy.
    pub strategy: Strategy,
}

/// How the targets are ordered.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.dependencies) || self.type == 'DAG'")
    .message(kube::core::Message::Expression("'dependencies are only allowed with type DAG, not ' + self.type".into()))
    .field_path(".dependencies"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.stages) || self.type == 'Staged'")
    .message(kube::core::Message::Expression("'stages are only allowed with type Staged, not ' + self.type".into()))
    .field_path(".stages"))]
#[x_kube(validation = kube::core::Rule::new("self.type != 'Staged' || (has(self.stages) && size(self.stages) > 0)")
    .message("type Staged needs at least one stage")
    .field_path(".stages"))]
pub struct Strategy {
    /// `Sequential` (one after another, in list order), `Parallel` (all at once, bounded by
    /// `maxConcurrency`), `DAG` (after their `dependencies`) or `Staged` (stage after stage).
    #[serde(rename = "type")]
    pub type_: StrategyType,
    /// Largest number of runner Jobs of this plan running at once. Unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub max_concurrency: Option<i32>,
    /// DAG edges: `from` is hibernated before `to` starts (and woken up after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub dependencies: Option<Vec<Dependency>>,
    /// Stages, hibernated in order; every target belongs to exactly one stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub stages: Option<Vec<Stage>>,
}

/// Execution strategy type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyType {
    /// One target after another, in list order.
    Sequential,
    /// All targets at once, bounded by `maxConcurrency`.
    Parallel,
    /// Each target starts when the targets it depends on are done.
    #[serde(rename = "DAG")]
    Dag,
    /// Stage after stage.
    Staged,
}

impl StrategyType {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sequential => "Sequential",
            Self::Parallel => "Parallel",
            Self::Dag => "DAG",
            Self::Staged => "Staged",
        }
    }
}

/// A DAG edge.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.from != self.to")
    .message(kube::core::Message::Expression("'target ' + self.from + ' cannot depend on itself'".into()))
    .field_path(".to"))]
pub struct Dependency {
    /// Target hibernated first.
    #[schemars(length(min = 1, max = 63))]
    pub from: String,
    /// Target hibernated after `from` has finished.
    #[schemars(length(min = 1, max = 63))]
    pub to: String,
}

/// A stage of a Staged strategy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Name of the stage, unique in the plan.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Run the stage's targets at the same time (bounded by `maxConcurrency`); one at a time
    /// when false (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<bool>,
    /// Largest number of this stage's targets running at once when `parallel` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub max_concurrency: Option<i32>,
    /// Names of the targets in this stage.
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 63)))]
    pub targets: Vec<String>,
}

/// Failure handling.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// `Strict` (default): a failed target stops new starts and is retried with backoff.
    /// `BestEffort`: dependents of a failed target are aborted, independent ones continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FailureMode>,
    /// How often a failed target is retried (exponential backoff from 1 min, capped at 30 min)
    /// before the plan is Stalled. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<i32>,
    /// Lets targets put to sleep what the controller itself runs on (its own Deployment, the
    /// node group or Karpenter NodePool of its node). Refused by default; set it only when the
    /// controller runs in another cluster than the one these targets name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_hibernation: Option<bool>,
    /// In-sleep enforcement: while the plan is Hibernated, each target's recorded resources are
    /// checked every `interval` (and right after a predicted RDS auto-start) against their
    /// hibernated state. Default `{mode: Report, interval: 6h}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<Enforcement>,
}

/// In-sleep enforcement settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    /// `Report` (default): a resource found awake sets `Drifted=True` and an Event.
    /// `Reapply`: it is put back to sleep as well. `Off`: no checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EnforceMode>,
    /// Time between checks while Hibernated, in hours and/or minutes (`6h`, `90m`, `1h30m`),
    /// from 15m to 168h. Default `6h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?$"), length(min = 2, max = 12))]
    pub interval: Option<String>,
}

/// What in-sleep enforcement does with a resource found awake.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum EnforceMode {
    /// No checks.
    Off,
    /// Report it (`Drifted=True`, an Event, a metric).
    #[default]
    Report,
    /// Report it and put it back to sleep.
    Reapply,
}

impl EnforceMode {
    /// The mode as written in manifests and runner arguments.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "Off",
            Self::Report => "Report",
            Self::Reapply => "Reapply",
        }
    }

    /// The mode named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Off, Self::Report, Self::Reapply]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Default time between in-sleep checks.
pub const ENFORCE_INTERVAL_DEFAULT: jiff::SignedDuration = jiff::SignedDuration::from_hours(6);
/// Shortest time between in-sleep checks.
pub const ENFORCE_INTERVAL_MIN: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);
/// Longest time between in-sleep checks.
pub const ENFORCE_INTERVAL_MAX: jiff::SignedDuration = jiff::SignedDuration::from_hours(168);

/// Parses an enforcement interval (`6h`, `90m`, `1h30m`), within its bounds.
pub fn parse_enforce_interval(s: &str) -> Result<jiff::SignedDuration, String> {
    let bad = || {
        format!(
            "spec.behavior.enforce.interval {s:?} is not a duration in hours and/or minutes (6h, 90m, 1h30m)"
        )
    };
    let (hours, rest) = match s.split_once('h') {
        Some((h, rest)) => (h.parse::<i64>().map_err(|_| bad())?, rest),
        None => (0, s),
    };
    let minutes = match rest {
        "" => 0,
        m => m
            .strip_suffix('m')
            .and_then(|m| m.parse::<i64>().ok())
            .ok_or_else(bad)?,
    };
    if s.is_empty() || hours > 10_000 || minutes > 600_000 {
        return Err(bad());
    }
    let d = jiff::SignedDuration::from_mins(hours * 60 + minutes);
    if d < ENFORCE_INTERVAL_MIN || d > ENFORCE_INTERVAL_MAX {
        return Err(format!(
            "spec.behavior.enforce.interval {s:?} is outside 15m..168h"
        ));
    }
    Ok(d)
}

/// How failures are handled. `Strict` (default): a failed target stops new starts; the plan
/// goes to Error and retries the failed targets with backoff, then stalls. `BestEffort`: the
/// targets that depend on a failed target are aborted and independent ones continue.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Stop starting targets after a failure, retry, then stall.
    #[default]
    Strict,
    /// Abort the dependents of a failed target, continue with the rest.
    BestEffort,
}

/// What deleting a hibernated plan does: `WakeUp` (default) wakes the targets up before the
/// plan goes away; `Leave` leaves them asleep.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnDelete {
    /// Wake the targets up before the plan is removed.
    #[default]
    WakeUp,
    /// Leave the targets as they are.
    Leave,
}

/// A resource (or group of resources) put to sleep by one runner.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type == 'noop' || has(self.connectorRef)")
    .message(kube::core::Message::Expression("'target type ' + self.type + ' needs a connectorRef'".into()))
    .field_path(".connectorRef"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.connectorRef) || self.type == 'noop' || (self.type in ['workloads', 'karpenter', 'gitops']) == (self.connectorRef.kind == 'K8SCluster')"
).message(kube::core::Message::Expression(
    "'target type ' + self.type + ' needs a connectorRef of kind ' + (self.type in ['workloads', 'karpenter', 'gitops'] ? 'K8SCluster' : 'CloudProvider') + ', not ' + self.connectorRef.kind".into()
)).field_path(".connectorRef.kind"))]
#[schemars(transform = crate::params::add_parameter_rules)]
pub struct Target {
    /// Name of the target, unique in the plan; used in Job names and labels.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What kind of resource this is: `rds`, `eks`, `ec2`, `asg`, `ecs`, `workloads`,
    /// `karpenter`, `gitops` or `noop`.
    #[serde(rename = "type")]
    pub type_: TargetType,
    /// The connector that gives access to the resource: a CloudProvider for AWS targets, a
    /// K8SCluster for `workloads` and `karpenter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_ref: Option<ConnectorRef>,
    /// Executor parameters; which fields apply depends on `type` (see each field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::params::parameters_schema")]
    pub parameters: Option<serde_json::Value>,
}

/// Reference to a connector.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorRef {
    /// Kind of the connector.
    pub kind: ConnectorKind,
    /// Name of the connector.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Namespace of the connector; the plan's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Connector kinds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    /// A cloud account (`connector.hibernator.ardikasaputro.io/CloudProvider`).
    CloudProvider,
    /// A Kubernetes cluster (`connector.hibernator.ardikasaputro.io/K8SCluster`).
    K8SCluster,
}

impl ConnectorKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudProvider => "CloudProvider",
            Self::K8SCluster => "K8SCluster",
        }
    }
}

/// Observed state of a HibernationPlan. Written only by the controller, through `/status`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HibernationPlanStatus {
    /// The generation of the spec the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`, and the domain condition
    /// `Hibernated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::status::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Where the plan is in its cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The schedule as evaluated last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleStatus>,
    /// The hibernation or wake-up under way, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_cycle: Option<CycleStatus>,
    /// Per-target state of the current operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub targets: Vec<TargetStatus>,
    /// The last error, kept until an operation succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Automatic retries of failed targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryStatus>,
    /// The value of the retry annotation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_retry_token: Option<String>,
    /// The last five cycles, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub history: Vec<CycleRecord>,
    /// Name of the ConfigMap holding the restore data (`hibernator-restore-<plan>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_ref: Option<String>,
    /// What is asleep: per target, the resources recorded since the last hibernation began and
    /// not yet restored. Kept independently of the restore ConfigMap, so that lost restore data
    /// is noticed (`Restored=False`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub asleep: Vec<AsleepTarget>,
    /// The value of the restore-acknowledgement annotation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_restore_ack: Option<String>,
    /// What the plan's nights saved: resource-hours asleep and the estimated amount, from the
    /// recorded hibernation and wake-up times of each resource and the controller's price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savings: Option<crate::savings::SavingsStatus>,
    /// In-sleep enforcement of the current hibernation: checks made, what was found awake and
    /// what was put back to sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<EnforcementStatus>,
}

/// In-sleep enforcement of one hibernation (reset when the next one begins).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementStatus {
    /// The hibernation cycle checked.
    #[serde(default)]
    pub cycle_id: String,
    /// The mode in force.
    #[serde(default)]
    pub mode: EnforceMode,
    /// Checks started in this cycle (the runner Jobs of check `n` end in `-e-<cycle>-<n>`).
    #[serde(default)]
    pub checks: i32,
    /// The last check whose results are counted in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_check: Option<i32>,
    /// When the last check started (schedule time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_at: Option<Time>,
    /// When the next check is due (schedule time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Time>,
    /// Resources the last check found awake and left so (`Report`), or could not put back to
    /// sleep (`Reapply`), by target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub drifted: Vec<DriftedTarget>,
    /// Resources put back to sleep in this cycle (`Reapply`), counted per check.
    #[serde(default)]
    pub reapplied: i32,
}

#[cfg(test)]
mod enforcement_status_tests {
    use super::*;

    /// A status whose enforcement lacks fields (written by hand, or by an older controller)
    /// still reads: an unreadable status would stop the whole plan.
    #[test]
    fn a_partial_enforcement_status_reads_with_defaults() {
        let s: HibernationPlanStatus =
            serde_json::from_value(serde_json::json!({"enforcement": {"checks": 2}})).unwrap();
        let e = s.enforcement.unwrap();
        assert_eq!(
            (e.cycle_id.as_str(), e.mode, e.checks),
            ("", EnforceMode::Report, 2)
        );
    }
}

/// A target with resources found awake while it should sleep.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DriftedTarget {
    /// Target name.
    pub name: String,
    /// Record keys of the resources found awake (at most 50 are listed).
    #[schemars(length(max = 50))]
    pub keys: Vec<String>,
}

/// A target with resources asleep.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AsleepTarget {
    /// Target name (it may have been removed from the spec since).
    pub name: String,
    /// The cycle its oldest record belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle_id: Option<String>,
    /// How many of its resources are asleep.
    pub resources: i32,
    /// Their record keys (at most 200 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub keys: Vec<String>,
}

/// Where the plan is in its cycle: `Active` (awake, following the schedule), `Hibernating`,
/// `Hibernated`, `WakingUp`, `PartlyAwake`, `Suspended` or `Error`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Awake, following the schedule.
    Active,
    /// Runners are putting the targets to sleep.
    Hibernating,
    /// Every target is asleep.
    Hibernated,
    /// Runners are waking the targets up.
    WakingUp,
    /// Steady with some targets awake and others asleep: a ScheduleException for some
    /// targets only keeps them (and what they need) awake, or puts them to sleep.
    PartlyAwake,
    /// `spec.suspend` or `spec.suspendUntil` holds the plan awake.
    Suspended,
    /// An operation failed; see `lastError` and `retry`.
    Error,
}

impl Phase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Hibernating => "Hibernating",
            Self::Hibernated => "Hibernated",
            Self::WakingUp => "WakingUp",
            Self::PartlyAwake => "PartlyAwake",
            Self::Suspended => "Suspended",
            Self::Error => "Error",
        }
    }
}

/// The schedule as evaluated by the controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// True inside off-hours (after exceptions).
    pub in_off_hours: bool,
    /// Why the schedule says what it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Next scheduled hibernation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hibernate_at: Option<Time>,
    /// Next scheduled wake-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_wake_up_at: Option<Time>,
    /// The next of the two, for `kubectl get` (`Hibernate at ...` or `WakeUp at ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<String>,
    /// ScheduleExceptions that applied at the last evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_exceptions: Vec<String>,
}

/// Operations.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// Put the targets to sleep.
    Hibernate,
    /// Wake the targets up.
    WakeUp,
}

impl Operation {
    /// The operation as written in status, labels and runner arguments.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hibernate => "hibernate",
            Self::WakeUp => "wakeUp",
        }
    }

    /// Parses the status spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hibernate" => Some(Self::Hibernate),
            "wakeUp" => Some(Self::WakeUp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operation under way.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CycleStatus {
    /// Identifier of the cycle (one hibernation and the wake-up that follows it).
    pub id: String,
    /// The operation.
    pub operation: Operation,
    /// When the operation started.
    pub started_at: Time,
    /// When the operation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The targets the operation runs, when not every target of the plan (a ScheduleException
    /// for some targets only); the others keep the state of their last operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

impl CycleStatus {
    /// True when the operation runs `target` (every target when `targets` is empty).
    pub fn runs(&self, target: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| t == target)
    }
}

impl HibernationPlanStatus {
    /// The side `target`'s last operation leaves it on (the one under way included): its own
    /// `operation` when it sits outside the current one, else the current cycle's.
    pub fn side_of(&self, target: &TargetStatus) -> Option<Operation> {
        target
            .operation
            .or(self.current_cycle.as_ref().map(|c| c.operation))
    }
}

/// State of one target in the current operation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Waiting for its dependencies or a free slot.
    Pending,
    /// Its runner Job is running.
    Running,
    /// Done.
    Completed,
    /// Its runner failed.
    Failed,
    /// Not run because a target it depends on failed (BestEffort).
    Aborted,
    /// Nothing to do (for example nothing was recorded to wake up).
    Skipped,
}

impl TargetState {
    /// True for states that end the target's part in the operation.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Aborted | Self::Skipped
        )
    }

    /// True when dependents may start after this target.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Completed | Self::Skipped)
    }
}

/// One target's progress.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// Target name.
    pub name: String,
    /// State in the current operation.
    pub state: TargetState,
    /// Runner Jobs started for this target in this operation.
    #[serde(default)]
    pub attempts: i32,
    /// Name of the latest runner Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Last progress report of the runner (`3/5 resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Last message (completion summary or error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the target reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Wake-up: how many of its resources were asleep when it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_recorded: Option<i32>,
    /// Wake-up: how many of them are back in their recorded state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_restored: Option<i32>,
    /// For a target outside the current operation: the operation its state belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// For a target outside the current operation: the cycle its state belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<String>,
    /// Why the target departs from the plan's schedule: the ScheduleException that keeps it
    /// awake or asleep, or the target that needs it (`awake: needed by prod-cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_override: Option<String>,
}

/// Automatic retry state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetryStatus {
    /// Retries done in the current operation.
    pub count: i32,
    /// When the next retry starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<Time>,
}

/// Summary of one cycle.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CycleRecord {
    /// Cycle identifier.
    pub id: String,
    /// How the hibernation went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernate: Option<OperationRecord>,
    /// How the wake-up went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_up: Option<OperationRecord>,
}

/// Summary of one operation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    /// When it started.
    pub started_at: Time,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// True when every target completed.
    pub succeeded: bool,
    /// Retries it took.
    #[serde(default)]
    pub retries: i32,
    /// Targets that did not complete, with their messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_targets: Vec<String>,
}

impl HibernationPlan {
    /// The failure mode, with its default applied.
    pub fn failure_mode(&self) -> FailureMode {
        self.spec
            .behavior
            .as_ref()
            .and_then(|b| b.mode)
            .unwrap_or_default()
    }

    /// The number of retries, with its default applied.
    pub fn retries(&self) -> i32 {
        self.spec
            .behavior
            .as_ref()
            .and_then(|b| b.retries)
            .unwrap_or(DEFAULT_RETRIES)
    }

    /// The deletion policy, with its default applied.
    pub fn on_delete(&self) -> OnDelete {
        self.spec.on_delete.unwrap_or_default()
    }

    /// In-sleep enforcement: the mode and the time between checks, with defaults applied; an
    /// error names the interval that cannot be used.
    pub fn enforcement(&self) -> Result<(EnforceMode, jiff::SignedDuration), String> {
        let e = self.spec.behavior.as_ref().and_then(|b| b.enforce.as_ref());
        let mode = e.and_then(|e| e.mode).unwrap_or_default();
        let interval = match e.and_then(|e| e.interval.as_deref()) {
            Some(s) => parse_enforce_interval(s)?,
            None => ENFORCE_INTERVAL_DEFAULT,
        };
        Ok((mode, interval))
    }
}
