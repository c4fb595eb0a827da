//! What a night saved: the size of each resource while awake (its [`Sizing`], described by the
//! runner next to its restore record), a [`PriceTable`] of hourly prices, and the arithmetic
//! that turns a restored record (recorded at hibernation, marked restored at wake-up) into
//! resource-hours asleep and an estimated amount. Pure: the controller supplies the records and
//! the table.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which price list a resource is priced from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// RDS instances (`rds` prices by instance class; Multi-AZ doubled).
    Rds,
    /// EC2 instances, also those of node groups and auto-scaling groups (`ec2` prices).
    Ec2,
    /// Pods of a cluster, by CPU and memory requests (`kubernetes` rates).
    Kubernetes,
}

/// What sizes a resource's cost while it is awake.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    /// The price list.
    pub service: Option<Service>,
    /// Instance type or DB instance class (`m5.large`, `db.r6g.large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// RDS engine (`postgres`, `aurora-mysql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// RDS Multi-AZ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_az: Option<bool>,
    /// How many: instances of a node group or auto-scaling group, replicas of a workload.
    #[serde(default = "one")]
    pub count: f64,
    /// vCPU requested by one replica (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// GiB of memory requested by one replica (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl Sizing {
    /// How it reads when it has no price: `m5.large in eu-west-3`.
    pub fn describe(&self) -> String {
        match (self.service, &self.instance_type) {
            (Some(Service::Kubernetes), _) => format!(
                "{} vCPU and {} GiB",
                self.cpu.unwrap_or(0.0),
                self.memory_gib.unwrap_or(0.0)
            ),
            (_, Some(t)) => match &self.region {
                Some(r) => format!("{t} in {r}"),
                None => t.clone(),
            },
            _ => "an unknown size".into(),
        }
    }
}

/// Hourly prices by region.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionPrices {
    /// Instance type -> price per hour.
    #[serde(default)]
    pub ec2: BTreeMap<String, f64>,
    /// DB instance class (or `<engine>/<class>`, which wins) -> price per hour, single-AZ.
    #[serde(default)]
    pub rds: BTreeMap<String, f64>,
}

/// Rates for pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesRates {
    /// Price of one requested vCPU for an hour.
    pub vcpu_hour: f64,
    /// Price of one requested GiB of memory for an hour.
    pub gib_hour: f64,
}

/// A price table: the shipped default ([`PriceTable::builtin`]) extended or overridden by the
/// user's ([`PriceTable::merge`]).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceTable {
    /// Currency of every price (`USD`).
    #[serde(default)]
    pub currency: String,
    /// Where the prices come from.
    #[serde(default)]
    pub source: String,
    /// When they were taken.
    #[serde(default)]
    pub as_of: String,
    /// Factor applied to Multi-AZ RDS instances.
    #[serde(default)]
    pub multi_az_factor: Option<f64>,
    /// Pod rates.
    #[serde(default)]
    pub kubernetes: Option<KubernetesRates>,
    /// Region -> prices.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionPrices>,
}

/// Why a price table cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PriceTableError {
    /// Not a price table.
    #[error("the price table is not valid: {0}")]
    Parse(String),
    /// A price that is negative or not a number.
    #[error("the price table's {field} is {value}; prices are numbers of at least 0")]
    Negative {
        /// Where.
        field: String,
        /// The value.
        value: f64,
    },
}

impl PriceTable {
    /// The shipped default (`savings/prices.json`: common AWS on-demand prices of us-east-1,
    /// dated, with their source).
    pub fn builtin() -> Self {
        serde_json::from_str(include_str!("savings/prices.json"))
            .expect("the shipped price table is valid")
    }

