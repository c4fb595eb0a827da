//! The contract between the controller and a runner pod: the environment the controller sets
//! on every runner Job and the resolved connector settings it passes. The runner reads only
//! these (and the mounted token); it needs no Kubernetes API access for AWS targets.

use serde::{Deserialize, Serialize};

use crate::params::TargetType;
use crate::plan::Operation;

/// Environment variable names.
pub mod env {
    /// The runner Job's name; identifies the execution in every gRPC call.
    pub const EXECUTION_ID: &str = "HIBERNATOR_EXECUTION_ID";
    /// Plan name.
    pub const PLAN: &str = "HIBERNATOR_PLAN";
    /// Plan namespace.
    pub const NAMESPACE: &str = "HIBERNATOR_NAMESPACE";
    /// Target name.
    pub const TARGET: &str = "HIBERNATOR_TARGET";
    /// Target type (`rds`, `eks`, ...).
    pub const TARGET_TYPE: &str = "HIBERNATOR_TARGET_TYPE";
    /// `hibernate` or `wakeUp`.
    pub const OPERATION: &str = "HIBERNATOR_OPERATION";
    /// Cycle identifier.
    pub const CYCLE_ID: &str = "HIBERNATOR_CYCLE_ID";
    /// Attempt number, from 1.
    pub const ATTEMPT: &str = "HIBERNATOR_ATTEMPT";
    /// The target's parameters as JSON (the typed struct of its type).
    pub const PARAMETERS: &str = "HIBERNATOR_PARAMETERS";
    /// The resolved connector as JSON ([`super::ConnectorSettings`]).
    pub const CONNECTOR: &str = "HIBERNATOR_CONNECTOR";
    /// The controller's gRPC endpoint, e.g. `http://hibernator.hibernator-system.svc:9444`.
    pub const CONTROLLER_ENDPOINT: &str = "HIBERNATOR_CONTROLLER_ENDPOINT";
    /// Path of the projected service-account token (audience `hibernator`).
    pub const TOKEN_PATH: &str = "HIBERNATOR_TOKEN_PATH";
    /// Overall deadline of the runner in seconds.
    pub const TIMEOUT_SECONDS: &str = "HIBERNATOR_TIMEOUT_SECONDS";
    /// `text` (default) or `json` log lines on stdout.
    pub const LOG_FORMAT: &str = "HIBERNATOR_LOG_FORMAT";
}

/// Where the runner mounts its controller token by default.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/hibernator/token";
/// Where the runner writes its one-line summary (the container's `terminationMessagePath`).
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Default gRPC port of the controller.
pub const GRPC_PORT: u16 = 9444;

/// Connector settings resolved by the controller for one target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ConnectorSettings {
    /// An AWS account (from a CloudProvider).
    #[serde(rename = "aws")]
    Aws(AwsSettings),
    /// A Kubernetes cluster (from a K8SCluster).
    #[serde(rename = "kubernetes")]
    Kubernetes(KubernetesSettings),
    /// No connector (noop targets without one).
    #[serde(rename = "none")]
    None,
}

/// How a runner reaches an AWS account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSettings {
    /// The account the credentials must belong to.
    pub account_id: String,
    /// Region of the resources.
    pub region: String,
    /// Role to assume first, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role_arn: Option<String>,
    /// Where the credentials come from.
    pub credentials: AwsCredentials,
    /// For `eks` targets: the EKS cluster name, resolved from the target's `clusterName`
    /// (a K8SCluster's `eks.name`, or the literal name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks_cluster_name: Option<String>,
}

/// Source of AWS credentials.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AwsCredentials {
    /// The pod's own identity (IRSA, Pod Identity, or the SDK's default chain).
    ServiceAccount,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) in the environment,
    /// set by the controller from the CloudProvider's Secret.
    Static,
}

/// How a runner reaches a Kubernetes cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSettings {
    /// Path of a mounted kubeconfig file; in-cluster credentials when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<String>,
    /// For EKS clusters: the AWS account to obtain a token from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<AwsSettings>,
}

/// Everything a runner is told about its execution.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    /// Runner Job name.
    pub execution_id: String,
    /// Plan name.
    pub plan: String,
    /// Plan namespace.
    pub namespace: String,
    /// Target name.
    pub target: String,
    /// Target type.
    pub target_type: TargetType,
    /// Operation.
    pub operation: Operation,
    /// Cycle identifier.
    pub cycle_id: String,
    /// Attempt, from 1.
    pub attempt: u32,
}
