//! `workloads`: Deployments and StatefulSets of chosen namespaces. Hibernate records each
//! workload's replicas (`deployment:<ns>/<name>`: `{"replicas": 3}`), scales it to zero through
//! the scale subresource (never its spec) and waits until no replica is left; wake-up scales
//! each recorded workload back to its replicas and waits until they are ready.

use hibernator_api::Operation;
use hibernator_api::params::{WorkloadKind, WorkloadsParameters};
use hibernator_api::restore::key_prefix;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, KubeError, Outcome, ResourceOutcome, RunError, Tally, all, summary};
use crate::config::ConfigError;
use crate::k8s::{Kube, is_conflict, is_not_found};
use crate::output::took;
use crate::wait::{self, Probe, Waited};

/// The record of a workload.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// `spec.replicas` when it was found.
    pub replicas: i32,
}

/// How often a scale is retried when the workload changed between the look and the patch.
const CONFLICT_ATTEMPTS: u32 = 5;

/// One workload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Workload {
    kind: WorkloadKind,
    namespace: String,
    name: String,
}

/// `1 replica`, `3 replicas`.
fn count(replicas: i32) -> String {
    format!("{replicas} replica{}", if replicas == 1 { "" } else { "s" })
}

fn noun(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    }
}

fn prefix(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => key_prefix::DEPLOYMENT,
        WorkloadKind::StatefulSet => key_prefix::STATEFULSET,
    }
}

impl Workload {
    fn key(&self) -> String {
        format!("{}:{}/{}", prefix(self.kind), self.namespace, self.name)
    }

    fn label(&self) -> String {
        format!("{} {}/{}", noun(self.kind), self.namespace, self.name)
    }
}

/// What the workload's status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    spec: i32,
    replicas: i32,
    ready: i32,
    /// The controller has seen the latest spec.
    current: bool,
}

impl Seen {
    fn describe(&self) -> String {
        format!(
            "{} desired, {} present, {} ready",
            self.spec, self.replicas, self.ready
        )
    }
}

/// Typed access to the two kinds.
struct Workloads<'a> {
    kube: &'a Kube,
}

impl Workloads<'_> {
    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.kube.client.clone(), namespace)
    }

    fn statefulsets(&self, namespace: &str) -> Api<StatefulSet> {
        Api::namespaced(self.kube.client.clone(), namespace)
    }

    /// Workload names of `kind` in `namespace` matching `selector`.
    async fn list(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        selector: Option<&Selector>,
    ) -> Result<Vec<String>, KubeError> {
        let mut params = ListParams::default();
        if let Some(s) = selector {
            params = params.labels_from(s);
        }
        let names: Result<Vec<String>, kube::Error> = match kind {
            WorkloadKind::Deployment => self
                .deployments(namespace)
                .list_metadata(&params)
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|o| o.metadata.name)
                        .collect()
                }),
            WorkloadKind::StatefulSet => self
                .statefulsets(namespace)
                .list_metadata(&params)
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|o| o.metadata.name)
                        .collect()
                }),
        };
        let mut names = names.map_err(|e| {
            KubeError::new(
                "list",
                format!("{}s in namespace {namespace}", noun(kind)),
                &e,
            )
        })?;
        names.sort();
        Ok(names)
    }

    /// The scale subresource: `(spec.replicas, resourceVersion)`; `None` when it is gone.
    async fn scale_of(&self, w: &Workload) -> Result<Option<(i32, String)>, KubeError> {
        let scale = match w.kind {
            WorkloadKind::Deployment => self.deployments(&w.namespace).get_scale(&w.name).await,
            WorkloadKind::StatefulSet => self.statefulsets(&w.namespace).get_scale(&w.name).await,
        };
        match scale {
            Ok(scale) => Ok(Some((
                scale.spec.and_then(|s| s.replicas).unwrap_or(0),
                scale.metadata.resource_version.unwrap_or_default(),
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(KubeError::new("read the scale of", w.label(), &e)),
        }
    }

    /// Sets the replicas through the scale subresource, if the workload is still at
    /// `resource_version` (so the record describes what was changed).
    async fn scale(
        &self,
        w: &Workload,
        replicas: i32,
        resource_version: &str,
    ) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": resource_version},
            "spec": {"replicas": replicas},
        }));
        let params = PatchParams::default();
        match w.kind {
            WorkloadKind::Deployment => self
                .deployments(&w.namespace)
                .patch_scale(&w.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => self
                .statefulsets(&w.namespace)
                .patch_scale(&w.name, &params, &patch)
                .await
                .map(|_| ()),
        }
    }

    /// The workload's status; `None` when it is gone.
    async fn look(&self, w: &Workload) -> Result<Option<Seen>, KubeError> {
        let seen = match w.kind {
            WorkloadKind::Deployment => {
                self.deployments(&w.namespace)
                    .get_opt(&w.name)
                    .await
                    .map(|d| {
                        d.map(|d| {
                            let status = d.status.unwrap_or_default();
                            Seen {
                                spec: d.spec.and_then(|s| s.replicas).unwrap_or(1),
                                replicas: status.replicas.unwrap_or(0),
                                ready: status.ready_replicas.unwrap_or(0),
                                current: status.observed_generation >= d.metadata.generation,
                            }
                        })
                    })
            }
            WorkloadKind::StatefulSet => self
                .statefulsets(&w.namespace)
                .get_opt(&w.name)
                .await
                .map(|s| {
                    s.map(|s| {
                        let status = s.status.unwrap_or_default();
                        Seen {
                            spec: s.spec.and_then(|s| s.replicas).unwrap_or(1),
                            replicas: status.replicas,
                            ready: status.ready_replicas.unwrap_or(0),
                            current: status.observed_generation >= s.metadata.generation,
                        }
                    })
                }),
        };
        seen.map_err(|e| KubeError::new("read", w.label(), &e))
    }
}

