//! `karpenter`: Karpenter v1 NodePools (`karpenter.sh/v1`, cluster-scoped). Hibernate records a
//! NodePool's `spec.limits` exactly (`nodepool:<name>`: `{"limits": {...}}`, or `null` when it
//! has none), caps them to `{"cpu": "0", "memory": "0"}` with server-side apply (field manager
//! `hibernator-runner`; the NodePool itself, usually owned by Git, is never deleted), then
//! deletes the pool's NodeClaims so Karpenter drains and removes its nodes, and waits until
//! none is left. Wake-up puts `spec.limits` back exactly as recorded (removes it when there
//! was none); Karpenter then launches nodes for pending pods again.

use hibernator_api::Operation;
use hibernator_api::params::KarpenterParameters;
use hibernator_api::restore::key_prefix;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind, Selector};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Ctx, KubeError, Outcome, ResourceOutcome, RunError, Tally, all, summary};
use crate::config::ConfigError;
use crate::k8s::{Kube, is_conflict, is_not_found};
use crate::output::took;
use crate::wait::{self, Probe, Waited};

/// The field manager of the runner's writes.
pub const FIELD_MANAGER: &str = "hibernator-runner";
/// The label Karpenter puts on a NodeClaim naming its NodePool.
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
/// How often a change is retried when the NodePool changed between the look and the patch.
const CONFLICT_ATTEMPTS: u32 = 5;

/// `karpenter.sh/v1` NodePool.
pub fn node_pool_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool"),
        "nodepools",
    )
}

/// `karpenter.sh/v1` NodeClaim.
pub fn node_claim_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("karpenter.sh", "v1", "NodeClaim"),
        "nodeclaims",
    )
}

/// The record of a NodePool: its `spec.limits` exactly as found (`None`: it had none).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Limits {
    /// `spec.limits`.
    pub limits: Option<Value>,
}

/// The limits of a sleeping NodePool.
pub fn capped() -> Value {
    json!({"cpu": "0", "memory": "0"})
}

fn is_zero(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(s)) if s == "0") || v.and_then(Value::as_i64) == Some(0)
}

fn is_capped(limits: Option<&Value>) -> bool {
    limits.is_some_and(|l| is_zero(l.get("cpu")) && is_zero(l.get("memory")))
}

fn describe(limits: Option<&Value>) -> String {
    match limits {
        None => "no limits".into(),
        Some(v) => format!("limits {v}"),
    }
}

/// A merge patch of `spec.limits` turning `current` into exactly `recorded`: the recorded
/// keys with their values, `null` for keys that were not there.
fn exact(current: Option<&Value>, recorded: &Value) -> Value {
    let (Some(Value::Object(current)), Value::Object(wanted)) = (current, recorded) else {
        return recorded.clone();
    };
    let mut patch = wanted.clone();
    for key in current.keys() {
        if !wanted.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    Value::Object(patch)
}

fn limits_of(pool: &DynamicObject) -> Option<Value> {
    pool.data
        .get("spec")
        .and_then(|s| s.get("limits"))
        .filter(|l| !l.is_null())
        .cloned()
}

struct Pools {
    pools: Api<DynamicObject>,
    claims: Api<DynamicObject>,
}

impl Pools {
    async fn get(&self, name: &str) -> Result<Option<DynamicObject>, KubeError> {
        self.pools
            .get_opt(name)
            .await
            .map_err(|e| KubeError::new("read", format!("NodePool {name}"), &e))
    }

    /// NodeClaims of the pool: `(name, being deleted)`.
    async fn claims_of(&self, pool: &str) -> Result<Vec<(String, bool)>, KubeError> {
        let list = self
            .claims
            .list_metadata(&ListParams::default().labels(&format!("{NODEPOOL_LABEL}={pool}")))
            .await
            .map_err(|e| KubeError::new("list", format!("NodeClaims of NodePool {pool}"), &e))?;
        let mut claims: Vec<(String, bool)> = list
            .items
            .into_iter()
            .filter_map(|c| {
                let deleting = c.metadata.deletion_timestamp.is_some();
                c.metadata.name.map(|n| (n, deleting))
            })
            .collect();
        claims.sort();
        Ok(claims)
    }

    /// Deletes the pool's NodeClaims not yet being deleted; returns their names.
    async fn delete_claims(&self, pool: &str) -> Result<Vec<String>, KubeError> {
        let mut deleted = Vec::new();
        for (name, deleting) in self.claims_of(pool).await? {
            if deleting {
                continue;
            }
            match self.claims.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted.push(name),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(KubeError::new("delete", format!("NodeClaim {name}"), &e)),
            }
        }
        Ok(deleted)
    }
}

