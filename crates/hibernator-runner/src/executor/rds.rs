//! `rds`: DB instances and Aurora clusters. Hibernate takes an optional manual snapshot, then
//! stops what is available; wake-up starts what was running.

use hibernator_api::restore::key_prefix;
use hibernator_api::savings::{Service, Sizing};
use std::collections::BTreeMap;

use aws_sdk_rds::Client;
use hibernator_api::Operation;
use hibernator_api::params::RdsParameters;

use super::switch::{self, RunRecord, States, Switchable};
use super::{AwsError, Ctx, Outcome, RunError, Tally, all, summary};
use crate::aws::Aws;
use crate::output::took;
use crate::wait::{self, Probe, Waited};

const INSTANCE_STATES: States = States {
    running: "available",
    stopped: "stopped",
    stopping: "stopping",
    starting: &["starting"],
    settling: &[
        "starting",
        "creating",
        "modifying",
        "backing-up",
        "rebooting",
        "upgrading",
        "maintenance",
        "configuring-enhanced-monitoring",
        "configuring-iam-database-auth",
        "configuring-log-exports",
        "converting-to-vpc",
        "moving-to-vpc",
        "renaming",
        "resetting-master-credentials",
        "storage-optimization",
    ],
    leaving: &["deleting"],
};

const CLUSTER_STATES: States = States {
    running: "available",
    stopped: "stopped",
    stopping: "stopping",
    starting: &["starting"],
    settling: &[
        "starting",
        "creating",
        "modifying",
        "backing-up",
        "backtracking",
        "failing-over",
        "maintenance",
        "migrating",
        "promoting",
        "renaming",
        "resetting-master-credentials",
        "upgrading",
    ],
    leaving: &["deleting"],
};

/// DB instances.
struct Instances<'a> {
    client: &'a Client,
    snapshot_cycle: Option<String>,
    /// Own snapshots kept per instance (`snapshotRetention.keep`).
    retention: Option<u32>,
    /// Sizings seen by the last looks, for the savings ledger.
    sizes: Sizes,
}

/// Aurora clusters.
struct Clusters<'a> {
    client: &'a Client,
    snapshot_cycle: Option<String>,
    /// Own snapshots kept per cluster (`snapshotRetention.keep`).
    retention: Option<u32>,
    /// Sizings seen by the last looks, for the savings ledger.
    sizes: Sizes,
}

type Sizes = std::cell::RefCell<std::collections::BTreeMap<String, Sizing>>;

/// What `DescribeDBInstances` says about one instance.
struct SeenInstance {
    status: String,
    cluster: Option<String>,
    sizing: Sizing,
}

fn region(client: &Client) -> Option<String> {
    client.config().region().map(|r| r.to_string())
}

async fn describe_instance(client: &Client, id: &str) -> Result<Option<SeenInstance>, AwsError> {
    match client
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.db_instances().first().map(|i| SeenInstance {
            status: i.db_instance_status().unwrap_or("unknown").to_string(),
            cluster: i.db_cluster_identifier().map(str::to_string),
            sizing: Sizing {
                service: Some(Service::Rds),
                instance_type: i.db_instance_class().map(str::to_string),
                engine: i.engine().map(str::to_string),
                multi_az: i.multi_az(),
                count: 1.0,
                region: region(client),
                ..Sizing::default()
            },
        })),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
        {
            Ok(None)
        }
        Err(e) => Err(AwsError::new("describe", format!("DB instance {id}"), &e)),
    }
}

/// A cluster's status and sizing (Aurora clusters have no class of their own: their members'
/// count is known, their price not).
async fn describe_cluster(client: &Client, id: &str) -> Result<Option<(String, Sizing)>, AwsError> {
    match client
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.db_clusters().first().map(|c| {
            let sizing = Sizing {
                service: Some(Service::Rds),
                instance_type: c.db_cluster_instance_class().map(str::to_string),
                engine: c.engine().map(str::to_string),
                multi_az: c.multi_az(),
                count: c.db_cluster_members().len().max(1) as f64,
                region: region(client),
                ..Sizing::default()
            };
            (c.status().unwrap_or("unknown").to_string(), sizing)
        })),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
        {
            Ok(None)
        }
        Err(e) => Err(AwsError::new(
            "describe",
            format!("Aurora cluster {id}"),
            &e,
        )),
    }
}

