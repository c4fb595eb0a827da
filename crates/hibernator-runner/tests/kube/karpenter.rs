//! Karpenter targets against the real API server, with minimal `karpenter.sh/v1` NodePool and
//! NodeClaim CRDs (both cluster-scoped, as in Karpenter v1; `spec.limits` typed as Karpenter
//! types it, everything else preserved). No Karpenter controller runs: the tests check what the
//! runner writes, and play Karpenter's part where it matters (a NodeClaim held by a finalizer
//! while its node drains).

use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::common::*;

fn crd(kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.karpenter.sh")},
        "spec": {
            "group": "karpenter.sh",
            "scope": "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"limits": {
                                "type": "object",
                                "additionalProperties": {
                                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                                    "x-kubernetes-int-or-string": true,
                                },
                            }},
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    })
}

async fn install_crds() -> Result<()> {
    static DONE: OnceCell<std::result::Result<(), String>> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        async {
            let cluster = cluster().await?;
            let client = cluster.client()?;
            for (kind, plural) in [("NodePool", "nodepools"), ("NodeClaim", "nodeclaims")] {
                apply(&client, &crd(kind, plural)).await?;
                let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
                    Api::all(client.clone());
                let name = format!("{plural}.karpenter.sh");
                eventually(&format!("CRD {name} established"), Duration::from_secs(30), || {
                    let crds = crds.clone();
                    let name = name.clone();
                    async move {
                        let c = crds.get(&name).await?;
                        Ok(c.status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                            .then_some(()))
                    }
                })
                .await?;
            }
            // Discovery must know the new kinds before objects can be applied.
            eventually("NodePools to be served", Duration::from_secs(30), || {
                let client = client.clone();
                async move {
                    let api: Api<DynamicObject> = Api::all_with(client, &pools_resource());
                    Ok(api.list(&Default::default()).await.ok().map(|_| ()))
                }
            })
            .await
        }
        .await
        .map_err(|e: anyhow::Error| format!("{e:#}"))
    })
    .await
    .clone()
    .map_err(anyhow::Error::msg)
}

fn pools_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool"),
        "nodepools",
    )
}

fn claims_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("karpenter.sh", "v1", "NodeClaim"),
        "nodeclaims",
    )
}

/// A NodePool as Git would hold it, applied by a GitOps tool's field manager.
async fn node_pool(kit: &Kit, name: &str, limits: Option<Value>, selected: bool) -> Result<()> {
    let mut spec = json!({
        "template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                              "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}},
        "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized"},
    });
    if let Some(l) = limits {
        spec["limits"] = l;
    }
    let obj = json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": name, "labels": {"kube-tests": if selected { kit.ns.clone() } else { "other".into() }}},
        "spec": spec,
    });
    let api: Api<DynamicObject> = Api::all_with(kit.client.clone(), &pools_resource());
    api.patch(
        name,
        &PatchParams::apply("argocd-controller").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("failed to apply NodePool {name}"))?;
    Ok(())
}

async fn node_claim(kit: &Kit, name: &str, pool: &str, held: bool) -> Result<()> {
    let mut obj = json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": pool}},
        "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
    });
    if held {
        obj["metadata"]["finalizers"] = json!(["kube-tests/draining"]);
    }
    apply(&kit.client, &obj).await
}

async fn pool(kit: &Kit, name: &str) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::all_with(kit.client.clone(), &pools_resource());
    Ok(api.get(name).await?)
}

/// `spec.limits` of a NodePool; `None` when the field is absent.
async fn limits(kit: &Kit, name: &str) -> Result<Option<Value>> {
    let p = pool(kit, name).await?;
    let spec = p.data["spec"].as_object().context("a spec")?;
    Ok(spec.get("limits").cloned())
}