/// Runs a `karpenter` target.
pub async fn run(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &KarpenterParameters,
) -> Result<Outcome, RunError> {
    let pools = Pools {
        pools: Api::all_with(kube.client.clone(), &node_pool_resource()),
        claims: Api::all_with(kube.client.clone(), &node_claim_resource()),
    };
    if let Some(mode) = ctx.execution.enforce {
        return check(ctx, &pools, mode).await;
    }
    match ctx.execution.operation {
        Operation::Hibernate => hibernate(ctx, &pools, params).await,
        Operation::WakeUp => wake(ctx, &pools).await,
    }
}

/// The NodePools of the target, and how many listed ones do not exist.
async fn resolve(
    ctx: &Ctx<'_>,
    pools: &Pools,
    params: &KarpenterParameters,
) -> Result<(Vec<String>, u32), RunError> {
    if let Some(names) = &params.node_pools {
        let mut found = Vec::new();
        let mut missing = 0;
        for name in names {
            if pools.get(name).await?.is_some() {
                found.push(name.clone());
            } else {
                ctx.reporter
                    .warn(format!("NodePool {name} does not exist; skipped"));
                missing += 1;
            }
        }
        return Ok((found, missing));
    }
    let Some(selector) = params.selector.clone() else {
        // The schema requires one of the two; without either, nothing is chosen (never all).
        ctx.reporter
            .warn("neither nodePools nor selector is set; no NodePool chosen");
        return Ok((Vec::new(), 0));
    };
    let selector = Selector::try_from(selector).map_err(|e| {
        RunError::Config(ConfigError::Selector {
            field: "selector",
            message: e.to_string(),
        })
    })?;
    let list = pools
        .pools
        .list_metadata(&ListParams::default().labels_from(&selector))
        .await
        .map_err(|e| KubeError::new("list", "NodePools", &e))?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    ctx.reporter.info(format!(
        "selector {selector} selects {} NodePool{}{}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() {
            String::new()
        } else {
            format!(": {}", names.join(", "))
        }
    ));
    Ok((names, 0))
}

async fn hibernate(
    ctx: &Ctx<'_>,
    pools: &Pools,
    params: &KarpenterParameters,
) -> Result<Outcome, RunError> {
    let (names, missing) = resolve(ctx, pools, params).await?;
    ctx.add_total(names.len());
    let mut tally = Tally {
        total: names.len() as u32 + missing,
        missing,
        ..Tally::default()
    };
    let mut to_drain = Vec::new();
    for name in &names {
        ctx.check_stop()?;
        match cap(ctx, pools, name).await? {
            None => {
                ctx.reporter
                    .warn(format!("NodePool {name} no longer exists; skipped"));
                tally.missing += 1;
                ctx.progress(&format!("skipped NodePool {name} (gone)"), true)
                    .await;
                continue;
            }
            Some(true) => tally.changed += 1,
            Some(false) => {
                ctx.reporter
                    .info(format!("NodePool {name} is already capped to zero"));
                tally.already += 1;
            }
        }
        to_drain.push(name.clone());
    }
    let removed = drain(ctx, pools, &to_drain).await?;

    let mut line = summary(
        "capped",
        "already capped",
        "left alone",
        &[("NodePool", tally)],
    );
    if tally.total > 0 {
        line.push_str(&format!(
            "; deleted {removed} NodeClaim{}",
            if removed == 1 { "" } else { "s" }
        ));
    }
    Ok(Outcome {
        summary: line,
        changed: tally.changed + removed,
    })
}

