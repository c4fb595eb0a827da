//! The seed's GitOps journey with the real Flux: source-controller and kustomize-controller
//! (built from their Go modules) sync the seed's repository from a Git server on 127.0.0.1
//! into a test cluster of its own, where the controller shows each plan's schedule. A commit
//! moves the window, a `git revert` moves it back, and a commit the API server refuses (a CEL
//! rule) is shown by Flux and caught offline by `kubectl-hibernator validate` first.

use std::time::Duration;

use hibernator_e2e::flux::{Flux, NAMESPACE};
use hibernator_e2e::gitops::{
    PROD_PLAN, REPO, StackRepository, flux_sync, generation, next_hibernate_at, outside_git,
};
use hibernator_e2e::gitserver::{GitServer, seed_repository};
use hibernator_e2e::stack::{Stack, StackOptions, seed_estate};
use hibernator_e2e::tempdir_for;
use hibernator_e2e::world::{ControllerOptions, World, binaries, wait_for};
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube_testbed::{ClusterOptions, TestCluster};
use serde_json::{Value, json};

fn flux_api(client: &Client, group: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
    Api::namespaced_with(client.clone(), NAMESPACE, &ar)
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
async fn reconcile_now(client: &Client) {
    let at = Timestamp::now().to_string();
    flux_api(client, "source.toolkit.fluxcd.io", "GitRepository")
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
    client: &Client,
    flux: &Flux,
    revision: &str,
    want: &str,
) -> (String, String, String) {
    let api = flux_api(client, "kustomize.toolkit.fluxcd.io", "Kustomization");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_repository_synced_by_flux_moves_the_window_with_a_commit_and_back_with_a_revert()
{
    let w = World::alone("flux").await.unwrap();
    let flux = Flux::start(&w.cluster, w.dir()).await.unwrap();

    // The seed's repository: `hibernator/` as in examples/gitops, on the local Git server.
    let git = GitServer::start(&w.dir().join("git")).await.unwrap();
    let (repo, first) = seed_repository(&git, REPO, &w.dir().join("work"))
        .await
        .unwrap();

    // Created once by the platform team, outside Git (the seed says so).
    outside_git(&w.client).await.unwrap();
    flux_sync(&w.client, &git).await.unwrap();

    // Wednesday 2 December 2026, 10:00 in New York (16:00 in Berlin, where the dev plan
    // sleeps from 18:00): every plan is awake, tonight's windows hours ahead.
    let _c = w
        .controller(ControllerOptions {
            watch_all_namespaces: true,
            ..ControllerOptions::at("2026-12-02T15:00:00Z", 1.0)
        })
        .unwrap();

    // 1. Flux syncs the repository and waits (`wait: true`) until every object is ready,
    //    the plans by their Ready condition.
    let r = kustomization_at(&w.client, &flux, &first, "True").await;
    assert_eq!(r.1, "ReconciliationSucceeded", "{r:?}");
    let source_ready = ready(
        &flux_api(&w.client, "source.toolkit.fluxcd.io", "GitRepository")
            .get("hibernator-repo")
            .await
            .unwrap(),
    );
    assert_eq!(source_ready.map(|r| r.0), Some("True".into()));
    let g = generation(&w.client, "prod-offhours").await.unwrap();
    let tonight_at_eight: Timestamp = "2026-12-03T01:00:00Z".parse().unwrap();
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g)
            .await
            .unwrap(),
        tonight_at_eight
    );

    // 2. A commit moves the window to 19:00 New York time...
    let earlier = repo
        .commit_edit(
            PROD_PLAN,
            r#"start: "20:00""#,
            r#"start: "19:00""#,
            "prod: sleep from 19:00",
        )
        .await
        .unwrap();
    reconcile_now(&w.client).await;
    kustomization_at(&w.client, &flux, &earlier, "True").await;
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g + 1)
            .await
            .unwrap(),
        "2026-12-03T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    // ... and `git revert` moves it back.
    let reverted = repo.revert_last().await.unwrap();
    reconcile_now(&w.client).await;
    kustomization_at(&w.client, &flux, &reverted, "True").await;
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g + 2)
            .await
            .unwrap(),
        tonight_at_eight
    );

    // 4. A commit with a plan the API server refuses (a dependency on itself, a CEL rule):
    //    `kubectl-hibernator validate` catches it offline, as a PR gate would, and Flux,
    //    which cannot apply it, says so; the plan in the cluster stays as it was.
    repo.edit(PROD_PLAN, "to: prod-cluster", "to: prod-db")
        .unwrap();
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
    reconcile_now(&w.client).await;
    let r = kustomization_at(&w.client, &flux, &broken, "False").await;
    assert!(
        r.2.contains("HibernationPlan/hibernator-system/prod-offhours"),
        "Flux names the refused plan: {r:?}"
    );
    assert_eq!(generation(&w.client, "prod-offhours").await.unwrap(), g + 2);
    // Reverting the bad commit makes the Kustomization Ready again.
    let fixed = repo.revert_last().await.unwrap();
    reconcile_now(&w.client).await;
    kustomization_at(&w.client, &flux, &fixed, "True").await;

    // A plan the API server accepts but that cannot work (a time zone that does not exist):
    // the controller says `Stalled=True` (InvalidSpec), and Flux's health check (`wait: true`,
    // kstatus reading the plan's own conditions) fails on it instead of calling it Ready.
    let gotham = repo
        .commit_edit(
            PROD_PLAN,
            r#"timezone: "America/New_York""#,
            r#"timezone: "America/Gotham""#,
            "prod: a time zone that does not exist",
        )
        .await
        .unwrap();
    reconcile_now(&w.client).await;
    let r = kustomization_at(&w.client, &flux, &gotham, "False").await;
    assert_eq!(r.1, "HealthCheckFailed", "{r:?}");
    assert!(
        r.2.contains("HibernationPlan/hibernator-system/prod-offhours"),
        "Flux names the stalled plan: {r:?}"
    );
    let fixed = repo.revert_last().await.unwrap();
    reconcile_now(&w.client).await;
    kustomization_at(&w.client, &flux, &fixed, "True").await;
}

