//! The runner's configuration: its arguments and environment (the controller's contract in
//! [`hibernator_api::runner`]) read into a checked [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hibernator_api::plan::EnforceMode;
use hibernator_api::runner::{
    AwsSettings, ConnectorSettings, DEFAULT_TOKEN_PATH, Execution, TERMINATION_MESSAGE_PATH, env,
};
use hibernator_api::{Operation, TargetParameters, TargetType};

/// Performs one hibernation or wake-up of one target, recording restore data with the
/// controller before changing anything. Every option can also be given through the
/// environment variable shown (that is how the controller configures runner Jobs).
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "hibernator-runner", version)]
pub struct Args {
    /// The runner Job's name; identifies the execution in every call to the controller.
    #[arg(long, hide_env_values = true, env = env::EXECUTION_ID)]
    pub execution_id: Option<String>,
    /// Plan name.
    #[arg(long, hide_env_values = true, env = env::PLAN)]
    pub plan: Option<String>,
    /// Plan namespace.
    #[arg(long, hide_env_values = true, env = env::NAMESPACE)]
    pub namespace: Option<String>,
    /// Target name.
    #[arg(long, hide_env_values = true, env = env::TARGET)]
    pub target: Option<String>,
    /// Target type: rds, eks, ec2, asg, ecs, workloads, karpenter, gitops or noop.
    #[arg(long, hide_env_values = true, env = env::TARGET_TYPE)]
    pub target_type: Option<String>,
    /// `hibernate`, `wakeUp` or `enforce` (an in-sleep check).
    #[arg(long, hide_env_values = true, env = env::OPERATION)]
    pub operation: Option<String>,
    /// With `enforce`: `Report` or `Reapply`.
    #[arg(long, hide_env_values = true, env = env::ENFORCE_MODE)]
    pub enforce_mode: Option<String>,
    /// Cycle identifier.
    #[arg(long, hide_env_values = true, env = env::CYCLE_ID)]
    pub cycle_id: Option<String>,
    /// Attempt number, from 1.
    #[arg(long, hide_env_values = true, env = env::ATTEMPT)]
    pub attempt: Option<String>,
    /// The target's parameters (JSON object).
    #[arg(long, hide_env_values = true, env = env::PARAMETERS)]
    pub parameters: Option<String>,
    /// The resolved connector (JSON), e.g.
    /// `{"kind":"aws","accountId":"123456789012","region":"eu-west-1","credentials":"serviceAccount"}`.
    #[arg(long, hide_env_values = true, env = env::CONNECTOR)]
    pub connector: Option<String>,
    /// The controller's gRPC endpoint, e.g. `http://hibernator.hibernator-system.svc:9444`.
    #[arg(long, hide_env_values = true, env = env::CONTROLLER_ENDPOINT)]
    pub controller_endpoint: Option<String>,
    /// File holding the bearer token for the controller.
    #[arg(long, hide_env_values = true, env = env::TOKEN_PATH, default_value = DEFAULT_TOKEN_PATH)]
    pub token_path: PathBuf,
    /// Overall deadline in seconds.
    #[arg(long, hide_env_values = true, env = env::TIMEOUT_SECONDS)]
    pub timeout_seconds: Option<String>,
    /// `text` or `json` lines on stdout.
    #[arg(long, hide_env_values = true, env = env::LOG_FORMAT)]
    pub log_format: Option<String>,
    /// PEM of the CA of the controller's serving certificate (for an `https://` endpoint).
    #[arg(long, hide_env_values = true, env = env::CONTROLLER_CA)]
    pub controller_ca: Option<String>,
    /// Where the one-line summary is written.
    #[arg(long, hide_env_values = true, env = env::TERMINATION_MESSAGE_PATH, default_value = TERMINATION_MESSAGE_PATH)]
    pub termination_message_path: PathBuf,
    /// How long to wait for one resource to reach its target state, in seconds.
    #[arg(long, hide_env_values = true, env = env::WAIT_TIMEOUT_SECONDS)]
    pub wait_timeout_seconds: Option<String>,
    /// Pause between two looks at a resource while waiting, in milliseconds.
    #[arg(long, hide_env_values = true, env = env::POLL_INTERVAL_MS)]
    pub poll_interval_ms: Option<String>,
    /// Attempts per AWS call (adaptive retry).
    #[arg(long, hide_env_values = true, env = env::AWS_MAX_ATTEMPTS)]
    pub aws_max_attempts: Option<String>,
    /// Deadline of one call to the controller, in seconds.
    #[arg(long, hide_env_values = true, env = env::CONTROLLER_TIMEOUT_SECONDS)]
    pub controller_timeout_seconds: Option<String>,
    /// Seconds between two heartbeats.
    #[arg(long, hide_env_values = true, env = env::HEARTBEAT_SECONDS)]
    pub heartbeat_seconds: Option<String>,
    /// How long recording or fetching restore data is retried while the controller is
    /// unavailable (a restart, a leader hand-over), in seconds.
    #[arg(long, hide_env_values = true, env = env::CONTROLLER_RETRY_SECONDS)]
    pub controller_retry_seconds: Option<String>,
}

