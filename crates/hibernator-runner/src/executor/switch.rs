//! The engine for resources that are either running or stopped (RDS instances and clusters,
//! EC2 instances): record, stop or start, wait.

use serde::{Deserialize, Serialize};

use super::{AwsError, Ctx, Pending, ResourceOutcome, RunError, Tally, all, wait_restored};
use crate::output::took;
use crate::wait::{self, Probe, Waited};

/// The record of a running-or-stopped resource: `{"status":"available","wasRunning":true}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The status seen before hibernation.
    pub status: String,
    /// True when it was running then (and so is started again on wake-up).
    pub was_running: bool,
}

/// The status names of a kind of resource.
pub struct States {
    /// The running state (`available`, `running`).
    pub running: &'static str,
    /// The stopped state.
    pub stopped: &'static str,
    /// On its way to stopped.
    pub stopping: &'static str,
    /// On its way to running.
    pub starting: &'static [&'static str],
    /// Busy states that end in running or stopped by themselves: wait before acting.
    pub settling: &'static [&'static str],
    /// States of a resource on its way out: treated as gone.
    pub leaving: &'static [&'static str],
}

/// A kind of running-or-stopped resource.
pub trait Switchable {
    /// `DB instance`, `Aurora cluster`, `EC2 instance`.
    fn noun(&self) -> &'static str;
    /// Key prefix of its records (`instance`, `cluster`, `ec2`).
    fn key_prefix(&self) -> &'static str;
    /// Its states.
    fn states(&self) -> &'static States;
    /// Its current status; `None` when it does not exist.
    async fn status(&self, id: &str) -> Result<Option<String>, AwsError>;
    /// Asks it to stop.
    async fn stop(&self, id: &str) -> Result<(), AwsError>;
    /// Asks it to start.
    async fn start(&self, id: &str) -> Result<(), AwsError>;
    /// What sizes its cost while running, as the last look at it said (savings ledger).
    fn sizing(&self, _id: &str) -> Option<hibernator_api::savings::Sizing> {
        None
    }
    /// Work before stopping the given resources (snapshots).
    async fn before_stop(&self, _ctx: &Ctx<'_>, _ids: &[String]) -> Result<(), RunError> {
        Ok(())
    }
}

fn name<S: Switchable>(kind: &S, id: &str) -> String {
    format!("{} {id}", kind.noun())
}

/// Waits until the resource is in one of `targets`; `None` when it vanished.
async fn wait_for<S: Switchable>(
    ctx: &Ctx<'_>,
    kind: &S,
    id: &str,
    targets: &[&str],
    description: &str,
) -> Result<Option<(String, std::time::Duration, u32)>, RunError> {
    let what = format!("{} to be {description}", name(kind, id));
    let waited = wait::until(ctx.timing, &what, || async {
        Ok(match kind.status(id).await? {
            None => Probe::Gone,
            Some(s) if kind.states().leaving.contains(&s.as_str()) => Probe::Gone,
            Some(s) if targets.contains(&s.as_str()) => Probe::Done(s),
            Some(s) => Probe::Pending(s),
        })
    })
    .await?;
    Ok(match waited {
        Waited::Done { value, took, looks } => Some((value, took, looks)),
        Waited::Gone => None,
    })
}

/// Looks at the resource, waiting out busy states; `None` when it does not exist.
async fn settled_status<S: Switchable>(
    ctx: &Ctx<'_>,
    kind: &S,
    id: &str,
) -> Result<Option<String>, RunError> {
    let states = kind.states();
    let Some(status) = kind.status(id).await? else {
        return Ok(None);
    };
    if states.leaving.contains(&status.as_str()) {
        return Ok(None);
    }
    if !states.settling.contains(&status.as_str()) {
        return Ok(Some(status));
    }
    ctx.reporter.info(format!(
        "{} is {status}; waiting for it to settle",
        name(kind, id)
    ));
    let settled = wait_for(
        ctx,
        kind,
        id,
        &[states.running, states.stopped],
        &format!("{} or {}", states.running, states.stopped),
    )
    .await?;
    Ok(settled.map(|(s, _, _)| s))
}

