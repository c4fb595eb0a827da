//! The end-to-end tests that share one test cluster. Each test works in a namespace of its own
//! (`World::new`) with its own controller process, moto and runner pods, so libtest runs them
//! side by side; most of their time is spent waiting on simulated clocks, Jobs and pods, and one
//! binary also links the heavy dependencies once instead of once per file.
//!
//! Tests that need a cluster to themselves start one of their own (`World::alone`,
//! `private_cluster`): `chaos` (restarts the API server), `namespaces` (a controller watching
//! every namespace) and `gitops_apply` (applies the example repository into its fixed
//! namespaces, which `chart_install` also uses).

mod argocd;
mod audit;
mod cel_parity;
mod chaos;
mod chart_install;
mod cli_live;
mod demo;
mod enforce;
mod exception_targets;
mod flux;
mod gitops_apply;
mod grpc_tls;
mod ha;
mod helm;
mod lifecycle;
mod morning;
mod namespaces;
mod night;
mod notifications;
mod workloads;
