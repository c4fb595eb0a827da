//! `workloads`: Deployments, StatefulSets and any kind with a scale subresource (named
//! `group/version/Kind`, found through API discovery) in chosen namespaces, CronJobs, and the
//! KEDA ScaledObjects that drive the chosen workloads.
//!
//! Hibernate records each workload's replicas (`deployment:<ns>/<name>`: `{"replicas": 3}`;
//! other kinds also record their `apiVersion` under `<kind>.<group>:<ns>/<name>`), scales it to
//! zero through the scale subresource (never its spec) and waits until no replica is left.
//! A workload a KEDA ScaledObject drives would be scaled up again by KEDA: its ScaledObject is
//! paused first with `autoscaling.keda.sh/paused-replicas: "0"` (any earlier value recorded).
//! CronJobs are suspended (`spec.suspend: true`, the earlier value recorded). Wake-up scales
//! each recorded workload back to its replicas and waits until they are ready, puts back each
//! CronJob's `spec.suspend`, and then each ScaledObject's annotation, exactly as recorded.

use hibernator_api::Operation;
use hibernator_api::params::{ScalableKind, WorkloadKind, WorkloadsParameters};
use hibernator_api::restore::key_prefix;
use hibernator_api::savings::{Service, Sizing, quantity};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind, Selector};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::toggle::{Field, Object, Toggled};
use super::{Ctx, KubeError, Outcome, ResourceOutcome, RunError, Tally, all, summary};
use crate::config::ConfigError;
use crate::k8s::{Kube, is_conflict, is_not_found};
use crate::output::took;
use crate::wait::{self, Probe, Waited};

/// The record of a workload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// `spec.replicas` when it was found.
    pub replicas: i32,
    /// The API version it was scaled through (kinds other than Deployment and StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// How often a scale is retried when the workload changed between the look and the patch.
const CONFLICT_ATTEMPTS: u32 = 5;

/// A kind of workload that is scaled, with its API resource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scaled {
    /// Key prefix of its records.
    prefix: String,
    ar: ApiResource,
    /// True for kinds named `group/version/Kind`.
    custom: bool,
}

impl Scaled {
    fn builtin(kind: &str, plural: &str, prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            ar: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("apps", "v1", kind),
                plural,
            ),
            custom: false,
        }
    }

    fn deployment() -> Self {
        Self::builtin("Deployment", "deployments", key_prefix::DEPLOYMENT)
    }

    fn statefulset() -> Self {
        Self::builtin("StatefulSet", "statefulsets", key_prefix::STATEFULSET)
    }

    /// Finds a kind with a scale subresource through API discovery.
    async fn discover(kube: &Kube, kind: &ScalableKind, version: &str) -> Result<Self, RunError> {
        let gvk = GroupVersionKind::gvk(&kind.group, version, &kind.kind);
        let written = format!("{}/{version}/{}", kind.group, kind.kind);
        let (ar, caps) = match kube::discovery::pinned_kind(&kube.client, &gvk).await {
            Ok(found) => found,
            Err(e) => {
                let reason = match &e {
                    // The group/version is not served: a bare 404 page, not a Status.
                    kube::Error::Api(s) if s.code == 404 => {
                        "is not served by this cluster (is its CRD installed?)".to_string()
                    }
                    kube::Error::Discovery(d) => format!("is not served by this cluster: {d}"),
                    other => {
                        return Err(KubeError::new("discover", written, other).into());
                    }
                };
                return Err(ConfigError::Kind {
                    kind: written,
                    reason,
                }
                .into());
            }
        };
        if caps.scope != kube::discovery::Scope::Namespaced {
            return Err(ConfigError::Kind {
                kind: written,
                reason: "is cluster-scoped; workloads targets scale namespaced kinds".into(),
            }
            .into());
        }
        if !caps
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "scale")
        {
            return Err(ConfigError::Kind {
                kind: written,
                reason: format!(
                    "has no scale subresource ({} cannot be scaled through /scale)",
                    ar.plural
                ),
            }
            .into());
        }
        Ok(Self {
            prefix: kind.key_prefix(),
            ar,
            custom: true,
        })
    }
}

