//! Sending one HibernationNotification message: the URL from its Secret (read at each
//! delivery, never logged), an HTTPS POST, retries with exponential backoff that honour
//! `Retry-After`, and an HMAC-SHA256 signature for CloudEvents webhooks that ask for one. The
//! controller's sink workers and `kubectl hibernator notify test` send through this one copy.

use std::time::Duration;

use bytes::Bytes;
use hibernator_api::notification::{SecretKeyRef, Sink};
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

/// The signature header of CloudEvents webhooks with an `hmacSecretRef`.
pub const SIGNATURE_HEADER: &str = "x-hibernator-signature-256";

/// An HTTPS client trusting the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured), HTTP/1.1.
#[derive(Clone)]
pub struct Http(HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>);

impl Http {
    /// Loads the trust roots.
    pub fn new() -> anyhow::Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self(
            HttpClient::builder(TokioExecutor::new()).build(connector),
        ))
    }
}

/// How often and how patiently to try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// First retry delay; doubled for each further retry.
    pub base: Duration,
    /// Longest delay between two attempts (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            max_attempts: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// One message for one sink.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The notification's namespace (where its Secrets are).
    pub namespace: &'a str,
    /// The sink.
    pub sink: &'a Sink,
    /// The body, as rendered for the sink's type.
    pub body: &'a [u8],
}

/// How a delivery went.
#[derive(Debug)]
pub struct Report {
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up on; `None` when delivered.
    pub error: Option<String>,
}

