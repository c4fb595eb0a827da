use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::fixtures::PlanBuilder;
use crate::params::TargetType;

fn names(g: &ExecutionGraph, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| g.names()[i].clone()).collect()
}

#[test]
fn seed_dag_runs_db_then_cluster_and_wakes_in_reverse() {
    let spec = PlanBuilder::new("prod-offhours")
        .target("prod-db", TargetType::Rds)
        .target("prod-cluster", TargetType::Eks)
        .dag(&[("prod-db", "prod-cluster")])
        .max_concurrency(2)
        .spec();
    let g = ExecutionGraph::compile(&spec).unwrap();
    use TargetState::*;
    let s = g.step(&[Pending, Pending], FailureMode::Strict);
    assert_eq!(names(&g, &s.start), ["prod-db"]);
    let s = g.step(&[Completed, Pending], FailureMode::Strict);
    assert_eq!(names(&g, &s.start), ["prod-cluster"]);
    let w = g.for_operation(Operation::WakeUp);
    let s = w.step(&[Pending, Pending], FailureMode::Strict);
    assert_eq!(names(&w, &s.start), ["prod-cluster"]);
}

#[test]
fn per_edge_not_per_level() {
    // a -> b, c -> d. With c slow, b still starts as soon as a completes.
    let spec = PlanBuilder::new("p")
        .noop_targets(0)
        .target("a", TargetType::Noop)
        .target("b", TargetType::Noop)
        .target("c", TargetType::Noop)
        .target("d", TargetType::Noop)
        .dag(&[("a", "b"), ("c", "d")])
        .spec();
    let g = ExecutionGraph::compile(&spec).unwrap();
    use TargetState::*;
    let s = g.step(&[Completed, Pending, Running, Pending], FailureMode::Strict);
    assert_eq!(names(&g, &s.start), ["b"]);
}

#[test]
fn graph_errors_name_the_targets() {
    let spec = PlanBuilder::new("p")
        .target("a", TargetType::Noop)
        .target("b", TargetType::Noop)
        .target("c", TargetType::Noop)
        .dag(&[
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("a", "a"),
            ("a", "ghost"),
        ])
        .spec();
    let errs = ExecutionGraph::compile(&spec).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| format!("{}: {e}", e.field())).collect();
    assert_eq!(
        text,
        [
            "spec.execution.strategy.dependencies[2].to: dependencies form a cycle: a -> b -> c -> a",
            "spec.execution.strategy.dependencies[3].to: target \"a\" depends on itself",
            "spec.execution.strategy.dependencies[4].to: unknown target \"ghost\"",
        ],
        "{text:#?}"
    );
}

#[test]
fn staged_errors() {
    let spec = PlanBuilder::new("p")
        .target("a", TargetType::Noop)
        .target("b", TargetType::Noop)
        .target("c", TargetType::Noop)
        .stages(&[("one", true, &["a", "b"]), ("two", false, &["b", "x"])])
        .spec();
    let errs = ExecutionGraph::compile(&spec).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| format!("{}: {e}", e.field())).collect();
    assert_eq!(
        text,
        [
            "spec.execution.strategy.stages: target \"b\" is in more than one stage: one, two",
            "spec.execution.strategy.stages[1].targets[1]: unknown target \"x\"",
            "spec.execution.strategy.stages: targets in no stage: c",
        ]
    );
}

#[test]
fn staged_stage_limits() {
    let spec = PlanBuilder::new("p")
        .noop_targets(5)
        .stages(&[
            ("serial", false, &["t0", "t1"]),
            ("wide", true, &["t2", "t3", "t4"]),
        ])
        .spec();
    let g = ExecutionGraph::compile(&spec).unwrap();
    use TargetState::*;
    assert_eq!(g.step(&[Pending; 5], FailureMode::Strict).start, [0]);
    assert_eq!(
        g.step(
            &[Completed, Pending, Pending, Pending, Pending],
            FailureMode::Strict
        )
        .start,
        [1]
    );
    assert_eq!(
        g.step(
            &[Completed, Completed, Pending, Pending, Pending],
            FailureMode::Strict
        )
        .start,
        [2, 3, 4]
    );
    // Wake: the wide stage first, then the serial one in one-at-a-time fashion.
    let w = g.reversed();
    assert_eq!(w.step(&[Pending; 5], FailureMode::Strict).start, [2, 3, 4]);
}

#[test]
fn strict_stops_new_starts_after_a_failure() {
    let spec = PlanBuilder::new("p")
        .noop_targets(3)
        .max_concurrency(1)
        .spec();
    let g = ExecutionGraph::compile(&spec).unwrap();
    use TargetState::*;
    assert_eq!(
        g.step(&[Failed, Pending, Pending], FailureMode::Strict),
        Step::default()
    );
    assert_eq!(
        g.step(&[Failed, Pending, Pending], FailureMode::BestEffort)
            .start,
        [1]
    );
}

