//! `cargo xtask schemas`: JSON schemas of the five kinds in kubeconform's layout, so that
//! `kubeconform -schema-location deploy/schemas` (with `-strict` or without) checks manifests
//! offline:
//!
//! ```text
//! deploy/schemas/master-standalone-strict/hibernationplan-hibernator-v1alpha1.json
//! deploy/schemas/master-standalone/hibernationplan-hibernator-v1alpha1.json
//! ```
//!
//! Each is the CRD's `openAPIV3Schema` with `apiVersion`, `kind` and `metadata` added at the
//! root (the API server adds them; a manifest carries them). The strict variant forbids
//! unknown fields: `additionalProperties: false` on every object schema that lists its
//! `properties` and does not preserve unknown fields.

use anyhow::{Context, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::{root, write_or_check};

/// The Kubernetes version directory kubeconform looks in by default.
const K8S_VERSION_DIR: &str = "master";

/// Writes every schema; returns false with `check` when a committed file is stale.
pub fn run(check: bool) -> Result<bool> {
    let dir = root().join("deploy/schemas");
    let mut fresh = true;
    let mut expected = Vec::new();
    for (_, crd) in hibernator_api::crds::all() {
        let group = &crd.spec.group;
        let kind = &crd.spec.names.kind;
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .with_context(|| format!("{kind} {} has no schema", version.name))?;
            let schema = serde_json::to_value(schema)?;
            let standalone = with_root_fields(schema, group, &version.name, kind);
            let file = file_name(kind, group, &version.name);
            for (strict, value) in [(false, standalone.clone()), (true, strict(standalone))] {
                let sub = format!(
                    "{K8S_VERSION_DIR}-standalone{}",
                    if strict { "-strict" } else { "" }
                );
                let text = format!("{}\n", serde_json::to_string_pretty(&value)?);
                let path = dir.join(&sub).join(&file);
                fresh &= write_or_check(&path, &text, check)?;
                expected.push(path);
            }
        }
    }
    // Schemas of kinds or versions that no longer exist are stale too.
    for sub in ["master-standalone", "master-standalone-strict"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if !expected.contains(&path) {
                if check {
                    eprintln!("stale: {}", path.strip_prefix(root())?.display());
                    fresh = false;
                } else {
                    std::fs::remove_file(&path)?;
                    eprintln!("removed {}", path.strip_prefix(root())?.display());
                }
            }
        }
    }
    Ok(fresh)
}

/// kubeconform's file name: lower-case kind, the group's first label, the version.
pub fn file_name(kind: &str, group: &str, version: &str) -> String {
    let label = group.split('.').next().unwrap_or(group);
    format!(
        "{}-{}-{}.json",
        kind.to_lowercase(),
        label.to_lowercase(),
        version.to_lowercase()
    )
}

/// The CRD schema as a standalone document: `apiVersion`, `kind` (each fixed to this kind's
/// value) and `metadata` (the full ObjectMeta schema) added and required.
pub fn with_root_fields(mut schema: Value, group: &str, version: &str, kind: &str) -> Value {
    let root = schema.as_object_mut().expect("a schema is an object");
    let properties = root
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("properties is an object");
    properties.insert(
        "apiVersion".into(),
        json!({
            "description": "APIVersion defines the versioned schema of this representation of an object.",
            "type": "string",
            "enum": [format!("{group}/{version}")],
        }),
    );
    properties.insert(
        "kind".into(),
        json!({
            "description": "Kind is a string value representing the REST resource this object represents.",
            "type": "string",
            "enum": [kind],
        }),
    );
    properties.insert("metadata".into(), object_meta_schema());
    let required = root
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("required is a list");
    for field in ["apiVersion", "kind", "metadata"] {
        if !required.iter().any(|r| r == field) {
            required.push(field.into());
        }
    }
    schema
}

/// The Kubernetes ObjectMeta schema, inlined, from k8s-openapi's types.
fn object_meta_schema() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut value = generator.into_root_schema_for::<ObjectMeta>().to_value();
    if let Some(map) = value.as_object_mut() {
        map.remove("title");
        map.remove("$schema");
        map.remove("definitions");
        map.remove("$defs");
    }
    // OpenAPI's `nullable` means nothing to a JSON-schema validator; kubectl never sends null
    // metadata fields, so a null is as wrong here as in the CRD schema.
    remove_key(&mut value, "nullable");
    value
}

fn remove_key(v: &mut Value, key: &str) {
    match v {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|c| remove_key(c, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| remove_key(c, key)),
        _ => {}
    }
}

/// The strict variant: `additionalProperties: false` wherever an object schema lists its
/// properties and neither preserves unknown fields nor says otherwise already;
/// `x-kubernetes-int-or-string` spelled as JSON schema.
pub fn strict(mut schema: Value) -> Value {
    fn walk(node: &mut Value) {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            && !map.contains_key("anyOf")
        {
            map.insert(
                "anyOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if map.contains_key("properties") && !preserves && !map.contains_key("additionalProperties")
        {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        // Walk schemas only: the values of `properties`, `items` and `additionalProperties`.
        if let Some(Value::Object(props)) = map.get_mut("properties") {
            props.values_mut().for_each(walk);
        }
        if let Some(items) = map.get_mut("items") {
            walk(items);
        }
        if let Some(add @ Value::Object(_)) = map.get_mut("additionalProperties") {
            walk(add);
        }
    }
    walk(&mut schema);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_kubeconform() {
        assert_eq!(
            file_name("HibernationPlan", "hibernator.ardikasaputro.io", "v1alpha1"),
            "hibernationplan-hibernator-v1alpha1.json"
        );
        assert_eq!(
            file_name(
                "CloudProvider",
                "connector.hibernator.ardikasaputro.io",
                "v1alpha1"
            ),
            "cloudprovider-connector-v1alpha1.json"
        );
    }

    #[test]
    fn strict_closes_objects_with_properties_only() {
        let s = strict(json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "string"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                         "properties": {"c": {"type": "string"}}},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
                "list": {"type": "array", "items": {"type": "object",
                         "properties": {"d": {"type": "integer"}}}},
                "port": {"x-kubernetes-int-or-string": true}
            }
        }));
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert!(
            s["properties"]["free"]
                .get("additionalProperties")
                .is_none()
        );
        assert_eq!(
            s["properties"]["map"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert_eq!(
            s["properties"]["list"]["items"]["additionalProperties"],
            false
        );
        assert_eq!(
            s["properties"]["port"]["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
    }

    #[test]
    fn standalone_schemas_carry_the_root_fields() {
        for (_, crd) in hibernator_api::crds::all() {
            let schema = hibernator_api::crds::schema_of(&crd);
            let kind = &crd.spec.names.kind;
            let s = with_root_fields(schema, &crd.spec.group, "v1alpha1", kind);
            assert_eq!(s["properties"]["kind"]["enum"], json!([kind]));
            assert_eq!(
                s["properties"]["apiVersion"]["enum"],
                json!([format!("{}/v1alpha1", crd.spec.group)])
            );
            let meta = &s["properties"]["metadata"]["properties"];
            for field in ["name", "namespace", "labels", "annotations", "finalizers"] {
                assert!(meta.get(field).is_some(), "metadata.{field}");
            }
            assert_eq!(
                meta["labels"]["additionalProperties"]["type"], "string",
                "labels are a string map"
            );
            assert!(
                s["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == "metadata")
            );
            let text = serde_json::to_string(&s).unwrap();
            assert!(!text.contains("$ref"), "{kind}: schema is not standalone");
            assert!(!text.contains("nullable"), "{kind}: OpenAPI nullable left");
        }
    }
}
