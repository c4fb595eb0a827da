//! The Helm chart, with the real `helm` built by the test-cluster tools.

use hibernator_e2e::{helm, of_kind, render_chart};
use serde_json::Value;

fn args(docs: &[Value]) -> Vec<String> {
    let d = of_kind(docs, "Deployment")[0];
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn lint_passes() {
    let out = helm(&["lint", "deploy/helm/hibernator", "--strict"]).unwrap();
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn default_render_has_crds_rbac_and_a_locked_down_controller() {
    let docs = render_chart(&[]).unwrap();
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 5);
    for crd in &crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let roles = of_kind(&docs, "ClusterRole");
    let names: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["hib-hibernator-controller", "hib-hibernator-notifications"],
        "the runner gets no ClusterRole by default"
    );
    let rules = roles[0]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["resources"][0] == "tokenreviews"));
    assert!(
        !rules.iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("secrets"))),
        "the controller's own role reads no Secret"
    );
    // Notifications: get (never list or watch) on Secrets, narrowed to names when given.
    assert_eq!(
        roles[1]["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    );
    let narrowed = render_chart(&["notifications.secretNames={slack-hook,teams-hook}"]).unwrap();
    assert_eq!(
        of_kind(&narrowed, "ClusterRole")[1]["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"],
                            "resourceNames": ["slack-hook", "teams-hook"], "verbs": ["get"]}])
    );
    let off = render_chart(&["notifications.enabled=false"]).unwrap();
    assert_eq!(of_kind(&off, "ClusterRole").len(), 1);
    let role_names: Vec<&str> = of_kind(&docs, "Role")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        role_names,
        ["hib-hibernator-leader-election", "hib-hibernator-grpc-tls"]
    );
    let sas: Vec<&str> = of_kind(&docs, "ServiceAccount")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(sas, ["hib-hibernator", "hibernator-runner"]);
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    let a = args(&docs);
    assert!(a.contains(&"--leader-elect".to_string()), "{a:?}");
    assert!(
        a.contains(
            &"--controller-endpoint=https://hib-hibernator.hibernator-system.svc:9444".to_string()
        ),
        "{a:?}"
    );
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
}

