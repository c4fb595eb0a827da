use jiff::civil::{Date, date};

use super::holidays;

const GERMANY: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//example//holidays//EN\r
BEGIN:VEVENT\r
UID:new-year@example\r
DTSTART;VALUE=DATE:20250101\r
DTEND;VALUE=DATE:20250102\r
RRULE:FREQ=YEARLY\r
SUMMARY:New Year's Day\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:christmas@example\r
DTSTART;VALUE=DATE:20251225\r
DURATION:P2D\r
RRULE:FREQ=YEARLY;UNTIL=20271231\r
EXDATE;VALUE=DATE:20261225\r
SUMMARY:Christmas\\, Boxing Day\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:unity@example\r
DTSTART;VALUE=DATE:20261003\r
SUMMARY:German Unity Day\r
 (folded)\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:cancelled@example\r
DTSTART;VALUE=DATE:20261005\r
STATUS:CANCELLED\r
SUMMARY:Not a holiday\r
END:VEVENT\r
END:VCALENDAR\r
";

fn dates(from: Date, until: Date) -> Vec<(String, String)> {
    holidays(GERMANY, from, until)
        .unwrap()
        .into_iter()
        .map(|h| (h.date.to_string(), h.name.unwrap_or_default()))
        .collect()
}

#[test]
fn all_day_events_with_yearly_rules_and_exdates() {
    let got = dates(date(2026, 1, 1), date(2027, 12, 31));
    let names: Vec<(&str, &str)> = got.iter().map(|(d, n)| (d.as_str(), n.as_str())).collect();
    assert_eq!(
        names,
        vec![
            ("2026-01-01", "New Year's Day"),
            ("2026-10-03", "German Unity Day(folded)"),
            // 2026-12-25 is excluded; the event's second day stays out with it.
            ("2027-01-01", "New Year's Day"),
            ("2027-12-25", "Christmas, Boxing Day"),
            ("2027-12-26", "Christmas, Boxing Day"),
        ]
    );
}

#[test]
fn until_ends_a_rule_and_the_range_is_inclusive() {
    let got = dates(date(2028, 1, 1), date(2028, 12, 26));
    assert_eq!(
        got.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        vec!["2028-01-01"],
        "Christmas ends with UNTIL=20271231"
    );
    let edge = dates(date(2025, 12, 26), date(2025, 12, 26));
    assert_eq!(edge.len(), 1, "the second day of a two-day event: {edge:?}");
}

#[test]
fn timed_events_are_refused_with_their_line() {
    let ics = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nSUMMARY:Standup\nDTSTART:20261201T090000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    let err = holidays(ics, date(2026, 1, 1), date(2026, 12, 31)).unwrap_err();
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.to_string().contains("\"Standup\""), "{err}");
    assert!(err.to_string().contains("only all-day events"), "{err}");
}

#[test]
fn a_bad_rule_names_its_line() {
    let ics = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20260101\nRRULE:FREQ=SOMETIMES\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR\n";
    let err = holidays(ics, date(2026, 1, 1), date(2026, 12, 31)).unwrap_err();
    assert_eq!(err.line, Some(5), "{err}");
    assert!(
        err.to_string().starts_with("line 5: event \"x\": RRULE"),
        "{err}"
    );
}

#[test]
fn text_that_is_not_a_calendar_is_refused() {
    let err = holidays("hello: world\n", date(2026, 1, 1), date(2026, 12, 31)).unwrap_err();
    assert!(err.to_string().contains("not an iCalendar file"), "{err}");
    let err = holidays(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:2026\nEND:VEVENT\nEND:VCALENDAR\n",
        date(2026, 1, 1),
        date(2026, 12, 31),
    )
    .unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
}
