use anyhow::Result;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn all_node_groups_scale_to_zero_keeping_max_and_come_back_exactly() -> Result<()> {
    let h = Harness::start().await?;
    create_eks(
        &h,
        "dev-eks",
        &[
            ("general", (1, 2, 3)),
            ("gpu", (0, 0, 2)),
            ("batch", (2, 4, 8)),
        ],
    )
    .await?;
    let connector = eks_connector("dev-eks");
    let params = json!({"clusterName": "dev-cluster"});

    let ran = h
        .runner("eks", "cluster", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &connector)
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(ran.has("found EKS cluster dev-eks"), "{}", ran.stdout);
    assert!(
        ran.has("taking all 3 managed node group(s) of dev-eks"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("recorded general: was min 1, desired 2, max 3"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.has("node group gpu is already scaled to zero"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.termination
            .starts_with("scaled to zero 2 of 3 node groups (1 already at zero) in "),
        "{}",
        ran.termination
    );
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "general").await?, (0, 0, 3));
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "gpu").await?, (0, 0, 2));
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "batch").await?, (0, 0, 8));
    let recorded = records(&h.controller);
    assert_eq!(
        recorded["nodegroup:general"],
        json!({"minSize": 1, "desiredSize": 2, "maxSize": 3})
    );
    // The savings ledger's sizing: the group's instance type times its desired count.
    let sizing: serde_json::Value =
        serde_json::from_str(&h.controller.sizings()["nodegroup:general"])?;
    assert_eq!(
        sizing,
        json!({"service": "ec2", "instanceType": "t3.medium", "count": 2.0, "region": "us-east-1"})
    );
    assert_eq!(
        recorded["nodegroup:gpu"],
        json!({"minSize": 0, "desiredSize": 0, "maxSize": 2})
    );

    let again = h
        .runner("eks", "cluster", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &connector)
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        again
            .termination
            .starts_with("scaled to zero 0 of 3 node groups (3 already at zero)"),
        "{}",
        again.termination
    );
    assert_eq!(records(&h.controller), recorded);

    let woke = h
        .runner("eks", "cluster", "wakeUp")
        .env("HIBERNATOR_CONNECTOR", &connector)
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        woke.has("general restored: min 1, desired 2, max 3"),
        "{}",
        woke.stdout
    );
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "general").await?, (1, 2, 3));
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "gpu").await?, (0, 0, 2));
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "batch").await?, (2, 4, 8));
    Ok(())
}

#[tokio::test]
async fn listed_node_groups_only_and_missing_ones_or_clusters_are_skipped() -> Result<()> {
    let h = Harness::start().await?;
    create_eks(
        &h,
        "dev-eks",
        &[("general", (1, 2, 3)), ("other", (1, 1, 1))],
    )
    .await?;
    let params =
        json!({"clusterName": "dev-eks", "nodeGroups": [{"name": "general"}, {"name": "gone-ng"}]});
    let ran = h
        .runner("eks", "cluster", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &eks_connector("dev-eks"))
        .param(params.clone())
        .run()
        .await?
        .ok();
    assert!(
        ran.has("warning: node group gone-ng no longer exists; skipped"),
        "{}",
        ran.stdout
    );
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "general").await?, (0, 0, 3));
    assert_eq!(nodegroup_sizes(&h, "dev-eks", "other").await?, (1, 1, 1));

    let missing = h
        .runner("eks", "cluster", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &eks_connector("no-such-eks"))
        .param(params)
        .run()
        .await?
        .ok();
    assert!(
        missing.has("warning: EKS cluster no-such-eks does not exist; nothing to do"),
        "{}",
        missing.stdout
    );
    Ok(())
}

/// `workloads`/`karpenter` on an EKS cluster: the runner verifies the account, describes the
/// cluster with the connector's AWS settings and builds its client from the endpoint and CA.
/// moto's clusters have an endpoint nobody serves, so this proves the path up to the first
/// request to the Kubernetes API (the token itself is checked in unit tests against botocore);
/// nothing is recorded when the cluster cannot be used.
#[tokio::test]
async fn eks_kubernetes_access_describes_the_cluster_and_fails_clearly_before_acting() -> Result<()>
{
    let h = Harness::start().await?;
    create_eks(&h, "apps-eks", &[]).await?;
    let eks = |name: &str| {
        let mut aws = aws_connector();
        aws["eksClusterName"] = json!(name);
        aws.as_object_mut().unwrap().remove("kind");
        json!({"kind": "kubernetes", "eks": aws}).to_string()
    };
    let ran = h
        .runner("workloads", "apps", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &eks("apps-eks"))
        .param(json!({"namespaces": ["default"]}))
        .run()
        .await?
        .failed(1);
    let errors = ran.error_lines();
    assert_eq!(errors.len(), 1, "{}", ran.stdout);
    // Described, configured with the endpoint and CA, and the first request sent: moto's
    // endpoint does not exist.
    assert!(
        errors[0].starts_with("error: failed to reach the Kubernetes API at https://")
            && errors[0].contains(".us-east-1.eks.amazonaws.com/: "),
        "{}",
        ran.stdout
    );
    assert!(h.controller.records().is_empty());

    let ran = h
        .runner("karpenter", "pools", "hibernate")
        .env("HIBERNATOR_CONNECTOR", &eks("no-such-eks"))
        .param(json!({"nodePools": ["default"]}))
        .run()
        .await?
        .failed(1);
    assert_eq!(
        ran.error_lines(),
        vec![
            "error: failed to describe EKS cluster no-such-eks: ResourceNotFoundException: No cluster found for name: no-such-eks."
        ],
        "{}",
        ran.stdout
    );
    assert!(h.controller.records().is_empty());
    Ok(())
}
