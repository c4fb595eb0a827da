//! The real third-party CRDs install, are served, and enforce their own schemas.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube_testbed::crds::{FIELD_MANAGER, install_third_party_crds};
use serde_json::json;

use crate::common::{cluster, object};

const ALL: &[&str] = &[
    "kustomizations.kustomize.toolkit.fluxcd.io",
    "helmreleases.helm.toolkit.fluxcd.io",
    "applications.argoproj.io",
    "rollouts.argoproj.io",
    "scaledobjects.keda.sh",
];

#[tokio::test]
async fn third_party_crds_install_concurrently_and_validate() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("crds").await?;
    let client = cluster.client()?;

    // Two concurrent installs of the same CRDs, then a third: all succeed.
    let (a, b) = tokio::join!(
        install_third_party_crds(&client, ALL),
        install_third_party_crds(&client, ALL),
    );
    a?;
    b?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let before = crds.get("rollouts.argoproj.io").await?;
    install_third_party_crds(&client, ALL).await?;
    let after = crds.get("rollouts.argoproj.io").await?;
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "re-applying an unchanged CRD must not change it"
    );
    for name in ALL {
        let crd = crds.get(name).await?;
        let managers: Vec<_> = crd
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(
            managers.iter().any(|m| m == FIELD_MANAGER),
            "{name}: {managers:?}"
        );
    }

    // KEDA's own CEL rule is in force.
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "keda.sh",
        "v1alpha1",
        "ScaledObject",
    ));
    let scaled: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let scaled_object = |name: &str, min: i64, max: i64| -> DynamicObject {
        object(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"name": "web"},
                "minReplicaCount": min, "maxReplicaCount": max,
                "triggers": [{"type": "cpu", "metadata": {"value": "50"}}],
            },
        }))
    };
    scaled
        .create(&PostParams::default(), &scaled_object("valid", 1, 3))
        .await?;
    let err = scaled
        .create(&PostParams::default(), &scaled_object("invalid", 5, 2))
        .await
        .expect_err("KEDA's rule must reject minReplicaCount > maxReplicaCount");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("minReplicaCount must be less than"),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected error {other}"),
    }
    Ok(())
}
