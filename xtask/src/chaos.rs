//! `cargo xtask chaos`: the fault-injection suite for long runs (see
//! `hibernator_e2e::chaos`). Prints the table and exits non-zero on an invariant violation.

use anyhow::{Result, bail};
use hibernator_e2e::chaos::{ChaosOptions, run as run_chaos};

/// Arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Seed of the fault choices and timings (the same seed injects the same faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nights to run (a hibernation and a wake-up each).
    #[arg(long, default_value_t = 50)]
    nights: u32,
    /// Only the table, not the story of each night.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(run_chaos(ChaosOptions {
        seed: args.seed,
        nights: args.nights,
        verbose: !args.quiet,
    }))?;
    println!("\n{}", report.table());
    if !report.violations.is_empty() {
        for v in &report.violations {
            eprintln!("violation: {v}");
        }
        bail!("{} invariant violation(s)", report.violations.len());
    }
    Ok(())
}
