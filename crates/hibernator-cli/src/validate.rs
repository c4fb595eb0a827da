//! `kubectl hibernator validate`.

use anyhow::Result;
use hibernator_api::validate::{Options, Report, Severity, validate_documents};
use serde::Serialize;

use crate::{Output, exit, input};

/// Arguments of `validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories (searched recursively for .yaml, .yml and .json); `-` or nothing
    /// reads standard input, e.g. `kubectl kustomize overlays/prod | kubectl hibernator validate -`.
    paths: Vec<String>,
    /// Do not report references to objects missing from the input (they exist in the cluster).
    #[arg(long)]
    allow_missing_refs: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    valid: bool,
    #[serde(flatten)]
    report: &'a Report,
}

/// Runs `validate`.
pub fn run(args: Args) -> Result<u8> {
    let inputs = input::read(&args.paths)?;
    let mut report = validate_documents(
        &inputs.documents,
        Options {
            allow_missing_refs: args.allow_missing_refs,
            ..Options::default()
        },
    );
    for f in &inputs.failures {
        report.problems.insert(
            0,
            hibernator_api::validate::Problem {
                source: f.source.clone(),
                object: "(file)".into(),
                field: "(yaml)".into(),
                value: None,
                message: format!("not valid YAML: {}", f.message),
                hint: None,
                severity: Severity::Error,
            },
        );
    }
    let valid = report.is_valid();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&JsonReport {
                valid,
                report: &report
            })?
        ),
        Output::Text => print_text(&report, valid),
    }
    Ok(if valid { exit::OK } else { exit::INVALID })
}

fn print_text(report: &Report, valid: bool) {
    let mut last: Option<(&str, &str)> = None;
    for p in &report.problems {
        if last != Some((p.source.as_str(), p.object.as_str())) {
            println!("{}: {}", p.source, p.object);
            last = Some((p.source.as_str(), p.object.as_str()));
        }
        let severity = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &p.value {
            Some(v) => println!("  {severity}: {} = {v}: {}", p.field, p.message),
            None => println!("  {severity}: {}: {}", p.field, p.message),
        }
        if let Some(h) = &p.hint {
            println!("    hint: {h}");
        }
    }
    let errors = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let ignored = match report.ignored {
        0 => String::new(),
        1 => " (1 document of another kind ignored)".into(),
        n => format!(" ({n} documents of other kinds ignored)"),
    };
    let objects = match report.checked.len() {
        1 => "1 object".to_string(),
        n => format!("{n} objects"),
    };
    if valid {
        println!("{objects} valid{ignored}");
    } else {
        println!(
            "{objects} checked{ignored}: {errors} error{}",
            if errors == 1 { "" } else { "s" }
        );
    }
}
