//! `kubectl hibernator savings`: what the plans' nights saved, from their `status.savings`.

use anyhow::{Result, bail};
use hibernator_api::plan::HibernationPlan;
use hibernator_api::savings::SavingsStatus;
use kube::ResourceExt;
use serde_json::json;

use crate::exit;
use crate::live::{Scope, plans, runtime};

/// Output formats of `savings`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
    /// CSV for spreadsheets.
    Csv,
}

/// Arguments of `savings`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A plan; every plan of the namespace when absent.
    plan: Option<String>,
    #[command(flatten)]
    scope: Scope,
    /// All namespaces.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Add up the cycles that ended in this window (`30d`, `12h`, `2w`; at most the last 31
    /// cycles a plan keeps) instead of showing the last cycle, month and total.
    #[arg(long)]
    since: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// One row: a plan and its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Plan.
    pub plan: String,
    /// Currency (empty when nothing was counted yet).
    pub currency: String,
    /// `(label, hours, amount, unpriced hours)`: last cycle, this month, total; or the window.
    pub periods: Vec<(String, f64, f64, f64)>,
}

/// `30d`, `12h`, `2w`, `90m` as a duration.
pub fn parse_since(text: &str) -> Result<jiff::SignedDuration, String> {
    let bad = || format!("--since {text:?} is not a duration such as 30d, 12h, 2w or 90m");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let hours = match unit {
        "m" => return Ok(jiff::SignedDuration::from_mins(n)),
        "h" => n,
        "d" => n * 24,
        "w" => n * 24 * 7,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    Ok(jiff::SignedDuration::from_hours(hours))
}

/// The row of a plan: its periods, or with `since` the cycles that ended after that instant.
pub fn row(p: &HibernationPlan, since: Option<jiff::Timestamp>) -> Row {
    let s: SavingsStatus = p
        .status
        .as_ref()
        .and_then(|s| s.savings.clone())
        .unwrap_or_default();
    let periods = match since {
        Some(from) => {
            let (mut h, mut a, mut u) = (0.0, 0.0, 0.0);
            for c in &s.cycles {
                let ended: Option<jiff::Timestamp> = c.ended_at.parse().ok();
                if ended.is_some_and(|e| e >= from) {
                    h += c.savings.hours;
                    a += c.savings.amount;
                    u += c.savings.unpriced_hours;
                }
            }
            vec![(format!("since {from}"), round(h), round(a), round(u))]
        }
        None => {
            let mut v = Vec::new();
            for (label, period) in [
                ("last cycle", s.last_cycle.as_ref()),
                ("this month", s.this_month.as_ref()),
                ("total", Some(&s.total)),
            ] {
                let (h, a, u) =
                    period.map_or((0.0, 0.0, 0.0), |p| (p.hours, p.amount, p.unpriced_hours));
                let label = match period {
                    Some(p) if label != "total" && !p.period.is_empty() => {
                        format!("{label} ({})", p.period)
                    }
                    _ => label.to_string(),
                };
                v.push((label, h, a, u));
            }
            v
        }
    };
    Row {
        namespace: p.namespace().unwrap_or_default(),
        plan: p.name_any(),
        currency: s.currency,
        periods,
    }
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The rows as text in `format`.
pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "namespace": r.namespace,
                        "plan": r.plan,
                        "currency": r.currency,
                        "periods": r.periods.iter().map(|(label, h, a, u)| json!({
                            "period": label, "hours": h, "amount": a, "unpricedHours": u,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::to_string_pretty(&v).expect("JSON values serialize") + "\n"
        }
        Format::Csv => {
            let mut out =
                String::from("namespace,plan,period,hours,amount,currency,unpriced_hours\n");
            for r in rows {
                for (label, h, a, u) in &r.periods {
                    out.push_str(&format!(
                        "{},{},{},{h},{a},{},{u}\n",
                        csv(&r.namespace),
                        csv(&r.plan),
                        csv(label),
                        csv(&r.currency)
                    ));
                }
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "{:<20} {:<24} {:<28} {:>12} {:>12} {}\n",
                "NAMESPACE", "PLAN", "PERIOD", "HOURS", "AMOUNT", "UNPRICED HOURS"
            );
            for r in rows {
                for (label, h, a, u) in &r.periods {
                    out.push_str(&format!(
                        "{:<20} {:<24} {:<28} {:>12.2} {:>12} {}\n",
                        r.namespace,
                        r.plan,
                        label,
                        h,
                        format!("{a:.2} {}", r.currency).trim_end(),
                        if *u > 0.0 {
                            format!("{u:.2}")
                        } else {
                            "-".into()
                        }
                    ));
                }
            }
            out
        }
    }
}

/// A CSV field, quoted when it must be.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Runs `savings`.
pub fn run(args: Args) -> Result<u8> {
    let since = match &args.since {
        Some(text) => match parse_since(text) {
            Ok(d) => Some(jiff::Timestamp::now() - d),
            Err(e) => bail!("{e}"),
        },
        None => None,
    };
    runtime()?.block_on(async {
        let plans = plans(&args.scope, args.all_namespaces, args.plan.as_deref()).await?;
        let rows: Vec<Row> = plans.iter().map(|p| row(p, since)).collect();
        print!("{}", render(&rows, args.output));
        Ok(exit::OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> HibernationPlan {
        serde_json::from_value(json!({
            "apiVersion": "hibernator.ardikasaputro.io/v1alpha1", "kind": "HibernationPlan",
            "metadata": {"name": "prod, eu", "namespace": "team-a"},
            "spec": {"schedule": {"timezone": "UTC", "offHours": []}, "execution": {"strategy": {"type": "Parallel"}}, "targets": []},
            "status": {"savings": {
                "currency": "USD",
                "lastCycle": {"period": "c2", "hours": 10.0, "amount": 0.96},
                "thisMonth": {"period": "2026-12", "hours": 10.0, "amount": 0.96},
                "total": {"period": "total", "hours": 40.0, "amount": 2.88, "unpricedHours": 5.0},
                "cycles": [
                    {"period": "c1", "hours": 30.0, "amount": 1.92, "endedAt": "2026-11-27T11:00:00Z"},
                    {"period": "c2", "hours": 10.0, "amount": 0.96, "endedAt": "2026-12-01T06:00:00Z"}
                ]}}
        }))
        .unwrap()
    }

    #[test]
    fn rows_show_cycle_month_and_total_or_a_window() {
        let r = row(&plan(), None);
        assert_eq!(
            r.periods,
            [
                ("last cycle (c2)".to_string(), 10.0, 0.96, 0.0),
                ("this month (2026-12)".to_string(), 10.0, 0.96, 0.0),
                ("total".to_string(), 40.0, 2.88, 5.0),
            ]
        );
        let since: jiff::Timestamp = "2026-11-30T00:00:00Z".parse().unwrap();
        assert_eq!(row(&plan(), Some(since)).periods[0].1, 10.0);
        let since: jiff::Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        assert_eq!(row(&plan(), Some(since)).periods[0].2, 2.88);
        let csv = render(std::slice::from_ref(&r), Format::Csv);
        assert!(
            csv.contains("team-a,\"prod, eu\",total,40,2.88,USD,5\n"),
            "{csv}"
        );
        let table = render(&[r], Format::Table);
        assert!(table.contains("2.88 USD"), "{table}");
        assert_eq!(
            parse_since("30d"),
            Ok(jiff::SignedDuration::from_hours(720))
        );
        assert!(parse_since("30x").unwrap_err().contains("--since \"30x\""));
        assert!(parse_since("0d").is_err());
    }
}
