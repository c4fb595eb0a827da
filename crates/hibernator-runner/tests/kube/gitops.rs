//! `gitops` targets against the real API server with the real CRDs of Flux
//! (kustomize-controller's Kustomization, helm-controller's HelmRelease) and Argo CD
//! (Application), fetched from their Go modules by `tools/crds/fetch.sh`. No Flux or Argo CD
//! controller runs: the tests prove what the runner records and writes, field by field.

use anyhow::{Context as _, Result};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::common::*;

pub const FLUX_ARGO_CRDS: &[&str] = &[
    "kustomizations.kustomize.toolkit.fluxcd.io",
    "helmreleases.helm.toolkit.fluxcd.io",
    "applications.argoproj.io",
];

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn kustomizations() -> ApiResource {
    resource(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    )
}

pub fn helm_releases() -> ApiResource {
    resource(
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    )
}

pub fn applications() -> ApiResource {
    resource("argoproj.io", "v1alpha1", "Application", "applications")
}

/// Server-side apply as a GitOps tool's field manager would.
pub async fn apply_as(kit: &Kit, manager: &str, ar: &ApiResource, obj: Value) -> Result<()> {
    let name = obj["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(kit.client.clone(), &kit.ns, ar);
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("failed to apply {} {name}", ar.kind))?;
    Ok(())
}

pub fn kustomization(ns: &str, name: &str, suspend: Option<bool>) -> Value {
    let mut o = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"interval": "10m", "path": format!("./apps/{name}"), "prune": true,
                 "sourceRef": {"kind": "GitRepository", "name": "platform"}},
    });
    if let Some(s) = suspend {
        o["spec"]["suspend"] = json!(s);
    }
    o
}

pub fn helm_release(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"interval": "5m", "releaseName": name,
                 "chart": {"spec": {"chart": name, "version": "19.x",
                                    "sourceRef": {"kind": "HelmRepository", "name": "bitnami"}}}},
    })
}

pub fn application(ns: &str, name: &str, automated: Option<Value>, labels: Value) -> Value {
    let mut sync = json!({"syncOptions": ["CreateNamespace=true"], "retry": {"limit": 3}});
    if let Some(a) = automated {
        sync["automated"] = a;
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://git.example.com/platform.git", "path": format!("apps/{name}"), "targetRevision": "main"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
                 "syncPolicy": sync},
    })
}

pub async fn get(kit: &Kit, ar: &ApiResource, name: &str) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(kit.client.clone(), &kit.ns, ar);
    Ok(api.get(name).await?)
}

/// `spec.suspend` of a Flux object (`None`: absent).
pub async fn suspend(kit: &Kit, ar: &ApiResource, name: &str) -> Result<Option<Value>> {
    Ok(get(kit, ar, name)
        .await?
        .data
        .pointer("/spec/suspend")
        .cloned())
}

/// `spec.syncPolicy` of an Application.
pub async fn sync_policy(kit: &Kit, name: &str) -> Result<Value> {
    Ok(get(kit, &applications(), name).await?.data["spec"]["syncPolicy"].clone())
}

async fn setup(kit: &Kit) -> Result<()> {
    kube_testbed::crds::install_third_party_crds(&kit.client, FLUX_ARGO_CRDS).await?;
    let ns = kit.ns.as_str();
    let flux = "kustomize-controller";
    apply_as(
        kit,
        flux,
        &kustomizations(),
        kustomization(ns, "apps", None),
    )
    .await?;
    apply_as(
        kit,
        flux,
        &kustomizations(),
        kustomization(ns, "infra", Some(false)),
    )
    .await?;
    apply_as(
        kit,
        flux,
        &kustomizations(),
        kustomization(ns, "frozen", Some(true)),
    )
    .await?;
    apply_as(
        kit,
        "helm-controller",
        &helm_releases(),
        helm_release(ns, "redis", json!({"pause-with": ns})),
    )
    .await?;
    let argo = "argocd-controller";
    apply_as(
        kit,
        argo,
        &applications(),
        application(
            ns,
            "web",
            Some(json!({"prune": true, "selfHeal": true})),
            json!({}),
        ),
    )
    .await?;
    apply_as(
        kit,
        argo,
        &applications(),
        application(ns, "manual", None, json!({"pause-with": ns})),
    )
    .await?;
    Ok(())
}

