//! Kubernetes access for `workloads` and `karpenter` targets, from the connector the controller
//! resolved out of a K8SCluster:
//!
//! - `inCluster`: the runner pod's own service account (`kube::Config::incluster()`);
//! - `kubeconfigPath`: a kubeconfig file mounted from the K8SCluster's Secret;
//! - `eks`: an EKS cluster. DescribeCluster gives the endpoint and CA; the bearer token is the
//!   one `aws eks get-token` makes: `k8s-aws-v1.` + base64url of an STS GetCallerIdentity URL
//!   presigned with SigV4 (by the `aws-sigv4` crate) over the `x-k8s-aws-id: <cluster>` header.
//!   Tokens live 15 minutes, so a background task signs a fresh one every five.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_sdk_eks::config::{Credentials, ProvideCredentials as _};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use hibernator_api::runner::{AwsSettings, KubernetesSettings};
use http::HeaderValue;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::aws::{self, AwsCallError, SetupError as AwsSetupError};

/// The prefix of an EKS bearer token.
pub const EKS_TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header naming the cluster a token is for (signed into the URL).
pub const EKS_CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// How long the presigned URL says it is valid (EKS accepts a token for 15 minutes after it
/// was signed, whatever this says; `aws eks get-token` uses 60 s).
const EKS_PRESIGN_EXPIRY: Duration = Duration::from_secs(60);
/// How often a new EKS token is signed.
const EKS_TOKEN_REFRESH: Duration = Duration::from_secs(300);
/// The longest wait for one answer of the API server.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed Kubernetes API call, as one line: the API's reason, HTTP code and message, or the
/// transport's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KubeCallError(String);

impl KubeCallError {
    /// Reads a kube error.
    pub fn from_kube(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let reason = if status.reason.is_empty() {
                    "Error"
                } else {
                    status.reason.as_str()
                };
                Self(format!(
                    "{reason} (HTTP {}): {}",
                    status.code, status.message
                ))
            }
            other => Self(aws::chain(other)),
        }
    }
}

/// True when the API answered 404 Not Found: the object does not exist, or its kind is not
/// served at all (a bare 404 page rather than a Status, as for a CRD that is not installed).
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// True when the API answered 409 Conflict (a precondition such as the resource version).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.is_conflict())
}

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `inCluster` outside a pod with a service-account token.
    #[error(
        "failed to load the in-cluster configuration (is the runner in a pod with a mounted service-account token?)"
    )]
    InCluster {
        /// The cause.
        #[source]
        source: kube::config::InClusterError,
    },
    /// The kubeconfig file is missing or unusable.
    #[error("failed to load the kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The AWS account of an EKS cluster could not be used.
    #[error(transparent)]
    Aws(#[from] AwsSetupError),
    /// DescribeCluster failed.
    #[error("failed to describe EKS cluster {cluster}")]
    Describe {
        /// The cluster.
        cluster: String,
        /// The cause.
        #[source]
        source: AwsCallError,
    },
    /// The EKS cluster has no endpoint or CA yet.
    #[error("EKS cluster {cluster} has no {what} (status {status}); it cannot be reached")]
    EksIncomplete {
        /// The cluster.
        cluster: String,
        /// `endpoint` or `certificate authority`.
        what: &'static str,
        /// The cluster's status.
        status: String,
    },
    /// The endpoint or certificate authority of the EKS cluster cannot be used.
    #[error(
        "failed to use the endpoint {endpoint} and certificate authority of EKS cluster {cluster}"
    )]
    EksConfig {
        /// The cluster.
        cluster: String,
        /// Its endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The EKS token could not be signed.
    #[error("failed to sign the EKS token for cluster {cluster}: {message}")]
    Token {
        /// The cluster.
        cluster: String,
        /// What went wrong.
        message: String,
    },
    /// The client could not be built (TLS, URL).
    #[error("failed to build the Kubernetes client for {server}")]
    Client {
        /// The API server.
        server: String,
        /// The cause.
        #[source]
        source: KubeCallError,
    },
    /// The API server did not answer.
    #[error("failed to reach the Kubernetes API at {server}")]
    Reach {
        /// The API server.
        server: String,
        /// The cause.
        #[source]
        source: KubeCallError,
    },
}

/// A connected cluster.
pub struct Kube {
    /// The client.
    pub client: Client,
    /// For the story: `in-cluster`, `kubeconfig /path`, `EKS cluster dev`.
    pub via: String,
    /// The API server's URL.
    pub server: String,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("via", &self.via)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.take() {
            task.abort();
        }
    }
}

/// What the API server said about itself and the caller.
#[derive(Debug, Clone)]
pub struct Reached {
    /// `v1.37.2`.
    pub version: String,
    /// The user the credentials authenticate as, when the server tells.
    pub user: Option<String>,
}

