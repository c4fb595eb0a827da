//! The Hibernator controller. `main.rs` parses flags and calls [`run`]; the reconcile pipeline
//! ([`reconcile`]) is fetch -> validate -> resolve references -> decide (pure, [`decide`]) ->
//! apply (Jobs, restore data, Events) -> one status patch when something changed.

pub mod clock;
pub mod connectors;
pub mod decide;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod restore;
pub mod selfguard;
pub mod tls;
pub mod urgency;

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::grpc::{Reports, RunnerService, TokenReviewAuthenticator};
use crate::http::Readiness;
use crate::jobs::{MANAGER, RunnerSettings};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Timing};
use crate::restore::RestoreStore;

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease: String,
    /// This instance's identity (the pod name).
    pub identity: String,
    /// Lease duration in seconds.
    pub duration_seconds: u64,
}

/// Where the controller runs (from the downward API and the chart), to keep plans from
/// putting it to sleep.
#[derive(Debug, Clone, Default)]
pub struct Whereabouts {
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its Deployment's labels.
    pub deployment_labels: std::collections::BTreeMap<String, String>,
    /// Its node.
    pub node: Option<String>,
    /// The EKS cluster it runs in.
    pub cluster_name: Option<String>,
}

/// The controller's configuration (from flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the controller runs.
    pub whereabouts: Whereabouts,
    /// Watch only this namespace (all when absent).
    pub namespace: Option<String>,
    /// Namespaced permissions only: verify runner tokens locally, read no nodes or namespaces.
    pub namespaced_rbac: bool,
    /// Verify every new runner token with a TokenReview, not against the signing keys.
    pub token_review: bool,
    /// gRPC listen address for runners.
    pub grpc_addr: SocketAddr,
    /// Where the gRPC service's certificate comes from.
    pub grpc_tls: tls::Source,
    /// Metrics and health listen address.
    pub http_addr: SocketAddr,
    /// How runner Jobs are built.
    pub runner: RunnerSettings,
    /// Leader election; a single instance leads alone when absent.
    pub leader_election: Option<LeaderElection>,
    /// Schedule clock.
    pub clock: Clock,
    /// Timing of the reconciler.
    pub timing: Timing,
    /// Identity used in Events.
    pub instance: String,
    /// How notifications are delivered.
    pub notifications: notify::Settings,
    /// Prices of the savings ledger (the shipped table, extended by `--prices`).
    pub prices: std::sync::Arc<hibernator_api::savings::PriceTable>,
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let client = Client::try_default()
        .await
        .context("failed to configure the Kubernetes client")?;
    let metrics = Metrics::new();
    let ready = Readiness::default();
    let reports = Reports::default();
    let store = RestoreStore::new(client.clone());
    let notifier = notify::Notifier::new(
        client.clone(),
        config.clock,
        metrics.clone(),
        config.notifications,
    )
    .context("failed to set up notifications (trust roots)")?;
    let (wake_tx, _) = broadcast::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // The gRPC server runs on every replica: restore writes use optimistic concurrency, and
    // runner reports are kept for whichever replica leads.
    let service = RunnerService::new(
        client.clone(),
        if config.namespaced_rbac {
            TokenReviewAuthenticator::local(client.clone(), &config.runner.service_account)
        } else if config.token_review {
            TokenReviewAuthenticator::reviewing(client.clone(), &config.runner.service_account)
        } else {
            TokenReviewAuthenticator::new(client.clone(), &config.runner.service_account)
        },
        store.clone(),
        reports.clone(),
        wake_tx.clone(),
        metrics.clone(),
    )
    .with_clock(config.clock);
    let serving = tls::Serving::default();
    tls::start(
        &config.grpc_tls,
        &client,
        &serving,
        &config.runner.controller_ca,
        stopped(stop_rx.clone()),
    )
    .await?;
    let router = tonic::transport::Server::builder().add_service(
        hibernator_proto::v1::runner_server::RunnerServer::new(service),
    );
    let grpc = match &config.grpc_tls {
        tls::Source::Plaintext => {
            warn!(
                "serving runners over plaintext gRPC (--grpc-plaintext): tokens and restore data cross the network unencrypted"
            );
            tokio::spawn(router.serve_with_shutdown(config.grpc_addr, stopped(stop_rx.clone())))
        }
        _ => {
            let listener = tokio::net::TcpListener::bind(config.grpc_addr)
                .await
                .with_context(|| format!("failed to listen on {}", config.grpc_addr))?;
            tokio::spawn(router.serve_with_incoming_shutdown(
                tls::incoming(listener, serving.server_config()),
                stopped(stop_rx.clone()),
            ))
        }
    };
    info!(addr = %config.grpc_addr, tls = !matches!(config.grpc_tls, tls::Source::Plaintext), "serving runners (gRPC)");
    let http = tokio::spawn(http::serve(
        config.http_addr,
        metrics.clone(),
        ready.clone(),
        stopped(stop_rx.clone()),
    ));
    info!(addr = %config.http_addr, "serving /metrics, /livez, /readyz");

    let shutdown = {
        let ready = ready.clone();
        async move {
            wait_for_signal().await;
            info!("shutting down");
            ready.set(false);
            let _ = stop_tx.send(true);
        }
    };
    tokio::spawn(shutdown);
    tokio::spawn(memory::hand_back_free_memory_now_and_then());

    let self_guard = if config.namespaced_rbac {
        info!(
            "namespaced permissions: the controller's node group, NodePool and namespace labels are not read, so not guarded"
        );
        selfguard::SelfGuard {
            namespace: config.whereabouts.namespace.clone(),
            deployment_labels: config.whereabouts.deployment_labels.clone(),
            cluster_name: config.whereabouts.cluster_name.clone(),
            ..Default::default()
        }
    } else {
        self_guard(&client, &config.whereabouts).await
    };
    let make_ctx = |config: &Config, stores: reconcile::ControllerStores| Context {
        plan_changes: stores.plan_changes,
        self_guard: self_guard.clone(),
        versions: Default::default(),
        busy: Default::default(),
        phases_stale: stores.plans_changed,
        client: client.clone(),
        clock: config.clock,
        runner: config.runner.clone(),
        store: store.clone(),
        reports: reports.clone(),
        metrics: metrics.clone(),
        timing: config.timing,
        prices: config.prices.clone(),
        jobs: stores.jobs,
        exceptions: stores.exceptions,
        providers: stores.providers,
        clusters: stores.clusters,
        plans: stores.plans,
        instance: config.instance.clone(),
    };

    match &config.leader_election {
        None => {
            metrics.set_leader(true);
            tokio::join!(
                reconcile::run_controller(
                    client.clone(),
                    config.namespace.clone(),
                    |s| make_ctx(&config, s),
                    notifier.clone(),
                    wake_tx.subscribe(),
                    ready.clone(),
                    stopped(stop_rx.clone()),
                ),
                connectors::run(
                    client.clone(),
                    config.namespace.clone(),
                    config.clock,
                    stopped(stop_rx.clone())
                ),
            );
        }
        Some(le) => {
            ensure_lease(&client, le).await?;
            let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &le.lease)
                .with_namespace(&le.namespace)
                .with_identity(&le.identity)
                .with_duration(le.duration_seconds)
                .with_grace((le.duration_seconds / 3).max(1))
                .with_field_manager(format!("{MANAGER}-{}", le.identity))
                .build()
                .await
                .context("failed to set up leader election")?;
            let (mut leader, _handle) = manager.watch().await;
            // A follower serves runners; it is ready as soon as it does.
            ready.set(true);
            loop {
                tokio::select! {
                    _ = leader.wait_for(|l| *l) => {}
                    _ = stopped(stop_rx.clone()) => break,
                }
                info!(identity = %le.identity, "became the leader");
                metrics.set_leader(true);
                let lost = || {
                    let mut l = leader.clone();
                    let stop = stop_rx.clone();
                    async move {
                        tokio::select! {
                            _ = l.wait_for(|l| !*l) => {}
                            _ = stopped(stop) => {}
                        }
                    }
                };
                tokio::join!(
                    reconcile::run_controller(
                        client.clone(),
                        config.namespace.clone(),
                        |s| make_ctx(&config, s),
                        notifier.clone(),
                        wake_tx.subscribe(),
                        ready.clone(),
                        lost(),
                    ),
                    connectors::run(
                        client.clone(),
                        config.namespace.clone(),
                        config.clock,
                        lost()
                    ),
                );
                if *stop_rx.borrow() {
                    break;
                }
                metrics.set_leader(false);
                warn!(identity = %le.identity, "lost the leadership; following");
                ready.set(true);
            }
        }
    }
    let _ = grpc.await;
    let _ = http.await;
    Ok(())
}

