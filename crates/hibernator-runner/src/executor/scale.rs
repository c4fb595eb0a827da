//! The engine for resources with a capacity (EKS managed node groups, auto-scaling groups,
//! ECS services): record the capacity, scale to zero, restore exactly. Node groups and
//! auto-scaling groups have [`Sizes`] (min/desired/max, asleep at min = desired = 0 keeping
//! max); an ECS service has a desired count and maybe auto-scaling bounds (`ecs.rs`).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use hibernator_api::Operation;

use super::{
    AwsError, Ctx, Outcome, Pending, ResourceOutcome, RunError, Tally, all, check_summary, summary,
    wait_restored,
};
use crate::output::took;
use crate::wait::{self, Probe, Waited};

/// The record of a sized resource: `{"minSize":1,"desiredSize":2,"maxSize":3}`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    /// Minimum size.
    pub min_size: i32,
    /// Desired size.
    pub desired_size: i32,
    /// Maximum size.
    pub max_size: i32,
}

impl Sizes {
    /// Asleep: min = desired = 0, max kept (AWS rejects a node group's `maxSize` of 0).
    pub fn asleep(self) -> Self {
        Self {
            min_size: 0,
            desired_size: 0,
            max_size: self.max_size,
        }
    }
}

impl Capacity for Sizes {
    fn asleep(self) -> Self {
        Sizes::asleep(self)
    }

    fn is_asleep(&self) -> bool {
        self.min_size == 0 && self.desired_size == 0
    }
}

/// What a [`Scalable`] resource records and is resized to.
pub trait Capacity:
    Serialize + DeserializeOwned + Copy + PartialEq + fmt::Display + fmt::Debug
{
    /// The capacity hibernation sets, from the one found.
    fn asleep(self) -> Self;
    /// True when nothing runs by this capacity (the in-sleep check's test).
    fn is_asleep(&self) -> bool;
    /// True when a resource at `self` is at `target`: by default equality; a part the target
    /// does not set (an ECS service recorded without auto scaling) may be anything.
    fn reaches(&self, target: &Self) -> bool {
        self == target
    }
}

/// The savings ledger's sizing of a node group or auto-scaling group: `desired` instances of
/// its instance type.
pub fn ec2_sizing(look: &Look<Sizes>, region: Option<String>) -> hibernator_api::savings::Sizing {
    hibernator_api::savings::Sizing {
        service: Some(hibernator_api::savings::Service::Ec2),
        instance_type: look.instance_type.clone(),
        count: f64::from(look.sizes.desired_size.max(0)),
        region,
        ..Default::default()
    }
}

impl fmt::Display for Sizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {}, desired {}, max {}",
            self.min_size, self.desired_size, self.max_size
        )
    }
}

/// Whether a resource can be resized now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Can be resized.
    Ready,
    /// Busy with something that ends by itself (an update): wait.
    Busy,
    /// On its way out: treated as gone.
    Leaving,
    /// Failed: cannot be resized.
    Broken,
}

/// One look at a sized resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look<C = Sizes> {
    /// Its capacity.
    pub sizes: C,
    /// Its state as AWS says it (for messages).
    pub state: String,
    /// The instance type its instances run (the first of a node group's types, the type most
    /// of an auto-scaling group's instances have), for the savings ledger.
    pub instance_type: Option<String>,
    /// Whether it can be resized.
    pub condition: Condition,
    /// True when its capacity follows its sizes (no update running, instances launched or
    /// terminated).
    pub steady: bool,
}

/// A kind of sized resource.
pub trait Scalable {
    /// What it records and is resized to.
    type Capacity: Capacity;
    /// `node group`, `auto-scaling group`, `ECS service`.
    fn noun(&self) -> &'static str;
    /// Key prefix of its records (`nodegroup`, `asg`, `ecs`).
    fn key_prefix(&self) -> &'static str;
    /// What sizes its cost while awake, for the savings ledger (`None`: not priced).
    fn sizing(&self, look: &Look<Self::Capacity>) -> Option<hibernator_api::savings::Sizing>;
    /// Looks at it; `None` when it does not exist.
    async fn look(&self, name: &str) -> Result<Option<Look<Self::Capacity>>, AwsError>;
    /// Sets its capacity.
    async fn resize(&self, name: &str, sizes: Self::Capacity) -> Result<(), AwsError>;
}

fn label<S: Scalable>(kind: &S, name: &str) -> String {
    format!("{} {name}", kind.noun())
}

