//! The test harness: a moto server per test, the in-memory controller, and the real runner
//! binary run as a process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::Credentials;
use hibernator_proto::testing::FakeController;
use moto_server::MotoServer;
use serde_json::{Value, json};

/// Values that must never appear in any output.
pub const TOKEN: &str = "tok-SECRET-7f3a9c";
pub const ACCESS_KEY: &str = "AKIASECRETKEY7F3A9C";
pub const SECRET_KEY: &str = "secret-SECRET-key-7f3a9c";
pub const CYCLE: &str = "20261126-2000";
pub const REGION: &str = "us-east-1";

pub struct Harness {
    pub moto: MotoServer,
    pub controller: FakeController,
    pub dir: tempfile::TempDir,
    pub sdk: SdkConfig,
    runs: std::cell::Cell<u32>,
}

pub fn aws_connector() -> Value {
    json!({
        "kind": "aws",
        "accountId": moto_server::ACCOUNT_ID,
        "region": REGION,
        "credentials": "static",
    })
}

pub async fn sdk_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

impl Harness {
    /// A fresh moto and controller. Fails (never skips) when moto cannot start.
    pub async fn start() -> Result<Self> {
        Self::with_moto(moto_server::MotoServer::builder()).await
    }

    pub async fn with_moto(builder: moto_server::Builder) -> Result<Self> {
        let moto = tokio::task::spawn_blocking(move || builder.start())
            .await?
            .context("moto must start for these tests")?;
        let controller = FakeController::start(TOKEN, CYCLE).await?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("token"), TOKEN)?;
        let sdk = sdk_for(moto.endpoint()).await;
        Ok(Self {
            moto,
            controller,
            dir,
            sdk,
            runs: std::cell::Cell::new(0),
        })
    }

    pub fn rds(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.sdk)
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk)
    }

    pub fn eks(&self) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::new(&self.sdk)
    }

    pub fn asg(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.sdk)
    }

    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.sdk)
    }

    pub fn scaling(&self) -> aws_sdk_applicationautoscaling::Client {
        aws_sdk_applicationautoscaling::Client::new(&self.sdk)
    }

    /// A runner process for `target` of `type_` doing `operation`, talking to this harness.
    pub fn runner(&self, type_: &str, target: &str, operation: &str) -> Runner {
        self.runs.set(self.runs.get() + 1);
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: &str| {
            env.insert(k.to_string(), v.to_string());
        };
        set(
            "HIBERNATOR_EXECUTION_ID",
            &format!("plan-{target}-{operation}-{}", self.runs.get()).to_lowercase(),
        );
        set("HIBERNATOR_PLAN", "nightly");
        set("HIBERNATOR_NAMESPACE", "team-a");
        set("HIBERNATOR_TARGET", target);
        set("HIBERNATOR_TARGET_TYPE", type_);
        set("HIBERNATOR_OPERATION", operation);
        set("HIBERNATOR_CYCLE_ID", CYCLE);
        set("HIBERNATOR_ATTEMPT", "1");
        set("HIBERNATOR_CONNECTOR", &aws_connector().to_string());
        set(
            "HIBERNATOR_CONTROLLER_ENDPOINT",
            &self.controller.endpoint(),
        );
        let token = self.dir.path().join("token");
        set("HIBERNATOR_TOKEN_PATH", &token.display().to_string());
        set("HIBERNATOR_POLL_INTERVAL_MS", "50");
        set("HIBERNATOR_WAIT_TIMEOUT_SECONDS", "30");
        set("HIBERNATOR_AWS_MAX_ATTEMPTS", "3");
        set("HIBERNATOR_CONTROLLER_TIMEOUT_SECONDS", "5");
        // Short, so that refusing or missing controllers fail quickly (default 60 s).
        set("HIBERNATOR_CONTROLLER_RETRY_SECONDS", "2");
        let termination = self
            .dir
            .path()
            .join(format!("termination-{}", self.runs.get()));
        set(
            "HIBERNATOR_TERMINATION_MESSAGE_PATH",
            &termination.display().to_string(),
        );
        set("AWS_ENDPOINT_URL", self.moto.endpoint());
        set("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        set("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        set("AWS_EC2_METADATA_DISABLED", "true");
        Runner { env, termination }
    }
}

pub struct Runner {
    pub env: BTreeMap<String, String>,
    pub termination: PathBuf,
}

#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub termination: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts exit 0 and returns self.
    pub fn ok(self) -> Self {
        assert!(self.success(), "runner failed: {self:#?}");
        self
    }

    /// Asserts a failure with `code` and returns self.
    pub fn failed(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit {code}: {self:#?}");
        self
    }

    pub fn has(&self, text: &str) -> bool {
        self.stdout.contains(text)
    }

    pub fn error_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }
}