/// How lines are written on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per step.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Timing of waits for resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Pause between two looks.
    pub poll_interval: Duration,
    /// Longest wait for one resource.
    pub timeout: Duration,
}

/// Everything the runner was told, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// The execution.
    pub execution: Execution,
    /// Typed parameters of the target.
    pub parameters: TargetParameters,
    /// The resolved connector.
    pub connector: ConnectorSettings,
    /// The controller's endpoint.
    pub controller_endpoint: String,
    /// CA of the controller's certificate (PEM), for `https://` endpoints.
    pub controller_ca: Option<String>,
    /// Bearer token file.
    pub token_path: PathBuf,
    /// Overall deadline.
    pub deadline: Option<Duration>,
    /// Waits.
    pub timing: Timing,
    /// Attempts per AWS call.
    pub aws_max_attempts: u32,
    /// Deadline of one controller call.
    pub controller_timeout: Duration,
    /// Interval of heartbeats.
    pub heartbeat_interval: Duration,
    /// How long restore-data calls are retried while the controller is unavailable.
    pub controller_retry: Duration,
}

/// What is wrong with the configuration. Each message names the setting and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("{var} is not set")]
    Missing {
        /// The environment variable.
        var: &'static str,
    },
    /// A setting has a value it cannot have.
    #[error("{var} = {value:?} is not valid: expected {expected}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// A JSON setting does not parse.
    #[error("failed to read {var} as JSON")]
    Json {
        /// The environment variable.
        var: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The parameters do not fit the target type.
    #[error("failed to read {var}")]
    Parameters {
        /// The environment variable.
        var: &'static str,
        /// The cause (names the field).
        #[source]
        source: hibernator_api::params::ParametersError,
    },
    /// A connector setting has a value it cannot have.
    #[error("connector setting {field} = {value:?} is not valid: expected {expected}")]
    Setting {
        /// The field of the connector.
        field: &'static str,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A connector setting needed by this target type is absent.
    #[error("connector setting {field} is missing (needed by {type_} targets)")]
    MissingSetting {
        /// The field of the connector.
        field: &'static str,
        /// The target type.
        type_: TargetType,
    },
    /// The connector is of the wrong kind for the target type.
    #[error("{type_} targets need a connector of kind {expected}, got {got} (in {var})")]
    ConnectorKind {
        /// The environment variable.
        var: &'static str,
        /// The target type.
        type_: TargetType,
        /// The kind needed.
        expected: &'static str,
        /// The kind given.
        got: &'static str,
    },
    /// A kind of `parameters.kinds` the cluster cannot scale.
    #[error("parameters.kinds: {kind} {reason}")]
    Kind {
        /// The kind as written.
        kind: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A label selector of the parameters cannot be used.
    #[error("parameters.{field} is not a valid label selector: {message}")]
    Selector {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The Kubernetes connector does not say how to reach the cluster, or says it twice.
    #[error(
        "{type_} targets need a kubernetes connector with exactly one of inCluster, kubeconfigPath or eks (in {var}), got {count}"
    )]
    KubernetesAccess {
        /// The environment variable.
        var: &'static str,
        /// The target type.
        type_: TargetType,
        /// How many were given.
        count: usize,
    },
}

fn required(value: &Option<String>, var: &'static str) -> Result<String, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ConfigError::Missing { var }),
    }
}

