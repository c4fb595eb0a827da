//! AWS configuration: region, credentials (the pod's identity or static keys from the
//! standard environment variables), an optional assumed role, adaptive retries, and the
//! account check before anything is touched. `AWS_ENDPOINT_URL` (LocalStack, moto) is honoured
//! by the SDK's own loader.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use hibernator_api::runner::{AwsCredentials, AwsSettings};

/// A failed AWS call, as one line: the service's error code and message, or the transport's
/// error chain. Never contains credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AwsCallError(String);

impl AwsCallError {
    /// The service's error code and message when AWS answered (`DBInstanceNotFound: ...`),
    /// else the transport's error chain.
    pub fn from_sdk<E>(error: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let Some(service) = error.as_service_error() else {
            return Self(chain(error));
        };
        if let Some(code) = service.code() {
            return Self(join(code, service.message()));
        }
        // An error document the SDK could not read (some emulators use other shapes): its
        // raw text still names the problem.
        let raw = error.raw_response();
        let body = raw
            .and_then(|r| r.body().bytes())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let status = raw.map(|r| r.status().as_u16()).unwrap_or_default();
        let code = between(&body, "<Code>", "</Code>").unwrap_or_else(|| format!("HTTP {status}"));
        Self(join(
            &code,
            between(&body, "<Message>", "</Message>").as_deref(),
        ))
    }
}

fn join(code: &str, message: Option<&str>) -> String {
    match message {
        Some(message) if !message.is_empty() => format!("{code}: {message}"),
        _ => code.to_string(),
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].trim().to_string())
}

/// An error and its causes on one line.
pub use hibernator_api::common::error_chain as chain;

/// Why the AWS account could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `credentials: static` without the keys in the environment.
    #[error(
        "connector setting credentials = \"static\" needs {var} in the environment, but it is not set"
    )]
    MissingKey {
        /// The variable.
        var: &'static str,
    },
    /// STS refused or could not be reached.
    #[error("failed to verify the AWS credentials with STS GetCallerIdentity")]
    Identity {
        /// The cause.
        #[source]
        source: AwsCallError,
    },
    /// The credentials belong to another account.
    #[error(
        "the AWS credentials belong to account {actual}, not to the connector's accountId {expected}; refusing to act"
    )]
    AccountMismatch {
        /// The connector's account.
        expected: String,
        /// The credentials' account.
        actual: String,
    },
}

/// A verified AWS configuration.
#[derive(Debug, Clone)]
pub struct Aws {
    /// The SDK configuration for every client.
    pub config: SdkConfig,
    /// The caller's ARN, for the story.
    pub caller_arn: String,
}

/// Builds the SDK configuration and checks the account with STS GetCallerIdentity.
pub async fn connect(
    settings: &AwsSettings,
    session_name: &str,
    max_attempts: u32,
) -> Result<Aws, SetupError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .retry_config(
            RetryConfig::adaptive()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(500)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if settings.credentials == AwsCredentials::Static {
        let key = |var: &'static str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or(SetupError::MissingKey { var })
        };
        let access_key = key("AWS_ACCESS_KEY_ID")?;
        let secret_key = key("AWS_SECRET_ACCESS_KEY")?;
        let session_token = key("AWS_SESSION_TOKEN").ok();
        loader = loader.credentials_provider(Credentials::new(
            access_key,
            secret_key,
            session_token,
            None,
            "hibernator-static",
        ));
    }
    let mut config = loader.load().await;
    if let Some(role) = &settings.assume_role_arn {
        let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name(session_name)
            .configure(&config)
            .build()
            .await;
        config = config
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
    }
    let sts = aws_sdk_sts::Client::new(&config);
    let identity = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| SetupError::Identity {
            source: AwsCallError::from_sdk(&e),
        })?;
    let actual = identity.account().unwrap_or_default().to_string();
    if actual != settings.account_id {
        return Err(SetupError::AccountMismatch {
            expected: settings.account_id.clone(),
            actual,
        });
    }
    Ok(Aws {
        config,
        caller_arn: identity.arn().unwrap_or_default().to_string(),
    })
}

/// A role session name from an execution id: at most 64 characters of `[\w+=,.@-]`.
pub fn session_name(execution_id: &str) -> String {
    let cleaned: String = execution_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("hibernator-{cleaned}");
    name.truncate(64);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts_rules() {
        let name = session_name(&format!("plan/{}", "x".repeat(100)));
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("hibernator-plan-x"));
    }
}