/// Builds the client for `settings` (checked by the configuration: exactly one way in).
pub async fn connect(
    settings: &KubernetesSettings,
    session_name: &str,
    aws_max_attempts: u32,
) -> Result<Kube, SetupError> {
    if let Some(eks) = &settings.eks {
        return connect_eks(eks, session_name, aws_max_attempts).await;
    }
    let (mut config, via) = match &settings.kubeconfig_path {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| SetupError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| SetupError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            (config, format!("kubeconfig {path}"))
        }
        None => (
            Config::incluster().map_err(|source| SetupError::InCluster { source })?,
            "in-cluster credentials".to_string(),
        ),
    };
    config.read_timeout = Some(READ_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| SetupError::Client {
        server: server.clone(),
        source: KubeCallError::from_kube(&e),
    })?;
    Ok(Kube {
        client,
        via,
        server,
        refresher: None,
    })
}

impl Kube {
    /// Asks the API server for its version (fails when it cannot be reached) and, best
    /// effort, who the credentials are (SelfSubjectReview).
    pub async fn reach(&self) -> Result<Reached, SetupError> {
        let version = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| SetupError::Reach {
                server: self.server.clone(),
                source: KubeCallError::from_kube(&e),
            })?;
        use k8s_openapi::api::authentication::v1::SelfSubjectReview;
        let reviews: kube::Api<SelfSubjectReview> = kube::Api::all(self.client.clone());
        let user = reviews
            .create(
                &kube::api::PostParams::default(),
                &SelfSubjectReview::default(),
            )
            .await
            .ok()
            .and_then(|r| r.status?.user_info?.username);
        Ok(Reached {
            version: version.git_version,
            user,
        })
    }
}

async fn connect_eks(
    settings: &AwsSettings,
    session_name: &str,
    aws_max_attempts: u32,
) -> Result<Kube, SetupError> {
    let cluster = settings.eks_cluster_name.clone().unwrap_or_default();
    let aws = aws::connect(settings, session_name, aws_max_attempts).await?;
    let eks = aws_sdk_eks::Client::new(&aws.config);
    let described = eks
        .describe_cluster()
        .name(&cluster)
        .send()
        .await
        .map_err(|e| SetupError::Describe {
            cluster: cluster.clone(),
            source: AwsCallError::from_sdk(&e),
        })?;
    let found = described.cluster();
    let status = found
        .and_then(|c| c.status())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "UNKNOWN".into());
    let incomplete = |what| SetupError::EksIncomplete {
        cluster: cluster.clone(),
        what,
        status: status.clone(),
    };
    let endpoint = found
        .and_then(|c| c.endpoint())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| incomplete("endpoint"))?
        .to_string();
    let ca = found
        .and_then(|c| c.certificate_authority())
        .and_then(|c| c.data())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| incomplete("certificate authority"))?
        .to_string();
    let config = eks_config(&endpoint, &ca)
        .await
        .map_err(|source| SetupError::EksConfig {
            cluster: cluster.clone(),
            endpoint: endpoint.clone(),
            source,
        })?;

    let provider = aws
        .config
        .credentials_provider()
        .ok_or_else(|| SetupError::Token {
            cluster: cluster.clone(),
            message: "no AWS credentials provider".into(),
        })?;
    let signer = EksSigner {
        provider,
        region: settings.region.clone(),
        cluster: cluster.clone(),
    };
    let header = Arc::new(RwLock::new(signer.header().await.map_err(|message| {
        SetupError::Token {
            cluster: cluster.clone(),
            message,
        }
    })?));
    let refresher = {
        let header = Arc::clone(&header);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EKS_TOKEN_REFRESH).await;
                // A failed refresh keeps the previous token; calls fail once it expires.
                if let Ok(fresh) = signer.header().await {
                    *header.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
            }
        })
    };
    let server = config.cluster_url.to_string();
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|e| SetupError::Client {
            server: server.clone(),
            source: KubeCallError::from_kube(&e),
        })?;
    let client = builder
        .with_layer(&tower::util::MapRequestLayer::new(
            move |mut request: http::Request<kube::client::Body>| {
                let value = header.read().unwrap_or_else(|e| e.into_inner()).clone();
                request
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value);
                request
            },
        ))
        .build();
    Ok(Kube {
        client,
        via: format!(
            "an EKS token for cluster {cluster} (region {}, signed as {})",
            settings.region, aws.caller_arn
        ),
        server,
        refresher: Some(refresher),
    })
}