fn selector(
    field: &'static str,
    selector: Option<&LabelSelector>,
) -> Result<Option<Selector>, RunError> {
    selector
        .map(|s| {
            Selector::try_from(s.clone()).map_err(|e| {
                RunError::Config(ConfigError::Selector {
                    field,
                    message: e.to_string(),
                })
            })
        })
        .transpose()
}

/// The namespaces of the target, in order; missing ones are reported and counted.
async fn namespaces(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
) -> Result<Vec<String>, RunError> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    if let Some(names) = &params.namespaces {
        let mut found = Vec::new();
        for name in names {
            match api.get_opt(name).await {
                Ok(Some(_)) => found.push(name.clone()),
                Ok(None) => ctx
                    .reporter
                    .warn(format!("namespace {name} does not exist; skipped")),
                Err(e) => {
                    return Err(KubeError::new("read", format!("namespace {name}"), &e).into());
                }
            }
        }
        return Ok(found);
    }
    let Some(sel) = selector("namespaceSelector", params.namespace_selector.as_ref())? else {
        return Ok(Vec::new());
    };
    let list = api
        .list_metadata(&ListParams::default().labels_from(&sel))
        .await
        .map_err(|e| KubeError::new("list", "namespaces", &e))?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    ctx.reporter.info(format!(
        "namespaceSelector {sel} selects {} namespace{}{}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() {
            String::new()
        } else {
            format!(": {}", names.join(", "))
        }
    ));
    Ok(names)
}

/// Runs a `workloads` target.
pub async fn run(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
) -> Result<Outcome, RunError> {
    let api = Workloads { kube };
    match ctx.execution.operation {
        Operation::Hibernate => hibernate(ctx, &api, params).await,
        Operation::WakeUp => wake(ctx, &api).await,
    }
}

