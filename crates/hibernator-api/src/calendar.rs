//! Holiday calendars: the all-day events of an iCalendar (RFC 5545) file, as local dates.
//!
//! The text is parsed by the `icalendar` crate and recurrences are expanded by the `rrule`
//! crate. What is written here is only the reading of an all-day event: its dates
//! (`DTSTART`/`DTEND`/`DURATION`, `RDATE`, `EXDATE`) and name, with errors that point at the
//! event's line.

use std::collections::BTreeSet;

use jiff::civil::Date;

use crate::schedule::Holiday;

/// Most dates one calendar may yield within an exception's validity.
pub const MAX_DATES: usize = 5_000;

/// A calendar that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct CalendarError {
    /// The line (of the file as given, counting from 1) the problem is on, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl CalendarError {
    fn at(line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// The all-day events of `ics` falling on a date in `[from, until]`, sorted by date, one per
/// date. Timed events are an error: a holiday calendar holds whole days.
pub fn holidays(ics: &str, from: Date, until: Date) -> Result<Vec<Holiday>, CalendarError> {
    let text = ics.replace("\r\n", "\n");
    let unfolded = icalendar::parser::unfold(&text);
    let calendar = icalendar::parser::read_calendar(&unfolded)
        .map_err(|e| CalendarError::at(None, format!("not an iCalendar file: {}", e.trim())))?;
    let lines = EventLines::of(&text);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    if !first.is_some_and(|l| l.eq_ignore_ascii_case("BEGIN:VCALENDAR")) {
        return Err(CalendarError::at(
            Some(1),
            "not an iCalendar file: it does not begin with BEGIN:VCALENDAR",
        ));
    }
    // The parser hands over the calendar's components, or the calendar itself: VEVENTs are
    // looked for at any depth.
    let mut events = Vec::new();
    let mut stack: Vec<&icalendar::parser::Component<'_>> = calendar.components.iter().collect();
    while let Some(c) = stack.pop() {
        if c.name.as_str().eq_ignore_ascii_case("VEVENT") {
            events.push(c);
        } else {
            stack.extend(c.components.iter());
        }
    }
    events.reverse();
    let mut out: Vec<Holiday> = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let line = lines.event(n);
        let props = Props(&event.properties);
        if props
            .value("STATUS")
            .is_some_and(|s| s.eq_ignore_ascii_case("CANCELLED"))
        {
            continue;
        }
        let name = props.value("SUMMARY").map(unescape);
        let what = name
            .as_deref()
            .map(|n| format!("event {n:?}"))
            .unwrap_or_else(|| "event".into());
        let err = |prop: &str, message: String| {
            CalendarError::at(
                lines.property(n, prop).or(line),
                format!("{what}: {message}"),
            )
        };
        let start = props
            .value("DTSTART")
            .ok_or_else(|| err("DTSTART", "has no DTSTART".into()))?;
        let start = all_day(start).ok_or_else(|| {
            err(
                "DTSTART",
                format!(
                    "DTSTART {start} is not a date: only all-day events (DTSTART;VALUE=DATE:YYYYMMDD) can be holidays"
                ),
            )
        })?;
        let days = match (props.value("DTEND"), props.value("DURATION")) {
            (Some(end), _) => {
                let end = all_day(end)
                    .ok_or_else(|| err("DTEND", format!("DTEND {end} is not a date YYYYMMDD")))?;
                let days = (end - start).get_days();
                if days < 1 {
                    return Err(err(
                        "DTEND",
                        format!("DTEND {end} is not after DTSTART {start}"),
                    ));
                }
                days
            }
            (None, Some(d)) => duration_days(d).ok_or_else(|| {
                err(
                    "DURATION",
                    format!("DURATION {d} is not a whole number of days or weeks (P1D, P2W)"),
                )
            })?,
            (None, None) => 1,
        };
        let mut starts: BTreeSet<Date> = BTreeSet::new();
        match props.value("RRULE") {
            None => {
                starts.insert(start);
            }
            Some(rule) => {
                let look_from = from
                    .checked_sub(jiff::Span::new().days(i64::from(days)))
                    .unwrap_or(from);
                starts.extend(expand(start, rule, look_from, until).map_err(|m| err("RRULE", m))?);
            }
        }
        for value in props.values("RDATE") {
            for d in value.split(',') {
                starts
                    .insert(all_day(d).ok_or_else(|| {
                        err("RDATE", format!("RDATE {d} is not a date YYYYMMDD"))
                    })?);
            }
        }
        for value in props.values("EXDATE") {
            for d in value.split(',') {
                let d = all_day(d)
                    .ok_or_else(|| err("EXDATE", format!("EXDATE {d} is not a date YYYYMMDD")))?;
                starts.remove(&d);
            }
        }
        for s in starts {
            for k in 0..days {
                let Ok(date) = s.checked_add(jiff::Span::new().days(k)) else {
                    continue;
                };
                if date >= from && date <= until {
                    out.push(Holiday {
                        date,
                        name: name.clone(),
                    });
                }
            }
        }
        if out.len() > MAX_DATES {
            return Err(err(
                "RRULE",
                format!(
                    "the calendar yields more than {MAX_DATES} dates within the exception's validity"
                ),
            ));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.date == b.date);
    Ok(out)
}

/// The properties of one component.
struct Props<'a, 'b>(&'b [icalendar::parser::Property<'a>]);