/// One workload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Workload<'k> {
    kind: &'k Scaled,
    namespace: String,
    name: String,
}

/// `1 replica`, `3 replicas`.
fn count(replicas: i32) -> String {
    format!("{replicas} replica{}", if replicas == 1 { "" } else { "s" })
}

impl Workload<'_> {
    fn key(&self) -> String {
        format!("{}:{}/{}", self.kind.prefix, self.namespace, self.name)
    }

    fn label(&self) -> String {
        format!("{} {}/{}", self.kind.ar.kind, self.namespace, self.name)
    }

    fn api(&self, kube: &Kube) -> Api<DynamicObject> {
        Api::namespaced_with(kube.client.clone(), &self.namespace, &self.kind.ar)
    }

    fn record(&self, replicas: i32) -> Replicas {
        Replicas {
            replicas,
            api_version: self.kind.custom.then(|| self.kind.ar.api_version.clone()),
        }
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

fn int(v: Option<&Value>) -> Option<i32> {
    v.and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

/// Workload names of `kind` in `namespace` matching `selector`.
async fn list(
    kube: &Kube,
    kind: &Scaled,
    namespace: &str,
    selector: Option<&Selector>,
) -> Result<Vec<String>, KubeError> {
    let mut params = ListParams::default();
    if let Some(s) = selector {
        params = params.labels_from(s);
    }
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), namespace, &kind.ar);
    let list = api.list_metadata(&params).await.map_err(|e| {
        KubeError::new(
            "list",
            format!("{}s in namespace {namespace}", kind.ar.kind),
            &e,
        )
    })?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

/// The scale subresource: `(spec.replicas, resourceVersion)`; `None` when it is gone.
async fn scale_of(kube: &Kube, w: &Workload<'_>) -> Result<Option<(i32, String)>, KubeError> {
    match w.api(kube).get_scale(&w.name).await {
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
    kube: &Kube,
    w: &Workload<'_>,
    replicas: i32,
    resource_version: &str,
) -> Result<(), kube::Error> {
    let patch = Patch::Merge(json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"replicas": replicas},
    }));
    w.api(kube)
        .patch_scale(&w.name, &PatchParams::default(), &patch)
        .await
        .map(|_| ())
}

/// The workload's status; `None` when it is gone. Kinds named `group/version/Kind` count
/// replicas where their scale subresource says (its `statusReplicasPath`) and are ready when
/// their `status.readyReplicas`, if they have one, says so.
async fn look(kube: &Kube, w: &Workload<'_>) -> Result<Option<Seen>, KubeError> {
    let api = w.api(kube);
    let Some(obj) = api
        .get_opt(&w.name)
        .await
        .map_err(|e| KubeError::new("read", w.label(), &e))?
    else {
        return Ok(None);
    };
    let d = &obj.data;
    let spec = int(d.pointer("/spec/replicas")).unwrap_or(1);
    let replicas = if w.kind.custom {
        match api.get_scale(&w.name).await {
            Ok(s) => s.status.map(|s| s.replicas).unwrap_or(0),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(KubeError::new("read the scale of", w.label(), &e)),
        }
    } else {
        int(d.pointer("/status/replicas")).unwrap_or(0)
    };
    let ready =
        int(d.pointer("/status/readyReplicas")).unwrap_or(if w.kind.custom { replicas } else { 0 });
    // Some kinds (Argo Rollouts) keep a hash, not a number, in observedGeneration.
    let current = match (
        d.pointer("/status/observedGeneration")
            .and_then(Value::as_i64),
        obj.metadata.generation,
    ) {
        (Some(seen), Some(generation)) => seen >= generation,
        (None, Some(_)) if !w.kind.custom => false,
        _ => true,
    };
    Ok(Some(Seen {
        spec,
        replicas,
        ready,
        current,
    }))
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
    if let Some(mode) = ctx.execution.enforce {
        return check(ctx, kube, params, mode).await;
    }
    match ctx.execution.operation {
        Operation::Hibernate => hibernate(ctx, kube, params).await,
        Operation::WakeUp => wake(ctx, kube, params).await,
    }
}

