//! High availability and runner authentication (issue "Controller", acceptance 10 and 11).

use std::time::Duration;

use hibernator_api::plan::Phase;
use hibernator_e2e::world::{ControllerOptions, RUNNER_IMAGE, World, noop_plan, phase, wait_for};
use hibernator_proto::v1::RecordRestoreStateRequest;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn holder(w: &World) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    leases
        .get_opt("hibernator-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_killing_it_hands_over() {
    let w = World::new("ha").await.unwrap();
    w.apply(noop_plan("p", &[("t0", json!({}))], json!({})))
        .await
        .unwrap();
    let opts = |id: &str| ControllerOptions {
        identity: id.into(),
        leader_elect: true,
        ..ControllerOptions::at("2026-11-27T00:59:40Z", 60.0)
    };
    let mut a = w.controller(opts("controller-a")).unwrap();
    let mut b = w.controller(opts("controller-b")).unwrap();
    let first = wait_for(SECS(30), "a leader", || holder(&w)).await.unwrap();
    w.wait_plan("p", SECS(60), "Hibernated", |p| {
        phase(p) == Some(Phase::Hibernated)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n--- a:\n{}\n--- b:\n{}", a.log(), b.log()));
    let (leader, follower) = if first == "controller-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        leader.log().contains("runner Job created"),
        "{}",
        leader.log()
    );
    assert!(
        !follower.log().contains("runner Job created"),
        "the follower created Jobs:\n{}",
        follower.log()
    );
    assert!(
        follower.ready().await,
        "a follower serves runners and is ready"
    );

    leader.kill();
    // The Lease (10 s, so that a loaded machine's stall does not hand it over) expires first.
    let second = wait_for(SECS(60), "a new leader", || async {
        holder(&w).await.filter(|h| *h != first)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", follower.log()));
    assert_ne!(second, first);
    // The new leader acts: a suspension wakes the plan up.
    w.patch_plan("p", json!({"spec": {"suspend": true}}))
        .await
        .unwrap();
    w.wait_plan("p", SECS(60), "Suspended", |p| {
        phase(p) == Some(Phase::Suspended)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", follower.log()));
    assert!(follower.log().contains("became the leader"));
    assert!(
        follower.log().contains("runner Job created"),
        "{}",
        follower.log()
    );
    // Lease writes carry the controller's field manager too.
    hibernator_e2e::world::check_controller_writes(&w.controller_writes().unwrap()).unwrap();
}

async fn token(w: &World, audience: &str, bound: Option<&Pod>) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(w.client.clone(), &w.ns);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(600),
            bound_object_ref: bound.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(p.name_any()),
                uid: p.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    sas.create_token_request("hibernator-runner", &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap()
}

/// Creates a Job with the runner's labels and ServiceAccount whose pod only prints help, with
/// `owner` as its owner reference; returns its pod once it exists.
async fn forged_job(w: &World, name: &str, like: &Job, owners: Vec<serde_json::Value>) -> Pod {
    let jobs: Api<Job> = Api::namespaced(w.client.clone(), &w.ns);
    let mut labels = like.labels().clone();
    labels.remove("batch.kubernetes.io/controller-uid");
    labels.remove("controller-uid");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": like.annotations(),
                     "ownerReferences": owners},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "hibernator-runner"}},
            "spec": {"serviceAccountName": "hibernator-runner", "restartPolicy": "Never",
                     "containers": [{"name": "runner", "image": RUNNER_IMAGE, "args": ["--help"]}]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &w.ns);
    wait_for(SECS(60), "the forged Job's pod", || async {
        pods.list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_runner_job_of_the_plan_may_record_and_only_in_scope() {
    let w = World::new("auth").await.unwrap();
    // t0's runner stays a while, so that its Job and pod exist during the test; t1's finishes
    // at once.
    w.apply(noop_plan(
        "p",
        &[("t0", json!({"delaySeconds": 300})), ("t1", json!({}))],
        json!({}),
    ))
    .await
    .unwrap();
    let c = w
        .controller(ControllerOptions::at("2026-11-27T00:59:55Z", 60.0))
        .unwrap();
    let job = wait_for(SECS(60), "the runner Job", || async {
        w.jobs("t0", "hibernate").await.ok()?.into_iter().next()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log()));
    let job_name = job.name_any();
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), &w.ns);
    let runner_pod = w
        .running_pod(&format!("job-name={job_name}"), SECS(60))
        .await
        .unwrap();
    // Another pod of the same ServiceAccount, not part of any execution.
    let impostor: Pod = serde_json::from_value(json!({
        "metadata": {"name": "impostor"},
        "spec": {"serviceAccountName": "hibernator-runner", "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": RUNNER_IMAGE, "args": ["--help"]}]},
    }))
    .unwrap();
    let impostor = pods
        .create(&PostParams::default(), &impostor)
        .await
        .unwrap();
    let plan_uid = w.plan("p").await.unwrap().metadata.uid.unwrap();
    let runner_sa_uid = Api::<ServiceAccount>::namespaced(w.client.clone(), &w.ns)
        .get("hibernator-runner")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let plan_owner = |uid: &str, controller: bool| {
        json!({"apiVersion": "hibernator.ardikasaputro.io/v1alpha1", "kind": "HibernationPlan",
               "name": "p", "uid": uid, "controller": controller})
    };
    // Jobs named like runner Jobs with the same labels: no owner; the plan as a mere owner;
    // a plan of the same name with another UID.
    let no_owner = forged_job(&w, &format!("{job_name}-x"), &job, vec![]).await;
    let not_controller = forged_job(
        &w,
        &format!("{job_name}-y"),
        &job,
        vec![plan_owner(&plan_uid, false)],
    )
    .await;
    // The plan as a second, non-controlling owner keeps the garbage collector from deleting
    // the Job for its dangling controller reference (it may remove that reference instead).
    let wrong_uid = forged_job(
        &w,
        &format!("{job_name}-z"),
        &job,
        vec![
            plan_owner("6a0e3c55-0000-4000-8000-000000000000", true),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "name": "hibernator-runner",
                   "uid": runner_sa_uid}),
        ],
    )
    .await;

    let mut client = c.grpc_client(&w.grpc_ca().await.unwrap()).await.unwrap();
    let call = |execution: &str, key: &str, token: Option<String>| {
        let mut req = tonic::Request::new(RecordRestoreStateRequest {
            execution_id: execution.to_string(),
            resource_key: key.to_string(),
            state_json: "{\"status\":\"available\"}".into(),
            ..Default::default()
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let refused = |r: Result<tonic::Response<_>, tonic::Status>, code, text: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(text), "{text:?} not in {e:?}");
    };
    refused(
        client
            .record_restore_state(call(&job_name, "noop:t0", None))
            .await,
        tonic::Code::Unauthenticated,
        "missing bearer token",
    );
    refused(
        client
            .record_restore_state(call(
                &job_name,
                "noop:t0",
                Some(token(&w, "hibernator", None).await),
            ))
            .await,
        tonic::Code::PermissionDenied,
        "not bound to a pod",
    );
    refused(
        client
            .record_restore_state(call(
                &job_name,
                "noop:t0",
                Some(token(&w, "hibernator", Some(&impostor)).await),
            ))
            .await,
        tonic::Code::PermissionDenied,
        "is not controlled by a Job",
    );
    refused(
        client
            .record_restore_state(call(
                &job_name,
                "noop:t0",
                Some(token(&w, "someone-else", Some(&runner_pod)).await),
            ))
            .await,
        tonic::Code::Unauthenticated,
        "token rejected",
    );
    for (pod, job) in [(&no_owner, "-x"), (&not_controller, "-y")] {
        refused(
            client
                .record_restore_state(call(
                    &format!("{job_name}{job}"),
                    "noop:t0",
                    Some(token(&w, "hibernator", Some(pod)).await),
                ))
                .await,
            tonic::Code::PermissionDenied,
            "is not a runner Job (no controlling HibernationPlan)",
        );
    }
    // A controlling plan of another UID: refused (for the UID, or because the garbage
    // collector already dropped the dangling reference).
    let e = client
        .record_restore_state(call(
            &format!("{job_name}-z"),
            "noop:t0",
            Some(token(&w, "hibernator", Some(&wrong_uid)).await),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // The runner's own token may not claim another execution.
    let own = token(&w, "hibernator", Some(&runner_pod)).await;
    refused(
        client
            .record_restore_state(call(&format!("{job_name}-x"), "noop:t0", Some(own.clone())))
            .await,
        tonic::Code::PermissionDenied,
        "does not belong to execution",
    );
    // An out-of-scope key (a noop target records noop: keys only) is refused.
    refused(
        client
            .record_restore_state(call(&job_name, "instance:prod-db", Some(own.clone())))
            .await,
        tonic::Code::PermissionDenied,
        "out of scope for target t0",
    );
    // A finished Job (t1's) may not record any more, even with its own pod's token.
    let t1 = wait_for(SECS(60), "t1's runner Job finished", || async {
        let j = w.jobs("t1", "hibernate").await.ok()?.into_iter().next()?;
        (j.status.as_ref()?.succeeded? == 1).then_some(j)
    })
    .await
    .unwrap();
    let t1_pod = pods
        .list(&ListParams::default().labels(&format!("job-name={}", t1.name_any())))
        .await
        .unwrap()
        .items
        .remove(0);
    refused(
        client
            .record_restore_state(call(
                &t1.name_any(),
                "noop:t1",
                Some(token(&w, "hibernator", Some(&t1_pod)).await),
            ))
            .await,
        tonic::Code::FailedPrecondition,
        "has finished",
    );
    // Nothing was persisted by any of them.
    let data = w.restore_data("p").await.unwrap();
    assert!(data.values().all(|v| !v.contains("prod-db")), "{data:?}");
    // The runner's own token, its execution, a key of its target: accepted.
    let ok = client
        .record_restore_state(call(&job_name, "noop:extra", Some(own)))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let metrics = c.metrics().await.unwrap();
    assert!(
        metrics.contains("hibernator_grpc_refused_total{rpc=\"RecordRestoreState\"} 10"),
        "{metrics}"
    );

    // The TokenReviews the controller made so far.
    let reviews = || -> usize {
        w.controller_writes()
            .unwrap()
            .iter()
            .filter(|e| {
                e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource.as_deref() == Some("tokenreviews"))
            })
            .count()
    };
    // By default tokens are verified against the API server's signing keys: every verdict
    // above came without a TokenReview.
    assert_eq!(
        reviews(),
        0,
        "TokenReviews by a controller verifying tokens itself"
    );

    // With --token-review (the same address, as a restarted pod behind its Service): a
    // TokenReview per new token.
    let ports = c.ports();
    drop(c);
    let c = w
        .controller(ControllerOptions {
            ports: Some(ports),
            extra_args: vec!["--token-review".into()],
            ..ControllerOptions::at("2026-11-27T03:00:00Z", 60.0)
        })
        .unwrap();
    let mut client = wait_for(
        SECS(60),
        "the restarted controller's gRPC service",
        || async { c.grpc_client(&w.grpc_ca().await.ok()?).await.ok() },
    )
    .await
    .unwrap();
    refused(
        client
            .record_restore_state(call(
                &job_name,
                "noop:t0",
                Some(token(&w, "someone-else", Some(&runner_pod)).await),
            ))
            .await,
        tonic::Code::Unauthenticated,
        "token rejected by the API server",
    );
    assert_eq!(
        reviews(),
        1,
        "one TokenReview for the token of another audience"
    );
    // A runner's first calls arrive together with one new token: one TokenReview answers
    // them all.
    let fresh = token(&w, "hibernator", Some(&runner_pod)).await;
    let before = reviews();
    let calls = (0..6).map(|_| {
        let mut client = client.clone();
        let req = call(&job_name, "noop:extra", Some(fresh.clone()));
        async move { client.record_restore_state(req).await }
    });
    for answer in futures::future::join_all(calls).await {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert_eq!(reviews() - before, 1, "six calls at once with one token");

    // A flood of bad tokens from one address: after ten refusals its unknown tokens are
    // refused without asking the API server.
    let before = reviews();
    let mut exhausted = 0;
    for i in 0..40 {
        let e = client
            .record_restore_state(call(&job_name, "noop:t0", Some(format!("garbage-{i}"))))
            .await
            .unwrap_err();
        if e.code() == tonic::Code::ResourceExhausted {
            exhausted += 1;
        }
    }
    let flood_reviews = reviews() - before;
    assert!(exhausted >= 30, "{exhausted} of 40 throttled");
    assert!(
        flood_reviews <= 10,
        "{flood_reviews} TokenReviews for 40 bad tokens"
    );
}
