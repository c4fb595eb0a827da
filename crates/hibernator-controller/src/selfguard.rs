//! No plan puts the controller itself to sleep: a `workloads` target that would scale the
//! controller's own Deployment, or an `eks` / `karpenter` target that would take away the node
//! group or NodePool of the controller's node, is refused before anything changes.
//!
//! The controller learns where it runs from the downward API (its namespace and node name,
//! passed as flags by the chart), its Deployment's labels (a flag) and its node's labels
//! (`eks.amazonaws.com/nodegroup`, `karpenter.sh/nodepool`). A plan whose targets are in
//! another cluster opts out with `spec.behavior.allowSelfHibernation: true`.
//!
//! What it cannot tell: a `karpenter` target choosing NodePools by label selector (their labels
//! are not read), and clusters reached through a kubeconfig (which may or may not be this one).

use std::collections::BTreeMap;

use hibernator_api::params::{TargetParameters, WorkloadKind};
use hibernator_api::plan::HibernationPlan;
use hibernator_api::runner::ConnectorSettings;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::jobs::ResolvedConnector;

/// The node label of an EKS managed node group.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// The node label of a Karpenter NodePool.
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";

/// Where the controller runs (every part optional: what is unknown is not guarded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfGuard {
    /// The controller's namespace.
    pub namespace: Option<String>,
    /// The labels of that namespace (for `namespaceSelector`).
    pub namespace_labels: BTreeMap<String, String>,
    /// The labels of the controller's Deployment.
    pub deployment_labels: BTreeMap<String, String>,
    /// The EKS cluster the controller runs in, when told.
    pub cluster_name: Option<String>,
    /// The EKS managed node group of its node.
    pub node_group: Option<String>,
    /// The Karpenter NodePool of its node.
    pub node_pool: Option<String>,
}

fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    match selector {
        None => true,
        Some(s) => Selector::try_from(s.clone()).is_ok_and(|s| s.matches(labels)),
    }
}

