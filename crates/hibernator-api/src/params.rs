//! Typed executor parameters, one struct per target type.
//!
//! In the CRD, `spec.targets[].parameters` is one object whose properties are the union of
//! every type's fields (so the API server knows each field's type and prunes nothing
//! silently), plus generated CEL rules on the target that reject fields of other types and
//! require what each type needs. In code, [`TargetParameters::parse`] turns `(type,
//! parameters)` into the typed struct, rejecting unknown fields.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Target types (executors).
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// RDS DB instances and Aurora clusters.
    Rds,
    /// EKS managed node groups.
    Eks,
    /// EC2 instances.
    Ec2,
    /// EC2 auto-scaling groups.
    Asg,
    /// ECS services (with their Application Auto Scaling targets).
    Ecs,
    /// Deployments and StatefulSets in a cluster.
    Workloads,
    /// Karpenter NodePools in a cluster.
    Karpenter,
    /// Flux and Argo CD objects whose reconciliation is paused while the plan sleeps.
    Gitops,
    /// Does nothing (tests and demos).
    Noop,
}

impl TargetType {
    /// Every type.
    pub const ALL: [TargetType; 9] = [
        TargetType::Rds,
        TargetType::Eks,
        TargetType::Ec2,
        TargetType::Asg,
        TargetType::Ecs,
        TargetType::Workloads,
        TargetType::Karpenter,
        TargetType::Gitops,
        TargetType::Noop,
    ];

    /// The type as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rds => "rds",
            Self::Eks => "eks",
            Self::Ec2 => "ec2",
            Self::Asg => "asg",
            Self::Ecs => "ecs",
            Self::Workloads => "workloads",
            Self::Karpenter => "karpenter",
            Self::Gitops => "gitops",
            Self::Noop => "noop",
        }
    }

    /// Parses the manifest spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The connector kind targets of this type use (`None`: any).
    pub fn connector_kind(self) -> Option<crate::plan::ConnectorKind> {
        use crate::plan::ConnectorKind;
        match self {
            Self::Rds | Self::Eks | Self::Ec2 | Self::Asg | Self::Ecs => {
                Some(ConnectorKind::CloudProvider)
            }
            Self::Workloads | Self::Karpenter | Self::Gitops => Some(ConnectorKind::K8SCluster),
            Self::Noop => None,
        }
    }

    /// True for the types whose runner can check, while the plan sleeps, that what it put to
    /// sleep is still asleep (in-sleep enforcement): every type that changes something.
    pub fn checks_in_sleep(self) -> bool {
        self != Self::Noop
    }

    fn schema(self, generator: &mut SchemaGenerator) -> Schema {
        match self {
            Self::Rds => generator.subschema_for::<RdsParameters>(),
            Self::Eks => generator.subschema_for::<EksParameters>(),
            Self::Ec2 => generator.subschema_for::<Ec2Parameters>(),
            Self::Asg => generator.subschema_for::<AsgParameters>(),
            Self::Ecs => generator.subschema_for::<EcsParameters>(),
            Self::Workloads => generator.subschema_for::<WorkloadsParameters>(),
            Self::Karpenter => generator.subschema_for::<KarpenterParameters>(),
            Self::Gitops => generator.subschema_for::<GitopsParameters>(),
            Self::Noop => generator.subschema_for::<NoopParameters>(),
        }
    }

    /// Conditions that the type's parameters must satisfy, as CEL on the target (`self` is the
    /// target), with their messages.
    fn rules(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Self::Eks => vec![(
                "has(self.parameters) && has(self.parameters.clusterName)",
                "eks targets need parameters.clusterName (a K8SCluster name or an EKS cluster name)",
            )],
            Self::Ec2 => vec![(
                "has(self.parameters) && has(self.parameters.selector) && has(self.parameters.selector.instanceIds) != has(self.parameters.selector.tags)",
                "ec2 targets need parameters.selector with exactly one of instanceIds or tags",
            )],
            Self::Asg => vec![(
                "has(self.parameters) && has(self.parameters.selector) && has(self.parameters.selector.names) != has(self.parameters.selector.tags)",
                "asg targets need parameters.selector with exactly one of names or tags",
            )],
            Self::Ecs => vec![(
                "has(self.parameters) && has(self.parameters.cluster) && has(self.parameters.selector) && has(self.parameters.selector.services) != has(self.parameters.selector.tags)",
                "ecs targets need parameters.cluster and parameters.selector with exactly one of services or tags",
            )],
            Self::Rds => vec![(
                "!has(self.parameters) || !has(self.parameters.selector) || (has(self.parameters.selector.instanceIds) || has(self.parameters.selector.clusterIds)) != has(self.parameters.selector.tags)",
                "an rds selector takes instanceIds and/or clusterIds, or tags, not both",
            )],
            Self::Workloads => vec![(
                "has(self.parameters) && has(self.parameters.namespaces) != has(self.parameters.namespaceSelector)",
                "workloads targets need exactly one of parameters.namespaces or parameters.namespaceSelector",
            )],
            Self::Karpenter => vec![(
                "has(self.parameters) && has(self.parameters.nodePools) != has(self.parameters.selector)",
                "karpenter targets need exactly one of parameters.nodePools or parameters.selector",
            )],
            Self::Gitops => vec![
                (
                    "has(self.parameters) && (has(self.parameters.flux) || has(self.parameters.argocd))",
                    "gitops targets need parameters.flux and/or parameters.argocd",
                ),
                (
                    "!has(self.parameters) || !has(self.parameters.flux) || has(self.parameters.flux.kustomizations) || has(self.parameters.flux.helmReleases) || has(self.parameters.flux.selector)",
                    "parameters.flux needs kustomizations, helmReleases and/or selector",
                ),
                (
                    "!has(self.parameters) || !has(self.parameters.argocd) || has(self.parameters.argocd.applications) || has(self.parameters.argocd.selector)",
                    "parameters.argocd needs applications and/or selector",
                ),
            ],
            Self::Noop => vec![],
        }
    }
}

