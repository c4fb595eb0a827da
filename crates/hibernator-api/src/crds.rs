//! The CustomResourceDefinitions, as generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{CloudProvider, HibernationPlan, K8SCluster, ScheduleException};

/// Every CRD with the file name it is written to under `deploy/crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("hibernationplans.yaml", tidy(HibernationPlan::crd())),
        ("scheduleexceptions.yaml", tidy(ScheduleException::crd())),
        ("cloudproviders.yaml", tidy(CloudProvider::crd())),
        ("k8sclusters.yaml", tidy(K8SCluster::crd())),
    ]
}

/// The `openAPIV3Schema` of a CRD's first version, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).expect("a schema serializes"))
        .unwrap_or(Value::Null)
}

/// Makes the derived schema read like a hand-written one:
/// - no `nullable`: optional fields are omitted, never null, and a null written by a user is
///   then dropped by the API server instead of stored;
/// - whole-number bounds as integers (`maximum: 10`, not `10.0`);
/// - doc-comment line breaks folded, paragraphs kept, so `kubectl explain` wraps them itself.
fn tidy(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("nullable");
                for key in ["minimum", "maximum"] {
                    if let Some(Value::Number(n)) = map.get(key)
                        && let Some(f) = n.as_f64()
                        && f.fract() == 0.0
                    {
                        map.insert(key.into(), Value::from(f as i64));
                    }
                }
                if let Some(Value::String(d)) = map.get_mut("description") {
                    *d = fold_lines(d);
                }
                for (key, child) in map.iter_mut() {
                    // Rules and enums hold data, not schemas.
                    if key != "x-kubernetes-validations" && key != "enum" {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a tidied CRD deserializes")
}

fn fold_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|para| {
            para.split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}