/// A snapshot identifier: `<id>-hibernate-<cycle>` within RDS's rules (letters, digits and
/// single hyphens, at most 255 characters, no trailing hyphen).
pub fn snapshot_id(id: &str, cycle: &str) -> String {
    let raw = format!("{id}-hibernate-{cycle}").to_ascii_lowercase();
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(255);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Creates the snapshots (or finds those an earlier attempt created) and waits until they are
/// available.
async fn snapshots(
    ctx: &Ctx<'_>,
    ids: &[String],
    cycle: &str,
    create: impl AsyncFn(&str, &str) -> Result<bool, AwsError>,
    status: impl AsyncFn(&str) -> Result<Option<String>, AwsError>,
) -> Result<(), RunError> {
    let mut names = Vec::new();
    for id in ids {
        let snapshot = snapshot_id(id, cycle);
        if create(id, &snapshot).await? {
            ctx.reporter
                .info(format!("creating snapshot {snapshot} of {id}"));
        } else {
            ctx.reporter.info(format!(
                "snapshot {snapshot} of {id} exists (from an earlier attempt)"
            ));
        }
        names.push(snapshot);
    }
    let status = &status;
    let futures: Vec<_> = names
        .iter()
        .map(|snapshot| async move {
            let what = format!("snapshot {snapshot} to be available");
            let waited = wait::until(ctx.timing, &what, || async move {
                Ok(match status(snapshot).await? {
                    None => Probe::Gone,
                    Some(s) if s == "available" => Probe::Done(()),
                    Some(s) if s == "failed" || s == "error" => Probe::Gone,
                    Some(s) => Probe::Pending(s),
                })
            })
            .await?;
            match waited {
                Waited::Done { took: t, .. } => {
                    ctx.reporter
                        .info(format!("snapshot {snapshot} created (took {})", took(t)));
                    Ok(())
                }
                Waited::Gone => Err(RunError::Unactionable {
                    verb: "use",
                    resource: format!("snapshot {snapshot}"),
                    status: "failed or gone".into(),
                }),
            }
        })
        .collect();
    all(ctx, "snapshots", futures).await
}

impl Instances<'_> {
    /// The engine the last look saw.
    fn engine(&self, id: &str) -> Option<String> {
        self.sizes.borrow().get(id).and_then(|s| s.engine.clone())
    }
}

impl Clusters<'_> {
    /// The engine the last look saw.
    fn engine(&self, id: &str) -> Option<String> {
        self.sizes.borrow().get(id).and_then(|s| s.engine.clone())
    }
}

