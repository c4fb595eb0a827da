//! The seed's manifests are in `examples/gitops/` byte for byte, comments included (the user
//! journey's manifests must apply unchanged). The expected texts below are the journey's YAML
//! blocks as published; the Flux block holds two documents, kept in two files.

const SEED: &[(&str, &str)] = &[
    (
        "examples/gitops/hibernator/cloudproviders/aws-prod.yaml",
        r#"# hibernator/cloudproviders/aws-prod.yaml
apiVersion: connector.hibernator.ardikasaputro.io/v1alpha1
kind: CloudProvider
metadata:
  name: aws-prod
  namespace: hibernator-system
  labels:
    app.kubernetes.io/name: hibernator
    app.kubernetes.io/version: v0.1.0
    managed-by: gitops
spec:
  type: aws
  aws:
    accountId: "123456789012"
    region: us-east-1
    auth:
      serviceAccount: {}  # IRSA, not hardcoded credentials
"#,
    ),
    (
        "examples/gitops/hibernator/k8sclusters/eks-prod.yaml",
        r#"# hibernator/k8sclusters/eks-prod.yaml
apiVersion: connector.hibernator.ardikasaputro.io/v1alpha1
kind: K8SCluster
metadata:
  name: eks-prod
  namespace: hibernator-system
  labels:
    app.kubernetes.io/name: hibernator
    environment: production
spec:
  providerRef:
    kind: CloudProvider
    name: aws-prod
  eks:
    name: prod-eks-1
    region: us-east-1
"#,
    ),
    (
        "examples/gitops/hibernator/hibernateplans/prod-offhours.yaml",
        r#"# hibernator/hibernateplans/prod-offhours.yaml
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: HibernationPlan
metadata:
  name: prod-offhours
  namespace: hibernator-system
  labels:
    app.kubernetes.io/name: hibernator
    environment: production
    version: "1.2"
spec:
  schedule:
    timezone: "America/New_York"
    offHours:
      - start: "20:00"
        end: "06:00"
        daysOfWeek: ["MON", "TUE", "WED", "THU", "FRI"]

  execution:
    strategy:
      type: DAG
      maxConcurrency: 2
      dependencies:
        - from: prod-db
          to: prod-cluster

  targets:
    - name: prod-db
      type: rds
      connectorRef:
        kind: CloudProvider
        name: aws-prod
      parameters:
        snapshotBeforeStop: true

    - name: prod-cluster
      type: eks
      connectorRef:
        kind: CloudProvider
        name: aws-prod
      parameters:
        clusterName: eks-prod
        nodeGroups:
          - name: default-ng
          - name: gpu-ng
"#,
    ),
    (
        "examples/gitops/argocd-hibernator-app.yaml",
        r#"# argocd-hibernator-app.yaml
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: hibernator
  namespace: argocd
spec:
  project: default
  source:
    repoURL: https://github.com/myorg/my-infrastructure-repo.git
    targetRevision: main
    path: hibernator/
  destination:
    server: https://kubernetes.default.svc
    namespace: hibernator-system
  syncPolicy:
    automated:
      prune: true      # Remove resources if deleted from Git
      selfHeal: true   # Reconcile if cluster drifts
    syncOptions:
      - CreateNamespace=true
"#,
    ),
    (
        "examples/gitops/hibernator-source.yaml",
        r#"# hibernator-source.yaml
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: GitRepository
metadata:
  name: hibernator-repo
  namespace: flux-system
spec:
  interval: 1m
  url: https://github.com/myorg/my-infrastructure-repo.git
  ref:
    branch: main
  secretRef:
    name: git-credentials
"#,
    ),
    (
        "examples/gitops/hibernator-kustomization.yaml",
        r#"# hibernator-kustomization.yaml
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: hibernator
  namespace: flux-system
spec:
  interval: 10m
  sourceRef:
    kind: GitRepository
    name: hibernator-repo
  path: ./hibernator
  prune: true        # Remove resources if deleted from Git
  wait: true         # Wait for resources to become ready
"#,
    ),
];

#[test]
fn the_seed_manifests_are_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (path, expected) in SEED {
        let actual =
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(&actual, expected, "{path} differs from the seed");
    }
}