impl std::fmt::Display for TargetType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters of an `rds` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsParameters {
    /// Take a manual snapshot of each DB instance or cluster before stopping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_before_stop: Option<bool>,
    /// How many of the snapshots this plan's target took of each database to keep (they carry
    /// the tags `hibernator.ardikasaputro.io/plan`, `/target` and `/cycle`); after each new
    /// snapshot the older ones beyond `keep` are deleted, never any other snapshot. Absent:
    /// every snapshot is kept. Needs `snapshotBeforeStop: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<SnapshotRetention>,
    /// Which resources the target covers. rds: without a selector the target's name is the DB
    /// instance identifier (or, if there is no such instance, the Aurora cluster identifier).
    /// ec2: instances managed by an auto-scaling group or by Karpenter are always left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<RdsSelector>,
}

/// How many of its own snapshots an `rds` target keeps per database.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRetention {
    /// The newest snapshots kept per DB instance or cluster (the one just taken included).
    #[schemars(range(min = 1, max = 100))]
    pub keep: u32,
}

/// Which RDS resources an `rds` target covers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsSelector {
    /// Explicit identifiers: DB instance identifiers for rds, instance ids for ec2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 255)))]
    pub instance_ids: Option<Vec<String>>,
    /// Aurora DB cluster identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 255)))]
    pub cluster_ids: Option<Vec<String>>,
    /// Resources carrying all of these tags; an empty value matches any value
    /// of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    pub tags: Option<BTreeMap<String, String>>,
    /// Only resources of these engines, with the ids or tags above (`docdb` and `neptune` for
    /// DocumentDB and Neptune clusters, which the RDS API stops and starts like Aurora
    /// clusters; `aurora-postgresql`, `postgres`, `mysql`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 63)))]
    pub engines: Option<Vec<String>>,
}

/// Parameters of an `eks` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EksParameters {
    /// A K8SCluster in the plan's namespace whose `eks.name` is the cluster, or
    /// else the literal EKS cluster name.
    #[schemars(length(min = 1, max = 100))]
    pub cluster_name: String,
    /// Managed node groups to scale to zero; all of the cluster's when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub node_groups: Option<Vec<NodeGroupRef>>,
}

/// A managed node group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroupRef {
    /// Name of the node group.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// Parameters of an `ec2` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ec2Parameters {
    /// Which resources the target covers. rds: without a selector the target's name is the DB
    /// instance identifier (or, if there is no such instance, the Aurora cluster identifier).
    /// ec2: instances managed by an auto-scaling group or by Karpenter are always left alone.
    pub selector: Ec2Selector,
    /// Hibernate (stop with the RAM saved to the root volume) the instances that have
    /// hibernation enabled; the others are stopped as usual, and the runner says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernate: Option<bool>,
}