/// Puts the resources to sleep.
pub async fn hibernate<S: Switchable>(
    ctx: &Ctx<'_>,
    kind: &S,
    ids: &[String],
) -> Result<Tally, RunError> {
    let states = kind.states();
    let mut tally = Tally {
        total: ids.len() as u32,
        ..Tally::default()
    };
    let mut to_stop = Vec::new();
    let mut to_wait = Vec::new();
    for id in ids {
        ctx.check_stop()?;
        let Some(status) = settled_status(ctx, kind, id).await? else {
            ctx.reporter
                .warn(format!("{} no longer exists; skipped", name(kind, id)));
            tally.missing += 1;
            ctx.progress(&format!("skipped {id} (gone)"), true).await;
            continue;
        };
        ctx.reporter
            .info(format!("found {} ({status})", name(kind, id)));
        let current = RunRecord {
            was_running: status == states.running,
            status: status.clone(),
        };
        let key = format!("{}:{id}", kind.key_prefix());
        let sizing = kind.sizing(id);
        let (stored, already) = ctx.record_sized(&key, &current, sizing.as_ref()).await?;
        let was = if stored.was_running {
            format!("was {}", stored.status)
        } else {
            format!("was {}, stays that way on wake-up", stored.status)
        };
        if already {
            ctx.reporter.info(format!(
                "{id} was recorded earlier in this cycle ({was}); keeping that record"
            ));
        } else {
            ctx.reporter.info(format!("recorded {id}: {was}"));
        }
        if status == states.running {
            to_stop.push(id.clone());
        } else if status == states.stopping {
            ctx.reporter
                .info(format!("{} is already stopping", name(kind, id)));
            to_wait.push(id.clone());
        } else if status == states.stopped {
            ctx.reporter
                .info(format!("{} is already {status}", name(kind, id)));
            tally.already += 1;
            ctx.progress(&format!("{id} already {status}"), true).await;
        } else {
            ctx.reporter.warn(format!(
                "{} is {status}, which cannot be stopped; left alone",
                name(kind, id)
            ));
            tally.left += 1;
            ctx.progress(&format!("{id} left alone ({status})"), true)
                .await;
        }
    }

    if !to_stop.is_empty() {
        ctx.check_stop()?;
        kind.before_stop(ctx, &to_stop).await?;
    }
    for id in &to_stop {
        ctx.check_stop()?;
        kind.stop(id).await?;
        ctx.reporter.info(format!("stopping {id}"));
        ctx.progress(&format!("stopping {id}"), false).await;
    }
    let changed = std::cell::Cell::new(0u32);
    let futures: Vec<_> = to_stop
        .iter()
        .map(|id| (id, true))
        .chain(to_wait.iter().map(|id| (id, false)))
        .map(|(id, ours)| {
            let changed = &changed;
            async move {
                match wait_for(ctx, kind, id, &[states.stopped], states.stopped).await? {
                    Some((_, took_, looks)) => {
                        ctx.reporter.info(format!(
                            "stopped {id} (took {}, {looks} look{})",
                            took(took_),
                            if looks == 1 { "" } else { "s" }
                        ));
                        ctx.progress(&format!("stopped {id}"), true).await;
                        if ours {
                            changed.set(changed.get() + 1);
                        }
                    }
                    None => {
                        ctx.reporter.warn(format!(
                            "{} vanished while stopping; skipped",
                            name(kind, id)
                        ));
                        ctx.progress(&format!("{id} vanished"), true).await;
                    }
                }
                Ok(())
            }
        })
        .collect();
    all(ctx, &format!("{}s", kind.noun()), futures).await?;
    tally.changed = changed.get();
    // Resources someone else was stopping count as already stopped.
    tally.already += to_wait.len() as u32;
    Ok(tally)
}