/// A random DAG over `n` targets: edges only from lower to higher index, so it is acyclic.
fn arb_plan() -> impl Strategy<Value = (HibernationPlanSpec, Vec<bool>)> {
    (2usize..9).prop_flat_map(|n| {
        (
            prop::collection::vec((0..n, 0..n), 0..n * 2),
            prop::option::of(1i32..4),
            prop::sample::select(vec![
                StrategyType::Sequential,
                StrategyType::Parallel,
                StrategyType::Dag,
                StrategyType::Staged,
            ]),
            prop::collection::vec(prop::bool::weighted(0.2), n),
            prop::collection::vec(0usize..3, n),
            prop::collection::vec(any::<bool>(), 3),
        )
            .prop_map(move |(pairs, mc, st, fails, stage_idx, parallel)| {
                let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
                let mut b = PlanBuilder::new("p").noop_targets(n);
                b = match st {
                    StrategyType::Dag => {
                        let edges: BTreeSet<(usize, usize)> =
                            pairs.into_iter().filter(|(a, b)| a < b).collect();
                        let e: Vec<(&str, &str)> = edges
                            .iter()
                            .map(|(a, b)| (names[*a].as_str(), names[*b].as_str()))
                            .collect();
                        b.dag(&e)
                    }
                    StrategyType::Staged => {
                        let mut stages: Vec<Vec<&str>> = vec![vec![]; 3];
                        for (i, s) in stage_idx.iter().enumerate() {
                            stages[*s].push(names[i].as_str());
                        }
                        let labels = ["s0", "s1", "s2"];
                        let defs: Vec<(&str, bool, &[&str])> = stages
                            .iter()
                            .enumerate()
                            .filter(|(_, t)| !t.is_empty())
                            .map(|(i, t)| (labels[i], parallel[i], t.as_slice()))
                            .collect();
                        b.stages(&defs)
                    }
                    other => b.strategy(other),
                };
                if let Some(m) = mc {
                    b = b.max_concurrency(m);
                }
                (b.spec(), fails)
            })
    })
}

/// Runs an operation to its end, completing the running target chosen by `pick` each round.
/// Returns the final states and the start order; checks edges and limits at every start.
fn simulate(
    g: &ExecutionGraph,
    max: Option<usize>,
    mode: FailureMode,
    fails: &[bool],
    picks: &[usize],
) -> Result<(Vec<TargetState>, Vec<usize>), TestCaseError> {
    let n = g.names().len();
    let mut states = vec![TargetState::Pending; n];
    let mut order = Vec::new();
    let mut round = 0;
    loop {
        let step = g.step(&states, mode);
        for &a in &step.abort {
            states[a] = TargetState::Aborted;
        }
        for &s in &step.start {
            for d in g.dependencies(s) {
                prop_assert!(
                    states[d].is_success(),
                    "started t{s} before its dependency t{d} completed"
                );
            }
            states[s] = TargetState::Running;
            order.push(s);
        }
        let running: Vec<usize> = (0..n)
            .filter(|&i| states[i] == TargetState::Running)
            .collect();
        if let Some(m) = max {
            prop_assert!(
                running.len() <= m,
                "{} running, maxConcurrency {m}",
                running.len()
            );
        }
        if running.is_empty() {
            return Ok((states, order));
        }
        let pick = running[picks[round % picks.len()] % running.len()];
        states[pick] = if fails[pick] {
            TargetState::Failed
        } else {
            TargetState::Completed
        };
        round += 1;
    }
}

