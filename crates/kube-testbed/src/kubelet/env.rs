//! A container's environment, built the way the kubelet builds it: service variables, then
//! `envFrom`, then `env` (with `$(VAR)` expansion and `valueFrom`), and the field paths and
//! resource fields the downward API exposes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};
use kube::Api;

/// Expands `$(NAME)` references the way Kubernetes does: `$$` is a literal `$`, a reference to an
/// undefined name stays as written, a `$` before anything else is literal.
pub(crate) fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && i + 1 < chars.len() {
            match chars[i + 1] {
                '$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                '(' => {
                    if let Some(close) = chars[i + 2..].iter().position(|&c| c == ')') {
                        let name: String = chars[i + 2..i + 2 + close].iter().collect();
                        match lookup(&name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(&name);
                                out.push(')');
                            }
                        }
                        i += close + 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Facts about the node and API server the environment refers to.
#[derive(Debug, Clone)]
pub(crate) struct NodeFacts {
    pub node_name: String,
    pub host_ip: String,
    pub api_port: u16,
    /// Allocatable CPU in millicores and memory in bytes: the values of unset limits.
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

/// The variables describing the `kubernetes` Service, pointing at the real API server port
/// (the API server runs with `--endpoint-reconciler-type=none`, so the Service has no endpoints).
pub(crate) fn service_env(facts: &NodeFacts) -> Vec<(String, String)> {
    let host = &facts.host_ip;
    let port = facts.api_port;
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
        (
            "KUBERNETES_PORT_443_TCP".into(),
            format!("tcp://{host}:{port}"),
        ),
        ("KUBERNETES_PORT_443_TCP_PROTO".into(), "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT".into(), port.to_string()),
        ("KUBERNETES_PORT_443_TCP_ADDR".into(), host.clone()),
    ]
}

/// The value of a downward-API field path (`metadata.name`, `metadata.labels['app']`, ...).
pub(crate) fn field_value(
    pod: &Pod,
    facts: &NodeFacts,
    selector: &ObjectFieldSelector,
) -> Result<String, String> {
    let meta = &pod.metadata;
    let path = selector.field_path.as_str();
    let map_entry = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
        )
    };
    let format_map = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let spec = pod.spec.clone().unwrap_or_default();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&meta.labels),
        "metadata.annotations" => format_map(&meta.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_else(|| facts.node_name.clone()),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.podIP" => facts.host_ip.clone(),
        "status.hostIPs" | "status.podIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(v) = map_entry(&meta.labels, "metadata.labels['") {
                v
            } else if let Some(v) = map_entry(&meta.annotations, "metadata.annotations['") {
                v
            } else {
                return Err(format!("unsupported fieldPath {path:?}"));
            }
        }
    })
}

/// Parses a Kubernetes quantity into a number (CPU in cores, everything else in units).
pub(crate) fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// The value of a `resourceFieldRef` (limits default to the node's allocatable resources,
/// requests to the limits, as the kubelet does).
pub(crate) fn resource_value(
    container: &Container,
    facts: &NodeFacts,
    selector: &ResourceFieldSelector,
) -> Result<String, String> {
    let resources = container.resources.clone().unwrap_or_default();
    let get = |map: &Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .and_then(|q| parse_quantity(&q.0))
    };
    let (kind, name) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", selector.resource))?;
    let node_default = match name {
        "cpu" => facts.cpu_millis as f64 / 1000.0,
        "memory" => facts.memory_bytes as f64,
        "ephemeral-storage" => facts.ephemeral_storage_bytes as f64,
        _ => return Err(format!("unsupported resource {:?}", selector.resource)),
    };
    let limit = get(&resources.limits, name).unwrap_or(node_default);
    let value = match kind {
        "limits" => limit,
        "requests" => get(&resources.requests, name).unwrap_or(limit),
        _ => return Err(format!("unsupported resource {:?}", selector.resource)),
    };
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Same rounding as the kubelet: up, to an integer.
    // The tiny offset keeps exact quotients (64Mi / 1Mi) from rounding up on float noise.
    Ok(format!("{}", (value / divisor - 1e-9).ceil()))
}

/// Fetches (and caches, for one pod start) the ConfigMaps and Secrets the environment and
/// volumes refer to, with the kubelet's own credentials (the Node authorizer allows exactly the
/// objects the pod references).
pub(crate) struct Objects {
    client: kube::Client,
    namespace: String,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
    secrets: BTreeMap<String, Option<Secret>>,
}