fn params(ns: &str) -> Value {
    json!({
        "flux": {"kustomizations": [{"namespace": ns, "name": "apps"}, {"namespace": ns, "name": "infra"},
                                    {"namespace": ns, "name": "frozen"}, {"namespace": ns, "name": "gone"}],
                 "selector": {"matchLabels": {"pause-with": ns}}},
        "argocd": {"applications": [{"namespace": ns, "name": "web"}],
                   "selector": {"matchLabels": {"pause-with": ns}}},
    })
}

/// What every object looks like, in one value.
async fn state(kit: &Kit) -> Result<Value> {
    Ok(json!({
        "apps": suspend(kit, &kustomizations(), "apps").await?,
        "infra": suspend(kit, &kustomizations(), "infra").await?,
        "frozen": suspend(kit, &kustomizations(), "frozen").await?,
        "redis": suspend(kit, &helm_releases(), "redis").await?,
        "web": sync_policy(kit, "web").await?,
        "manual": sync_policy(kit, "manual").await?,
    }))
}

/// Hibernation records each object's setting exactly (absent as null), suspends the Flux
/// objects with server-side apply as `hibernator-runner` (taking `spec.suspend` from the GitOps
/// tool's field manager) and removes the Applications' automated sync; a second run changes
/// nothing; wake-up puts back exactly what was there, the already suspended Kustomization
/// staying suspended and absent fields removed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_objects_are_paused_and_restored_exactly() -> Result<()> {
    let kit = Kit::new("gitops").await?;
    let ns = kit.ns.clone();
    setup(&kit).await?;
    let before = state(&kit).await?;
    assert_eq!(before["apps"], Value::Null);
    assert_eq!(
        before["web"]["automated"],
        json!({"prune": true, "selfHeal": true})
    );

    let ran = kit
        .runner("gitops", "pause-git", "hibernate")
        .param(params(&ns))
        .run()
        .await?
        .ok();
    assert!(
        ran.done().starts_with(
            "done: paused 2 of 4 Kustomizations and 1 of 1 HelmReleases and 1 of 2 Applications \
             (2 already paused, 1 no longer there) in "
        ),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!("Kustomization {ns}/gone does not exist; skipped")),
        "{}",
        ran.stdout
    );
    let records = kit.records();
    let record = |k: &str| records.get(k).cloned().unwrap_or(Value::Null);
    assert_eq!(
        record(&format!("kustomization:{ns}/apps")),
        json!({"suspend": null})
    );
    assert_eq!(
        record(&format!("kustomization:{ns}/infra")),
        json!({"suspend": false})
    );
    assert_eq!(
        record(&format!("kustomization:{ns}/frozen")),
        json!({"suspend": true})
    );
    assert_eq!(
        record(&format!("helmrelease:{ns}/redis")),
        json!({"suspend": null})
    );
    assert_eq!(
        record(&format!("application:{ns}/web")),
        json!({"automated": {"prune": true, "selfHeal": true}})
    );
    assert_eq!(
        record(&format!("application:{ns}/manual")),
        json!({"automated": null})
    );
    assert_eq!(records.len(), 6, "{records:#?}");

    let asleep = state(&kit).await?;
    for name in ["apps", "infra", "frozen", "redis"] {
        assert_eq!(asleep[name], json!(true), "{name}: {asleep:#}");
    }
    // Only `automated` went; the rest of the sync policy is as Git has it.
    assert_eq!(
        asleep["web"],
        json!({"syncOptions": ["CreateNamespace=true"], "retry": {"limit": 3}})
    );
    assert_eq!(asleep["manual"], before["manual"]);
    // `spec.suspend` of the Kustomization now belongs to the runner's field manager, as after
    // `flux suspend`; the rest stays with kustomize-controller.
    let k = get(&kit, &kustomizations(), "apps").await?;
    let managers: Vec<(String, String)> = k
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let fields = m.fields_v1.map(|f| f.0.to_string()).unwrap_or_default();
            (m.manager.unwrap_or_default(), fields)
        })
        .collect();
    let runner = managers
        .iter()
        .find(|(m, _)| m == "hibernator-runner")
        .context("hibernator-runner manages a field")?;
    assert!(runner.1.contains("f:suspend"), "{managers:?}");
    let flux = managers
        .iter()
        .find(|(m, _)| m == "kustomize-controller")
        .context("kustomize-controller still manages the rest")?;
    assert!(
        flux.1.contains("f:sourceRef") && !flux.1.contains("f:suspend"),
        "{managers:?}"
    );

    // Every write of the runner was a patch the API server accepted.
    let writes: Vec<(String, String, Option<u16>)> = kit
        .runner_writes()?
        .into_iter()
        .map(|e| {
            let r = e.object_ref.clone().unwrap_or_default();
            (
                e.verb.clone(),
                format!(
                    "{}/{}",
                    r.resource.unwrap_or_default(),
                    r.name.unwrap_or_default()
                ),
                e.response_status.as_ref().and_then(|s| s.code),
            )
        })
        .collect();
    let mut expected = vec![
        (
            "patch".to_string(),
            "applications/web".to_string(),
            Some(200),
        ),
        (
            "patch".to_string(),
            "kustomizations/apps".to_string(),
            Some(200),
        ),
        (
            "patch".to_string(),
            "kustomizations/infra".to_string(),
            Some(200),
        ),
        (
            "patch".to_string(),
            "helmreleases/redis".to_string(),
            Some(200),
        ),
    ];
    let mut got = writes.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);

    // Again: nothing to do, the records stay.
    let again = kit
        .runner("gitops", "pause-git", "hibernate")
        .param(params(&ns))
        .run()
        .await?
        .ok();
    assert!(
        again.done().starts_with("done: paused 0 of 4"),
        "{}",
        again.stdout
    );
    assert_eq!(kit.records(), records);
    assert_eq!(kit.runner_writes()?.len(), writes.len(), "no new write");

    // Wake-up: exactly as before.
    let woke = kit
        .runner("gitops", "pause-git", "wakeUp")
        .param(params(&ns))
        .run()
        .await?
        .ok();
    assert!(
        woke.done().starts_with(
            "done: restored 2 of 3 Kustomizations and 1 of 1 HelmReleases and 1 of 2 Applications \
             (2 already as recorded) in "
        ),
        "{}",
        woke.stdout
    );
    assert_eq!(state(&kit).await?, before);
    Ok(())
}