fn number<T: std::str::FromStr>(
    value: &Option<String>,
    var: &'static str,
    default: T,
    valid: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<T, ConfigError> {
    let Some(text) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<T>() {
        Ok(n) if valid(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var,
            value: text.to_string(),
            expected: expected.to_string(),
        }),
    }
}

impl LogFormat {
    /// Reads `HIBERNATOR_LOG_FORMAT` (absent: text).
    pub fn from_arg(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(ConfigError::Invalid {
                var: env::LOG_FORMAT,
                value: other.to_string(),
                expected: "text or json".into(),
            }),
        }
    }
}

impl Config {
    /// Checks the arguments and environment.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let execution_id = required(&args.execution_id, env::EXECUTION_ID)?;
        let plan = required(&args.plan, env::PLAN)?;
        let namespace = required(&args.namespace, env::NAMESPACE)?;
        let target = required(&args.target, env::TARGET)?;
        let type_text = required(&args.target_type, env::TARGET_TYPE)?;
        let target_type = TargetType::parse(&type_text).ok_or_else(|| ConfigError::Invalid {
            var: env::TARGET_TYPE,
            value: type_text.clone(),
            expected: TargetType::ALL.map(TargetType::as_str).join(", "),
        })?;
        let op_text = required(&args.operation, env::OPERATION)?;
        let (operation, enforce) = if op_text == hibernator_api::naming::ENFORCE {
            // An in-sleep check looks at the hibernation side of the target.
            let text = required(&args.enforce_mode, env::ENFORCE_MODE)?;
            let mode = EnforceMode::parse(&text)
                .filter(|m| *m != EnforceMode::Off)
                .ok_or_else(|| ConfigError::Invalid {
                    var: env::ENFORCE_MODE,
                    value: text.clone(),
                    expected: "Report or Reapply".into(),
                })?;
            (Operation::Hibernate, Some(mode))
        } else {
            let operation = Operation::parse(&op_text).ok_or_else(|| ConfigError::Invalid {
                var: env::OPERATION,
                value: op_text.clone(),
                expected: "hibernate, wakeUp or enforce".into(),
            })?;
            (operation, None)
        };
        let cycle_id = required(&args.cycle_id, env::CYCLE_ID)?;
        let attempt = number(
            &args.attempt,
            env::ATTEMPT,
            1u32,
            |n| *n >= 1,
            "a number >= 1",
        )?;

