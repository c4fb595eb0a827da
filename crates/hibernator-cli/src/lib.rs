//! The `kubectl-hibernator` command: offline `validate` and `preview` for pull-request CI, and
//! live `status`, `retry`, `suspend`/`resume`, `logs` and `restore` for operators, and `wake`,
//! `sleep` and `exceptions` to bend a schedule without editing Git.
//!
//! Exit codes: 0 success (valid), 1 invalid input, 2 usage or I/O error.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod exceptions;
pub mod input;
mod live;
mod notify;
mod picture;
mod preview;
mod savings;
mod validate;

/// Hibernator's command line; install as `kubectl-hibernator` to use it as `kubectl hibernator`.
#[derive(Parser, Debug)]
#[command(name = "kubectl-hibernator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check manifests offline: schema, CEL rules, schedules, execution graphs and references
    /// between the documents. Exit 0 when valid, 1 when not, 2 on usage or I/O errors.
    Validate(validate::Args),
    /// Show the next hibernations and wake-ups of the plans in the manifests, as a list or as a
    /// picture of the coming days (`--format svg|html`).
    Preview(preview::Args),
    /// Show plans in the cluster: phase, conditions, schedule, targets, history.
    Status(live::StatusArgs),
    /// Retry the failed targets of a plan now (sets the retry annotation to a new token).
    Retry(live::PlanArgs),
    /// Keep a plan's targets awake until `resume` (or `--until`). GitOps tools revert this
    /// unless it is in Git; prefer a ScheduleException for planned exceptions.
    Suspend(live::SuspendArgs),
    /// Undo `suspend`.
    Resume(live::PlanArgs),
    /// Print the logs of the current cycle's runners.
    Logs(live::LogsArgs),
    /// Print the restore data recorded for a plan's targets.
    Restore(live::RestoreArgs),
    /// What the plans' nights saved: resource-hours asleep and the estimated amount (last
    /// cycle, this month, total; or `--since 30d`), as a table, JSON or CSV.
    Savings(savings::Args),
    /// Keep a plan awake for a while (`--for 2h` or `--until TIME`), even in its off-hours:
    /// creates a `suspend` ScheduleException; the plan's spec is not touched.
    Wake(exceptions::ChangeArgs),
    /// Put a plan to sleep for a while: creates an `extend` ScheduleException.
    Sleep(exceptions::ChangeArgs),
    /// List a namespace's active and upcoming ScheduleExceptions (`--all`: expired too), or
    /// `prune` the expired ones made by `wake` and `sleep`.
    Exceptions(exceptions::ListArgs),
    /// HibernationNotifications: `notify test NOTIFICATION` sends a sample through every sink.
    Notify(notify::NotifyArgs),
}

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input is invalid.
    pub const INVALID: u8 = 1;
    /// Usage or I/O error.
    pub const ERROR: u8 = 2;
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Preview(args) => preview::run(args),
        Command::Status(args) => live::status(args),
        Command::Savings(args) => savings::run(args),
        Command::Retry(args) => live::retry(args),
        Command::Suspend(args) => live::suspend_cmd(args),
        Command::Resume(args) => live::resume_cmd(args),
        Command::Logs(args) => live::logs(args),
        Command::Restore(args) => live::restore(args),
        Command::Wake(args) => exceptions::change(args, true),
        Command::Sleep(args) => exceptions::change(args, false),
        Command::Exceptions(args) => exceptions::exceptions(args),
        Command::Notify(args) => notify::notify(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