/// `batch/v1` CronJobs, suspended for the night.
fn cronjobs() -> Toggled {
    Toggled {
        ar: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("batch", "v1", "CronJob"),
            "cronjobs",
        ),
        noun: "CronJob",
        prefix: key_prefix::CRONJOB,
        field: Field::Suspend,
    }
}

/// `keda.sh/v1alpha1` ScaledObjects, paused for the night.
fn scaled_objects() -> Toggled {
    Toggled {
        ar: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
            "scaledobjects",
        ),
        noun: "KEDA ScaledObject",
        prefix: key_prefix::SCALED_OBJECT,
        field: Field::KedaPaused,
    }
}

/// The scaled kinds of the target, custom ones found through discovery (an unknown kind or
/// one without a scale subresource is a configuration error), and whether CronJobs are chosen.
async fn scaled_kinds(
    kube: &Kube,
    params: &WorkloadsParameters,
) -> Result<(Vec<Scaled>, bool), RunError> {
    let mut scaled = Vec::new();
    let mut cron = false;
    for kind in params.kinds() {
        match kind {
            WorkloadKind::Deployment => scaled.push(Scaled::deployment()),
            WorkloadKind::StatefulSet => scaled.push(Scaled::statefulset()),
            WorkloadKind::CronJob => cron = true,
            WorkloadKind::Scalable(k) => scaled.push(Scaled::discover(kube, &k, &k.version).await?),
        }
        // A kind listed twice is handled once.
        if let Some(last) = scaled.last()
            && scaled[..scaled.len() - 1].contains(last)
        {
            scaled.pop();
        }
    }
    Ok((scaled, cron))
}

/// The ScaledObjects of `namespace` that drive one of `workloads`; none when KEDA is not
/// installed (or the runner may not list them: said, and the workloads are scaled directly).
async fn keda_drivers(
    ctx: &Ctx<'_>,
    kube: &Kube,
    namespace: &str,
    workloads: &[Workload<'_>],
) -> Result<Vec<Object>, RunError> {
    let kind = scaled_objects();
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), namespace, &kind.ar);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            ctx.reporter.warn(format!(
                "may not list KEDA ScaledObjects in namespace {namespace} ({}); a workload KEDA \
                 drives would be scaled up again by KEDA (grant list and patch on \
                 scaledobjects.keda.sh)",
                s.message
            ));
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(KubeError::new(
                "list",
                format!("KEDA ScaledObjects in namespace {namespace}"),
                &e,
            )
            .into());
        }
    };
    let mut out = Vec::new();
    for so in list.items {
        let target = &so.data["spec"]["scaleTargetRef"];
        let Some(name) = target["name"].as_str() else {
            continue;
        };
        // KEDA's defaults: apps/v1 Deployment.
        let target_kind = target["kind"].as_str().unwrap_or("Deployment");
        let target_api = target["apiVersion"].as_str().unwrap_or("apps/v1");
        let group = target_api.rsplit_once('/').map_or("", |(g, _)| g);
        let drives = workloads
            .iter()
            .any(|w| w.name == name && w.kind.ar.kind == target_kind && w.kind.ar.group == group);
        if drives && let Some(so_name) = so.metadata.name {
            ctx.reporter.info(format!(
                "{} {namespace}/{so_name} drives {target_kind} {namespace}/{name}; it is paused \
                 before the workload is scaled",
                kind.noun
            ));
            out.push((namespace.to_string(), so_name));
        }
    }
    Ok(out)
}

