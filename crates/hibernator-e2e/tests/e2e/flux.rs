//! The seed's GitOps journey with the real Flux: source-controller and kustomize-controller
//! (built from their Go modules) sync the seed's repository from a Git server on 127.0.0.1
//! into a test cluster of its own, where the controller shows each plan's schedule. A commit
//! moves the window, a `git revert` moves it back, and a commit the API server refuses (a CEL
//! rule) is shown by Flux and caught offline by `kubectl-hibernator validate` first.

use std::time::Duration;

use hibernator_e2e::flux::{Flux, NAMESPACE};
use hibernator_e2e::gitserver::{Checkout, GitServer, copy_tree};
use hibernator_e2e::root;
use hibernator_e2e::world::{ControllerOptions, World, apply, binaries, wait_for, yaml_docs};
use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

const REPO: &str = "my-infrastructure-repo";
const PROD_PLAN: &str = "hibernator/hibernateplans/prod-offhours.yaml";

fn flux_api(w: &World, group: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
    Api::namespaced_with(w.client.clone(), NAMESPACE, &ar)
}

/// `Ready` of a Flux object: (status, reason, message), once it has one for its generation.
fn ready(o: &DynamicObject) -> Option<(String, String, String)> {
    let status = o.data.get("status")?;
    if status["observedGeneration"].as_i64() != o.metadata.generation {
        return None;
    }
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

/// Asks Flux to look at the repository now instead of at its next interval (what
/// `flux reconcile source git` does).
async fn reconcile_now(w: &World) {
    let at = Timestamp::now().to_string();
    flux_api(w, "source.toolkit.fluxcd.io", "GitRepository")
        .patch(
            "hibernator-repo",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}}),
            ),
        )
        .await
        .unwrap();
}

