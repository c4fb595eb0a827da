//! `hibernator-controller`: see `--help`.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hibernator_controller::clock::Clock;
use hibernator_controller::jobs::RunnerSettings;
use hibernator_controller::reconcile::Timing;
use hibernator_controller::tls;
use hibernator_controller::{Config, LeaderElection, Whereabouts};
use jiff::{SignedDuration, Timestamp};

/// Puts non-production infrastructure to sleep off-hours and wakes it up again.
#[derive(Parser, Debug)]
#[command(name = "hibernator-controller", version)]
struct Args {
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// The controller has namespaced permissions only (a Role in --namespace, none
    /// cluster-wide): runner tokens are verified against the API server's published signing
    /// keys instead of with TokenReviews, and no node or namespace is read.
    #[arg(long, requires = "namespace")]
    namespaced_rbac: bool,
    /// Verify every new runner token with a TokenReview instead of against the API server's
    /// published signing keys (which the controller falls back to TokenReviews for anyway
    /// when it cannot read them).
    #[arg(long, conflicts_with = "namespaced_rbac")]
    token_review: bool,
    /// Listen address of the gRPC service for runners.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:9444")]
    grpc_addr: SocketAddr,
    /// Serve the runners' gRPC over TLS with this certificate (PEM; a chain, leaf first),
    /// re-read every minute, instead of the controller's own certificate.
    #[arg(long, env = "GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<std::path::PathBuf>,
    /// The key of --grpc-tls-cert (PEM).
    #[arg(long, env = "GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<std::path::PathBuf>,
    /// The CA runners should trust for the controller (PEM); by default the last certificate of
    /// --grpc-tls-cert.
    #[arg(long, env = "GRPC_TLS_CA", requires = "grpc_tls_cert")]
    grpc_tls_ca: Option<std::path::PathBuf>,
    /// Without --grpc-tls-cert the controller keeps its own CA and serving certificate in this
    /// Secret of its namespace, and renews them before they expire.
    #[arg(long, env = "GRPC_TLS_SECRET", default_value = "hibernator-grpc-tls")]
    grpc_tls_secret: String,
    /// Namespace of --grpc-tls-secret (default: the controller's namespace).
    #[arg(long)]
    grpc_tls_secret_namespace: Option<String>,
    /// More names (DNS or IP) for the controller's own certificate, besides the host of
    /// --controller-endpoint (repeatable).
    #[arg(long = "grpc-tls-san", value_name = "NAME")]
    grpc_tls_sans: Vec<String>,
    /// Validity of the controller's own serving certificate (renewed with a third left).
    #[arg(long, default_value_t = 90 * 86_400, hide = true)]
    grpc_tls_cert_lifetime_seconds: i64,
    /// How often the controller checks its own certificate's Secret.
    #[arg(long, default_value_t = 300, hide = true)]
    grpc_tls_check_seconds: u64,
    /// Serve the runners' gRPC without TLS: tokens and restore data cross the network in the
    /// clear. Only for networks that encrypt themselves (a service mesh).
    #[arg(long, env = "GRPC_PLAINTEXT", conflicts_with = "grpc_tls_cert")]
    grpc_plaintext: bool,
    /// Listen address of /metrics, /livez and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Runner image.
    #[arg(long, env = "RUNNER_IMAGE")]
    runner_image: Option<String>,
    /// Runner image pull policy.
    #[arg(long, env = "RUNNER_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    runner_image_pull_policy: String,
    /// ServiceAccount of runner pods (must exist in each plan's namespace).
    #[arg(
        long,
        env = "RUNNER_SERVICE_ACCOUNT",
        default_value = "hibernator-runner"
    )]
    runner_service_account: String,
    /// The controller's gRPC endpoint as runner pods reach it.
    #[arg(long, env = "CONTROLLER_ENDPOINT")]
    controller_endpoint: Option<String>,
    /// Extra environment for every runner, `KEY=VALUE` (repeatable), e.g.
    /// `AWS_ENDPOINT_URL=http://localstack:4566`.
    #[arg(long = "runner-env", value_name = "KEY=VALUE")]
    runner_env: Vec<String>,
    /// Extra environment for every runner from a Secret key, `KEY=SECRET/KEY` (repeatable);
    /// the Secret must exist in each plan's namespace. Its value never passes through the
    /// controller.
    #[arg(long = "runner-env-from-secret", value_name = "KEY=SECRET/KEY")]
    runner_env_from_secret: Vec<String>,
    /// `activeDeadlineSeconds` of runner Jobs.
    #[arg(long, default_value_t = 3600)]
    runner_active_deadline_seconds: i64,
    /// `ttlSecondsAfterFinished` of runner Jobs.
    #[arg(long, default_value_t = 86400)]
    runner_ttl_seconds: i32,
    /// Runner CPU request.
    #[arg(long, default_value = "50m")]
    runner_cpu_request: String,
    /// Runner memory request.
    #[arg(long, default_value = "64Mi")]
    runner_memory_request: String,
    /// Runner memory limit.
    #[arg(long, default_value = "256Mi")]
    runner_memory_limit: String,
    /// Runner log format: text or json.
    #[arg(long, default_value = "text")]
    runner_log_format: String,
    /// Elect a leader among replicas with a Lease; only the leader creates Jobs and writes
    /// status.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "hibernator-controller")]
    leader_election_lease: String,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    leader_election_duration_seconds: u64,
    /// This instance's name (the pod name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Simulated time for tests and demos: the schedule clock starts at this instant...
    #[arg(long, requires = "clock_speed")]
    clock_start: Option<String>,
    /// ...and runs this many times faster than real time.
    #[arg(long, requires = "clock_start")]
    clock_speed: Option<f64>,
    /// Seconds a missing connector may last before the plan is Stalled (schedule clock).
    #[arg(long, default_value_t = 300)]
    reference_grace_seconds: i64,
    /// Seconds deletion waits for the wake-up before giving up.
    #[arg(long, default_value_t = 1800)]
    deletion_timeout_seconds: i64,
    /// Longest wait between two reconciles of a plan in seconds (real time): a safety net,
    /// since every change the controller acts on is watched or computed.
    #[arg(
        long,
        default_value_t = Timing::default().max_requeue.as_secs(),
        value_parser = clap::value_parser!(u64).range(10..)
    )]
    resync_seconds: u64,
    /// Notifications: the first retry's delay in milliseconds (doubled for each further one).
    #[arg(long, default_value_t = 2000)]
    notification_retry_base_ms: u64,
    /// Notifications: attempts per message before it is given up on.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=20))]
    notification_max_attempts: u32,
    /// Notifications: send a HeadsUp this many seconds (schedule time) before it is due, so that
    /// it arrives at least `headsUpBefore` before the hibernation.
    #[arg(long, default_value_t = 60)]
    notification_heads_up_lead_seconds: u64,
    /// Notifications: the shortest time between two messages to one sink, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    notification_min_interval_ms: u64,
    /// Savings ledger: a price table (YAML or JSON) extending and overriding the shipped one.
    #[arg(long)]
    prices: Option<std::path::PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// The namespace the controller runs in (downward API), so that no plan scales it to zero.
    #[arg(long, env = "POD_NAMESPACE")]
    self_namespace: Option<String>,
    /// The labels of the controller's Deployment, `KEY=VALUE,...`, so that no `workloads`
    /// target scales it to zero.
    #[arg(long, env = "SELF_LABELS", value_name = "KEY=VALUE,...")]
    self_labels: Option<String>,
    /// The node the controller runs on (downward API `spec.nodeName`): its node group and
    /// Karpenter NodePool are not put to sleep.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The EKS cluster the controller runs in, so that node groups of the same name in other
    /// clusters are not mistaken for its own.
    #[arg(long, env = "CLUSTER_NAME")]
    cluster_name: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(hibernator_controller::run(config(args)?))
}

