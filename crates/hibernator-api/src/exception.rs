//! ScheduleException: a temporary change to a plan's schedule, kept in Git.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{NAME_PATTERN, OffHourWindow};

/// Longest accepted `leadTime`.
pub const MAX_LEAD_TIME_SECONDS: i64 = 24 * 3600;

/// Specification of a ScheduleException.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hibernator.ardikasaputro.io",
    version = "v1alpha1",
    kind = "ScheduleException",
    plural = "scheduleexceptions",
    singular = "scheduleexception",
    shortname = "hexc",
    category = "hibernator",
    namespaced,
    status = "ScheduleExceptionStatus",
    derive = "PartialEq",
    doc = "A temporary change to a HibernationPlan's schedule: extra off-hours (extend), windows kept awake (suspend) or replacement windows (replace), valid between two instants.",
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.planRef.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Valid From", type_ = "string", json_path = ".spec.validFrom"),
    printcolumn(name = "Valid Until", type_ = "string", json_path = ".spec.validUntil"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.validUntil > self.validFrom")
    .message("validUntil must be after validFrom")
    .field_path(".validUntil"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.leadTime) || self.type == 'suspend'")
    .message(kube::core::Message::Expression("'leadTime applies only to type suspend, not ' + self.type".into()))
    .field_path(".leadTime"))]
#[x_kube(validation = kube::core::Rule::new("(!has(self.dates) && !has(self.calendarRef)) || self.type == 'extend'")
    .message(kube::core::Message::Expression("'dates and calendarRef apply only to type extend, not ' + self.type".into()))
    .field_path(".dates"))]
#[x_kube(validation = kube::core::Rule::new("(has(self.windows) && size(self.windows) > 0) || (has(self.dates) && size(self.dates) > 0) || has(self.calendarRef)")
    .message("give windows, dates or calendarRef")
    .field_path(".windows"))]
pub struct ScheduleExceptionSpec {
    /// The plan (in this namespace) whose schedule this changes.
    pub plan_ref: PlanRef,
    /// Start of validity (RFC 3339).
    pub valid_from: Time,
    /// End of validity (RFC 3339), after `validFrom`.
    pub valid_until: Time,
    /// `extend`: also sleep inside these windows. `suspend`: stay awake inside these windows
    /// (wins over everything). `replace`: use these windows instead of the plan's.
    #[serde(rename = "type")]
    pub type_: ExceptionType,
    /// For `suspend`: do not start a hibernation this long before a suspend window opens, as it
    /// would have to be undone (`30m`, `2h`, `1h30m`; at most `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"),
        length(min = 2, max = 16)
    )]
    pub lead_time: Option<String>,
    /// The windows, read in the plan's timezone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub windows: Vec<OffHourWindow>,
    /// `extend` only: whole days asleep (`YYYY-MM-DD`, midnight to midnight in the plan's
    /// timezone), such as public holidays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 400))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub dates: Option<Vec<HolidayDate>>,
    /// `extend` only: whole days asleep from the all-day events of an iCalendar (RFC 5545)
    /// file kept in a ConfigMap of this namespace (yearly `RRULE`s and `EXDATE`s included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_ref: Option<CalendarRef>,
    /// The plan's targets this exception applies to; absent: the whole plan. A target kept
    /// awake also keeps awake the targets it needs (those that wake up before it); a target put
    /// to sleep also puts to sleep the targets that need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 50),
        inner(
            length(min = 1, max = 63),
            regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub targets: Option<Vec<String>>,
}

/// A date `YYYY-MM-DD`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct HolidayDate(
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), length(max = 10))] pub String,
);

/// An iCalendar file in a ConfigMap.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CalendarRef {
    /// Name of the ConfigMap (same namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Key holding the iCalendar text.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Reference to a plan in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlanRef {
    /// Name of the HibernationPlan.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// Exception types.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum ExceptionType {
    /// Add off-hours windows.
    Extend,
    /// Keep the targets awake inside the windows.
    Suspend,
    /// Use these windows instead of the plan's.
    Replace,
}

impl ExceptionType {
    /// The type as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extend => "extend",
            Self::Suspend => "suspend",
            Self::Replace => "replace",
        }
    }
}

/// Observed state of a ScheduleException.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleExceptionStatus {
    /// The generation the controller last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (`Ready`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::status::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// `Pending` before `validFrom`, `Active` inside validity, `Expired` after `validUntil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ExceptionState>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `Pending` before `validFrom`, `Active` inside validity, `Expired` after `validUntil`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionState {
    /// Not valid yet.
    Pending,
    /// Valid now.
    Active,
    /// No longer valid.
    Expired,
}

/// Parses a `leadTime` such as `1h30m` into seconds.
pub fn parse_lead_time(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut units_seen = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let factor = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        if number.is_empty() || units_seen.contains(c) {
            return None;
        }
        units_seen.push(c);
        total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(factor)?)?;
        number.clear();
    }
    if !number.is_empty() || units_seen.is_empty() {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::parse_lead_time;

    #[test]
    fn lead_times() {
        assert_eq!(parse_lead_time("30m"), Some(1800));
        assert_eq!(parse_lead_time("1h30m"), Some(5400));
        assert_eq!(parse_lead_time("2h"), Some(7200));
        assert_eq!(parse_lead_time("45s"), Some(45));
        assert_eq!(parse_lead_time("1h1h"), None);
        assert_eq!(parse_lead_time("10"), None);
        assert_eq!(parse_lead_time(""), None);
        assert_eq!(parse_lead_time("1d"), None);
    }
}
