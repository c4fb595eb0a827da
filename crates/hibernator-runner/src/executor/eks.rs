//! `eks`: managed node groups of one EKS cluster. Hibernate records min/desired/max and sets
//! min = desired = 0 (max is kept: AWS rejects a `maxSize` of 0); wake-up restores them.

use aws_sdk_eks::Client;
use aws_sdk_eks::types::NodegroupScalingConfig;
use hibernator_api::params::EksParameters;
use hibernator_api::restore::key_prefix;

use super::scale::{self, Condition, Look, Scalable, Selection, Sizes};
use super::{AwsError, Ctx, Outcome, RunError};
use crate::aws::Aws;

struct NodeGroups<'a> {
    client: &'a Client,
    cluster: &'a str,
}

impl Scalable for NodeGroups<'_> {
    fn noun(&self) -> &'static str {
        "node group"
    }

    fn key_prefix(&self) -> &'static str {
        key_prefix::NODE_GROUP
    }

    type Capacity = Sizes;

    fn sizing(&self, look: &Look) -> Option<hibernator_api::savings::Sizing> {
        let region = self.client.config().region().map(|r| r.to_string());
        Some(scale::ec2_sizing(look, region))
    }

    async fn look(&self, name: &str) -> Result<Option<Look>, AwsError> {
        let out = match self
            .client
            .describe_nodegroup()
            .cluster_name(self.cluster)
            .nodegroup_name(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(AwsError::new(
                    "describe",
                    format!("node group {name} of EKS cluster {}", self.cluster),
                    &e,
                ));
            }
        };
        let Some(group) = out.nodegroup() else {
            return Ok(None);
        };
        let state = group
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "UNKNOWN".into());
        let scaling = group.scaling_config();
        let sizes = Sizes {
            min_size: scaling.and_then(|s| s.min_size()).unwrap_or(0),
            desired_size: scaling.and_then(|s| s.desired_size()).unwrap_or(0),
            max_size: scaling.and_then(|s| s.max_size()).unwrap_or(0),
        };
        let condition = match state.as_str() {
            "ACTIVE" | "DEGRADED" => Condition::Ready,
            "CREATING" | "UPDATING" => Condition::Busy,
            "DELETING" => Condition::Leaving,
            _ => Condition::Broken,
        };
        Ok(Some(Look {
            sizes,
            instance_type: group.instance_types().first().cloned(),
            // An update is finished when the group is ACTIVE again.
            steady: condition == Condition::Ready,
            state,
            condition,
        }))
    }

    async fn resize(&self, name: &str, sizes: Sizes) -> Result<(), AwsError> {
        self.client
            .update_nodegroup_config()
            .cluster_name(self.cluster)
            .nodegroup_name(name)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(sizes.min_size)
                    .desired_size(sizes.desired_size)
                    .max_size(sizes.max_size)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                AwsError::new(
                    "resize",
                    format!("node group {name} of EKS cluster {}", self.cluster),
                    &e,
                )
            })
    }
}

/// The node groups a hibernation takes on: those listed, or all of the cluster.
async fn select(
    ctx: &Ctx<'_>,
    client: &Client,
    cluster: &str,
    params: &EksParameters,
) -> Result<Selection, RunError> {
    match client.describe_cluster().name(cluster).send().await {
        Ok(out) => {
            let status = out
                .cluster()
                .and_then(|c| c.status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into());
            ctx.reporter
                .info(format!("found EKS cluster {cluster} ({status})"));
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            ctx.reporter.warn(format!(
                "EKS cluster {cluster} does not exist; nothing to do"
            ));
            return Ok(Selection::Done(Outcome {
                summary: format!("nothing to do: EKS cluster {cluster} does not exist"),
                changed: 0,
            }));
        }
        Err(e) => {
            return Err(AwsError::new("describe", format!("EKS cluster {cluster}"), &e).into());
        }
    }
    let names: Vec<String> = match params.node_groups.as_deref() {
        Some(list) if !list.is_empty() => list.iter().map(|n| n.name.clone()).collect(),
        _ => {
            let all = client
                .list_nodegroups()
                .cluster_name(cluster)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| {
                    AwsError::new("list", format!("node groups of EKS cluster {cluster}"), &e)
                })?;
            ctx.reporter.info(format!(
                "no node groups listed: taking all {} managed node group(s) of {cluster}",
                all.len()
            ));
            all
        }
    };
    Ok(Selection::Chosen { names, missing: 0 })
}

/// Runs an `eks` target on the cluster the controller resolved (`eksClusterName`).
pub async fn run(
    ctx: &Ctx<'_>,
    aws: &Aws,
    cluster: &str,
    params: &EksParameters,
) -> Result<Outcome, RunError> {
    let client = Client::new(&aws.config);
    let groups = NodeGroups {
        client: &client,
        cluster,
    };
    scale::run(
        ctx,
        &groups,
        async || select(ctx, &client, cluster, params).await,
        async || scale::records(ctx, key_prefix::NODE_GROUP).await,
    )
    .await
}