/// The plan of `client`'s `hibernator-system`, if it exists.
async fn seed_plan(client: &Client) -> Option<hibernator_api::HibernationPlan> {
    Api::<hibernator_api::HibernationPlan>::namespaced(client.clone(), "hibernator-system")
        .get_opt("prod-offhours")
        .await
        .unwrap()
}

/// Waits until the seed's plan satisfies `check`.
async fn wait_seed_plan(
    client: &Client,
    what: &str,
    check: impl Fn(&hibernator_api::HibernationPlan) -> bool,
) -> hibernator_api::HibernationPlan {
    let check = &check;
    wait_for(Duration::from_secs(240), what, || async move {
        seed_plan(client).await.filter(|p| check(p))
    })
    .await
    .unwrap()
}

/// What the plan sleeps and wakes (and the instances it leaves alone); the snapshots taken
/// before stopping are the night's additions.
fn resources_of(estate: &Value) -> Value {
    json!({"rds": estate["rds"], "nodegroups": estate["nodegroups"], "ec2": estate["ec2"]})
}

fn cycle_of(p: &hibernator_api::HibernationPlan) -> Option<hibernator_api::plan::CycleStatus> {
    p.status.as_ref()?.current_cycle.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_from_git_through_the_helm_installed_controller_and_a_pruned_plan_wakes_before_it_goes()
 {
    use hibernator_api::plan::{Operation, Phase};
    let cluster = TestCluster::start(ClusterOptions::default()).await.unwrap();
    let dir = tempdir_for("flux-night");
    let flux = Flux::start(&cluster, &dir).await.unwrap();
    // The controller through the chart, with the CRDs; the plans come from Git. Thursday 17:00
    // in New York, 900x: the night (20:00 to 06:00) takes 40 s, the day between the two
    // nights 56 s.
    let opts = StackOptions {
        clock_start: "2026-11-26T22:00:00Z".into(),
        clock_speed: 900.0,
        apply_seed: false,
        ..StackOptions::default()
    };
    let stack = Stack::install(&cluster, &opts, seed_estate(), &mut |_| {})
        .await
        .unwrap();
    let client = cluster.client().unwrap();

    // The repository holds the seed's files the stack's night needs.
    let git = GitServer::start(&dir.join("git")).await.unwrap();
    let mut repo = StackRepository::create(&git, &dir.join("work"))
        .await
        .unwrap();
    let first = repo.first.clone();
    flux_sync(&client, &git).await.unwrap();
    kustomization_at(&client, &flux, &first, "True").await;

    // 3. The night, from Git through the chart's controller: asleep, then back as it was.
    let p = wait_seed_plan(&client, "prod-offhours Hibernated", |p| {
        p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Hibernated)
    })
    .await;
    let night = cycle_of(&p).unwrap().id;
    let asleep = stack.snapshot().unwrap();
    assert_eq!(asleep["rds"]["prod-db"], "stopped", "{asleep}");
    for ng in ["prod-eks-1/default-ng", "prod-eks-1/gpu-ng"] {
        assert_eq!(asleep["nodegroups"][ng][1], 0, "{ng} asleep: {asleep}");
    }
    wait_seed_plan(&client, "the morning's wake-up done", |p| {
        cycle_of(p).is_some_and(|c| {
            c.id == night && c.operation == Operation::WakeUp && c.finished_at.is_some()
        })
    })
    .await;
    let morning = stack.snapshot().unwrap();
    assert_eq!(
        resources_of(&morning),
        resources_of(&stack.before),
        "restored"
    );
    assert!(
        morning["rdsSnapshots"].as_array().unwrap().iter().any(|s| s
            .as_str()
            .is_some_and(|s| s.starts_with("prod-db-hibernate-"))),
        "the snapshot before stopping: {morning}"
    );

    // 5. The next night the plan is removed from Git while it sleeps: Flux prunes it, and the
    //    controller wakes its targets before the plan goes (onDelete: WakeUp by default).
    let p = wait_seed_plan(&client, "prod-offhours asleep the next night", |p| {
        p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Hibernated)
            && cycle_of(p).is_some_and(|c| c.id != night)
    })
    .await;
    let second = cycle_of(&p).unwrap().id;
    assert_eq!(stack.snapshot().unwrap()["rds"]["prod-db"], "stopped");
    let pruned = repo
        .remove(
            "hibernateplans/prod-offhours.yaml",
            "prod: no more off-hours",
        )
        .await
        .unwrap();
    reconcile_now(&client).await;
    wait_for(Duration::from_secs(240), "prod-offhours gone", || async {
        seed_plan(&client).await.is_none().then_some(())
    })
    .await
    .unwrap();
    // Had the plan gone before its wake-up, the database would still be stopped here.
    assert_eq!(
        resources_of(&stack.snapshot().unwrap()),
        resources_of(&stack.before),
        "woken before the plan went"
    );
    let events: Vec<String> = Api::<Event>::namespaced(client.clone(), "hibernator-system")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("WakeUpStarted"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        events
            .iter()
            .any(|n| n.starts_with(&format!("cycle {second}:"))
                && n.contains("the plan is being deleted")),
        "the second night ended by the deletion's wake-up, not the morning's: {events:?}"
    );
    kustomization_at(&client, &flux, &pruned, "True").await;
}

