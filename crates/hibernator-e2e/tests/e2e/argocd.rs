//! The seed's GitOps journey with the real Argo CD: the application controller and the repo
//! server (built from the `argo-cd` Go module) sync the seed's Application from a Git server on
//! 127.0.0.1 into a test cluster of its own, judging each object's health, Hibernator's kinds by
//! the Lua checks of `deploy/argocd/argocd-cm.yaml`. A commit moves the window, `git revert`
//! moves it back, and a plan that cannot work makes the Application Degraded.

use std::time::Duration;

use hibernator_e2e::argocd::{ArgoCd, NAMESPACE};
use hibernator_e2e::gitops::{
    self, PROD_PLAN, REPO, Running, Tool, generation, next_hibernate_at, outside_git,
};
use hibernator_e2e::gitserver::{GitServer, seed_repository};
use hibernator_e2e::world::{ControllerOptions, World, wait_for};
use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

fn applications(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ));
    Api::namespaced_with(client.clone(), NAMESPACE, &ar)
}

/// What Argo CD says of the Application: the revision it synced, sync status, health status,
/// and the health (status, message) of the seed's plan `prod-offhours` among its resources.
#[derive(Debug, Clone)]
struct Seen {
    revision: String,
    sync: String,
    health: String,
    plan: (String, String),
}

fn seen(app: &DynamicObject) -> Option<Seen> {
    let status = app.data.get("status")?;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let plan = status["resources"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "HibernationPlan" && r["name"] == "prod-offhours")?;
    Some(Seen {
        revision: s(&status["sync"]["revision"]),
        sync: s(&status["sync"]["status"]),
        health: s(&status["health"]["status"]),
        plan: (s(&plan["health"]["status"]), s(&plan["health"]["message"])),
    })
}

/// Asks Argo CD to compare with Git now instead of at its next interval (what
/// `argocd app get --refresh` does).
async fn refresh(client: &Client) {
    applications(client)
        .patch(
            "hibernator",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}),
            ),
        )
        .await
        .unwrap();
}