    /// Reads a table from JSON and checks its prices. Prices written as strings (`"0.107"`:
    /// what `helm --set` makes of a decimal) are read as the numbers they spell.
    pub fn from_json(text: &str) -> Result<Self, PriceTableError> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PriceTableError::Parse(e.to_string()))?;
        numbers(&mut value, "");
        let t: Self =
            serde_json::from_value(value).map_err(|e| PriceTableError::Parse(e.to_string()))?;
        t.check()?;
        Ok(t)
    }

    /// Every price is a number of at least 0.
    pub fn check(&self) -> Result<(), PriceTableError> {
        let bad = |field: String, value: f64| {
            (!(value >= 0.0 && value.is_finite()))
                .then_some(PriceTableError::Negative { field, value })
        };
        let mut problems = Vec::new();
        if let Some(f) = self.multi_az_factor {
            problems.extend(bad("multiAzFactor".into(), f));
        }
        if let Some(k) = self.kubernetes {
            problems.extend(bad("kubernetes.vcpuHour".into(), k.vcpu_hour));
            problems.extend(bad("kubernetes.gibHour".into(), k.gib_hour));
        }
        for (region, prices) in &self.regions {
            for (list, map) in [("ec2", &prices.ec2), ("rds", &prices.rds)] {
                for (name, value) in map {
                    problems.extend(bad(format!("regions.{region}.{list}[{name:?}]"), *value));
                }
            }
        }
        problems.into_iter().next().map_or(Ok(()), Err)
    }

    /// Extends this table with `other`: its prices win, its currency, source, date, factor and
    /// rates replace these when it gives them.
    pub fn merge(&mut self, other: PriceTable) {
        if !other.currency.is_empty() {
            self.currency = other.currency;
        }
        if !other.source.is_empty() {
            self.source = other.source;
        }
        if !other.as_of.is_empty() {
            self.as_of = other.as_of;
        }
        if other.multi_az_factor.is_some() {
            self.multi_az_factor = other.multi_az_factor;
        }
        if other.kubernetes.is_some() {
            self.kubernetes = other.kubernetes;
        }
        for (region, prices) in other.regions {
            let mine = self.regions.entry(region).or_default();
            mine.ec2.extend(prices.ec2);
            mine.rds.extend(prices.rds);
        }
    }

    /// Price of one unit of `s` for an hour; `None` when the table has none.
    pub fn unit_hourly(&self, s: &Sizing) -> Option<f64> {
        match s.service? {
            Service::Kubernetes => {
                let k = self.kubernetes?;
                // Pods without requests have no size to price.
                if s.cpu.is_none() && s.memory_gib.is_none() {
                    return None;
                }
                Some(s.cpu.unwrap_or(0.0) * k.vcpu_hour + s.memory_gib.unwrap_or(0.0) * k.gib_hour)
            }
            Service::Ec2 => {
                let prices = self.regions.get(s.region.as_deref()?)?;
                prices.ec2.get(s.instance_type.as_deref()?).copied()
            }
            Service::Rds => {
                let prices = self.regions.get(s.region.as_deref()?)?;
                let class = s.instance_type.as_deref()?;
                let by_engine = s
                    .engine
                    .as_ref()
                    .and_then(|e| prices.rds.get(&format!("{e}/{class}")));
                let price = by_engine.or_else(|| prices.rds.get(class)).copied()?;
                let factor = if s.multi_az == Some(true) {
                    self.multi_az_factor.unwrap_or(2.0)
                } else {
                    1.0
                };
                Some(price * factor)
            }
        }
    }
}

/// Turns strings that spell numbers into numbers, except the table's text fields.
fn numbers(v: &mut serde_json::Value, key: &str) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                numbers(child, k);
            }
        }
        serde_json::Value::String(s) if !matches!(key, "currency" | "source" | "asOf") => {
            if let Some(n) = s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                *v = serde_json::Value::Number(n);
            }
        }
        _ => {}
    }
}

/// A Kubernetes quantity (`500m`, `2`, `1.5`, `256Mi`, `1G`, `1e9`) as a number: cores for
/// CPU, bytes for memory. Written here because k8s-openapi keeps quantities as strings with no
/// arithmetic, and the few suffixes are fixed by the API (`resource.Quantity`).
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A plan's savings, in its status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SavingsStatus {
    /// Currency of the amounts (the price table's).
    pub currency: String,
    /// The nights of the last wake-up cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle: Option<SavingsPeriod>,
    /// The nights that ended this calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub this_month: Option<SavingsPeriod>,
    /// Every night counted since the plan has savings.
    pub total: SavingsPeriod,
    /// The last cycles, oldest first (at most [`KEPT_CYCLES`]), each ending at its last
    /// wake-up: what `kubectl hibernator savings --since` adds up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 31))]
    pub cycles: Vec<CycleSavings>,
    /// Restored records counted (`<target>/<key>@<recorded at>`), so that a night is counted
    /// once even when the controller restarts before their retirement. Forgotten with the
    /// first status write after the retirement (the forgetting alone makes none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<String>,
}

/// How many cycles `status.savings.cycles` keeps (a month of nights).
pub const KEPT_CYCLES: usize = 31;