        let parameters = match args.parameters.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(serde_json::from_str::<serde_json::Value>(text).map_err(
                |source| ConfigError::Json {
                    var: env::PARAMETERS,
                    source,
                },
            )?),
        };
        let parameters =
            TargetParameters::parse(target_type, parameters.as_ref()).map_err(|source| {
                ConfigError::Parameters {
                    var: env::PARAMETERS,
                    source,
                }
            })?;

        let connector = match args.connector.as_deref().map(str::trim) {
            None | Some("") => ConnectorSettings::None,
            Some(text) => serde_json::from_str(text).map_err(|source| ConfigError::Json {
                var: env::CONNECTOR,
                source,
            })?,
        };
        check_connector(target_type, &connector)?;

        let controller_endpoint = required(&args.controller_endpoint, env::CONTROLLER_ENDPOINT)?;
        if !(controller_endpoint.starts_with("http://")
            || controller_endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                var: env::CONTROLLER_ENDPOINT,
                value: controller_endpoint,
                expected: "an http:// or https:// URL".into(),
            });
        }

        let deadline = match args.timeout_seconds.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(_) => Some(Duration::from_secs(number(
                &args.timeout_seconds,
                env::TIMEOUT_SECONDS,
                0u64,
                |n| *n >= 1,
                "a number of seconds >= 1",
            )?)),
        };
        let wait_timeout = number(
            &args.wait_timeout_seconds,
            env::WAIT_TIMEOUT_SECONDS,
            1800u64,
            |n| *n >= 1,
            "a number of seconds >= 1",
        )?;
        let poll_ms = number(
            &args.poll_interval_ms,
            env::POLL_INTERVAL_MS,
            10_000u64,
            |n| *n >= 1,
            "a number of milliseconds >= 1",
        )?;
        let aws_max_attempts = number(
            &args.aws_max_attempts,
            env::AWS_MAX_ATTEMPTS,
            5u32,
            |n| (1..=20).contains(n),
            "a number from 1 to 20",
        )?;
        let controller_timeout = number(
            &args.controller_timeout_seconds,
            env::CONTROLLER_TIMEOUT_SECONDS,
            10u64,
            |n| *n >= 1,
            "a number of seconds >= 1",
        )?;
        let heartbeat = number(
            &args.heartbeat_seconds,
            env::HEARTBEAT_SECONDS,
            15u64,
            |n| *n >= 1,
            "a number of seconds >= 1",
        )?;
        let controller_retry = number(
            &args.controller_retry_seconds,
            env::CONTROLLER_RETRY_SECONDS,
            60u64,
            |n| *n <= 3600,
            "a number of seconds from 0 to 3600",
        )?;

        Ok(Self {
            execution: Execution {
                execution_id,
                plan,
                namespace,
                target,
                target_type,
                operation,
                enforce,
                cycle_id,
                attempt,
            },
            parameters,
            connector,
            controller_ca: args.controller_ca.clone().filter(|c| !c.trim().is_empty()),
            controller_endpoint,
            token_path: args.token_path.clone(),
            deadline,
            timing: Timing {
                poll_interval: Duration::from_millis(poll_ms),
                timeout: Duration::from_secs(wait_timeout),
            },
            aws_max_attempts,
            controller_timeout: Duration::from_secs(controller_timeout),
            heartbeat_interval: Duration::from_secs(heartbeat),
            controller_retry: Duration::from_secs(controller_retry),
        })
    }

    /// The AWS settings (present for AWS target types once checked).
    pub fn aws(&self) -> Option<&AwsSettings> {
        match &self.connector {
            ConnectorSettings::Aws(aws) => Some(aws),
            _ => None,
        }
    }
}

fn kind_name(connector: &ConnectorSettings) -> &'static str {
    match connector {
        ConnectorSettings::Aws(_) => "aws",
        ConnectorSettings::Kubernetes(_) => "kubernetes",
        ConnectorSettings::None => "none",
    }
}

fn check_connector(type_: TargetType, connector: &ConnectorSettings) -> Result<(), ConfigError> {
    if matches!(
        type_,
        TargetType::Workloads | TargetType::Karpenter | TargetType::Gitops
    ) {
        return check_kubernetes(type_, connector);
    }
    let needs_aws = matches!(
        type_,
        TargetType::Rds | TargetType::Eks | TargetType::Ec2 | TargetType::Asg | TargetType::Ecs
    );
    if !needs_aws {
        return Ok(());
    }
    let ConnectorSettings::Aws(aws) = connector else {
        if matches!(connector, ConnectorSettings::None) {
            return Err(ConfigError::Missing {
                var: env::CONNECTOR,
            });
        }
        return Err(ConfigError::ConnectorKind {
            var: env::CONNECTOR,
            type_,
            expected: "aws",
            got: kind_name(connector),
        });
    };
    check_aws(aws)?;
    if type_ == TargetType::Eks
        && aws
            .eks_cluster_name
            .as_deref()
            .is_none_or(|n| n.trim().is_empty())
    {
        return Err(ConfigError::MissingSetting {
            field: "eksClusterName",
            type_,
        });
    }
    Ok(())
}