/// Waits until the Application has synced `revision` and is `health`, with the plan's health
/// `plan_health`.
async fn application_at(
    client: &Client,
    argo: &ArgoCd,
    revision: &str,
    health: &str,
    plan_health: &str,
) -> Seen {
    let api = applications(client);
    let result = wait_for(
        Duration::from_secs(240),
        &format!("Application hibernator Synced at {revision}, {health}, plan {plan_health}"),
        || {
            let api = api.clone();
            async move {
                let s = seen(&api.get("hibernator").await.ok()?)?;
                (s.revision == revision
                    && s.sync == "Synced"
                    && s.health == health
                    && s.plan.0 == plan_health)
                    .then_some(s)
            }
        },
    )
    .await;
    match result {
        Ok(s) => s,
        Err(e) => {
            let last = api.get("hibernator").await.ok();
            panic!(
                "{e:#}\nlast seen: {:?}\nstatus: {}\n{}",
                last.as_ref().and_then(seen),
                last.map(|a| a.data["status"].to_string())
                    .unwrap_or_default(),
                argo.logs(30)
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_application_synced_by_argo_cd_is_healthy_by_our_checks_and_follows_commits() {
    let w = World::alone("argocd").await.unwrap();
    let Running::ArgoCd(argo) = gitops::start(Tool::ArgoCd, &w.cluster, w.dir())
        .await
        .unwrap()
    else {
        unreachable!("Argo CD was asked for")
    };
    let git = GitServer::start(&w.dir().join("git")).await.unwrap();
    let (repo, first) = seed_repository(&git, REPO, &w.dir().join("work"))
        .await
        .unwrap();
    // Created once by the platform team, outside Git (the seed says so).
    outside_git(&w.client).await.unwrap();
    // Wednesday 2 December 2026, 10:00 in New York (16:00 in Berlin): every plan is awake.
    let opts = ControllerOptions {
        watch_all_namespaces: true,
        ..ControllerOptions::at("2026-12-02T15:00:00Z", 1.0)
    };
    let mut c = w.controller(opts.clone()).unwrap();
    // The seed's Application, its repoURL pointing at the local server.
    gitops::argocd_sync(&w.client, &git).await.unwrap();

    // 1. Synced and Healthy; the plan Healthy by our Lua check (Ready=True).
    let s = application_at(&w.client, &argo, &first, "Healthy", "Healthy").await;
    assert!(
        s.plan
            .1
            .starts_with("Active: awake, following the schedule"),
        "{s:?}"
    );
    let g = generation(&w.client, "prod-offhours").await.unwrap();
    let tonight_at_eight: Timestamp = "2026-12-03T01:00:00Z".parse().unwrap();
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g)
            .await
            .unwrap(),
        tonight_at_eight
    );

    // 2. A commit moves the window to 19:00 New York time, `git revert` moves it back.
    let earlier = repo
        .commit_edit(
            PROD_PLAN,
            r#"start: "20:00""#,
            r#"start: "19:00""#,
            "prod: sleep from 19:00",
        )
        .await
        .unwrap();
    refresh(&w.client).await;
    application_at(&w.client, &argo, &earlier, "Healthy", "Healthy").await;
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g + 1)
            .await
            .unwrap(),
        "2026-12-03T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    let reverted = repo.revert_last().await.unwrap();
    refresh(&w.client).await;
    application_at(&w.client, &argo, &reverted, "Healthy", "Healthy").await;
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g + 2)
            .await
            .unwrap(),
        tonight_at_eight
    );

    // While the controller has not taken in a new generation, the plan is Progressing (here
    // the controller is stopped), and Healthy again once it has.
    c.kill();
    let later = repo
        .commit_edit(
            PROD_PLAN,
            r#"start: "20:00""#,
            r#"start: "20:30""#,
            "prod: sleep from 20:30",
        )
        .await
        .unwrap();
    refresh(&w.client).await;
    let s = application_at(&w.client, &argo, &later, "Progressing", "Progressing").await;
    assert_eq!(
        s.plan.1,
        format!(
            "Waiting for the controller to take in generation {} (status is for generation {})",
            g + 3,
            g + 2
        )
    );
    let _c = w.controller(opts).unwrap();
    application_at(&w.client, &argo, &later, "Healthy", "Healthy").await;
    assert_eq!(
        next_hibernate_at(&w.client, "prod-offhours", g + 3)
            .await
            .unwrap(),
        "2026-12-03T01:30:00Z".parse::<Timestamp>().unwrap()
    );

    // 4. A plan the API server accepts but that cannot work (a time zone that does not
    //    exist): Stalled=True, so the Lua check says Degraded, and so does the Application.
    let gotham = repo
        .commit_edit(
            PROD_PLAN,
            r#"timezone: "America/New_York""#,
            r#"timezone: "America/Gotham""#,
            "prod: a time zone that does not exist",
        )
        .await
        .unwrap();
    refresh(&w.client).await;
    let s = application_at(&w.client, &argo, &gotham, "Degraded", "Degraded").await;
    assert!(s.plan.1.contains("America/Gotham"), "{s:?}");
    let fixed = repo.revert_last().await.unwrap();
    refresh(&w.client).await;
    application_at(&w.client, &argo, &fixed, "Healthy", "Healthy").await;

    // 5. A plan removed from Git is pruned (automated sync with `prune: true`): it goes
    //    and is gone (it is awake: nothing to wake up).
    std::fs::remove_file(repo.path("hibernator/hibernateplans/staging-offhours.yaml")).unwrap();
    let pruned = repo
        .commit_edit(
            "hibernator/kustomization.yaml",
            "  - hibernateplans/staging-offhours.yaml\n",
            "",
            "staging: no more off-hours",
        )
        .await
        .unwrap();
    refresh(&w.client).await;
    application_at(&w.client, &argo, &pruned, "Healthy", "Healthy").await;
    let plans: Api<hibernator_api::HibernationPlan> =
        Api::namespaced(w.client.clone(), "hibernator-system");
    wait_for(
        Duration::from_secs(120),
        "staging-offhours gone",
        || async {
            plans
                .get_opt("staging-offhours")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(plans.get_opt("prod-offhours").await.unwrap().is_some());
}