/// Waits until the Kustomization's last attempt is `revision` with `Ready` as `want` says;
/// returns its Ready (status, reason, message).
async fn kustomization_at(
    w: &World,
    flux: &Flux,
    revision: &str,
    want: &str,
) -> (String, String, String) {
    let api = flux_api(w, "kustomize.toolkit.fluxcd.io", "Kustomization");
    wait_for(
        Duration::from_secs(240),
        &format!("Kustomization hibernator at {revision}, Ready={want}"),
        || {
            let api = api.clone();
            async move {
                let k = api.get("hibernator").await.ok()?;
                let attempted = k.data["status"]["lastAttemptedRevision"].as_str()?;
                let r = ready(&k)?;
                (attempted.ends_with(revision) && r.0 == want).then_some(r)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", flux.logs(40)))
}

/// `status.schedule.nextHibernateAt` of a seed plan, once the controller has seen `generation`.
async fn next_hibernate_at(w: &World, plan: &str, generation: i64) -> Timestamp {
    let api: Api<hibernator_api::HibernationPlan> =
        Api::namespaced(w.client.clone(), "hibernator-system");
    wait_for(
        Duration::from_secs(120),
        &format!("{plan} generation {generation} observed"),
        || {
            let api = api.clone();
            async move {
                let p = api.get(plan).await.ok()?;
                let s = p.status?;
                (s.observed_generation == Some(generation))
                    .then_some(s.schedule?.next_hibernate_at?.0)
            }
        },
    )
    .await
    .unwrap()
}

async fn generation(w: &World, plan: &str) -> i64 {
    let api: Api<hibernator_api::HibernationPlan> =
        Api::namespaced(w.client.clone(), "hibernator-system");
    api.get(plan).await.unwrap().metadata.generation.unwrap()
}

/// Replaces the one occurrence of `from` in `file` of the working copy.
fn edit(repo: &Checkout, file: &str, from: &str, to: &str) {
    let path = repo.path(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in {file}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_repository_synced_by_flux_moves_the_window_with_a_commit_and_back_with_a_revert()
{
    let w = World::alone("flux").await.unwrap();
    let flux = Flux::start(&w.cluster, w.dir()).await.unwrap();

    // The seed's repository: `hibernator/` as in examples/gitops, on the local Git server.
    let git = GitServer::start(&w.dir().join("git")).await.unwrap();
    git.create(REPO).await.unwrap();
    let repo = Checkout::clone(&git.url(REPO), &w.dir().join("work"))
        .await
        .unwrap();
    copy_tree(
        &root().join("examples/gitops/hibernator"),
        &repo.path("hibernator"),
    )
    .unwrap();
    let first = repo.commit_and_push("Hibernation plans").await.unwrap();

    // Created once by the platform team, outside Git (the seed says so): the Git credentials
    // and the Slack webhook's Secret.
    for doc in [
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "git-credentials", "namespace": NAMESPACE},
               "stringData": {"username": "platform", "password": "not-checked-here"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hibernator-system"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "prod-slack-webhook", "namespace": "hibernator-system"},
               "stringData": {"url": "https://127.0.0.1:9/slack"}}),
    ] {
        apply(&w.client, &doc).await.unwrap();
    }
    // The seed's GitRepository, its URL pointing at the local server, and its Kustomization
    // unchanged.
    let mut source: Value = yaml_docs("examples/gitops/hibernator-source.yaml").unwrap()[0].clone();
    assert_eq!(source["apiVersion"], "source.toolkit.fluxcd.io/v1beta2");
    source["spec"]["url"] = json!(git.url(REPO));
    apply(&w.client, &source).await.unwrap();
    for doc in yaml_docs("examples/gitops/hibernator-kustomization.yaml").unwrap() {
        apply(&w.client, &doc).await.unwrap();
    }

    // Wednesday 2 December 2026, noon in New York: every plan is awake, tonight's window ahead.
    let _c = w
        .controller(ControllerOptions {
            watch_all_namespaces: true,
            ..ControllerOptions::at("2026-12-02T17:00:00Z", 1.0)
        })
        .unwrap();

    // 1. Flux syncs the repository and waits (`wait: true`) until every object is ready,
    //    the plans by their Ready condition.
    let r = kustomization_at(&w, &flux, &first, "True").await;
    assert_eq!(r.1, "ReconciliationSucceeded", "{r:?}");
    let source_ready = ready(
        &flux_api(&w, "source.toolkit.fluxcd.io", "GitRepository")
            .get("hibernator-repo")
            .await
            .unwrap(),
    );
    assert_eq!(source_ready.map(|r| r.0), Some("True".into()));
    let g = generation(&w, "prod-offhours").await;
    let tonight_at_eight: Timestamp = "2026-12-03T01:00:00Z".parse().unwrap();
    assert_eq!(
        next_hibernate_at(&w, "prod-offhours", g).await,
        tonight_at_eight
    );

    // 2. A commit moves the window to 19:00 New York time...
    edit(&repo, PROD_PLAN, r#"start: "20:00""#, r#"start: "19:00""#);
    let earlier = repo
        .commit_and_push("prod: sleep from 19:00")
        .await
        .unwrap();
    reconcile_now(&w).await;
    kustomization_at(&w, &flux, &earlier, "True").await;
    assert_eq!(
        next_hibernate_at(&w, "prod-offhours", g + 1).await,
        "2026-12-03T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    // ... and `git revert` moves it back.
    let reverted = repo.revert_last().await.unwrap();
    reconcile_now(&w).await;
    kustomization_at(&w, &flux, &reverted, "True").await;
    assert_eq!(
        next_hibernate_at(&w, "prod-offhours", g + 2).await,
        tonight_at_eight
    );

    // 4. A commit with a plan the API server refuses (a dependency on itself, a CEL rule):
    //    `kubectl-hibernator validate` catches it offline, as a PR gate would, and Flux,
    //    which cannot apply it, says so; the plan in the cluster stays as it was.
    edit(&repo, PROD_PLAN, "to: prod-cluster", "to: prod-db");
    let out = std::process::Command::new(&binaries().unwrap().cli)
        .arg("validate")
        .arg(repo.path("hibernator"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "validate finds the broken commit invalid:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("prod-offhours"), "{report}");
    let broken = repo
        .commit_and_push("prod: a dependency on itself")
        .await
        .unwrap();
    reconcile_now(&w).await;
    let r = kustomization_at(&w, &flux, &broken, "False").await;
    assert!(
        r.2.contains("HibernationPlan/hibernator-system/prod-offhours"),
        "Flux names the refused plan: {r:?}"
    );
    assert_eq!(generation(&w, "prod-offhours").await, g + 2);
    // Reverting the bad commit makes the Kustomization Ready again.
    let fixed = repo.revert_last().await.unwrap();
    reconcile_now(&w).await;
    kustomization_at(&w, &flux, &fixed, "True").await;

    // A plan the API server accepts but that cannot work (a time zone that does not exist):
    // the controller says `Stalled=True` (InvalidSpec), and Flux's health check (`wait: true`,
    // kstatus reading the plan's own conditions) fails on it instead of calling it Ready.
    edit(
        &repo,
        PROD_PLAN,
        r#"timezone: "America/New_York""#,
        r#"timezone: "America/Gotham""#,
    );
    let gotham = repo
        .commit_and_push("prod: a time zone that does not exist")
        .await
        .unwrap();
    reconcile_now(&w).await;
    let r = kustomization_at(&w, &flux, &gotham, "False").await;
    assert_eq!(r.1, "HealthCheckFailed", "{r:?}");
    assert!(
        r.2.contains("HibernationPlan/hibernator-system/prod-offhours"),
        "Flux names the stalled plan: {r:?}"
    );
    let fixed = repo.revert_last().await.unwrap();
    reconcile_now(&w).await;
    kustomization_at(&w, &flux, &fixed, "True").await;
}