fn tallies(tally: &[Tally; 2]) -> [(&'static str, Tally); 2] {
    [("Deployment", tally[0]), ("StatefulSet", tally[1])]
}

fn slot(kind: WorkloadKind) -> usize {
    match kind {
        WorkloadKind::Deployment => 0,
        WorkloadKind::StatefulSet => 1,
    }
}

async fn hibernate(
    ctx: &Ctx<'_>,
    api: &Workloads<'_>,
    params: &WorkloadsParameters,
) -> Result<Outcome, RunError> {
    let kinds = params
        .kinds
        .clone()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| vec![WorkloadKind::Deployment, WorkloadKind::StatefulSet]);
    let object_selector = selector("selector", params.selector.as_ref())?;
    let namespaces = namespaces(ctx, api.kube, params).await?;
    let mut workloads = Vec::new();
    for namespace in &namespaces {
        for kind in &kinds {
            for name in api.list(*kind, namespace, object_selector.as_ref()).await? {
                workloads.push(Workload {
                    kind: *kind,
                    namespace: namespace.clone(),
                    name,
                });
            }
        }
    }
    ctx.reporter.info(format!(
        "{} workload{} in {} namespace{} (kinds {}{})",
        workloads.len(),
        if workloads.len() == 1 { "" } else { "s" },
        namespaces.len(),
        if namespaces.len() == 1 { "" } else { "s" },
        kinds
            .iter()
            .map(|k| noun(*k))
            .collect::<Vec<_>>()
            .join(", "),
        object_selector
            .as_ref()
            .map(|s| format!(", selector {s}"))
            .unwrap_or_default()
    ));
    ctx.add_total(workloads.len());

    let mut tally = [Tally::default(); 2];
    let mut to_wait = Vec::new();
    for w in workloads {
        ctx.check_stop()?;
        let t = &mut tally[slot(w.kind)];
        t.total += 1;
        let mut attempt = 1;
        let scaled = loop {
            let Some((replicas, version)) = api.scale_of(&w).await? else {
                break None;
            };
            if attempt == 1 {
                ctx.reporter
                    .info(format!("found {} ({})", w.label(), count(replicas)));
            }
            let (stored, already) = ctx.record(&w.key(), &Replicas { replicas }).await?;
            if attempt == 1 {
                ctx.reporter.info(if already {
                    format!(
                        "{} was recorded earlier in this cycle ({}); keeping that record",
                        w.key(),
                        count(stored.replicas)
                    )
                } else if replicas == 0 {
                    format!(
                        "recorded {}: 0 replicas, stays that way on wake-up",
                        w.key()
                    )
                } else {
                    format!("recorded {}: {}", w.key(), count(replicas))
                });
            }
            if replicas == 0 {
                break Some(false);
            }
            ctx.reporter
                .info(format!("scaling {} from {replicas} to 0", w.label()));
            match api.scale(&w, 0, &version).await {
                Ok(()) => break Some(true),
                Err(e) if is_not_found(&e) => break None,
                Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                    ctx.reporter
                        .info(format!("{} changed meanwhile; looking again", w.label()));
                    attempt += 1;
                }
                Err(e) => return Err(KubeError::new("scale", w.label(), &e).into()),
            }
        };
        match scaled {
            None => {
                ctx.reporter
                    .warn(format!("{} no longer exists; skipped", w.label()));
                t.missing += 1;
                ctx.progress(&format!("skipped {} (gone)", w.label()), true)
                    .await;
            }
            Some(true) => {
                t.changed += 1;
                to_wait.push(w);
            }
            Some(false) => {
                t.already += 1;
                to_wait.push(w);
            }
        }
    }

    let futures: Vec<_> = to_wait
        .iter()
        .map(|w| async move {
            let description = format!("{} to have no replicas", w.label());
            let waited = wait::until(ctx.timing, &description, || async move {
                Ok::<_, KubeError>(match api.look(w).await? {
                    None => Probe::Gone,
                    Some(s) if s.current && s.replicas == 0 => Probe::Done(s),
                    Some(s) => Probe::Pending(s.describe()),
                })
            })
            .await
            .map_err(RunError::KubeWait)?;
            report_wait(ctx, w, waited, "has no replicas").await;
            Ok(())
        })
        .collect();
    all(ctx, "workloads", futures).await?;

    let changed = tally.iter().map(|t| t.changed).sum();
    Ok(Outcome {
        summary: summary(
            "scaled to zero",
            "already at zero",
            "left alone",
            &tallies(&tally),
        ),
        changed,
    })
}

async fn report_wait(ctx: &Ctx<'_>, w: &Workload, waited: Waited<Seen>, done: &str) {
    match waited {
        Waited::Done {
            value,
            took: t,
            looks,
        } => {
            ctx.reporter.info(format!(
                "{} {done}: {} (took {}, {looks} look{})",
                w.label(),
                value.describe(),
                took(t),
                if looks == 1 { "" } else { "s" }
            ));
            ctx.progress(&format!("{} {done}", w.label()), true).await;
        }
        Waited::Gone => {
            ctx.reporter
                .warn(format!("{} vanished; skipped", w.label()));
            ctx.progress(&format!("{} vanished", w.label()), true).await;
        }
    }
}

