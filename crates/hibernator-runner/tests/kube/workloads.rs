use anyhow::Result;
use serde_json::json;

use crate::common::*;

/// Deployments and StatefulSets with running pods: hibernation records every workload's replicas
/// before scaling it to zero through the scale subresource and waits until its pods are gone; a
/// second hibernation changes nothing; wake-up restores exactly the recorded replicas (a
/// workload that was at zero stays there) and waits until they are ready; a second wake-up
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_sleep_and_wake_exactly() -> Result<()> {
    let kit = Kit::new("workloads").await?;
    let (c, ns) = (&kit.client, kit.ns.as_str());
    apply(c, &deployment(ns, "web", 2, json!({"tier": "front"}))).await?;
    apply(c, &deployment(ns, "api", 1, json!({"tier": "back"}))).await?;
    apply(c, &deployment(ns, "idle", 0, json!({}))).await?;
    apply(c, &statefulset(ns, "db", 2, json!({"tier": "back"}))).await?;
    wait_ready(c, ns, "deployments", "web", 2).await?;
    wait_ready(c, ns, "deployments", "api", 1).await?;
    wait_ready(c, ns, "statefulsets", "db", 2).await?;
    assert_eq!(live_pods(c, ns).await?.len(), 5);

    let params = json!({"namespaces": [ns]});
    let ran = kit
        .runner("workloads", "apps", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert_eq!(
        ran.done().split(" in ").next().unwrap_or_default(),
        "done: scaled to zero 2 of 3 Deployments and 1 of 1 StatefulSets (1 already at zero)",
        "{}",
        ran.stdout
    );
    assert!(
        ran.has(&format!(
            "reached with kubeconfig {} as system:serviceaccount:{ns}:runner",
            kit.kubeconfig.display()
        )),
        "{}",
        ran.stdout
    );
    assert!(ran.has(&format!("recorded deployment:{ns}/web: 2 replicas")));
    assert!(ran.has(&format!(
        "recorded deployment:{ns}/idle: 0 replicas, stays that way on wake-up"
    )));
    assert!(ran.has(&format!("StatefulSet {ns}/db has no replicas")));
    assert_eq!(
        kit.records(),
        [
            (format!("deployment:{ns}/api"), json!({"replicas": 1})),
            (format!("deployment:{ns}/idle"), json!({"replicas": 0})),
            (format!("deployment:{ns}/web"), json!({"replicas": 2})),
            (format!("statefulset:{ns}/db"), json!({"replicas": 2})),
        ]
        .into_iter()
        .collect()
    );
    for (kind, name) in [
        ("deployments", "web"),
        ("deployments", "api"),
        ("deployments", "idle"),
        ("statefulsets", "db"),
    ] {
        assert_eq!(replicas(c, ns, kind, name).await?, (0, 0), "{kind} {name}");
    }
    // The runner waited for the pods to go before it said done.
    assert_eq!(live_pods(c, ns).await?, Vec::<String>::new());
    // Every write went through the scale subresource, with the recorded resource version as a
    // precondition; never to the workloads themselves.
    let writes = kit.runner_writes()?;
    assert_eq!(writes.len(), 3, "{writes:#?}");
    for w in &writes {
        let r = w.object_ref.clone().unwrap_or_default();
        assert_eq!(w.verb, "patch");
        assert_eq!(r.subresource.as_deref(), Some("scale"), "{w:#?}");
        assert_eq!(w.code(), 200, "{w:#?}");
    }

    // A second hibernation finds everything asleep and changes nothing.
    let again = kit
        .runner("workloads", "apps", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again.done().starts_with(
            "done: scaled to zero 0 of 3 Deployments and 0 of 1 StatefulSets (4 already at zero)"
        ),
        "{}",
        again.stdout
    );
    assert!(again.has(&format!(
        "deployment:{ns}/web was recorded earlier in this cycle (2 replicas); keeping that record"
    )));
    assert_eq!(kit.runner_writes()?.len(), 3, "no new write");
    assert_eq!(
        kit.records()[&format!("deployment:{ns}/web")],
        json!({"replicas": 2})
    );

    // Wake-up restores exactly what was recorded.
    let woke = kit
        .runner("workloads", "apps", "wakeUp")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        woke.done().starts_with(
            "done: restored 2 of 3 Deployments and 1 of 1 StatefulSets (1 left at zero as before hibernation)"
        ),
        "{}",
        woke.stdout
    );
    assert!(woke.has(&format!("scaling Deployment {ns}/web from 0 to 2")));
    assert!(woke.has(&format!(
        "Deployment {ns}/idle had 0 replicas before hibernation; leaving it as it is"
    )));
    assert_eq!(replicas(c, ns, "deployments", "web").await?, (2, 2));
    assert_eq!(replicas(c, ns, "deployments", "api").await?, (1, 1));
    assert_eq!(replicas(c, ns, "deployments", "idle").await?, (0, 0));
    assert_eq!(replicas(c, ns, "statefulsets", "db").await?, (2, 2));
    assert_eq!(live_pods(c, ns).await?.len(), 5);

    let writes = kit.runner_writes()?.len();
    let again = kit
        .runner("workloads", "apps", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        again.done().starts_with(
            "done: restored 0 of 3 Deployments and 0 of 1 StatefulSets (3 already restored, 1 left at zero as before hibernation)"
        ),
        "{}",
        again.stdout
    );
    assert_eq!(kit.runner_writes()?.len(), writes, "no new write");
    Ok(())
}

