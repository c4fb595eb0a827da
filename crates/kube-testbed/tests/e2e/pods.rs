//! Pods on the process kubelet: in-cluster configuration, environment and volumes at their real
//! paths, status and termination messages, image errors, restarts, logs, graceful deletion,
//! Deployments.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::common::{
    PROBE, SHELL, cluster, container_status, create_and_wait, eventually, logs, object, phase,
    shell_pod, wait_phase,
};

#[tokio::test]
async fn a_kube_rs_program_with_in_cluster_configuration_lists_pods() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("incluster").await?;
    let client = cluster.client()?;
    let role: Role = object(json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }));
    let binding: RoleBinding = object(json!({
        "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
    }));
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = object(json!({
        "metadata": {"name": "probe"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": PROBE}],
        }
    }));
    let done = create_and_wait(&pods, &pod, &["Succeeded", "Failed"]).await?;
    let output = logs(&pods, "probe").await?;
    assert_eq!(phase(&done), "Succeeded", "{output}");
    assert!(
        output.contains(&format!("namespace {ns}: 1 pods")),
        "{output}"
    );
    assert!(output.contains("pod probe"), "{output}");
    Ok(())
}

/// Lines `key=value` of a log, as a map.
fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn environment_and_volumes_appear_as_on_a_real_node() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("env-volumes").await?;
    let client = cluster.client()?;
    let secret: Secret = object(json!({
        "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"},
    }));
    let settings: ConfigMap = object(json!({
        "metadata": {"name": "settings"},
        "data": {"color": "green", "size": "7"},
    }));
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &settings)
        .await?;
    let script = r#"
echo "PLAIN=$PLAIN"
echo "EXPANDED=$EXPANDED"
echo "FROM_SECRET=$FROM_SECRET"
echo "FROM_CM=$FROM_CM"
echo "POD_NAME=$POD_NAME"
echo "POD_UID=$POD_UID"
echo "NODE=$NODE"
echo "MEM_LIMIT_MI=$MEM_LIMIT_MI"
echo "CFG_size=$CFG_size"
echo "SERVICE=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
echo "secret_file=$(cat /etc/testbed/secret/password)"
echo "config_file=$(cat /etc/testbed/config/colors/primary)"
echo "labels_file=$(cat /etc/podinfo/labels)"
echo "name_file=$(cat /etc/podinfo/name)"
echo "token_parts=$(awk -F. '{print NF}' /var/run/secrets/hibernator/token)"
echo "token_mode=$(stat -c %a:%u /var/run/secrets/hibernator/token)"
echo "sa_namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
echo "sa_ca=$(head -1 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)"
echo "ids=$(id -u):$(id -g):$(id -G)"
echo "config_group=$(stat -c %g /etc/testbed/config/colors/primary)"
echo "scratch=$(touch /scratch/x && echo writable)"
echo "secret_volume=$(touch /etc/testbed/secret/new 2>/dev/null && echo writable || echo read-only)"
echo "cwd=$(pwd)"
echo "hostname=$(hostname)"
"#;
    let pod: Pod = object(json!({
        "metadata": {"name": "env-volumes", "labels": {"app": "probe"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
            "containers": [{
                "name": "main",
                "image": SHELL,
                "command": ["sh", "-c", script],
                "workingDir": "/tmp",
                "resources": {"limits": {"memory": "64Mi"}},
                "env": [
                    {"name": "PLAIN", "value": "plain-value"},
                    {"name": "EXPANDED", "value": "$(PLAIN)-expanded"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                ],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "volumeMounts": [
                    {"name": "secret", "mountPath": "/etc/testbed/secret"},
                    {"name": "config", "mountPath": "/etc/testbed/config"},
                    {"name": "podinfo", "mountPath": "/etc/podinfo"},
                    {"name": "token", "mountPath": "/var/run/secrets/hibernator"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }],
            "volumes": [
                {"name": "secret", "secret": {"secretName": "creds"}},
                {"name": "config", "configMap": {"name": "settings", "items": [{"key": "color", "path": "colors/primary"}]}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                ]}},
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "hibernator", "expirationSeconds": 600, "path": "token"}},
                ]}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }
    }));
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let done = create_and_wait(&pods, &pod, &["Succeeded", "Failed"]).await?;
    let output = logs(&pods, "env-volumes").await?;
    assert_eq!(phase(&done), "Succeeded", "{output}");
    let got = key_values(&output);
    let expect = |key: &str, value: &str| {
        assert_eq!(
            got.get(key).map(String::as_str),
            Some(value),
            "{key} in\n{output}"
        );
    };
    expect("PLAIN", "plain-value");
    expect("EXPANDED", "plain-value-expanded");
    expect("FROM_SECRET", "s3cret");
    expect("FROM_CM", "green");
    expect("POD_NAME", "env-volumes");
    expect("POD_UID", done.uid().as_deref().unwrap_or_default());
    expect("NODE", "kube-testbed");
    expect("MEM_LIMIT_MI", "64");
    expect("CFG_size", "7");
    expect("SERVICE", &format!("127.0.0.1:{}", cluster.api_port()));
    expect("secret_file", "s3cret");
    expect("config_file", "green");
    expect("labels_file", "app=\"probe\"");
    expect("name_file", "env-volumes");
    expect("token_parts", "3");
    // A projected token is owned by the pod's user, mode 0600 (what the kubelet does).
    expect("token_mode", "600:1000");
    expect("sa_namespace", &ns);
    expect("sa_ca", "-----BEGIN CERTIFICATE-----");
    expect("ids", "1000:1000:1000 2000");
    expect("config_group", "2000");
    expect("scratch", "writable");
    expect("secret_volume", "read-only");
    expect("cwd", "/tmp");
    expect("hostname", "env-volumes");
    // Nothing of this reached the host's file system.
    for path in [
        "/etc/testbed",
        "/etc/podinfo",
        "/scratch",
        "/run/secrets",
        "/dev/termination-log",
    ] {
        assert!(!Path::new(path).exists(), "{path} exists on the host");
    }
    Ok(())
}