impl Props<'_, '_> {
    fn values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |p| p.name.as_str().eq_ignore_ascii_case(name))
            .map(|p| p.val.as_str())
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }
}

/// A DATE value `YYYYMMDD` (a DATE-TIME is not one).
fn all_day(v: &str) -> Option<Date> {
    let v = v.trim();
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Date::new(
        v[0..4].parse().ok()?,
        v[4..6].parse().ok()?,
        v[6..8].parse().ok()?,
    )
    .ok()
}

/// `P<n>D` or `P<n>W`.
fn duration_days(v: &str) -> Option<i32> {
    let body = v.trim().strip_prefix('P')?;
    let (n, unit) = body.split_at(body.len().checked_sub(1)?);
    let n: i32 = n.parse().ok()?;
    let days = match unit {
        "D" => n,
        "W" => n.checked_mul(7)?,
        _ => return None,
    };
    (days >= 1).then_some(days)
}

/// Occurrence dates of an all-day event's RRULE within `[from, until]`.
fn expand(start: Date, rule: &str, from: Date, until: Date) -> Result<Vec<Date>, String> {
    // The event's dates are expanded as midnights in UTC: an all-day event has no time zone,
    // and the dates are read in the plan's time zone afterwards. An UNTIL given as a date is
    // written as that date's last second to match the DATE-TIME start.
    let rule = rule
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") && all_day(v).is_some() => {
                format!("UNTIL={}T235959Z", v.trim())
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";");
    let text = format!("DTSTART:{}T000000Z\nRRULE:{rule}", start.strftime("%Y%m%d"));
    let set: rrule::RRuleSet = text
        .parse()
        .map_err(|e: rrule::RRuleError| format!("RRULE {rule} is not valid: {e}"))?;
    let midnight = |d: Date| {
        use chrono::TimeZone as _;
        rrule::Tz::UTC
            .with_ymd_and_hms(
                i32::from(d.year()),
                d.month() as u32,
                d.day() as u32,
                0,
                0,
                0,
            )
            .single()
    };
    let (Some(after), Some(before)) = (
        midnight(from.checked_sub(jiff::Span::new().days(1)).unwrap_or(from)),
        midnight(
            until
                .checked_add(jiff::Span::new().days(1))
                .unwrap_or(until),
        ),
    ) else {
        return Ok(vec![]);
    };
    let found = set.after(after).before(before).all(u16::MAX);
    found
        .dates
        .iter()
        .map(|d| {
            use chrono::Datelike as _;
            Date::new(d.year() as i16, d.month() as i8, d.day() as i8)
                .map_err(|e| format!("RRULE {rule} yields a date out of range: {e}"))
        })
        .filter(|d| d.as_ref().map_or(true, |d| *d >= from && *d <= until))
        .collect()
}

/// TEXT value escapes (RFC 5545 3.3.11).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Where each VEVENT and its properties start in the file as given (folded lines counted as
/// written), to point errors at them.
struct EventLines {
    /// Per event: its BEGIN line and its property lines as (name, line).
    events: Vec<(usize, Vec<(String, usize)>)>,
}

impl EventLines {
    fn of(text: &str) -> Self {
        let mut events = Vec::new();
        let mut current: Option<(usize, Vec<(String, usize)>)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.starts_with([' ', '\t']) {
                continue;
            }
            let upper = raw.trim().to_ascii_uppercase();
            if upper == "BEGIN:VEVENT" {
                current = Some((line, vec![]));
            } else if upper == "END:VEVENT" {
                events.extend(current.take());
            } else if let Some((_, props)) = current.as_mut() {
                let name: String = upper
                    .chars()
                    .take_while(|c| *c != ':' && *c != ';')
                    .collect();
                props.push((name, line));
            }
        }
        Self { events }
    }

    fn event(&self, n: usize) -> Option<usize> {
        self.events.get(n).map(|(l, _)| *l)
    }

    fn property(&self, n: usize, name: &str) -> Option<usize> {
        self.events
            .get(n)?
            .1
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, l)| *l)
    }
}

#[cfg(test)]
mod tests;