/// A workload deleted while asleep is skipped with a message on wake-up, and the others are
/// restored; a listed namespace that does not exist is skipped on hibernation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_workloads_and_namespaces_are_skipped() -> Result<()> {
    let kit = Kit::new("vanished").await?;
    let (c, ns) = (&kit.client, kit.ns.as_str());
    apply(c, &deployment(ns, "keep", 1, json!({}))).await?;
    apply(c, &deployment(ns, "gone", 1, json!({}))).await?;
    wait_ready(c, ns, "deployments", "keep", 1).await?;
    wait_ready(c, ns, "deployments", "gone", 1).await?;

    let params = json!({"namespaces": [ns, "no-such-namespace"], "kinds": ["Deployment"]});
    let ran = kit
        .runner("workloads", "apps", "hibernate")
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("warning: namespace no-such-namespace does not exist; skipped"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.done()
            .starts_with("done: scaled to zero 2 of 2 Deployments")
    );

    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(c.clone(), ns);
    deployments.delete("gone", &Default::default()).await?;
    eventually(
        "Deployment gone to be deleted",
        std::time::Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            async move { Ok(deployments.get_opt("gone").await?.is_none().then_some(())) }
        },
    )
    .await?;

    let woke = kit
        .runner("workloads", "apps", "wakeUp")
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke.has(&format!(
            "warning: deployment:{ns}/gone not restored: Deployment {ns}/gone does not exist where this runner looked; its record is kept"
        )),
        "{}",
        woke.stdout
    );
    assert!(
        woke.done()
            .starts_with("done: restored 1 of 2 Deployments (1 no longer there)"),
        "{}",
        woke.stdout
    );
    assert_eq!(replicas(c, ns, "deployments", "keep").await?, (1, 1));
    Ok(())
}

/// `namespaceSelector`, `kinds` and `selector` choose what sleeps; the rest is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_choose_the_namespaces_and_workloads() -> Result<()> {
    let kit = Kit::new("selectors").await?;
    let (c, ns) = (&kit.client, kit.ns.as_str());
    apply(
        c,
        &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"hibernate": ns}}}),
    )
    .await?;
    apply(c, &deployment(ns, "front", 1, json!({"tier": "front"}))).await?;
    apply(c, &deployment(ns, "back", 1, json!({"tier": "back"}))).await?;
    apply(c, &statefulset(ns, "store", 1, json!({"tier": "back"}))).await?;
    wait_ready(c, ns, "deployments", "front", 1).await?;
    wait_ready(c, ns, "deployments", "back", 1).await?;
    wait_ready(c, ns, "statefulsets", "store", 1).await?;

    let ran = kit
        .runner("workloads", "backends", "hibernate")
        .param(json!({
            "namespaceSelector": {"matchLabels": {"hibernate": ns}},
            "kinds": ["Deployment"],
            "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]},
        }))
        .run()
        .await?
        .ok();
    assert!(
        ran.has(&format!(
            "namespaceSelector hibernate={ns} selects 1 namespace: {ns}"
        )),
        "{}",
        ran.stdout
    );
    assert!(ran.has("1 workload in 1 namespace (kinds Deployment, selector tier in (back))"));
    assert_eq!(
        kit.records().keys().cloned().collect::<Vec<_>>(),
        [format!("deployment:{ns}/back")]
    );
    assert_eq!(replicas(c, ns, "deployments", "back").await?, (0, 0));
    assert_eq!(replicas(c, ns, "deployments", "front").await?, (1, 1));
    assert_eq!(replicas(c, ns, "statefulsets", "store").await?, (1, 1));
    Ok(())
}