impl Switchable for Instances<'_> {
    fn noun(&self) -> &'static str {
        "DB instance"
    }

    fn key_prefix(&self) -> &'static str {
        key_prefix::RDS_INSTANCE
    }

    fn states(&self) -> &'static States {
        &INSTANCE_STATES
    }

    async fn status(&self, id: &str) -> Result<Option<String>, AwsError> {
        Ok(describe_instance(self.client, id).await?.map(|s| {
            self.sizes.borrow_mut().insert(id.to_string(), s.sizing);
            s.status
        }))
    }

    fn sizing(&self, id: &str) -> Option<Sizing> {
        self.sizes.borrow().get(id).cloned()
    }

    async fn stop(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .stop_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("stop", format!("DB instance {id}"), &e))
    }

    async fn start(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .start_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("start", format!("DB instance {id}"), &e))
    }

    async fn before_stop(&self, ctx: &Ctx<'_>, ids: &[String]) -> Result<(), RunError> {
        let Some(cycle) = &self.snapshot_cycle else {
            return Ok(());
        };
        let client = self.client;
        snapshots(
            ctx,
            ids,
            cycle,
            async |id: &str, snapshot: &str| match client
                .create_db_snapshot()
                .db_instance_identifier(id)
                .db_snapshot_identifier(snapshot)
                .set_tags(Some(snapshot_tags(ctx)))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_snapshot_already_exists_fault()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(AwsError::new(
                    "create",
                    format!("snapshot {snapshot} of DB instance {id}"),
                    &e,
                )),
            },
            async |snapshot: &str| match client
                .describe_db_snapshots()
                .db_snapshot_identifier(snapshot)
                .send()
                .await
            {
                Ok(out) => Ok(out
                    .db_snapshots()
                    .first()
                    .map(|s| s.status().unwrap_or("unknown").to_string())),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(AwsError::new(
                    "describe",
                    format!("snapshot {snapshot}"),
                    &e,
                )),
            },
        )
        .await?;
        if let Some(keep) = self.retention {
            prune_snapshots(
                ctx,
                ids,
                keep,
                "DB instance",
                async |id: &str| {
                    let mut pages = client
                        .describe_db_snapshots()
                        .db_instance_identifier(id)
                        .snapshot_type("manual")
                        .into_paginator()
                        .send();
                    let mut out = Vec::new();
                    while let Some(page) = pages.next().await {
                        let page = page.map_err(|e| {
                            AwsError::new("list", format!("snapshots of DB instance {id}"), &e)
                        })?;
                        for s in page.db_snapshots() {
                            out.push(Taken::of(
                                s.db_snapshot_identifier(),
                                s.snapshot_create_time(),
                                s.tag_list(),
                            ));
                        }
                    }
                    Ok(out)
                },
                async |snapshot: &str| {
                    client
                        .delete_db_snapshot()
                        .db_snapshot_identifier(snapshot)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| AwsError::new("delete", format!("snapshot {snapshot}"), &e))
                },
            )
            .await;
        }
        Ok(())
    }
}

impl Switchable for Clusters<'_> {
    fn noun(&self) -> &'static str {
        "Aurora cluster"
    }

    fn key_prefix(&self) -> &'static str {
        key_prefix::RDS_CLUSTER
    }

    fn states(&self) -> &'static States {
        &CLUSTER_STATES
    }

    async fn status(&self, id: &str) -> Result<Option<String>, AwsError> {
        Ok(describe_cluster(self.client, id)
            .await?
            .map(|(status, sizing)| {
                self.sizes.borrow_mut().insert(id.to_string(), sizing);
                status
            }))
    }

    fn sizing(&self, id: &str) -> Option<Sizing> {
        self.sizes.borrow().get(id).cloned()
    }

    async fn stop(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .stop_db_cluster()
            .db_cluster_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("stop", format!("Aurora cluster {id}"), &e))
    }

    async fn start(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .start_db_cluster()
            .db_cluster_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("start", format!("Aurora cluster {id}"), &e))
    }

    async fn before_stop(&self, ctx: &Ctx<'_>, ids: &[String]) -> Result<(), RunError> {
        let Some(cycle) = &self.snapshot_cycle else {
            return Ok(());
        };
        let client = self.client;
        snapshots(
            ctx,
            ids,
            cycle,
            async |id: &str, snapshot: &str| match client
                .create_db_cluster_snapshot()
                .db_cluster_identifier(id)
                .db_cluster_snapshot_identifier(snapshot)
                .set_tags(Some(snapshot_tags(ctx)))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_cluster_snapshot_already_exists_fault()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(AwsError::new(
                    "create",
                    format!("snapshot {snapshot} of Aurora cluster {id}"),
                    &e,
                )),
            },
            async |snapshot: &str| match client
                .describe_db_cluster_snapshots()
                .db_cluster_snapshot_identifier(snapshot)
                .send()
                .await
            {
                Ok(out) => Ok(out
                    .db_cluster_snapshots()
                    .first()
                    .map(|s| s.status().unwrap_or("unknown").to_string())),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_cluster_snapshot_not_found_fault()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(AwsError::new(
                    "describe",
                    format!("snapshot {snapshot}"),
                    &e,
                )),
            },
        )
        .await?;
        if let Some(keep) = self.retention {
            prune_snapshots(
                ctx,
                ids,
                keep,
                "Aurora cluster",
                async |id: &str| {
                    let mut pages = client
                        .describe_db_cluster_snapshots()
                        .db_cluster_identifier(id)
                        .snapshot_type("manual")
                        .into_paginator()
                        .send();
                    let mut out = Vec::new();
                    while let Some(page) = pages.next().await {
                        let page = page.map_err(|e| {
                            AwsError::new("list", format!("snapshots of Aurora cluster {id}"), &e)
                        })?;
                        for s in page.db_cluster_snapshots() {
                            out.push(Taken::of(
                                s.db_cluster_snapshot_identifier(),
                                s.snapshot_create_time(),
                                s.tag_list(),
                            ));
                        }
                    }
                    Ok(out)
                },
                async |snapshot: &str| {
                    client
                        .delete_db_cluster_snapshot()
                        .db_cluster_snapshot_identifier(snapshot)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| AwsError::new("delete", format!("snapshot {snapshot}"), &e))
                },
            )
            .await;
        }
        Ok(())
    }
}