#[test]
fn toggles() {
    let docs = render_chart(&["crds.enabled=false"]).unwrap();
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());

    let docs = render_chart(&["crds.keep=false"]).unwrap();
    assert!(of_kind(&docs, "CustomResourceDefinition")[0]["metadata"]["annotations"].is_null());

    let docs = render_chart(&[
        "replicaCount=2",
        "leaderElection.enabled=true",
        "podDisruptionBudget.enabled=true",
    ])
    .unwrap();
    assert_eq!(of_kind(&docs, "Deployment")[0]["spec"]["replicas"], 2);
    assert!(args(&docs).contains(&"--leader-elect".to_string()));
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);

    let docs = render_chart(&["leaderElection.enabled=false", "grpc.plaintext=true"]).unwrap();
    assert!(!args(&docs).contains(&"--leader-elect".to_string()));
    assert!(of_kind(&docs, "Role").is_empty());

    let docs = render_chart(&[
        "runner.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/hibernator-runner",
    ])
    .unwrap();
    let runner_sa = of_kind(&docs, "ServiceAccount")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "hibernator-runner")
        .unwrap();
    assert_eq!(
        runner_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/hibernator-runner"
    );

    let docs = render_chart(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prom",
    ])
    .unwrap();
    let sm = of_kind(&docs, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    assert_eq!(sm[0]["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["port"], "http-metrics");

    let docs = render_chart(&[
        "runner.extraEnv[0].name=AWS_ENDPOINT_URL",
        "runner.extraEnv[0].value=http://localstack:4566",
        "runner.inClusterRbac.enabled=true",
    ])
    .unwrap();
    assert!(
        args(&docs).contains(&"--runner-env=AWS_ENDPOINT_URL=http://localstack:4566".to_string())
    );
    // The controller's, the notifications' Secret reading, the runner's.
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 3);
}

#[test]
fn grpc_tls_mounts_the_secret_and_switches_the_endpoint_to_https() {
    let docs = render_chart(&["grpc.tls.secretName=hibernator-grpc-tls"]).unwrap();
    let a = args(&docs);
    for want in [
        "--controller-endpoint=https://hib-hibernator.hibernator-system.svc:9444",
        "--grpc-tls-cert=/etc/hibernator/grpc-tls/tls.crt",
        "--grpc-tls-key=/etc/hibernator/grpc-tls/tls.key",
        "--grpc-tls-ca=/etc/hibernator/grpc-tls/ca.crt",
    ] {
        assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
    }
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "hibernator-grpc-tls"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/hibernator/grpc-tls"
    );

    // Without a CA entry the controller hands runners the end of the chain.
    let docs =
        render_chart(&["grpc.tls.secretName=hibernator-grpc-tls", "grpc.tls.caKey="]).unwrap();
    assert!(!args(&docs).iter().any(|a| a.starts_with("--grpc-tls-ca")));

    // By default: the controller's own certificate, in a Secret only it may read and renew.
    let docs = render_chart(&[]).unwrap();
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null());
    let a = args(&docs);
    for want in [
        "--controller-endpoint=https://hib-hibernator.hibernator-system.svc:9444",
        "--grpc-tls-secret=hib-hibernator-grpc-tls",
        "--grpc-tls-san=hib-hibernator.hibernator-system.svc.cluster.local",
    ] {
        assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
    }
    assert!(
        !a.iter()
            .any(|a| a.starts_with("--grpc-tls-cert") || a == "--grpc-plaintext")
    );
    let role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "hib-hibernator-grpc-tls")
        .unwrap();
    assert_eq!(
        role["rules"][0]["resourceNames"][0],
        "hib-hibernator-grpc-tls"
    );
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "update"])
    );

    // Plaintext only when asked for.
    let docs = render_chart(&["grpc.plaintext=true"]).unwrap();
    let a = args(&docs);
    assert!(a.contains(&"--grpc-plaintext".to_string()), "{a:?}");
    assert!(
        a.contains(
            &"--controller-endpoint=http://hib-hibernator.hibernator-system.svc:9444".to_string()
        ),
        "{a:?}"
    );
    assert!(
        !of_kind(&docs, "Role")
            .iter()
            .any(|r| r["metadata"]["name"] == "hib-hibernator-grpc-tls")
    );
    // (NOTES need a cluster to render: the chart's install test checks their warning.)
}

#[test]
fn a_network_policy_lets_only_runners_reach_grpc_and_monitoring_reach_metrics() {
    let docs = render_chart(&[
        "networkPolicy.metricsNamespaceSelector.kubernetes\\.io/metadata\\.name=monitoring",
    ])
    .unwrap();
    let np = of_kind(&docs, "NetworkPolicy");
    assert_eq!(np.len(), 1);
    let spec = &np[0]["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "controller"
    );
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], 9444);
    assert_eq!(
        spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "hibernator-runner"
    );
    assert_eq!(spec["ingress"][1]["ports"][0]["port"], 8080);
    assert_eq!(
        spec["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert!(
        of_kind(
            &render_chart(&["networkPolicy.enabled=false"]).unwrap(),
            "NetworkPolicy"
        )
        .is_empty()
    );
}

#[test]
fn runner_env_from_a_secret_never_reaches_the_controllers_arguments_as_a_value() {
    let docs = render_chart(&[
        "runner.extraEnv[0].name=HTTPS_PROXY",
        "runner.extraEnv[0].valueFrom.secretKeyRef.name=proxy",
        "runner.extraEnv[0].valueFrom.secretKeyRef.key=url",
    ])
    .unwrap();
    let a = args(&docs);
    assert!(
        a.contains(&"--runner-env-from-secret=HTTPS_PROXY=proxy/url".to_string()),
        "{a:?}"
    );
    assert!(!a.iter().any(|a| a.starts_with("--runner-env=")), "{a:?}");
    // Neither a value nor a secret: refused by the schema.
    assert!(render_chart(&["runner.extraEnv[0].name=X"]).is_err());
}

