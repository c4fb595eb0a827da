//! Every Kustomize build of the example repository applies to a real API server once the CRDs
//! are installed (the CEL rules and schemas are the server's; `kubectl-hibernator validate` of
//! the same builds is tested in the CLI crate). On a test cluster of its own: the examples use
//! fixed namespaces, which `chart_install` uses on the shared one.

use hibernator_e2e::root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kustomization_applies_after_the_crds() {
    let cluster = hibernator_e2e::world::private_cluster().await.unwrap();
    let kubectl = cluster.kubectl().unwrap();
    for dir in [
        "examples/gitops/hibernator",
        "examples/gitops/overlays/dev",
        "examples/gitops/overlays/staging",
        "examples/gitops/overlays/prod",
    ] {
        let path = root().join(dir).display().to_string();
        let built = kubectl
            .run(["kustomize", path.as_str()])
            .await
            .unwrap()
            .stdout;
        assert!(built.contains("kind: HibernationPlan"), "{dir}: {built}");
        let applied = kubectl
            .run_with_input(["apply", "-f", "-"], Some(built.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("kubectl apply of {dir} failed: {e}"));
        assert!(
            applied
                .stdout
                .contains("hibernationplan.hibernator.ardikasaputro.io/"),
            "{dir}: {}",
            applied.stdout
        );
        // A server-side dry run of the same output finds nothing to reject either.
        kubectl
            .run_with_input(
                ["apply", "--server-side", "--dry-run=server", "-f", "-"],
                Some(built.as_bytes()),
            )
            .await
            .unwrap_or_else(|e| panic!("server-side dry run of {dir} failed: {e}"));
    }
    let plans = kubectl
        .run(["get", "hplan", "-A", "-o", "name"])
        .await
        .unwrap()
        .stdout;
    for p in ["prod-offhours", "staging-offhours", "dev-offhours"] {
        assert!(plans.contains(p), "{plans}");
    }
}