fn parse_key(kind: WorkloadKind, id: &str) -> Option<Workload> {
    let (namespace, name) = id.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| Workload {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// Scales a workload back to its recorded replicas (retrying on conflicts): `None` when it no
/// longer exists, else whether it had to be changed.
async fn scale_back(
    ctx: &Ctx<'_>,
    api: &Workloads<'_>,
    w: &Workload,
    replicas: i32,
) -> Result<Option<bool>, RunError> {
    let mut attempt = 1;
    loop {
        let Some((current, version)) = api.scale_of(w).await? else {
            return Ok(None);
        };
        if attempt == 1 {
            ctx.reporter.info(format!(
                "found {} ({}); it had {replicas} before hibernation",
                w.label(),
                count(current)
            ));
        }
        if current == replicas {
            return Ok(Some(false));
        }
        ctx.reporter.info(format!(
            "scaling {} from {current} to {replicas}",
            w.label()
        ));
        match api.scale(w, replicas, &version).await {
            Ok(()) => return Ok(Some(true)),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                ctx.reporter
                    .info(format!("{} changed meanwhile; looking again", w.label()));
                attempt += 1;
            }
            Err(e) => return Err(KubeError::new("scale", w.label(), &e).into()),
        }
    }
}

async fn wake(ctx: &Ctx<'_>, api: &Workloads<'_>) -> Result<Outcome, RunError> {
    let records = ctx.fetch().await?;
    ctx.ignore_other_records(&records, &[key_prefix::DEPLOYMENT, key_prefix::STATEFULSET]);
    let mut recorded = Vec::new();
    for kind in [WorkloadKind::Deployment, WorkloadKind::StatefulSet] {
        for (id, r) in ctx.records_of::<Replicas>(&records, prefix(kind))? {
            match parse_key(kind, &id) {
                Some(w) => recorded.push((w, r.replicas)),
                None => {
                    let key = format!("{}:{id}", prefix(kind));
                    let message = "its key is not <kind>:<namespace>/<name>; the record is kept";
                    ctx.reporter
                        .warn(format!("ignoring restore record {key}: {message}"));
                    ctx.outcome(&key, ResourceOutcome::Failed(message.into()));
                }
            }
        }
    }
    ctx.add_total(recorded.len());

    let mut tally = [Tally::default(); 2];
    let mut to_wait = Vec::new();
    for (w, replicas) in recorded {
        ctx.check_stop()?;
        let t = &mut tally[slot(w.kind)];
        t.total += 1;
        if replicas == 0 {
            ctx.reporter.info(format!(
                "{} had 0 replicas before hibernation; leaving it as it is",
                w.label()
            ));
            t.left += 1;
            ctx.outcome(&w.key(), ResourceOutcome::Restored);
            ctx.progress(&format!("{} left at zero", w.label()), true)
                .await;
            continue;
        }
        match scale_back(ctx, api, &w, replicas).await {
            Ok(None) => {
                t.missing += 1;
                ctx.not_found(&w.key(), &w.label()).await;
            }
            Ok(Some(changed)) => {
                if changed {
                    t.changed += 1;
                } else {
                    t.already += 1;
                }
                to_wait.push((w, replicas));
            }
            Err(e) => {
                t.failed += 1;
                ctx.failed(&w.key(), &e).await;
            }
        }
    }

    let futures: Vec<_> = to_wait
        .iter()
        .map(|(w, replicas)| async move {
            let description = format!("{} to have {replicas} ready replicas", w.label());
            let waited = wait::until(ctx.timing, &description, || async move {
                Ok::<_, KubeError>(match api.look(w).await? {
                    None => Probe::Gone,
                    Some(s) if s.current && s.spec == *replicas && s.ready >= *replicas => {
                        Probe::Done(s)
                    }
                    Some(s) => Probe::Pending(s.describe()),
                })
            })
            .await;
            match waited {
                Ok(Waited::Gone) => ctx.not_found(&w.key(), &w.label()).await,
                Ok(waited) => {
                    ctx.outcome(&w.key(), ResourceOutcome::Restored);
                    report_wait(ctx, w, waited, "is ready").await;
                }
                Err(e) => ctx.failed(&w.key(), &RunError::KubeWait(e)).await,
            }
            Ok(())
        })
        .collect();
    all(ctx, "workloads", futures).await?;
    // The waits' outcomes: vanished or failed workloads are no longer counted as scaled.
    for (w, _) in &to_wait {
        let t = &mut tally[slot(w.kind)];
        match ctx.outcome_of(&w.key()) {
            Some(ResourceOutcome::NotFound(_)) => t.missing += 1,
            Some(ResourceOutcome::Failed(_)) => t.failed += 1,
            _ => continue,
        }
        if t.changed > 0 {
            t.changed -= 1;
        } else {
            t.already = t.already.saturating_sub(1);
        }
    }

    let changed = tally.iter().map(|t| t.changed).sum();
    let summary = if tally.iter().all(|t| t.total == 0) {
        "nothing to wake up: no restore data recorded for this target".to_string()
    } else {
        summary(
            "restored",
            "already restored",
            "left at zero as before hibernation",
            &tallies(&tally),
        )
    };
    Ok(Outcome { summary, changed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_kind_namespace_and_name() {
        let w = Workload {
            kind: WorkloadKind::StatefulSet,
            namespace: "team-a".into(),
            name: "db".into(),
        };
        assert_eq!(w.key(), "statefulset:team-a/db");
        assert_eq!(w.label(), "StatefulSet team-a/db");
        assert_eq!(parse_key(WorkloadKind::StatefulSet, "team-a/db"), Some(w));
        assert_eq!(parse_key(WorkloadKind::Deployment, "no-slash"), None);
        assert_eq!(
            serde_json::to_string(&Replicas { replicas: 3 }).unwrap(),
            r#"{"replicas":3}"#
        );
    }
}
