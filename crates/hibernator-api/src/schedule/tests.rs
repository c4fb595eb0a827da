use std::collections::HashSet;

use jiff::civil::DateTime;
use jiff::{SignedDuration, Timestamp, ToSpan};
use proptest::prelude::*;

use super::*;
use crate::common::DayOfWeek;

fn window(start: &str, end: &str, days: &[DayOfWeek]) -> OffHourWindow {
    OffHourWindow {
        start: start.into(),
        end: end.into(),
        days_of_week: days.to_vec(),
    }
}

fn schedule(tz: &str, windows: Vec<OffHourWindow>) -> Schedule {
    Schedule {
        timezone: tz.into(),
        off_hours: windows,
    }
}

use DayOfWeek::*;
const WEEKDAYS: &[DayOfWeek] = &[Mon, Tue, Wed, Thu, Fri];
const ALL_DAYS: &[DayOfWeek] = &[Mon, Tue, Wed, Thu, Fri, Sat, Sun];

/// An instant from a local time in a zone (unambiguous times only).
fn local(tz: &str, s: &str) -> Timestamp {
    let dt: DateTime = s.parse().unwrap();
    dt.to_zoned(time_zone(tz).unwrap()).unwrap().timestamp()
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn compile(s: &Schedule) -> CompiledSchedule {
    CompiledSchedule::new(s, vec![]).unwrap()
}

#[test]
fn seed_plan_sleeps_weeknights_and_the_whole_weekend() {
    let ny = "America/New_York";
    let s = compile(&schedule(ny, vec![window("20:00", "06:00", WEEKDAYS)]));
    // 2026-11-25 is a Wednesday.
    let e = s.evaluate(local(ny, "2026-11-25T12:00"));
    assert!(!e.in_off_hours);
    assert_eq!(e.reason, "outside off-hours");
    assert_eq!(e.next_hibernate_at, Some(local(ny, "2026-11-25T20:00")));
    assert_eq!(e.next_wake_up_at, Some(local(ny, "2026-11-26T06:00")));

    let e = s.evaluate(local(ny, "2026-11-25T20:00"));
    assert!(e.in_off_hours, "asleep from the boundary instant on");
    assert_eq!(e.current_since, Some(local(ny, "2026-11-25T20:00")));
    assert_eq!(
        s.evaluate(local(ny, "2026-11-29T20:00")).current_since,
        Some(local(ny, "2026-11-27T20:00"))
    );
    assert!(
        e.reason.contains("MON,TUE,WED,THU,FRI 20:00-06:00"),
        "{}",
        e.reason
    );

    // Friday night through Monday morning.
    for t in [
        "2026-11-27T20:00",
        "2026-11-28T12:00",
        "2026-11-29T23:00",
        "2026-11-30T05:59",
    ] {
        let e = s.evaluate(local(ny, t));
        assert!(e.in_off_hours, "asleep at {t}");
        assert_eq!(
            e.next_wake_up_at,
            Some(local(ny, "2026-11-30T06:00")),
            "at {t}"
        );
    }
    let e = s.evaluate(local(ny, "2026-11-30T06:00"));
    assert!(!e.in_off_hours);
    assert_eq!(e.next_hibernate_at, Some(local(ny, "2026-11-30T20:00")));

    let t = s.transitions(local(ny, "2026-11-27T12:00"), 4);
    assert_eq!(
        t,
        vec![
            Transition {
                at: local(ny, "2026-11-27T20:00"),
                operation: Operation::Hibernate
            },
            Transition {
                at: local(ny, "2026-11-30T06:00"),
                operation: Operation::WakeUp
            },
            Transition {
                at: local(ny, "2026-11-30T20:00"),
                operation: Operation::Hibernate
            },
            Transition {
                at: local(ny, "2026-12-01T06:00"),
                operation: Operation::WakeUp
            },
        ]
    );
}

#[test]
fn new_york_spring_forward_skipped_time_is_the_end_of_the_gap() {
    // 2026-03-08 (a Sunday) 02:00 EST jumps to 03:00 EDT (07:00Z).
    let s = compile(&schedule(
        "America/New_York",
        vec![window("02:30", "04:00", &[Sun])],
    ));
    let e = s.evaluate(utc("2026-03-08T00:00Z"));
    assert_eq!(e.next_hibernate_at, Some(utc("2026-03-08T07:00Z")));
    assert_eq!(e.next_wake_up_at, Some(utc("2026-03-08T08:00Z")));
}

#[test]
fn new_york_fall_back_ambiguous_time_is_the_first_occurrence() {
    // 2026-11-01 (a Sunday) 02:00 EDT falls back to 01:00 EST (06:00Z).
    let s = compile(&schedule(
        "America/New_York",
        vec![window("01:30", "03:00", &[Sun])],
    ));
    let e = s.evaluate(utc("2026-11-01T00:00Z"));
    assert_eq!(
        e.next_hibernate_at,
        Some(utc("2026-11-01T05:30Z")),
        "01:30 EDT"
    );
    assert_eq!(
        e.next_wake_up_at,
        Some(utc("2026-11-01T08:00Z")),
        "03:00 EST"
    );
    // During the repeated hour the plan stays asleep.
    assert!(s.evaluate(utc("2026-11-01T06:40Z")).in_off_hours);
}

#[test]
fn berlin_transitions() {
    // 2026-03-29: 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25: 03:00 CEST -> 02:00 CET (01:00Z).
    let s = compile(&schedule(
        "Europe/Berlin",
        vec![window("02:15", "04:00", &[Sun])],
    ));
    let spring = s.evaluate(utc("2026-03-28T12:00Z"));
    assert_eq!(
        spring.next_hibernate_at,
        Some(utc("2026-03-29T01:00Z")),
        "02:15 does not exist"
    );
    assert_eq!(
        spring.next_wake_up_at,
        Some(utc("2026-03-29T02:00Z")),
        "04:00 CEST"
    );
    let autumn = s.evaluate(utc("2026-10-24T12:00Z"));
    assert_eq!(
        autumn.next_hibernate_at,
        Some(utc("2026-10-25T00:15Z")),
        "first 02:15 (CEST)"
    );
    assert_eq!(
        autumn.next_wake_up_at,
        Some(utc("2026-10-25T03:00Z")),
        "04:00 CET"
    );
}

#[test]
fn berlin_window_fully_inside_the_gap_is_skipped() {
    let s = compile(&schedule(
        "Europe/Berlin",
        vec![window("02:15", "02:45", &[Sun])],
    ));
    let t = s.transitions(utc("2026-03-28T12:00Z"), 2);
    // The 29 March window has no duration; the next real one is 5 April.
    assert_eq!(t[0].at, utc("2026-04-05T00:15Z"));
    assert_eq!(t[0].operation, Operation::Hibernate);
}

#[test]
fn lord_howe_half_hour_shift() {
    // 2026-10-04 02:00 +10:30 jumps to 02:30 +11 (15:30Z on 10-03);
    // 2026-04-05 02:00 +11 falls back to 01:30 +10:30 (15:00Z on 04-04).
    let tz = "Australia/Lord_Howe";
    let s = compile(&schedule(tz, vec![window("02:15", "06:00", &[Sun])]));
    let e = s.evaluate(utc("2026-10-03T00:00Z"));
    assert_eq!(e.next_hibernate_at, Some(utc("2026-10-03T15:30Z")));
    assert_eq!(e.next_wake_up_at, Some(utc("2026-10-03T19:00Z")));

    let s = compile(&schedule(tz, vec![window("01:45", "03:00", &[Sun])]));
    let e = s.evaluate(utc("2026-04-04T00:00Z"));
    assert_eq!(
        e.next_hibernate_at,
        Some(utc("2026-04-04T14:45Z")),
        "first 01:45 (+11)"
    );
    assert_eq!(
        e.next_wake_up_at,
        Some(utc("2026-04-04T16:30Z")),
        "03:00 +10:30"
    );
}

#[test]
fn lord_howe_window_ending_and_reopening_across_the_gap_matches_the_oracle() {
    // Found by `engine_matches_brute_force_oracle`. On Sunday 2026-10-04 Lord Howe jumps
    // from 02:00 +10:30 to 02:30 +11 (15:30Z on 10-03): the first window's Saturday night
    // closes at 02:15, inside the gap, and its Sunday night opens at 02:30, the first instant
    // after it; both resolve to 15:30Z.
    let s = compile(&schedule(
        "Australia/Lord_Howe",
        vec![
            window("02:30", "02:15", ALL_DAYS),
            window("02:15", "02:30", &[Tue, Wed, Thu, Fri]),
            window("23:59", "22:45", &[Thu, Fri, Sat, Sun]),
        ],
    ));
    check_engine_against_oracle(&s, utc("2026-10-03T15:30Z")).unwrap();

    // The first window alone sleeps through the jump and wakes at Monday 02:15 +11.
    let s = compile(&schedule(
        "Australia/Lord_Howe",
        vec![window("02:30", "02:15", ALL_DAYS)],
    ));
    let e = s.evaluate(utc("2026-10-03T15:30Z"));
    assert!(e.in_off_hours, "{}", e.reason);
    assert_eq!(e.next_wake_up_at, Some(utc("2026-10-04T15:15Z")));
    assert_eq!(e.next_hibernate_at, Some(utc("2026-10-04T15:30Z")));
    check_engine_against_oracle(&s, utc("2026-10-03T15:00Z")).unwrap();
}

#[test]
fn zone_without_dst() {
    let s = compile(&schedule(
        "Asia/Tokyo",
        vec![window("19:00", "07:00", WEEKDAYS)],
    ));
    let e = s.evaluate(utc("2026-07-01T00:00Z")); // Wednesday 09:00 JST
    assert!(!e.in_off_hours);
    assert_eq!(e.next_hibernate_at, Some(utc("2026-07-01T10:00Z")));
    assert_eq!(e.next_wake_up_at, Some(utc("2026-07-01T22:00Z")));
}

#[test]
fn full_day_windows_merge_across_midnight() {
    let s = compile(&schedule(
        "Europe/Berlin",
        vec![window("00:00", "23:59", ALL_DAYS)],
    ));
    let e = s.evaluate(utc("2026-06-10T21:59:30Z")); // 23:59:30 CEST: inside the one-minute gap
    assert!(e.in_off_hours, "{}", e.reason);
    assert_eq!(e.next_wake_up_at, None, "no one-minute wake-up");
    assert_eq!(e.next_hibernate_at, None);

    // On weekdays only, the weekend is a real wake-up.
    let s = compile(&schedule(
        "Europe/Berlin",
        vec![window("00:00", "23:59", WEEKDAYS)],
    ));
    let e = s.evaluate(local("Europe/Berlin", "2026-06-10T23:59:30"));
    assert!(e.in_off_hours);
    assert_eq!(
        e.next_wake_up_at,
        Some(local("Europe/Berlin", "2026-06-12T23:59"))
    );
    assert_eq!(
        e.next_hibernate_at,
        Some(local("Europe/Berlin", "2026-06-15T00:00"))
    );
}

#[test]
fn overnight_window_wakes_on_the_next_listed_day_across_the_week_end() {
    let tz = "UTC";
    let s = compile(&schedule(tz, vec![window("22:00", "02:00", &[Sat, Sun])]));
    // Saturday 2026-11-28 22:00 -> Sunday 02:00; Sunday 22:00 -> next Saturday 02:00.
    let t = s.transitions(utc("2026-11-28T12:00Z"), 4);
    let at: Vec<_> = t.iter().map(|t| t.at).collect();
    assert_eq!(
        at,
        vec![
            utc("2026-11-28T22:00Z"),
            utc("2026-11-29T02:00Z"),
            utc("2026-11-29T22:00Z"),
            utc("2026-12-05T02:00Z"),
        ]
    );
}

#[test]
fn several_windows_are_or_ed() {
    let s = compile(&schedule(
        "UTC",
        vec![
            window("12:00", "13:00", WEEKDAYS),
            window("20:00", "06:00", WEEKDAYS),
        ],
    ));
    assert!(s.evaluate(utc("2026-11-25T12:30Z")).in_off_hours);
    assert!(s.evaluate(utc("2026-11-25T21:00Z")).in_off_hours);
    assert!(!s.evaluate(utc("2026-11-25T15:00Z")).in_off_hours);
}

fn exception(
    name: &str,
    t: ExceptionType,
    from: &str,
    until: &str,
    lead: i64,
    windows: Vec<OffHourWindow>,
) -> Exception {
    Exception {
        name: name.into(),
        type_: t,
        valid_from: utc(from),
        valid_until: utc(until),
        lead_time: SignedDuration::from_secs(lead),
        windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
        targets: vec![],
        holidays: vec![],
    }
}

#[test]
fn suspend_keeps_awake_and_wins_over_extend() {
    let base = schedule("UTC", vec![window("20:00", "06:00", WEEKDAYS)]);
    let suspend = exception(
        "launch",
        ExceptionType::Suspend,
        "2026-11-27T00:00Z",
        "2026-11-30T00:00Z",
        0,
        vec![window("08:00", "20:00", &[Sat])],
    );
    let extend = exception(
        "extra",
        ExceptionType::Extend,
        "2026-11-27T00:00Z",
        "2026-11-30T00:00Z",
        0,
        vec![window("10:00", "12:00", &[Sat])],
    );
    let s = CompiledSchedule::new(&base, vec![suspend, extend]).unwrap();
    // Saturday 2026-11-28: asleep until 08:00, awake 08:00-20:00 (suspend beats extend), asleep again.
    assert!(s.evaluate(utc("2026-11-28T07:00Z")).in_off_hours);
    let e = s.evaluate(utc("2026-11-28T11:00Z"));
    assert!(!e.in_off_hours);
    assert!(
        e.reason.contains("suspend exception \"launch\""),
        "{}",
        e.reason
    );
    // By name, whatever order they were given in.
    assert_eq!(
        e.active_exceptions,
        vec!["extra".to_string(), "launch".to_string()]
    );
    assert_eq!(e.next_hibernate_at, Some(utc("2026-11-28T20:00Z")));
    assert_eq!(e.next_wake_up_at, Some(utc("2026-11-30T06:00Z")));
}

#[test]
fn suspend_lead_time_prevents_a_hibernation_that_would_be_undone() {
    // Base sleeps from 20:00; a suspend window opens at 21:00 with one hour of lead time, so
    // the 20:00 hibernation is not started at all.
    let base = schedule("UTC", vec![window("20:00", "06:00", WEEKDAYS)]);
    let suspend = exception(
        "maintenance",
        ExceptionType::Suspend,
        "2026-11-25T00:00Z",
        "2026-11-26T00:00Z",
        3600,
        vec![window("21:00", "23:00", &[Wed])],
    );
    let s = CompiledSchedule::new(&base, vec![suspend.clone()]).unwrap();
    let e = s.evaluate(utc("2026-11-25T20:30Z"));
    assert!(!e.in_off_hours, "{}", e.reason);
    assert_eq!(e.next_hibernate_at, Some(utc("2026-11-25T23:00Z")));
    // Without lead time it sleeps for one hour.
    let mut no_lead = suspend;
    no_lead.lead_time = SignedDuration::ZERO;
    let s = CompiledSchedule::new(&base, vec![no_lead]).unwrap();
    assert!(s.evaluate(utc("2026-11-25T20:30Z")).in_off_hours);
}

#[test]
fn replace_swaps_windows_only_while_valid() {
    let base = schedule("UTC", vec![window("20:00", "06:00", WEEKDAYS)]);
    let replace = exception(
        "holidays",
        ExceptionType::Replace,
        "2026-12-24T00:00Z",
        "2026-12-27T00:00Z",
        0,
        vec![window("00:00", "23:59", ALL_DAYS)],
    );
    let s = CompiledSchedule::new(&base, vec![replace]).unwrap();
    assert!(s.evaluate(utc("2026-12-24T12:00Z")).in_off_hours);
    assert!(s.evaluate(utc("2026-12-26T12:00Z")).in_off_hours);
    // Back to the plan's windows after validity: Sunday 27th is asleep (weekend), Monday 28th
    // midday awake.
    assert!(!s.evaluate(utc("2026-12-28T12:00Z")).in_off_hours);
    assert!(!s.evaluate(utc("2026-12-23T12:00Z")).in_off_hours);
}

#[test]
fn unknown_time_zone_is_an_error() {
    let err = CompiledSchedule::new(
        &schedule("Mars/Olympus", vec![window("20:00", "06:00", WEEKDAYS)]),
        vec![],
    )
    .unwrap_err();
    assert_eq!(err, ScheduleError::UnknownTimeZone("Mars/Olympus".into()));
}

// ---------------------------------------------------------------------------------------------
// Brute-force oracle: walks minute by minute in the plan's zone, firing each window's start and
// end events when the local clock reaches them (cron style: a window is asleep when its last
// start fired after its last end), then applies exceptions minute by minute.

struct Oracle<'a> {
    s: &'a CompiledSchedule,
}