/// Tag keys on the snapshots an `rds` target takes: which plan (`<namespace>/<plan>`), target
/// and cycle took it. Snapshot retention deletes only snapshots whose plan and target tags are
/// this target's.
pub mod snapshot_tag {
    /// `<namespace>/<plan>`.
    pub const PLAN: &str = "hibernator.ardikasaputro.io/plan";
    /// The target's name.
    pub const TARGET: &str = "hibernator.ardikasaputro.io/target";
    /// The cycle.
    pub const CYCLE: &str = "hibernator.ardikasaputro.io/cycle";
}

fn snapshot_tags(ctx: &Ctx<'_>) -> Vec<aws_sdk_rds::types::Tag> {
    let e = ctx.execution;
    [
        (snapshot_tag::PLAN, format!("{}/{}", e.namespace, e.plan)),
        (snapshot_tag::TARGET, e.target.clone()),
        (snapshot_tag::CYCLE, e.cycle_id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
    .collect()
}

/// A manual snapshot of a database as RDS lists it.
struct Taken {
    id: String,
    /// Seconds and nanoseconds since the epoch; snapshots still being created have none.
    created: Option<(i64, u32)>,
    tags: BTreeMap<String, String>,
}

impl Taken {
    fn of(
        id: Option<&str>,
        created: Option<&aws_sdk_rds::primitives::DateTime>,
        tags: &[aws_sdk_rds::types::Tag],
    ) -> Self {
        Self {
            id: id.unwrap_or_default().to_string(),
            created: created.map(|d| (d.secs(), d.subsec_nanos())),
            tags: tags
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
        }
    }
}

/// The snapshots of `taken` this target took (its plan and target tags) beyond the newest
/// `keep`: the ones to delete.
fn beyond_retention<'a>(taken: &'a [Taken], plan: &str, target: &str, keep: u32) -> Vec<&'a Taken> {
    let mut ours: Vec<&Taken> = taken
        .iter()
        .filter(|t| {
            !t.id.is_empty()
                && t.tags.get(snapshot_tag::PLAN).map(String::as_str) == Some(plan)
                && t.tags.get(snapshot_tag::TARGET).map(String::as_str) == Some(target)
        })
        .collect();
    // Newest first; one still being created (no time yet) counts as newest.
    ours.sort_by(|a, b| {
        let key = |t: &Taken| t.created.unwrap_or((i64::MAX, 0));
        key(b).cmp(&key(a)).then_with(|| b.id.cmp(&a.id))
    });
    ours.into_iter().skip(keep as usize).collect()
}