/// Which EC2 instances an `ec2` target covers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ec2Selector {
    /// Explicit identifiers: DB instance identifiers for rds, instance ids for ec2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 255)))]
    pub instance_ids: Option<Vec<String>>,
    /// Resources carrying all of these tags; an empty value matches any value
    /// of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    pub tags: Option<BTreeMap<String, String>>,
}

/// Parameters of an `asg` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsgParameters {
    /// Which resources the target covers. rds: without a selector the target's name is the DB
    /// instance identifier (or, if there is no such instance, the Aurora cluster identifier).
    /// ec2: instances managed by an auto-scaling group or by Karpenter are always left alone.
    pub selector: AsgSelector,
}

/// Which auto-scaling groups an `asg` target covers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsgSelector {
    /// Auto-scaling group names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 255)))]
    pub names: Option<Vec<String>>,
    /// Resources carrying all of these tags; an empty value matches any value
    /// of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    pub tags: Option<BTreeMap<String, String>>,
}

/// Parameters of an `ecs` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EcsParameters {
    /// The ECS cluster whose services the target covers: its name or ARN.
    #[schemars(length(min = 1, max = 2048))]
    pub cluster: String,
    /// Which resources the target covers. rds: without a selector the target's name is the DB
    /// instance identifier (or, if there is no such instance, the Aurora cluster identifier).
    /// ec2: instances managed by an auto-scaling group or by Karpenter are always left alone.
    pub selector: EcsSelector,
}

impl EcsParameters {
    /// The cluster's name (the part after `cluster/` of an ARN), as record keys carry it.
    pub fn cluster_name(&self) -> &str {
        ecs_cluster_name(&self.cluster)
    }
}

/// The name of an ECS cluster given by name or ARN (`arn:aws:ecs:<region>:<account>:cluster/<name>`).
pub fn ecs_cluster_name(cluster: &str) -> &str {
    match cluster.strip_prefix("arn:") {
        Some(rest) => rest.rsplit_once('/').map_or(cluster, |(_, name)| name),
        None => cluster,
    }
}

/// Which ECS services an `ecs` target covers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EcsSelector {
    /// Service names (or ARNs) in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 2048)))]
    pub services: Option<Vec<String>>,
    /// Resources carrying all of these tags; an empty value matches any value
    /// of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    pub tags: Option<BTreeMap<String, String>>,
}

/// Parameters of a `workloads` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadsParameters {
    /// Namespaces whose workloads are scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 63)))]
    pub namespaces: Option<Vec<String>>,
    /// Label selector choosing the namespaces instead of `namespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Kinds to put to sleep (default `Deployment` and `StatefulSet`): `Deployment`,
    /// `StatefulSet`, `CronJob` (suspended), or any kind with a scale subresource as
    /// `group/version/Kind` (for example `argoproj.io/v1alpha1/Rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10))]
    pub kinds: Option<Vec<WorkloadKind>>,
    /// Label selector on the objects (workloads, NodePools); all when
    /// absent for workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl WorkloadsParameters {
    /// The kinds the target puts to sleep (`kinds`, or Deployments and StatefulSets).
    pub fn kinds(&self) -> Vec<WorkloadKind> {
        self.kinds
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| vec![WorkloadKind::Deployment, WorkloadKind::StatefulSet])
    }
}

/// A kind of workload: `Deployment`, `StatefulSet`, `CronJob`, or a kind with a scale
/// subresource written `group/version/Kind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// batch/v1 CronJob (suspended, not scaled).
    CronJob,
    /// Any kind with a scale subresource.
    Scalable(ScalableKind),
}

/// A kind with a scale subresource, found through API discovery.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScalableKind {
    /// API group (never the core group).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

impl ScalableKind {
    /// `group/version`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The key prefix of its restore records: the lower-case kind, a dot and the group
    /// (`rollout.argoproj.io`); the version is in the record, the key stays the same across
    /// versions.
    pub fn key_prefix(&self) -> String {
        format!("{}.{}", self.kind.to_lowercase(), self.group)
    }
}

/// The pattern of `kinds[]` entries.
pub const WORKLOAD_KIND_PATTERN: &str = r"^(Deployment|StatefulSet|CronJob|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/v[0-9]+((alpha|beta)[0-9]+)?/[A-Z][A-Za-z0-9]*)$";

