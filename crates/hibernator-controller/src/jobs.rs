//! Runner Jobs (SPEC "Runner Jobs"): one per (plan, cycle, operation, target, attempt), with a
//! deterministic name, owned by the plan, never retried by Kubernetes (`backoffLimit: 0`; the
//! controller owns retries), bounded in time, cleaned up after a while, locked down.

use std::collections::BTreeMap;

use hibernator_api::plan::HibernationPlan;
use hibernator_api::runner::{ConnectorSettings, env};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, KeyToPath, PodSecurityContext, PodSpec,
    PodTemplateSpec, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection,
    Toleration, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::decide::JobRequest;

pub use hibernator_api::naming::{MANAGER, job_name, label_value, labels, short_hash};

/// Where the controller token is mounted in runner pods.
pub const TOKEN_DIR: &str = "/var/run/secrets/hibernator";
const KUBECONFIG_DIR: &str = "/var/run/secrets/hibernator-kubeconfig";

/// How runner Jobs are built; from the controller's flags (Helm values).
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSettings {
    /// Runner image.
    pub image: String,
    /// Image pull policy.
    pub image_pull_policy: String,
    /// ServiceAccount of runner pods (must exist in each plan namespace).
    pub service_account: String,
    /// The controller's gRPC endpoint as runners reach it.
    pub controller_endpoint: String,
    /// Extra environment for every runner (e.g. `AWS_ENDPOINT_URL`).
    pub extra_env: Vec<(String, String)>,
    /// Extra environment from Secret keys: `(variable, Secret, key)`; the Secret lives in the
    /// plan's namespace.
    pub extra_env_secrets: Vec<(String, String, String)>,
    /// `activeDeadlineSeconds` of runner Jobs.
    pub active_deadline_seconds: i64,
    /// `ttlSecondsAfterFinished` of runner Jobs.
    pub ttl_seconds_after_finished: i32,
    /// Lifetime of the projected controller token.
    pub token_expiration_seconds: i64,
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// Memory limit.
    pub memory_limit: String,
    /// Node selector of runner pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of runner pods.
    pub tolerations: Vec<Toleration>,
    /// `text` or `json` runner logs.
    pub log_format: String,
    /// PEM of the CA(s) runners trust for an `https://` controller endpoint (kept current by
    /// [`crate::tls`]).
    pub controller_ca: crate::tls::TrustBundle,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/hibernator/hibernator-runner:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: "IfNotPresent".into(),
            service_account: "hibernator-runner".into(),
            controller_endpoint: format!(
                "https://hibernator.hibernator-system.svc:{}",
                hibernator_api::runner::GRPC_PORT
            ),
            extra_env: vec![],
            extra_env_secrets: vec![],
            active_deadline_seconds: 3600,
            ttl_seconds_after_finished: 86400,
            token_expiration_seconds: 3600,
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            log_format: "text".into(),
            controller_ca: Default::default(),
        }
    }
}

/// A connector resolved for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConnector {
    /// The settings passed to the runner.
    pub settings: ConnectorSettings,
    /// Secret with static AWS keys, if the CloudProvider uses `auth.static`.
    pub static_secret: Option<String>,
    /// Secret and key holding a kubeconfig, for K8SCluster targets that use one.
    pub kubeconfig_secret: Option<(String, String)>,
}

fn env_var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
    }
}