fn config(args: Args) -> Result<Config> {
    let defaults = RunnerSettings::default();
    let mut extra_env = Vec::new();
    for kv in &args.runner_env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--runner-env {kv:?} is not KEY=VALUE");
        };
        extra_env.push((k.to_string(), v.to_string()));
    }
    let mut extra_env_secrets = Vec::new();
    for kv in &args.runner_env_from_secret {
        let Some((k, (secret, key))) = kv
            .split_once('=')
            .and_then(|(k, v)| Some((k, v.split_once('/')?)))
            .filter(|(k, (s, key))| !k.is_empty() && !s.is_empty() && !key.is_empty())
        else {
            bail!("--runner-env-from-secret {kv:?} is not KEY=SECRET/KEY");
        };
        extra_env_secrets.push((k.to_string(), secret.to_string(), key.to_string()));
    }
    let clock = match (&args.clock_start, args.clock_speed) {
        (Some(start), Some(speed)) => {
            let start: Timestamp = start
                .parse()
                .with_context(|| format!("--clock-start {start:?} is not an RFC 3339 instant"))?;
            if speed <= 0.0 {
                bail!("--clock-speed must be positive, not {speed}");
            }
            Clock::simulated(start, speed)
        }
        _ => Clock::System,
    };
    let controller_endpoint = args
        .controller_endpoint
        .clone()
        .unwrap_or(defaults.controller_endpoint.clone());
    let (grpc_tls, controller_ca) = grpc_tls(&args, &controller_endpoint)?;
    let instance = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("hibernator-controller-{}", std::process::id()));
    let leader_election = if args.leader_elect {
        Some(LeaderElection {
            namespace: args
                .leader_election_namespace
                .clone()
                .context("--leader-elect needs --leader-election-namespace (or POD_NAMESPACE)")?,
            lease: args.leader_election_lease.clone(),
            identity: instance.clone(),
            duration_seconds: args.leader_election_duration_seconds,
        })
    } else {
        None
    };
    let mut deployment_labels = std::collections::BTreeMap::new();
    for kv in args
        .self_labels
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--self-labels: {kv:?} is not KEY=VALUE");
        };
        deployment_labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    let whereabouts = Whereabouts {
        namespace: args.self_namespace.clone(),
        deployment_labels,
        node: args.node_name.clone(),
        cluster_name: args.cluster_name.clone(),
    };
    Ok(Config {
        whereabouts,
        namespace: args.namespace,
        namespaced_rbac: args.namespaced_rbac,
        token_review: args.token_review,
        grpc_addr: args.grpc_addr,
        grpc_tls,
        http_addr: args.http_addr,
        runner: RunnerSettings {
            image: args.runner_image.unwrap_or(defaults.image),
            image_pull_policy: args.runner_image_pull_policy,
            service_account: args.runner_service_account,
            controller_endpoint,
            extra_env,
            extra_env_secrets,
            active_deadline_seconds: args.runner_active_deadline_seconds,
            ttl_seconds_after_finished: args.runner_ttl_seconds,
            cpu_request: args.runner_cpu_request,
            memory_request: args.runner_memory_request,
            memory_limit: args.runner_memory_limit,
            log_format: args.runner_log_format,
            controller_ca: hibernator_controller::tls::TrustBundle::fixed(controller_ca),
            ..defaults
        },
        leader_election,
        clock,
        timing: Timing {
            reference_grace: SignedDuration::from_secs(args.reference_grace_seconds),
            deletion_timeout: SignedDuration::from_secs(args.deletion_timeout_seconds),
            max_requeue: std::time::Duration::from_secs(args.resync_seconds),
        },
        instance,
        notifications: hibernator_controller::notify::Settings {
            retry: hibernator_notify::Retry {
                base: std::time::Duration::from_millis(args.notification_retry_base_ms),
                max_attempts: args.notification_max_attempts,
                ..Default::default()
            },
            min_interval: std::time::Duration::from_millis(args.notification_min_interval_ms),
            heads_up_lead: SignedDuration::from_secs(
                args.notification_heads_up_lead_seconds.min(3600) as i64,
            ),
        },
        prices: std::sync::Arc::new(prices(args.prices.as_deref())?),
    })
}

