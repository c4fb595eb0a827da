//! The execution graph: every strategy compiles to one dependency graph over the plan's
//! targets (SPEC "Execution"), and one function says which targets may start now.
//!
//! - Sequential: a chain in list order. Parallel: no edges. DAG: the given edges. Staged:
//!   every target of stage N depends on every target of stage N-1.
//! - A target starts as soon as its own dependencies are done (per edge, not per level),
//!   bounded by `maxConcurrency` (and, for Staged, the stage's own limit).
//! - Wake-up runs the reversed graph.
//! - Strict: after a failure nothing new starts. BestEffort: the targets that depend on a
//!   failed or aborted target are aborted; independent branches continue.

use std::collections::{BTreeSet, VecDeque};

use daggy::{Dag, NodeIndex, Walker};

use crate::plan::{FailureMode, HibernationPlanSpec, Operation, StrategyType, TargetState};

/// Why a plan's targets cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Two targets share a name.
    #[error("target name {name:?} is used more than once")]
    DuplicateTarget {
        /// The name.
        name: String,
    },
    /// A dependency or stage names a target the plan does not have.
    #[error("unknown target {name:?}")]
    UnknownTarget {
        /// Field path of the reference.
        field: String,
        /// The unknown name.
        name: String,
    },
    /// A target depends on itself.
    #[error("target {name:?} depends on itself")]
    SelfEdge {
        /// Field path of the dependency.
        field: String,
        /// The target.
        name: String,
    },
    /// The dependencies form a cycle.
    #[error("dependencies form a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// Field path of the dependency that closes the cycle.
        field: String,
        /// The targets on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A target is in more than one stage.
    #[error("target {name:?} is in more than one stage: {}", stages.join(", "))]
    InTwoStages {
        /// The target.
        name: String,
        /// The stages naming it.
        stages: Vec<String>,
    },
    /// Targets in no stage.
    #[error("targets in no stage: {}", names.join(", "))]
    InNoStage {
        /// The targets.
        names: Vec<String>,
    },
}

impl GraphError {
    /// The field path the problem is about.
    pub fn field(&self) -> String {
        match self {
            Self::DuplicateTarget { .. } => "spec.targets".into(),
            Self::UnknownTarget { field, .. }
            | Self::SelfEdge { field, .. }
            | Self::Cycle { field, .. } => field.clone(),
            Self::InTwoStages { .. } | Self::InNoStage { .. } => {
                "spec.execution.strategy.stages".into()
            }
        }
    }
}

/// A compiled plan: targets (by index in `spec.targets`) and their dependencies.
#[derive(Debug, Clone)]
pub struct ExecutionGraph {
    dag: Dag<(), (), u32>,
    names: Vec<String>,
    max_concurrency: Option<usize>,
    /// For Staged plans: the stage of each target.
    stage_of: Vec<Option<usize>>,
    /// For Staged plans: how many of a stage's targets may run at once.
    stage_limits: Vec<Option<usize>>,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Targets to start, by index.
    pub start: Vec<usize>,
    /// Targets to mark Aborted (BestEffort), by index.
    pub abort: Vec<usize>,
}