/// Builds the runner Job of one execution.
pub fn build_job(
    plan: &HibernationPlan,
    req: &JobRequest,
    connector: &ResolvedConnector,
    settings: &RunnerSettings,
) -> Job {
    let plan_name = plan.metadata.name.clone().unwrap_or_default();
    let namespace = plan.metadata.namespace.clone().unwrap_or_default();
    let target = &plan.spec.targets[req.target];
    let name = match req.check {
        Some(_) => hibernator_api::naming::enforce_job_name(
            &plan_name,
            &target.name,
            &req.cycle,
            req.attempt,
        ),
        None => job_name(
            &plan_name,
            &target.name,
            req.operation,
            &req.cycle,
            req.attempt,
        ),
    };
    let operation = match req.check {
        Some(_) => hibernator_api::naming::ENFORCE,
        None => req.operation.as_str(),
    };
    let parameters =
        hibernator_api::TargetParameters::parse(target.type_, target.parameters.as_ref())
            .map(|p| p.to_value())
            .unwrap_or_else(|_| serde_json::json!({}));

    let labels: BTreeMap<String, String> = [
        (labels::NAME, "hibernator-runner".to_string()),
        (labels::MANAGED_BY, MANAGER.to_string()),
        (labels::PLAN, label_value(&plan_name)),
        (labels::TARGET, target.name.clone()),
        (labels::OPERATION, operation.to_string()),
        (labels::CYCLE, req.cycle.clone()),
        (labels::ATTEMPT, req.attempt.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let mut env_vars = vec![
        env_var(env::EXECUTION_ID, &name),
        env_var(env::PLAN, &plan_name),
        env_var(env::NAMESPACE, &namespace),
        env_var(env::TARGET, &target.name),
        env_var(env::TARGET_TYPE, target.type_.as_str()),
        env_var(env::OPERATION, operation),
        env_var(env::CYCLE_ID, &req.cycle),
        env_var(env::ATTEMPT, req.attempt.to_string()),
        env_var(env::PARAMETERS, parameters.to_string()),
        env_var(
            env::CONNECTOR,
            serde_json::to_string(&connector.settings).expect("connector settings serialize"),
        ),
        env_var(env::CONTROLLER_ENDPOINT, &settings.controller_endpoint),
        env_var(env::TOKEN_PATH, format!("{TOKEN_DIR}/token")),
        env_var(
            env::TIMEOUT_SECONDS,
            settings
                .active_deadline_seconds
                .saturating_sub(30)
                .max(60)
                .to_string(),
        ),
        env_var(env::LOG_FORMAT, &settings.log_format),
    ];
    if let Some(mode) = req.check {
        env_vars.push(env_var(env::ENFORCE_MODE, mode.as_str()));
    }
    if let Some(ca) = settings.controller_ca.get() {
        env_vars.push(env_var(env::CONTROLLER_CA, ca));
    }
    if let Some(secret) = &connector.static_secret {
        env_vars.push(secret_env(
            "AWS_ACCESS_KEY_ID",
            secret,
            "AWS_ACCESS_KEY_ID",
            false,
        ));
        env_vars.push(secret_env(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            "AWS_SECRET_ACCESS_KEY",
            false,
        ));
        env_vars.push(secret_env(
            "AWS_SESSION_TOKEN",
            secret,
            "AWS_SESSION_TOKEN",
            true,
        ));
    }
    for (k, v) in &settings.extra_env {
        env_vars.push(env_var(k, v));
    }
    for (k, secret, key) in &settings.extra_env_secrets {
        env_vars.push(secret_env(k, secret, key, false));
    }

    let mut volumes = vec![Volume {
        name: "hibernator-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(hibernator_proto::TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(settings.token_expiration_seconds),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "hibernator-token".into(),
        mount_path: TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if let Some((secret, key)) = &connector.kubeconfig_secret {
        volumes.push(Volume {
            name: "kubeconfig".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: key.clone(),
                    path: "kubeconfig".into(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "kubeconfig".into(),
            mount_path: KUBECONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // Only targets that act on the cluster the runner runs in need its API credentials.
    let in_cluster = matches!(
        &connector.settings,
        ConnectorSettings::Kubernetes(k) if k.in_cluster
    );

    let quantity = |s: &str| Quantity(s.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                "hibernator.ardikasaputro.io/target-type".to_string(),
                target.type_.as_str().to_string(),
            )])),
            owner_references: Some(vec![owner_reference(plan)]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // A pod taken away by an eviction, a node drain or preemption is replaced without
            // counting as a failure: the runner is idempotent, and the plan's retries are for
            // real failures.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: Some("True".into()),
                    }]),
                    on_exit_codes: None,
                }],
            }),
            active_deadline_seconds: Some(settings.active_deadline_seconds),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(settings.service_account.clone()),
                    automount_service_account_token: Some(in_cluster),
                    enable_service_links: Some(false),
                    node_selector: (!settings.node_selector.is_empty())
                        .then(|| settings.node_selector.clone()),
                    tolerations: (!settings.tolerations.is_empty())
                        .then(|| settings.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        // Makes the projected token readable by the non-root runner.
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "runner".into(),
                        image: Some(settings.image.clone()),
                        image_pull_policy: Some(settings.image_pull_policy.clone()),
                        env: Some(env_vars),
                        volume_mounts: Some(mounts),
                        termination_message_path: Some(
                            hibernator_api::runner::TERMINATION_MESSAGE_PATH.into(),
                        ),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_string(), quantity(&settings.cpu_request)),
                                ("memory".to_string(), quantity(&settings.memory_request)),
                            ])),
                            limits: Some(BTreeMap::from([(
                                "memory".to_string(),
                                quantity(&settings.memory_limit),
                            )])),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                add: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The owner reference that ties an object to its plan (garbage collected with it).