/// CronJob names of `namespace` matching `selector`.
async fn list_cronjobs(
    kube: &Kube,
    namespace: &str,
    selector: Option<&Selector>,
) -> Result<Vec<Object>, KubeError> {
    let kind = cronjobs();
    let mut params = ListParams::default();
    if let Some(s) = selector {
        params = params.labels_from(s);
    }
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), namespace, &kind.ar);
    let list = api
        .list_metadata(&params)
        .await
        .map_err(|e| KubeError::new("list", format!("CronJobs in namespace {namespace}"), &e))?;
    let mut names: Vec<Object> = list
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name.map(|n| (namespace.to_string(), n)))
        .collect();
    names.sort();
    Ok(names)
}

/// Everything a hibernation acts on.
struct Found<'k> {
    workloads: Vec<Workload<'k>>,
    cronjobs: Vec<Object>,
    drivers: Vec<Object>,
}

async fn find<'k>(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
    kinds: &'k [Scaled],
    cron: bool,
) -> Result<Found<'k>, RunError> {
    let object_selector = selector("selector", params.selector.as_ref())?;
    let namespaces = namespaces(ctx, kube, params).await?;
    let mut found = Found {
        workloads: Vec::new(),
        cronjobs: Vec::new(),
        drivers: Vec::new(),
    };
    for namespace in &namespaces {
        let first = found.workloads.len();
        for kind in kinds {
            for name in list(kube, kind, namespace, object_selector.as_ref()).await? {
                found.workloads.push(Workload {
                    kind,
                    namespace: namespace.clone(),
                    name,
                });
            }
        }
        if found.workloads.len() > first {
            let drivers = keda_drivers(ctx, kube, namespace, &found.workloads[first..]).await?;
            found.drivers.extend(drivers);
        }
        if cron {
            found
                .cronjobs
                .extend(list_cronjobs(kube, namespace, object_selector.as_ref()).await?);
        }
    }
    let mut names: Vec<String> = kinds.iter().map(|k| k.ar.kind.clone()).collect();
    if cron {
        names.push("CronJob".into());
    }
    let n = found.workloads.len() + found.cronjobs.len();
    ctx.reporter.info(format!(
        "{n} workload{} in {} namespace{} (kinds {}{})",
        if n == 1 { "" } else { "s" },
        namespaces.len(),
        if namespaces.len() == 1 { "" } else { "s" },
        names.join(", "),
        object_selector
            .as_ref()
            .map(|s| format!(", selector {s}"))
            .unwrap_or_default()
    ));
    Ok(found)
}

/// The per-kind tallies of the scaled kinds, in the order of `kinds`.
fn tallies_of(kinds: &[Scaled]) -> Vec<(&str, Tally)> {
    kinds
        .iter()
        .map(|k| (k.ar.kind.as_str(), Tally::default()))
        .collect()
}

fn slot(kinds: &[Scaled], kind: &Scaled) -> usize {
    kinds.iter().position(|k| k == kind).unwrap_or(0)
}

/// What one replica of the workload requests (its pod template's containers, summed), for the
/// savings ledger; `None` when it cannot be read.
async fn sizing_of(kube: &Kube, w: &Workload<'_>, replicas: i32) -> Option<Sizing> {
    let obj = w.api(kube).get(&w.name).await.ok()?;
    let containers = obj
        .data
        .pointer("/spec/template/spec/containers")?
        .as_array()?;
    let (mut cpu, mut memory, mut any) = (0.0, 0.0, false);
    for c in containers {
        let requests = &c["resources"]["requests"];
        if let Some(q) = requests["cpu"].as_str().and_then(quantity) {
            cpu += q;
            any = true;
        }
        if let Some(q) = requests["memory"].as_str().and_then(quantity) {
            memory += q / 1073741824.0;
            any = true;
        }
    }
    Some(Sizing {
        service: Some(Service::Kubernetes),
        cpu: any.then_some(cpu),
        memory_gib: any.then_some(memory),
        count: f64::from(replicas.max(0)),
        ..Sizing::default()
    })
}