/// One cycle's savings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CycleSavings {
    /// The cycle, its hours and amount.
    #[serde(flatten)]
    pub savings: SavingsPeriod,
    /// When its last counted resource woke up (RFC 3339).
    pub ended_at: String,
}

/// Savings over a period.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SavingsPeriod {
    /// The cycle (`20261127t0100`), the month (`2026-11`) or `total`.
    pub period: String,
    /// Resource-hours asleep (hours times instances or replicas).
    pub hours: f64,
    /// Estimated amount saved, for the resources the price table knows.
    pub amount: f64,
    /// Resource-hours of resources without a price (counted in `hours`, not in `amount`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpriced_hours: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl SavingsPeriod {
    fn add(&mut self, n: &Night) {
        self.hours = round(self.hours + n.hours);
        match n.amount {
            Some(a) => self.amount = round(self.amount + a),
            None => self.unpriced_hours = round(self.unpriced_hours + n.hours),
        }
    }
}

/// Four decimals: amounts in cents and below, without floating-point noise in the status.
fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// A restored record, as the savings ledger reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredNight {
    /// `<target>/<key>@<recorded at>`: the same record is counted once.
    pub id: String,
    /// The target.
    pub target: String,
    /// When it was recorded, just before it went to sleep.
    pub asleep_at: jiff::Timestamp,
    /// When the wake-up restored it.
    pub awake_at: jiff::Timestamp,
    /// The wake-up's cycle.
    pub cycle: String,
    /// Its size, if the runner said.
    pub sizing: Option<Sizing>,
}

/// What one counting added, per target type: `(target type, night)`.
pub type Added = Vec<(crate::params::TargetType, Night)>;

/// Counts the restored records not counted yet into `savings`, and forgets counted ids that
/// are no longer restored records (they were retired). A record without a sizing counts no
/// hours (nothing says how many units it had); one without a price counts hours only.
pub fn account(
    savings: &mut Option<SavingsStatus>,
    nights: &[RestoredNight],
    type_of: impl Fn(&str) -> Option<crate::params::TargetType>,
    prices: &PriceTable,
) -> Added {
    let mut added = Vec::new();
    if nights.is_empty() && savings.as_ref().is_none_or(|s| s.counted.is_empty()) {
        return added;
    }
    let s = savings.get_or_insert_with(|| SavingsStatus {
        currency: prices.currency.clone(),
        total: SavingsPeriod {
            period: "total".into(),
            ..SavingsPeriod::default()
        },
        ..SavingsStatus::default()
    });
    for n in nights {
        if s.counted.contains(&n.id) {
            continue;
        }
        s.counted.push(n.id.clone());
        let (Some(sizing), Some(type_)) = (&n.sizing, type_of(&n.target)) else {
            continue;
        };
        let night = night(n.asleep_at, n.awake_at, sizing, prices);
        let month = n.awake_at.strftime("%Y-%m").to_string();
        let last = s.last_cycle.get_or_insert_with(SavingsPeriod::default);
        if last.period != n.cycle {
            *last = SavingsPeriod {
                period: n.cycle.clone(),
                ..SavingsPeriod::default()
            };
        }
        last.add(&night);
        let this = s.this_month.get_or_insert_with(SavingsPeriod::default);
        if this.period != month {
            *this = SavingsPeriod {
                period: month,
                ..SavingsPeriod::default()
            };
        }
        this.add(&night);
        s.total.add(&night);
        let ended = n.awake_at.to_string();
        match s.cycles.iter_mut().find(|c| c.savings.period == n.cycle) {
            Some(c) => {
                c.savings.add(&night);
                if ended > c.ended_at {
                    c.ended_at = ended;
                }
            }
            None => {
                let mut c = CycleSavings {
                    savings: SavingsPeriod {
                        period: n.cycle.clone(),
                        ..SavingsPeriod::default()
                    },
                    ended_at: ended,
                };
                c.savings.add(&night);
                s.cycles.push(c);
                if s.cycles.len() > KEPT_CYCLES {
                    s.cycles.remove(0);
                }
            }
        }
        added.push((type_, night));
    }
    s.counted.retain(|id| nights.iter().any(|n| &n.id == id));
    added
}

/// What one resource's night saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Night {
    /// Resource-hours asleep: hours between the record (taken just before the resource went
    /// to sleep) and its wake-up, times how many units it has.
    pub hours: f64,
    /// The estimated amount; `None` when the table has no price for it.
    pub amount: Option<f64>,
}