/// Without the runner's permissions the run fails with the API's answer and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_fail_clearly_and_change_nothing() -> Result<()> {
    let kit = Kit::new("forbidden").await?;
    let (c, ns) = (&kit.client, kit.ns.as_str());
    apply(c, &deployment(ns, "web", 1, json!({}))).await?;
    wait_ready(c, ns, "deployments", "web", 1).await?;
    // The namespace's default ServiceAccount has no permissions at all.
    let token = service_account_token(c, ns, "default").await?;
    let text = std::fs::read_to_string(&kit.kubeconfig)?;
    let mut config: serde_json::Value = serde_json::from_str(&text)?;
    config["users"][0]["user"]["token"] = json!(token);
    let path = kit.dir.path().join("default.kubeconfig");
    std::fs::write(&path, config.to_string())?;

    let ran = kit
        .runner("workloads", "apps", "hibernate")
        .env(
            "HIBERNATOR_CONNECTOR",
            &json!({"kind": "kubernetes", "kubeconfigPath": path}).to_string(),
        )
        .param(json!({"namespaces": [ns]}))
        .run()
        .await?
        .failed(1);
    let error = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!("error: failed to read namespace {ns}: Forbidden (HTTP 403): namespaces \"{ns}\" is forbidden: User \"system:serviceaccount:{ns}:default\" cannot get resource \"namespaces\"")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination
            .starts_with("failed: failed to read namespace")
    );
    assert!(kit.controller.records().is_empty());
    assert_eq!(replicas(c, ns, "deployments", "web").await?, (1, 1));
    Ok(())
}

/// SIGKILL the runner at each write-ahead step of a hibernation (the record is stored but its
/// acknowledgement never arrives), run it again, then wake up: the replicas recorded before
/// the first change survive, and every workload gets its replicas back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_record_a_rerun_and_a_wake_up_restore_the_replicas() -> Result<()> {
    use hibernator_proto::testing::{FakeController, Rpc};

    let kit = Kit::new("killed").await?;
    let (c, ns) = (&kit.client, kit.ns.as_str());
    let params = json!({"namespaces": [ns], "kinds": ["Deployment"]});
    for n in 1..=2 {
        apply(c, &deployment(ns, "a", 2, json!({}))).await?;
        apply(c, &deployment(ns, "b", 1, json!({}))).await?;
        wait_ready(c, ns, "deployments", "a", 2).await?;
        wait_ready(c, ns, "deployments", "b", 1).await?;
        let controller = FakeController::start(TOKEN, CYCLE).await?;
        controller.stall_at(Rpc::RecordRestoreState, n);
        let mut child = kit
            .runner("workloads", "apps", "hibernate")
            .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
            .env("HIBERNATOR_CONTROLLER_TIMEOUT_SECONDS", "60")
            .param(params.clone())
            .spawn()?;
        tokio::select! {
            _ = controller.stalled() => {}
            status = child.wait() => anyhow::bail!("the runner ended before record {n}: {:?}", status?),
        }
        child.start_kill()?;
        child.wait().await?;
        // Killed before the acknowledgement of record n: the n-th workload is untouched, the
        // ones before it were scaled (their records acknowledged).
        let names = ["a", "b"];
        for (i, name) in names.iter().enumerate() {
            let (spec, _) = replicas(c, ns, "deployments", name).await?;
            if i + 1 < n {
                assert_eq!(spec, 0, "{name} was scaled before the kill");
            } else {
                assert_ne!(
                    spec, 0,
                    "{name} must not be scaled without an acknowledgement"
                );
            }
        }
        controller.no_stall();
        let before = controller.records();
        kit.runner("workloads", "apps", "hibernate")
            .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
            .param(params.clone())
            .run()
            .await?
            .ok();
        let after = controller.records();
        for (key, value) in &before {
            assert_eq!(after.get(key), Some(value), "record {key} kept");
        }
        assert_eq!(replicas(c, ns, "deployments", "a").await?, (0, 0));
        assert_eq!(replicas(c, ns, "deployments", "b").await?, (0, 0));
        kit.runner("workloads", "apps", "wakeUp")
            .env("HIBERNATOR_CONTROLLER_ENDPOINT", &controller.endpoint())
            .param(params.clone())
            .run()
            .await?
            .ok();
        assert_eq!(
            replicas(c, ns, "deployments", "a").await?,
            (2, 2),
            "kill #{n}"
        );
        assert_eq!(
            replicas(c, ns, "deployments", "b").await?,
            (1, 1),
            "kill #{n}"
        );
    }
    Ok(())
}
