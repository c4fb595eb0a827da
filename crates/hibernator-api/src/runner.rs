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
    /// `hibernate`, `wakeUp` or `enforce` (an in-sleep check of a hibernated target).
    pub const OPERATION: &str = "HIBERNATOR_OPERATION";
    /// With `enforce`: `Report` (look only) or `Reapply` (put what is found awake back to
    /// sleep).
    pub const ENFORCE_MODE: &str = "HIBERNATOR_ENFORCE_MODE";
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
    /// PEM of the certificate authority that signed the controller's gRPC serving certificate;
    /// set when the endpoint is `https://`.
    pub const CONTROLLER_CA: &str = "HIBERNATOR_CONTROLLER_CA";
    /// Overall deadline of the runner in seconds.
    pub const TIMEOUT_SECONDS: &str = "HIBERNATOR_TIMEOUT_SECONDS";
    /// `text` (default) or `json` log lines on stdout.
    pub const LOG_FORMAT: &str = "HIBERNATOR_LOG_FORMAT";

    // Runner tuning. The controller does not set these; they exist for operators (through
    // the controller's extra runner environment), tests and local runs.

    /// Where the runner writes its one-line summary (default
    /// [`super::TERMINATION_MESSAGE_PATH`]).
    pub const TERMINATION_MESSAGE_PATH: &str = "HIBERNATOR_TERMINATION_MESSAGE_PATH";
    /// How long to wait for one resource to reach its target state, in seconds (default 1800).
    pub const WAIT_TIMEOUT_SECONDS: &str = "HIBERNATOR_WAIT_TIMEOUT_SECONDS";
    /// Pause between two looks at a resource while waiting, in milliseconds (default 10000).
    pub const POLL_INTERVAL_MS: &str = "HIBERNATOR_POLL_INTERVAL_MS";
    /// Attempts per AWS call (the SDK's adaptive retry; default 5).
    pub const AWS_MAX_ATTEMPTS: &str = "HIBERNATOR_AWS_MAX_ATTEMPTS";
    /// Deadline of one call to the controller, in seconds (default 10).
    pub const CONTROLLER_TIMEOUT_SECONDS: &str = "HIBERNATOR_CONTROLLER_TIMEOUT_SECONDS";
    /// How long `RecordRestoreState` and `FetchRestoreState` are retried while the controller
    /// is unavailable (a restart, a leader hand-over), in seconds (default 60).
    pub const CONTROLLER_RETRY_SECONDS: &str = "HIBERNATOR_CONTROLLER_RETRY_SECONDS";
    /// Seconds between two heartbeats (default 15).
    pub const HEARTBEAT_SECONDS: &str = "HIBERNATOR_HEARTBEAT_SECONDS";
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

/// How a runner reaches a Kubernetes cluster (from a K8SCluster): exactly one of
/// `inCluster`, `kubeconfigPath` or `eks`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSettings {
    /// The cluster the runner pod runs in, with the pod's own service-account credentials
    /// (`k8s.inCluster: true`). Only these runner pods get an API token mounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_cluster: bool,
    /// Path of a mounted kubeconfig file (`k8s.kubeconfigRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<String>,
    /// An EKS cluster: the AWS account and region to describe it in and to sign the token
    /// with, and its name in `eksClusterName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<AwsSettings>,
}

impl KubernetesSettings {
    /// How many of the three ways in are set (a valid setting has exactly one).
    pub fn access_count(&self) -> usize {
        usize::from(self.in_cluster)
            + usize::from(self.kubeconfig_path.is_some())
            + usize::from(self.eks.is_some())
    }
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
    /// Operation (`Hibernate` for an in-sleep check: the side the resources should be on).
    pub operation: Operation,
    /// An in-sleep check rather than an operation, with what to do about a resource found
    /// awake (`Report` or `Reapply`).
    pub enforce: Option<crate::plan::EnforceMode>,
    /// Cycle identifier.
    pub cycle_id: String,
    /// Attempt, from 1 (for a check: the check's number in the cycle).
    pub attempt: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_settings_name_their_one_way_in() {
        let in_cluster = ConnectorSettings::Kubernetes(KubernetesSettings {
            in_cluster: true,
            ..KubernetesSettings::default()
        });
        let text = serde_json::to_string(&in_cluster).unwrap();
        assert_eq!(text, r#"{"kind":"kubernetes","inCluster":true}"#);
        assert_eq!(
            serde_json::from_str::<ConnectorSettings>(&text).unwrap(),
            in_cluster
        );
        let kubeconfig: ConnectorSettings =
            serde_json::from_str(r#"{"kind":"kubernetes","kubeconfigPath":"/k/kubeconfig"}"#)
                .unwrap();
        let ConnectorSettings::Kubernetes(k) = kubeconfig else {
            panic!("a kubernetes connector");
        };
        assert!(!k.in_cluster);
        assert_eq!(k.access_count(), 1);
        assert_eq!(KubernetesSettings::default().access_count(), 0);
    }
}