fn check_kubernetes(type_: TargetType, connector: &ConnectorSettings) -> Result<(), ConfigError> {
    let k8s = match connector {
        ConnectorSettings::Kubernetes(k8s) => k8s,
        ConnectorSettings::None => {
            return Err(ConfigError::Missing {
                var: env::CONNECTOR,
            });
        }
        other => {
            return Err(ConfigError::ConnectorKind {
                var: env::CONNECTOR,
                type_,
                expected: "kubernetes",
                got: kind_name(other),
            });
        }
    };
    let count = k8s.access_count();
    if count != 1 {
        return Err(ConfigError::KubernetesAccess {
            var: env::CONNECTOR,
            type_,
            count,
        });
    }
    if let Some(path) = &k8s.kubeconfig_path
        && path.trim().is_empty()
    {
        return Err(ConfigError::Setting {
            field: "kubeconfigPath",
            value: path.clone(),
            expected: "the path of a mounted kubeconfig file",
        });
    }
    if let Some(aws) = &k8s.eks {
        check_aws(aws)?;
        if aws
            .eks_cluster_name
            .as_deref()
            .is_none_or(|n| n.trim().is_empty())
        {
            return Err(ConfigError::MissingSetting {
                field: "eks.eksClusterName",
                type_,
            });
        }
    }
    Ok(())
}

