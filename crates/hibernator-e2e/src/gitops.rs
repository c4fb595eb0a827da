//! The seed's manifests delivered from Git by a real GitOps tool: a repository on a local Git
//! server, and the seed's own Flux GitRepository + Kustomization or Argo CD Application
//! pointing at it (only the repository URL differs from the seed). Used by the GitOps
//! end-to-end tests and by `cargo xtask demo --gitops flux|argocd`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hibernator_api::HibernationPlan;
use jiff::Timestamp;
use kube::{Api, Client};
use kube_testbed::TestCluster;
use serde_json::{Value, json};

use crate::argocd::ArgoCd;
use crate::flux::Flux;
use crate::gitserver::{Checkout, GitServer};
use crate::world::{apply, wait_for, yaml_docs};

/// The repository's name on the local Git server (the seed's `my-infrastructure-repo`).
pub const REPO: &str = "my-infrastructure-repo";

/// Which GitOps tool syncs the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Flux: source-controller and kustomize-controller.
    Flux,
    /// Argo CD: the application controller and the repo server.
    ArgoCd,
}

/// The running tool.
pub enum Running {
    /// Flux's controllers.
    Flux(Flux),
    /// Argo CD's processes.
    ArgoCd(ArgoCd),
}

/// Starts `tool` on `cluster` with its files under `dir` (Argo CD's Redis is Debian's
/// `redis-server`).
pub async fn start(tool: Tool, cluster: &TestCluster, dir: &Path) -> Result<Running> {
    Ok(match tool {
        Tool::Flux => Running::Flux(Flux::start(cluster, dir).await?),
        Tool::ArgoCd => {
            let redis = tokio::task::spawn_blocking(|| {
                gitops_checks::debian_tool(
                    "redis-server",
                    "redis-server",
                    "HIBERNATOR_REDIS_SERVER",
                )
            })
            .await?;
            Running::ArgoCd(ArgoCd::start(cluster, dir, &redis).await?)
        }
    })
}

/// The seed's GitRepository (its URL pointing at `git`) with its credentials Secret (created
/// outside Git, as the seed says) and the seed's Kustomization, unchanged.
pub async fn flux_sync(client: &Client, git: &GitServer) -> Result<()> {
    apply(
        client,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "git-credentials", "namespace": crate::flux::NAMESPACE},
                "stringData": {"username": "platform", "password": "not-checked-here"}}),
    )
    .await?;
    let mut source: Value = yaml_docs("examples/gitops/hibernator-source.yaml")?
        .into_iter()
        .next()
        .context("the seed's GitRepository")?;
    source["spec"]["url"] = json!(git.url(REPO));
    apply(client, &source).await?;
    for doc in yaml_docs("examples/gitops/hibernator-kustomization.yaml")? {
        apply(client, &doc).await?;
    }
    Ok(())
}

/// The seed's Application, its repoURL pointing at `git`.
pub async fn argocd_sync(client: &Client, git: &GitServer) -> Result<()> {
    let mut app: Value = yaml_docs("examples/gitops/argocd-hibernator-app.yaml")?
        .into_iter()
        .next()
        .context("the seed's Application")?;
    app["spec"]["source"]["repoURL"] = json!(git.url(REPO));
    apply(client, &app).await
}

/// Applies the seed's objects that make `tool` sync the repository on `git`.
pub async fn sync(tool: Tool, client: &Client, git: &GitServer) -> Result<()> {
    match tool {
        Tool::Flux => flux_sync(client, git).await,
        Tool::ArgoCd => argocd_sync(client, git).await,
    }
}

/// The stack's seed files ([`crate::stack::SEED_FILES`]: what one night on moto needs; the
/// other files of the example name connectors of clusters a test does not have) as the
/// repository's `hibernator/`, with a kustomization.yaml listing them.
pub struct StackRepository {
    /// The working copy.
    pub repo: Checkout,
    /// The first commit.
    pub first: String,
    resources: Vec<String>,
}

impl StackRepository {
    /// Creates the repository on `git`, with its working copy in `work`.
    pub async fn create(git: &GitServer, work: &Path) -> Result<StackRepository> {
        git.create(REPO).await?;
        let repo = Checkout::clone(&git.url(REPO), work).await?;
        let mut resources = Vec::new();
        for file in crate::stack::SEED_FILES {
            let inside = file
                .strip_prefix("examples/gitops/")
                .context("a seed file under examples/gitops")?;
            let to = repo.path(inside);
            std::fs::create_dir_all(to.parent().context("a parent")?)?;
            std::fs::copy(crate::root().join(file), &to)?;
            resources.push(
                inside
                    .strip_prefix("hibernator/")
                    .context("a seed file under hibernator/")?
                    .to_string(),
            );
        }
        let mut me = StackRepository {
            repo,
            first: String::new(),
            resources,
        };
        me.write_kustomization()?;
        me.first = me.repo.commit_and_push("Hibernation plans").await?;
        Ok(me)
    }

    /// Removes the file `inside` of `hibernator/` and its line in kustomization.yaml, commits
    /// and pushes; returns the commit.
    pub async fn remove(&mut self, inside: &str, message: &str) -> Result<String> {
        std::fs::remove_file(self.repo.path(&format!("hibernator/{inside}")))?;
        self.resources.retain(|r| r != inside);
        self.write_kustomization()?;
        self.repo.commit_and_push(message).await
    }

    fn write_kustomization(&self) -> Result<()> {
        let list: Vec<String> = self.resources.iter().map(|r| format!("  - {r}")).collect();
        std::fs::write(
            self.repo.path("hibernator/kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{}\n",
                list.join("\n")
            ),
        )?;
        Ok(())
    }
}

/// The seed's prod plan, in the repository.
pub const PROD_PLAN: &str = "hibernator/hibernateplans/prod-offhours.yaml";

/// The namespace of the seed's plans.
pub const SEED_NAMESPACE: &str = "hibernator-system";

/// `status.schedule.nextHibernateAt` of the seed's plan `plan`, once the controller has taken
/// in `generation`.
pub async fn next_hibernate_at(client: &Client, plan: &str, generation: i64) -> Result<Timestamp> {
    let api: Api<HibernationPlan> = Api::namespaced(client.clone(), SEED_NAMESPACE);
    wait_for(
        Duration::from_secs(120),
        &format!("{plan} generation {generation} observed"),
        || {
            let api = api.clone();
            async move {
                let s = api.get(plan).await.ok()?.status?;
                (s.observed_generation == Some(generation))
                    .then_some(s.schedule?.next_hibernate_at?.0)
            }
        },
    )
    .await
}

/// `metadata.generation` of the seed's plan `plan`.
pub async fn generation(client: &Client, plan: &str) -> Result<i64> {
    Api::<HibernationPlan>::namespaced(client.clone(), SEED_NAMESPACE)
        .get(plan)
        .await?
        .metadata
        .generation
        .context("a generation")
}

/// The objects the seed says the platform team creates once, outside Git: the namespace and
/// the Slack webhook's Secret of `notifications/prod-slack.yaml` (pointing nowhere).
pub async fn outside_git(client: &Client) -> Result<()> {
    for doc in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SEED_NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "prod-slack-webhook", "namespace": SEED_NAMESPACE},
               "stringData": {"url": "https://127.0.0.1:9/slack"}}),
    ] {
        apply(client, &doc).await?;
    }
    Ok(())
}