/// Snapshot retention, after this run's snapshots are available: per database, deletes the
/// snapshots this target took beyond the newest `keep`. Housekeeping: a failure is reported
/// and the run goes on (the night's snapshot exists, the database is stopped as planned).
async fn prune_snapshots(
    ctx: &Ctx<'_>,
    ids: &[String],
    keep: u32,
    noun: &str,
    list: impl AsyncFn(&str) -> Result<Vec<Taken>, AwsError>,
    delete: impl AsyncFn(&str) -> Result<(), AwsError>,
) {
    let plan = format!("{}/{}", ctx.execution.namespace, ctx.execution.plan);
    for id in ids {
        let taken = match list(id).await {
            Ok(t) => t,
            Err(e) => {
                ctx.reporter.warn(format!(
                    "snapshot retention skipped for {noun} {id}: {}; older snapshots stay",
                    crate::aws::chain(&e)
                ));
                continue;
            }
        };
        for old in beyond_retention(&taken, &plan, &ctx.execution.target, keep) {
            match delete(&old.id).await {
                Ok(()) => ctx.reporter.info(format!(
                    "deleted snapshot {} of {id} (snapshotRetention keeps the {keep} newest this target took)",
                    old.id
                )),
                Err(e) => ctx.reporter.warn(format!(
                    "could not delete old snapshot {} of {id}: {}; it stays",
                    old.id,
                    crate::aws::chain(&e)
                )),
            }
        }
    }
}

/// Tags match when every selector tag is present; an empty selector value matches any value.
pub fn tags_match<'t>(
    selector: &BTreeMap<String, String>,
    tags: impl IntoIterator<Item = (&'t str, &'t str)>,
) -> bool {
    let tags: BTreeMap<&str, &str> = tags.into_iter().collect();
    selector.iter().all(|(k, v)| {
        tags.get(k.as_str())
            .is_some_and(|actual| v.is_empty() || actual == v)
    })
}

/// Finds the instances and clusters a target covers.
async fn resolve(
    ctx: &Ctx<'_>,
    client: &Client,
    target: &str,
    params: &RdsParameters,
) -> Result<(Vec<String>, Vec<String>, u32), RunError> {
    let mut instances = Vec::new();
    let mut clusters = Vec::new();
    let mut missing = 0;
    let member = |id: &str, cluster: &str| {
        ctx.reporter.info(format!(
            "DB instance {id} belongs to Aurora cluster {cluster}: it stops and starts with the cluster, not on its own; skipped"
        ));
    };
    match &params.selector {
        None => match describe_instance(client, target).await? {
            Some(SeenInstance {
                cluster: Some(cluster),
                ..
            }) => {
                ctx.reporter.info(format!(
                    "DB instance {target} belongs to Aurora cluster {cluster}: taking the cluster"
                ));
                clusters.push(cluster);
            }
            Some(_) => instances.push(target.to_string()),
            None => match describe_cluster(client, target).await? {
                Some(_) => clusters.push(target.to_string()),
                None => {
                    ctx.reporter.warn(format!(
                        "no DB instance or Aurora cluster is named {target}; nothing to do"
                    ));
                    missing += 1;
                }
            },
        },
        Some(selector) if selector.tags.is_some() => {
            let tags = selector.tags.as_ref().expect("checked");
            let all_instances = client
                .describe_db_instances()
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| AwsError::new("list", "DB instances", &e))?;
            for i in &all_instances {
                let id = i.db_instance_identifier().unwrap_or_default();
                let pairs = i
                    .tag_list()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
                if !tags_match(tags, pairs) {
                    continue;
                }
                match i.db_cluster_identifier() {
                    Some(cluster) => member(id, cluster),
                    None => instances.push(id.to_string()),
                }
            }
            let all_clusters = client
                .describe_db_clusters()
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| AwsError::new("list", "Aurora clusters", &e))?;
            for c in &all_clusters {
                let pairs = c
                    .tag_list()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
                if tags_match(tags, pairs) {
                    clusters.push(c.db_cluster_identifier().unwrap_or_default().to_string());
                }
            }
            let shown: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            ctx.reporter.info(format!(
                "tags {} select {} DB instance(s) and {} Aurora cluster(s)",
                shown.join(","),
                instances.len(),
                clusters.len()
            ));
        }
        Some(selector) => {
            for id in selector.instance_ids.iter().flatten() {
                match describe_instance(client, id).await? {
                    Some(SeenInstance {
                        cluster: Some(cluster),
                        ..
                    }) => member(id, &cluster),
                    Some(_) => instances.push(id.clone()),
                    None => {
                        ctx.reporter
                            .warn(format!("DB instance {id} does not exist; skipped"));
                        missing += 1;
                    }
                }
            }
            for id in selector.cluster_ids.iter().flatten() {
                if clusters.contains(id) {
                    continue;
                }
                match describe_cluster(client, id).await? {
                    Some(_) => clusters.push(id.clone()),
                    None => {
                        ctx.reporter
                            .warn(format!("Aurora cluster {id} does not exist; skipped"));
                        missing += 1;
                    }
                }
            }
        }
    }
    clusters.dedup();
    Ok((instances, clusters, missing))
}