/// Checks an AWS connector's fields.
pub fn check_aws(aws: &AwsSettings) -> Result<(), ConfigError> {
    if aws.account_id.len() != 12 || !aws.account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::Setting {
            field: "accountId",
            value: aws.account_id.clone(),
            expected: "a 12-digit AWS account id",
        });
    }
    let region_ok = !aws.region.is_empty()
        && aws.region.split('-').count() >= 3
        && aws
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(ConfigError::Setting {
            field: "region",
            value: aws.region.clone(),
            expected: "an AWS region such as eu-west-1",
        });
    }
    if let Some(arn) = &aws.assume_role_arn {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "iam"
            && parts[5].starts_with("role/")
            && parts[5].len() > "role/".len();
        if !ok {
            return Err(ConfigError::Setting {
                field: "assumeRoleArn",
                value: arn.clone(),
                expected: "an IAM role ARN such as arn:aws:iam::123456789012:role/hibernator",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            execution_id: Some("job-1".into()),
            plan: Some("plan".into()),
            namespace: Some("ns".into()),
            target: Some("db".into()),
            target_type: Some("rds".into()),
            operation: Some("hibernate".into()),
            cycle_id: Some("c1".into()),
            connector: Some(
                r#"{"kind":"aws","accountId":"123456789012","region":"eu-west-1","credentials":"static"}"#
                    .into(),
            ),
            controller_endpoint: Some("http://127.0.0.1:9444".into()),
            ..Args::default()
        }
    }

    fn message(args: &Args) -> String {
        let err = Config::from_args(args).unwrap_err();
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn a_complete_configuration_is_accepted() {
        let config = Config::from_args(&args()).unwrap();
        assert_eq!(config.execution.target_type, TargetType::Rds);
        assert_eq!(config.execution.operation, Operation::Hibernate);
        assert_eq!(config.aws().unwrap().region, "eu-west-1");
        assert_eq!(config.timing.timeout, Duration::from_secs(1800));
    }

    #[test]
    fn errors_name_the_setting_and_the_value() {
        let mut a = args();
        a.connector = Some(r#"{"kind":"aws","region":"eu-west-1","credentials":"static"}"#.into());
        assert!(
            message(&a).contains("missing field `accountId`"),
            "{}",
            message(&a)
        );

        let mut a = args();
        a.connector = Some(
            r#"{"kind":"aws","accountId":"12345","region":"eu-west-1","credentials":"static"}"#
                .into(),
        );
        assert_eq!(
            message(&a),
            "connector setting accountId = \"12345\" is not valid: expected a 12-digit AWS account id"
        );

        let mut a = args();
        a.connector = Some(r#"{"kind":"aws","accountId":"123456789012","region":"eu-west-1","credentials":"keys"}"#.into());
        assert!(
            message(&a).contains("unknown variant `keys`"),
            "{}",
            message(&a)
        );

        let mut a = args();
        a.parameters = Some(r#"{"snapshotBeforeStop":true,"colour":"red"}"#.into());
        let m = message(&a);
        assert!(
            m.contains("HIBERNATOR_PARAMETERS") && m.contains("unknown field `colour`"),
            "{m}"
        );

        let mut a = args();
        a.target_type = Some("eks".into());
        a.parameters = Some(r#"{"clusterName":"x"}"#.into());
        assert_eq!(
            message(&a),
            "connector setting eksClusterName is missing (needed by eks targets)"
        );

        let mut a = args();
        a.connector = None;
        assert_eq!(message(&a), "HIBERNATOR_CONNECTOR is not set");

        let mut a = args();
        a.connector = Some(r#"{"kind":"kubernetes"}"#.into());
        assert_eq!(
            message(&a),
            "rds targets need a connector of kind aws, got kubernetes (in HIBERNATOR_CONNECTOR)"
        );

        let mut a = args();
        a.operation = Some("sleep".into());
        assert_eq!(
            message(&a),
            "HIBERNATOR_OPERATION = \"sleep\" is not valid: expected hibernate, wakeUp or enforce"
        );

        let mut a = args();
        a.poll_interval_ms = Some("soon".into());
        assert!(message(&a).starts_with("HIBERNATOR_POLL_INTERVAL_MS = \"soon\""));

        let mut a = args();
        a.target_type = Some("workloads".into());
        a.parameters = Some(r#"{"namespaces":["apps"]}"#.into());
        assert_eq!(
            message(&a),
            "workloads targets need a connector of kind kubernetes, got aws (in HIBERNATOR_CONNECTOR)"
        );
        a.connector = Some(r#"{"kind":"kubernetes"}"#.into());
        assert_eq!(
            message(&a),
            "workloads targets need a kubernetes connector with exactly one of inCluster, kubeconfigPath or eks (in HIBERNATOR_CONNECTOR), got 0"
        );
        a.connector =
            Some(r#"{"kind":"kubernetes","inCluster":true,"kubeconfigPath":"/k"}"#.into());
        assert!(message(&a).ends_with("got 2"), "{}", message(&a));
        a.target_type = Some("karpenter".into());
        a.parameters = Some(r#"{"nodePools":["default"]}"#.into());
        a.connector = Some(
            r#"{"kind":"kubernetes","eks":{"accountId":"123456789012","region":"eu-west-1","credentials":"serviceAccount"}}"#
                .into(),
        );
        assert_eq!(
            message(&a),
            "connector setting eks.eksClusterName is missing (needed by karpenter targets)"
        );

        let mut a = args();
        a.controller_retry_seconds = Some("forever".into());
        assert!(message(&a).starts_with("HIBERNATOR_CONTROLLER_RETRY_SECONDS = \"forever\""));
    }

    #[test]
    fn kubernetes_targets_take_one_way_in() {
        for connector in [
            r#"{"kind":"kubernetes","inCluster":true}"#,
            r#"{"kind":"kubernetes","kubeconfigPath":"/var/run/secrets/hibernator-kubeconfig/kubeconfig"}"#,
            r#"{"kind":"kubernetes","eks":{"accountId":"123456789012","region":"eu-west-1","credentials":"serviceAccount","eksClusterName":"dev"}}"#,
        ] {
            let mut a = args();
            a.target_type = Some("workloads".into());
            a.parameters = Some(r#"{"namespaces":["apps"],"kinds":["Deployment"]}"#.into());
            a.connector = Some(connector.into());
            let config = Config::from_args(&a).unwrap();
            assert!(matches!(config.connector, ConnectorSettings::Kubernetes(_)));
            assert_eq!(config.controller_retry, Duration::from_secs(60));
        }
    }

    #[test]
    fn role_arns_and_regions_are_checked() {
        let mut a = args();
        a.connector = Some(r#"{"kind":"aws","accountId":"123456789012","region":"eu-west-1","credentials":"static","assumeRoleArn":"arn:aws:iam::123456789012:user/bob"}"#.into());
        assert!(message(&a).starts_with("connector setting assumeRoleArn"));
        let mut a = args();
        a.connector = Some(
            r#"{"kind":"aws","accountId":"123456789012","region":"Europe","credentials":"static"}"#
                .into(),
        );
        assert!(message(&a).starts_with("connector setting region = \"Europe\""));
    }

    #[test]
    fn noop_needs_no_connector() {
        let mut a = args();
        a.target_type = Some("noop".into());
        a.connector = None;
        a.parameters = Some(r#"{"delaySeconds":1,"fail":"wake"}"#.into());
        let config = Config::from_args(&a).unwrap();
        assert!(matches!(config.connector, ConnectorSettings::None));
    }
}
