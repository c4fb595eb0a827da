//! `ec2`: EC2 instances chosen by id or tags. Hibernate stops running instances; wake-up
//! starts those that were running. Instances of an auto-scaling group or of Karpenter are
//! never touched (their owners would replace them).

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use hibernator_api::Operation;
use hibernator_api::params::Ec2Parameters;
use hibernator_api::restore::key_prefix;

use super::rds::wake_summary;
use super::switch::{self, RunRecord, States, Switchable};
use super::{AwsError, Ctx, Outcome, RunError, summary};
use crate::aws::Aws;

/// Tag set on instances launched by an auto-scaling group (and so by EKS node groups).
pub const ASG_TAG: &str = "aws:autoscaling:groupName";
/// Tag set on instances launched by Karpenter.
pub const KARPENTER_TAG: &str = "karpenter.sh/nodepool";

const STATES: States = States {
    running: "running",
    stopped: "stopped",
    stopping: "stopping",
    starting: &["pending"],
    settling: &["pending"],
    leaving: &["shutting-down", "terminated"],
};

struct Instances<'a> {
    client: &'a Client,
    /// Instance types seen by the last looks, for the savings ledger.
    types: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
    /// `hibernate: true`: stop with `Hibernate=true` the instances that have hibernation
    /// enabled.
    hibernate: bool,
    /// Instances whose last look said hibernation is enabled (`HibernationOptions.Configured`).
    hibernation_enabled: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl Instances<'_> {
    fn hibernates(&self, id: &str) -> bool {
        self.hibernate && self.hibernation_enabled.borrow().contains(id)
    }
}

impl Switchable for Instances<'_> {
    fn noun(&self) -> &'static str {
        "EC2 instance"
    }

    fn key_prefix(&self) -> &'static str {
        key_prefix::EC2
    }

    fn states(&self) -> &'static States {
        &STATES
    }

    async fn status(&self, id: &str) -> Result<Option<String>, AwsError> {
        // A filter, unlike InstanceIds, does not fail for an id that no longer exists.
        let out = self
            .client
            .describe_instances()
            .filters(Filter::builder().name("instance-id").values(id).build())
            .send()
            .await
            .map_err(|e| AwsError::new("describe", format!("EC2 instance {id}"), &e))?;
        let found = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id));
        if let Some(t) = found.and_then(|i| i.instance_type()) {
            self.types
                .borrow_mut()
                .insert(id.to_string(), t.as_str().to_string());
        }
        let enabled = found
            .and_then(|i| i.hibernation_options())
            .and_then(|h| h.configured())
            .unwrap_or(false);
        let mut set = self.hibernation_enabled.borrow_mut();
        if enabled {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
        Ok(found
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string()))
    }

    fn sizing(&self, id: &str) -> Option<hibernator_api::savings::Sizing> {
        Some(hibernator_api::savings::Sizing {
            service: Some(hibernator_api::savings::Service::Ec2),
            instance_type: Some(self.types.borrow().get(id)?.clone()),
            region: self.client.config().region().map(|r| r.to_string()),
            count: 1.0,
            ..Default::default()
        })
    }

    async fn stop(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .stop_instances()
            .instance_ids(id)
            .set_hibernate(self.hibernates(id).then_some(true))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("stop", format!("EC2 instance {id}"), &e))
    }

    async fn start(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("start", format!("EC2 instance {id}"), &e))
    }

    async fn before_stop(&self, ctx: &Ctx<'_>, ids: &[String]) -> Result<(), RunError> {
        if !self.hibernate {
            return Ok(());
        }
        for id in ids {
            if self.hibernates(id) {
                ctx.reporter.info(format!(
                    "EC2 instance {id} has hibernation enabled: hibernating it (its memory is kept on the root volume)"
                ));
            } else {
                ctx.reporter.warn(format!(
                    "EC2 instance {id} does not have hibernation enabled (it is set at launch): stopping it as usual, its memory is not kept"
                ));
            }
        }
        Ok(())
    }
}