/// The instances and clusters whose engine is one of `engines` (DocumentDB and Neptune clusters
/// are clusters of the RDS API, stopped and started like Aurora's).
async fn of_engines(
    ctx: &Ctx<'_>,
    instances: &Instances<'_>,
    clusters: &Clusters<'_>,
    engines: &[String],
    instance_ids: Vec<String>,
    cluster_ids: Vec<String>,
) -> Result<(Vec<String>, Vec<String>), RunError> {
    let wanted = |engine: Option<String>| engine.is_some_and(|e| engines.contains(&e));
    let mut kept_instances = Vec::new();
    for id in instance_ids {
        // A look fills the sizing, which names the engine.
        if instances.status(&id).await?.is_some() && wanted(instances.engine(&id)) {
            kept_instances.push(id);
        }
    }
    let mut kept_clusters = Vec::new();
    for id in cluster_ids {
        if clusters.status(&id).await?.is_some() && wanted(clusters.engine(&id)) {
            kept_clusters.push(id);
        } else {
            ctx.reporter.info(format!(
                "DB cluster {id} is not of engine {}; skipped",
                engines.join(" or ")
            ));
        }
    }
    ctx.reporter.info(format!(
        "engines {} keep {} DB instance(s) and {} cluster(s)",
        engines.join(","),
        kept_instances.len(),
        kept_clusters.len()
    ));
    Ok((kept_instances, kept_clusters))
}

/// The records of the DB instances and of the clusters (wake-up and in-sleep check).
#[allow(clippy::type_complexity)]
async fn fetch_records(
    ctx: &Ctx<'_>,
) -> Result<(Vec<(String, RunRecord)>, Vec<(String, RunRecord)>), RunError> {
    let records = ctx.fetch().await?;
    ctx.ignore_other_records(
        &records,
        &[key_prefix::RDS_INSTANCE, key_prefix::RDS_CLUSTER],
    );
    let instance_records = ctx.records_of(&records, key_prefix::RDS_INSTANCE)?;
    let cluster_records = ctx.records_of(&records, key_prefix::RDS_CLUSTER)?;
    ctx.add_total(instance_records.len() + cluster_records.len());
    Ok((instance_records, cluster_records))
}

/// Runs an `rds` target.
pub async fn run(
    ctx: &Ctx<'_>,
    aws: &Aws,
    target: &str,
    params: &RdsParameters,
) -> Result<Outcome, RunError> {
    let client = Client::new(&aws.config);
    // An in-sleep check that puts a database back to sleep takes no second snapshot: the
    // night's snapshot was taken before the first stop.
    let snapshot_cycle = (params.snapshot_before_stop.unwrap_or(false)
        && ctx.execution.enforce.is_none())
    .then(|| ctx.execution.cycle_id.clone());
    let retention = params.snapshot_retention.as_ref().map(|r| r.keep);
    let instances = Instances {
        client: &client,
        snapshot_cycle: snapshot_cycle.clone(),
        retention,
        sizes: Sizes::default(),
    };
    let clusters = Clusters {
        client: &client,
        snapshot_cycle,
        retention,
        sizes: Sizes::default(),
    };
    if let Some(mode) = ctx.execution.enforce {
        let (instance_records, cluster_records) = fetch_records(ctx).await?;
        let c = switch::enforce(ctx, &clusters, &cluster_records, mode).await?;
        let i = switch::enforce(ctx, &instances, &instance_records, mode).await?;
        let parts = [("DB instance", i), ("Aurora cluster", c)];
        return Ok(Outcome {
            summary: super::check_summary(mode, &parts),
            changed: i.changed + c.changed,
        });
    }
    let (instance_tally, cluster_tally) = match ctx.execution.operation {
        Operation::Hibernate => {
            let (instance_ids, cluster_ids, missing) =
                resolve(ctx, &client, target, params).await?;
            let engines = params.selector.as_ref().and_then(|s| s.engines.as_deref());
            let (instance_ids, cluster_ids) = match engines {
                Some(engines) => {
                    of_engines(
                        ctx,
                        &instances,
                        &clusters,
                        engines,
                        instance_ids,
                        cluster_ids,
                    )
                    .await?
                }
                None => (instance_ids, cluster_ids),
            };
            ctx.add_total(instance_ids.len() + cluster_ids.len());
            let mut i = switch::hibernate(ctx, &instances, &instance_ids).await?;
            let c = switch::hibernate(ctx, &clusters, &cluster_ids).await?;
            i.missing += missing;
            i.total += missing;
            (i, c)
        }
        Operation::WakeUp => {
            let (instance_records, cluster_records) = fetch_records(ctx).await?;
            // Clusters first: their member instances come up with them.
            let c = switch::wake(ctx, &clusters, &cluster_records).await?;
            let i = switch::wake(ctx, &instances, &instance_records).await?;
            (i, c)
        }
    };
    let changed = instance_tally.changed + cluster_tally.changed;
    let parts = [
        ("DB instance", instance_tally),
        ("Aurora cluster", cluster_tally),
    ];
    let summary = match ctx.execution.operation {
        Operation::Hibernate => summary("stopped", "already stopped", "left alone", &parts),
        Operation::WakeUp => wake_summary(&parts),
    };
    Ok(Outcome { summary, changed })
}