#[tokio::test]
async fn exit_codes_and_termination_messages_are_reported() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("termination").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);

    let from_file = shell_pod(
        "from-file",
        "Never",
        "echo 'disk full' > /dev/termination-log; exit 4",
    );
    let done = create_and_wait(&pods, &from_file, &["Failed"]).await?;
    let status = container_status(&done);
    assert_eq!(status["state"]["terminated"]["exitCode"], 4);
    assert_eq!(status["state"]["terminated"]["reason"], "Error");
    assert_eq!(status["state"]["terminated"]["message"], "disk full\n");

    let mut fallback = shell_pod("fallback", "Never", "echo first; echo last words; exit 5");
    if let Some(c) = fallback.spec.as_mut().map(|s| &mut s.containers[0]) {
        c.termination_message_policy = Some("FallbackToLogsOnError".into());
        // A path whose directory does not exist on the host is created in the pod's view only.
        c.termination_message_path = Some("/var/testbed-messages/why".into());
    }
    let done = create_and_wait(&pods, &fallback, &["Failed"]).await?;
    let status = container_status(&done);
    assert_eq!(status["state"]["terminated"]["exitCode"], 5);
    assert_eq!(
        status["state"]["terminated"]["message"],
        "first\nlast words\n"
    );
    assert!(!Path::new("/var/testbed-messages").exists());

    let ok = shell_pod("ok", "Never", "echo fine");
    let done = create_and_wait(&pods, &ok, &["Succeeded"]).await?;
    let status = container_status(&done);
    assert_eq!(status["state"]["terminated"]["exitCode"], 0);
    assert_eq!(status["state"]["terminated"]["reason"], "Completed");
    assert!(status["state"]["terminated"].get("message").is_none());
    let conditions: BTreeMap<String, String> = done
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(conditions.get("Ready").map(String::as_str), Some("False"));
    assert_eq!(
        conditions.get("Initialized").map(String::as_str),
        Some("True")
    );
    assert_eq!(
        conditions.get("PodScheduled").map(String::as_str),
        Some("True")
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_image_is_an_image_pull_error() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("image").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);
    let pod: Pod = object(json!({
        "metadata": {"name": "unknown-image"},
        "spec": {"containers": [{"name": "main", "image": "registry.example/not-mapped:1"}]},
    }));
    pods.create(&PostParams::default(), &pod).await?;
    let status = eventually("ErrImagePull", Duration::from_secs(60), || async {
        let pod = pods.get("unknown-image").await?;
        let status = container_status(&pod);
        Ok((status["state"]["waiting"]["reason"] == "ErrImagePull").then_some((pod, status)))
    })
    .await?;
    assert_eq!(phase(&status.0), "Pending");
    assert!(
        status.1["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("registry.example/not-mapped:1")
    );
    // kubectl logs on it: the kubelet's "waiting to start" error, through the API server.
    let err = pods
        .logs("unknown-image", &LogParams::default())
        .await
        .expect_err("no logs for a container that never started");
    assert!(err.to_string().contains("waiting to start"), "{err}");
    pods.delete("unknown-image", &DeleteParams::default())
        .await?;
    eventually("the pod to be gone", Duration::from_secs(30), || async {
        Ok(pods.get_opt("unknown-image").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// Waits until the pod has printed `text` (its signal handler is installed by then).
async fn wait_for_output(pods: &Api<Pod>, name: &str, text: &str) -> anyhow::Result<()> {
    eventually(
        &format!("{text:?} from {name}"),
        Duration::from_secs(30),
        || async { Ok(logs(pods, name).await?.contains(text).then_some(())) },
    )
    .await
}

/// Deletes a pod and records every status it had until it was gone.
async fn delete_and_watch(pods: &Api<Pod>, name: &str) -> anyhow::Result<(Duration, Vec<Pod>)> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(pods.clone(), config).boxed();
    // The initial list.
    while let Some(event) = stream.try_next().await? {
        if matches!(event, watcher::Event::InitDone) {
            break;
        }
    }
    let started = Instant::now();
    pods.delete(name, &DeleteParams::default()).await?;
    let mut seen = Vec::new();
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = stream.try_next().await? {
            match event {
                watcher::Event::Apply(pod) => seen.push(pod),
                watcher::Event::Delete(pod) => {
                    seen.push(pod);
                    return Ok::<_, anyhow::Error>(());
                }
                _ => {}
            }
        }
        anyhow::bail!("the watch ended")
    })
    .await;
    gone??;
    Ok((started.elapsed(), seen))
}

#[tokio::test]
async fn deletion_is_graceful_sigterm_then_sigkill_after_the_grace_period() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("graceful").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);

    // A program that handles SIGTERM exits at once, with its own exit code.
    let polite = shell_pod(
        "polite",
        "Always",
        "trap 'echo stopping; exit 0' TERM; echo started; while :; do sleep 0.1; done",
    );
    create_and_wait(&pods, &polite, &["Running"]).await?;
    wait_for_output(&pods, "polite", "started").await?;
    let (took, seen) = delete_and_watch(&pods, "polite").await?;
    // Far below the default 30 s grace period: it exited on SIGTERM, not on a later SIGKILL
    // (bounds this loose hold on a loaded machine).
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let last = seen.last().expect("statuses");
    assert_eq!(phase(last), "Succeeded");
    assert_eq!(container_status(last)["state"]["terminated"]["exitCode"], 0);

    // One that ignores it is killed when the grace period (2 s) is over.
    let mut stubborn = shell_pod(
        "stubborn",
        "Always",
        "trap '' TERM; echo started; while :; do sleep 0.1; done",
    );
    if let Some(spec) = stubborn.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(2);
    }
    create_and_wait(&pods, &stubborn, &["Running"]).await?;
    wait_for_output(&pods, "stubborn", "started").await?;
    let (took, seen) = delete_and_watch(&pods, "stubborn").await?;
    // Not before its 2 s grace period, and far from the default 30 s: that grace period was used.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    let last = seen.last().expect("statuses");
    assert_eq!(phase(last), "Failed");
    assert_eq!(
        container_status(last)["state"]["terminated"]["exitCode"],
        137
    );
    Ok(())
}