async fn resolve(
    ctx: &Ctx<'_>,
    client: &Client,
    params: &Ec2Parameters,
) -> Result<(Vec<String>, u32), RunError> {
    let mut request = client.describe_instances();
    if let Some(ids) = &params.selector.instance_ids {
        request = request.filters(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(ids.clone()))
                .build(),
        );
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
    let reservations = request
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::new("list", "EC2 instances", &e))?;
    let mut chosen = Vec::new();
    let mut seen = Vec::new();
    for instance in reservations.iter().flat_map(|r| r.instances()) {
        let id = instance.instance_id().unwrap_or_default().to_string();
        seen.push(id.clone());
        let state = instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str())
            .unwrap_or("unknown");
        if STATES.leaving.contains(&state) {
            ctx.reporter
                .info(format!("EC2 instance {id} is {state}; skipped"));
            continue;
        }
        let tag = |key: &str| {
            instance
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        if let Some(group) = tag(ASG_TAG) {
            ctx.reporter.info(format!(
                "EC2 instance {id} belongs to auto-scaling group {group}; skipped (an asg target scales the group)"
            ));
            continue;
        }
        if let Some(pool) = tag(KARPENTER_TAG) {
            ctx.reporter.info(format!(
                "EC2 instance {id} belongs to Karpenter NodePool {pool}; skipped (a karpenter target handles it)"
            ));
            continue;
        }
        chosen.push(id);
    }
    let mut missing = 0;
    match &params.selector.instance_ids {
        Some(ids) => {
            for id in ids {
                if !seen.contains(id) {
                    ctx.reporter
                        .warn(format!("EC2 instance {id} does not exist; skipped"));
                    missing += 1;
                }
            }
            let ordered = ids.iter().filter(|i| chosen.contains(i)).cloned().collect();
            Ok((ordered, missing))
        }
        None => {
            ctx.reporter
                .info(format!("tags select {} EC2 instance(s)", chosen.len()));
            Ok((chosen, missing))
        }
    }
}

/// The records of the instances (wake-up and in-sleep check).
async fn fetch_records(ctx: &Ctx<'_>) -> Result<Vec<(String, RunRecord)>, RunError> {
    let records = ctx.fetch().await?;
    ctx.ignore_other_records(&records, &[key_prefix::EC2]);
    let records: Vec<(String, RunRecord)> = ctx.records_of(&records, key_prefix::EC2)?;
    ctx.add_total(records.len());
    Ok(records)
}

/// Runs an `ec2` target.
pub async fn run(ctx: &Ctx<'_>, aws: &Aws, params: &Ec2Parameters) -> Result<Outcome, RunError> {
    let client = Client::new(&aws.config);
    let instances = Instances {
        client: &client,
        types: Default::default(),
        hibernate: params.hibernate.unwrap_or(false),
        hibernation_enabled: Default::default(),
    };
    if let Some(mode) = ctx.execution.enforce {
        let records = fetch_records(ctx).await?;
        let tally = switch::enforce(ctx, &instances, &records, mode).await?;
        return Ok(Outcome {
            summary: super::check_summary(mode, &[("EC2 instance", tally)]),
            changed: tally.changed,
        });
    }
    match ctx.execution.operation {
        Operation::Hibernate => {
            let (ids, missing) = resolve(ctx, &client, params).await?;
            ctx.add_total(ids.len());
            let mut tally = switch::hibernate(ctx, &instances, &ids).await?;
            tally.missing += missing;
            tally.total += missing;
            Ok(Outcome {
                summary: summary(
                    "stopped",
                    "already stopped",
                    "left alone",
                    &[("EC2 instance", tally)],
                ),
                changed: tally.changed,
            })
        }
        Operation::WakeUp => {
            let records = fetch_records(ctx).await?;
            let tally = switch::wake(ctx, &instances, &records).await?;
            Ok(Outcome {
                summary: wake_summary(&[("EC2 instance", tally)]),
                changed: tally.changed,
            })
        }
    }
}