/// In-sleep checks of a `gitops` target: someone resumes a Kustomization and turns automated
/// sync back on while the plan sleeps. `Report` names both and changes nothing; `Reapply`
/// pauses them again with the night's records kept; objects that were paused before the night
/// are not ours to keep paused; the wake-up restores what the night recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_checks_report_then_reapply_what_was_resumed() -> Result<()> {
    use hibernator_proto::v1::resource_result::Result as R;
    let kit = Kit::new("gitops-check").await?;
    let ns = kit.ns.clone();
    setup(&kit).await?;
    let before = state(&kit).await?;
    kit.runner("gitops", "pause-git", "hibernate")
        .param(params(&ns))
        .run()
        .await?
        .ok();
    let night = kit.records();
    let (slept, slept_changes) = (kit.runner_writes()?.len(), kit.runner_changes()?.len());
    // Resumed by hand while asleep, as `flux resume` and an Argo CD user would.
    apply_as(
        &kit,
        "kustomize-controller",
        &kustomizations(),
        kustomization(&ns, "apps", Some(false)),
    )
    .await?;
    apply_as(
        &kit,
        "argocd-controller",
        &applications(),
        application(
            &ns,
            "web",
            Some(json!({"prune": true, "selfHeal": true})),
            json!({}),
        ),
    )
    .await?;
    let p = params(&ns);
    let check = |mode: &'static str| kit.check("gitops", "pause-git", mode, &p);
    let mut expected = vec![
        ("application:NS/manual".to_string(), R::Asleep),
        ("application:NS/web".to_string(), R::Drifted),
        ("helmrelease:NS/redis".to_string(), R::Asleep),
        ("kustomization:NS/apps".to_string(), R::Drifted),
        ("kustomization:NS/frozen".to_string(), R::Asleep),
        ("kustomization:NS/infra".to_string(), R::Asleep),
    ];

    let report = check("Report").await?;
    assert_eq!(
        report.summary(),
        "checked 3 Kustomizations and 1 HelmRelease and 2 Applications: \
         4 asleep, 2 awake (drifted; left as found)",
        "{}",
        report.stdout
    );
    assert_eq!(last_results(&kit), expected);
    assert_eq!(kit.runner_writes()?.len(), slept, "Report writes nothing");
    assert_eq!(
        suspend(&kit, &kustomizations(), "apps").await?,
        Some(json!(false))
    );

    let reapply = check("Reapply").await?;
    assert_eq!(
        reapply.summary(),
        "checked 3 Kustomizations and 1 HelmRelease and 2 Applications: \
         4 asleep, 2 put back to sleep",
        "{}",
        reapply.stdout
    );
    for (_, r) in expected.iter_mut() {
        if *r == R::Drifted {
            *r = R::Reapplied;
        }
    }
    assert_eq!(last_results(&kit), expected);
    assert_eq!(
        suspend(&kit, &kustomizations(), "apps").await?,
        Some(json!(true))
    );
    assert_eq!(sync_policy(&kit, "web").await?.get("automated"), None);
    assert_eq!(kit.records(), night, "the night's records are kept");
    assert_eq!(
        kit.runner_changes()?.len(),
        slept_changes + 2,
        "one change per drifted object"
    );

    kit.runner("gitops", "pause-git", "wakeUp")
        .param(params(&ns))
        .run()
        .await?
        .ok();
    assert_eq!(state(&kit).await?, before);
    Ok(())
}

