//! `ecs`: services of one ECS cluster. Hibernate records each service's desired count and, when
//! Application Auto Scaling manages it, the scalable target's min/max capacity; it then sets
//! min = max = 0 (so auto scaling cannot start tasks at night) and the desired count to 0, and
//! waits until no task of the service runs. Wake-up restores the bounds and the desired count
//! exactly and waits until the service is steady (one deployment, every desired task running).
//!
//! A service is looked at with two calls (ECS `DescribeServices`, Application Auto Scaling
//! `DescribeScalableTargets`); the [`scale`] engine does the rest, as for node groups and
//! auto-scaling groups.

use std::fmt;

use aws_sdk_applicationautoscaling::Client as ScalingClient;
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{Service, ServiceField};
use hibernator_api::params::EcsParameters;
use hibernator_api::restore::key_prefix;
use serde::{Deserialize, Serialize};

use super::scale::{self, Capacity, Condition, Look, Scalable, Selection};
use super::{AwsError, Ctx, Outcome, RunError};
use crate::aws::Aws;

/// `DescribeServices` takes at most this many services per call.
const DESCRIBE_BATCH: usize = 10;

/// The record of an ECS service: `{"desiredCount":2,"scaling":{"minCapacity":1,"maxCapacity":4}}`
/// (`scaling` absent when no Application Auto Scaling target manages the service).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCapacity {
    /// The service's desired task count.
    pub desired_count: i32,
    /// Its scalable target's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Bounds>,
}

/// Min and max capacity of an Application Auto Scaling target.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    /// Minimum capacity.
    pub min_capacity: i32,
    /// Maximum capacity.
    pub max_capacity: i32,
}

impl Capacity for ServiceCapacity {
    fn asleep(self) -> Self {
        Self {
            desired_count: 0,
            scaling: self.scaling.map(|_| Bounds {
                min_capacity: 0,
                max_capacity: 0,
            }),
        }
    }

    fn is_asleep(&self) -> bool {
        self.desired_count == 0
    }

    /// Bounds found on a service recorded without auto scaling (someone added a scalable target
    /// while it slept) are the user's: only the desired count has to match.
    fn reaches(&self, target: &Self) -> bool {
        self.desired_count == target.desired_count
            && (target.scaling.is_none() || self.scaling == target.scaling)
    }
}

impl fmt::Display for ServiceCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "desired {}", self.desired_count)?;
        if let Some(b) = self.scaling {
            write!(
                f,
                ", auto scaling min {}, max {}",
                b.min_capacity, b.max_capacity
            )?;
        }
        Ok(())
    }
}

/// The name of a service given by name or ARN (`arn:aws:ecs:...:service/<cluster>/<name>`).
fn service_name(service: &str) -> &str {
    if service.starts_with("arn:") {
        service.rsplit_once('/').map_or(service, |(_, name)| name)
    } else {
        service
    }
}

struct Services<'a> {
    ecs: &'a Client,
    scaling: &'a ScalingClient,
    /// The cluster as the target names it (name or ARN), for the API calls.
    cluster: &'a str,
    /// Its name, for record keys and messages.
    cluster_name: &'a str,
}

