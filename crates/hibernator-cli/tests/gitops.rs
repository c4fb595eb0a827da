//! The pull-request check of the GitOps example repository, run as a CI job runs it: real
//! `kubectl kustomize` piped into this `kubectl-hibernator validate -`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gitops_checks::{Kubectl, example_kustomizations, gitops_examples, relative};

fn home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gitops-kubectl-home")
}

fn validate(stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-hibernator"))
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_kustomization_builds_and_validates() {
    let kubectl = Kubectl::find(&home());
    let dirs = example_kustomizations();
    let names: Vec<String> = dirs.iter().map(|d| relative(d)).collect();
    for want in [
        "examples/gitops/base",
        "examples/gitops/hibernator",
        "examples/gitops/overlays/dev",
        "examples/gitops/overlays/prod",
        "examples/gitops/overlays/staging",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not found in {names:?}"
        );
    }
    for dir in &dirs {
        let built = kubectl.kustomize(dir);
        let o = validate(&built);
        assert_eq!(o.status.code(), Some(0), "{}:\n{}", relative(dir), text(&o));
        let expected = if dir.ends_with("hibernator") {
            // Two CloudProviders, two K8SClusters, three plans, the holiday exception (its
            // calendar ConfigMap is read, not counted) and the prod plan's notification.
            "9 objects valid"
        } else {
            // One CloudProvider, one plan.
            "2 objects valid"
        };
        assert!(
            text(&o).contains(expected),
            "{}:\n{}",
            relative(dir),
            text(&o)
        );
    }
}

/// The recipe exactly as the README gives it, in a shell with `pipefail`.
#[test]
fn the_documented_pull_request_recipe_passes_for_prod() {
    let kubectl = Kubectl::find(&home());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-hibernator"))
        .parent()
        .unwrap()
        .to_path_buf();
    let kubectl_dir = home().join("bin");
    std::fs::create_dir_all(&kubectl_dir).unwrap();
    let link = kubectl_dir.join("kubectl");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&kubectl.path, &link).unwrap();
    let path = std::env::join_paths(
        [kubectl_dir, bin_dir]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let o = Command::new("bash")
        .args([
            "-c",
            "set -euo pipefail; kubectl kustomize overlays/prod | kubectl-hibernator validate -",
        ])
        .current_dir(gitops_examples())
        .env("PATH", path)
        .env("HOME", home())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("2 objects valid"), "{}", text(&o));
}

/// Copies the example base into a scratch directory, writes an overlay of it with `patches`
/// and builds the overlay.
fn build_overlay(kubectl: &Kubectl, name: &str, patches: &str) -> String {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("gitops-overlays")
        .join(name);
    let base = root.join("base");
    let overlay = root.join("overlay");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&overlay).unwrap();
    for entry in std::fs::read_dir(gitops_examples().join("base")).unwrap() {
        let file = entry.unwrap().path();
        std::fs::copy(&file, base.join(file.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\npatches:\n{patches}"
        ),
    )
    .unwrap();
    kubectl.kustomize(&overlay)
}

#[test]
fn a_broken_overlay_fails_the_check() {
    let kubectl = Kubectl::find(&home());
    // A misspelt time zone and a window ending at 24:00.
    let built = build_overlay(
        &kubectl,
        "bad-schedule",
        r#"  - target:
      kind: HibernationPlan
      name: offhours
    patch: |-
      - op: replace
        path: /spec/schedule
        value:
          timezone: "America/New_Yrok"
          offHours:
            - start: "20:00"
              end: "24:00"
              daysOfWeek: ["MON"]
"#,
    );
    let o = validate(&built);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("HibernationPlan hibernator-system/offhours"),
        "{out}"
    );
    assert!(out.contains("America/New_Yrok"), "{out}");
    assert!(out.contains("24:00"), "{out}");

    // An overlay that drops the CloudProvider the plan uses: a dangling reference.
    let built = build_overlay(
        &kubectl,
        "no-provider",
        r#"  - target:
      kind: CloudProvider
      name: aws
    patch: |-
      $patch: delete
      apiVersion: connector.hibernator.ardikasaputro.io/v1alpha1
      kind: CloudProvider
      metadata:
        name: aws
"#,
    );
    assert!(
        !built.contains("apiVersion: connector.hibernator.ardikasaputro.io"),
        "{built}"
    );
    let o = validate(&built);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("CloudProvider hibernator-system/aws is not among the documents"),
        "{}",
        text(&o)
    );
}

#[test]
fn kustomize_errors_are_not_swallowed() {
    // A kustomization naming a file that is not there: kubectl fails, and so does the recipe.
    let kubectl = Kubectl::find(&home());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gitops-overlays/missing");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources:\n  - plans.yaml\n",
    )
    .unwrap();
    let o = kubectl.try_kustomize(&dir);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("plans.yaml"));
}