/// Waits until `ready(look)`; `None` when the resource vanished.
async fn wait_until<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    name: &str,
    description: &str,
    ready: impl Fn(&Look<S::Capacity>) -> bool,
) -> Result<Option<(Look<S::Capacity>, std::time::Duration, u32)>, RunError> {
    let what = format!("{} to {description}", label(kind, name));
    let ready = &ready;
    let waited = wait::until(ctx.timing, &what, || async move {
        Ok(match kind.look(name).await? {
            None => Probe::Gone,
            Some(look) if look.condition == Condition::Leaving => Probe::Gone,
            Some(look) if ready(&look) => Probe::Done(look),
            Some(look) => Probe::Pending(format!("{}, {}", look.state, look.sizes)),
        })
    })
    .await?;
    Ok(match waited {
        Waited::Done { value, took, looks } => Some((value, took, looks)),
        Waited::Gone => None,
    })
}

/// Looks, waiting out busy states; `None` when it does not exist.
async fn settled<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    name: &str,
) -> Result<Option<Look<S::Capacity>>, RunError> {
    let Some(look) = kind.look(name).await? else {
        return Ok(None);
    };
    match look.condition {
        Condition::Leaving => Ok(None),
        Condition::Ready | Condition::Broken => Ok(Some(look)),
        Condition::Busy => {
            ctx.reporter.info(format!(
                "{} is {}; waiting for it to settle",
                label(kind, name),
                look.state
            ));
            Ok(wait_until(ctx, kind, name, "settle", |l| {
                l.condition != Condition::Busy
            })
            .await?
            .map(|(l, _, _)| l))
        }
    }
}

fn reached<C: Capacity>(look: &Look<C>, target: C) -> bool {
    look.condition == Condition::Ready && look.steady && look.sizes.reaches(&target)
}

async fn resize_and_wait<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    to_resize: &[(String, S::Capacity)],
    to_wait: &[(String, S::Capacity)],
    done_word: &str,
) -> Result<u32, RunError> {
    for (name, target) in to_resize {
        ctx.check_stop()?;
        kind.resize(name, *target).await?;
        ctx.reporter
            .info(format!("resizing {} to {target}", label(kind, name)));
        ctx.progress(&format!("resizing {name}"), false).await;
    }
    let changed = std::cell::Cell::new(0u32);
    let futures: Vec<_> = to_resize
        .iter()
        .map(|(n, t)| (n, *t, true))
        .chain(to_wait.iter().map(|(n, t)| (n, *t, false)))
        .map(|(name, target, ours)| {
            let changed = &changed;
            async move {
                let description = format!("reach {target}");
                match wait_until(ctx, kind, name, &description, |l| reached(l, target)).await? {
                    Some((_, t, looks)) => {
                        ctx.reporter.info(format!(
                            "{name} {done_word}: {target} (took {}, {looks} look{})",
                            took(t),
                            if looks == 1 { "" } else { "s" }
                        ));
                        ctx.progress(&format!("{name} {done_word}"), true).await;
                        if ours {
                            changed.set(changed.get() + 1);
                        }
                    }
                    None => {
                        ctx.reporter
                            .warn(format!("{} vanished; skipped", label(kind, name)));
                        ctx.progress(&format!("{name} vanished"), true).await;
                    }
                }
                Ok(())
            }
        })
        .collect();
    all(ctx, &format!("{}s", kind.noun()), futures).await?;
    Ok(changed.get())
}

/// Scales the resources to zero, recording their sizes first.
pub async fn hibernate<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    names: &[String],
) -> Result<Tally, RunError> {
    let mut tally = Tally {
        total: names.len() as u32,
        ..Tally::default()
    };
    let mut to_resize = Vec::new();
    let mut to_wait = Vec::new();
    for name in names {
        ctx.check_stop()?;
        let Some(look) = settled(ctx, kind, name).await? else {
            ctx.reporter
                .warn(format!("{} no longer exists; skipped", label(kind, name)));
            tally.missing += 1;
            ctx.progress(&format!("skipped {name} (gone)"), true).await;
            continue;
        };
        ctx.reporter.info(format!(
            "found {} ({}, {})",
            label(kind, name),
            look.state,
            look.sizes
        ));
        let key = format!("{}:{name}", kind.key_prefix());
        let sizing = kind.sizing(&look);
        let (stored, already) = ctx.record_sized(&key, &look.sizes, sizing.as_ref()).await?;
        if already {
            ctx.reporter.info(format!(
                "{name} was recorded earlier in this cycle (was {stored}); keeping that record"
            ));
        } else {
            ctx.reporter.info(format!("recorded {name}: was {stored}"));
        }
        let target = look.sizes.asleep();
        if look.condition == Condition::Broken {
            ctx.reporter.warn(format!(
                "{} is {}, which cannot be resized; left alone",
                label(kind, name),
                look.state
            ));
            tally.left += 1;
            ctx.progress(&format!("{name} left alone"), true).await;
        } else if !look.sizes.reaches(&target) {
            to_resize.push((name.clone(), target));
        } else if reached(&look, target) {
            ctx.reporter
                .info(format!("{} is already scaled to zero", label(kind, name)));
            tally.already += 1;
            ctx.progress(&format!("{name} already at zero"), true).await;
        } else {
            to_wait.push((name.clone(), target));
        }
    }
    tally.changed = resize_and_wait(ctx, kind, &to_resize, &to_wait, "scaled to zero").await?;
    tally.already += to_wait.len() as u32;
    Ok(tally)
}

