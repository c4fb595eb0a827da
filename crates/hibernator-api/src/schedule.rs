//! The schedule engine: for a plan's windows, its ScheduleExceptions and an instant, whether
//! the targets should sleep, why, and when the next hibernation and wake-up are.
//!
//! Semantics (SPEC "Schedules"):
//! - A window opens at `start` on each listed day and closes at `end` the same day, or, when
//!   `end` is earlier than `start`, at `end` on the next listed day (so `MON-FRI 20:00-06:00`
//!   sleeps from Friday 20:00 through Monday 06:00).
//! - Windows are OR-ed; awake gaps of at most one minute between sleeps are closed.
//! - Local times that do not exist (spring forward) are taken as the first instant after the
//!   gap; ambiguous ones (fall back) as their first occurrence.
//! - Exceptions apply inside `[validFrom, validUntil)`: `replace` swaps the plan's windows for
//!   its own, `extend` adds windows, `suspend` keeps the targets awake inside its windows and
//!   wins over everything; a sleep that would start within a suspend's `leadTime` before its
//!   window and run into it is not started at all.
//!
//! Implementation: the engine turns windows into half-open UTC intervals over a horizon
//! around the instant asked about and combines them with interval arithmetic. The tests
//! compare it with a brute-force oracle that walks minute by minute instead.

use std::fmt;
use std::sync::LazyLock;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};

use crate::common::{DayOfWeek, OffHourWindow};
use crate::exception::{ExceptionType, MAX_LEAD_TIME_SECONDS, ScheduleException, parse_lead_time};
use crate::plan::{Operation, Schedule};

/// The time zone database compiled into the binary, so that every component (controller,
/// CLI, images without tzdata) reads schedules the same way.
static TZDB: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// Awake gaps this short or shorter between two sleeps are closed.
pub const MERGE_GAP: SignedDuration = SignedDuration::from_secs(60);
/// How far ahead the engine looks for the next transition.
const MAX_HORIZON_DAYS: i64 = 400;
/// Longest possible window: an overnight window with one listed day lasts under 8 days.
const LOOKBACK_DAYS: i64 = 8;

/// Looks up an IANA time zone in the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TZDB.get(name)
        .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
}

/// Problems that make a schedule unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not an IANA time zone name.
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    /// Not `HH:MM`.
    #[error("time {0:?} is not HH:MM (24 h)")]
    BadTime(String),
    /// `start == end`.
    #[error("window starts and ends at {0}: it must not be empty")]
    EmptyWindow(String),
    /// No day listed.
    #[error("window lists no day")]
    NoDays,
    /// Unparsable or too long lead time.
    #[error("leadTime {0:?} is not a duration such as 30m or 1h30m of at most 24h")]
    BadLeadTime(String),
    /// Not a date.
    #[error("dates: {0:?} is not a date YYYY-MM-DD")]
    BadDate(String),
}

/// A window ready for evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    start: Time,
    end: Time,
    /// Bit `d` set when day `d` (Monday = 0) is listed.
    days: u8,
}

impl Window {
    /// Parses a window.
    pub fn parse(w: &OffHourWindow) -> Result<Self, ScheduleError> {
        let start = parse_hhmm(&w.start)?;
        let end = parse_hhmm(&w.end)?;
        if start == end {
            return Err(ScheduleError::EmptyWindow(w.start.clone()));
        }
        let days = w
            .days_of_week
            .iter()
            .fold(0u8, |acc, d| acc | (1 << d.index()));
        if days == 0 {
            return Err(ScheduleError::NoDays);
        }
        Ok(Self { start, end, days })
    }

    fn listed(&self, date: Date) -> bool {
        self.days & (1 << date.weekday().to_monday_zero_offset()) != 0
    }

    /// The date on which a window opened on `date` closes.
    fn closing_date(&self, date: Date) -> Date {
        if self.end > self.start {
            return date;
        }
        (1..=7)
            .map(|k| date.saturating_add(jiff::Span::new().days(k)))
            .find(|d| self.listed(*d))
            .expect("a window lists at least one day")
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = DayOfWeek::ALL
            .iter()
            .filter(|d| self.days & (1 << d.index()) != 0)
            .map(|d| d.as_str())
            .collect();
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02}",
            days.join(","),
            self.start.hour(),
            self.start.minute(),
            self.end.hour(),
            self.end.minute()
        )
    }
}