impl Services<'_> {
    /// The service of a name the engine handles (`<cluster>/<service>`, as record keys
    /// carry it after `ecs:`).
    fn service<'n>(&self, keyed: &'n str) -> &'n str {
        keyed
            .strip_prefix(self.cluster_name)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(keyed)
    }

    fn keyed(&self, service: &str) -> String {
        format!("{}/{service}", self.cluster_name)
    }

    fn resource_id(&self, name: &str) -> String {
        format!("service/{}/{name}", self.cluster_name)
    }

    fn label(&self, name: &str) -> String {
        format!("ECS service {name} of cluster {}", self.cluster_name)
    }

    /// Describes up to [`DESCRIBE_BATCH`] services; `None` when the cluster does not exist.
    async fn describe(
        &self,
        names: &[String],
        tags: bool,
    ) -> Result<Option<Vec<Service>>, AwsError> {
        let mut request = self
            .ecs
            .describe_services()
            .cluster(self.cluster)
            .set_services(Some(names.to_vec()));
        if tags {
            request = request.include(ServiceField::Tags);
        }
        match request.send().await {
            Ok(out) => Ok(Some(out.services().to_vec())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_cluster_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(AwsError::new(
                "describe",
                format!("ECS services of cluster {}", self.cluster_name),
                &e,
            )),
        }
    }

    async fn bounds(&self, name: &str) -> Result<Option<Bounds>, AwsError> {
        let out = self
            .scaling
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_ids(self.resource_id(name))
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await
            .map_err(|e| {
                AwsError::new(
                    "describe",
                    format!("the auto-scaling target of {}", self.label(name)),
                    &e,
                )
            })?;
        Ok(out.scalable_targets().first().map(|t| Bounds {
            min_capacity: t.min_capacity(),
            max_capacity: t.max_capacity(),
        }))
    }
}

/// Active services are resizable; draining or inactive ones (deleted) count as gone.
fn is_active(service: &Service) -> bool {
    service.status() == Some("ACTIVE")
}

impl Scalable for Services<'_> {
    type Capacity = ServiceCapacity;

    /// Names are `<cluster>/<service>`: `ECS service web/api`.
    fn noun(&self) -> &'static str {
        "ECS service"
    }

    fn key_prefix(&self) -> &'static str {
        key_prefix::ECS
    }

    // Fargate and ECS-on-EC2 prices are not in the savings price list.
    fn sizing(&self, _look: &Look<ServiceCapacity>) -> Option<hibernator_api::savings::Sizing> {
        None
    }

    async fn look(&self, keyed: &str) -> Result<Option<Look<ServiceCapacity>>, AwsError> {
        let name = self.service(keyed);
        let Some(services) = self.describe(&[name.to_string()], false).await? else {
            return Ok(None);
        };
        let Some(service) = services.iter().find(|s| s.service_name() == Some(name)) else {
            return Ok(None);
        };
        let scaling = self.bounds(name).await?;
        let deployments = service.deployments().len();
        let (desired, running, pending) = (
            service.desired_count(),
            service.running_count(),
            service.pending_count(),
        );
        Ok(Some(Look {
            sizes: ServiceCapacity {
                desired_count: desired,
                scaling,
            },
            instance_type: None,
            state: format!(
                "{} task(s) running, {pending} pending, {deployments} deployment(s)",
                running
            ),
            condition: if is_active(service) {
                Condition::Ready
            } else {
                Condition::Leaving
            },
            // What AWS's own "services stable" waiter asks: one deployment, and the desired
            // number of tasks running.
            steady: deployments <= 1 && running == desired && pending == 0,
        }))
    }

    async fn resize(&self, keyed: &str, sizes: ServiceCapacity) -> Result<(), AwsError> {
        let name = self.service(keyed);
        // Bounds first: asleep, auto scaling must not start tasks the desired count just
        // stopped; awake, the restored desired count lies within the restored bounds.
        if let Some(b) = sizes.scaling {
            self.scaling
                .register_scalable_target()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(self.resource_id(name))
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .min_capacity(b.min_capacity)
                .max_capacity(b.max_capacity)
                .send()
                .await
                .map_err(|e| {
                    AwsError::new(
                        "resize",
                        format!("the auto-scaling target of {}", self.label(name)),
                        &e,
                    )
                })?;
        }
        self.ecs
            .update_service()
            .cluster(self.cluster)
            .service(name)
            .desired_count(sizes.desired_count)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("resize", self.label(name), &e))
    }
}

/// Whether `service` carries every tag of `wanted` (an empty value matches any value).
fn has_tags(service: &Service, wanted: &std::collections::BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(key, value)| {
        service.tags().iter().any(|t| {
            t.key() == Some(key.as_str()) && (value.is_empty() || t.value() == Some(value.as_str()))
        })
    })
}