/// Restores the recorded sizes. Every resource is tried: one that cannot be resized is
/// reported as failed and the others carry on; the run's exit code comes from the outcomes.
pub async fn wake<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    records: &[(String, S::Capacity)],
) -> Result<Tally, RunError> {
    let mut tally = Tally {
        total: records.len() as u32,
        ..Tally::default()
    };
    let key = |name: &str| format!("{}:{name}", kind.key_prefix());
    let mut to_resize = Vec::new();
    let mut to_wait = Vec::new();
    for (name, recorded) in records {
        ctx.check_stop()?;
        let look = match settled(ctx, kind, name).await {
            Ok(Some(look)) => look,
            Ok(None) => {
                tally.missing += 1;
                ctx.not_found(&key(name), &label(kind, name)).await;
                continue;
            }
            Err(e) if e.is_stop() => return Err(e),
            Err(e) => {
                tally.failed += 1;
                ctx.failed(&key(name), &e).await;
                continue;
            }
        };
        ctx.reporter.info(format!(
            "found {} ({}, {}); recorded {recorded}",
            label(kind, name),
            look.state,
            look.sizes
        ));
        if look.sizes.reaches(recorded) {
            if reached(&look, *recorded) {
                ctx.reporter
                    .info(format!("{} is already at {recorded}", label(kind, name)));
                tally.already += 1;
                ctx.outcome(&key(name), ResourceOutcome::Restored);
                ctx.progress(&format!("{name} already restored"), true)
                    .await;
            } else {
                to_wait.push((name.clone(), *recorded, false));
            }
        } else if look.condition == Condition::Broken {
            tally.failed += 1;
            let e = RunError::Unactionable {
                verb: "resize",
                resource: label(kind, name),
                status: look.state,
            };
            ctx.failed(&key(name), &e).await;
        } else {
            to_resize.push((name.clone(), *recorded));
        }
    }
    for (name, target) in &to_resize {
        ctx.check_stop()?;
        match kind.resize(name, *target).await {
            Ok(()) => {
                ctx.reporter
                    .info(format!("resizing {} to {target}", label(kind, name)));
                ctx.progress(&format!("resizing {name}"), false).await;
                to_wait.push((name.clone(), *target, true));
            }
            Err(e) => {
                tally.failed += 1;
                ctx.failed(&key(name), &e.into()).await;
            }
        }
    }
    let waits: Vec<Pending<S::Capacity>> = to_wait
        .iter()
        .map(|(name, target, ours)| Pending {
            key: key(name),
            label: label(kind, name),
            id: name.clone(),
            ours: *ours,
            want: *target,
        })
        .collect();
    wait_restored(
        ctx,
        &format!("{}s", kind.noun()),
        &waits,
        &mut tally,
        |p| async move {
            let target = p.want;
            let description = format!("reach {target}");
            Ok(
                wait_until(ctx, kind, &p.id, &description, |l| reached(l, target))
                    .await?
                    .map(|(_, t, looks)| {
                        format!(
                            "{} restored: {target} (took {}, {looks} look{})",
                            p.id,
                            took(t),
                            if looks == 1 { "" } else { "s" }
                        )
                    }),
            )
        },
    )
    .await?;
    Ok(tally)
}