fn parse_hhmm(s: &str) -> Result<Time, ScheduleError> {
    let bad = || ScheduleError::BadTime(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// An exception ready for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    /// Name of the ScheduleException.
    pub name: String,
    /// Its type.
    pub type_: ExceptionType,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity (exclusive).
    pub valid_until: Timestamp,
    /// Lead time (suspend only).
    pub lead_time: SignedDuration,
    /// Its windows.
    pub windows: Vec<Window>,
    /// The targets it applies to; empty: the whole plan.
    pub targets: Vec<String>,
    /// Whole days asleep (`extend`), from `dates` and the calendar.
    pub holidays: Vec<Holiday>,
}

/// A whole day asleep, midnight to midnight in the plan's time zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holiday {
    /// The local date.
    pub date: Date,
    /// Its name (the calendar event's SUMMARY), if it has one.
    pub name: Option<String>,
}

impl Exception {
    /// Reads a ScheduleException object without a calendar (see [`Self::with_calendar`]).
    pub fn from_object(e: &ScheduleException) -> Result<Self, ScheduleError> {
        let lead_time = match &e.spec.lead_time {
            None => SignedDuration::ZERO,
            Some(s) => match parse_lead_time(s) {
                Some(secs) if secs <= MAX_LEAD_TIME_SECONDS => SignedDuration::from_secs(secs),
                _ => return Err(ScheduleError::BadLeadTime(s.clone())),
            },
        };
        Ok(Self {
            name: e.metadata.name.clone().unwrap_or_default(),
            type_: e.spec.type_,
            valid_from: e.spec.valid_from.0,
            valid_until: e.spec.valid_until.0,
            lead_time,
            windows: e
                .spec
                .windows
                .iter()
                .map(Window::parse)
                .collect::<Result<_, _>>()?,
            targets: e.spec.targets.clone().unwrap_or_default(),
            holidays: e
                .spec
                .dates
                .iter()
                .flatten()
                .map(|d| {
                    d.0.parse::<Date>()
                        .map(|date| Holiday { date, name: None })
                        .map_err(|_| ScheduleError::BadDate(d.0.clone()))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Adds the all-day events of the exception's iCalendar file (`calendarRef`) within its
    /// validity (a day either side, as local dates depend on the time zone).
    pub fn with_calendar(mut self, ics: &str) -> Result<Self, crate::calendar::CalendarError> {
        let day = SignedDuration::from_hours(24);
        let from = self.valid_from.saturating_sub(day).expect("in range");
        let until = self.valid_until.saturating_add(day).expect("in range");
        let utc = TimeZone::UTC;
        let found = crate::calendar::holidays(
            ics,
            from.to_zoned(utc.clone()).date(),
            until.to_zoned(utc).date(),
        )?;
        self.holidays.extend(found);
        // One entry per date, named when any source names it.
        self.holidays.sort_by(|a, b| {
            a.date
                .cmp(&b.date)
                .then(b.name.is_some().cmp(&a.name.is_some()))
        });
        self.holidays.dedup_by(|a, b| a.date == b.date);
        Ok(self)
    }

    /// Does the exception apply to `target` (`None`: the whole plan)?
    fn applies_to(&self, target: Option<&str>) -> bool {
        self.targets.is_empty() || target.is_some_and(|t| self.targets.iter().any(|x| x == t))
    }

    fn valid_at(&self, t: Timestamp) -> bool {
        self.valid_from <= t && t < self.valid_until
    }
}

/// A plan's schedule with the exceptions that refer to it.
#[derive(Debug, Clone)]
pub struct CompiledSchedule {
    tz: TimeZone,
    tz_name: String,
    windows: Vec<Window>,
    /// The exceptions this view of the schedule obeys.
    exceptions: Vec<Exception>,
    /// Exceptions for some targets only, kept for [`Self::for_target`] (plan view only).
    scoped: Vec<Exception>,
}

/// One scheduled change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: Timestamp,
    /// Hibernate or wake up.
    pub operation: Operation,
}

/// What the schedule says at an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// True when the targets should sleep.
    pub in_off_hours: bool,
    /// True when a suspend exception keeps the targets awake (they would sleep otherwise).
    pub kept_awake: bool,
    /// Why, in a sentence.
    pub reason: String,
    /// The next hibernation after the instant.
    pub next_hibernate_at: Option<Timestamp>,
    /// The next wake-up after the instant.
    pub next_wake_up_at: Option<Timestamp>,
    /// Exceptions valid at the instant.
    pub active_exceptions: Vec<String>,
    /// When in off-hours: when the current sleep began, if within the last week.
    pub current_since: Option<Timestamp>,
}

impl Evaluation {
    /// The nearer of the next hibernation and the next wake-up.
    pub fn next_transition(&self) -> Option<Transition> {
        match (self.next_hibernate_at, self.next_wake_up_at) {
            (Some(h), Some(w)) if w < h => Some(Transition {
                at: w,
                operation: Operation::WakeUp,
            }),
            (Some(h), _) => Some(Transition {
                at: h,
                operation: Operation::Hibernate,
            }),
            (None, Some(w)) => Some(Transition {
                at: w,
                operation: Operation::WakeUp,
            }),
            (None, None) => None,
        }
    }
}

/// A half-open interval of instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: Timestamp,
    end: Timestamp,
}

/// Where a sleep interval comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Plan(usize),
    Exception(usize, usize),
    /// A whole day of an `extend` exception: (exception, holiday).
    Holiday(usize, usize),
}

impl CompiledSchedule {
    /// Compiles a plan schedule and its exceptions.
    /// Exceptions with `targets` apply only to [`Self::for_target`] views.
    pub fn new(schedule: &Schedule, mut exceptions: Vec<Exception>) -> Result<Self, ScheduleError> {
        // By name, so that the reason ("kept awake by ...", the replace whose windows apply)
        // does not depend on the order in which the API server or the files listed them.
        exceptions.sort_by(|a, b| a.name.cmp(&b.name));
        let (whole, scoped): (Vec<Exception>, Vec<Exception>) =
            exceptions.into_iter().partition(|e| e.applies_to(None));
        Ok(Self {
            tz: time_zone(&schedule.timezone)?,
            tz_name: schedule.timezone.clone(),
            windows: schedule
                .off_hours
                .iter()
                .map(Window::parse)
                .collect::<Result<_, _>>()?,
            exceptions: whole,
            scoped,
        })
    }

