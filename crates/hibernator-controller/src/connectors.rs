//! Status of the connectors (CloudProvider, K8SCluster): kstatus conditions saying whether the
//! connector is usable as far as the controller can tell (its spec and its references; the
//! controller never reads credentials). GitOps tools then wait for a K8SCluster until its
//! CloudProvider exists.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hibernator_api::common::{condition, condition_types, remove_condition, set_condition};
use hibernator_api::connector::{CloudProvider, ConnectorStatus, K8SCluster};
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::clock::Clock;
use crate::jobs::MANAGER;

/// The status a CloudProvider should have.
pub fn cloud_provider_status(
    cp: &CloudProvider,
    prev: &ConnectorStatus,
    now: Timestamp,
) -> ConnectorStatus {
    let generation = cp.metadata.generation;
    let mut status = ConnectorStatus {
        observed_generation: generation,
        conditions: prev.conditions.clone(),
    };
    let (ok, reason, message) = match &cp.spec.aws {
        Some(aws) => {
            let auth = match (&aws.auth.static_, &aws.assume_role_arn) {
                (Some(s), _) => format!("keys from Secret {}", s.secret_ref.name),
                (None, _) => "the runner's service account".to_string(),
            };
            let role = aws
                .assume_role_arn
                .as_ref()
                .map(|r| format!(", assuming {r}"))
                .unwrap_or_default();
            (
                true,
                "Accepted",
                format!(
                    "AWS account {} in {} with {auth}{role}",
                    aws.account_id, aws.region
                ),
            )
        }
        None => (
            false,
            "InvalidSpec",
            "type aws needs the aws section".to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition(
            condition_types::READY,
            ok,
            reason,
            message.clone(),
            generation,
            now,
        ),
    );
    if ok {
        remove_condition(&mut status.conditions, condition_types::STALLED);
    } else {
        set_condition(
            &mut status.conditions,
            condition(
                condition_types::STALLED,
                true,
                reason,
                message,
                generation,
                now,
            ),
        );
    }
    status
}

/// The status a K8SCluster should have, given the CloudProviders that exist.
pub fn k8s_cluster_status(
    kc: &K8SCluster,
    provider_exists: impl Fn(&str) -> bool,
    prev: &ConnectorStatus,
    now: Timestamp,
) -> ConnectorStatus {
    let generation = kc.metadata.generation;
    let mut status = ConnectorStatus {
        observed_generation: generation,
        conditions: prev.conditions.clone(),
    };
    let (ok, reason, message) = match (&kc.spec.eks, &kc.spec.k8s, &kc.spec.provider_ref) {
        (Some(eks), _, Some(p)) if provider_exists(&p.name) => (
            true,
            "Accepted",
            format!(
                "EKS cluster {} in {} through CloudProvider {}",
                eks.name, eks.region, p.name
            ),
        ),
        (Some(_), _, Some(p)) => (
            false,
            "ReferenceNotFound",
            format!("CloudProvider {} not found in this namespace", p.name),
        ),
        (Some(_), _, None) => (
            false,
            "InvalidSpec",
            "an eks cluster needs providerRef".to_string(),
        ),
        (None, Some(k), _) => match (&k.kubeconfig_ref, k.in_cluster) {
            (Some(r), _) => (
                true,
                "Accepted",
                format!(
                    "a cluster reached with the kubeconfig in Secret {} (key {})",
                    r.name,
                    r.key.as_deref().unwrap_or("kubeconfig")
                ),
            ),
            (None, Some(true)) => (
                true,
                "Accepted",
                "the cluster the runners run in".to_string(),
            ),
            _ => (
                false,
                "InvalidSpec",
                "k8s needs kubeconfigRef or inCluster: true".to_string(),
            ),
        },
        (None, None, _) => (
            false,
            "InvalidSpec",
            "a K8SCluster needs eks or k8s".to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition(
            condition_types::READY,
            ok,
            reason,
            message.clone(),
            generation,
            now,
        ),
    );
    // A missing CloudProvider may still come (GitOps applies in any order): not Stalled.
    if ok || reason == "ReferenceNotFound" {
        remove_condition(&mut status.conditions, condition_types::STALLED);
    } else {
        set_condition(
            &mut status.conditions,
            condition(
                condition_types::STALLED,
                true,
                reason,
                message,
                generation,
                now,
            ),
        );
    }
    status
}

async fn write<K>(client: &Client, obj: &K, status: &ConnectorStatus) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

struct Ctx {
    client: Client,
    clock: Clock,
    providers: Store<CloudProvider>,
}

/// Keeps the connectors' status current until `stop` resolves.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    clock: Clock,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (providers_api, clusters_api): (Api<CloudProvider>, Api<K8SCluster>) = match &namespace {
        Some(n) => (
            Api::namespaced(client.clone(), n),
            Api::namespaced(client.clone(), n),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let providers = Controller::new(providers_api.clone(), watcher::Config::default())
        .trigger_backoff(crate::reconcile::watch_backoff());
    let provider_store = providers.store();
    let clusters = Controller::new(clusters_api, watcher::Config::default())
        .trigger_backoff(crate::reconcile::watch_backoff());
    let cluster_store = clusters.store();
    let ctx = Arc::new(Ctx {
        client,
        clock,
        providers: provider_store,
    });
    let (stop_tx, stop_rx) = tokio::sync::broadcast::channel::<()>(1);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(());
    });
    let shutdown = |mut rx: tokio::sync::broadcast::Receiver<()>| async move {
        let _ = rx.recv().await;
    };
    let providers = providers
        .graceful_shutdown_on(shutdown(stop_rx.resubscribe()))
        .run(
            |cp: Arc<CloudProvider>, ctx: Arc<Ctx>| async move {
                let prev = cp.status.clone().unwrap_or_default();
                let status = cloud_provider_status(&cp, &prev, ctx.clock.now());
                if cp.status.as_ref() != Some(&status) {
                    write(&ctx.client, cp.as_ref(), &status).await?;
                }
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, e: &kube::Error, _| {
                tracing::warn!("failed to update a CloudProvider's status: {e}");
                Action::requeue(Duration::from_secs(10))
            },
            ctx.clone(),
        )
        .for_each(|_| async {});
    let clusters = clusters
        .watches(
            providers_api,
            watcher::Config::default(),
            move |cp: CloudProvider| {
                let ns = cp.namespace();
                cluster_store
                    .state()
                    .iter()
                    .filter(|c| c.namespace() == ns)
                    .filter(|c| {
                        c.spec
                            .provider_ref
                            .as_ref()
                            .is_some_and(|p| p.name == cp.name_any())
                    })
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown(stop_rx))
        .run(
            |kc: Arc<K8SCluster>, ctx: Arc<Ctx>| async move {
                let ns = kc.namespace().unwrap_or_default();
                let exists = |name: &str| {
                    ctx.providers
                        .get(&ObjectRef::new(name).within(&ns))
                        .is_some()
                };
                let prev = kc.status.clone().unwrap_or_default();
                let status = k8s_cluster_status(&kc, exists, &prev, ctx.clock.now());
                if kc.status.as_ref() != Some(&status) {
                    write(&ctx.client, kc.as_ref(), &status).await?;
                }
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, e: &kube::Error, _| {
                tracing::warn!("failed to update a K8SCluster's status: {e}");
                Action::requeue(Duration::from_secs(10))
            },
            ctx,
        )
        .for_each(|_| async {});
    tokio::join!(providers, clusters);
}

#[cfg(test)]
mod tests {
    use hibernator_api::connector::{EksCluster, K8SClusterSpec, ProviderKind, ProviderRef};

    use super::*;

    fn now() -> Timestamp {
        "2026-11-25T17:00:00Z".parse().unwrap()
    }

    fn eks_cluster() -> K8SCluster {
        let mut kc = K8SCluster::new(
            "eks-prod",
            K8SClusterSpec {
                provider_ref: Some(ProviderRef {
                    kind: ProviderKind::CloudProvider,
                    name: "aws-prod".into(),
                }),
                eks: Some(EksCluster {
                    name: "prod-eks-1".into(),
                    region: "us-east-1".into(),
                }),
                k8s: None,
                allowed_namespaces: None,
            },
        );
        kc.metadata.generation = Some(3);
        kc
    }

    #[test]
    fn a_k8s_cluster_waits_for_its_cloud_provider_without_stalling() {
        let kc = eks_cluster();
        let s = k8s_cluster_status(&kc, |_| false, &ConnectorStatus::default(), now());
        let ready = hibernator_api::common::find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ReferenceNotFound")
        );
        assert!(ready.message.contains("aws-prod"));
        assert!(hibernator_api::common::find_condition(&s.conditions, "Stalled").is_none());
        assert_eq!(s.observed_generation, Some(3));
        let s2 = k8s_cluster_status(&kc, |n| n == "aws-prod", &s, now());
        let ready = hibernator_api::common::find_condition(&s2.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Accepted")
        );
        assert!(ready.message.contains("prod-eks-1"));
        // Evaluating again changes nothing (no status churn).
        assert_eq!(k8s_cluster_status(&kc, |n| n == "aws-prod", &s2, now()), s2);
    }
}