/// The wake-up summary, or `nothing recorded` when there was nothing to wake.
pub fn wake_summary(parts: &[(&str, Tally)]) -> String {
    if parts.iter().all(|(_, t)| t.total == 0) {
        return "nothing to wake up: no restore data recorded for this target".into();
    }
    summary(
        "started",
        "already running",
        "left as they were before hibernation",
        parts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_deletes_only_the_targets_own_snapshots_beyond_the_newest() {
        let taken = |id: &str, secs: Option<i64>, plan: &str, target: &str| Taken {
            id: id.into(),
            created: secs.map(|s| (s, 0)),
            tags: [
                (snapshot_tag::PLAN.to_string(), plan.to_string()),
                (snapshot_tag::TARGET.to_string(), target.to_string()),
            ]
            .into(),
        };
        let all = [
            taken("n1", Some(100), "ns/p", "db"),
            taken("n3", Some(300), "ns/p", "db"),
            taken("n2", Some(200), "ns/p", "db"),
            taken("creating", None, "ns/p", "db"),
            taken("other-plan", Some(1), "ns/q", "db"),
            taken("other-target", Some(1), "ns/p", "reports"),
            Taken {
                id: "users".into(),
                created: Some((0, 0)),
                tags: BTreeMap::new(),
            },
        ];
        let ids = |v: Vec<&Taken>| v.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(beyond_retention(&all, "ns/p", "db", 2)), ["n2", "n1"]);
        assert_eq!(
            ids(beyond_retention(&all, "ns/p", "db", 4)),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(beyond_retention(&all, "ns/p", "db", 1)),
            ["n3", "n2", "n1"]
        );
    }

    #[test]
    fn snapshot_ids_follow_rds_rules() {
        assert_eq!(
            snapshot_id("prod-db", "2026-11-26T20:00Z"),
            "prod-db-hibernate-2026-11-26t20-00z"
        );
        assert_eq!(snapshot_id("db", "--a__b--"), "db-hibernate-a-b");
        let long = snapshot_id(&"d".repeat(250), "cycle");
        assert!(long.len() <= 255 && !long.ends_with('-'));
    }

    #[test]
    fn tag_selectors_match_all_tags_and_empty_values_match_any() {
        let selector: BTreeMap<String, String> =
            [("env".into(), "dev".into()), ("team".into(), String::new())].into();
        assert!(tags_match(&selector, [("env", "dev"), ("team", "x")]));
        assert!(!tags_match(&selector, [("env", "dev")]));
        assert!(!tags_match(&selector, [("env", "prod"), ("team", "x")]));
    }
}