impl Runner {
    pub fn param(mut self, parameters: Value) -> Self {
        self.env
            .insert("HIBERNATOR_PARAMETERS".into(), parameters.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn unset(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hibernator-runner"));
        command
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs to the end (at most two minutes).
    pub async fn run(self) -> Result<Ran> {
        let child = self.command().spawn()?;
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .context("the runner did not finish within 2 minutes")??;
        Ok(Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            termination: std::fs::read_to_string(&self.termination).unwrap_or_default(),
        })
    }

    /// Starts the runner and leaves it running.
    pub fn spawn(self) -> Result<tokio::process::Child> {
        Ok(self.command().spawn()?)
    }
}

/// Parses the controller's records into JSON values.
pub fn records(controller: &FakeController) -> BTreeMap<String, Value> {
    controller
        .records()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).expect("records are JSON")))
        .collect()
}

/// What the last completion said of each resource: `(key, result)`.
pub fn last_results(h: &Harness) -> Vec<(String, i32)> {
    h.controller
        .observed()
        .completions
        .last()
        .map(|c| {
            c.resources
                .iter()
                .map(|r| (r.resource_key.clone(), r.result))
                .collect()
        })
        .unwrap_or_default()
}

// ---- resources in moto ----

pub async fn create_db(h: &Harness, id: &str, tags: &[(&str, &str)]) -> Result<()> {
    let mut request = h
        .rds()
        .create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("password123");
    for (k, v) in tags {
        request = request.tags(aws_sdk_rds::types::Tag::builder().key(*k).value(*v).build());
    }
    request.send().await?;
    Ok(())
}

pub async fn create_aurora(h: &Harness, id: &str, tags: &[(&str, &str)]) -> Result<()> {
    let mut request = h
        .rds()
        .create_db_cluster()
        .db_cluster_identifier(id)
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("password123");
    for (k, v) in tags {
        request = request.tags(aws_sdk_rds::types::Tag::builder().key(*k).value(*v).build());
    }
    request.send().await?;
    h.rds()
        .create_db_instance()
        .db_instance_identifier(format!("{id}-writer"))
        .engine("aurora-postgresql")
        .db_instance_class("db.r5.large")
        .db_cluster_identifier(id)
        .send()
        .await?;
    Ok(())
}

pub async fn db_status(h: &Harness, id: &str) -> Result<String> {
    let out = h
        .rds()
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await?;
    Ok(out.db_instances()[0]
        .db_instance_status()
        .unwrap_or_default()
        .to_string())
}

pub async fn cluster_status(h: &Harness, id: &str) -> Result<String> {
    let out = h
        .rds()
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await?;
    Ok(out.db_clusters()[0]
        .status()
        .unwrap_or_default()
        .to_string())
}

pub async fn image_id(h: &Harness) -> Result<String> {
    let out = h.ec2().describe_images().send().await?;
    match out.images().first().and_then(|i| i.image_id()) {
        Some(id) => Ok(id.to_string()),
        None => bail!("moto offers no AMI"),
    }
}

pub async fn run_instances(h: &Harness, count: i32, tags: &[(&str, &str)]) -> Result<Vec<String>> {
    let image = image_id(h).await?;
    let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
    }
    let mut request = h
        .ec2()
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(count)
        .max_count(count);
    if !tags.is_empty() {
        request = request.tag_specifications(spec.build());
    }
    let out = request.send().await?;
    Ok(out
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

pub async fn instance_state(h: &Harness, id: &str) -> Result<String> {
    let out = h.ec2().describe_instances().instance_ids(id).send().await?;
    Ok(out.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default())
}

pub async fn stop_instance(h: &Harness, id: &str) -> Result<()> {
    h.ec2().stop_instances().instance_ids(id).send().await?;
    Ok(())
}

pub async fn create_asg(
    h: &Harness,
    name: &str,
    (min, desired, max): (i32, i32, i32),
    tags: &[(&str, &str)],
) -> Result<()> {
    let template = format!("lt-{name}");
    h.ec2()
        .create_launch_template()
        .launch_template_name(&template)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image_id(h).await?)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await?;
    let mut request = h
        .asg()
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(&template)
                .build(),
        )
        .min_size(min)
        .desired_capacity(desired)
        .max_size(max)
        .availability_zones(format!("{REGION}a"));
    for (k, v) in tags {
        request = request.tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .key(*k)
                .value(*v)
                .propagate_at_launch(true)
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .build(),
        );
    }
    request.send().await?;
    Ok(())
}

/// (min, desired, max, instances in service)
pub async fn asg_sizes(h: &Harness, name: &str) -> Result<(i32, i32, i32, usize)> {
    let out = h
        .asg()
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await?;
    let g = &out.auto_scaling_groups()[0];
    let in_service = g
        .instances()
        .iter()
        .filter(|i| {
            i.lifecycle_state()
                .is_some_and(|s| s.as_str() == "InService")
        })
        .count();
    Ok((
        g.min_size().unwrap_or(-1),
        g.desired_capacity().unwrap_or(-1),
        g.max_size().unwrap_or(-1),
        in_service,
    ))
}

