//! Connectors: CloudProvider (an AWS account) and K8SCluster (a Kubernetes cluster).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{NAME_PATTERN, SecretRef};

/// Specification of a CloudProvider.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "connector.hibernator.ardikasaputro.io",
    version = "v1alpha1",
    kind = "CloudProvider",
    plural = "cloudproviders",
    singular = "cloudprovider",
    shortname = "cprov",
    category = "hibernator",
    namespaced,
    status = "ConnectorStatus",
    derive = "PartialEq",
    doc = "Access to a cloud account for the runners of HibernationPlan targets.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Account", type_ = "string", json_path = ".spec.aws.accountId"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.aws.region"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type != 'aws' || has(self.aws)")
    .message("type aws needs the aws section")
    .field_path(".aws"))]
pub struct CloudProviderSpec {
    /// Cloud: `aws`.
    #[serde(rename = "type")]
    pub type_: CloudType,
    /// AWS account settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSpec>,
    /// Namespaces whose plans may use this CloudProvider besides its own; none when absent.
    /// Only connectors without Secrets (`auth.serviceAccount`) can be shared: a Secret is never
    /// copied to another namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// Which other namespaces may use a connector: those named, and those whose labels match
/// `selector`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A label selector over namespaces (an empty selector selects every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl AllowedNamespaces {
    /// Whether `namespace` (with `labels`, when known) may use the connector. A selector that
    /// cannot be read allows nothing.
    pub fn allows(
        &self,
        namespace: &str,
        labels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> bool {
        use kube::core::{Selector, SelectorExt};
        self.names.iter().any(|n| n == namespace)
            || match (&self.selector, labels) {
                (Some(s), Some(l)) => Selector::try_from(s.clone()).is_ok_and(|s| s.matches(l)),
                _ => false,
            }
    }
}

/// Supported clouds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CloudType {
    /// Amazon Web Services.
    Aws,
}

/// An AWS account.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSpec {
    /// The 12-digit account id; runners refuse to act when their credentials belong to another
    /// account.
    #[schemars(regex(pattern = "^[0-9]{12}$"), length(max = 12))]
    pub account_id: String,
    /// Default region of the account's resources, for example `us-east-1`.
    #[schemars(regex(pattern = "^[a-z]{2}(-[a-z]+)+-[0-9]+$"), length(max = 32))]
    pub region: String,
    /// IAM role to assume with the credentials from `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"),
        length(max = 2048)
    )]
    pub assume_role_arn: Option<String>,
    /// Where the runner's AWS credentials come from.
    pub auth: AwsAuth,
}

/// AWS credentials source: exactly one of `serviceAccount` or `static`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.serviceAccount) != has(self.static)")
    .message("auth needs exactly one of serviceAccount or static"))]
pub struct AwsAuth {
    /// Use the runner pod's own identity (IRSA or EKS Pod Identity on the runner
    /// ServiceAccount); write `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountAuth>,
    /// Static keys from a Secret holding `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
    /// optionally `AWS_SESSION_TOKEN`), mounted into the runner and never logged.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "static")]
    pub static_: Option<StaticAuth>,
}

/// Marker for "use the runner pod's identity".
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct ServiceAccountAuth {}

/// Static credentials.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StaticAuth {
    /// The Secret, in the CloudProvider's namespace.
    pub secret_ref: SecretRef,
}

/// Observed state of a connector.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// The generation the controller last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (`Ready`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::status::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Specification of a K8SCluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "connector.hibernator.ardikasaputro.io",
    version = "v1alpha1",
    kind = "K8SCluster",
    plural = "k8sclusters",
    singular = "k8scluster",
    shortname = "k8sc",
    category = "hibernator",
    namespaced,
    status = "ConnectorStatus",
    derive = "PartialEq",
    doc = "Access to a Kubernetes cluster: an EKS cluster reached through a CloudProvider, or a cluster reached with a kubeconfig or in-cluster credentials.",
    printcolumn(name = "EKS", type_ = "string", json_path = ".spec.eks.name"),
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".spec.providerRef.name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.eks) != has(self.k8s)")
    .message("a K8SCluster needs exactly one of eks or k8s"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.eks) || has(self.providerRef)")
    .message("an eks cluster needs providerRef (the CloudProvider of its account)")
    .field_path(".providerRef"))]
pub struct K8SClusterSpec {
    /// The CloudProvider giving access to the cluster's account (for `eks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<ProviderRef>,
    /// An EKS cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<EksCluster>,
    /// A cluster reached with a kubeconfig Secret or in-cluster credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sAccess>,
    /// Namespaces whose plans may use this K8SCluster besides its own; none when absent. Only
    /// connectors without Secrets can be shared (no kubeconfig Secret, and a CloudProvider with
    /// `auth.serviceAccount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// Reference to a CloudProvider.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// Kind of the provider: `CloudProvider`.
    pub kind: ProviderKind,
    /// Name of the CloudProvider in this namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// Provider kinds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// A CloudProvider.
    CloudProvider,
}

/// An EKS cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EksCluster {
    /// The EKS cluster name.
    #[schemars(length(min = 1, max = 100))]
    pub name: String,
    /// The cluster's region.
    #[schemars(regex(pattern = "^[a-z]{2}(-[a-z]+)+-[0-9]+$"), length(max = 32))]
    pub region: String,
}

/// Generic cluster access: exactly one of `kubeconfigRef` or `inCluster: true`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.kubeconfigRef) != (has(self.inCluster) && self.inCluster)")
    .message("k8s needs exactly one of kubeconfigRef or inCluster: true"))]
pub struct K8sAccess {
    /// A Secret holding a kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_ref: Option<KubeconfigRef>,
    /// Use the runner pod's own in-cluster credentials (the cluster the operator runs in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_cluster: Option<bool>,
}

/// A kubeconfig in a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubeconfigRef {
    /// Name of the Secret, in the K8SCluster's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Key holding the kubeconfig (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}
