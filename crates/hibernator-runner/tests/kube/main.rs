//! The `workloads`, `karpenter` and `gitops` executors end to end: the runner binary against the real
//! test cluster (`kube-testbed`: kube-apiserver, controller manager with the Deployment,
//! ReplicaSet and StatefulSet controllers, a process kubelet running the pods) and the
//! in-memory controller. These tests fail, never skip, when the cluster cannot start.

mod common;
mod gitops;
mod incluster;
mod karpenter;
mod kinds;
mod workloads;
