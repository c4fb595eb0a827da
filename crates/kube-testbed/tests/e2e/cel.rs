//! The real API server evaluates a CRD's CEL validation rules.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use crate::common::{cluster, eventually, object};

#[tokio::test]
async fn a_crd_cel_rule_rejects_a_violating_object() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("cel").await?;
    let client = cluster.client()?;
    let crd: CustomResourceDefinition = object(json!({
        "metadata": {"name": "ranges.cel.testbed.example.com"},
        "spec": {
            "group": "cel.testbed.example.com",
            "names": {"kind": "Range", "plural": "ranges", "singular": "range"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                        ],
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    }},
                }},
            }],
        },
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    eventually(
        "the CRD to be established",
        Duration::from_secs(30),
        || async {
            let crd = crds.get("ranges.cel.testbed.example.com").await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        },
    )
    .await?;

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cel.testbed.example.com",
        "v1",
        "Range",
    ));
    let ranges: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let range = |name: &str, min: i64, max: i64| -> DynamicObject {
        object(json!({
            "apiVersion": "cel.testbed.example.com/v1", "kind": "Range",
            "metadata": {"name": name},
            "spec": {"min": min, "max": max},
        }))
    };
    // The discovery of a fresh CRD can lag a moment behind Established.
    eventually(
        "a valid Range to be accepted",
        Duration::from_secs(30),
        || async {
            Ok(ranges
                .create(&PostParams::default(), &range("valid", 1, 5))
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await?;
    let err = ranges
        .create(&PostParams::default(), &range("invalid", 9, 2))
        .await
        .expect_err("the CEL rule must reject min > max");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("min must not exceed max"),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected error {other}"),
    }
    crds.delete("ranges.cel.testbed.example.com", &Default::default())
        .await?;
    Ok(())
}
