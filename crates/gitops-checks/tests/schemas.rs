//! The JSON schemas under `deploy/schemas/` (written by `cargo xtask schemas`), used by the
//! real kubeconform, offline: every example manifest (as committed and as Kustomize builds it)
//! and every health-check fixture validates, each of our objects is reported valid (not
//! skipped for want of a schema), and broken objects are reported invalid.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gitops_checks::{Kubectl, example_kustomizations, relative, repo_root, yaml_files};
use serde_json::Value;

const GROUPS: [&str; 2] = [
    "hibernator.ardikasaputro.io/",
    "connector.hibernator.ardikasaputro.io/",
];

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gitops-checks-schemas")
}

/// Runs kubeconform on files (or `-` with `stdin`) against the committed schemas only.
fn kubeconform(strict: bool, args: &[PathBuf], stdin: Option<&str>) -> (Output, Vec<Value>) {
    let bin = gitops_checks::kubeconform();
    let mut cmd = Command::new(&bin);
    cmd.arg("-schema-location")
        .arg(repo_root().join("deploy/schemas"))
        .args(["-ignore-missing-schemas", "-output", "json", "-verbose"])
        .env("HOME", tmp())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if strict {
        cmd.arg("-strict");
    }
    if stdin.is_some() {
        cmd.arg("-");
    }
    cmd.args(args);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kubeconform printed no JSON report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let resources = report["resources"].as_array().cloned().unwrap_or_default();
    (out, resources)
}