/// `deploy/flux/health-check-exprs.yaml`, added to the seed's Kustomization as its README
/// says, judged by the real kustomize-controller: Flux waits for the controller's first status
/// (kstatus alone would call a plan without status ready at once), is Ready once the plans are,
/// and fails fast on a stalled plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_health_check_exprs_wait_for_the_first_status_and_fail_on_a_stalled_plan() {
    let w = World::alone("flux-exprs").await.unwrap();
    let flux = Flux::start(&w.cluster, w.dir()).await.unwrap();
    let git = GitServer::start(&w.dir().join("git")).await.unwrap();
    let (repo, first) = seed_repository(&git, REPO, &w.dir().join("work"))
        .await
        .unwrap();
    outside_git(&w.client).await.unwrap();
    flux_sync(&w.client, &git).await.unwrap();
    let exprs: Value = hibernator_e2e::world::yaml_docs("deploy/flux/health-check-exprs.yaml")
        .unwrap()
        .remove(0);
    let kustomizations = flux_api(&w.client, "kustomize.toolkit.fluxcd.io", "Kustomization");
    kustomizations
        .patch(
            "hibernator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"healthCheckExprs": exprs["healthCheckExprs"]}})),
        )
        .await
        .unwrap();

    // No controller yet: Flux applies the plans and keeps waiting for their first status.
    wait_for(
        Duration::from_secs(240),
        "the plans applied, the Kustomization running its health checks",
        || async {
            generation(&w.client, "prod-offhours").await.ok()?;
            let k = kustomizations.get("hibernator").await.ok()?;
            let attempted = k.data["status"]["lastAttemptedRevision"].as_str()?;
            let conditions = k.data["status"]["conditions"].as_array()?;
            let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
            (attempted.ends_with(&first) && ready["status"] == "Unknown").then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", flux.logs(30)));
    for _ in 0..20 {
        let k = kustomizations.get("hibernator").await.unwrap();
        assert_ne!(
            ready(&k).map(|r| r.0),
            Some("True".to_string()),
            "Ready before any plan has a status"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The controller writes the plans' status: Ready.
    let _c = w
        .controller(ControllerOptions {
            watch_all_namespaces: true,
            ..ControllerOptions::at("2026-12-02T15:00:00Z", 1.0)
        })
        .unwrap();
    let r = kustomization_at(&w.client, &flux, &first, "True").await;
    assert_eq!(r.1, "ReconciliationSucceeded", "{r:?}");

    // A stalled plan fails the health check without waiting for the timeout (10 minutes).
    let gotham = repo
        .commit_edit(
            PROD_PLAN,
            r#"timezone: "America/New_York""#,
            r#"timezone: "America/Gotham""#,
            "prod: a time zone that does not exist",
        )
        .await
        .unwrap();
    reconcile_now(&w.client).await;
    let r = kustomization_at(&w.client, &flux, &gotham, "False").await;
    assert_eq!(r.1, "HealthCheckFailed", "{r:?}");
    assert!(r.2.contains("prod-offhours"), "{r:?}");
}