/// Reads the labels of the controller's node and namespace. What cannot be read is logged and
/// left unguarded.
async fn self_guard(client: &Client, w: &Whereabouts) -> selfguard::SelfGuard {
    use k8s_openapi::api::core::v1::{Namespace, Node};
    let mut guard = selfguard::SelfGuard {
        namespace: w.namespace.clone(),
        deployment_labels: w.deployment_labels.clone(),
        cluster_name: w.cluster_name.clone(),
        ..Default::default()
    };
    if let Some(node) = &w.node {
        match Api::<Node>::all(client.clone()).get(node).await {
            Ok(n) => {
                let labels = n.metadata.labels.unwrap_or_default();
                guard.node_group = labels.get(selfguard::NODEGROUP_LABEL).cloned();
                guard.node_pool = labels.get(selfguard::NODEPOOL_LABEL).cloned();
            }
            Err(e) => warn!(
                node,
                "cannot read the controller's node; its node group and NodePool are not guarded: {e}"
            ),
        }
    }
    if let Some(ns) = &w.namespace {
        match Api::<Namespace>::all(client.clone()).get(ns).await {
            Ok(n) => guard.namespace_labels = n.metadata.labels.unwrap_or_default(),
            Err(e) => {
                warn!(namespace = %ns, "cannot read the controller's namespace; namespace selectors are not checked against it: {e}")
            }
        }
    }
    info!(
        ?guard,
        "guarding the controller's own namespace, Deployment and node"
    );
    guard
}

/// Creates the Lease (with this controller's field manager) if it does not exist.
async fn ensure_lease(client: &Client, le: &LeaderElection) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    if api.get_opt(&le.lease).await?.is_some() {
        return Ok(());
    }
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(le.lease.clone()),
            ..Default::default()
        },
        spec: Default::default(),
    };
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).context("failed to create the leader-election Lease"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