/// One failed attempt.
#[derive(Debug)]
struct Failure {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
    fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

/// Delivers `message`, retrying as `retry` says; `count` is told each attempt's result
/// (`delivered`, `retried`, `failed`).
pub async fn deliver(
    client: &Client,
    http: &Http,
    retry: &Retry,
    message: Message<'_>,
    count: impl Fn(&'static str),
) -> Report {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match attempt_once(client, http, retry, message).await {
            Ok(()) => {
                count("delivered");
                return Report {
                    attempts: attempt,
                    error: None,
                };
            }
            Err(f) if !f.retryable || attempt >= retry.max_attempts => {
                count("failed");
                return Report {
                    attempts: attempt,
                    error: Some(if f.retryable && attempt > 1 {
                        format!("gave up after {attempt} attempts: {}", f.message)
                    } else {
                        f.message
                    }),
                };
            }
            Err(f) => {
                count("retried");
                let backoff = retry.base.saturating_mul(2u32.saturating_pow(attempt - 1));
                let wait = f.retry_after.unwrap_or(backoff).min(retry.max_backoff);
                tracing::debug!(sink = %message.sink.effective_name(), attempt, ?wait, "notification attempt failed: {}", f.message);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn attempt_once(
    client: &Client,
    http: &Http,
    retry: &Retry,
    message: Message<'_>,
) -> Result<(), Failure> {
    let (uri, hmac_key) = resolve(client, message.namespace, message.sink)
        .await
        .map_err(Failure::transient)?;
    let content_type = if message.sink.webhook.is_some() {
        "application/cloudevents+json; charset=utf-8"
    } else {
        "application/json"
    };
    let mut request = Request::post(uri)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(
            http::header::USER_AGENT,
            concat!("hibernator-controller/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(w) = &message.sink.webhook {
        for (k, v) in w.headers.iter().flatten() {
            let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                Failure::fatal(format!("spec.sinks: header name {k:?} is not valid"))
            })?;
            let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                Failure::fatal(format!(
                    "spec.sinks: the value of header {k:?} is not valid"
                ))
            })?;
            request = request.header(name, value);
        }
    }
    if let Some(key) = hmac_key {
        request = request.header(SIGNATURE_HEADER, signature(&key, message.body));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(message.body)))
        .map_err(|e| Failure::fatal(format!("could not build the request: {e}")))?;
    let response = match tokio::time::timeout(retry.timeout, http.0.request(request)).await {
        Err(_) => {
            return Err(Failure::transient(format!(
                "no answer within {}s",
                retry.timeout.as_secs()
            )));
        }
        // The error's text names the failure (refused, TLS, DNS), never the URL.
        Ok(Err(e)) => {
            return Err(Failure::transient(hibernator_api::common::error_chain(&e)));
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    Err(Failure {
        message: format!("the receiver answered HTTP {}", status.as_u16()),
        retryable,
        retry_after,
    })
}

/// The URL (and the HMAC key) of a sink, from its Secrets; the error names the Secret and key,
/// never a value.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    sink: &Sink,
) -> Result<(Uri, Option<Vec<u8>>), String> {
    let field = field_of(sink);
    let url_ref = sink
        .url_secret()
        .ok_or_else(|| "spec.sinks: give exactly one of slack, teams and webhook".to_string())?;
    let url = secret_value(client, namespace, url_ref, &field).await?;
    let url = String::from_utf8(url).map_err(|_| {
        format!(
            "{field}: Secret {} key {} is not text",
            url_ref.name, url_ref.key
        )
    })?;
    let uri = parse_url(&url, sink.insecure == Some(true))
        .map_err(|why| format!("{field}: Secret {} key {} {why}", url_ref.name, url_ref.key))?;
    let hmac = match sink
        .webhook
        .as_ref()
        .and_then(|w| w.hmac_secret_ref.as_ref())
    {
        Some(r) => {
            Some(secret_value(client, namespace, r, "spec.sinks[].webhook.hmacSecretRef").await?)
        }
        None => None,
    };
    Ok((uri, hmac))
}

fn field_of(sink: &Sink) -> String {
    let name = sink.effective_name();
    if sink.slack.is_some() {
        format!("sink {name} (slack.webhookSecretRef)")
    } else if sink.teams.is_some() {
        format!("sink {name} (teams.webhookSecretRef)")
    } else {
        format!("sink {name} (webhook.urlSecretRef)")
    }
}

async fn secret_value(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<Vec<u8>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(&r.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(format!(
                "{field}: Secret {} not found in namespace {namespace}",
                r.name
            ));
        }
        Err(kube::Error::Api(s)) => {
            return Err(format!(
                "{field}: cannot read Secret {} in namespace {namespace}: {} ({})",
                r.name, s.reason, s.code
            ));
        }
        Err(_) => {
            return Err(format!(
                "{field}: cannot read Secret {} in namespace {namespace}",
                r.name
            ));
        }
    };
    secret
        .data
        .and_then(|mut d| d.remove(&r.key))
        .map(|b| b.0)
        .ok_or_else(|| format!("{field}: Secret {} has no key {}", r.name, r.key))
}

/// A webhook URL: `https://`, or `http://` when the sink is `insecure`. The error never holds
/// the URL (it carries a token).
pub fn parse_url(text: &str, insecure: bool) -> Result<Uri, &'static str> {
    let uri: Uri = text.trim().parse().map_err(|_| "does not hold a URL")?;
    if uri.host().is_none() {
        return Err("does not hold a URL with a host");
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if insecure => Ok(uri),
        Some("http") => Err("holds an http:// URL; use https:// or set insecure: true on the sink"),
        _ => Err("does not hold an https:// URL"),
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body);
    // Hex by hand: two lines do not justify a dependency.
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let ahead = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(ahead).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_must_be_https_unless_the_sink_is_insecure() {
        let token = "https://hooks.example/services/T0KEN";
        assert!(parse_url(token, false).is_ok());
        assert!(
            parse_url(&format!(" {token}\n"), false).is_ok(),
            "a trailing newline is fine"
        );
        let plain = "http://receiver.internal/hook";
        assert_eq!(
            parse_url(plain, false).unwrap_err(),
            "holds an http:// URL; use https:// or set insecure: true on the sink"
        );
        assert!(parse_url(plain, true).is_ok());
        assert_eq!(
            parse_url("ftp://x/y", true).unwrap_err(),
            "does not hold an https:// URL"
        );
        assert_eq!(
            parse_url("not a url", false).unwrap_err(),
            "does not hold a URL"
        );
        assert_eq!(
            parse_url("/relative", false).unwrap_err(),
            "does not hold a URL with a host"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