/// Records a NodePool's limits (the first record of the cycle wins) and caps them to zero,
/// retrying on conflicts: `None` when it no longer exists, else whether it had to be changed.
async fn cap(ctx: &Ctx<'_>, pools: &Pools, name: &str) -> Result<Option<bool>, RunError> {
    let mut attempt = 1;
    loop {
        let Some(pool) = pools.get(name).await? else {
            return Ok(None);
        };
        let limits = limits_of(&pool);
        if attempt == 1 {
            ctx.reporter.info(format!(
                "found NodePool {name} ({})",
                describe(limits.as_ref())
            ));
        }
        let key = format!("{}:{name}", key_prefix::NODE_POOL);
        let (stored, already) = ctx
            .record(
                &key,
                &Limits {
                    limits: limits.clone(),
                },
            )
            .await?;
        if attempt == 1 {
            ctx.reporter.info(if already {
                format!(
                    "{key} was recorded earlier in this cycle ({}); keeping that record",
                    describe(stored.limits.as_ref())
                )
            } else {
                format!("recorded {key}: {}", describe(limits.as_ref()))
            });
        }
        if is_capped(limits.as_ref()) {
            return Ok(Some(false));
        }
        ctx.reporter.info(format!(
            "capping the limits of NodePool {name} to {}",
            capped()
        ));
        let apply = json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            // The resource version makes this an update of what was recorded, never a
            // create of a NodePool that vanished meanwhile.
            "metadata": {"name": name, "resourceVersion": pool.metadata.resource_version},
            "spec": {"limits": capped()},
        });
        match pools
            .pools
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&apply),
            )
            .await
        {
            Ok(_) => return Ok(Some(true)),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                ctx.reporter
                    .info(format!("NodePool {name} changed meanwhile; looking again"));
                attempt += 1;
            }
            Err(e) => {
                return Err(
                    KubeError::new("cap the limits of", format!("NodePool {name}"), &e).into(),
                );
            }
        }
    }
}