/// The night of a resource asleep from `asleep_at` to `awake_at`, sized by `sizing`.
pub fn night(
    asleep_at: jiff::Timestamp,
    awake_at: jiff::Timestamp,
    sizing: &Sizing,
    prices: &PriceTable,
) -> Night {
    let elapsed = awake_at.duration_since(asleep_at).as_secs_f64().max(0.0) / 3600.0;
    let units = sizing.count.max(0.0);
    Night {
        hours: elapsed * units,
        amount: prices.unit_hourly(sizing).map(|p| p * elapsed * units),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_shipped_table_is_dated_sourced_and_valid() {
        let t = PriceTable::builtin();
        assert_eq!(t.currency, "USD");
        assert!(!t.as_of.is_empty() && t.source.contains("aws.amazon.com"));
        assert_eq!(t.check(), Ok(()));
        assert_eq!(t.regions["us-east-1"].ec2["m5.large"], 0.096);
        // The Kubernetes rates price an m5.large's size at its price.
        let k = t.kubernetes.unwrap();
        assert!((2.0 * k.vcpu_hour + 8.0 * k.gib_hour - 0.096).abs() < 1e-9);
    }

    #[test]
    fn nights_are_hours_times_units_times_price() {
        let t = PriceTable::builtin();
        let ng = Sizing {
            service: Some(Service::Ec2),
            instance_type: Some("m5.large".into()),
            count: 3.0,
            region: Some("us-east-1".into()),
            ..Sizing::default()
        };
        // 20:00 to 06:00 New York: ten hours.
        let n = night(
            at("2026-11-27T01:00:00Z"),
            at("2026-11-27T11:00:00Z"),
            &ng,
            &t,
        );
        assert!((n.hours - 30.0).abs() < 1e-9);
        assert!((n.amount.unwrap() - 30.0 * 0.096).abs() < 1e-9);

        let db = Sizing {
            service: Some(Service::Rds),
            instance_type: Some("db.r6g.large".into()),
            engine: Some("postgres".into()),
            multi_az: Some(true),
            region: Some("us-east-1".into()),
            ..Sizing {
                count: 1.0,
                ..Sizing::default()
            }
        };
        assert_eq!(t.unit_hourly(&db), Some(0.45), "Multi-AZ doubles");

        let unknown = Sizing {
            region: Some("eu-west-3".into()),
            ..ng.clone()
        };
        let n = night(
            at("2026-11-27T01:00:00Z"),
            at("2026-11-27T03:00:00Z"),
            &unknown,
            &t,
        );
        assert_eq!((n.hours, n.amount), (6.0, None), "hours count, no price");
        assert_eq!(unknown.describe(), "m5.large in eu-west-3");
    }

    #[test]
    fn restored_records_are_counted_once_into_cycle_month_and_total() {
        use crate::params::TargetType;
        let t = PriceTable::builtin();
        let ng = |count: f64| Sizing {
            service: Some(Service::Ec2),
            instance_type: Some("m5.large".into()),
            count,
            region: Some("us-east-1".into()),
            ..Sizing::default()
        };
        let rn = |target: &str, key: &str, from: &str, to: &str, cycle: &str, s: Option<Sizing>| {
            RestoredNight {
                id: format!("{target}/{key}@{from}"),
                target: target.into(),
                asleep_at: at(from),
                awake_at: at(to),
                cycle: cycle.into(),
                sizing: s,
            }
        };
        let types = |t: &str| match t {
            "cluster" => Some(TargetType::Eks),
            "apps" => Some(TargetType::Workloads),
            _ => None,
        };
        let night1 = vec![
            rn(
                "cluster",
                "nodegroup:a",
                "2026-11-27T01:00:00Z",
                "2026-11-27T11:00:00Z",
                "c1",
                Some(ng(2.0)),
            ),
            rn(
                "cluster",
                "nodegroup:b",
                "2026-11-27T01:00:00Z",
                "2026-11-27T11:00:00Z",
                "c1",
                Some(Sizing {
                    region: Some("mars-1".into()),
                    ..ng(1.0)
                }),
            ),
            rn(
                "apps",
                "deployment:x/y",
                "2026-11-27T01:00:00Z",
                "2026-11-27T11:00:00Z",
                "c1",
                None,
            ),
        ];
        let mut s = None;
        let added = account(&mut s, &night1, types, &t);
        assert_eq!(added.len(), 2, "the record without a sizing counts nothing");
        let st = s.clone().unwrap();
        assert_eq!(st.currency, "USD");
        let expected = SavingsPeriod {
            period: "c1".into(),
            hours: 30.0,
            amount: 1.92,
            unpriced_hours: 10.0,
        };
        assert_eq!(st.last_cycle, Some(expected.clone()));
        assert_eq!(st.this_month.as_ref().unwrap().period, "2026-11");
        assert_eq!(st.total.hours, 30.0);
        assert_eq!(st.counted.len(), 3);

        // The same records again (not retired yet, or a restart): nothing more.
        assert!(account(&mut s, &night1, types, &t).is_empty());
        assert_eq!(s.as_ref().unwrap().total.amount, 1.92);
        // Retired: the ids go.
        assert!(account(&mut s, &[], types, &t).is_empty());
        assert!(s.as_ref().unwrap().counted.is_empty());

        // The next night, in December: a new cycle and month, the total grows.
        let night2 = vec![rn(
            "cluster",
            "nodegroup:a",
            "2026-12-01T01:00:00Z",
            "2026-12-01T06:00:00Z",
            "c2",
            Some(ng(2.0)),
        )];
        account(&mut s, &night2, types, &t);
        let st = s.unwrap();
        assert_eq!(st.last_cycle.unwrap().hours, 10.0);
        assert_eq!(st.this_month.unwrap().period, "2026-12");
        assert_eq!(st.total.hours, 40.0);
        assert_eq!(st.total.amount, 2.88);
        let cycles: Vec<(&str, f64, &str)> = st
            .cycles
            .iter()
            .map(|c| {
                (
                    c.savings.period.as_str(),
                    c.savings.hours,
                    c.ended_at.as_str(),
                )
            })
            .collect();
        assert_eq!(
            cycles,
            [
                ("c1", 30.0, "2026-11-27T11:00:00Z"),
                ("c2", 10.0, "2026-12-01T06:00:00Z")
            ]
        );
    }

    #[test]
    fn quantities_read_as_the_api_writes_them() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("256Mi"), Some(268435456.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("1e9"), Some(1e9));
        assert_eq!(quantity("lots"), None);
        let none = Sizing {
            service: Some(Service::Kubernetes),
            count: 2.0,
            ..Sizing::default()
        };
        assert_eq!(
            PriceTable::builtin().unit_hourly(&none),
            None,
            "no requests, no price"
        );
    }

    #[test]
    fn a_users_table_extends_and_overrides_the_shipped_one() {
        let mut t = PriceTable::builtin();
        let mine = PriceTable::from_json(
            r#"{"currency": "EUR", "kubernetes": {"vcpuHour": 0.02, "gibHour": 0.002},
                "regions": {"us-east-1": {"ec2": {"m5.large": 0.06}},
                            "eu-west-3": {"rds": {"postgres/db.t3.medium": 0.08}}}}"#,
        )
        .unwrap();
        t.merge(mine);
        assert_eq!(t.currency, "EUR");
        assert_eq!(t.regions["us-east-1"].ec2["m5.large"], 0.06);
        assert_eq!(
            t.regions["us-east-1"].ec2["m5.xlarge"], 0.192,
            "the rest stays"
        );
        let db = Sizing {
            service: Some(Service::Rds),
            instance_type: Some("db.t3.medium".into()),
            engine: Some("postgres".into()),
            region: Some("eu-west-3".into()),
            count: 1.0,
            ..Sizing::default()
        };
        assert_eq!(t.unit_hourly(&db), Some(0.08));
        let pods = Sizing {
            service: Some(Service::Kubernetes),
            cpu: Some(0.5),
            memory_gib: Some(1.0),
            count: 4.0,
            ..Sizing::default()
        };
        assert!((t.unit_hourly(&pods).unwrap() - 0.012).abs() < 1e-12);

        let e =
            PriceTable::from_json(r#"{"regions": {"x": {"ec2": {"m5.large": -1}}}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the price table's regions.x.ec2[\"m5.large\"] is -1; prices are numbers of at least 0"
        );
        // What `helm --set` makes of decimals.
        let t = PriceTable::from_json(
            r#"{"asOf": "2026", "regions": {"x": {"ec2": {"m5.large": "0.107"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            (t.regions["x"].ec2["m5.large"], t.as_of.as_str()),
            (0.107, "2026")
        );
        // A typo is an error naming the field, not a silently ignored price.
        let e = PriceTable::from_json(r#"{"region": {}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `region`"), "{e}");
    }
}