/// The services the target selects, in the order it lists them, and how many it names that do
/// not exist.
async fn resolve(
    ctx: &Ctx<'_>,
    services: &Services<'_>,
    params: &EcsParameters,
) -> Result<(Vec<String>, u32), RunError> {
    match (&params.selector.services, &params.selector.tags) {
        (Some(listed), _) => {
            let names: Vec<String> = listed.iter().map(|s| service_name(s).to_string()).collect();
            let mut found = Vec::new();
            for batch in names.chunks(DESCRIBE_BATCH) {
                let Some(described) = services.describe(batch, false).await? else {
                    ctx.reporter.warn(format!(
                        "ECS cluster {} does not exist; its {} service(s) skipped",
                        services.cluster_name,
                        names.len()
                    ));
                    return Ok((vec![], names.len() as u32));
                };
                found.extend(
                    described
                        .iter()
                        .filter(|s| is_active(s))
                        .filter_map(|s| s.service_name().map(str::to_string)),
                );
            }
            let mut missing = 0;
            for name in &names {
                if !found.contains(name) {
                    ctx.reporter
                        .warn(format!("{} does not exist; skipped", services.label(name)));
                    missing += 1;
                }
            }
            Ok((
                names
                    .iter()
                    .filter(|n| found.contains(n))
                    .map(|n| services.keyed(n))
                    .collect(),
                missing,
            ))
        }
        (None, tags) => {
            let wanted = tags.clone().unwrap_or_default();
            let arns: Vec<String> = match services
                .ecs
                .list_services()
                .cluster(services.cluster)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
            {
                Ok(arns) => arns,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_cluster_not_found_exception()) =>
                {
                    ctx.reporter.warn(format!(
                        "ECS cluster {} does not exist; nothing selected",
                        services.cluster_name
                    ));
                    return Ok((vec![], 0));
                }
                Err(e) => {
                    return Err(AwsError::new(
                        "list",
                        format!("ECS services of cluster {}", services.cluster_name),
                        &e,
                    )
                    .into());
                }
            };
            let names: Vec<String> = arns.iter().map(|a| service_name(a).to_string()).collect();
            let mut chosen = Vec::new();
            for batch in names.chunks(DESCRIBE_BATCH) {
                for service in services.describe(batch, true).await?.unwrap_or_default() {
                    if is_active(&service)
                        && has_tags(&service, &wanted)
                        && let Some(name) = service.service_name()
                    {
                        chosen.push(services.keyed(name));
                    }
                }
            }
            chosen.sort();
            ctx.reporter
                .info(format!("tags select {} ECS service(s)", chosen.len()));
            Ok((chosen, 0))
        }
    }
}

/// The records of the services (wake-up and in-sleep check), named `<cluster>/<service>`.
/// Records of another cluster (the target's cluster was changed while it slept) cannot be
/// restored through this target: they are reported and kept.
async fn records(
    ctx: &Ctx<'_>,
    cluster_name: &str,
) -> Result<Vec<(String, ServiceCapacity)>, RunError> {
    let all: Vec<(String, ServiceCapacity)> = scale::records(ctx, key_prefix::ECS).await?;
    let mut out = Vec::new();
    for (id, record) in all {
        match id.split_once('/') {
            Some((cluster, _)) if cluster == cluster_name => out.push((id, record)),
            _ => ctx.reporter.warn(format!(
                "record ecs:{id} is not of cluster {cluster_name}; left as it is"
            )),
        }
    }
    Ok(out)
}

/// Runs an `ecs` target.
pub async fn run(ctx: &Ctx<'_>, aws: &Aws, params: &EcsParameters) -> Result<Outcome, RunError> {
    let ecs = Client::new(&aws.config);
    let scaling = ScalingClient::new(&aws.config);
    let services = Services {
        ecs: &ecs,
        scaling: &scaling,
        cluster: &params.cluster,
        cluster_name: params.cluster_name(),
    };
    scale::run(
        ctx,
        &services,
        async || {
            let (names, missing) = resolve(ctx, &services, params).await?;
            Ok(Selection::Chosen { names, missing })
        },
        async || records(ctx, params.cluster_name()).await,
    )
    .await
}