impl WorkloadKind {
    /// Reads `Deployment`, `StatefulSet`, `CronJob` or `group/version/Kind`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "Deployment" => return Ok(Self::Deployment),
            "StatefulSet" => return Ok(Self::StatefulSet),
            "CronJob" => return Ok(Self::CronJob),
            _ => {}
        }
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            format!(
                "kind {s:?} is neither Deployment, StatefulSet nor CronJob, nor group/version/Kind \
                 (for example argoproj.io/v1alpha1/Rollout)"
            )
        };
        let [group, version, kind] = parts[..] else {
            return Err(bad());
        };
        let dns = |g: &str| {
            g.contains('.')
                && g.split('.').all(|l| {
                    !l.is_empty()
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        };
        let version_ok = version.strip_prefix('v').is_some_and(|v| {
            let digits = v.chars().take_while(char::is_ascii_digit).count();
            let rest = &v[digits..];
            digits > 0
                && (rest.is_empty()
                    || ["alpha", "beta"].iter().any(|p| {
                        rest.strip_prefix(p)
                            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                    }))
        });
        let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && kind.chars().all(|c| c.is_ascii_alphanumeric());
        if !dns(group) || !version_ok || !kind_ok {
            return Err(bad());
        }
        Ok(Self::Scalable(ScalableKind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }))
    }

    /// The spelling of manifests.
    pub fn as_string(&self) -> String {
        match self {
            Self::Deployment => "Deployment".into(),
            Self::StatefulSet => "StatefulSet".into(),
            Self::CronJob => "CronJob".into(),
            Self::Scalable(k) => format!("{}/{}/{}", k.group, k.version, k.kind),
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl Serialize for WorkloadKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for WorkloadKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for WorkloadKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WorkloadKind".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": 253,
            "pattern": WORKLOAD_KIND_PATTERN,
        })
    }
}

/// Parameters of a `karpenter` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KarpenterParameters {
    /// NodePool names whose limits are capped to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 253)))]
    pub node_pools: Option<Vec<String>>,
    /// Label selector on the objects (workloads, NodePools); all when
    /// absent for workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Parameters of a `gitops` target: the Flux and Argo CD objects whose reconciliation is paused
/// while the plan sleeps, so that Git does not wake up what the plan put to sleep.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitopsParameters {
    /// Flux Kustomizations and HelmReleases to suspend (`spec.suspend: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux: Option<FluxObjects>,
    /// Argo CD Applications whose automated sync is turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argocd: Option<ArgoCdObjects>,
}

/// Flux objects of a `gitops` target: the named ones and those the selector matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FluxObjects {
    /// `kustomize.toolkit.fluxcd.io/v1` Kustomizations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub kustomizations: Option<Vec<NamespacedName>>,
    /// `helm.toolkit.fluxcd.io/v2` HelmReleases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub helm_releases: Option<Vec<NamespacedName>>,
    /// Kustomizations and HelmReleases of any namespace with these labels (not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Argo CD Applications of a `gitops` target: the named ones and those the selector matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgoCdObjects {
    /// `argoproj.io/v1alpha1` Applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub applications: Option<Vec<NamespacedName>>,
    /// Applications of any namespace with these labels (not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// An object by namespace and name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedName {
    /// Namespace of the object.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Parameters of a `noop` target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoopParameters {
    /// Seconds to wait before finishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub delay_seconds: Option<i32>,
    /// Which operations fail on purpose: `none` (default), `hibernate`, `wake` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<NoopFail>,
}

/// Which operations a noop target fails on purpose: `none` (default), `hibernate`, `wake` or
/// `both`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoopFail {
    /// Never fail.
    #[default]
    None,
    /// Fail hibernation.
    Hibernate,
    /// Fail wake-up.
    Wake,
    /// Fail both.
    Both,
}

/// Typed parameters of a target.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetParameters {
    /// `rds`.
    Rds(RdsParameters),
    /// `eks`.
    Eks(EksParameters),
    /// `ec2`.
    Ec2(Ec2Parameters),
    /// `asg`.
    Asg(AsgParameters),
    /// `ecs`.
    Ecs(EcsParameters),
    /// `workloads`.
    Workloads(WorkloadsParameters),
    /// `karpenter`.
    Karpenter(KarpenterParameters),
    /// `gitops`.
    Gitops(GitopsParameters),
    /// `noop`.
    Noop(NoopParameters),
}