/// In-sleep check of the recorded resources: asleep is [`Capacity::is_asleep`] (for sizes
/// min = desired = 0; whatever the record says: the wake-up puts the recorded sizes back). One found with capacity is reported
/// (`Report`) or scaled to zero again through [`hibernate`] (`Reapply`: its record of the night
/// is kept, the controller's first record wins).
pub async fn enforce<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    records: &[(String, S::Capacity)],
    mode: hibernator_api::plan::EnforceMode,
) -> Result<Tally, RunError> {
    let mut tally = Tally {
        total: records.len() as u32,
        ..Tally::default()
    };
    let key = |name: &str| format!("{}:{name}", kind.key_prefix());
    let mut awake: Vec<(String, String)> = Vec::new();
    for (name, _) in records {
        ctx.check_stop()?;
        let look = match kind.look(name).await {
            Ok(Some(look)) if look.condition != Condition::Leaving => look,
            Ok(_) => {
                tally.missing += 1;
                ctx.check_not_found(&key(name), &label(kind, name)).await;
                continue;
            }
            Err(e) => {
                tally.failed += 1;
                ctx.check_failed(&key(name), &e.into()).await;
                continue;
            }
        };
        if look.sizes.is_asleep() {
            ctx.reporter.info(format!(
                "{} is at {}, as it should be",
                label(kind, name),
                look.sizes
            ));
            tally.already += 1;
            ctx.outcome(&key(name), ResourceOutcome::Asleep);
            ctx.progress(&format!("{name} asleep"), true).await;
            continue;
        }
        ctx.reporter.warn(format!(
            "{} is at {} although it was scaled to zero in cycle {}: drifted",
            label(kind, name),
            look.sizes,
            ctx.execution.cycle_id
        ));
        awake.push((name.clone(), look.sizes.to_string()));
    }
    if mode != hibernator_api::plan::EnforceMode::Reapply {
        for (name, sizes) in &awake {
            tally.left += 1;
            ctx.outcome(&key(name), ResourceOutcome::Drifted(sizes.clone()));
            ctx.progress(&format!("{name} drifted ({sizes})"), true)
                .await;
        }
        return Ok(tally);
    }
    if awake.is_empty() {
        return Ok(tally);
    }
    let names: Vec<String> = awake.iter().map(|(n, _)| n.clone()).collect();
    let slept = hibernate(ctx, kind, &names).await?;
    for (name, sizes) in &awake {
        // The hibernation noted the (kept) record; the check's word is what happened.
        ctx.outcome(&key(name), ResourceOutcome::Reapplied(sizes.clone()));
    }
    tally.changed += slept.changed;
    tally.already += slept.already;
    tally.missing += slept.missing;
    tally.left += slept.left;
    Ok(tally)
}

/// What a hibernation of sized resources takes on.
pub enum Selection {
    /// These resources (names as the records carry them), and how many the target names that
    /// do not exist (counted as no longer there).
    Chosen {
        /// The resources.
        names: Vec<String>,
        /// Named but missing.
        missing: u32,
    },
    /// Nothing to do, for the reason the outcome gives (the cluster does not exist).
    Done(Outcome),
}

/// The records of a target with key prefix `prefix` (wake-up and in-sleep check); others are
/// reported and left.
pub async fn records<C: Capacity>(
    ctx: &Ctx<'_>,
    prefix: &str,
) -> Result<Vec<(String, C)>, RunError> {
    let records = ctx.fetch().await?;
    ctx.ignore_other_records(&records, &[prefix]);
    ctx.records_of(&records, prefix)
}

/// Runs a target of sized resources: a hibernation of what `select` chooses, or a wake-up or
/// an in-sleep check of what `records` returns, with the summary line of each.
pub async fn run<S: Scalable>(
    ctx: &Ctx<'_>,
    kind: &S,
    select: impl AsyncFnOnce() -> Result<Selection, RunError>,
    records: impl AsyncFnOnce() -> Result<Vec<(String, S::Capacity)>, RunError>,
) -> Result<Outcome, RunError> {
    let noun = kind.noun();
    if let Some(mode) = ctx.execution.enforce {
        let records = records().await?;
        ctx.add_total(records.len());
        let tally = enforce(ctx, kind, &records, mode).await?;
        return Ok(Outcome {
            summary: check_summary(mode, &[(noun, tally)]),
            changed: tally.changed,
        });
    }
    match ctx.execution.operation {
        Operation::Hibernate => {
            let (names, missing) = match select().await? {
                Selection::Chosen { names, missing } => (names, missing),
                Selection::Done(outcome) => return Ok(outcome),
            };
            ctx.add_total(names.len());
            let mut tally = hibernate(ctx, kind, &names).await?;
            tally.missing += missing;
            tally.total += missing;
            Ok(Outcome {
                summary: summary(
                    "scaled to zero",
                    "already at zero",
                    "left alone",
                    &[(noun, tally)],
                ),
                changed: tally.changed,
            })
        }
        Operation::WakeUp => {
            let records = records().await?;
            ctx.add_total(records.len());
            let tally = wake(ctx, kind, &records).await?;
            let summary = if tally.total == 0 {
                super::rds::wake_summary(&[(noun, tally)])
            } else {
                summary(
                    "restored",
                    "already restored",
                    "left alone",
                    &[(noun, tally)],
                )
            };
            Ok(Outcome {
                summary,
                changed: tally.changed,
            })
        }
    }
}