    /// True when some exception applies to some targets only.
    pub fn has_scoped_exceptions(&self) -> bool {
        !self.scoped.is_empty()
    }

    /// Names of the exceptions that apply to some targets only and name `target`.
    pub fn scoped_exceptions_of(&self, target: &str) -> Vec<&str> {
        self.scoped
            .iter()
            .filter(|e| e.applies_to(Some(target)))
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The schedule as one target sees it: the plan's windows, the exceptions for the whole
    /// plan and those naming the target.
    pub fn for_target(&self, target: &str) -> Self {
        let mut exceptions = self.exceptions.clone();
        exceptions.extend(
            self.scoped
                .iter()
                .filter(|e| e.applies_to(Some(target)))
                .cloned(),
        );
        exceptions.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            tz: self.tz.clone(),
            tz_name: self.tz_name.clone(),
            windows: self.windows.clone(),
            exceptions,
            scoped: vec![],
        }
    }

    /// The plan's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The plan's time zone name.
    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// The instant of a local date and time, per the DST rules above.
    fn resolve(&self, dt: DateTime) -> Timestamp {
        resolve_local(&self.tz, dt)
    }

    /// Raw sleep intervals of a set of windows, opened on local dates `[first, last]`.
    fn window_spans(
        &self,
        windows: &[Window],
        first: Date,
        last: Date,
        mut push: impl FnMut(usize, Span),
    ) {
        let mut date = first;
        while date <= last {
            for (i, w) in windows.iter().enumerate() {
                if !w.listed(date) {
                    continue;
                }
                let start = self.resolve(date.to_datetime(w.start));
                let end = self.resolve(w.closing_date(date).to_datetime(w.end));
                if start < end {
                    push(i, Span { start, end });
                }
            }
            date = date.tomorrow().expect("dates in range");
        }
    }

    /// All raw intervals (before combination) with their sources, opened between `from - 8d`
    /// and `to`.
    fn raw(&self, from: Timestamp, to: Timestamp) -> Vec<(Source, Span)> {
        let first = self.local_date(
            from.saturating_sub(SignedDuration::from_hours(24 * LOOKBACK_DAYS))
                .expect("in range"),
        );
        let last = self.local_date(to).tomorrow().expect("dates in range");
        let mut out = Vec::new();
        self.window_spans(&self.windows, first, last, |i, s| {
            out.push((Source::Plan(i), s))
        });
        for (e_idx, e) in self.exceptions.iter().enumerate() {
            self.window_spans(&e.windows, first, last, |w_idx, s| {
                let clipped = Span {
                    start: s.start.max(e.valid_from),
                    end: s.end.min(e.valid_until),
                };
                if clipped.start < clipped.end {
                    out.push((Source::Exception(e_idx, w_idx), clipped));
                }
            });
            for (h_idx, h) in e.holidays.iter().enumerate() {
                if h.date < first || h.date > last {
                    continue;
                }
                let start = self.resolve(h.date.to_datetime(Time::midnight()));
                let end = self.resolve(
                    h.date
                        .tomorrow()
                        .expect("dates in range")
                        .to_datetime(Time::midnight()),
                );
                let clipped = Span {
                    start: start.max(e.valid_from),
                    end: end.min(e.valid_until),
                };
                if clipped.start < clipped.end {
                    out.push((Source::Holiday(e_idx, h_idx), clipped));
                }
            }
        }
        out
    }