/// The local clock reading reached a civil time `e` at minute `m` when it was before `e` a
/// minute earlier and is at or after it now; each event fires at most once.
struct Clock {
    prev: DateTime,
    now: DateTime,
}

impl Clock {
    fn reaches(&self, e: DateTime) -> bool {
        self.prev < e && e <= self.now
    }
}

/// When an event fired: its minute, then its local time (orders events reached in the same
/// minute, when the clock jumps over a DST gap).
type Fired = (i64, DateTime);

#[derive(Clone, Copy, Default)]
struct WindowState {
    last_start: Option<Fired>,
    last_end: Option<Fired>,
}

impl WindowState {
    fn asleep(&self) -> bool {
        match (self.last_start, self.last_end) {
            (Some(s), Some(e)) => s > e,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[allow(clippy::needless_range_loop)] // indexes tie exceptions to their per-window state
impl Oracle<'_> {
    /// Final state for each minute of `[from, to)` (both on whole minutes).
    fn states(&self, from: Timestamp, to: Timestamp) -> Vec<bool> {
        let tz = &self.s.tz;
        let start = from.as_second() / 60 - 60 * 24 * 10; // warm up: ten days of events
        let end = to.as_second() / 60;
        let n_ex = self.s.exceptions.len();
        let mut plan_state = vec![WindowState::default(); self.s.windows.len()];
        let mut ex_state: Vec<Vec<WindowState>> = self
            .s
            .exceptions
            .iter()
            .map(|e| vec![WindowState::default(); e.windows.len()])
            .collect();
        let mut fired: HashSet<(usize, usize, usize, bool, DateTime)> = HashSet::new();
        let minute_ts = |m: i64| Timestamp::from_second(m * 60).unwrap();
        let civil = |m: i64| minute_ts(m).to_zoned(tz.clone()).datetime();
        let mut prev = civil(start - 1);
        // Per minute, after exceptions and before merging/suspend: (sleep, suspend raw per (e,w))
        let mut eff2 = Vec::new();
        let mut sus_raw: Vec<Vec<Vec<bool>>> = self
            .s
            .exceptions
            .iter()
            .map(|e| vec![Vec::new(); e.windows.len()])
            .collect();
        let mut suspended = Vec::new();
        for m in start..end {
            let now = civil(m);
            let clock = Clock { prev, now };
            let fire = |owner: usize,
                        idx: usize,
                        w: &Window,
                        st: &mut WindowState,
                        fired: &mut HashSet<_>| {
                let mut d = prev.date();
                while d <= now.date() {
                    if w.listed(d) {
                        for (is_start, t) in [(true, w.start), (false, w.end)] {
                            let e = d.to_datetime(t);
                            if clock.reaches(e) && fired.insert((owner, idx, 0, is_start, e)) {
                                if is_start {
                                    st.last_start = Some((m, e));
                                } else {
                                    st.last_end = Some((m, e));
                                }
                            }
                        }
                    }
                    d = d.tomorrow().unwrap();
                }
            };
            // Events reached in the same minute (the clock jumped over a gap) take effect in
            // the order of their local times: a window wholly inside the gap stays empty
            // (start, then end), one whose previous night ends in the gap and whose next night
            // starts in or right after it stays asleep (end, then start).
            for (i, w) in self.s.windows.iter().enumerate() {
                fire(0, i, w, &mut plan_state[i], &mut fired);
            }
            for (k, e) in self.s.exceptions.iter().enumerate() {
                for (i, w) in e.windows.iter().enumerate() {
                    fire(k + 1, i, w, &mut ex_state[k][i], &mut fired);
                }
            }
            prev = now;
            let t = minute_ts(m);
            let any = |st: &[WindowState]| st.iter().any(|s| s.asleep());
            let replace_valid: Vec<usize> = (0..n_ex)
                .filter(|&k| {
                    self.s.exceptions[k].type_ == ExceptionType::Replace
                        && self.s.exceptions[k].valid_at(t)
                })
                .collect();
            let mut sleep = if replace_valid.is_empty() {
                any(&plan_state)
            } else {
                replace_valid.iter().any(|&k| any(&ex_state[k]))
            };
            for k in 0..n_ex {
                let e = &self.s.exceptions[k];
                // A holiday is asleep for every minute whose local date it is.
                let holiday = e.holidays.iter().any(|h| h.date == now.date());
                if e.type_ == ExceptionType::Extend
                    && e.valid_at(t)
                    && (any(&ex_state[k]) || holiday)
                {
                    sleep = true;
                }
            }
            eff2.push(sleep);
            let mut sus = false;
            for k in 0..n_ex {
                let e = &self.s.exceptions[k];
                for i in 0..e.windows.len() {
                    let on = e.type_ == ExceptionType::Suspend
                        && e.valid_at(t)
                        && ex_state[k][i].asleep();
                    sus_raw[k][i].push(on);
                    sus |= on;
                }
            }
            suspended.push(sus);
        }
        // Close awake gaps of at most one minute between sleeps.
        let len = eff2.len();
        let mut merged = eff2.clone();
        for i in 1..len.saturating_sub(1) {
            if !eff2[i] && eff2[i - 1] && eff2[i + 1] {
                merged[i] = true;
            }
        }
        let mut p: Vec<bool> = (0..len).map(|i| merged[i] && !suspended[i]).collect();
        // Drop sleeps that start within a lead time of the suspend window they run into.
        let mut i = 0;
        while i < len {
            if !p[i] {
                i += 1;
                continue;
            }
            let a = i;
            while i < len && p[i] {
                i += 1;
            }
            let b = i;
            if b < len {
                let drop = (0..n_ex).any(|k| {
                    let e = &self.s.exceptions[k];
                    let lead_min = e.lead_time.as_secs() / 60;
                    (0..e.windows.len()).any(|w| {
                        let raw = &sus_raw[k][w];
                        raw[b] && (b == 0 || !raw[b - 1]) && (a as i64) >= b as i64 - lead_min
                    })
                });
                if drop {
                    p[a..b].iter_mut().for_each(|x| *x = false);
                }
            }
        }
        let skip = (from.as_second() / 60 - start) as usize;
        p[skip..].to_vec()
    }
}

const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "UTC",
];

/// Instants near 2026's DST transitions in the zones above, and ordinary ones.
const ANCHORS: &[&str] = &[
    "2026-03-08T07:00Z",
    "2026-11-01T06:00Z",
    "2026-03-29T01:00Z",
    "2026-10-25T01:00Z",
    "2026-04-04T15:00Z",
    "2026-10-03T15:30Z",
    "2026-06-15T12:00Z",
    "2026-12-31T23:00Z",
];

fn arb_window() -> impl Strategy<Value = OffHourWindow> {
    // Times on a 15-minute grid make boundary coincidences (gaps of exactly one minute aside)
    // frequent; 23:59 and 00:00 exercise the merge.
    let time = prop_oneof![
        (0u8..24, prop::sample::select(vec![0u8, 15, 30, 45]))
            .prop_map(|(h, m)| format!("{h:02}:{m:02}")),
        Just("23:59".to_string()),
        Just("00:00".to_string()),
        Just("02:30".to_string()),
        Just("01:30".to_string()),
    ];
    (
        time.clone(),
        time,
        prop::sample::subsequence(DayOfWeek::ALL.to_vec(), 1..=7),
    )
        .prop_filter("start != end", |(s, e, _)| s != e)
        .prop_map(|(start, end, days)| OffHourWindow {
            start,
            end,
            days_of_week: days,
        })
}

fn arb_exception(anchor: Timestamp) -> impl Strategy<Value = Exception> {
    (
        prop::sample::select(vec![
            ExceptionType::Extend,
            ExceptionType::Suspend,
            ExceptionType::Replace,
        ]),
        -6 * 24 * 60i64..6 * 24 * 60,
        60i64..5 * 24 * 60,
        prop::sample::select(vec![0i64, 30, 60, 120]),
        prop::collection::vec(arb_window(), 0..=2),
        prop::collection::vec(-7i64..7, 0..=3),
        prop::sample::select(vec![vec![], vec!["a"], vec!["b"], vec!["a", "b"]]),
    )
        .prop_filter("windows or dates", |(t, _, _, _, w, d, _)| {
            !w.is_empty() || (*t == ExceptionType::Extend && !d.is_empty())
        })
        .prop_map(
            move |(t, from_min, len_min, lead_min, windows, days, targets)| {
                let valid_from = anchor + SignedDuration::from_mins(from_min);
                let anchor_date = anchor.to_zoned(TimeZone::UTC).date();
                let holidays = if t == ExceptionType::Extend {
                    days.iter()
                        .map(|d| Holiday {
                            date: anchor_date.checked_add(jiff::Span::new().days(*d)).unwrap(),
                            name: Some(format!("day {d}")),
                        })
                        .collect()
                } else {
                    vec![]
                };
                Exception {
                    name: format!("e{from_min}"),
                    type_: t,
                    valid_from,
                    valid_until: valid_from + SignedDuration::from_mins(len_min),
                    lead_time: if t == ExceptionType::Suspend {
                        SignedDuration::from_mins(lead_min)
                    } else {
                        SignedDuration::ZERO
                    },
                    windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
                    targets: targets.iter().map(|t| t.to_string()).collect(),
                    holidays,
                }
            },
        )
}

/// A plan's schedule, an instant, and target `a`'s view of it built by hand: the exceptions
/// for the whole plan and those naming `a`, as if they were the plan's.
fn arb_case() -> impl Strategy<Value = (CompiledSchedule, Timestamp)> {
    arb_scoped_case().prop_map(|(s, _, at)| (s, at))
}

fn arb_scoped_case() -> impl Strategy<Value = (CompiledSchedule, CompiledSchedule, Timestamp)> {
    (
        prop::sample::select(ZONES.to_vec()),
        prop::sample::select(ANCHORS.to_vec()),
        -3 * 24 * 60i64..3 * 24 * 60,
        prop::collection::vec(arb_window(), 1..=3),
    )
        .prop_flat_map(|(tz, anchor, offset, windows)| {
            let anchor: Timestamp = anchor.parse().unwrap();
            let at = anchor + SignedDuration::from_mins(offset);
            (prop::collection::vec(arb_exception(anchor), 0..=3)).prop_map(move |mut exceptions| {
                // Names are unique among a plan's exceptions (one namespace).
                for (i, e) in exceptions.iter_mut().enumerate() {
                    e.name = format!("{}-{i}", e.name);
                }
                let for_a = exceptions
                    .iter()
                    .filter(|e| e.targets.is_empty() || e.targets.iter().any(|t| t == "a"))
                    .map(|e| Exception {
                        targets: vec![],
                        ..e.clone()
                    })
                    .collect();
                let s = CompiledSchedule::new(&schedule(tz, windows.clone()), exceptions).unwrap();
                let a = CompiledSchedule::new(&schedule(tz, windows.clone()), for_a).unwrap();
                (s, a, at)
            })
        })
}

/// The engine agrees with the minute-by-minute oracle on the state at `at` and on the next
/// hibernation and wake-up within nine days.
fn check_engine_against_oracle(s: &CompiledSchedule, at: Timestamp) -> Result<(), TestCaseError> {
    let horizon = 9 * 24 * 60;
    let to = at + SignedDuration::from_mins(horizon);
    let states = Oracle { s }.states(at, to);
    let e = s.evaluate(at);
    prop_assert_eq!(e.in_off_hours, states[0], "state at {} ({})", at, e.reason);
    let minute = |i: usize| at + SignedDuration::from_mins(i as i64);
    let next_on = (1..states.len())
        .find(|&i| states[i] && !states[i - 1])
        .map(minute);
    let next_off = (1..states.len())
        .find(|&i| !states[i] && states[i - 1])
        .map(minute);
    match next_on {
        Some(t) => prop_assert_eq!(e.next_hibernate_at, Some(t), "next hibernation"),
        None => prop_assert!(
            e.next_hibernate_at.is_none_or(|t| t >= to),
            "no hibernation within the horizon, engine says {:?}",
            e.next_hibernate_at
        ),
    }
    match next_off {
        Some(t) => prop_assert_eq!(e.next_wake_up_at, Some(t), "next wake-up"),
        None => prop_assert!(
            e.next_wake_up_at.is_none_or(|t| t >= to),
            "no wake-up within the horizon, engine says {:?}",
            e.next_wake_up_at
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The engine agrees with the minute-by-minute oracle on the state at an instant and on
    /// the next hibernation and wake-up within nine days.
    #[test]
    fn engine_matches_brute_force_oracle((s, at) in arb_case()) {
        check_engine_against_oracle(&s, at)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A target's view obeys the plan's exceptions and those naming it, and agrees with the
    /// oracle; the plan's own view ignores exceptions naming some targets only.
    #[test]
    fn target_views_match_the_oracle((s, a, at) in arb_scoped_case()) {
        let view = s.for_target("a");
        let e = view.evaluate(at);
        let expected = a.evaluate(at);
        prop_assert_eq!(&e, &expected);
        let states = Oracle { s: &view }.states(at, at + SignedDuration::from_mins(3 * 24 * 60));
        prop_assert_eq!(e.in_off_hours, states[0], "target view at {} ({})", at, e.reason);
        prop_assert!(s.exceptions.iter().all(|x| x.targets.is_empty()));
    }
}

/// An extend exception for 2026 whose only holiday is Friday 2026-12-25.
fn christmas(name: Option<&str>) -> Exception {
    let mut ex = exception(
        "holidays",
        ExceptionType::Extend,
        "2026-01-01T00:00Z",
        "2027-01-01T00:00Z",
        0,
        vec![],
    );
    ex.holidays = vec![Holiday {
        date: "2026-12-25".parse().unwrap(),
        name: name.map(Into::into),
    }];
    ex
}

#[test]
fn a_friday_holiday_joins_the_weekend() {
    // MON-FRI 20:00-06:00; Friday 2026-12-25 is a holiday: asleep Thursday 20:00 to Monday 06:00.
    let ex = christmas(Some("Christmas Day"));
    let s = CompiledSchedule::new(
        &schedule("Europe/Berlin", vec![window("20:00", "06:00", WEEKDAYS)]),
        vec![ex],
    )
    .unwrap();
    let thursday_noon = utc("2026-12-24T11:00Z");
    let e = s.evaluate(thursday_noon);
    assert!(!e.in_off_hours);
    assert_eq!(e.next_hibernate_at, Some(utc("2026-12-24T19:00Z")));
    assert_eq!(e.next_wake_up_at, Some(utc("2026-12-28T05:00Z")));
    let friday_noon = s.evaluate(utc("2026-12-25T11:00Z"));
    assert!(friday_noon.in_off_hours);
    assert!(
        friday_noon
            .reason
            .contains("holiday \"Christmas Day\" (2026-12-25)"),
        "{}",
        friday_noon.reason
    );
}

#[test]
fn a_suspend_wins_over_a_holiday_and_says_so() {
    let ex = christmas(None);
    let keep = exception(
        "release",
        ExceptionType::Suspend,
        "2026-12-25T08:00Z",
        "2026-12-25T12:00Z",
        0,
        vec![window("00:00", "23:59", &[Fri])],
    );
    let s = CompiledSchedule::new(
        &schedule("UTC", vec![window("20:00", "06:00", WEEKDAYS)]),
        vec![ex, keep],
    )
    .unwrap();
    let e = s.evaluate(utc("2026-12-25T10:00Z"));
    assert!(!e.in_off_hours);
    assert!(e.kept_awake, "{}", e.reason);
    assert!(s.evaluate(utc("2026-12-25T13:00Z")).in_off_hours);
    assert!(!s.evaluate(utc("2026-12-23T12:00Z")).kept_awake);
}

#[test]
fn transitions_alternate_and_increase() {
    let s = compile(&schedule(
        "America/New_York",
        vec![
            window("20:00", "06:00", WEEKDAYS),
            window("12:00", "13:00", &[Sat]),
        ],
    ));
    let t = s.transitions(utc("2026-01-01T00:00Z"), 200);
    assert_eq!(t.len(), 200);
    for pair in t.windows(2) {
        assert!(pair[0].at < pair[1].at);
        assert_ne!(pair[0].operation, pair[1].operation);
    }
    let _ = 1.day();
}

#[test]
fn the_reason_does_not_depend_on_the_order_exceptions_are_listed_in() {
    let keep = |name: &str| {
        exception(
            name,
            ExceptionType::Suspend,
            "2026-11-27T00:00Z",
            "2026-11-28T00:00Z",
            0,
            vec![window("00:00", "23:59", &[Fri])],
        )
    };
    let base = schedule("UTC", vec![window("20:00", "06:00", WEEKDAYS)]);
    let at = utc("2026-11-27T02:00Z");
    let one = CompiledSchedule::new(&base, vec![keep("b-release"), keep("a-hotfix")]).unwrap();
    let other = CompiledSchedule::new(&base, vec![keep("a-hotfix"), keep("b-release")]).unwrap();
    let (one, other) = (one.evaluate(at), other.evaluate(at));
    assert_eq!(one, other);
    assert!(one.reason.contains("\"a-hotfix\""), "{}", one.reason);
}
