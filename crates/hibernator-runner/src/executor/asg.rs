//! `asg`: EC2 auto-scaling groups. Hibernate records min/desired/max and sets min = desired =
//! 0; wake-up restores them and waits for the instances to be in service.

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter};
use hibernator_api::params::AsgParameters;
use hibernator_api::restore::key_prefix;

use super::scale::{self, Condition, Look, Scalable, Selection, Sizes};
use super::{AwsError, Ctx, Outcome, RunError};
use crate::aws::Aws;

struct Groups<'a> {
    client: &'a Client,
}

fn look_at(group: &AutoScalingGroup) -> Look {
    let sizes = Sizes {
        min_size: group.min_size().unwrap_or(0),
        desired_size: group.desired_capacity().unwrap_or(0),
        max_size: group.max_size().unwrap_or(0),
    };
    let instances = group.instances();
    let in_service = instances
        .iter()
        .filter(|i| {
            i.lifecycle_state()
                .is_some_and(|s| s.as_str() == "InService")
        })
        .count();
    let leaving = group
        .status()
        .is_some_and(|s| s.to_ascii_lowercase().contains("delete"));
    // The type most of its instances run (ties: the first in name order).
    let mut types: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in instances.iter().filter_map(|i| i.instance_type()) {
        *types.entry(t).or_default() += 1;
    }
    let instance_type = types
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(t, _)| t.to_string());
    Look {
        sizes,
        instance_type,
        state: format!("{} of {} instances in service", in_service, instances.len()),
        condition: if leaving {
            Condition::Leaving
        } else {
            Condition::Ready
        },
        steady: in_service == instances.len() && in_service as i32 == sizes.desired_size,
    }
}

impl Scalable for Groups<'_> {
    fn noun(&self) -> &'static str {
        "auto-scaling group"
    }

    fn key_prefix(&self) -> &'static str {
        key_prefix::ASG
    }

    type Capacity = Sizes;

    fn sizing(&self, look: &Look) -> Option<hibernator_api::savings::Sizing> {
        let region = self.client.config().region().map(|r| r.to_string());
        Some(scale::ec2_sizing(look, region))
    }

    async fn look(&self, name: &str) -> Result<Option<Look>, AwsError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| AwsError::new("describe", format!("auto-scaling group {name}"), &e))?;
        Ok(out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .map(look_at))
    }

    async fn resize(&self, name: &str, sizes: Sizes) -> Result<(), AwsError> {
        self.client
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(sizes.min_size)
            .desired_capacity(sizes.desired_size)
            .max_size(sizes.max_size)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("resize", format!("auto-scaling group {name}"), &e))
    }
}

async fn resolve(
    ctx: &Ctx<'_>,
    client: &Client,
    params: &AsgParameters,
) -> Result<(Vec<String>, u32), RunError> {
    let mut request = client.describe_auto_scaling_groups();
    if let Some(names) = &params.selector.names {
        request = request.set_auto_scaling_group_names(Some(names.clone()));
    }
    for (key, value) in params.selector.tags.iter().flatten() {
        request = request.filters(if value.is_empty() {
            Filter::builder().name("tag-key").values(key).build()
        } else {
            Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build()
        });
    }
    let groups = request
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::new("list", "auto-scaling groups", &e))?;
    let found: Vec<String> = groups
        .iter()
        .filter_map(|g| g.auto_scaling_group_name().map(str::to_string))
        .collect();
    let mut missing = 0;
    match &params.selector.names {
        Some(names) => {
            for name in names {
                if !found.contains(name) {
                    ctx.reporter
                        .warn(format!("auto-scaling group {name} does not exist; skipped"));
                    missing += 1;
                }
            }
            // Keep the order the target lists them in.
            let ordered = names
                .iter()
                .filter(|n| found.contains(n))
                .cloned()
                .collect();
            Ok((ordered, missing))
        }
        None => {
            ctx.reporter
                .info(format!("tags select {} auto-scaling group(s)", found.len()));
            Ok((found, missing))
        }
    }
}

/// Runs an `asg` target.
pub async fn run(ctx: &Ctx<'_>, aws: &Aws, params: &AsgParameters) -> Result<Outcome, RunError> {
    let client = Client::new(&aws.config);
    let groups = Groups { client: &client };
    scale::run(
        ctx,
        &groups,
        async || {
            let (names, missing) = resolve(ctx, &client, params).await?;
            Ok(Selection::Chosen { names, missing })
        },
        async || scale::records(ctx, key_prefix::ASG).await,
    )
    .await
}
