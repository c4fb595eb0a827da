//! The Hibernator runner: one short-lived process per (target, operation). It reads its
//! configuration from the environment the controller sets ([`hibernator_api::runner`]),
//! records each resource's state with the controller before changing it (write-ahead), acts on
//! AWS or a Kubernetes cluster, waits for the resources to reach their target state, and tells the story on stdout,
//! over the controller's log stream and in the termination-message file.
//!
//! Exit codes: 0 done, 1 failed, 2 configuration error.
#![warn(missing_docs)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use hibernator_api::TargetParameters;
use hibernator_api::runner::ConnectorSettings;
use hibernator_proto::v1::Completion;

pub mod aws;
pub mod config;
pub mod controller;
pub mod executor;
pub mod k8s;
pub mod output;
pub mod wait;

use config::{Args, Config, ConfigError, LogFormat};
use controller::{Controller, StopSignal};
use executor::{Ctx, Outcome, RunError};
use output::{Reporter, took, write_termination_message};

/// The runner's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the log stream may take to drain at the end.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// The binary's entry point: parses arguments, runs, returns the exit code.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see hibernator-runner --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(run(args)))
}

/// Runs one execution and returns the exit code.
pub async fn run(args: Args) -> u8 {
    let started = Instant::now();
    let format = LogFormat::from_arg(args.log_format.as_deref());
    let reporter = Reporter::new(format.as_ref().copied().unwrap_or_default());
    let config = match format.and_then(|_| Config::from_args(&args)) {
        Ok(config) => config,
        Err(e) => {
            return fail_early(&reporter, &args, &RunError::Config(e));
        }
    };
    reporter.set_execution(&config.execution);
    let e = &config.execution;
    reporter.info(format!(
        "hibernator-runner {VERSION}: {} {} target {} of plan {}/{} (cycle {}, attempt {})",
        match (e.enforce, e.operation) {
            (Some(hibernator_api::plan::EnforceMode::Reapply), _) =>
                "check (and put back to sleep) the hibernated",
            (Some(_), _) => "check the hibernated",
            (None, hibernator_api::Operation::Hibernate) => "hibernate",
            (None, hibernator_api::Operation::WakeUp) => "wake up",
        },
        e.target_type,
        e.target,
        e.namespace,
        e.plan,
        e.cycle_id,
        e.attempt
    ));

    let controller = match Controller::new(
        &config.controller_endpoint,
        config.controller_ca.as_deref(),
        &config.token_path,
        &e.execution_id,
        config.controller_timeout,
        config.controller_retry,
    ) {
        Ok(controller) => controller,
        Err(err) => return fail_early(&reporter, &args, &RunError::Controller(err)),
    };
    let (sender, log_task) = controller.stream_logs();
    reporter.stream_to(sender);
    let stop = Arc::new(StopSignal::default());
    // The controller may already want the runner to stop (the plan went away).
    controller.heartbeat(&stop).await;
    let heartbeat = controller.heartbeats(config.heartbeat_interval, Arc::clone(&stop));

    let ctx = Ctx::new(&reporter, &controller, config.timing, e, &stop);
    let work = execute(&config, &ctx);
    let result = match config.deadline {
        Some(deadline) => {
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or(Err(RunError::Deadline {
                    seconds: deadline.as_secs(),
                }))
        }
        None => work.await,
    };
    heartbeat.abort();
    let wake_up = e.operation == hibernator_api::Operation::WakeUp;
    let outcomes = ctx.outcomes(result.is_ok());
    // A wake-up that left recorded resources as they were has failed, even though every other
    // resource was restored; so has a check that could not look at (or put back to sleep) a
    // resource.
    let result = result.and_then(|outcome| {
        not_restored(wake_up, e.enforce.is_some(), &outcomes).map(|()| outcome)
    });
    // A wake-up's and a check's results must reach the controller.
    let must_report = wake_up || e.enforce.is_some();

    let elapsed = started.elapsed();
    let duration_ms = elapsed.as_millis().min(u64::MAX as u128) as u64;
    let (code, line, completion) = match &result {
        Ok(Outcome { summary, changed }) => {
            let line = format!("{summary} in {}", took(elapsed));
            reporter.info(format!("done: {line}"));
            let completion = Completion {
                success: true,
                summary: line.clone(),
                changed: *changed,
                duration_ms,
                ..Completion::default()
            };
            (0, line, completion)
        }
        Err(err) => {
            let message = aws::chain(err);
            reporter.error(&message);
            reporter.info(format!("failed after {}", took(elapsed)));
            let completion = Completion {
                success: false,
                summary: format!("failed after {}", took(elapsed)),
                error: message.clone(),
                duration_ms,
                ..Completion::default()
            };
            (err.exit_code(), format!("failed: {message}"), completion)
        }
    };
    let completion = Completion {
        resources: outcomes.iter().map(resource_result).collect(),
        ..completion
    };
    let (mut code, mut line) = (code, line);
    if let Err(err) = controller
        .complete(completion, must_report, &|m| reporter.warn(m))
        .await
    {
        if must_report {
            // The controller retires restored records by this report: without it, the attempt
            // counts as failed and the next one finds the resources already restored.
            let message = format!(
                "failed to report the wake-up's results to the controller ({err}); the next attempt will find what is already restored"
            );
            reporter.error(&message);
            code = 1;
            line = format!("failed: {message}");
        } else {
            reporter.warn(format!(
                "could not send the outcome to the controller ({err}); the exit code tells it"
            ));
        }
    }
    reporter.close_stream();
    match tokio::time::timeout(LOG_DRAIN, log_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => reporter.warn(format!(
            "could not stream logs to the controller ({err}); they are on stdout only"
        )),
        Ok(Err(_)) | Err(_) => reporter.warn(
            "the log stream to the controller did not finish in time; the logs are on stdout",
        ),
    }
    // A hibernation's records also go into the termination message: the controller reads them
    // if its copy of this runner's report was lost.
    let recorded: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, executor::ResourceOutcome::Recorded))
        .map(|(k, _)| k.clone())
        .collect();
    if let Err(err) =
        output::write_termination_report(&args.termination_message_path, &line, &recorded)
    {
        reporter.warn(format!(
            "could not write the summary to {} ({err})",
            args.termination_message_path.display()
        ));
    }
    code
}