fn descendants(g: &ExecutionGraph, roots: &[usize]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<usize> = roots.to_vec();
    while let Some(i) = stack.pop() {
        for (a, b) in g.edges() {
            if a == i && out.insert(b) {
                stack.push(b);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_start_respects_edges_and_limits((spec, _) in arb_plan(), picks in prop::collection::vec(0usize..8, 1..20)) {
        let g = ExecutionGraph::compile(&spec).unwrap();
        let max = spec.execution.strategy.max_concurrency.map(|m| m as usize);
        let none = vec![false; g.names().len()];
        for op in [Operation::Hibernate, Operation::WakeUp] {
            let (states, order) = simulate(&g.for_operation(op), max, FailureMode::Strict, &none, &picks)?;
            prop_assert!(states.iter().all(|s| *s == TargetState::Completed));
            prop_assert_eq!(order.len(), g.names().len());
        }
    }

    #[test]
    fn wake_graph_is_the_exact_reverse((spec, _) in arb_plan()) {
        let g = ExecutionGraph::compile(&spec).unwrap();
        let w = g.for_operation(Operation::WakeUp);
        let mut reversed: Vec<(usize, usize)> = g.edges().into_iter().map(|(a, b)| (b, a)).collect();
        reversed.sort_unstable();
        prop_assert_eq!(w.edges(), reversed);
        if spec.execution.strategy.type_ == StrategyType::Sequential {
            let none = vec![false; g.names().len()];
            let (_, h) = simulate(&g, None, FailureMode::Strict, &none, &[0])?;
            let (_, mut wk) = simulate(&w, None, FailureMode::Strict, &none, &[0])?;
            wk.reverse();
            prop_assert_eq!(h, wk);
        }
    }

    #[test]
    fn best_effort_aborts_exactly_the_dependents_of_failures((spec, fails) in arb_plan(), picks in prop::collection::vec(0usize..8, 1..20)) {
        let g = ExecutionGraph::compile(&spec).unwrap();
        let max = spec.execution.strategy.max_concurrency.map(|m| m as usize);
        let (states, _) = simulate(&g, max, FailureMode::BestEffort, &fails, &picks)?;
        let failed: Vec<usize> = (0..states.len()).filter(|&i| states[i] == TargetState::Failed).collect();
        let expected_aborted = descendants(&g, &failed);
        for (i, s) in states.iter().enumerate() {
            if expected_aborted.contains(&i) {
                prop_assert_eq!(*s, TargetState::Aborted, "t{} depends on a failure", i);
            } else if fails[i] {
                prop_assert_eq!(*s, TargetState::Failed);
            } else {
                prop_assert_eq!(*s, TargetState::Completed, "t{} is independent of every failure", i);
            }
        }
    }

    #[test]
    fn strict_never_starts_after_a_failure((spec, fails) in arb_plan(), picks in prop::collection::vec(0usize..8, 1..20)) {
        let g = ExecutionGraph::compile(&spec).unwrap();
        let (states, _) = simulate(&g, None, FailureMode::Strict, &fails, &picks)?;
        prop_assert!(!states.contains(&TargetState::Aborted));
        if states.contains(&TargetState::Failed) {
            // Whatever is still Pending was held back by the failure.
            let step = g.step(&states, FailureMode::Strict);
            prop_assert!(step.start.is_empty());
        }
    }
}

/// Targets reachable from `from` by following `next` (not counting `from` itself).
fn reach(from: usize, next: &dyn Fn(usize) -> Vec<usize>) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = next(from);
    while let Some(i) = stack.pop() {
        if seen.insert(i) {
            stack.extend(next(i));
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A partial wake (or sleep): nothing awake needs something asleep; a target kept awake is
    /// awake; every target whose wish changed was changed by the closure of a target whose own
    /// wish stands (kept awake: something kept awake needs it; put to sleep: it needs something
    /// asleep by its own schedule); a uniform wish stays uniform.
    #[test]
    fn partial_wishes_are_closed_and_minimal(
        (spec, _) in arb_plan(),
        asleep in prop::collection::vec(any::<bool>(), 9),
        kept in prop::collection::vec(prop::bool::weighted(0.25), 9),
    ) {
        let g = ExecutionGraph::compile(&spec).unwrap();
        let n = g.names().len();
        let (asleep, kept) = (&asleep[..n], &kept[..n]);
        let wake = g.reversed();
        let w = g.close_wishes(asleep, kept);
        let needs = |i: usize| wake.dependencies(i);
        for i in 0..n {
            if !w[i].asleep {
                for d in needs(i) {
                    prop_assert!(!w[d].asleep, "{} is awake but needs {}, asleep", i, d);
                }
            }
            if kept[i] {
                prop_assert!(!w[i].asleep, "{} is kept awake", i);
            }
            let own = asleep[i] && !kept[i];
            if w[i].asleep != own {
                if own {
                    // Woken: some target kept awake needs it, transitively.
                    prop_assert!((0..n).any(|k| kept[k] && reach(k, &needs).contains(&i)));
                    prop_assert!(matches!(w[i].because, Because::NeededBy(k) if !w[k].asleep));
                } else {
                    // Put to sleep: it needs, transitively, a target asleep by its own wish.
                    prop_assert!(reach(i, &needs).iter().any(|&k| asleep[k] && !kept[k] && w[k].asleep));
                    prop_assert!(matches!(w[i].because, Because::Needs(k) if w[k].asleep));
                }
            } else {
                prop_assert_eq!(w[i].because, Because::Own);
            }
        }
        let none = vec![false; n];
        prop_assert!(g.close_wishes(&vec![true; n], &none).iter().all(|x| x.asleep && x.because == Because::Own));
        prop_assert!(g.close_wishes(&none, &none).iter().all(|x| !x.asleep && x.because == Because::Own));
    }
}

#[test]
fn keeping_the_database_awake_keeps_what_it_needs() {
    // Hibernation: app, then cluster, then db; wake-up: db, cluster, app. Keeping the cluster
    // awake keeps the database awake (the cluster wakes after it), not the app.
    let spec = PlanBuilder::new("p")
        .target("app", TargetType::Noop)
        .target("cluster", TargetType::Noop)
        .target("db", TargetType::Noop)
        .dag(&[("app", "cluster"), ("cluster", "db")])
        .spec();
    let g = ExecutionGraph::compile(&spec).unwrap();
    let w = g.close_wishes(&[true, true, true], &[false, true, false]);
    assert_eq!(
        w.iter().map(|x| x.asleep).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(w[2].because, Because::NeededBy(1));
    // Putting the database to sleep by day puts what needs it to sleep too.
    let w = g.close_wishes(&[false, false, true], &[false, false, false]);
    assert_eq!(
        w.iter().map(|x| x.asleep).collect::<Vec<_>>(),
        [true, true, true]
    );
    assert_eq!(w[1].because, Because::Needs(2));
    assert_eq!(w[0].because, Because::Needs(1));
}