/// `(source, kind, name)` of every object of our API groups in a YAML stream.
fn our_objects(source: &str, text: &str) -> Vec<(String, String, String)> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{source} is not YAML: {e}"));
    docs.into_iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| GROUPS.iter().any(|g| v.starts_with(g)))
        })
        .map(|d| {
            (
                source.to_string(),
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every manifest to check, as files: the committed examples and fixtures, and each
/// kustomization as kubectl builds it.
fn inputs() -> Vec<PathBuf> {
    let mut files = yaml_files(&repo_root().join("examples"));
    files.extend(yaml_files(
        &repo_root().join("deploy/argocd/resource_customizations"),
    ));
    files.retain(|f| f.file_name().is_none_or(|n| n != "health_test.yaml"));
    let kubectl = Kubectl::find(&tmp().join("kubectl-home"));
    let built = tmp().join("built");
    std::fs::create_dir_all(&built).unwrap();
    for dir in example_kustomizations() {
        let name = relative(&dir).replace('/', "_");
        let path = built.join(format!("{name}.yaml"));
        std::fs::write(&path, kubectl.kustomize(&dir)).unwrap();
        files.push(path);
    }
    files
}

#[test]
fn every_example_and_fixture_is_valid_against_the_strict_schemas() {
    let files = inputs();
    let mut expected = Vec::new();
    for f in &files {
        expected.extend(our_objects(
            &f.display().to_string(),
            &std::fs::read_to_string(f).unwrap(),
        ));
    }
    // The examples hold every kind but ScheduleException; the fixtures add it.
    for kind in [
        "HibernationPlan",
        "HibernationNotification",
        "ScheduleException",
        "CloudProvider",
        "K8SCluster",
    ] {
        assert!(
            expected.iter().any(|(_, k, _)| k == kind),
            "no {kind} among the inputs"
        );
    }
    let (out, resources) = kubeconform(true, &files, None);
    let problems: Vec<String> = resources
        .iter()
        .filter(|r| r["status"] != "statusValid" && r["status"] != "statusSkipped")
        .map(|r| {
            format!(
                "{}: {} {}: {}",
                r["filename"], r["kind"], r["name"], r["msg"]
            )
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        out.status.success(),
        "kubeconform failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each of our objects was validated, not skipped for want of a schema.
    let mut valid: Vec<(String, String, String)> = resources
        .iter()
        .filter(|r| r["status"] == "statusValid")
        .filter(|r| {
            r["version"]
                .as_str()
                .is_some_and(|v| GROUPS.iter().any(|g| v.starts_with(g)))
        })
        .map(|r| {
            (
                r["filename"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    valid.sort();
    expected.sort();
    assert_eq!(valid, expected, "objects of our kinds not reported valid");
    assert!(
        expected.len() >= 40,
        "only {} objects checked",
        expected.len()
    );
}

/// A valid plan with one change applied by `edit`.
fn broken_plan(edit: impl FnOnce(&mut Value)) -> String {
    let text = std::fs::read_to_string(
        repo_root().join("examples/gitops/hibernator/hibernateplans/prod-offhours.yaml"),
    )
    .unwrap();
    let mut plan: Value = serde_saphyr::from_str(&text).unwrap();
    edit(&mut plan);
    serde_json::to_string(&plan).unwrap()
}

#[test]
fn broken_objects_are_reported_invalid() {
    let cases: Vec<(&str, String)> = vec![
        (
            "an unknown spec field",
            broken_plan(|p| p["spec"]["schedule"]["timezon"] = "UTC".into()),
        ),
        (
            "an unknown target field",
            broken_plan(|p| p["spec"]["targets"][0]["connector"] = "aws-prod".into()),
        ),
        (
            "an unknown metadata field",
            broken_plan(|p| p["metadata"]["label"] = serde_json::json!({"a": "b"})),
        ),
        (
            "a label that is not a string",
            broken_plan(|p| p["metadata"]["labels"]["version"] = 1.2.into()),
        ),
        (
            "a missing required field",
            broken_plan(|p| {
                p["spec"].as_object_mut().unwrap().remove("schedule");
            }),
        ),
        (
            "a value outside its enum",
            broken_plan(|p| p["spec"]["execution"]["strategy"]["type"] = "Random".into()),
        ),
        (
            "a time that is not HH:MM",
            broken_plan(|p| p["spec"]["schedule"]["offHours"][0]["start"] = "8pm".into()),
        ),
        (
            "a number as a string",
            broken_plan(|p| p["spec"]["execution"]["strategy"]["maxConcurrency"] = "2".into()),
        ),
        (
            "an unknown connector field",
            r#"{"apiVersion": "connector.hibernator.ardikasaputro.io/v1alpha1", "kind": "CloudProvider",
                "metadata": {"name": "aws", "namespace": "hibernator-system"},
                "spec": {"type": "aws", "aws": {"accountId": "123456789012", "region": "us-east-1",
                         "auth": {"serviceAccount": {}}, "roleArn": "arn:aws:iam::123456789012:role/x"}}}"#
                .to_string(),
        ),
        (
            "the wrong apiVersion for the kind",
            broken_plan(|p| {
                p["apiVersion"] = "hibernator.ardikasaputro.io/v1alpha1".into();
                p["kind"] = "ScheduleException".into();
            }),
        ),
    ];
    for (what, doc) in &cases {
        let (out, resources) = kubeconform(true, &[], Some(doc));
        assert_eq!(resources.len(), 1, "{what}: {resources:?}");
        assert_eq!(
            resources[0]["status"], "statusInvalid",
            "{what}: {:?}",
            resources[0]
        );
        assert!(!out.status.success(), "{what}: kubeconform exited 0");
    }
    // The same plan unbroken is valid, so the failures above are the edits'.
    let (out, resources) = kubeconform(true, &[], Some(&broken_plan(|_| {})));
    assert_eq!(resources[0]["status"], "statusValid", "{resources:?}");
    assert!(out.status.success());
}

#[test]
fn the_non_strict_schemas_accept_unknown_fields_and_check_the_rest() {
    let unknown = broken_plan(|p| p["spec"]["schedule"]["timezon"] = "UTC".into());
    let (_, resources) = kubeconform(false, &[], Some(&unknown));
    assert_eq!(resources[0]["status"], "statusValid", "{resources:?}");
    let wrong_type =
        broken_plan(|p| p["spec"]["execution"]["strategy"]["maxConcurrency"] = "2".into());
    let (_, resources) = kubeconform(false, &[], Some(&wrong_type));
    assert_eq!(resources[0]["status"], "statusInvalid", "{resources:?}");
}

#[test]
fn a_schema_for_every_kind_in_both_layouts() {
    for dir in ["master-standalone-strict", "master-standalone"] {
        let mut names: Vec<String> =
            std::fs::read_dir(repo_root().join("deploy/schemas").join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cloudprovider-connector-v1alpha1.json",
                "hibernationnotification-hibernator-v1alpha1.json",
                "hibernationplan-hibernator-v1alpha1.json",
                "k8scluster-connector-v1alpha1.json",
                "scheduleexception-hibernator-v1alpha1.json",
            ],
            "{dir}"
        );
    }
    assert!(Path::new(&repo_root().join("deploy/schemas")).is_dir());
}