/// Why parameters could not be read as their type's struct.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("parameters of a {type_} target: {message}")]
pub struct ParametersError {
    /// The target type.
    pub type_: TargetType,
    /// What is wrong.
    pub message: String,
}

impl TargetParameters {
    /// Reads `parameters` (absent = `{}`) as the struct of `type_`; unknown fields are errors.
    pub fn parse(type_: TargetType, parameters: Option<&Value>) -> Result<Self, ParametersError> {
        let value = parameters.cloned().unwrap_or_else(|| json!({}));
        let err = |e: serde_json::Error| ParametersError {
            type_,
            message: e.to_string(),
        };
        Ok(match type_ {
            TargetType::Rds => {
                let p: RdsParameters = serde_json::from_value(value).map_err(err)?;
                if p.snapshot_retention.is_some() && p.snapshot_before_stop != Some(true) {
                    return Err(ParametersError {
                        type_,
                        message: "snapshotRetention keeps snapshots the target takes: it needs snapshotBeforeStop: true".into(),
                    });
                }
                Self::Rds(p)
            }
            TargetType::Eks => Self::Eks(serde_json::from_value(value).map_err(err)?),
            TargetType::Ec2 => Self::Ec2(serde_json::from_value(value).map_err(err)?),
            TargetType::Asg => Self::Asg(serde_json::from_value(value).map_err(err)?),
            TargetType::Ecs => {
                let p: EcsParameters = serde_json::from_value(value).map_err(err)?;
                // Without a choice the runner would take every service of the cluster.
                let chosen = (
                    p.selector.services.as_ref().is_some_and(|s| !s.is_empty()),
                    p.selector.tags.as_ref().is_some_and(|t| !t.is_empty()),
                );
                if chosen.0 == chosen.1 {
                    return Err(ParametersError {
                        type_,
                        message: "selector needs exactly one of services (a non-empty list) or tags (at least one)".into(),
                    });
                }
                Self::Ecs(p)
            }
            TargetType::Workloads => Self::Workloads(serde_json::from_value(value).map_err(err)?),
            TargetType::Karpenter => Self::Karpenter(serde_json::from_value(value).map_err(err)?),
            TargetType::Gitops => Self::Gitops(serde_json::from_value(value).map_err(err)?),
            TargetType::Noop => Self::Noop(serde_json::from_value(value).map_err(err)?),
        })
    }

    /// The parameters as JSON (for the runner's environment).
    pub fn to_value(&self) -> Value {
        let v = match self {
            Self::Rds(p) => serde_json::to_value(p),
            Self::Eks(p) => serde_json::to_value(p),
            Self::Ec2(p) => serde_json::to_value(p),
            Self::Asg(p) => serde_json::to_value(p),
            Self::Ecs(p) => serde_json::to_value(p),
            Self::Workloads(p) => serde_json::to_value(p),
            Self::Karpenter(p) => serde_json::to_value(p),
            Self::Gitops(p) => serde_json::to_value(p),
            Self::Noop(p) => serde_json::to_value(p),
        };
        v.unwrap_or_else(|_| json!({}))
    }
}

fn generator() -> SchemaGenerator {
    schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
}

/// Visits every property below `schema` with its dotted path.
fn walk_properties(schema: &Value, prefix: &str, visit: &mut dyn FnMut(&str, &Value)) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            visit(&path, sub);
            walk_properties(sub, &path, visit);
        }
    }
}

/// Where each parameter field (dotted path under `parameters`) is allowed.
fn field_types(generator: &mut SchemaGenerator) -> BTreeMap<String, BTreeSet<TargetType>> {
    let mut out: BTreeMap<String, BTreeSet<TargetType>> = BTreeMap::new();
    for t in TargetType::ALL {
        let schema = t.schema(generator).to_value();
        walk_properties(&schema, "", &mut |path, _| {
            out.entry(path.to_string()).or_default().insert(t);
        });
    }
    out
}