#[test]
fn rendering_is_deterministic() {
    let a = helm(&["template", "hib", "deploy/helm/hibernator"]).unwrap();
    let b = helm(&["template", "hib", "deploy/helm/hibernator"]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn the_values_schema_rejects_nonsense() {
    let err = render_chart(&["logFormat=xml"]).unwrap_err().to_string();
    assert!(err.contains("logFormat"), "{err}");
    let err = render_chart(&["replicas=2"]).unwrap_err().to_string();
    assert!(err.contains("replicas"), "{err}");
}

#[test]
fn watching_one_namespace_binds_roles_there_and_nothing_cluster_wide() {
    let docs = render_chart(&["watchNamespace=team-a"]).unwrap();
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "hib-hibernator-controller")
        .unwrap();
    assert_eq!(role["metadata"]["namespace"], "team-a");
    let secrets = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "hib-hibernator-notifications")
        .unwrap();
    assert_eq!(
        secrets["metadata"]["namespace"], "team-a",
        "notification Secrets are read in the watched namespace only"
    );
    let resources: Vec<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap().iter())
        .map(|r| r.as_str().unwrap())
        .collect();
    for namespaced in [
        "hibernationplans",
        "jobs",
        "pods",
        "configmaps",
        "events",
        "cloudproviders",
    ] {
        assert!(
            resources.contains(&namespaced),
            "{namespaced}: {resources:?}"
        );
    }
    for cluster_scoped in ["tokenreviews", "nodes", "namespaces"] {
        assert!(
            !resources.contains(&cluster_scoped),
            "{cluster_scoped}: {resources:?}"
        );
    }
    let binding = of_kind(&docs, "RoleBinding")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "hib-hibernator-controller")
        .unwrap();
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    assert_eq!(binding["subjects"][0]["namespace"], "hibernator-system");
    let a = args(&docs);
    for want in ["--namespace=team-a", "--namespaced-rbac"] {
        assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
    }
    // Cluster-wide by default.
    assert!(!args(&render_chart(&[]).unwrap()).contains(&"--namespaced-rbac".to_string()));
}

/// `savings.prices` reaches the controller as a mounted file named by `--prices`, next to the
/// gRPC certificate's volume, and the file is a price table the controller reads; without the
/// value there is neither.
#[test]
fn savings_prices_reach_the_controller_as_a_mounted_file() {
    let docs = render_chart(&[
        "grpc.tls.secretName=hibernator-grpc-tls",
        "savings.prices.currency=EUR",
        "savings.prices.kubernetes.vcpuHour=0.03",
        "savings.prices.kubernetes.gibHour=0.004",
        "savings.prices.regions.eu-west-1.ec2.m5\\.large=0.107",
    ])
    .unwrap();
    assert!(args(&docs).contains(&"--prices=/etc/hibernator/prices/prices.yaml".to_string()));
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let mounts: Vec<&str> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        ["/etc/hibernator/grpc-tls", "/etc/hibernator/prices"]
    );
    assert_eq!(
        pod["volumes"][1]["configMap"]["name"],
        "hib-hibernator-prices"
    );
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "hib-hibernator-prices")
        .expect("the prices ConfigMap");
    let text = cm["data"]["prices.yaml"].as_str().unwrap();
    let value: Value = serde_saphyr::from_str(text).unwrap();
    let table = hibernator_api::savings::PriceTable::from_json(&value.to_string()).unwrap();
    assert_eq!(table.currency, "EUR");
    assert_eq!(table.regions["eu-west-1"].ec2["m5.large"], 0.107);

    let docs = render_chart(&[]).unwrap();
    assert!(!args(&docs).iter().any(|a| a.starts_with("--prices")));
    assert!(
        !of_kind(&docs, "ConfigMap")
            .iter()
            .any(|c| c["metadata"]["name"] == "hib-hibernator-prices")
    );
}
