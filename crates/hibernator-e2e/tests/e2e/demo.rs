//! The README's first command, run non-interactively: `cargo xtask demo --plain` must complete a
//! night and verify that every resource was restored, also with `--gitops flux|argocd`. The test runs the xtask binary that
//! `cargo build --workspace --bins` made, which is what `cargo xtask` runs (through `cargo run
//! -p xtask`, whose narrower package selection would compile the dependencies once more).

use std::process::Command;

#[test]
fn the_demo_restores_everything() {
    demo(&[]);
}

/// `--gitops flux|argocd`: the same night with the seed's manifests synced from Git by the real
/// Flux or Argo CD instead of `kubectl apply`.
#[test]
fn the_demo_driven_from_git_by_flux_and_by_argo_cd_restores_everything() {
    for tool in ["flux", "argocd"] {
        let stderr = demo(&["--gitops", tool]);
        let name = if tool == "flux" { "Flux" } else { "Argo CD" };
        assert!(
            stderr.contains(&format!("{name} syncs them into the cluster")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("kubectl apply -f (the seed's manifests)"),
            "{stderr}"
        );
    }
}

/// Runs `cargo xtask demo --plain` with `extra`; checks the night's table; returns stderr.
fn demo(extra: &[&str]) -> String {
    let xtask = &hibernator_e2e::world::binaries().expect("binaries").xtask;
    let out = Command::new(xtask)
        .args(["demo", "--plain"])
        .args(extra)
        .current_dir(hibernator_e2e::root())
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("Every resource slept during the night and is back exactly as it was."),
        "{stdout}"
    );
    for row in [
        "rds prod-db                    available    stopped      available    ok: slept, restored",
        "eks prod-eks-1/default-ng      2/3/6        0/0/6        2/3/6        ok: slept, restored",
        "eks prod-eks-1/gpu-ng          1/1/2        0/0/2        1/1/2        ok: slept, restored",
        "ec2 bastion                    running      running      running      ok: untouched",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in:\n{stdout}");
    }
    // The live view showed the night as it happened.
    assert!(
        stderr.contains("Hibernating") && stderr.contains("WakingUp"),
        "{stderr}"
    );
    stderr.into_owned()
}