impl ExecutionGraph {
    /// Compiles a plan's strategy into the hibernation graph. Every problem is returned.
    pub fn compile(spec: &HibernationPlanSpec) -> Result<Self, Vec<GraphError>> {
        let names: Vec<String> = spec.targets.iter().map(|t| t.name.clone()).collect();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for n in &names {
            if !seen.insert(n.as_str()) {
                errors.push(GraphError::DuplicateTarget { name: n.clone() });
            }
        }
        let index = |n: &str| names.iter().position(|x| x == n);
        let mut dag: Dag<(), (), u32> = Dag::new();
        for _ in &names {
            dag.add_node(());
        }
        let strategy = &spec.execution.strategy;
        let mut stage_of: Vec<Option<usize>> = vec![None; names.len()];
        let mut stage_limits = Vec::new();
        let add = |dag: &mut Dag<(), (), u32>,
                   from: usize,
                   to: usize,
                   field: String,
                   errors: &mut Vec<GraphError>| {
            if from == to {
                errors.push(GraphError::SelfEdge {
                    field,
                    name: names[from].clone(),
                });
                return;
            }
            if dag
                .find_edge(NodeIndex::new(from), NodeIndex::new(to))
                .is_some()
            {
                return;
            }
            if dag
                .add_edge(NodeIndex::new(from), NodeIndex::new(to), ())
                .is_err()
            {
                let mut cycle: Vec<String> = path(dag, to, from)
                    .iter()
                    .map(|&i| names[i].clone())
                    .collect();
                cycle.push(names[to].clone());
                errors.push(GraphError::Cycle { field, cycle });
            }
        };
        match strategy.type_ {
            StrategyType::Sequential => {
                for i in 1..names.len() {
                    add(&mut dag, i - 1, i, "spec.targets".into(), &mut errors);
                }
            }
            StrategyType::Parallel => {}
            StrategyType::Dag => {
                for (i, d) in strategy.dependencies.iter().flatten().enumerate() {
                    let field = format!("spec.execution.strategy.dependencies[{i}]");
                    let from = index(&d.from);
                    let to = index(&d.to);
                    for (name, found, side) in [(&d.from, from, "from"), (&d.to, to, "to")] {
                        if found.is_none() {
                            errors.push(GraphError::UnknownTarget {
                                field: format!("{field}.{side}"),
                                name: name.clone(),
                            });
                        }
                    }
                    if let (Some(from), Some(to)) = (from, to) {
                        add(&mut dag, from, to, format!("{field}.to"), &mut errors);
                    }
                }
            }
            StrategyType::Staged => {
                let stages: &[crate::plan::Stage] = strategy.stages.as_deref().unwrap_or_default();
                let mut members: Vec<Vec<usize>> = Vec::new();
                for (s, stage) in stages.iter().enumerate() {
                    let mut these = Vec::new();
                    for (k, name) in stage.targets.iter().enumerate() {
                        match index(name) {
                            None => errors.push(GraphError::UnknownTarget {
                                field: format!("spec.execution.strategy.stages[{s}].targets[{k}]"),
                                name: name.clone(),
                            }),
                            Some(i) => {
                                if let Some(prev) = stage_of[i] {
                                    if prev != s {
                                        let prev_name = &stages[prev].name;
                                        errors.push(GraphError::InTwoStages {
                                            name: name.clone(),
                                            stages: vec![prev_name.clone(), stage.name.clone()],
                                        });
                                    }
                                } else {
                                    stage_of[i] = Some(s);
                                    these.push(i);
                                }
                            }
                        }
                    }
                    stage_limits.push(if stage.parallel.unwrap_or(false) {
                        stage.max_concurrency.map(|m| m.max(1) as usize)
                    } else {
                        Some(1)
                    });
                    members.push(these);
                }
                let missing: Vec<String> = (0..names.len())
                    .filter(|&i| stage_of[i].is_none())
                    .map(|i| names[i].clone())
                    .collect();
                if !missing.is_empty() && !stages.is_empty() {
                    errors.push(GraphError::InNoStage { names: missing });
                }
                for pair in members.windows(2) {
                    for &a in &pair[0] {
                        for &b in &pair[1] {
                            add(
                                &mut dag,
                                a,
                                b,
                                "spec.execution.strategy.stages".into(),
                                &mut errors,
                            );
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            dag,
            names,
            max_concurrency: strategy.max_concurrency.map(|m| m.max(1) as usize),
            stage_of,
            stage_limits,
        })
    }

    /// The graph for an operation: as compiled for hibernation, reversed for wake-up.
    pub fn for_operation(&self, op: Operation) -> Self {
        match op {
            Operation::Hibernate => self.clone(),
            Operation::WakeUp => self.reversed(),
        }
    }

    /// The same targets with every edge reversed.
    pub fn reversed(&self) -> Self {
        let mut dag: Dag<(), (), u32> = Dag::new();
        for _ in &self.names {
            dag.add_node(());
        }
        for e in self.dag.raw_edges() {
            dag.add_edge(e.target(), e.source(), ())
                .expect("the reverse of a DAG is a DAG");
        }
        Self {
            dag,
            ..self.clone()
        }
    }

    /// Target names, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Edges as `(from, to)` index pairs: `from` finishes before `to` starts.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self
            .dag
            .raw_edges()
            .iter()
            .map(|e| (e.source().index(), e.target().index()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Targets a target waits for.
    pub fn dependencies(&self, target: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .dag
            .parents(NodeIndex::new(target))
            .iter(&self.dag)
            .map(|(_, n)| n.index())
            .collect();
        v.sort_unstable();
        v
    }

    /// What to start and abort now, given each target's state (by index).
    ///
    /// Targets are considered in list order; a target starts when every dependency completed
    /// (or was skipped) and the plan's and its stage's concurrency limits allow.
    pub fn step(&self, states: &[TargetState], mode: FailureMode) -> Step {
        assert_eq!(states.len(), self.names.len(), "one state per target");
        let mut states = states.to_vec();
        let mut step = Step::default();
        let failed = states.contains(&TargetState::Failed);
        if failed && mode == FailureMode::Strict {
            return step;
        }
        if mode == FailureMode::BestEffort {
            // Abort transitively, in topological order so that chains abort in one step.
            for i in self.topological_order() {
                if states[i] == TargetState::Pending
                    && self
                        .dependencies(i)
                        .iter()
                        .any(|&d| matches!(states[d], TargetState::Failed | TargetState::Aborted))
                {
                    states[i] = TargetState::Aborted;
                    step.abort.push(i);
                }
            }
            step.abort.sort_unstable();
        }
        let mut running = states
            .iter()
            .filter(|s| **s == TargetState::Running)
            .count();
        let mut stage_running = vec![0usize; self.stage_limits.len()];
        for (i, s) in states.iter().enumerate() {
            if let (TargetState::Running, Some(stage)) = (s, self.stage_of[i]) {
                stage_running[stage] += 1;
            }
        }
        for i in 0..states.len() {
            if states[i] != TargetState::Pending {
                continue;
            }
            if self.max_concurrency.is_some_and(|m| running >= m) {
                break;
            }
            if !self.dependencies(i).iter().all(|&d| states[d].is_success()) {
                continue;
            }
            if let Some(stage) = self.stage_of[i]
                && self.stage_limits[stage].is_some_and(|m| stage_running[stage] >= m)
            {
                continue;
            }
            step.start.push(i);
            running += 1;
            if let Some(stage) = self.stage_of[i] {
                stage_running[stage] += 1;
            }
        }
        step
    }

    /// True when target `b` starts only after target `a` completed: a chain of dependencies
    /// leads from `a` to `b`.
    pub fn precedes(&self, a: usize, b: usize) -> bool {
        a != b
            && daggy::petgraph::algo::has_path_connecting(
                self.dag.graph(),
                NodeIndex::new(a),
                NodeIndex::new(b),
                None,
            )
    }

    /// A topological order (list order among independent targets).
    pub fn topological_order(&self) -> Vec<usize> {
        let n = self.names.len();
        let mut indegree: Vec<usize> = (0..n).map(|i| self.dependencies(i).len()).collect();
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut out = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            out.push(i);
            for (_, child) in self.dag.children(NodeIndex::new(i)).iter(&self.dag) {
                let c = child.index();
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        out
    }
}

/// Why a target sleeps or stays awake once the plan's dependencies are honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Because {
    /// Its own schedule says so.
    Own,
    /// Kept awake: this target (by index), kept awake, needs it (it wakes before that one).
    NeededBy(usize),
    /// Asleep: it needs this target (by index), which sleeps.
    Needs(usize),
}

/// Whether a target should sleep, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wish {
    /// Asleep.
    pub asleep: bool,
    /// Why.
    pub because: Because,
}

impl ExecutionGraph {
    /// Which targets sleep, from what each one's own schedule says (`asleep`; `kept_awake` when a
    /// suspend exception keeps it awake), honouring the dependencies: a target needs the targets
    /// that wake before it (its dependencies in the wake-up order).
    ///
    /// A target kept awake keeps awake everything it needs, transitively (suspend wins); then a
    /// target that needs a sleeping target sleeps too, unless it is kept awake. The awake targets
    /// are therefore closed under "needs": nothing awake waits for something asleep.
    pub fn close_wishes(&self, asleep: &[bool], kept_awake: &[bool]) -> Vec<Wish> {
        let n = self.names.len();
        assert!(
            asleep.len() == n && kept_awake.len() == n,
            "one wish per target"
        );
        let wake = self.reversed();
        let mut out: Vec<Wish> = (0..n)
            .map(|i| Wish {
                asleep: asleep[i] && !kept_awake[i],
                because: Because::Own,
            })
            .collect();
        let mut held: Vec<bool> = kept_awake.to_vec();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| kept_awake[i]).collect();
        while let Some(i) = queue.pop_front() {
            for d in wake.dependencies(i) {
                if !held[d] {
                    held[d] = true;
                    if out[d].asleep {
                        out[d] = Wish {
                            asleep: false,
                            because: Because::NeededBy(i),
                        };
                    }
                    queue.push_back(d);
                }
            }
        }
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| out[i].asleep).collect();
        while let Some(i) = queue.pop_front() {
            // In the hibernation graph, the targets that need `i` are those `i` waits for.
            for j in self.dependencies(i) {
                if !held[j] && !out[j].asleep {
                    out[j] = Wish {
                        asleep: true,
                        because: Because::Needs(i),
                    };
                    queue.push_back(j);
                }
            }
        }
        out
    }
}

/// A path of node indices from `from` to `to` (inclusive), by breadth-first search.
fn path(dag: &Dag<(), (), u32>, from: usize, to: usize) -> Vec<usize> {
    let mut prev = vec![usize::MAX; dag.node_count()];
    let mut queue = VecDeque::from([from]);
    prev[from] = from;
    while let Some(i) = queue.pop_front() {
        if i == to {
            break;
        }
        for (_, child) in dag.children(NodeIndex::new(i)).iter(dag) {
            let c = child.index();
            if prev[c] == usize::MAX {
                prev[c] = i;
                queue.push_back(c);
            }
        }
    }
    let mut out = vec![to];
    let mut cur = to;
    while cur != from {
        cur = prev[cur];
        out.push(cur);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests;
