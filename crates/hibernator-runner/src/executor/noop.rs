//! `noop`: changes nothing; waits `delaySeconds` and fails on purpose when told to. It records
//! and fetches restore data like the real executors, so plans made of noop targets exercise
//! the whole protocol.

use hibernator_api::restore::key_prefix;
use std::time::Duration;

use hibernator_api::Operation;
use hibernator_api::params::{NoopFail, NoopParameters};
use serde::{Deserialize, Serialize};

use super::{Ctx, Outcome, RunError};

/// The record of a noop target.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct NoopRecord {
    was_running: bool,
}

/// Runs a `noop` target.
pub async fn run(ctx: &Ctx<'_>, params: &NoopParameters) -> Result<Outcome, RunError> {
    let operation = ctx.execution.operation;
    let target = &ctx.execution.target;
    ctx.add_total(1);
    match operation {
        Operation::Hibernate => {
            let key = format!("{}:{target}", key_prefix::NOOP);
            let (_, already) = ctx.record(&key, &NoopRecord { was_running: true }).await?;
            ctx.reporter.info(if already {
                format!("{key} was recorded earlier in this cycle; keeping that record")
            } else {
                format!("recorded {key}")
            });
        }
        Operation::WakeUp => {
            // Nothing to change: every record is back as recorded, unless told to fail.
            for key in ctx.fetch().await?.keys() {
                ctx.outcome(key, super::ResourceOutcome::Restored);
            }
        }
    }
    let delay = params.delay_seconds.unwrap_or(0).max(0) as u64;
    if delay > 0 {
        ctx.reporter.info(format!("noop: waiting {delay} s"));
        tokio::time::sleep(Duration::from_secs(delay)).await;
    }
    ctx.check_stop()?;
    let fail = params.fail.unwrap_or_default();
    let fails = match (fail, operation) {
        (NoopFail::Both, _) => Some("both"),
        (NoopFail::Hibernate, Operation::Hibernate) => Some("hibernate"),
        (NoopFail::Wake, Operation::WakeUp) => Some("wake"),
        _ => None,
    };
    if let Some(fail) = fails {
        return Err(RunError::NoopFailure { fail });
    }
    ctx.progress("noop done", true).await;
    Ok(Outcome {
        summary: format!(
            "noop: {} of {target} done (nothing changed)",
            match operation {
                Operation::Hibernate => "hibernation",
                Operation::WakeUp => "wake-up",
            }
        ),
        changed: 0,
    })
}
