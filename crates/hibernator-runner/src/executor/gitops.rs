//! `gitops`: Flux Kustomizations and HelmReleases, and Argo CD Applications, whose
//! reconciliation is paused while the plan sleeps, so that Git does not scale back up what the
//! plan's other targets put to sleep. In a plan it sleeps first and wakes last (a dependency
//! `gitops -> workloads`).
//!
//! Hibernate records each object's setting exactly (`kustomization:<ns>/<name>`:
//! `{"suspend": false}`, `null` when absent; `application:<ns>/<name>`: `{"automated": {...}}`,
//! `null` when it had none), then suspends Flux objects (`spec.suspend: true`, server-side apply
//! as field manager `hibernator-runner`, as `flux suspend` does) and removes the Applications'
//! `spec.syncPolicy.automated` (no automated sync, self-heal or prune). Wake-up writes back
//! exactly what was recorded: an object that was already suspended stays suspended.

use std::collections::BTreeSet;

use hibernator_api::Operation;
use hibernator_api::params::{GitopsParameters, NamespacedName};
use hibernator_api::restore::key_prefix;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind, Selector};
use serde_json::Value;

use super::toggle::{Field, Object, Toggled};
use super::{Ctx, KubeError, Outcome, RunError, Tally, summary};
use crate::config::ConfigError;
use crate::k8s::{Kube, is_not_found};

/// `kustomize.toolkit.fluxcd.io/v1` Kustomization.
pub fn kustomizations() -> Toggled {
    Toggled {
        ar: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
            "kustomizations",
        ),
        noun: "Kustomization",
        prefix: key_prefix::KUSTOMIZATION,
        field: Field::Suspend,
    }
}

/// `helm.toolkit.fluxcd.io/v2` HelmRelease.
pub fn helm_releases() -> Toggled {
    Toggled {
        ar: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
            "helmreleases",
        ),
        noun: "HelmRelease",
        prefix: key_prefix::HELM_RELEASE,
        field: Field::Suspend,
    }
}

/// `argoproj.io/v1alpha1` Application.
pub fn applications() -> Toggled {
    Toggled {
        ar: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
            "applications",
        ),
        noun: "Application",
        prefix: key_prefix::APPLICATION,
        field: Field::ArgoAutomated,
    }
}

/// Runs a `gitops` target.
pub async fn run(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &GitopsParameters,
) -> Result<Outcome, RunError> {
    if let Some(mode) = ctx.execution.enforce {
        return check(ctx, kube, mode).await;
    }
    match ctx.execution.operation {
        Operation::Hibernate => hibernate(ctx, kube, params).await,
        Operation::WakeUp => wake(ctx, kube).await,
    }
}

fn selector(field: &'static str, s: Option<&LabelSelector>) -> Result<Option<Selector>, RunError> {
    let Some(s) = s else { return Ok(None) };
    let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        // An empty selector would pause every Flux object or Application of the cluster,
        // Flux's own included: never what a plan means.
        return Err(ConfigError::Selector {
            field,
            message: "an empty selector would select every object of the cluster; give \
                      matchLabels or matchExpressions, or name the objects"
                .into(),
        }
        .into());
    }
    Selector::try_from(s.clone()).map(Some).map_err(|e| {
        ConfigError::Selector {
            field,
            message: e.to_string(),
        }
        .into()
    })
}

/// The objects of one kind: the named ones that exist (the others are reported and counted)
/// and those the selector matches in any namespace, each once, in order.
async fn resolve(
    ctx: &Ctx<'_>,
    kube: &Kube,
    kind: &Toggled,
    named: Option<&Vec<NamespacedName>>,
    selector: Option<&Selector>,
) -> Result<(Vec<Object>, u32), RunError> {
    let mut found = BTreeSet::new();
    let mut missing = 0;
    for n in named.into_iter().flatten() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube.client.clone(), &n.namespace, &kind.ar);
        let o = (n.namespace.clone(), n.name.clone());
        match api.get_metadata(&n.name).await {
            Ok(_) => {
                found.insert(o);
            }
            // The object, or its kind (Flux or Argo CD not installed), does not exist.
            Err(e) if is_not_found(&e) => {
                ctx.reporter
                    .warn(format!("{} does not exist; skipped", kind.label(&o)));
                missing += 1;
            }
            Err(e) => return Err(KubeError::new("read", kind.label(&o), &e).into()),
        }
    }
    if let Some(sel) = selector {
        let api: Api<DynamicObject> = Api::all_with(kube.client.clone(), &kind.ar);
        match api
            .list_metadata(&ListParams::default().labels_from(sel))
            .await
        {
            Ok(list) => {
                let before = found.len();
                for item in list.items {
                    if let (Some(ns), Some(name)) = (item.metadata.namespace, item.metadata.name) {
                        found.insert((ns, name));
                    }
                }
                let n = found.len() - before;
                ctx.reporter.info(format!(
                    "selector {sel} selects {n} more {}{}",
                    kind.noun,
                    if n == 1 { "" } else { "s" }
                ));
            }
            // The kind is not served: Flux or Argo CD is not installed in this cluster.
            Err(e) if is_not_found(&e) => ctx.reporter.warn(format!(
                "this cluster serves no {} ({}); the selector selects none",
                kind.ar.kind, kind.ar.api_version
            )),
            Err(e) => {
                return Err(KubeError::new("list", format!("{}s", kind.noun), &e).into());
            }
        }
    }
    Ok((found.into_iter().collect(), missing))
}