async fn claims(kit: &Kit) -> Result<Vec<(String, bool)>> {
    let api: Api<DynamicObject> = Api::all_with(kit.client.clone(), &claims_resource());
    let prefix = format!("{}-", kit.ns);
    let mut out: Vec<(String, bool)> = api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| {
            let deleting = c.metadata.deletion_timestamp.is_some();
            c.metadata
                .name
                .filter(|n| n.starts_with(&prefix))
                .map(|n| (n, deleting))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Writes of the runner to NodePools and NodeClaims: `(verb, resource, name)`.
fn karpenter_writes(kit: &Kit) -> Result<Vec<(String, String, String)>> {
    Ok(kit
        .runner_writes()?
        .into_iter()
        .filter_map(|e| {
            let r = e.object_ref.clone().unwrap_or_default();
            let resource = r.resource.unwrap_or_default();
            (resource == "nodepools" || resource == "nodeclaims")
                .then(|| (e.verb.clone(), resource, r.name.unwrap_or_default()))
        })
        .collect())
}

/// Hibernation records each selected NodePool's `spec.limits` exactly (absent as null), caps
/// them with server-side apply as `hibernator-runner` (taking over from the GitOps tool's field
/// manager), deletes the pool's NodeClaims and waits until the last one (held by a finalizer
/// while its node drains) is gone; a second run changes nothing; wake-up restores the limits
/// exactly, removing the field where there was none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pools_are_capped_drained_and_restored_exactly() -> Result<()> {
    install_crds().await?;
    let kit = Kit::new("karpenter").await?;
    let ns = kit.ns.clone();
    let (a, b, c, d) = (
        format!("{ns}-a"),
        format!("{ns}-b"),
        format!("{ns}-c"),
        format!("{ns}-d"),
    );
    node_pool(
        &kit,
        &a,
        Some(json!({"cpu": "100", "memory": "400Gi"})),
        true,
    )
    .await?;
    node_pool(&kit, &b, None, true).await?;
    node_pool(
        &kit,
        &c,
        Some(json!({"cpu": 1000, "nvidia.com/gpu": 4})),
        true,
    )
    .await?;
    node_pool(&kit, &d, Some(json!({"cpu": "5"})), false).await?;
    node_claim(&kit, &format!("{a}-1"), &a, true).await?;
    node_claim(&kit, &format!("{a}-2"), &a, false).await?;
    node_claim(&kit, &format!("{b}-1"), &b, false).await?;
    node_claim(&kit, &format!("{d}-1"), &d, false).await?;

    let params = json!({"selector": {"matchLabels": {"kube-tests": ns}}});
    let runner = kit
        .runner("karpenter", "pools", "hibernate")
        .param(params.clone())
        .run();
    let running = tokio::spawn(runner);
    // Karpenter's part: the first NodeClaim drains for a while after its deletion.
    let held = format!("{a}-1");
    eventually(
        "the held NodeClaim to be deleting",
        Duration::from_secs(60),
        || {
            let kit = &kit;
            let held = held.clone();
            async move { Ok(claims(kit).await?.contains(&(held, true)).then_some(())) }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !running.is_finished(),
        "the runner waits for the last NodeClaim"
    );
    let api: Api<DynamicObject> = Api::all_with(kit.client.clone(), &claims_resource());
    api.patch(
        &held,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    let ran = running.await??.ok();

    assert_eq!(
        ran.done().split(" in ").next().unwrap_or_default(),
        "done: capped 3 of 3 NodePools; deleted 3 NodeClaims",
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!(
            "selector kube-tests={ns} selects 3 NodePools: {a}, {b}, {c}"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!("recorded nodepool:{b}: no limits")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!(
            "deleting 2 NodeClaims of NodePool {a}: {a}-1, {a}-2"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!("NodePool {a} has no NodeClaims left")),
        "{}",
        ran.stdout
    );
    assert_eq!(
        kit.records(),
        [
            (
                format!("nodepool:{a}"),
                json!({"limits": {"cpu": "100", "memory": "400Gi"}})
            ),
            (format!("nodepool:{b}"), json!({"limits": null})),
            (
                format!("nodepool:{c}"),
                json!({"limits": {"cpu": 1000, "nvidia.com/gpu": 4}})
            ),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        limits(&kit, &a).await?,
        Some(json!({"cpu": "0", "memory": "0"}))
    );
    assert_eq!(
        limits(&kit, &b).await?,
        Some(json!({"cpu": "0", "memory": "0"}))
    );
    assert_eq!(
        limits(&kit, &c).await?,
        Some(json!({"cpu": "0", "memory": "0", "nvidia.com/gpu": 4})),
        "other limits stay (and cpu 0 already stops every launch)"
    );
    assert_eq!(
        limits(&kit, &d).await?,
        Some(json!({"cpu": "5"})),
        "not selected"
    );
    assert_eq!(
        claims(&kit).await?,
        vec![(format!("{d}-1"), false)],
        "only the other pool's NodeClaim is left"
    );
    // The NodePools are still there, the rest of their spec untouched, and the runner owns the
    // capped fields through server-side apply.
    let capped = pool(&kit, &a).await?;
    assert_eq!(
        capped.data["spec"]["disruption"]["consolidationPolicy"],
        "WhenEmptyOrUnderutilized"
    );
    let managers: Vec<(String, String)> = capped
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("hibernator-runner".into(), "Apply".into())),
        "{managers:?}"
    );
    let writes = karpenter_writes(&kit)?;
    let mut expected = vec![
        ("patch".to_string(), "nodepools".to_string(), a.clone()),
        ("patch".into(), "nodepools".into(), b.clone()),
        ("patch".into(), "nodepools".into(), c.clone()),
        ("delete".into(), "nodeclaims".into(), format!("{a}-1")),
        ("delete".into(), "nodeclaims".into(), format!("{a}-2")),
        ("delete".into(), "nodeclaims".into(), format!("{b}-1")),
    ];
    let mut seen = writes.clone();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "never a NodePool deletion");
    let applies = kit
        .runner_writes()?
        .into_iter()
        .filter(|e| {
            e.object_ref.clone().unwrap_or_default().resource.as_deref() == Some("nodepools")
        })
        .filter(|e| {
            e.field_manager.as_deref() == Some("hibernator-runner")
                && e.request_uri.contains("force=true")
        })
        .count();
    assert_eq!(applies, 3);

    // Nothing to do the second time.
    let again = kit
        .runner("karpenter", "pools", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again
            .done()
            .starts_with("done: capped 0 of 3 NodePools (3 already capped); deleted 0 NodeClaims"),
        "{}",
        again.stdout
    );
    assert!(again.has(&format!(
        "nodepool:{b} was recorded earlier in this cycle (no limits); keeping that record"
    )));
    assert_eq!(karpenter_writes(&kit)?.len(), writes.len(), "no new write");

    // Wake-up: exactly the limits from before, and no limits where there were none.
    let woke = kit
        .runner("karpenter", "pools", "wakeUp")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        woke.done()
            .starts_with("done: restored the limits of 3 of 3 NodePools"),
        "{}",
        woke.stdout
    );
    assert!(woke.has(&format!(
        "removing the limits of NodePool {b} (it had none)"
    )));
    assert_eq!(
        limits(&kit, &a).await?,
        Some(json!({"cpu": "100", "memory": "400Gi"}))
    );
    assert_eq!(limits(&kit, &b).await?, None, "spec.limits removed");
    assert_eq!(
        limits(&kit, &c).await?,
        Some(json!({"cpu": 1000, "nvidia.com/gpu": 4}))
    );
    assert_eq!(limits(&kit, &d).await?, Some(json!({"cpu": "5"})));

    let writes = karpenter_writes(&kit)?.len();
    let again = kit
        .runner("karpenter", "pools", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        again
            .done()
            .starts_with("done: restored the limits of 0 of 3 NodePools (3 already restored)"),
        "{}",
        again.stdout
    );
    assert_eq!(karpenter_writes(&kit)?.len(), writes, "no new write");
    Ok(())
}

/// Listed NodePools that do not exist are skipped at hibernation; one deleted while asleep is
/// skipped at wake-up; the others are restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_vanished_node_pools_are_skipped() -> Result<()> {
    install_crds().await?;
    let kit = Kit::new("karpenter-gone").await?;
    let ns = kit.ns.clone();
    let (keep, gone) = (format!("{ns}-keep"), format!("{ns}-gone"));
    node_pool(&kit, &keep, Some(json!({"cpu": "10"})), true).await?;
    node_pool(&kit, &gone, Some(json!({"cpu": "20"})), true).await?;
    let params = json!({"nodePools": [keep, gone, format!("{ns}-never")]});
    let ran = kit
        .runner("karpenter", "pools", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has(&format!(
            "warning: NodePool {ns}-never does not exist; skipped"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.done()
            .starts_with("done: capped 2 of 3 NodePools (1 no longer there); deleted 0 NodeClaims"),
        "{}",
        ran.stdout
    );
    let api: Api<DynamicObject> = Api::all_with(kit.client.clone(), &pools_resource());
    api.delete(&gone, &Default::default()).await?;

    let woke = kit
        .runner("karpenter", "pools", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke.has(&format!(
            "warning: nodepool:{gone} not restored: NodePool {gone} does not exist where this runner looked; its record is kept"
        )),
        "{}",
        woke.stdout
    );
    assert!(
        woke.done()
            .starts_with("done: restored the limits of 1 of 2 NodePools (1 no longer there)"),
        "{}",
        woke.stdout
    );
    assert_eq!(limits(&kit, &keep).await?, Some(json!({"cpu": "10"})));
    Ok(())
}

/// In-sleep checks of a `karpenter` target: while asleep a GitOps tool puts a NodePool's limits
/// back and a NodeClaim appears in another. `Report` names both and changes nothing; `Reapply`
/// caps the limits again and deletes the NodeClaim, keeping the night's records; a pool capped
/// before the night is not ours to keep capped; the wake-up restores what the night recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pool_checks_report_then_reapply_what_came_back() -> Result<()> {
    use hibernator_proto::v1::resource_result::Result as R;
    install_crds().await?;
    let kit = Kit::new("karpenter-check").await?;
    let ns = kit.ns.clone();
    let (a, b, c) = (format!("{ns}-a"), format!("{ns}-b"), format!("{ns}-c"));
    node_pool(&kit, &a, Some(json!({"cpu": "100"})), true).await?;
    node_pool(&kit, &b, None, true).await?;
    node_pool(&kit, &c, Some(json!({"cpu": "0", "memory": "0"})), true).await?;
    let params = json!({"selector": {"matchLabels": {"kube-tests": ns}}});
    kit.runner("karpenter", "pools", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    let night = kit.records();
    assert_eq!(night.len(), 3, "{night:#?}");
    let slept = karpenter_writes(&kit)?.len();

    node_pool(&kit, &a, Some(json!({"cpu": "100"})), true).await?;
    node_claim(&kit, &format!("{b}-1"), &b, false).await?;
    let check = |mode: &'static str| kit.check("karpenter", "pools", mode, &params);
    let mut expected = vec![
        ("nodepool:NS-a".to_string(), R::Drifted),
        ("nodepool:NS-b".to_string(), R::Drifted),
        ("nodepool:NS-c".to_string(), R::Asleep),
    ];

    let report = check("Report").await?;
    assert_eq!(
        report.summary(),
        "checked 3 NodePools: 1 asleep, 2 awake (drifted; left as found)",
        "{}",
        report.stdout
    );
    assert!(
        report.has(&format!(
            "NodePool {b} has limits at zero but 1 NodeClaim although it was capped in cycle {CYCLE}: drifted"
        )),
        "{}",
        report.stdout
    );
    assert_eq!(last_results(&kit), expected);
    assert_eq!(
        karpenter_writes(&kit)?.len(),
        slept,
        "Report writes nothing"
    );

    let reapply = check("Reapply").await?;
    assert_eq!(
        reapply.summary(),
        "checked 3 NodePools: 1 asleep, 2 put back to sleep",
        "{}",
        reapply.stdout
    );
    expected[0].1 = R::Reapplied;
    expected[1].1 = R::Reapplied;
    assert_eq!(last_results(&kit), expected);
    assert_eq!(
        limits(&kit, &a).await?,
        Some(json!({"cpu": "0", "memory": "0"}))
    );
    assert_eq!(claims(&kit).await?, vec![]);
    assert_eq!(kit.records(), night, "the night's records are kept");

    kit.runner("karpenter", "pools", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert_eq!(limits(&kit, &a).await?, Some(json!({"cpu": "100"})));
    assert_eq!(limits(&kit, &b).await?, None);
    assert_eq!(
        limits(&kit, &c).await?,
        Some(json!({"cpu": "0", "memory": "0"}))
    );
    Ok(())
}
