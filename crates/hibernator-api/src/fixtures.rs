//! Builders for tests and examples: `PlanBuilder::new("web").target("db", TargetType::Rds)`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::common::{DayOfWeek, OffHourWindow};
use crate::params::TargetType;
use crate::plan::{
    Behavior, ConnectorKind, ConnectorRef, Dependency, Execution, FailureMode, HibernationPlan,
    HibernationPlanSpec, Schedule, Stage, Strategy, StrategyType, Target,
};

/// Builds a HibernationPlan. Defaults: namespace `default`, America/New_York, weekdays
/// 20:00-06:00, Parallel, no targets.
#[derive(Clone, Debug)]
pub struct PlanBuilder {
    plan: HibernationPlan,
}

impl PlanBuilder {
    /// A plan named `name`.
    pub fn new(name: &str) -> Self {
        let spec = HibernationPlanSpec {
            schedule: Schedule {
                timezone: "America/New_York".into(),
                off_hours: vec![OffHourWindow {
                    start: "20:00".into(),
                    end: "06:00".into(),
                    days_of_week: vec![
                        DayOfWeek::Mon,
                        DayOfWeek::Tue,
                        DayOfWeek::Wed,
                        DayOfWeek::Thu,
                        DayOfWeek::Fri,
                    ],
                }],
            },
            execution: Execution {
                strategy: Strategy {
                    type_: StrategyType::Parallel,
                    max_concurrency: None,
                    dependencies: None,
                    stages: None,
                },
            },
            behavior: None,
            suspend: None,
            suspend_until: None,
            on_delete: None,
            targets: vec![],
        };
        let mut plan = HibernationPlan::new(name, spec);
        plan.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        };
        Self { plan }
    }

    /// Adds a target with a connector of the kind its type needs and no parameters.
    pub fn target(mut self, name: &str, type_: TargetType) -> Self {
        let kind = type_
            .connector_kind()
            .unwrap_or(ConnectorKind::CloudProvider);
        self.plan.spec.targets.push(Target {
            name: name.into(),
            type_,
            connector_ref: Some(ConnectorRef {
                kind,
                name: match kind {
                    ConnectorKind::CloudProvider => "aws".into(),
                    ConnectorKind::K8SCluster => "cluster".into(),
                },
                namespace: None,
            }),
            parameters: None,
        });
        self
    }

    /// Adds a target with parameters.
    pub fn target_with(mut self, name: &str, type_: TargetType, parameters: Value) -> Self {
        self = self.target(name, type_);
        self.plan
            .spec
            .targets
            .last_mut()
            .expect("just added")
            .parameters = Some(parameters);
        self
    }

    /// Adds `n` noop targets `t0..t{n-1}`.
    pub fn noop_targets(mut self, n: usize) -> Self {
        for i in 0..n {
            self = self.target_with(&format!("t{i}"), TargetType::Noop, json!({}));
        }
        self
    }

    /// Sets the strategy type.
    pub fn strategy(mut self, type_: StrategyType) -> Self {
        self.plan.spec.execution.strategy.type_ = type_;
        self
    }

    /// Sets `maxConcurrency`.
    pub fn max_concurrency(mut self, n: i32) -> Self {
        self.plan.spec.execution.strategy.max_concurrency = Some(n);
        self
    }

    /// Makes the plan a DAG with these edges.
    pub fn dag(mut self, edges: &[(&str, &str)]) -> Self {
        self.plan.spec.execution.strategy.type_ = StrategyType::Dag;
        self.plan.spec.execution.strategy.dependencies = Some(
            edges
                .iter()
                .map(|(from, to)| Dependency {
                    from: (*from).into(),
                    to: (*to).into(),
                })
                .collect(),
        );
        self
    }

    /// Makes the plan Staged with these stages (name, parallel, targets).
    pub fn stages(mut self, stages: &[(&str, bool, &[&str])]) -> Self {
        self.plan.spec.execution.strategy.type_ = StrategyType::Staged;
        self.plan.spec.execution.strategy.stages = Some(
            stages
                .iter()
                .map(|(name, parallel, targets)| Stage {
                    name: (*name).into(),
                    parallel: Some(*parallel),
                    max_concurrency: None,
                    targets: targets.iter().map(|t| (*t).into()).collect(),
                })
                .collect(),
        );
        self
    }

    /// Sets the failure mode.
    pub fn mode(mut self, mode: FailureMode) -> Self {
        self.plan
            .spec
            .behavior
            .get_or_insert_with(Behavior::default)
            .mode = Some(mode);
        self
    }

    /// Sets the time zone and windows.
    pub fn schedule(mut self, tz: &str, windows: Vec<OffHourWindow>) -> Self {
        self.plan.spec.schedule = Schedule {
            timezone: tz.into(),
            off_hours: windows,
        };
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.plan.metadata.namespace = Some(ns.into());
        self
    }

    /// The plan.
    pub fn build(self) -> HibernationPlan {
        self.plan
    }

    /// The plan's spec.
    pub fn spec(self) -> HibernationPlanSpec {
        self.plan.spec
    }
}
