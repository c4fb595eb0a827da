//! The CustomResourceDefinitions, as generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{
    CloudProvider, HibernationNotification, HibernationPlan, K8SCluster, ScheduleException,
};

/// Every CRD with the file name it is written to under `deploy/crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("hibernationplans.yaml", tidy(HibernationPlan::crd())),
        ("scheduleexceptions.yaml", tidy(ScheduleException::crd())),
        (
            "hibernationnotifications.yaml",
            tidy(HibernationNotification::crd()),
        ),
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

/// `schema` as kube-cel evaluates it client-side. Its interpreter has no `dyn()`, which the
/// API server's type checker needs before it lets a rule iterate over the fields of an object;
/// kube-cel is dynamically typed, so the call is left out.
pub fn for_kube_cel(mut schema: Value) -> Value {
    fn walk(node: &mut Value) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                    for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                        for key in ["rule", "messageExpression"] {
                            if let Some(Value::String(text)) = rule.get_mut(key) {
                                *text = without_dyn(text);
                            }
                        }
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// `text` with each call `dyn(x)` written `(x)`.
fn without_dyn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("dyn(") {
        let called = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        out.push_str(&rest[..at]);
        if !called {
            out.push_str("dyn");
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
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
                // The API server estimates CEL costs from string lengths: bound every enum.
                if map.get("type").and_then(Value::as_str) == Some("string")
                    && !map.contains_key("maxLength")
                    && let Some(Value::Array(values)) = map.get("enum")
                {
                    let longest = values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::len)
                        .max()
                        .unwrap_or(0);
                    map.insert("maxLength".into(), Value::from(longest));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a schema node by node: every node has a type (structural schemas, as the API
    /// server requires), and no value-dependent shapes (`anyOf`/`oneOf`/`allOf` with types).
    fn assert_structural(v: &Value, path: &str) {
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not an object"));
        let special = obj.get("x-kubernetes-int-or-string").is_some()
            || obj.get("x-kubernetes-preserve-unknown-fields").is_some();
        assert!(
            special || obj.contains_key("type"),
            "{path} has no type: {v}"
        );
        for k in ["anyOf", "oneOf", "allOf", "not", "$ref"] {
            assert!(!obj.contains_key(k), "{path} uses {k}");
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            for (name, sub) in props {
                assert_structural(sub, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = obj.get("items") {
            assert_structural(items, &format!("{path}[]"));
        }
        if let Some(add @ Value::Object(_)) = obj.get("additionalProperties") {
            assert_structural(add, &format!("{path}{{}}"));
        }
    }

    #[test]
    fn schemas_are_structural() {
        for (file, crd) in all() {
            assert_structural(&schema_of(&crd), file);
        }
    }

    #[test]
    fn the_connector_kind_rule_lists_exactly_the_cluster_types() {
        use crate::params::TargetType;
        use crate::plan::ConnectorKind;
        let text = serde_json::to_string(&schema_of(&all()[0].1)).unwrap();
        let cluster: Vec<String> = TargetType::ALL
            .into_iter()
            .filter(|t| t.connector_kind() == Some(ConnectorKind::K8SCluster))
            .map(|t| format!("'{t}'"))
            .collect();
        let list = format!("self.type in [{}]", cluster.join(", "));
        assert_eq!(
            text.matches(&list).count(),
            2,
            "{list} in the CEL rule and its message"
        );
    }

    #[test]
    fn kube_cel_reads_rules_without_dyn() {
        assert_eq!(
            without_dyn("dyn(self.a).all(k, k in dyn(self.b)) && mydyn(x) && a.dyn(y)"),
            "(self.a).all(k, k in (self.b)) && mydyn(x) && a.dyn(y)"
        );
    }

    #[test]
    fn every_cel_rule_compiles() {
        for (file, crd) in all() {
            let compiled = kube_cel::compile_schema(&for_kube_cel(schema_of(&crd)));
            let errors: Vec<String> = compiled
                .compilation_errors()
                .iter()
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{file}: {errors:#?}");
        }
    }

    #[test]
    fn plan_has_printer_columns_and_short_names() {
        let crds = all();
        let plan = &crds[0].1;
        assert_eq!(
            plan.spec.names.short_names.as_deref(),
            Some(&["hplan".to_string()][..])
        );
        let columns: Vec<&str> = plan.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Phase", "Ready", "Next Transition", "Age"]);
        for (_, crd) in &crds {
            assert!(
                crd.spec.versions[0]
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
        }
    }

    /// Every field in every schema carries a description (they become `kubectl explain`).
    #[test]
    fn every_field_is_documented() {
        fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(Value::Object(props)) = v.get("properties") {
                for (name, sub) in props {
                    let p = format!("{path}.{name}");
                    let inherited = path.contains("Selector") || path.contains("selector.match");
                    if sub.get("description").is_none() && !inherited && name != "metadata" {
                        missing.push(p.clone());
                    }
                    walk(sub, &p, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(items, &format!("{path}[]"), missing);
            }
        }
        let mut missing = Vec::new();
        for (file, crd) in all() {
            walk(&schema_of(&crd), file, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "fields without description: {missing:#?}"
        );
    }
}