/// Deletes the NodeClaims of the capped pools and waits, all together, until none is left;
/// returns how many it deleted.
async fn drain(ctx: &Ctx<'_>, pools: &Pools, names: &[String]) -> Result<u32, RunError> {
    let removed = std::cell::Cell::new(0u32);
    let futures: Vec<_> = names
        .iter()
        .map(|name| {
            let removed = &removed;
            async move {
                let what = format!("NodePool {name} to have no NodeClaims");
                let waited = wait::until(ctx.timing, &what, || async move {
                    // Deletes every NodeClaim not yet going, also one launched just before
                    // the cap took effect.
                    let deleted = pools.delete_claims(name).await?;
                    if !deleted.is_empty() {
                        removed.set(removed.get() + deleted.len() as u32);
                        ctx.reporter.info(format!(
                            "deleting {} NodeClaim{} of NodePool {name}: {}",
                            deleted.len(),
                            if deleted.len() == 1 { "" } else { "s" },
                            deleted.join(", ")
                        ));
                    }
                    let left = pools.claims_of(name).await?;
                    Ok::<_, KubeError>(if left.is_empty() {
                        Probe::Done(())
                    } else {
                        Probe::Pending(format!(
                            "{} NodeClaim{} terminating: {}",
                            left.len(),
                            if left.len() == 1 { "" } else { "s" },
                            left.iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
                })
                .await
                .map_err(RunError::KubeWait)?;
                if let Waited::Done { took: t, looks, .. } = waited {
                    ctx.reporter.info(format!(
                        "NodePool {name} has no NodeClaims left (took {}, {looks} look{})",
                        took(t),
                        if looks == 1 { "" } else { "s" }
                    ));
                }
                ctx.progress(&format!("NodePool {name} asleep"), true).await;
                Ok(())
            }
        })
        .collect();
    all(ctx, "NodePools", futures).await?;
    Ok(removed.get())
}

/// In-sleep check: each NodePool this operator capped still has its limits at zero and no
/// NodeClaims. `Reapply` caps a drifted pool again (its record of the night kept) and deletes
/// its NodeClaims. A pool that was capped before the night is not ours to keep asleep.
async fn check(
    ctx: &Ctx<'_>,
    pools: &Pools,
    mode: hibernator_api::plan::EnforceMode,
) -> Result<Outcome, RunError> {
    let records = recorded(ctx).await?;
    let mut tally = Tally {
        total: records.len() as u32,
        ..Tally::default()
    };
    let mut awake = Vec::new();
    for (name, recorded) in &records {
        ctx.check_stop()?;
        let key = format!("{}:{name}", key_prefix::NODE_POOL);
        if is_capped(recorded.limits.as_ref()) {
            tally.already += 1;
            ctx.outcome(&key, ResourceOutcome::Asleep);
            continue;
        }
        let found = match look(pools, name).await {
            Ok(Look::Awake(found)) => found,
            Ok(Look::Asleep) => {
                ctx.reporter.info(format!(
                    "NodePool {name} is capped with no NodeClaims, as it should"
                ));
                tally.already += 1;
                ctx.outcome(&key, ResourceOutcome::Asleep);
                ctx.progress(&format!("NodePool {name} asleep"), true).await;
                continue;
            }
            Ok(Look::Gone) => {
                tally.missing += 1;
                ctx.check_not_found(&key, &format!("NodePool {name}")).await;
                continue;
            }
            Err(e) => {
                tally.failed += 1;
                ctx.check_failed(&key, &e.into()).await;
                continue;
            }
        };
        ctx.reporter.warn(format!(
            "NodePool {name} has {found} although it was capped in cycle {}: drifted",
            ctx.execution.cycle_id
        ));
        if mode != hibernator_api::plan::EnforceMode::Reapply {
            tally.left += 1;
            ctx.outcome(&key, ResourceOutcome::Drifted(found.clone()));
            ctx.progress(&format!("NodePool {name} drifted ({found})"), true)
                .await;
            continue;
        }
        match cap(ctx, pools, name).await {
            Ok(Some(_)) => awake.push((name.clone(), key, found)),
            Ok(None) => {
                tally.missing += 1;
                ctx.check_not_found(&key, &format!("NodePool {name}")).await;
            }
            Err(e) if e.is_stop() => return Err(e),
            Err(e) => {
                tally.failed += 1;
                ctx.check_failed(&key, &e).await;
            }
        }
    }
    let names: Vec<String> = awake.iter().map(|(n, _, _)| n.clone()).collect();
    let removed = drain(ctx, pools, &names).await?;
    for (_, key, found) in awake {
        tally.changed += 1;
        ctx.outcome(&key, ResourceOutcome::Reapplied(found));
    }
    Ok(Outcome {
        summary: super::check_summary(mode, &[("NodePool", tally)]),
        changed: tally.changed + removed,
    })
}

/// What an in-sleep check finds of a NodePool.
enum Look {
    /// It no longer exists.
    Gone,
    /// Capped to zero, with no NodeClaims.
    Asleep,
    /// Awake: what was found (`limits {...}`, `limits at zero but 2 NodeClaims`).
    Awake(String),
}

async fn look(pools: &Pools, name: &str) -> Result<Look, KubeError> {
    let Some(pool) = pools.get(name).await? else {
        return Ok(Look::Gone);
    };
    let limits = limits_of(&pool);
    if !is_capped(limits.as_ref()) {
        return Ok(Look::Awake(describe(limits.as_ref())));
    }
    let claims = pools.claims_of(name).await?;
    Ok(
        match claims.iter().filter(|(_, deleting)| !deleting).count() {
            0 => Look::Asleep,
            n => Look::Awake(format!(
                "limits at zero but {n} NodeClaim{}",
                if n == 1 { "" } else { "s" }
            )),
        },
    )
}

/// The target's NodePool records (wake-up and in-sleep check); others are reported and left.
async fn recorded(ctx: &Ctx<'_>) -> Result<Vec<(String, Limits)>, RunError> {
    let records = ctx.fetch().await?;
    ctx.ignore_other_records(&records, &[key_prefix::NODE_POOL]);
    let records: Vec<(String, Limits)> = ctx.records_of(&records, key_prefix::NODE_POOL)?;
    ctx.add_total(records.len());
    Ok(records)
}

/// Puts back a NodePool's recorded limits (retrying on conflicts): `None` when it no longer
/// exists, else whether it had to be changed.
async fn restore_pool(
    ctx: &Ctx<'_>,
    pools: &Pools,
    name: &str,
    recorded: &Limits,
) -> Result<Option<bool>, RunError> {
    let mut attempt = 1;
    loop {
        let Some(pool) = pools.get(name).await? else {
            return Ok(None);
        };
        let current = limits_of(&pool);
        if attempt == 1 {
            ctx.reporter.info(format!(
                "found NodePool {name} ({}); it had {} before hibernation",
                describe(current.as_ref()),
                describe(recorded.limits.as_ref())
            ));
        }
        if current == recorded.limits {
            return Ok(Some(false));
        }
        // A merge patch that puts back exactly what was recorded (keys added while asleep are
        // removed), if the NodePool is still the version just read.
        let limits = match &recorded.limits {
            Some(limits) => {
                ctx.reporter.info(format!(
                    "restoring the limits of NodePool {name} to {limits}"
                ));
                exact(current.as_ref(), limits)
            }
            None => {
                ctx.reporter.info(format!(
                    "removing the limits of NodePool {name} (it had none)"
                ));
                Value::Null
            }
        };
        let patch = json!({
            "metadata": {"resourceVersion": pool.metadata.resource_version},
            "spec": {"limits": limits},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match pools
            .pools
            .patch(name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Some(true)),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                ctx.reporter
                    .info(format!("NodePool {name} changed meanwhile; looking again"));
                attempt += 1;
            }
            Err(e) => {
                return Err(KubeError::new(
                    "restore the limits of",
                    format!("NodePool {name}"),
                    &e,
                )
                .into());
            }
        }
    }
}

async fn wake(ctx: &Ctx<'_>, pools: &Pools) -> Result<Outcome, RunError> {
    let records = recorded(ctx).await?;
    let mut tally = Tally {
        total: records.len() as u32,
        ..Tally::default()
    };
    for (name, recorded) in &records {
        ctx.check_stop()?;
        let key = format!("{}:{name}", key_prefix::NODE_POOL);
        match restore_pool(ctx, pools, name, recorded).await {
            Ok(None) => {
                tally.missing += 1;
                ctx.not_found(&key, &format!("NodePool {name}")).await;
            }
            Ok(Some(true)) => {
                ctx.reporter.info(format!("NodePool {name} restored"));
                tally.changed += 1;
                ctx.outcome(&key, ResourceOutcome::Restored);
                ctx.progress(&format!("NodePool {name} restored"), true)
                    .await;
            }
            Ok(Some(false)) => {
                ctx.reporter.info(format!(
                    "NodePool {name} already has its limits from before hibernation"
                ));
                tally.already += 1;
                ctx.outcome(&key, ResourceOutcome::Restored);
                ctx.progress(&format!("NodePool {name} already restored"), true)
                    .await;
            }
            Err(e) => {
                tally.failed += 1;
                ctx.failed(&key, &e).await;
            }
        }
    }
    let summary = if tally.total == 0 {
        "nothing to wake up: no restore data recorded for this target".to_string()
    } else {
        summary(
            "restored the limits of",
            "already restored",
            "left alone",
            &[("NodePool", tally)],
        )
    };
    Ok(Outcome {
        summary,
        changed: tally.changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_limits_exactly_and_absence_as_null() {
        let absent = Limits { limits: None };
        assert_eq!(
            serde_json::to_string(&absent).unwrap(),
            r#"{"limits":null}"#
        );
        assert_eq!(
            serde_json::from_str::<Limits>(r#"{"limits":null}"#).unwrap(),
            absent
        );
        let present = Limits {
            limits: Some(json!({"cpu": 1000, "memory": "1000Gi", "nvidia.com/gpu": "8"})),
        };
        let text = serde_json::to_string(&present).unwrap();
        assert_eq!(serde_json::from_str::<Limits>(&text).unwrap(), present);
    }

    #[test]
    fn the_restore_patch_removes_keys_added_while_asleep() {
        let current = json!({"cpu": "0", "memory": "0", "pods": "10"});
        let recorded = json!({"cpu": "100", "nvidia.com/gpu": 4});
        assert_eq!(
            exact(Some(&current), &recorded),
            json!({"cpu": "100", "nvidia.com/gpu": 4, "memory": null, "pods": null})
        );
        assert_eq!(exact(None, &recorded), recorded);
    }

    #[test]
    fn capped_means_zero_cpu_and_memory() {
        assert!(is_capped(Some(&capped())));
        assert!(is_capped(Some(
            &json!({"cpu": 0, "memory": "0", "pods": 10})
        )));
        assert!(!is_capped(Some(&json!({"cpu": "0"}))));
        assert!(!is_capped(Some(&json!({"cpu": "10", "memory": "0"}))));
        assert!(!is_capped(None));
    }
}