/// SIGKILL the runner at each write-ahead step of a hibernation (the record is stored but its
/// acknowledgement never arrives), run it again, then wake up: the settings recorded before
/// the first change survive, and every object gets exactly its setting back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_record_a_rerun_and_a_wake_up_restore_the_settings() -> Result<()> {
    use hibernator_proto::testing::{FakeController, Rpc};

    let kit = Kit::new("gitops-killed").await?;
    let ns = kit.ns.clone();
    setup(&kit).await?;
    let before = state(&kit).await?;
    let params = json!({
        "flux": {"kustomizations": [{"namespace": ns, "name": "apps"}, {"namespace": ns, "name": "infra"}]},
        "argocd": {"applications": [{"namespace": ns, "name": "web"}]},
    });
    // Records are made in this order: Kustomizations apps, infra, then Application web.
    let asleep = |s: &Value, i: usize| match i {
        0 => s["apps"] == json!(true),
        1 => s["infra"] == json!(true),
        _ => s["web"].get("automated").is_none(),
    };
    for n in 1..=3 {
        let controller = FakeController::start(TOKEN, CYCLE).await?;
        controller.stall_at(Rpc::RecordRestoreState, n);
        let mut child = kit
            .runner("gitops", "pause-git", "hibernate")
            .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
            .env("HIBERNATOR_CONTROLLER_TIMEOUT_SECONDS", "60")
            .param(params.clone())
            .spawn()?;
        tokio::select! {
            _ = controller.stalled() => {}
            status = child.wait() => anyhow::bail!("the runner ended before record {n}: {:?}", status?),
        }
        child.start_kill()?;
        child.wait().await?;
        let s = state(&kit).await?;
        for i in 0..3 {
            assert_eq!(
                asleep(&s, i),
                i + 1 < n,
                "kill #{n}: object {i} is paused exactly when its record was acknowledged: {s:#}"
            );
        }
        controller.no_stall();
        let recorded = controller.records();
        kit.runner("gitops", "pause-git", "hibernate")
            .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
            .param(params.clone())
            .run()
            .await?
            .ok();
        let after = controller.records();
        for (key, value) in &recorded {
            assert_eq!(after.get(key), Some(value), "kill #{n}: record {key} kept");
        }
        let s = state(&kit).await?;
        assert!((0..3).all(|i| asleep(&s, i)), "kill #{n}: {s:#}");
        kit.runner("gitops", "pause-git", "wakeUp")
            .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
            .param(params.clone())
            .run()
            .await?
            .ok();
        assert_eq!(state(&kit).await?, before, "kill #{n}");
    }
    Ok(())
}

/// Bad input fails before anything changes, naming the field: an empty selector (it would
/// pause every Flux object of the cluster, Flux's own included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_selector_is_refused_before_any_change() -> Result<()> {
    let kit = Kit::new("gitops-empty").await?;
    kube_testbed::crds::install_third_party_crds(&kit.client, FLUX_ARGO_CRDS).await?;
    let ran = kit
        .runner("gitops", "pause-git", "hibernate")
        .param(json!({"flux": {"selector": {}}}))
        .run()
        .await?
        .failed(2);
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("error: parameters.flux.selector is not a valid label selector")),
        "{ran:#?}"
    );
    assert!(kit.records().is_empty());
    assert!(kit.runner_writes()?.is_empty());
    Ok(())
}