async fn hibernate(
    ctx: &Ctx<'_>,
    kube: &Kube,
    params: &GitopsParameters,
) -> Result<Outcome, RunError> {
    let flux = params.flux.clone().unwrap_or_default();
    let argo = params.argocd.clone().unwrap_or_default();
    let flux_selector = selector("flux.selector", flux.selector.as_ref())?;
    let argo_selector = selector("argocd.selector", argo.selector.as_ref())?;
    let mut plan = Vec::new();
    if params.flux.is_some() {
        plan.push((
            kustomizations(),
            flux.kustomizations.as_ref(),
            flux_selector.as_ref(),
        ));
        plan.push((
            helm_releases(),
            flux.helm_releases.as_ref(),
            flux_selector.as_ref(),
        ));
    }
    if params.argocd.is_some() {
        plan.push((
            applications(),
            argo.applications.as_ref(),
            argo_selector.as_ref(),
        ));
    }
    // Every object is found before the first is paused, so that a typo fails nothing half-way.
    let mut resolved = Vec::new();
    for (kind, named, sel) in plan {
        let (objects, missing) = resolve(ctx, kube, &kind, named, sel).await?;
        ctx.add_total(objects.len());
        resolved.push((kind, objects, missing));
    }
    let mut tallies = Vec::new();
    for (kind, objects, missing) in &resolved {
        let mut t = kind.sleep(ctx, kube, objects).await?;
        t.total += missing;
        t.missing += missing;
        tallies.push((kind.noun, t));
    }
    let changed = tallies.iter().map(|(_, t)| t.changed).sum();
    Ok(Outcome {
        summary: summary("paused", "already paused", "left alone", &tallies),
        changed,
    })
}

/// The target's records by kind (wake-up and in-sleep check); others are reported and left.
async fn recorded(ctx: &Ctx<'_>) -> Result<Vec<(Toggled, Vec<(String, Value)>)>, RunError> {
    let records = ctx.fetch().await?;
    let kinds = [kustomizations(), helm_releases(), applications()];
    let prefixes: Vec<&str> = kinds.iter().map(|k| k.prefix).collect();
    ctx.ignore_other_records(&records, &prefixes);
    let mut per_kind = Vec::new();
    for kind in kinds {
        let of_kind: Vec<(String, Value)> = ctx.records_of(&records, kind.prefix)?;
        ctx.add_total(of_kind.len());
        per_kind.push((kind, of_kind));
    }
    Ok(per_kind)
}

/// In-sleep check: each object this operator paused is still paused (suspended, automated
/// sync off); `Reapply` pauses a resumed one again, its record of the night kept.
async fn check(
    ctx: &Ctx<'_>,
    kube: &Kube,
    mode: hibernator_api::plan::EnforceMode,
) -> Result<Outcome, RunError> {
    let mut tallies: Vec<(&str, Tally)> = Vec::new();
    for (kind, of_kind) in &recorded(ctx).await? {
        tallies.push((kind.noun, kind.check(ctx, kube, of_kind, mode).await?));
    }
    Ok(Outcome {
        summary: super::check_summary(mode, &tallies),
        changed: tallies.iter().map(|(_, t)| t.changed).sum(),
    })
}

async fn wake(ctx: &Ctx<'_>, kube: &Kube) -> Result<Outcome, RunError> {
    let mut tallies: Vec<(&str, Tally)> = Vec::new();
    for (kind, of_kind) in &recorded(ctx).await? {
        tallies.push((kind.noun, kind.restore(ctx, kube, of_kind).await?));
    }
    let changed = tallies.iter().map(|(_, t)| t.changed).sum();
    let summary = if tallies.iter().all(|(_, t)| t.total == 0) {
        "nothing to wake up: no restore data recorded for this target".to_string()
    } else {
        summary("restored", "already as recorded", "left alone", &tallies)
    };
    Ok(Outcome { summary, changed })
}
