//! `helm install` of the chart into the test cluster: the Deployment gets a Ready controller pod
//! that runs with the chart's RBAC, and the seed's manifests, applied with real kubectl, become
//! Ready plans (issue "GitOps and deployment", acceptance 2).

use std::time::Duration;

use hibernator_api::connector::{CloudProvider, K8SCluster};
use hibernator_api::plan::HibernationPlan;
use hibernator_e2e::stack::{Stack, StackOptions, seed_estate};
use hibernator_e2e::world::{cond, condition, wait_for};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_controller_and_the_seed_becomes_ready() {
    let cluster = hibernator_e2e::world::cluster().await.unwrap();
    // The shared cluster already has the CRDs (installed by the test harness, so not owned by
    // Helm); the demo installs them with the chart into a cluster of its own.
    let opts = StackOptions {
        crds: false,
        // Wednesday noon in New York: the plan is Active.
        clock_start: "2026-11-25T17:00:00Z".into(),
        clock_speed: 1.0,
        // The seed's namespace only: namespaced Roles, nothing cluster-wide.
        extra_sets: vec!["watchNamespace=hibernator-system".into()],
        ..StackOptions::default()
    };
    let t0 = std::time::Instant::now();
    let stack = Stack::install(cluster, &opts, seed_estate(), &mut |_| {})
        .await
        .unwrap();
    eprintln!("installed after {:?}", t0.elapsed());
    let client = cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &stack.namespace);
    let pod = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=controller"))
        .await
        .unwrap()
        .items
        .pop()
        .expect("a controller pod");
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ready, "the controller pod is Ready");
    assert_eq!(
        pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("hibernator")
    );

    let plans: Api<HibernationPlan> = Api::namespaced(client.clone(), &stack.namespace);
    let plan = wait_for(Duration::from_secs(60), "prod-offhours Ready", || async {
        let p = plans.get_opt("prod-offhours").await.ok()??;
        (condition(&p, "Ready") == cond("True", "Active")).then_some(p)
    })
    .await
    .unwrap();
    assert_eq!(
        plan.status.as_ref().unwrap().observed_generation,
        plan.metadata.generation
    );
    // Connector status, written with the chart's RBAC: the seed's connectors are Ready, and a
    // K8SCluster whose CloudProvider does not exist yet says so until it appears.
    let providers: Api<CloudProvider> = Api::namespaced(client.clone(), &stack.namespace);
    let clusters: Api<K8SCluster> = Api::namespaced(client.clone(), &stack.namespace);
    let ready =
        |conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
            conditions
                .and_then(|c| hibernator_api::common::find_condition(c, "Ready"))
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
    wait_for(
        Duration::from_secs(60),
        "the seed's connectors Ready",
        || async {
            let p = providers.get("aws-prod").await.ok()?;
            let c = clusters.get("eks-prod").await.ok()?;
            (ready(p.status.as_ref().map(|s| &s.conditions)) == cond("True", "Accepted")
                && ready(c.status.as_ref().map(|s| &s.conditions)) == cond("True", "Accepted"))
            .then_some(())
        },
    )
    .await
    .unwrap();
    let k8s_cluster = |provider: &str| {
        serde_json::json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "K8SCluster",
            "metadata": {"name": "staging", "namespace": stack.namespace},
            "spec": {"providerRef": {"kind": "CloudProvider", "name": provider},
                     "eks": {"name": "staging-eks", "region": "us-east-1"}},
        })
    };
    hibernator_e2e::world::apply(&client, &k8s_cluster("aws-staging"))
        .await
        .unwrap();
    let status = wait_for(Duration::from_secs(60), "ReferenceNotFound", || async {
        let c = clusters.get("staging").await.ok()?;
        let s = c.status?;
        (ready(Some(&s.conditions)) == cond("False", "ReferenceNotFound")).then_some(s)
    })
    .await
    .unwrap();
    assert!(
        hibernator_api::common::find_condition(&status.conditions, "Stalled").is_none(),
        "a missing CloudProvider is not Stalled (GitOps applies in any order): {status:?}"
    );
    hibernator_e2e::world::apply(
        &client,
        &serde_json::json!({
            "apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1",
            "kind": "CloudProvider",
            "metadata": {"name": "aws-staging", "namespace": stack.namespace},
            "spec": {"type": "aws", "aws": {"accountId": "123456789012", "region": "us-east-1",
                     "auth": {"serviceAccount": {}}}},
        }),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(60),
        "Ready once the CloudProvider exists",
        || async {
            let c = clusters.get("staging").await.ok()?;
            (ready(c.status.as_ref().map(|s| &s.conditions)) == cond("True", "Accepted"))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // The controller acted with the chart's ServiceAccount (and so its ClusterRole).
    let user = format!("system:serviceaccount:{}:hibernator", stack.namespace);
    let writes: Vec<_> = cluster
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.user.username == user && e.is_write())
        .collect();
    assert!(!writes.is_empty(), "the controller wrote as {user}");
    let by_kind = hibernator_e2e::world::check_controller_writes(&writes).unwrap();
    for kind in [
        "hibernationplans/status",
        "cloudproviders/status",
        "k8sclusters/status",
    ] {
        assert!(by_kind.contains_key(kind), "{kind}: {by_kind:?}");
    }
    // `kubectl hibernator status` reads it back.
    let out = std::process::Command::new(hibernator_e2e::stack::cli().unwrap())
        .args(["status", "prod-offhours", "-n", &stack.namespace])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("prod-offhours (hibernator-system): Active"),
        "{text}"
    );
    assert!(text.contains("Ready=True (Active)"), "{text}");

    // Secure by default: the API server accepted the chart's NetworkPolicy, and the controller
    // made its own gRPC certificate (the runners' Jobs get its CA).
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &stack.namespace);
    let np = policies.get("hibernator-controller").await.unwrap();
    let from = &np.spec.unwrap().ingress.unwrap()[0].from.clone().unwrap()[0];
    assert_eq!(
        from.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["app.kubernetes.io/name"],
        "hibernator-runner"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &stack.namespace);
    let tls = secrets.get("hibernator-grpc-tls").await.unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    // A plaintext install is possible only when asked for, and its notes warn about it.
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let chart = hibernator_e2e::root()
        .join("deploy/helm/hibernator")
        .display()
        .to_string();
    let notes = |extra: &[&str]| {
        let mut args = vec![
            "install",
            "other",
            &chart,
            "--namespace",
            "other",
            "--dry-run=client",
            "--kubeconfig",
            &kubeconfig,
            "--set",
            "crds.enabled=false",
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let helm = cluster.helm().unwrap();
        async move { helm.run(&args).await.unwrap().stdout }
    };
    let plaintext = notes(&["--set", "grpc.plaintext=true"]).await;
    assert!(plaintext.contains("served WITHOUT TLS"), "{plaintext}");
    let default = notes(&[]).await;
    assert!(default.contains("NOTES:"), "{default}");
    assert!(!default.contains("WITHOUT TLS"), "{default}");

    // Watching one namespace, the controller has no cluster-wide binding, and the night runs
    // with namespaced access only: upgrade to a clock just before Thursday 20:00 in New York.
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let controller_sa = |b: &ClusterRoleBinding| {
        b.subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == "hibernator"
                && s.namespace.as_deref() == Some(stack.namespace.as_str())
        })
    };
    let cluster_wide: Vec<String> = bindings
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|b| controller_sa(b))
        .map(|b| b.metadata.name.clone().unwrap_or_default())
        .collect();
    assert!(cluster_wide.is_empty(), "{cluster_wide:?}");
    let upgrade: Vec<String> = [
        "upgrade",
        "hibernator",
        &chart,
        "--namespace",
        &stack.namespace,
        "--kubeconfig",
        &kubeconfig,
        "--reuse-values",
        "--set-string",
        "clock.start=2026-11-27T00:58:30Z",
        "--set",
        "clock.speed=60",
        "--wait",
        "--timeout",
        "120s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let started = std::time::Instant::now();
    cluster.helm().unwrap().run(&upgrade).await.unwrap();
    eprintln!("helm upgrade took {:?}", started.elapsed());
    wait_for(
        Duration::from_secs(180),
        "prod-offhours Hibernated",
        || async {
            let p = plans.get_opt("prod-offhours").await.ok()??;
            (condition(&p, "Ready") == cond("True", "Hibernated")).then_some(())
        },
    )
    .await
    .unwrap();
    eprintln!("Hibernated after {:?}", started.elapsed());
    let after = stack.snapshot().unwrap();
    assert_eq!(after["rds"]["prod-db"], "stopped", "{after}");
    let events: Vec<_> = cluster
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.user.username == user)
        .collect();
    let cluster_scoped: Vec<String> = events
        .iter()
        .filter(|e| {
            e.object_ref.as_ref().is_some_and(|o| {
                o.namespace.is_none() || o.resource.as_deref() == Some("namespaces")
            })
        })
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect();
    assert!(
        cluster_scoped.is_empty(),
        "cluster-scoped access: {cluster_scoped:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| !e.request_uri.contains("tokenreviews")),
        "no TokenReview in namespaced mode"
    );
    // Runners were authenticated (locally): their records arrived.
    let cm: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &stack.namespace);
    let data = cm
        .get("hibernator-restore-prod-offhours")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert!(data.contains_key("prod-db"), "{data:?}");
}