/// A kube configuration for an EKS endpoint and its CA (base64 PEM, as DescribeCluster and
/// kubeconfig files carry it), without credentials: the token is added to each request.
async fn eks_config(
    endpoint: &str,
    ca_base64: &str,
) -> Result<Config, kube::config::KubeconfigError> {
    // JSON is YAML: the kubeconfig parser reads it.
    let kubeconfig = Kubeconfig::from_yaml(
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "eks", "cluster": {"server": endpoint, "certificate-authority-data": ca_base64}}],
            "users": [{"name": "eks", "user": {}}],
            "contexts": [{"name": "eks", "context": {"cluster": "eks", "user": "eks"}}],
            "current-context": "eks",
        })
        .to_string(),
    )?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(READ_TIMEOUT);
    Ok(config)
}

struct EksSigner {
    provider: aws_sdk_eks::config::SharedCredentialsProvider,
    region: String,
    cluster: String,
}

impl EksSigner {
    async fn header(&self) -> Result<HeaderValue, String> {
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| aws::chain(&e))?;
        let token = eks_token(credentials, &self.region, &self.cluster, SystemTime::now())?;
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The regional STS endpoint's host for `region`.
pub fn sts_host(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("sts.{region}.{suffix}")
}

/// An EKS bearer token: `k8s-aws-v1.` + base64url (no padding) of the STS GetCallerIdentity
/// URL presigned at `now` with `credentials` over the `x-k8s-aws-id: <cluster>` header.
pub fn eks_token(
    credentials: Credentials,
    region: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<String, String> {
    let host = sts_host(region);
    let url = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(EKS_PRESIGN_EXPIRY);
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers = [("host", host.as_str()), (EKS_CLUSTER_HEADER, cluster)];
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| aws::chain(&e))?
        .into_parts();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(&url)
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut request);
    let presigned = request.uri().to_string();
    Ok(format!(
        "{EKS_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn decode(token: &str) -> (String, BTreeMap<String, String>) {
        let encoded = token
            .strip_prefix(EKS_TOKEN_PREFIX)
            .expect("the token has the k8s-aws-v1. prefix");
        assert!(
            !encoded.contains(['=', '+', '/']),
            "base64url without padding: {encoded}"
        );
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        let uri: http::Uri = url.parse().unwrap();
        let query = uri.query().unwrap_or_default().to_string();
        let params = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_string(), percent_decode(v))
            })
            .collect();
        (url, params)
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn eks_tokens_are_presigned_get_caller_identity_urls_for_the_cluster() {
        // 2026-11-26T20:00:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_723_200);
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session/token+with=odd chars".into()),
            None,
            "test",
        );
        let token = eks_token(credentials.clone(), "eu-west-1", "dev-cluster", now).unwrap();
        let (url, params) = decode(&token);
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?"),
            "{url}"
        );
        assert_eq!(params["Action"], "GetCallerIdentity");
        assert_eq!(params["Version"], "2011-06-15");
        assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(
            params["X-Amz-Credential"],
            "AKIDEXAMPLE/20261126/eu-west-1/sts/aws4_request"
        );
        assert_eq!(params["X-Amz-Date"], "20261126T200000Z");
        assert_eq!(params["X-Amz-Expires"], "60");
        assert_eq!(params["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(
            params["X-Amz-Security-Token"],
            "session/token+with=odd chars"
        );
        // The same request presigned by botocore's SigV4QueryAuth (an independent
        // implementation, with its clock set to the same instant) has this signature.
        let signature = &params["X-Amz-Signature"];
        assert_eq!(
            signature,
            "5a373203011ba5cd84ddcffd546a0cf1b65340da8d7dc85ab5479f6e15f7625b"
        );

        // The signature covers the cluster name, the time and the region.
        let same = eks_token(credentials.clone(), "eu-west-1", "dev-cluster", now).unwrap();
        assert_eq!(token, same, "signing is deterministic");
        for other in [
            eks_token(credentials.clone(), "eu-west-1", "prod-cluster", now).unwrap(),
            eks_token(
                credentials.clone(),
                "eu-west-1",
                "dev-cluster",
                now + Duration::from_secs(1),
            )
            .unwrap(),
        ] {
            assert_ne!(decode(&other).1["X-Amz-Signature"], *signature);
        }
        let china = eks_token(credentials, "cn-north-1", "dev-cluster", now).unwrap();
        assert!(
            decode(&china)
                .0
                .starts_with("https://sts.cn-north-1.amazonaws.com.cn/?")
        );
    }

    #[test]
    fn kube_errors_read_as_one_line() {
        let status = kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "deployments.apps is forbidden: User \"x\" cannot list".into(),
            ..Default::default()
        };
        let error = kube::Error::Api(Box::new(status));
        assert_eq!(
            KubeCallError::from_kube(&error).to_string(),
            "Forbidden (HTTP 403): deployments.apps is forbidden: User \"x\" cannot list"
        );
        assert!(!is_not_found(&error));
        assert!(!is_conflict(&error));
    }
}