    fn local_date(&self, t: Timestamp) -> Date {
        t.to_zoned(self.tz.clone()).date()
    }

    /// Final sleep intervals overlapping `[from, to)`, sorted. Intervals touching the edges of
    /// the computed range may be cut short there.
    fn sleeps(&self, from: Timestamp, to: Timestamp) -> Vec<Span> {
        let raw = self.raw(from, to);
        let by_type = |t: ExceptionType| {
            raw.iter()
                .filter(move |(src, _)| match src {
                    Source::Exception(e, _) => self.exceptions[*e].type_ == t,
                    // Whole days count as extend, whatever the type (validation allows them
                    // on extend only).
                    Source::Holiday(..) => t == ExceptionType::Extend,
                    Source::Plan(_) => false,
                })
                .map(|(_, s)| *s)
        };
        // Plan windows, except while a replace exception is valid.
        let replaced: Vec<Span> = self
            .exceptions
            .iter()
            .filter(|e| e.type_ == ExceptionType::Replace)
            .map(|e| Span {
                start: e.valid_from,
                end: e.valid_until,
            })
            .collect();
        let mut sleep: Vec<Span> = Vec::new();
        for (src, s) in &raw {
            if matches!(src, Source::Plan(_)) {
                sleep.extend(subtract(*s, &union(replaced.clone(), SignedDuration::ZERO)));
            }
        }
        sleep.extend(by_type(ExceptionType::Replace));
        sleep.extend(by_type(ExceptionType::Extend));
        let sleep = union(sleep, MERGE_GAP);

        let suspends: Vec<(Span, SignedDuration)> = raw
            .iter()
            .filter_map(|(src, s)| match src {
                Source::Exception(e, _) if self.exceptions[*e].type_ == ExceptionType::Suspend => {
                    Some((*s, self.exceptions[*e].lead_time))
                }
                _ => None,
            })
            .collect();
        let awake = union(
            suspends.iter().map(|(s, _)| *s).collect(),
            SignedDuration::ZERO,
        );
        let mut out = Vec::new();
        for s in sleep {
            for piece in subtract(s, &awake) {
                let undone_soon = suspends.iter().any(|(sus, lead)| {
                    piece.end == sus.start
                        && piece.start >= sus.start.saturating_sub(*lead).expect("in range")
                });
                if !undone_soon {
                    out.push(piece);
                }
            }
        }
        out
    }

    /// What the schedule says at `at`.
    pub fn evaluate(&self, at: Timestamp) -> Evaluation {
        let mut horizon = 16;
        loop {
            let to = at
                .saturating_add(SignedDuration::from_hours(24 * horizon))
                .expect("in range");
            // Transitions later than `trusted` might move once more days are computed.
            let trusted = to
                .saturating_sub(SignedDuration::from_hours(24 * LOOKBACK_DAYS))
                .expect("in range");
            let sleeps = self.sleeps(at, to);
            let current = sleeps.iter().find(|s| s.start <= at && at < s.end);
            let next = sleeps.iter().find(|s| s.start > at);
            let next_hibernate_at = next.map(|s| s.start).filter(|t| *t < trusted);
            let next_wake_up_at = match current {
                Some(s) => Some(s.end),
                None => next.map(|s| s.end),
            }
            .filter(|t| *t < trusted);
            if (next_hibernate_at.is_some() && next_wake_up_at.is_some())
                || horizon >= MAX_HORIZON_DAYS
            {
                let earliest = at
                    .saturating_sub(SignedDuration::from_hours(24 * (LOOKBACK_DAYS - 1)))
                    .expect("in range");
                let (reason, kept_awake) = self.reason(at, current.is_some());
                return Evaluation {
                    current_since: current.map(|s| s.start).filter(|t| *t > earliest),
                    in_off_hours: current.is_some(),
                    reason,
                    kept_awake,
                    next_hibernate_at,
                    next_wake_up_at,
                    active_exceptions: self
                        .exceptions
                        .iter()
                        .filter(|e| e.valid_at(at))
                        .map(|e| e.name.clone())
                        .collect(),
                };
            }
            horizon = (horizon * 4).min(MAX_HORIZON_DAYS);
        }
    }

