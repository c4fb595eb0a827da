//! Which targets of a plan should sleep at an instant, target by target: the plan's schedule
//! as each target sees it (with the ScheduleExceptions that name it), closed under the
//! dependencies of the execution graph ([`ExecutionGraph::close_wishes`]). Shared by the
//! controller (what to do) and the CLI (`preview`, `status`).

use jiff::Timestamp;

use crate::graph::{Because, ExecutionGraph};
use crate::schedule::{CompiledSchedule, Evaluation};

/// What one target should be, and why when it departs from the plan's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetWish {
    /// Asleep.
    pub asleep: bool,
    /// Why it departs from the plan's schedule (`awake: ScheduleException db-migration`,
    /// `awake: needed by prod-cluster`); `None` when it follows the plan.
    pub departs: Option<String>,
}

/// Every target's wish, in the order of `spec.targets`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wishes {
    /// One per target.
    pub targets: Vec<TargetWish>,
    /// The next instant at which some target's own schedule changes, when it differs from the
    /// plan's next transition (only with exceptions for some targets).
    pub next_change: Option<Timestamp>,
}

impl Wishes {
    /// True when the targets do not all follow the plan's schedule.
    pub fn departs(&self) -> bool {
        self.targets.iter().any(|w| w.departs.is_some())
    }
}

/// The wishes of the targets of `graph` at `now`; `plan` is the plan's own evaluation at `now`
/// (`schedule.evaluate(now)`).
pub fn target_wishes(
    schedule: &CompiledSchedule,
    plan: &Evaluation,
    graph: &ExecutionGraph,
    now: Timestamp,
) -> Wishes {
    let names = graph.names();
    if !schedule.has_scoped_exceptions() {
        return Wishes {
            targets: names
                .iter()
                .map(|_| TargetWish {
                    asleep: plan.in_off_hours,
                    departs: None,
                })
                .collect(),
            next_change: None,
        };
    }
    let own: Vec<Evaluation> = names
        .iter()
        .map(|n| schedule.for_target(n).evaluate(now))
        .collect();
    let asleep: Vec<bool> = own.iter().map(|e| e.in_off_hours).collect();
    let kept_awake: Vec<bool> = own.iter().map(|e| e.kept_awake).collect();
    let closed = graph.close_wishes(&asleep, &kept_awake);
    let side = |a: bool| if a { "asleep" } else { "awake" };
    let targets = closed
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let departs = match w.because {
                _ if w.asleep == plan.in_off_hours => None,
                Because::Own => {
                    let scoped = schedule.scoped_exceptions_of(&names[i]);
                    let active: Vec<&str> = own[i]
                        .active_exceptions
                        .iter()
                        .map(String::as_str)
                        .filter(|x| scoped.contains(x))
                        .collect();
                    Some(if active.is_empty() {
                        format!("{}: its own schedule", side(w.asleep))
                    } else {
                        format!(
                            "{}: ScheduleException {}",
                            side(w.asleep),
                            active.join(", ")
                        )
                    })
                }
                Because::NeededBy(j) => Some(format!("awake: needed by {}", names[j])),
                Because::Needs(j) => Some(format!("asleep: needs {}, which sleeps", names[j])),
            };
            TargetWish {
                asleep: w.asleep,
                departs,
            }
        })
        .collect();
    let next_change = own
        .iter()
        .filter_map(|e| e.next_transition().map(|t| t.at))
        .filter(|t| *t > now)
        .min();
    Wishes {
        targets,
        next_change,
    }
}
