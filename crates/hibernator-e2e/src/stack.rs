//! What a user installs, on the test cluster: moto with an AWS estate, `helm install` of the
//! chart (the controller image mapped to the locally built binary, runners pointed at moto
//! through the chart's `runner.extraEnv`), and `kubectl apply` of the seed's manifests. Used by
//! the chart's end-to-end test and by `cargo xtask demo`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube_testbed::{Image, TestCluster};
use moto_server::MotoServer;
use serde_json::{Value, json};

use crate::root;
use crate::world::{binaries, free_port, wait_for};

/// The images the chart uses by default (tag = the chart's appVersion).
pub const CONTROLLER_IMAGE: &str = "ghcr.io/hibernator/hibernator-controller:0.1.0";
/// See [`CONTROLLER_IMAGE`].
pub const RUNNER_IMAGE: &str = "ghcr.io/hibernator/hibernator-runner:0.1.0";

/// The seed's manifests, as a user keeps them in Git.
pub const SEED_FILES: &[&str] = &[
    "examples/gitops/hibernator/namespaces/hibernator-system.yaml",
    "examples/gitops/hibernator/cloudproviders/aws-prod.yaml",
    "examples/gitops/hibernator/k8sclusters/eks-prod.yaml",
    "examples/gitops/hibernator/hibernateplans/prod-offhours.yaml",
];

/// The AWS estate the seed's plan acts on, plus instances no plan names.
pub fn seed_estate() -> Value {
    json!({
        "rds": ["prod-db"],
        "eks": {"prod-eks-1": {"default-ng": [2, 3, 6], "gpu-ng": [1, 1, 2]}},
        "ec2": [
            {"name": "bastion", "tags": {"role": "bastion"}},
            {"name": "ci-runner", "tags": {"role": "ci"}},
            {"name": "old-batch", "tags": {"role": "batch"}, "running": false},
        ],
    })
}

/// How to install.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Release namespace (the seed's objects live in `hibernator-system`).
    pub namespace: String,
    /// Helm release name.
    pub release: String,
    /// Schedule time at start (RFC 3339).
    pub clock_start: String,
    /// Schedule seconds per real second.
    pub clock_speed: f64,
    /// Install the CRDs with the chart.
    pub crds: bool,
    /// Extra `--set` values.
    pub extra_sets: Vec<String>,
    /// `kubectl apply` the seed's manifests after the install (a GitOps test leaves them to
    /// Flux or Argo CD).
    pub apply_seed: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            namespace: "hibernator-system".into(),
            release: "hibernator".into(),
            // Thursday 19:59 in New York.
            clock_start: "2026-11-27T00:59:00Z".into(),
            clock_speed: 1200.0,
            crds: true,
            extra_sets: vec![],
            apply_seed: true,
        }
    }
}

/// An installed stack.
pub struct Stack {
    /// The AWS emulator.
    pub moto: MotoServer,
    /// The state of the estate before anything happened.
    pub before: Value,
    /// Release namespace.
    pub namespace: String,
    /// The controller's metrics and health port (on 127.0.0.1).
    pub metrics_port: u16,
}

impl Stack {
    /// Maps the images, starts moto with `estate`, installs the chart and applies the seed's
    /// manifests. `progress` hears what is happening.
    pub async fn install(
        cluster: &TestCluster,
        opts: &StackOptions,
        estate: Value,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Stack> {
        let b = binaries()?;
        cluster.map_image(CONTROLLER_IMAGE, Image::new(&b.controller));
        cluster.map_image(RUNNER_IMAGE, Image::new(&b.runner));
        progress("starting moto (AWS emulator) and creating the AWS estate");
        let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
        let before = crate::world::estate_at(moto.endpoint(), &["create", &estate.to_string()])?;

        let grpc = free_port()?;
        let metrics_port = free_port()?;
        let mut sets = vec![
            format!("controllerEndpoint=https://127.0.0.1:{grpc}"),
            format!("service.grpcPort={grpc}"),
            format!("service.metricsPort={metrics_port}"),
            format!("clock.start={}", opts.clock_start),
            format!("clock.speed={}", opts.clock_speed),
            format!("crds.enabled={}", opts.crds),
            "logFormat=text".into(),
        ];
        // Runners reach moto the way they would reach LocalStack; keys stand in for IRSA.
        for (i, (k, v)) in [
            ("AWS_ENDPOINT_URL", moto.endpoint().to_string()),
            ("AWS_ACCESS_KEY_ID", "demo".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "demo-secret".to_string()),
            ("HIBERNATOR_POLL_INTERVAL_MS", "200".to_string()),
        ]
        .iter()
        .enumerate()
        {
            sets.push(format!("runner.extraEnv[{i}].name={k}"));
            sets.push(format!("runner.extraEnv[{i}].value={v}"));
        }
        sets.extend(opts.extra_sets.iter().cloned());
        progress(&format!(
            "helm install {} deploy/helm/hibernator (controller image -> local binary, simulated clock {}x)",
            opts.release, opts.clock_speed
        ));
        let helm = cluster.helm()?;
        let kubeconfig = cluster.kubeconfig_path().display().to_string();
        let chart = root().join("deploy/helm/hibernator").display().to_string();
        let mut args = vec![
            "install".to_string(),
            opts.release.clone(),
            chart,
            "--namespace".into(),
            opts.namespace.clone(),
            "--create-namespace".into(),
            "--kubeconfig".into(),
            kubeconfig,
            "--wait".into(),
            "--timeout".into(),
            "120s".into(),
        ];
        for s in &sets {
            // Strings stay strings (an env value of `200` is not a number).
            let flag = if s.starts_with("runner.extraEnv") || s.starts_with("clock.start") {
                "--set-string"
            } else {
                "--set"
            };
            args.push(flag.into());
            args.push(s.clone());
        }
        helm.run(&args).await.context("helm install failed")?;
        let deployments: Api<Deployment> = Api::namespaced(cluster.client()?, &opts.namespace);
        let name = format!("{}-hibernator", opts.release);
        let name = if opts.release.contains("hibernator") {
            opts.release.clone()
        } else {
            name
        };
        wait_for(
            Duration::from_secs(60),
            "the controller Deployment available",
            || async {
                let d = deployments.get_opt(&name).await.ok()??;
                (d.status?.available_replicas? >= 1).then_some(())
            },
        )
        .await?;

        let stack = Stack {
            moto,
            before,
            namespace: opts.namespace.clone(),
            metrics_port,
        };
        if !opts.apply_seed {
            return Ok(stack);
        }
        progress("kubectl apply -f (the seed's manifests)");
        let kubectl = cluster.kubectl()?;
        let mut args: Vec<String> = vec!["apply".into()];
        for f in SEED_FILES {
            args.push("-f".into());
            args.push(root().join(f).display().to_string());
        }
        let out = kubectl.run(&args).await.context("kubectl apply failed")?;
        if !out
            .stdout
            .contains("hibernationplan.hibernator.ardikasaputro.io/prod-offhours")
        {
            bail!("kubectl apply did not create the plan: {}", out.stdout);
        }
        Ok(stack)
    }

    /// The state of every AWS resource now.
    pub fn snapshot(&self) -> Result<Value> {
        crate::world::estate_at(self.moto.endpoint(), &["snapshot"])
    }
}

/// The kubectl-hibernator binary, built.
pub fn cli() -> Result<PathBuf> {
    Ok(binaries()?.cli.clone())
}