/// Wakes the recorded resources up. Every resource is tried: one that cannot be started (an
/// API error, a state that cannot be changed, a wait that ends badly) is reported as failed
/// and the others carry on; the run's exit code comes from the outcomes.
pub async fn wake<S: Switchable>(
    ctx: &Ctx<'_>,
    kind: &S,
    records: &[(String, RunRecord)],
) -> Result<Tally, RunError> {
    let states = kind.states();
    let mut tally = Tally {
        total: records.len() as u32,
        ..Tally::default()
    };
    let key = |id: &str| format!("{}:{id}", kind.key_prefix());
    let mut to_start = Vec::new();
    let mut to_wait = Vec::new();
    for (id, record) in records {
        ctx.check_stop()?;
        if !record.was_running {
            ctx.reporter.info(format!(
                "{} was {} before hibernation; leaving it as it is",
                name(kind, id),
                record.status
            ));
            tally.left += 1;
            ctx.outcome(&key(id), ResourceOutcome::Restored);
            ctx.progress(&format!("{id} left {}", record.status), true)
                .await;
            continue;
        }
        match look_before_start(ctx, kind, id, record).await {
            Ok(Some(status)) if status == states.running => {
                ctx.reporter
                    .info(format!("{} is already {status}", name(kind, id)));
                tally.already += 1;
                ctx.outcome(&key(id), ResourceOutcome::Restored);
                ctx.progress(&format!("{id} already {status}"), true).await;
            }
            Ok(Some(status)) if states.starting.contains(&status.as_str()) => {
                ctx.reporter
                    .info(format!("{} is already {status}", name(kind, id)));
                to_wait.push(id.clone());
            }
            Ok(Some(status)) if status == states.stopped => to_start.push(id.clone()),
            Ok(Some(status)) => {
                let e = RunError::Unactionable {
                    verb: "start",
                    resource: name(kind, id),
                    status,
                };
                tally.failed += 1;
                ctx.failed(&key(id), &e).await;
            }
            Ok(None) => {
                tally.missing += 1;
                ctx.not_found(&key(id), &name(kind, id)).await;
            }
            Err(e) if e.is_stop() => return Err(e),
            Err(e) => {
                tally.failed += 1;
                ctx.failed(&key(id), &e).await;
            }
        }
    }
    let pending = |id: &String, ours: bool| Pending {
        key: key(id),
        label: name(kind, id),
        id: id.clone(),
        ours,
        want: (),
    };
    // Resources someone else was starting count as already running once they are.
    let mut waits: Vec<Pending> = to_wait.iter().map(|id| pending(id, false)).collect();
    for id in &to_start {
        ctx.check_stop()?;
        match kind.start(id).await {
            Ok(()) => {
                ctx.reporter.info(format!("starting {id}"));
                ctx.progress(&format!("starting {id}"), false).await;
                waits.push(pending(id, true));
            }
            Err(e) => {
                tally.failed += 1;
                ctx.failed(&key(id), &e.into()).await;
            }
        }
    }
    wait_restored(
        ctx,
        &format!("{}s", kind.noun()),
        &waits,
        &mut tally,
        |p| async move {
            Ok(
                wait_for(ctx, kind, &p.id, &[states.running], states.running)
                    .await?
                    .map(|(_, took_, looks)| {
                        format!(
                            "{} is {} (took {}, {looks} look{})",
                            p.id,
                            states.running,
                            took(took_),
                            if looks == 1 { "" } else { "s" }
                        )
                    }),
            )
        },
    )
    .await?;
    Ok(tally)
}

/// Looks at a resource to start, waiting out busy and stopping states; `None` when it does not
/// exist.
async fn look_before_start<S: Switchable>(
    ctx: &Ctx<'_>,
    kind: &S,
    id: &str,
    record: &RunRecord,
) -> Result<Option<String>, RunError> {
    let states = kind.states();
    let Some(status) = settled_status(ctx, kind, id).await? else {
        return Ok(None);
    };
    ctx.reporter.info(format!(
        "found {} ({status}); it was {} before hibernation",
        name(kind, id),
        record.status
    ));
    if status == states.stopping {
        return Ok(wait_for(ctx, kind, id, &[states.stopped], states.stopped)
            .await?
            .map(|(s, _, _)| s));
    }
    Ok(Some(status))
}