/// Records and scales one workload to zero: `None` when it is gone, else whether it changed.
async fn scale_down(
    ctx: &Ctx<'_>,
    kube: &Kube,
    w: &Workload<'_>,
) -> Result<Option<bool>, RunError> {
    let mut attempt = 1;
    loop {
        let Some((replicas, version)) = scale_of(kube, w).await? else {
            return Ok(None);
        };
        if attempt == 1 {
            ctx.reporter
                .info(format!("found {} ({})", w.label(), count(replicas)));
        }
        let sizing = if replicas > 0 {
            sizing_of(kube, w, replicas).await
        } else {
            None
        };
        let (stored, already) = ctx
            .record_sized(&w.key(), &w.record(replicas), sizing.as_ref())
            .await?;
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
            return Ok(Some(false));
        }
        ctx.reporter
            .info(format!("scaling {} from {replicas} to 0", w.label()));
        match scale(kube, w, 0, &version).await {
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

async fn hibernate(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
) -> Result<Outcome, RunError> {
    let (kinds, cron) = scaled_kinds(kube, params).await?;
    let found = find(ctx, kube, params, &kinds, cron).await?;
    ctx.add_total(found.workloads.len() + found.cronjobs.len() + found.drivers.len());

    // KEDA lets go of its workloads before they are scaled, or it would scale them up again.
    let paused = scaled_objects().sleep(ctx, kube, &found.drivers).await?;

    let mut tally = tallies_of(&kinds);
    let mut to_wait = Vec::new();
    for w in found.workloads {
        ctx.check_stop()?;
        let t = &mut tally[slot(&kinds, w.kind)].1;
        t.total += 1;
        match scale_down(ctx, kube, &w).await? {
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
    let suspended = cronjobs().sleep(ctx, kube, &found.cronjobs).await?;

    wait_zero(ctx, kube, &to_wait).await?;

    let changed =
        tally.iter().map(|(_, t)| t.changed).sum::<u32>() + suspended.changed + paused.changed;
    let mut line = summary("scaled to zero", "already at zero", "left alone", &tally);
    if cron {
        line.push_str(&format!(
            "; {}",
            summary(
                "suspended",
                "already suspended",
                "left alone",
                &[("CronJob", suspended)]
            )
        ));
    }
    if paused.total > 0 {
        line.push_str(&format!(
            "; {}",
            summary(
                "paused",
                "already paused",
                "left alone",
                &[("KEDA ScaledObject", paused)]
            )
        ));
    }
    Ok(Outcome {
        summary: line,
        changed,
    })
}

/// Waits, all together, until each workload scaled to zero has no replicas left.
async fn wait_zero(ctx: &Ctx<'_>, kube: &Kube, to_wait: &[Workload<'_>]) -> Result<(), RunError> {
    let futures: Vec<_> = to_wait
        .iter()
        .map(|w| async move {
            let description = format!("{} to have no replicas", w.label());
            let waited = wait::until(ctx.timing, &description, || async move {
                Ok::<_, KubeError>(match look(kube, w).await? {
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
    all(ctx, "workloads", futures).await
}

async fn report_wait(ctx: &Ctx<'_>, w: &Workload<'_>, waited: Waited<Seen>, done: &str) {
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

fn parse_key<'k>(kind: &'k Scaled, id: &str) -> Option<Workload<'k>> {
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
    kube: &Kube,
    w: &Workload<'_>,
    replicas: i32,
) -> Result<Option<bool>, RunError> {
    let mut attempt = 1;
    loop {
        let Some((current, version)) = scale_of(kube, w).await? else {
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
        match scale(kube, w, replicas, &version).await {
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

/// The scaled kinds of the records: Deployments, StatefulSets, and each custom kind of the
/// target's `kinds` (found through discovery at the version it was recorded with). A custom
/// kind the cluster no longer serves leaves its records not found, with the reason.
async fn recorded_kinds(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
    records: &std::collections::BTreeMap<String, String>,
) -> Result<(Vec<Scaled>, Vec<(String, Replicas)>), RunError> {
    let mut kinds = vec![Scaled::deployment(), Scaled::statefulset()];
    let mut unresolved = Vec::new();
    for kind in params.kinds() {
        let WorkloadKind::Scalable(k) = kind else {
            continue;
        };
        let of_kind: Vec<(String, Replicas)> = ctx.records_of(records, &k.key_prefix())?;
        let Some((_, first)) = of_kind.first() else {
            continue;
        };
        let version = first
            .api_version
            .as_deref()
            .and_then(|v| v.rsplit_once('/'))
            .map_or(k.version.clone(), |(_, v)| v.to_string());
        match Scaled::discover(kube, &k, &version).await {
            Ok(scaled) => kinds.push(scaled),
            Err(RunError::Config(e)) => {
                for (id, r) in of_kind {
                    let key = format!("{}:{id}", k.key_prefix());
                    ctx.reporter.warn(format!("{key} not restored: {e}"));
                    unresolved.push((key, r));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((kinds, unresolved))
}

/// The records of a target, read for a wake-up or an in-sleep check.
struct Recorded {
    /// The scaled kinds the records name.
    kinds: Vec<Scaled>,
    /// Records of kinds the cluster no longer serves (keys).
    unresolved: Vec<String>,
    /// `(kind index, namespace, name, replicas)` of each workload record.
    workloads: Vec<(usize, String, String, i32)>,
    cronjobs: Vec<(String, Value)>,
    scaled_objects: Vec<(String, Value)>,
}

impl Recorded {
    /// Reads the target's records; records of other targets' kinds are reported and left, a
    /// key this runner cannot read fails alone (its record is kept).
    async fn read(
        ctx: &Ctx<'_>,
        kube: &Kube,
        params: &WorkloadsParameters,
    ) -> Result<Self, RunError> {
        let records = ctx.fetch().await?;
        let prefixes = hibernator_api::restore::key_prefixes(
            &hibernator_api::TargetParameters::Workloads(params.clone()),
        );
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        ctx.ignore_other_records(&records, &prefixes);
        let (kinds, unresolved) = recorded_kinds(ctx, kube, params, &records).await?;
        let mut workloads = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            for (id, r) in ctx.records_of::<Replicas>(&records, &kind.prefix)? {
                match parse_key(kind, &id) {
                    Some(w) => workloads.push((i, w.namespace, w.name, r.replicas)),
                    None => {
                        let key = format!("{}:{id}", kind.prefix);
                        let message =
                            "its key is not <kind>:<namespace>/<name>; the record is kept";
                        ctx.reporter
                            .warn(format!("ignoring restore record {key}: {message}"));
                        ctx.outcome(&key, ResourceOutcome::Failed(message.into()));
                    }
                }
            }
        }
        let recorded = Self {
            cronjobs: ctx.records_of(&records, key_prefix::CRONJOB)?,
            scaled_objects: ctx.records_of(&records, key_prefix::SCALED_OBJECT)?,
            unresolved: unresolved.into_iter().map(|(key, _)| key).collect(),
            kinds,
            workloads,
        };
        ctx.add_total(
            recorded.workloads.len()
                + recorded.unresolved.len()
                + recorded.cronjobs.len()
                + recorded.scaled_objects.len(),
        );
        Ok(recorded)
    }

    /// Each workload record with its replicas.
    fn workloads(&self) -> Vec<(Workload<'_>, i32)> {
        self.workloads
            .iter()
            .map(|(i, namespace, name, replicas)| {
                let w = Workload {
                    kind: &self.kinds[*i],
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                (w, *replicas)
            })
            .collect()
    }
}

async fn wake(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
) -> Result<Outcome, RunError> {
    let r = Recorded::read(ctx, kube, params).await?;
    let (kinds, unresolved) = (&r.kinds, &r.unresolved);
    let (cron_records, keda_records) = (&r.cronjobs, &r.scaled_objects);
    let recorded = r.workloads();
    for key in unresolved {
        ctx.not_found(key, "its kind").await;
    }

    let mut tally = tallies_of(kinds);
    let mut to_wait = Vec::new();
    for (w, replicas) in recorded {
        ctx.check_stop()?;
        let t = &mut tally[slot(kinds, w.kind)].1;
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
        match scale_back(ctx, kube, &w, replicas).await {
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
            Err(e) if e.is_stop() => return Err(e),
            Err(e) => {
                t.failed += 1;
                ctx.failed(&w.key(), &e).await;
            }
        }
    }
    wait_ready(ctx, kube, &to_wait).await?;
    // The waits' outcomes: vanished or failed workloads are no longer counted as scaled.
    for (w, _) in &to_wait {
        let t = &mut tally[slot(kinds, w.kind)].1;
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
    // CronJobs run again, and KEDA takes its workloads back once they are up.
    let crons = cronjobs().restore(ctx, kube, cron_records).await?;
    let keda = scaled_objects().restore(ctx, kube, keda_records).await?;

    let changed = tally.iter().map(|(_, t)| t.changed).sum::<u32>() + crons.changed + keda.changed;
    let nothing = tally.iter().all(|(_, t)| t.total == 0)
        && crons.total == 0
        && keda.total == 0
        && unresolved.is_empty();
    let summary = if nothing {
        "nothing to wake up: no restore data recorded for this target".to_string()
    } else {
        let mut parts = vec![summary(
            "restored",
            "already restored",
            "left at zero as before hibernation",
            &tally,
        )];
        if crons.total > 0 {
            parts.push(summary(
                "restored",
                "already as recorded",
                "left alone",
                &[("CronJob", crons)],
            ));
        }
        if keda.total > 0 {
            parts.push(summary(
                "restored",
                "already as recorded",
                "left alone",
                &[("KEDA ScaledObject", keda)],
            ));
        }
        if !unresolved.is_empty() {
            parts.push(format!(
                "{} record{} of kinds the cluster no longer serves",
                unresolved.len(),
                if unresolved.len() == 1 { "" } else { "s" }
            ));
        }
        parts.join("; ")
    };
    Ok(Outcome { summary, changed })
}

/// In-sleep check: every workload this operator scaled to zero still has no replicas, every
/// CronJob it suspended is still suspended and every ScaledObject it paused is still paused.
/// `Reapply` pauses KEDA first (it would scale its workloads up again), scales drifted
/// workloads to zero again (their records of the night kept) and suspends CronJobs again.
async fn check(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &WorkloadsParameters,
    mode: hibernator_api::plan::EnforceMode,
) -> Result<Outcome, RunError> {
    let r = Recorded::read(ctx, kube, params).await?;
    for key in &r.unresolved {
        ctx.check_not_found(key, "its kind").await;
    }
    let keda = scaled_objects()
        .check(ctx, kube, &r.scaled_objects, mode)
        .await?;
    let mut tally = tallies_of(&r.kinds);
    let mut to_wait = Vec::new();
    for (w, replicas) in r.workloads() {
        ctx.check_stop()?;
        let t = &mut tally[slot(&r.kinds, w.kind)].1;
        t.total += 1;
        match check_workload(ctx, kube, &w, replicas, mode).await {
            Ok(Checked::Asleep) => t.already += 1,
            Ok(Checked::Drifted) => t.left += 1,
            Ok(Checked::Reapplied) => {
                t.changed += 1;
                to_wait.push(w);
            }
            Ok(Checked::Gone) => {
                t.missing += 1;
                ctx.check_not_found(&w.key(), &w.label()).await;
            }
            Err(e) if e.is_stop() => return Err(e),
            Err(e) => {
                t.failed += 1;
                ctx.check_failed(&w.key(), &e).await;
            }
        }
    }
    wait_zero(ctx, kube, &to_wait).await?;
    let crons = cronjobs().check(ctx, kube, &r.cronjobs, mode).await?;
    tally.push(("CronJob", crons));
    tally.push(("KEDA ScaledObject", keda));
    let unresolved = Tally {
        total: r.unresolved.len() as u32,
        missing: r.unresolved.len() as u32,
        ..Tally::default()
    };
    tally.push(("unserved-kind record", unresolved));
    Ok(Outcome {
        summary: super::check_summary(mode, &tally),
        changed: tally.iter().map(|(_, t)| t.changed).sum(),
    })
}

/// What an in-sleep check found of one workload.
enum Checked {
    Asleep,
    Drifted,
    Reapplied,
    Gone,
}

/// Checks one recorded workload (`replicas` before the night; one that had none is not ours
/// to keep at zero) and, under `Reapply`, scales it to zero again.
async fn check_workload(
    ctx: &Ctx<'_>,
    kube: &Kube,
    w: &Workload<'_>,
    replicas: i32,
    mode: hibernator_api::plan::EnforceMode,
) -> Result<Checked, RunError> {
    if replicas == 0 {
        ctx.outcome(&w.key(), ResourceOutcome::Asleep);
        return Ok(Checked::Asleep);
    }
    let Some((now, _)) = scale_of(kube, w).await? else {
        return Ok(Checked::Gone);
    };
    if now == 0 {
        ctx.reporter
            .info(format!("{} has 0 replicas, as it should", w.label()));
        ctx.outcome(&w.key(), ResourceOutcome::Asleep);
        ctx.progress(&format!("{} asleep", w.label()), true).await;
        return Ok(Checked::Asleep);
    }
    let found = count(now);
    ctx.reporter.warn(format!(
        "{} has {found} although it was scaled to zero in cycle {}: drifted",
        w.label(),
        ctx.execution.cycle_id
    ));
    if mode != hibernator_api::plan::EnforceMode::Reapply {
        ctx.outcome(&w.key(), ResourceOutcome::Drifted(found.clone()));
        ctx.progress(&format!("{} drifted ({found})", w.label()), true)
            .await;
        return Ok(Checked::Drifted);
    }
    // The record of the night is kept: the hibernation path records first and the first
    // record wins.
    match scale_down(ctx, kube, w).await? {
        None => Ok(Checked::Gone),
        Some(changed) => {
            ctx.outcome(
                &w.key(),
                if changed {
                    ResourceOutcome::Reapplied(found)
                } else {
                    ResourceOutcome::Asleep
                },
            );
            Ok(if changed {
                Checked::Reapplied
            } else {
                Checked::Asleep
            })
        }
    }
}

/// Waits, all together, until each scaled-back workload has its replicas ready; each outcome
/// is noted.
async fn wait_ready(
    ctx: &Ctx<'_>,
    kube: &Kube,
    to_wait: &[(Workload<'_>, i32)],
) -> Result<(), RunError> {
    let futures: Vec<_> = to_wait
        .iter()
        .map(|(w, replicas)| async move {
            let description = format!("{} to have {replicas} ready replicas", w.label());
            let waited = wait::until(ctx.timing, &description, || async move {
                Ok::<_, KubeError>(match look(kube, w).await? {
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
    all(ctx, "workloads", futures).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_kind_namespace_and_name() {
        let kind = Scaled::statefulset();
        let w = Workload {
            kind: &kind,
            namespace: "team-a".into(),
            name: "db".into(),
        };
        assert_eq!(w.key(), "statefulset:team-a/db");
        assert_eq!(w.label(), "StatefulSet team-a/db");
        assert_eq!(parse_key(&kind, "team-a/db"), Some(w.clone()));
        assert_eq!(parse_key(&kind, "no-slash"), None);
        assert_eq!(
            serde_json::to_string(&w.record(3)).unwrap(),
            r#"{"replicas":3}"#
        );
        let rollout = Scaled {
            prefix: "rollout.argoproj.io".into(),
            ar: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
                "rollouts",
            ),
            custom: true,
        };
        let r = Workload {
            kind: &rollout,
            namespace: "team-a".into(),
            name: "web".into(),
        };
        assert_eq!(r.key(), "rollout.argoproj.io:team-a/web");
        assert_eq!(
            serde_json::to_string(&r.record(2)).unwrap(),
            r#"{"replicas":2,"apiVersion":"argoproj.io/v1alpha1"}"#
        );
    }
}