/// The failure of a wake-up that left recorded resources as they were, or of a check that
/// could not check one, if it did.
fn not_restored(
    wake_up: bool,
    check: bool,
    outcomes: &[(String, executor::ResourceOutcome)],
) -> Result<(), RunError> {
    use executor::ResourceOutcome::Failed;
    let failed: Vec<(&String, &String)> = outcomes
        .iter()
        .filter_map(|(k, o)| match o {
            Failed(m) => Some((k, m)),
            _ => None,
        })
        .collect();
    match failed.first() {
        Some((key, message)) if check => Err(RunError::NotChecked {
            failed: failed.len(),
            total: outcomes.len(),
            first: format!("{key}: {message}"),
        }),
        Some((key, message)) if wake_up => Err(RunError::NotRestored {
            failed: failed.len(),
            total: outcomes.len(),
            first: format!("{key}: {message}"),
        }),
        _ => Ok(()),
    }
}

fn resource_result(
    (key, outcome): &(String, executor::ResourceOutcome),
) -> hibernator_proto::v1::ResourceResult {
    use executor::ResourceOutcome as O;
    use hibernator_proto::v1::resource_result::Result as R;
    let (result, message) = match outcome {
        O::Recorded => (R::Recorded, String::new()),
        O::Restored => (R::Restored, String::new()),
        O::NotFound(m) => (R::NotFound, m.clone()),
        O::Failed(m) => (R::Failed, m.clone()),
        O::Asleep => (R::Asleep, String::new()),
        O::Drifted(m) => (R::Drifted, m.clone()),
        O::Reapplied(m) => (R::Reapplied, m.clone()),
    };
    hibernator_proto::v1::ResourceResult {
        resource_key: key.clone(),
        result: result as i32,
        message,
    }
}