/// Why hibernating this plan would put the controller to sleep, naming each target, if it
/// would.
pub fn check(
    plan: &HibernationPlan,
    connectors: &BTreeMap<usize, ResolvedConnector>,
    guard: &SelfGuard,
) -> Option<String> {
    if plan
        .spec
        .behavior
        .as_ref()
        .and_then(|b| b.allow_self_hibernation)
        == Some(true)
    {
        return None;
    }
    let opt_out =
        "set spec.behavior.allowSelfHibernation: true only if the controller runs elsewhere";
    let mut problems = Vec::new();
    for (i, target) in plan.spec.targets.iter().enumerate() {
        let Ok(params) = TargetParameters::parse(target.type_, target.parameters.as_ref()) else {
            continue;
        };
        let settings = connectors.get(&i).map(|c| &c.settings);
        let in_cluster = matches!(settings, Some(ConnectorSettings::Kubernetes(k)) if k.in_cluster);
        match params {
            TargetParameters::Workloads(p) if in_cluster => {
                let Some(ns) = &guard.namespace else { continue };
                let in_ns = match (&p.namespaces, &p.namespace_selector) {
                    (Some(names), _) => names.contains(ns),
                    (None, selector) => selects(selector.as_ref(), &guard.namespace_labels),
                };
                let deployments = p
                    .kinds
                    .as_ref()
                    .is_none_or(|k| k.contains(&WorkloadKind::Deployment));
                if in_ns
                    && deployments
                    && !guard.deployment_labels.is_empty()
                    && selects(p.selector.as_ref(), &guard.deployment_labels)
                {
                    problems.push(format!(
                        "target {} would scale the controller's own Deployment in namespace {ns} to zero, and nothing would wake it up (exclude it with parameters.selector)",
                        target.name
                    ));
                }
            }
            TargetParameters::Eks(p) => {
                let Some(group) = &guard.node_group else {
                    continue;
                };
                let cluster = match settings {
                    Some(ConnectorSettings::Aws(a)) => a.eks_cluster_name.clone(),
                    _ => None,
                };
                if let (Some(mine), Some(theirs)) = (&guard.cluster_name, &cluster)
                    && mine != theirs
                {
                    continue;
                }
                let groups = p.node_groups.unwrap_or_default();
                if groups.is_empty() || groups.iter().any(|g| &g.name == group) {
                    problems.push(format!(
                        "target {} would scale node group {group} to zero, and the controller runs on a node of it{}",
                        target.name,
                        if groups.is_empty() {
                            " (the target names no node groups, so it takes all of them)"
                        } else {
                            ""
                        }
                    ));
                }
            }
            TargetParameters::Karpenter(p) if in_cluster => {
                let Some(pool) = &guard.node_pool else {
                    continue;
                };
                if p.node_pools
                    .as_ref()
                    .is_some_and(|pools| pools.contains(pool))
                {
                    problems.push(format!(
                        "target {} would cap NodePool {pool} to zero and delete its nodes, and the controller runs on one of them",
                        target.name
                    ));
                }
            }
            _ => {}
        }
    }
    (!problems.is_empty())
        .then(|| format!("refused to hibernate: {}; {opt_out}", problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use hibernator_api::fixtures::PlanBuilder;
    use hibernator_api::params::TargetType;
    use hibernator_api::runner::{AwsCredentials, AwsSettings, KubernetesSettings};
    use serde_json::json;

    use super::*;

    fn guard() -> SelfGuard {
        SelfGuard {
            namespace: Some("hibernator-system".into()),
            namespace_labels: BTreeMap::from([("team".into(), "platform".into())]),
            deployment_labels: BTreeMap::from([(
                "app.kubernetes.io/name".into(),
                "hibernator".into(),
            )]),
            cluster_name: None,
            node_group: Some("system-ng".into()),
            node_pool: Some("system".into()),
        }
    }

    fn in_cluster() -> ResolvedConnector {
        ResolvedConnector {
            settings: ConnectorSettings::Kubernetes(KubernetesSettings {
                in_cluster: true,
                ..Default::default()
            }),
            static_secret: None,
            kubeconfig_secret: None,
        }
    }

    fn aws(cluster: &str) -> ResolvedConnector {
        ResolvedConnector {
            settings: ConnectorSettings::Aws(AwsSettings {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                assume_role_arn: None,
                credentials: AwsCredentials::ServiceAccount,
                eks_cluster_name: Some(cluster.into()),
            }),
            static_secret: None,
            kubeconfig_secret: None,
        }
    }

    fn one(t: TargetType, params: serde_json::Value, c: ResolvedConnector) -> Option<String> {
        let plan = PlanBuilder::new("p").target_with("t", t, params).build();
        check(&plan, &BTreeMap::from([(0, c)]), &guard())
    }

    #[test]
    fn workloads_that_would_scale_the_controller_are_refused() {
        let msg = one(
            TargetType::Workloads,
            json!({"namespaces": ["hibernator-system", "team-a"]}),
            in_cluster(),
        )
        .expect("refused");
        assert!(
            msg.contains("target t") && msg.contains("own Deployment"),
            "{msg}"
        );
        assert!(msg.contains("allowSelfHibernation"), "{msg}");
        // By namespace selector, too.
        assert!(
            one(
                TargetType::Workloads,
                json!({"namespaceSelector": {"matchLabels": {"team": "platform"}}}),
                in_cluster()
            )
            .is_some()
        );
        // A selector that leaves the controller out, another namespace, StatefulSets only, or a
        // kubeconfig cluster: allowed.
        for params in [
            json!({"namespaces": ["hibernator-system"], "selector": {"matchLabels": {"tier": "web"}}}),
            json!({"namespaces": ["team-a"]}),
            json!({"namespaces": ["hibernator-system"], "kinds": ["StatefulSet"]}),
        ] {
            assert_eq!(
                one(TargetType::Workloads, params.clone(), in_cluster()),
                None,
                "{params}"
            );
        }
        let kubeconfig = ResolvedConnector {
            settings: ConnectorSettings::Kubernetes(KubernetesSettings::default()),
            ..in_cluster()
        };
        assert_eq!(
            one(
                TargetType::Workloads,
                json!({"namespaces": ["hibernator-system"]}),
                kubeconfig
            ),
            None
        );
    }

    #[test]
    fn node_groups_and_node_pools_of_the_controllers_node_are_refused() {
        let msg = one(
            TargetType::Eks,
            json!({"clusterName": "eks-1", "nodeGroups": [{"name": "system-ng"}]}),
            aws("eks-1"),
        )
        .expect("refused");
        assert!(msg.contains("node group system-ng"), "{msg}");
        assert!(
            one(
                TargetType::Eks,
                json!({"clusterName": "eks-1"}),
                aws("eks-1")
            )
            .expect("all node groups")
            .contains("takes all of them")
        );
        assert_eq!(
            one(
                TargetType::Eks,
                json!({"clusterName": "eks-1", "nodeGroups": [{"name": "gpu-ng"}]}),
                aws("eks-1")
            ),
            None
        );
        assert!(
            one(
                TargetType::Karpenter,
                json!({"nodePools": ["default", "system"]}),
                in_cluster()
            )
            .is_some()
        );
        assert_eq!(
            one(
                TargetType::Karpenter,
                json!({"nodePools": ["default"]}),
                in_cluster()
            ),
            None
        );
    }

    #[test]
    fn a_known_other_cluster_and_the_opt_in_are_allowed() {
        let mut g = guard();
        g.cluster_name = Some("eks-ops".into());
        let plan = PlanBuilder::new("p")
            .target_with("t", TargetType::Eks, json!({"clusterName": "eks-1"}))
            .build();
        assert_eq!(check(&plan, &BTreeMap::from([(0, aws("eks-1"))]), &g), None);
        let mut plan = PlanBuilder::new("p")
            .target_with("t", TargetType::Eks, json!({"clusterName": "eks-1"}))
            .build();
        plan.spec.behavior = Some(hibernator_api::plan::Behavior {
            allow_self_hibernation: Some(true),
            ..Default::default()
        });
        assert_eq!(
            check(&plan, &BTreeMap::from([(0, aws("eks-1"))]), &guard()),
            None
        );
    }
}