/// Merges `from` into `into`: the union of object properties, recursively.
fn merge_schema(into: &mut Value, from: &Value) {
    let (Some(into_obj), Some(from_obj)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (key, value) in from_obj {
        match (key.as_str(), into_obj.get_mut(key)) {
            ("properties", Some(Value::Object(existing))) => {
                if let Value::Object(new_props) = value {
                    for (name, sub) in new_props {
                        match existing.get_mut(name) {
                            Some(current) => merge_schema(current, sub),
                            None => {
                                existing.insert(name.clone(), sub.clone());
                            }
                        }
                    }
                }
            }
            // Required fields differ per type; CEL rules on the target enforce them.
            ("required", _) => {}
            (_, None) => {
                into_obj.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    into_obj.remove("required");
}

/// Sets the description of the property at `path` (dotted) below `schema`.
fn set_description(schema: &mut Value, path: &str, description: String) {
    let mut node = schema;
    for segment in path.split('.') {
        node = match node.get_mut("properties").and_then(|p| p.get_mut(segment)) {
            Some(n) => n,
            None => return,
        };
    }
    if let Some(obj) = node.as_object_mut() {
        obj.insert("description".into(), Value::String(description));
    }
}

/// Schema of `spec.targets[].parameters`: the union of every type's parameters. Each field's
/// description starts with the target types it applies to.
pub fn parameters_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut merged = json!({"type": "object", "properties": {}});
    // path -> [(types, description)], descriptions kept apart when types document a shared
    // field differently.
    let mut docs: BTreeMap<String, Vec<(Vec<&str>, String)>> = BTreeMap::new();
    for t in TargetType::ALL {
        let schema = t.schema(generator).to_value();
        merge_schema(&mut merged, &schema);
        walk_properties(&schema, "", &mut |path, sub| {
            let text = sub
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let entry = docs.entry(path.to_string()).or_default();
            match entry.iter_mut().find(|(_, d)| *d == text) {
                Some((types, _)) => types.push(t.as_str()),
                None => entry.push((vec![t.as_str()], text)),
            }
        });
    }
    for (path, parts) in docs {
        let text = parts
            .iter()
            .map(|(types, d)| format!("({}) {d}", types.join(", ")))
            .collect::<Vec<_>>()
            .join(" ");
        set_description(&mut merged, &path, text);
    }
    let obj = merged.as_object_mut().expect("object schema");
    obj.remove("additionalProperties");
    obj.insert(
        "description".into(),
        Value::String(
            "Executor parameters. Each field says in brackets which target types it applies to; \
             fields of other types are rejected."
                .into(),
        ),
    );
    Schema::try_from(merged).expect("an object schema")
}

/// A CEL map literal from each target type to a list of strings.
fn cel_map_of_lists(entries: impl Iterator<Item = (TargetType, Vec<String>)>) -> String {
    let entries: Vec<String> = entries
        .map(|(t, items)| {
            let items: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
            format!("'{}': [{}]", t.as_str(), items.join(", "))
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// Adds to the target schema its CEL rules: one that rejects parameter fields of other target
/// types, naming the first, and one with each type's own conditions on its parameters.
///
/// Why so few rules, and why they look as they do: the API server evaluates every rule of the
/// spec on every write of a plan, status writes included, and each field a rule reads makes it
/// copy the schema's property map of the object read from (Kubernetes 1.37). With a rule per
/// parameter field and per condition (33 per target), a status write of a plan of ten noop
/// targets cost the API server about 20 ms of CPU; with these two, about 9 ms, and 8.3 ms
/// without any rule (docs/architecture.md, "Scaling"). So the first rule tests the fields a
/// target sets against the list its type allows (`dyn()` lets the type checker iterate over an
/// object's fields) instead of asking `has()` for every field of another type, and the second
/// reads `self.type` once (bound to a variable by a one-element list: CRD rules have no
/// `cel.bind`) and looks at the parameters only for the target's own type.
pub fn add_parameter_rules(schema: &mut Schema) {
    let fields = field_types(&mut generator());
    let allows = |path: &str, t: TargetType| fields.get(path).is_none_or(|ts| ts.contains(&t));
    // Every object whose fields differ between types: `parameters`, and nested objects such
    // as `parameters.selector`.
    let mut objects: BTreeSet<String> = BTreeSet::new();
    for (path, types) in &fields {
        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
        // A field limited to the types of its parent needs no check of its own.
        let parent_types = fields
            .get(parent)
            .cloned()
            .unwrap_or_else(|| TargetType::ALL.into_iter().collect());
        if parent_types != *types {
            objects.insert(parent.to_string());
        }
    }
    let mut checks = Vec::new();
    let mut message =
        "'parameters of a ' + self.type + ' target hold a field of another target type'"
            .to_string();
    for object in objects.iter().rev() {
        let at = if object.is_empty() {
            "self.parameters".to_string()
        } else {
            format!("self.parameters.{object}")
        };
        let prefix = if object.is_empty() {
            "parameters.".to_string()
        } else {
            format!("parameters.{object}.")
        };
        let children: Vec<&str> = fields
            .keys()
            .filter_map(|path| match path.rsplit_once('.') {
                Some((parent, name)) if parent == object => Some(name),
                None if object.is_empty() => Some(path.as_str()),
                _ => None,
            })
            .collect();
        let child_path = |c: &str| {
            format!("{prefix}{c}")
                .trim_start_matches("parameters.")
                .to_string()
        };
        let allowed = cel_map_of_lists(TargetType::ALL.into_iter().map(|t| {
            let ok = children
                .iter()
                .filter(|c| allows(&child_path(c), t))
                .map(|c| c.to_string())
                .collect();
            (t, ok)
        }));
        // The types each restricted field applies to, for the message.
        let owners: Vec<String> = children
            .iter()
            .filter_map(|c| {
                let types = &fields[&child_path(c)];
                (types.len() < TargetType::ALL.len()).then(|| {
                    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                    format!("'{c}': '{}'", names.join(", "))
                })
            })
            .collect();
        // The parents must be set before `has()` may look at the object.
        let segments: Vec<&str> = object.split('.').filter(|s| !s.is_empty()).collect();
        let present: Vec<String> = (1..=segments.len())
            .map(|i| format!("has(self.parameters.{})", segments[..i].join(".")))
            .collect();
        let check = format!("[{allowed}[self.type]].all(a, dyn({at}).all(k, k in a))");
        checks.push(if present.is_empty() {
            check
        } else {
            format!("(!{} || {check})", present.join(" || !"))
        });
        // The first field, in the order of the schema, that the type does not allow.
        let names: Vec<String> = children.iter().map(|c| format!("'{c}'")).collect();
        let offending = format!(
            "[{}].filter(k, k in dyn({at}) && !(k in {allowed}[self.type]))",
            names.join(", ")
        );
        let mut guard = present.clone();
        guard.push(format!("size({offending}) > 0"));
        message = format!(
            "{} ? [{offending}[0]].map(k, '{prefix}' + k + ' applies only to target type(s) ' + {{{}}}[k] + ', not ' + self.type)[0] : {message}",
            guard.join(" && "),
            owners.join(", ")
        );
    }
    checks.reverse();
    let mut rules = vec![json!({
        "rule": format!("!has(self.parameters) || {}", checks.join(" && ")),
        "messageExpression": message,
        "fieldPath": ".parameters",
        "reason": "FieldValueForbidden",
    })];
    let mut conditions = Vec::new();
    let mut messages = "'parameters of a ' + self.type + ' target are incomplete'".to_string();
    for t in TargetType::ALL.into_iter().rev() {
        for (condition, text) in t.rules().into_iter().rev() {
            conditions.push(format!("(ty != '{}' || ({condition}))", t.as_str()));
            messages = format!(
                "self.type == '{}' && !({condition}) ? '{text}' : {messages}",
                t.as_str()
            );
        }
    }
    conditions.reverse();
    rules.push(json!({
        "rule": format!("[self.type].all(ty, {})", conditions.join(" && ")),
        "messageExpression": messages,
        "fieldPath": ".parameters",
    }));
    let obj = schema.ensure_object();
    let entry = obj
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(vec![]));
    if let Value::Array(list) = entry {
        list.extend(rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_fields_have_one_shape() {
        // A field shared by several types must mean the same thing in each, otherwise the
        // merged schema would be wrong for one of them.
        let mut generator = generator();
        let mut seen: BTreeMap<String, Value> = BTreeMap::new();
        fn leaves(schema: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    let path = format!("{prefix}.{name}");
                    if sub.get("properties").is_some() {
                        leaves(sub, &path, out);
                    } else {
                        let mut s = sub.clone();
                        s.as_object_mut().map(|o| o.remove("description"));
                        out.push((path, s));
                    }
                }
            }
        }
        for t in TargetType::ALL {
            let mut out = vec![];
            leaves(&t.schema(&mut generator).to_value(), "", &mut out);
            for (path, shape) in out {
                if let Some(prev) = seen.get(&path) {
                    assert_eq!(prev, &shape, "field {path} differs between types");
                } else {
                    seen.insert(path, shape);
                }
            }
        }
    }

    #[test]
    fn parse_rejects_fields_of_other_types() {
        let err = TargetParameters::parse(TargetType::Rds, Some(&json!({"clusterName": "x"})))
            .unwrap_err();
        assert!(err.message.contains("clusterName"), "{err}");
        let ok =
            TargetParameters::parse(TargetType::Rds, Some(&json!({"snapshotBeforeStop": true})))
                .unwrap();
        assert_eq!(
            ok,
            TargetParameters::Rds(RdsParameters {
                snapshot_before_stop: Some(true),
                snapshot_retention: None,
                selector: None
            })
        );
    }

    #[test]
    fn an_ecs_selector_chooses_services_or_tags() {
        let parse = |v: Value| TargetParameters::parse(TargetType::Ecs, Some(&v));
        for bad in [
            json!({"cluster": "web", "selector": {}}),
            json!({"cluster": "web", "selector": {"services": []}}),
            json!({"cluster": "web", "selector": {"tags": {}}}),
            json!({"cluster": "web", "selector": {"services": ["api"], "tags": {"env": "dev"}}}),
        ] {
            let err = parse(bad.clone()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "parameters of a ecs target: selector needs exactly one of services (a non-empty list) or tags (at least one)",
                "{bad}"
            );
        }
        let err = parse(json!({"selector": {"services": ["api"]}})).unwrap_err();
        assert!(err.message.contains("missing field `cluster`"), "{err}");
        let ok = parse(json!({"cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/web", "selector": {"services": ["api"]}})).unwrap();
        let TargetParameters::Ecs(ecs) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(ecs.cluster_name(), "web");
        assert_eq!(ecs_cluster_name("web"), "web");
    }

    #[test]
    fn snapshot_retention_needs_snapshots() {
        let err = TargetParameters::parse(
            TargetType::Rds,
            Some(&json!({"snapshotRetention": {"keep": 3}})),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameters of a rds target: snapshotRetention keeps snapshots the target takes: it needs snapshotBeforeStop: true"
        );
        TargetParameters::parse(
            TargetType::Rds,
            Some(&json!({"snapshotBeforeStop": true, "snapshotRetention": {"keep": 3}})),
        )
        .unwrap();
    }

    #[test]
    fn workload_kinds_are_names_or_group_version_kind() {
        let re = regex::Regex::new(WORKLOAD_KIND_PATTERN).unwrap();
        for (text, ok) in [
            ("Deployment", true),
            ("CronJob", true),
            ("argoproj.io/v1alpha1/Rollout", true),
            ("apps/v1/ReplicaSet", false),
            ("argoproj.io/v1/rollout", false),
            ("argoproj.io/1/Rollout", false),
            ("argoproj.io/v1alpha/Rollout", false),
            ("Rollout", false),
            ("argoproj.io/v1alpha1/Rollout/x", false),
        ] {
            let parsed = WorkloadKind::parse(text);
            assert_eq!(parsed.is_ok(), ok, "{text}: {parsed:?}");
            // The CRD's pattern agrees with the parser.
            assert_eq!(re.is_match(text), ok, "pattern on {text}");
            if let Ok(k) = parsed {
                assert_eq!(k.to_string(), text);
            }
        }
        let e = TargetParameters::parse(
            TargetType::Workloads,
            Some(&json!({"namespaces": ["a"], "kinds": ["Rollout"]})),
        )
        .unwrap_err();
        assert!(e.message.contains("kind \"Rollout\" is neither"), "{e}");
        let WorkloadKind::Scalable(k) =
            WorkloadKind::parse("argoproj.io/v1alpha1/Rollout").unwrap()
        else {
            panic!("scalable")
        };
        assert_eq!(k.key_prefix(), "rollout.argoproj.io");
        assert_eq!(k.api_version(), "argoproj.io/v1alpha1");
    }

    #[test]
    fn absent_parameters_are_empty() {
        assert!(TargetParameters::parse(TargetType::Noop, None).is_ok());
        let err = TargetParameters::parse(TargetType::Eks, None).unwrap_err();
        assert!(err.message.contains("clusterName"), "{err}");
    }
}