/// A failure before the controller could be used: story line, termination message, code.
fn fail_early(reporter: &Reporter, args: &Args, err: &RunError) -> u8 {
    let message = aws::chain(err);
    reporter.error(&message);
    termination_message(reporter, args, &format!("failed: {message}"));
    err.exit_code()
}

fn termination_message(reporter: &Reporter, args: &Args, line: &str) {
    let path = &args.termination_message_path;
    if let Err(err) = write_termination_message(path, line) {
        reporter.warn(format!(
            "could not write the summary to {} ({err})",
            path.display()
        ));
    }
}

async fn execute(config: &Config, ctx: &Ctx<'_>) -> Result<Outcome, RunError> {
    let type_ = config.execution.target_type;
    ctx.check_stop()?;
    if config.execution.enforce.is_some() && !type_.checks_in_sleep() {
        return Err(ConfigError::Invalid {
            var: hibernator_api::runner::env::OPERATION,
            value: hibernator_api::naming::ENFORCE.into(),
            expected: format!(
                "hibernate or wakeUp: in-sleep checks are made for {} targets, not {type_}",
                hibernator_api::TargetType::ALL
                    .into_iter()
                    .filter(|t| t.checks_in_sleep())
                    .map(hibernator_api::TargetType::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        .into());
    }
    if let TargetParameters::Noop(params) = &config.parameters {
        return executor::noop::run(ctx, params).await;
    }
    if let ConnectorSettings::Kubernetes(settings) = &config.connector {
        let session = aws::session_name(&config.execution.execution_id);
        let kube = k8s::connect(settings, &session, config.aws_max_attempts).await?;
        let reached = kube.reach().await?;
        ctx.reporter.info(format!(
            "Kubernetes API {} ({}) reached with {}{}",
            kube.server,
            reached.version,
            kube.via,
            reached.user.map(|u| format!(" as {u}")).unwrap_or_default()
        ));
        return match &config.parameters {
            TargetParameters::Workloads(p) => executor::workloads::run(ctx, &kube, p).await,
            TargetParameters::Karpenter(p) => executor::karpenter::run(ctx, &kube, p).await,
            TargetParameters::Gitops(p) => executor::gitops::run(ctx, &kube, p).await,
            _ => Err(ConfigError::ConnectorKind {
                var: hibernator_api::runner::env::CONNECTOR,
                type_,
                expected: "aws",
                got: "kubernetes",
            }
            .into()),
        };
    }
    let ConnectorSettings::Aws(settings) = &config.connector else {
        return Err(ConfigError::Missing {
            var: hibernator_api::runner::env::CONNECTOR,
        }
        .into());
    };
    let session = aws::session_name(&config.execution.execution_id);
    let aws = aws::connect(settings, &session, config.aws_max_attempts).await?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| format!(", endpoint {v}"))
        .unwrap_or_default();
    ctx.reporter.info(format!(
        "AWS account {} verified as {} (region {}{endpoint})",
        settings.account_id, aws.caller_arn, settings.region
    ));
    match &config.parameters {
        TargetParameters::Rds(p) => {
            executor::rds::run(ctx, &aws, &config.execution.target, p).await
        }
        TargetParameters::Eks(p) => {
            let cluster =
                settings
                    .eks_cluster_name
                    .as_deref()
                    .ok_or(ConfigError::MissingSetting {
                        field: "eksClusterName",
                        type_,
                    })?;
            executor::eks::run(ctx, &aws, cluster, p).await
        }
        TargetParameters::Ec2(p) => executor::ec2::run(ctx, &aws, p).await,
        TargetParameters::Asg(p) => executor::asg::run(ctx, &aws, p).await,
        TargetParameters::Ecs(p) => executor::ecs::run(ctx, &aws, p).await,
        TargetParameters::Workloads(_)
        | TargetParameters::Karpenter(_)
        | TargetParameters::Gitops(_) => Err(ConfigError::ConnectorKind {
            var: hibernator_api::runner::env::CONNECTOR,
            type_,
            expected: "kubernetes",
            got: "aws",
        }
        .into()),
        TargetParameters::Noop(_) => Ok(Outcome {
            summary: "noop: nothing to do".into(),
            changed: 0,
        }),
    }
}