impl Objects {
    pub fn new(client: kube::Client, namespace: &str) -> Objects {
        Objects {
            client,
            namespace: namespace.to_string(),
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    /// `Ok(None)` when it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<ConfigMap>, String> {
        if let Some(cached) = self.config_maps.get(name) {
            return Ok(cached.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| format!("failed to get configmap {:?}: {e}", name))?;
        self.config_maps.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// `Ok(None)` when it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<Secret>, String> {
        if let Some(cached) = self.secrets.get(name) {
            return Ok(cached.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| format!("failed to get secret {:?}: {e}", name))?;
        self.secrets.insert(name.to_string(), found.clone());
        Ok(found)
    }
}

/// All keys of a ConfigMap as strings (binary data lossily).
pub(crate) fn config_map_entries(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// All keys of a Secret.
pub(crate) fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// An ordered variable map: later definitions replace values but keep the first position.
#[derive(Default)]
struct EnvMap {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl EnvMap {
    fn set(&mut self, key: String, value: String) {
        if !self.values.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.values.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }
}

/// The container's variables from the pod spec plus the `kubernetes` Service variables.
/// `Err` carries the kubelet's `CreateContainerConfigError` message.
pub(crate) async fn container_env(
    pod: &Pod,
    container: &Container,
    facts: &NodeFacts,
    objects: &mut Objects,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let service: EnvMap = {
        let mut m = EnvMap::default();
        for (k, v) in service_env(facts) {
            m.set(k, v);
        }
        m
    };
    let mut env = EnvMap::default();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match objects.config_map(&r.name).await? {
                Some(cm) => {
                    for (k, v) in config_map_entries(&cm) {
                        let name = format!("{prefix}{k}");
                        if !name.contains('=') {
                            env.set(name, String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &source.secret_ref {
            match objects.secret(&r.name).await? {
                Some(secret) => {
                    for (k, v) in secret_entries(&secret) {
                        let name = format!("{prefix}{k}");
                        if !name.contains('=') {
                            env.set(name, String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, facts, field)?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(container, facts, resource)?
            } else if let Some(key) = &from.config_map_key_ref {
                match objects.config_map(&key.name).await? {
                    Some(cm) => match config_map_entries(&cm).get(&key.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if key.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                key.key, key.name
                            ));
                        }
                    },
                    None if key.optional == Some(true) => continue,
                    None => return Err(format!("configmap {:?} not found", key.name)),
                }
            } else if let Some(key) = &from.secret_key_ref {
                match objects.secret(&key.name).await? {
                    Some(secret) => match secret_entries(&secret).get(&key.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if key.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                key.key, key.name
                            ));
                        }
                    },
                    None if key.optional == Some(true) => continue,
                    None => return Err(format!("secret {:?} not found", key.name)),
                }
            } else {
                return Err(format!("unsupported valueFrom in variable {}", var.name));
            }
        } else {
            let lookup = |name: &str| env.get(name).or_else(|| service.get(name));
            expand(var.value.as_deref().unwrap_or_default(), &lookup)
        };
        env.set(var.name.clone(), value);
    }
    for key in &service.order {
        if env.get(key).is_none()
            && let Some(v) = service.get(key)
        {
            env.set(key.clone(), v);
        }
    }
    Ok(env
        .order
        .iter()
        .filter_map(|k| env.values.get(k).map(|v| (k.clone(), v.clone())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let lookup = |name: &str| (name == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$A-$", &lookup), "x-$(B)-$(A)-$A-$");
        assert_eq!(expand("$(A", &lookup), "$(A");
        assert_eq!(expand("pre$(A)post", &lookup), "prexpost");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1Xi"), None);
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            node_name: "n".into(),
            host_ip: "127.0.0.1".into(),
            api_port: 6443,
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
        }
    }

    #[test]
    fn resource_fields_round_up_and_default_to_the_node() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
        }))
        .unwrap();
        let sel = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor
                .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            container_name: None,
        };
        let f = facts();
        assert_eq!(
            resource_value(&container, &f, &sel("limits.cpu", None)).unwrap(),
            "1"
        );
        assert_eq!(
            resource_value(&container, &f, &sel("limits.cpu", Some("1m"))).unwrap(),
            "250"
        );
        assert_eq!(
            resource_value(&container, &f, &sel("limits.memory", Some("1Mi"))).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(&container, &f, &sel("requests.memory", Some("1Mi"))).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(&Container::default(), &f, &sel("limits.cpu", None)).unwrap(),
            "4"
        );
    }

    #[test]
    fn field_paths() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                         "labels": {"app": "x", "tier": "a\"b"}},
            "spec": {"containers": [], "serviceAccountName": "sa", "nodeName": "n"}
        }))
        .unwrap();
        let f = facts();
        let get = |path: &str| {
            field_value(
                &pod,
                &f,
                &ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                },
            )
        };
        assert_eq!(get("metadata.name").unwrap(), "p");
        assert_eq!(get("metadata.uid").unwrap(), "u1");
        assert_eq!(get("metadata.labels['app']").unwrap(), "x");
        assert_eq!(
            get("metadata.labels").unwrap(),
            "app=\"x\"\ntier=\"a\\\"b\""
        );
        assert_eq!(get("spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(get("status.podIP").unwrap(), "127.0.0.1");
        assert!(get("spec.bogus").is_err());
    }
}