/// The shipped price table, extended by the file of `--prices`.
fn prices(path: Option<&std::path::Path>) -> Result<hibernator_api::savings::PriceTable> {
    let mut table = hibernator_api::savings::PriceTable::builtin();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--prices {}: cannot read it", path.display()))?;
        let value: serde_json::Value = serde_saphyr::from_str(&text)
            .with_context(|| format!("--prices {}: not YAML or JSON", path.display()))?;
        let mine = hibernator_api::savings::PriceTable::from_json(&value.to_string())
            .with_context(|| format!("--prices {}", path.display()))?;
        table.merge(mine);
    }
    Ok(table)
}

/// Where the gRPC certificate comes from, and the CA runners trust when it is fixed.
fn grpc_tls(args: &Args, endpoint: &str) -> Result<(tls::Source, Option<String>)> {
    let url: http::Uri = endpoint
        .parse()
        .with_context(|| format!("--controller-endpoint {endpoint:?} is not a URL"))?;
    let https = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("--controller-endpoint {endpoint:?} must start with https:// or http://"),
    };
    if args.grpc_plaintext {
        if https {
            bail!(
                "--controller-endpoint {endpoint:?} is https:// but --grpc-plaintext serves without TLS"
            );
        }
        return Ok((tls::Source::Plaintext, None));
    }
    if !https {
        bail!(
            "--controller-endpoint {endpoint:?} is plaintext, but the runners' gRPC is served over TLS; use https://, or --grpc-plaintext to serve without TLS"
        );
    }
    if let (Some(cert), Some(key)) = (&args.grpc_tls_cert, &args.grpc_tls_key) {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).with_context(|| format!("failed to read {}", p.display()))
        };
        let ca = match &args.grpc_tls_ca {
            Some(ca) => read(ca)?,
            // A self-signed certificate, or a chain ending with its CA.
            None => {
                let chain = read(cert)?;
                chain
                    .rfind("-----BEGIN CERTIFICATE-----")
                    .map(|i| chain[i..].to_string())
                    .with_context(|| format!("{} holds no PEM certificate", cert.display()))?
            }
        };
        return Ok((
            tls::Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            Some(ca),
        ));
    }
    let namespace = args
        .grpc_tls_secret_namespace
        .clone()
        .or_else(|| args.self_namespace.clone())
        .context(
            "the controller keeps its gRPC certificate in a Secret of its namespace: set POD_NAMESPACE (or --grpc-tls-secret-namespace), or give --grpc-tls-cert and --grpc-tls-key",
        )?;
    let mut sans: Vec<String> = url.host().map(str::to_string).into_iter().collect();
    sans.extend(args.grpc_tls_sans.iter().cloned());
    sans.dedup();
    Ok((
        tls::Source::SelfManaged(tls::SelfManaged {
            namespace,
            secret: args.grpc_tls_secret.clone(),
            sans,
            lifetimes: tls::Lifetimes {
                cert: SignedDuration::from_secs(args.grpc_tls_cert_lifetime_seconds),
                // Longer than any runner Job lives (its active deadline), and at least a day.
                ca_overlap: SignedDuration::from_secs(
                    (2 * args.runner_active_deadline_seconds).max(86_400),
                ),
                ..tls::Lifetimes::default()
            },
            check_every: std::time::Duration::from_secs(args.grpc_tls_check_seconds.max(1)),
        }),
        None,
    ))
}

fn init_logging(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn,h2=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("--log-format must be text or json, not {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prices;

    #[test]
    fn a_prices_file_extends_the_shipped_table_and_bad_ones_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("prices.yaml");
        std::fs::write(
            &good,
            "currency: EUR\nregions:\n  eu-west-1:\n    ec2: {m5.large: 0.107}\n",
        )
        .unwrap();
        let t = prices(Some(&good)).unwrap();
        assert_eq!(t.currency, "EUR");
        assert_eq!(t.regions["eu-west-1"].ec2["m5.large"], 0.107);
        assert_eq!(
            t.regions["us-east-1"].ec2["m5.large"], 0.096,
            "the shipped prices stay"
        );
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "regions:\n  x:\n    ec2: {m5.large: -2}\n").unwrap();
        let e = format!("{:#}", prices(Some(&bad)).unwrap_err());
        assert!(e.contains("bad.yaml") && e.contains("is -2"), "{e}");
        assert_eq!(
            prices(None).unwrap(),
            hibernator_api::savings::PriceTable::builtin()
        );
    }
}