pub fn owner_reference(plan: &HibernationPlan) -> OwnerReference {
    OwnerReference {
        api_version: HibernationPlan::api_version(&()).to_string(),
        kind: HibernationPlan::kind(&()).to_string(),
        name: plan.metadata.name.clone().unwrap_or_default(),
        uid: plan.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use hibernator_api::fixtures::PlanBuilder;
    use hibernator_api::params::TargetType;
    use hibernator_api::plan::Operation;
    use hibernator_api::runner::{AwsCredentials, AwsSettings, KubernetesSettings};
    use serde_json::json;

    use super::*;

    fn seed_plan() -> HibernationPlan {
        let mut plan = PlanBuilder::new("prod-offhours")
            .namespace("hibernator-system")
            .target_with("prod-db", TargetType::Rds, json!({"snapshotBeforeStop": true}))
            .target_with(
                "prod-cluster",
                TargetType::Eks,
                json!({"clusterName": "eks-prod", "nodeGroups": [{"name": "default-ng"}, {"name": "gpu-ng"}]}),
            )
            .dag(&[("prod-db", "prod-cluster")])
            .build();
        plan.metadata.uid = Some("0b7c1f2e-0000-4000-8000-000000000001".into());
        plan
    }

    fn aws() -> ResolvedConnector {
        ResolvedConnector {
            settings: ConnectorSettings::Aws(AwsSettings {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                assume_role_arn: None,
                credentials: AwsCredentials::Static,
                eks_cluster_name: None,
            }),
            static_secret: Some("aws-keys".into()),
            kubeconfig_secret: None,
        }
    }

    /// Golden object: the whole Job, field by field. Update `tests/golden/runner-job.yaml`
    /// deliberately when the Job's shape changes (`UPDATE_GOLDEN=1 cargo test`).
    #[test]
    fn runner_job_matches_golden_file() {
        let plan = seed_plan();
        let settings = RunnerSettings {
            image: "ghcr.io/hibernator/hibernator-runner:0.1.0".into(),
            extra_env: vec![("AWS_ENDPOINT_URL".into(), "http://moto.test:5000".into())],
            ..Default::default()
        };
        let job = build_job(
            &plan,
            &JobRequest {
                target: 0,
                operation: Operation::Hibernate,
                cycle: "20261127t0100".into(),
                attempt: 1,
                check: None,
            },
            &aws(),
            &settings,
        );
        let yaml = serde_saphyr::to_string(&job).unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/runner-job.yaml");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &yaml).unwrap();
        }
        let golden = std::fs::read_to_string(&path).expect("golden file exists");
        assert_eq!(
            yaml, golden,
            "the runner Job changed; review and update the golden file"
        );
    }

    #[test]
    fn only_in_cluster_kubernetes_runners_get_the_pods_api_token() {
        let plan = PlanBuilder::new("apps-offhours")
            .namespace("team-a")
            .target_with(
                "apps",
                TargetType::Workloads,
                json!({"namespaces": ["team-a"]}),
            )
            .build();
        let job_for = |settings: KubernetesSettings, kubeconfig: Option<(String, String)>| {
            let job = build_job(
                &plan,
                &JobRequest {
                    target: 0,
                    operation: Operation::Hibernate,
                    cycle: "c".into(),
                    attempt: 1,
                    check: None,
                },
                &ResolvedConnector {
                    settings: ConnectorSettings::Kubernetes(settings),
                    static_secret: None,
                    kubeconfig_secret: kubeconfig,
                },
                &RunnerSettings::default(),
            );
            job.spec.unwrap().template.spec.unwrap()
        };
        let connector_of = |pod: &PodSpec| -> serde_json::Value {
            let env = pod.containers[0].env.clone().unwrap();
            let value = env
                .iter()
                .find(|e| e.name == env::CONNECTOR)
                .and_then(|e| e.value.clone())
                .unwrap();
            serde_json::from_str(&value).unwrap()
        };

        let pod = job_for(
            KubernetesSettings {
                in_cluster: true,
                ..Default::default()
            },
            None,
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        assert_eq!(
            connector_of(&pod),
            json!({"kind": "kubernetes", "inCluster": true})
        );

        let pod = job_for(
            KubernetesSettings {
                kubeconfig_path: Some(format!("{KUBECONFIG_DIR}/kubeconfig")),
                ..Default::default()
            },
            Some(("remote-kubeconfig".into(), "config".into())),
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let volumes = pod.volumes.clone().unwrap();
        let kubeconfig = volumes.iter().find(|v| v.name == "kubeconfig").unwrap();
        assert_eq!(
            kubeconfig.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("remote-kubeconfig")
        );

        let pod = job_for(
            KubernetesSettings {
                eks: Some(AwsSettings {
                    account_id: "123456789012".into(),
                    region: "eu-west-1".into(),
                    assume_role_arn: None,
                    credentials: AwsCredentials::ServiceAccount,
                    eks_cluster_name: Some("dev".into()),
                }),
                ..Default::default()
            },
            None,
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn aws_runners_get_no_kubernetes_credentials() {
        let job = build_job(
            &seed_plan(),
            &JobRequest {
                target: 1,
                operation: Operation::WakeUp,
                cycle: "c".into(),
                attempt: 2,
                check: None,
            },
            &aws(),
            &RunnerSettings::default(),
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let env = pod.containers[0].env.clone().unwrap();
        let secret_keys: Vec<&str> = env
            .iter()
            .filter(|e| e.value_from.is_some())
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            secret_keys,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN"
            ]
        );
        // No secret value is ever written into the Job.
        assert!(env.iter().all(|e| e.value.as_deref() != Some("aws-keys")));
    }
}
