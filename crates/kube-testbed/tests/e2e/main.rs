//! End-to-end tests against the real control plane and the process kubelet. All tests of this
//! binary share one cluster (`TestCluster::shared`) and isolate themselves by namespace.

mod cel;
mod cluster;
mod common;
mod controller;
mod crds;
mod helm;
mod jobs;
mod kubectl;
mod pods;
mod probes;
mod tokens;
mod up;