/// In-sleep check of the recorded resources: each one that was running before the night must
/// be stopped (or stopping). One found awake is reported (`Report`) or put back to sleep through
/// [`hibernate`] (`Reapply`: its record of the night is kept, the controller's first record
/// wins). A resource that is starting (an RDS auto-start after seven days) is waited for first,
/// since it cannot be stopped before it is up.
pub async fn enforce<S: Switchable>(
    ctx: &Ctx<'_>,
    kind: &S,
    records: &[(String, RunRecord)],
    mode: hibernator_api::plan::EnforceMode,
) -> Result<Tally, RunError> {
    let states = kind.states();
    let mut tally = Tally {
        total: records.len() as u32,
        ..Tally::default()
    };
    let key = |id: &str| format!("{}:{id}", kind.key_prefix());
    let mut awake: Vec<(String, String)> = Vec::new();
    for (id, record) in records {
        ctx.check_stop()?;
        if !record.was_running {
            // Not ours to keep asleep: it was not running before the night.
            tally.already += 1;
            ctx.outcome(&key(id), ResourceOutcome::Asleep);
            continue;
        }
        let status = match kind.status(id).await {
            Ok(s) => s,
            Err(e) => {
                tally.failed += 1;
                ctx.check_failed(&key(id), &e.into()).await;
                continue;
            }
        };
        let status = match status {
            Some(s) if !states.leaving.contains(&s.as_str()) => s,
            _ => {
                tally.missing += 1;
                ctx.check_not_found(&key(id), &name(kind, id)).await;
                continue;
            }
        };
        if status == states.stopped || status == states.stopping {
            ctx.reporter
                .info(format!("{} is {status}, as it should be", name(kind, id)));
            tally.already += 1;
            ctx.outcome(&key(id), ResourceOutcome::Asleep);
            ctx.progress(&format!("{id} asleep"), true).await;
            continue;
        }
        ctx.reporter.warn(format!(
            "{} is {status} although it was put to sleep in cycle {}: drifted",
            name(kind, id),
            ctx.execution.cycle_id
        ));
        awake.push((id.clone(), status));
    }
    if mode != hibernator_api::plan::EnforceMode::Reapply {
        for (id, status) in &awake {
            tally.left += 1;
            ctx.outcome(&key(id), ResourceOutcome::Drifted(status.clone()));
            ctx.progress(&format!("{id} drifted ({status})"), true)
                .await;
        }
        return Ok(tally);
    }
    let mut to_sleep = Vec::new();
    for (id, status) in &awake {
        ctx.check_stop()?;
        if states.starting.contains(&status.as_str()) {
            ctx.reporter.info(format!(
                "{} is {status}; waiting until it is {} to stop it again",
                name(kind, id),
                states.running
            ));
            match wait_for(ctx, kind, id, &[states.running], states.running).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tally.missing += 1;
                    ctx.check_not_found(&key(id), &name(kind, id)).await;
                    continue;
                }
                Err(e) => {
                    tally.failed += 1;
                    ctx.check_failed(&key(id), &e).await;
                    continue;
                }
            }
        }
        to_sleep.push(id.clone());
    }
    if to_sleep.is_empty() {
        return Ok(tally);
    }
    let slept = hibernate(ctx, kind, &to_sleep).await?;
    for (id, status) in awake.iter().filter(|(id, _)| to_sleep.contains(id)) {
        // The hibernation noted the (kept) record; the check's word is what happened.
        ctx.outcome(&key(id), ResourceOutcome::Reapplied(status.clone()));
    }
    tally.changed += slept.changed;
    tally.already += slept.already;
    tally.missing += slept.missing;
    tally.left += slept.left;
    Ok(tally)
}
