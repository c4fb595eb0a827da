//! Types shared by several kinds: off-hour windows, days of the week, references and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of HibernationPlan and ScheduleException.
pub const GROUP: &str = "hibernator.ardikasaputro.io";
/// API group of the connector kinds, CloudProvider and K8SCluster.
pub const CONNECTOR_GROUP: &str = "connector.hibernator.ardikasaputro.io";
/// The only version served so far.
pub const VERSION: &str = "v1alpha1";

/// Pattern of a wall-clock time `HH:MM` (24 h).
pub const TIME_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// Pattern of a Kubernetes object name used as a reference (DNS-1123 subdomain).
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A day of the week, as written in `daysOfWeek`.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum DayOfWeek {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl DayOfWeek {
    /// All days, Monday first.
    pub const ALL: [DayOfWeek; 7] = [
        DayOfWeek::Mon,
        DayOfWeek::Tue,
        DayOfWeek::Wed,
        DayOfWeek::Thu,
        DayOfWeek::Fri,
        DayOfWeek::Sat,
        DayOfWeek::Sun,
    ];

    /// Days since Monday (Monday = 0).
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The day as written in manifests (`MON`).
    pub fn as_str(self) -> &'static str {
        ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"][self as usize]
    }

    /// The day of a jiff weekday.
    pub fn from_weekday(w: jiff::civil::Weekday) -> Self {
        Self::ALL[w.to_monday_zero_offset() as usize]
    }
}

impl std::fmt::Display for DayOfWeek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recurring off-hours window: sleep at `start` and wake at `end` on each listed day, in the
/// plan's timezone. A window whose `end` is earlier than its `start` wakes on the next listed
/// day, so `MON-FRI 20:00-06:00` sleeps from Friday 20:00 through Monday 06:00.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.start != self.end")
    .message(kube::core::Message::Expression("'start and end are both ' + self.start + ': a window must not be empty'".into()))
    .field_path(".end"))]
pub struct OffHourWindow {
    /// Local time (`HH:MM`, 24 h) at which the targets go to sleep.
    #[schemars(regex(pattern = TIME_PATTERN), length(max = 5))]
    pub start: String,
    /// Local time (`HH:MM`, 24 h) at which the targets wake up. Earlier than `start` means the
    /// next listed day.
    #[schemars(regex(pattern = TIME_PATTERN), length(max = 5))]
    pub end: String,
    /// Days on which the window starts (`MON`..`SUN`, each at most once).
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub days_of_week: Vec<DayOfWeek>,
}

/// Reference to a Secret in the referring object's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Status fields shared by every kind: kstatus conditions and the observed generation.
pub trait HasConditions {
    /// The conditions, if any.
    fn conditions(&self) -> &[Condition];
}

/// Returns the condition of `type_` from a list.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets a condition in a list, keeping `lastTransitionTime` when the status does not change.
/// Returns true when anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let mut new = new;
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == new {
                false
            } else {
                *existing = new;
                true
            }
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Removes a condition from a list. Returns true when it was present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Builds a condition.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

/// An error and its causes on one line (`failed to X: because Y: because Z`); a cause whose
/// text the line already holds is not repeated. Used wherever an error is reported as text
/// (runner summaries, gRPC statuses, Events).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !s_text.is_empty() && !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Well-known condition types (kstatus plus the plan's domain condition).
pub mod condition_types {
    /// The object is in a steady state it chose.
    pub const READY: &str = "Ready";
    /// A new generation is being taken in.
    pub const RECONCILING: &str = "Reconciling";
    /// A person must act.
    pub const STALLED: &str = "Stalled";
    /// The plan's targets are asleep.
    pub const HIBERNATED: &str = "Hibernated";
    /// Everything the last wake-up had to restore is back (False: something stayed asleep or
    /// its restore data was lost; a person must look).
    pub const RESTORED: &str = "Restored";
    /// In-sleep enforcement found resources awake while the plan is Hibernated (information,
    /// never a failure: it does not change `Ready`).
    pub const DRIFTED: &str = "Drifted";
}