/// An ECS cluster with a task definition `app`, for [`create_service`].
pub async fn create_ecs_cluster(h: &Harness, cluster: &str) -> Result<()> {
    h.ecs()
        .create_cluster()
        .cluster_name(cluster)
        .send()
        .await?;
    h.ecs()
        .register_task_definition()
        .family("app")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image("registry.example/app:1")
                .memory(512)
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// A service of `desired` tasks; with `scaling`, an Application Auto Scaling target (min, max).
pub async fn create_service(
    h: &Harness,
    cluster: &str,
    name: &str,
    desired: i32,
    scaling: Option<(i32, i32)>,
    tags: &[(&str, &str)],
) -> Result<()> {
    let mut request = h
        .ecs()
        .create_service()
        .cluster(cluster)
        .service_name(name)
        .task_definition("app")
        .desired_count(desired);
    for (k, v) in tags {
        request = request.tags(aws_sdk_ecs::types::Tag::builder().key(*k).value(*v).build());
    }
    request.send().await?;
    if let Some((min, max)) = scaling {
        set_service_scaling(h, cluster, name, min, max).await?;
    }
    Ok(())
}

/// Registers (or updates) the service's Application Auto Scaling target.
pub async fn set_service_scaling(
    h: &Harness,
    cluster: &str,
    name: &str,
    min: i32,
    max: i32,
) -> Result<()> {
    h.scaling()
        .register_scalable_target()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .resource_id(format!("service/{cluster}/{name}"))
        .scalable_dimension(
            aws_sdk_applicationautoscaling::types::ScalableDimension::EcsServiceDesiredCount,
        )
        .min_capacity(min)
        .max_capacity(max)
        .send()
        .await?;
    Ok(())
}

/// A service as it is: (desired, running, auto scaling (min, max)).
pub async fn service_state(
    h: &Harness,
    cluster: &str,
    name: &str,
) -> Result<(i32, i32, Option<(i32, i32)>)> {
    let out = h
        .ecs()
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await?;
    let service = out
        .services()
        .first()
        .with_context(|| format!("service {cluster}/{name} not found"))?;
    let targets = h
        .scaling()
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .resource_ids(format!("service/{cluster}/{name}"))
        .send()
        .await?;
    Ok((
        service.desired_count(),
        service.running_count(),
        targets
            .scalable_targets()
            .first()
            .map(|t| (t.min_capacity(), t.max_capacity())),
    ))
}

/// Runs `runner` until the controller is asked for call number `n` of `rpc` (counted since the
/// controller started), SIGKILLs it there and lets the controller answer again. False when the
/// run ended undisturbed first (fewer such calls happen); it must then have succeeded.
pub async fn kill_at_call(
    controller: &FakeController,
    rpc: hibernator_proto::testing::Rpc,
    n: usize,
    runner: Runner,
) -> Result<bool> {
    controller.stall_at(rpc, n);
    let mut child = runner
        .env("HIBERNATOR_CONTROLLER_TIMEOUT_SECONDS", "60")
        .spawn()?;
    let reached = tokio::select! {
        _ = controller.stalled() => true,
        status = child.wait() => {
            let status = status?;
            anyhow::ensure!(status.success(), "an undisturbed run succeeds: {status}");
            false
        }
    };
    if reached {
        child.start_kill()?;
        anyhow::ensure!(!child.wait().await?.success(), "the runner was killed");
    }
    controller.no_stall();
    Ok(reached)
}

pub async fn create_eks(
    h: &Harness,
    cluster: &str,
    groups: &[(&str, (i32, i32, i32))],
) -> Result<()> {
    h.eks()
        .create_cluster()
        .name(cluster)
        .role_arn(format!("arn:aws:iam::{}:role/eks", moto_server::ACCOUNT_ID))
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids("subnet-1")
                .build(),
        )
        .send()
        .await?;
    for (name, (min, desired, max)) in groups {
        h.eks()
            .create_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(*name)
            .node_role(format!(
                "arn:aws:iam::{}:role/node",
                moto_server::ACCOUNT_ID
            ))
            .subnets("subnet-1")
            .scaling_config(
                aws_sdk_eks::types::NodegroupScalingConfig::builder()
                    .min_size(*min)
                    .desired_size(*desired)
                    .max_size(*max)
                    .build(),
            )
            .send()
            .await?;
    }
    Ok(())
}

pub async fn nodegroup_sizes(h: &Harness, cluster: &str, name: &str) -> Result<(i32, i32, i32)> {
    let out = h
        .eks()
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await?;
    let s = out
        .nodegroup()
        .and_then(|n| n.scaling_config())
        .context("a scaling config")?;
    Ok((
        s.min_size().unwrap_or(-1),
        s.desired_size().unwrap_or(-1),
        s.max_size().unwrap_or(-1),
    ))
}

pub fn eks_connector(cluster: &str) -> String {
    let mut c = aws_connector();
    c["eksClusterName"] = json!(cluster);
    c.to_string()
}