#[tokio::test]
async fn on_failure_restarts_and_logs_support_previous_tail_timestamps_and_follow()
-> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("restart").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);
    let mut pod = shell_pod(
        "retry",
        "OnFailure",
        "if [ -e /scratch/ran ]; then echo one; echo two; echo three; sleep 1; echo done; exit 0; fi; touch /scratch/ran; echo first attempt; exit 1",
    );
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = Some(vec![object(json!({"name": "scratch", "emptyDir": {}}))]);
        spec.containers[0].volume_mounts = Some(vec![object(
            json!({"name": "scratch", "mountPath": "/scratch"}),
        )]);
    }
    pods.create(&PostParams::default(), &pod).await?;
    // Follow the second attempt's log as it is written.
    eventually("the restart", Duration::from_secs(60), || async {
        let pod = pods.get("retry").await?;
        Ok((container_status(&pod)["restartCount"] == 1).then_some(()))
    })
    .await?;
    let mut lines = pods
        .log_stream(
            "retry",
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await?
        .lines();
    let mut followed = Vec::new();
    while let Some(line) = lines.try_next().await? {
        followed.push(line);
    }
    assert_eq!(followed, ["one", "two", "three", "done"]);

    let done = wait_phase(&pods, "retry", &["Succeeded"]).await?;
    let status = container_status(&done);
    assert_eq!(status["restartCount"], 1);
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(status["state"]["terminated"]["exitCode"], 0);

    let previous = pods
        .logs(
            "retry",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await?;
    assert_eq!(previous, "first attempt\n");
    let tail = pods
        .logs(
            "retry",
            &LogParams {
                tail_lines: Some(2),
                ..LogParams::default()
            },
        )
        .await?;
    assert_eq!(tail, "three\ndone\n");
    let stamped = pods
        .logs(
            "retry",
            &LogParams {
                timestamps: true,
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await?;
    let (stamp, text) = stamped.trim_end().split_once(' ').expect("a timestamp");
    assert!(stamp.parse::<jiff::Timestamp>().is_ok(), "{stamped}");
    assert_eq!(text, "done");
    let limited = pods
        .logs(
            "retry",
            &LogParams {
                limit_bytes: Some(5),
                ..LogParams::default()
            },
        )
        .await?;
    assert_eq!(limited, "one\nt");
    Ok(())
}

#[tokio::test]
async fn a_deployment_gets_a_running_ready_pod() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("deployment").await?;
    let client = cluster.client()?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let deployment: Deployment = object(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web", "image": SHELL,
                    "command": ["sh", "-c", "echo serving; exec sleep 3600"],
                }]},
            },
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    eventually(
        "the deployment to be available",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("web").await?;
            Ok((d.status.and_then(|s| s.available_replicas) == Some(1)).then_some(()))
        },
    )
    .await?;
    let list = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(list.items.len(), 1);
    let pod = &list.items[0];
    assert_eq!(phase(pod), "Running");
    let status = container_status(pod);
    assert_eq!(status["ready"], true);
    assert!(status["state"]["running"]["startedAt"].is_string());
    let name = pod.name_any();
    eventually(
        "the deployment pod's output",
        Duration::from_secs(10),
        || async { Ok((logs(&pods, &name).await? == "serving\n").then_some(())) },
    )
    .await?;

    // The kubelet's status writes: its own node identity, field manager `kubelet`.
    let events = cluster.audit_events()?;
    let kubelet_writes: Vec<_> = events
        .iter()
        .filter(|e| {
            e.namespace() == Some(ns.as_str())
                && e.resource() == Some("pods")
                && e.subresource() == Some("status")
        })
        .collect();
    assert!(!kubelet_writes.is_empty());
    for e in kubelet_writes {
        assert_eq!(e.user.username, "system:node:kube-testbed");
        assert!(e.user.groups.contains(&"system:nodes".to_string()));
        assert_eq!(e.field_manager.as_deref(), Some("kubelet"));
    }
    deployments
        .delete("web", &DeleteParams::foreground())
        .await?;
    eventually(
        "the deployment's pod to be gone",
        Duration::from_secs(60),
        || async {
            Ok(pods
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn init_containers_run_first_in_order() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("init").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client()?, &ns);
    let step = |name: &str, script: &str| {
        json!({
            "name": name, "image": SHELL, "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        })
    };
    let pod: Pod = object(json!({
        "metadata": {"name": "staged"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                step("fetch", "echo fetched > /work/data"),
                step("check", "grep -q fetched /work/data && echo checked >> /work/data"),
            ],
            "containers": [step("main", "cat /work/data")],
            "volumes": [{"name": "work", "emptyDir": {}}],
        }
    }));
    let done = create_and_wait(&pods, &pod, &["Succeeded", "Failed"]).await?;
    assert_eq!(phase(&done), "Succeeded");
    let inits = done
        .status
        .and_then(|s| s.init_container_statuses)
        .unwrap_or_default();
    assert_eq!(inits.len(), 2);
    for status in inits {
        let terminated = status.state.and_then(|s| s.terminated).expect("terminated");
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (0, Some("Completed"))
        );
    }
    assert_eq!(logs(&pods, "staged").await?, "fetched\nchecked\n");
    Ok(())
}

#[tokio::test]
async fn a_pod_waits_in_container_creating_until_its_secret_exists() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.create_namespace("creating").await?;
    let client = cluster.client()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = object(json!({
        "metadata": {"name": "needs-secret"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": SHELL,
                "command": ["sh", "-c", "cat /etc/late/value"],
                "volumeMounts": [{"name": "late", "mountPath": "/etc/late"}],
            }],
            "volumes": [{"name": "late", "secret": {"secretName": "late"}}],
        }
    }));
    pods.create(&PostParams::default(), &pod).await?;
    eventually(
        "Pending in ContainerCreating",
        Duration::from_secs(30),
        || async {
            let pod = pods.get("needs-secret").await?;
            let waiting =
                container_status(&pod)["state"]["waiting"]["reason"] == "ContainerCreating";
            Ok((phase(&pod) == "Pending" && waiting).then_some(()))
        },
    )
    .await?;
    // The kubelet keeps retrying the mount (a FailedMount event says why) ...
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(phase(&pods.get("needs-secret").await?), "Pending");
    // ... and runs the pod once the secret is there.
    let secret: Secret =
        object(json!({"metadata": {"name": "late"}, "stringData": {"value": "arrived"}}));
    Api::<Secret>::namespaced(client, &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let done = wait_phase(&pods, "needs-secret", &["Succeeded", "Failed"]).await?;
    assert_eq!(phase(&done), "Succeeded");
    assert_eq!(logs(&pods, "needs-secret").await?, "arrived");
    Ok(())
}