    /// The next `count` transitions after `from`.
    pub fn transitions(&self, from: Timestamp, count: usize) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < count {
            let e = self.evaluate(at);
            let Some(t) = e.next_transition() else { break };
            out.push(t);
            at = t.at;
        }
        out
    }

    /// Why the targets sleep or not at `at`, and whether a suspend keeps them awake (they
    /// would sleep otherwise).
    fn reason(&self, at: Timestamp, asleep: bool) -> (String, bool) {
        let raw = self.raw(at, at);
        let covering: Vec<&Source> = raw
            .iter()
            .filter(|(_, s)| s.start <= at && at < s.end)
            .map(|(src, _)| src)
            .collect();
        let describe = |src: &Source| match src {
            Source::Plan(i) => format!("off-hours window {}", self.windows[*i]),
            Source::Exception(e, w) => {
                let e = &self.exceptions[*e];
                format!(
                    "{} exception {:?} window {}",
                    e.type_.as_str(),
                    e.name,
                    e.windows[*w]
                )
            }
            Source::Holiday(e, h) => {
                let e = &self.exceptions[*e];
                let h = &e.holidays[*h];
                match &h.name {
                    Some(n) => format!("holiday {n:?} ({}) of exception {:?}", h.date, e.name),
                    None => format!("holiday {} of exception {:?}", h.date, e.name),
                }
            }
        };
        let replace_active = self
            .exceptions
            .iter()
            .find(|e| e.type_ == ExceptionType::Replace && e.valid_at(at));
        if asleep {
            let reasons: Vec<String> = covering
                .iter()
                .filter(|src| match src {
                    Source::Plan(_) => replace_active.is_none(),
                    Source::Exception(e, _) => self.exceptions[*e].type_ != ExceptionType::Suspend,
                    Source::Holiday(..) => true,
                })
                .map(|s| describe(s))
                .collect();
            if reasons.is_empty() {
                return (
                    "between off-hours windows less than a minute apart".to_string(),
                    false,
                );
            }
            return (format!("inside {}", reasons.join(" and ")), false);
        }
        if let Some(src) = covering.iter().find(
            |src| matches!(src, Source::Exception(e, _) if self.exceptions[*e].type_ == ExceptionType::Suspend),
        ) {
            return (format!("kept awake by {}", describe(src)), true);
        }
        let sleeps_by_plan = covering.iter().any(|src| match src {
            Source::Plan(_) => replace_active.is_none(),
            Source::Exception(e, _) => self.exceptions[*e].type_ != ExceptionType::Suspend,
            Source::Holiday(..) => true,
        });
        if sleeps_by_plan {
            return (
                "kept awake: a suspend exception opens within its leadTime".to_string(),
                true,
            );
        }
        let why = match replace_active {
            Some(e) => format!("outside the windows of replace exception {:?}", e.name),
            None => "outside off-hours".to_string(),
        };
        (why, false)
    }
}

/// The instant of a local date-time in `tz`: a time skipped by a DST change is taken as the
/// first instant after the gap, an ambiguous one as its first occurrence.
pub fn resolve_local(tz: &TimeZone, dt: DateTime) -> Timestamp {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).expect("in range"),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).expect("in range"),
        AmbiguousOffset::Gap { after, .. } => {
            // With the later offset, the time falls before the transition; the transition
            // itself is the first instant after the gap.
            let probe = after.to_timestamp(dt).expect("in range");
            tz.following(probe)
                .next()
                .map(|t| t.timestamp())
                .expect("a gap ends at a transition")
        }
    }
}

/// Union of intervals, also joining intervals separated by at most `gap`.
fn union(mut spans: Vec<Span>, gap: SignedDuration) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start, s.end));
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start.duration_since(last.end) <= gap => {
                last.end = last.end.max(s.end);
            }
            _ => out.push(s),
        }
    }
    out
}

/// `s` minus a sorted, disjoint list of intervals.
fn subtract(s: Span, holes: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut cursor = s.start;
    for h in holes {
        if h.end <= cursor || h.start >= s.end {
            continue;
        }
        if h.start > cursor {
            out.push(Span {
                start: cursor,
                end: h.start,
            });
        }
        cursor = cursor.max(h.end);
    }
    if cursor < s.end {
        out.push(Span {
            start: cursor,
            end: s.end,
        });
    }
    out
}

#[cfg(test)]
mod tests;
