//! `preview --format svg|html`: the picture's elements read back with an XML parser, and the
//! HTML page rendered by headless Chromium.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/gitops/hibernator")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-hibernator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The standard output of a `preview` that must succeed.
fn picture(args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["preview"];
    all.extend(args);
    let o = run(&all, stdin);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{all:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8")
}

/// A plan sleeping on weeknights from 20:00 to 06:00 (and the weekend) in `tz`.
fn nights(name: &str, tz: &str) -> String {
    format!(
        r#"---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: HibernationPlan
metadata: {{name: {name}, namespace: team-a}}
spec:
  schedule:
    timezone: {tz}
    offHours: [{{start: "20:00", end: "06:00", daysOfWeek: [MON, TUE, WED, THU, FRI]}}]
  execution: {{strategy: {{type: Parallel}}}}
  targets: [{{name: batch, type: noop}}]
"#
    )
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The picture, parsed, with its time scale.
struct Svg<'a> {
    doc: roxmltree::Document<'a>,
    from: Timestamp,
    until: Timestamp,
    x0: f64,
    x1: f64,
}

impl<'a> Svg<'a> {
    fn parse(text: &'a str) -> Self {
        let doc = roxmltree::Document::parse(text)
            .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{text}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let attr = |n: &str| {
            root.attribute(n)
                .unwrap_or_else(|| panic!("<svg> has no {n}"))
        };
        let (from, until) = (ts(attr("data-from")), ts(attr("data-until")));
        let (x0, x1) = (
            attr("data-x0").parse().unwrap(),
            attr("data-x1").parse().unwrap(),
        );
        Self {
            doc,
            from,
            until,
            x0,
            x1,
        }
    }

    /// The x at which an instant is drawn.
    fn x(&self, t: Timestamp) -> f64 {
        let whole = self.until.duration_since(self.from).as_secs_f64();
        self.x0 + t.duration_since(self.from).as_secs_f64() / whole * (self.x1 - self.x0)
    }

    /// Elements `tag` with `data-kind` `kind`.
    fn kind<'s>(&'s self, tag: &str, kind: &str) -> Vec<roxmltree::Node<'s, 'a>> {
        self.doc
            .descendants()
            .filter(|n| n.has_tag_name(tag) && n.attribute("data-kind") == Some(kind))
            .collect()
    }

    /// The asleep blocks of a plan's row (`target` none) or of a target's row, as
    /// `data-start`..`data-end`.
    fn asleep(&self, plan: &str, target: Option<&str>) -> Vec<(String, String)> {
        self.kind("rect", "asleep")
            .into_iter()
            .filter(|n| n.attribute("data-plan") == Some(plan))
            .filter(|n| n.attribute("data-target") == target)
            .map(|n| span(&n))
            .collect()
    }

    /// Every rect with `data-start`/`data-end` is drawn from the x of one to the x of the
    /// other; every line with `data-at` at the x of that instant.
    fn assert_positions(&self) {
        let mut checked = 0;
        for n in self.doc.descendants() {
            let num = |a: &str| -> f64 {
                n.attribute(a)
                    .unwrap_or_else(|| panic!("{n:?} has no {a}"))
                    .parse()
                    .unwrap()
            };
            if n.has_tag_name("rect") && n.has_attribute("data-start") {
                let (start, end) = span(&n);
                let (start, end) = (ts(&start), ts(&end));
                assert!(start < end, "{n:?}");
                assert!(self.from <= start && end <= self.until, "{n:?}");
                assert!((num("x") - self.x(start)).abs() < 0.01, "{n:?}");
                assert!(
                    (num("width") - (self.x(end) - self.x(start))).abs() < 0.02,
                    "{n:?}"
                );
                checked += 1;
            }
            if n.has_tag_name("line") && n.has_attribute("data-at") {
                let at = ts(n.attribute("data-at").unwrap());
                assert!((num("x1") - self.x(at)).abs() < 0.01, "{n:?}");
                assert_eq!(num("x1"), num("x2"), "{n:?}");
                checked += 1;
            }
        }
        assert!(checked > 0, "nothing positioned");
    }

    /// The texts of `<text>` elements with `data-kind` `kind`.
    fn labels(&self, kind: &str) -> Vec<String> {
        self.kind("text", kind)
            .iter()
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect()
    }
}

fn span(n: &roxmltree::Node<'_, '_>) -> (String, String) {
    (
        n.attribute("data-start").unwrap().to_string(),
        n.attribute("data-end").unwrap().to_string(),
    )
}

fn spans(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn svg_draws_weeknights_at_their_instants() {
    // Monday 2026-12-07 00:00 in New York; a week by default.
    let text = picture(
        &["-", "--from", "2026-12-07T05:00:00Z", "--format", "svg"],
        Some(&nights("nights", "America/New_York")),
    );
    let svg = Svg::parse(&text);
    assert_eq!(svg.until, ts("2026-12-14T05:00:00Z"));
    assert_eq!(
        svg.asleep("nights", None),
        spans(&[
            // The weekend's sleep, cut by the picture's start.
            ("2026-12-07T05:00:00Z", "2026-12-07T11:00:00Z"),
            ("2026-12-08T01:00:00Z", "2026-12-08T11:00:00Z"),
            ("2026-12-09T01:00:00Z", "2026-12-09T11:00:00Z"),
            ("2026-12-10T01:00:00Z", "2026-12-10T11:00:00Z"),
            ("2026-12-11T01:00:00Z", "2026-12-11T11:00:00Z"),
            // Friday 20:00 to the picture's end.
            ("2026-12-12T01:00:00Z", "2026-12-14T05:00:00Z"),
        ])
    );
    svg.assert_positions();
    let days: Vec<(&str, &str)> = svg
        .kind("line", "day")
        .iter()
        .map(|n| {
            (
                n.attribute("data-date").unwrap(),
                n.attribute("data-at").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2026-12-08", "2026-12-08T05:00:00Z"),
            ("2026-12-09", "2026-12-09T05:00:00Z"),
            ("2026-12-10", "2026-12-10T05:00:00Z"),
            ("2026-12-11", "2026-12-11T05:00:00Z"),
            ("2026-12-12", "2026-12-12T05:00:00Z"),
            ("2026-12-13", "2026-12-13T05:00:00Z"),
        ]
    );
    for kind in ["exception", "holiday", "dst", "now"] {
        assert!(svg.kind("rect", kind).is_empty() && svg.kind("line", kind).is_empty());
    }
    assert!(text.contains(">Mon 7 Dec</text>"), "{text}");
    // A legend names what the colours mean.
    for key in ["asleep", "exception", "holiday", "dst", "now"] {
        assert!(
            svg.doc
                .descendants()
                .any(|n| n.attribute("data-legend") == Some(key)),
            "no legend for {key}"
        );
    }
}

#[test]
fn svg_marks_the_fall_back_in_new_york() {
    // Thursday 2026-10-29 00:00 EDT; clocks go back on Sunday 2026-11-01 at 02:00 EDT.
    let text = picture(
        &["-", "--from", "2026-10-29T04:00:00Z", "--format", "svg"],
        Some(&nights("nights", "America/New_York")),
    );
    let svg = Svg::parse(&text);
    assert_eq!(
        svg.asleep("nights", None),
        spans(&[
            ("2026-10-29T04:00:00Z", "2026-10-29T10:00:00Z"),
            ("2026-10-30T00:00:00Z", "2026-10-30T10:00:00Z"),
            // Friday 20:00 EDT to Monday 06:00 EST: 59 hours.
            ("2026-10-31T00:00:00Z", "2026-11-02T11:00:00Z"),
            ("2026-11-03T01:00:00Z", "2026-11-03T11:00:00Z"),
            ("2026-11-04T01:00:00Z", "2026-11-04T11:00:00Z"),
            ("2026-11-05T01:00:00Z", "2026-11-05T04:00:00Z"),
        ])
    );
    svg.assert_positions();
    let dst = svg.kind("line", "dst");
    assert_eq!(dst.len(), 1);
    assert_eq!(dst[0].attribute("data-at"), Some("2026-11-01T06:00:00Z"));
    assert_eq!(dst[0].attribute("data-offset-before"), Some("-04:00"));
    assert_eq!(dst[0].attribute("data-offset-after"), Some("-05:00"));
    assert_eq!(
        svg.labels("dst"),
        ["Sun 1 Nov 02:00 → 01:00, -04:00 → -05:00 (EDT → EST)"]
    );
    // Sunday is 25 hours long.
    let at = |date: &str| {
        svg.kind("line", "day")
            .iter()
            .find(|n| n.attribute("data-date") == Some(date))
            .and_then(|n| n.attribute("data-at"))
            .map(str::to_string)
    };
    assert_eq!(at("2026-11-01").as_deref(), Some("2026-11-01T04:00:00Z"));
    assert_eq!(at("2026-11-02").as_deref(), Some("2026-11-02T05:00:00Z"));
}

#[test]
fn svg_marks_the_spring_forward_in_berlin() {
    // Monday 2027-03-22 00:00 CET; clocks go forward on Sunday 2027-03-28 at 02:00 CET.
    let text = picture(
        &["-", "--from", "2027-03-21T23:00:00Z", "--format", "svg"],
        Some(&nights("abends", "Europe/Berlin")),
    );
    let svg = Svg::parse(&text);
    assert_eq!(
        svg.asleep("abends", None),
        spans(&[
            ("2027-03-21T23:00:00Z", "2027-03-22T05:00:00Z"),
            ("2027-03-22T19:00:00Z", "2027-03-23T05:00:00Z"),
            ("2027-03-23T19:00:00Z", "2027-03-24T05:00:00Z"),
            ("2027-03-24T19:00:00Z", "2027-03-25T05:00:00Z"),
            ("2027-03-25T19:00:00Z", "2027-03-26T05:00:00Z"),
            ("2027-03-26T19:00:00Z", "2027-03-28T23:00:00Z"),
        ])
    );
    svg.assert_positions();
    let dst = svg.kind("line", "dst");
    assert_eq!(dst.len(), 1);
    assert_eq!(dst[0].attribute("data-at"), Some("2027-03-28T01:00:00Z"));
    assert_eq!(dst[0].attribute("data-offset-before"), Some("+01:00"));
    assert_eq!(dst[0].attribute("data-offset-after"), Some("+02:00"));
    assert_eq!(
        svg.labels("dst"),
        ["Sun 28 Mar 02:00 → 03:00, +01:00 → +02:00 (CET → CEST)"]
    );
    // Monday starts an hour earlier in UTC, still inside the picture.
    let last = svg.kind("line", "day").last().copied().unwrap();
    assert_eq!(last.attribute("data-date"), Some("2027-03-29"));
    assert_eq!(last.attribute("data-at"), Some("2027-03-28T22:00:00Z"));
}

/// The example's prod plan in Christmas week: a Tuesday night extended to 09:00, the Wednesday
/// night suspended, and Christmas Day from the example's calendar joining the weekend.
#[test]
fn svg_highlights_exceptions_and_holidays_with_their_names() {
    let exceptions = r#"---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata: {name: late-start, namespace: hibernator-system}
spec:
  planRef: {name: prod-offhours}
  type: extend
  validFrom: "2026-12-22T20:00:00Z"
  validUntil: "2026-12-23T17:00:00Z"
  windows: [{start: "20:00", end: "09:00", daysOfWeek: [TUE, WED]}]
---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata: {name: release-night, namespace: hibernator-system}
spec:
  planRef: {name: prod-offhours}
  type: suspend
  validFrom: "2026-12-23T17:00:00Z"
  validUntil: "2026-12-24T17:00:00Z"
  windows: [{start: "19:00", end: "07:00", daysOfWeek: [WED, THU]}]
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exceptions.yaml");
    std::fs::write(&file, exceptions).unwrap();
    let text = picture(
        &[
            examples().to_str().unwrap(),
            file.to_str().unwrap(),
            "--plan",
            "prod-offhours",
            "--from",
            "2026-12-21T05:00:00Z",
            "--format",
            "svg",
        ],
        None,
    );
    let svg = Svg::parse(&text);
    assert_eq!(
        svg.asleep("prod-offhours", None),
        spans(&[
            ("2026-12-21T05:00:00Z", "2026-12-21T11:00:00Z"),
            ("2026-12-22T01:00:00Z", "2026-12-22T11:00:00Z"),
            // Tuesday night until 09:00.
            ("2026-12-23T01:00:00Z", "2026-12-23T14:00:00Z"),
            // No Wednesday night; Thursday 20:00 through Christmas Day and the weekend.
            ("2026-12-25T01:00:00Z", "2026-12-28T05:00:00Z"),
        ])
    );
    svg.assert_positions();
    let bands = |kind: &str| -> Vec<(String, String, String)> {
        svg.kind("rect", kind)
            .iter()
            .map(|n| {
                let (a, b) = span(n);
                (n.attribute("data-name").unwrap().to_string(), a, b)
            })
            .collect()
    };
    let row = |n: &str, a: &str, b: &str| (n.to_string(), a.to_string(), b.to_string());
    assert_eq!(
        bands("exception"),
        [
            row("late-start", "2026-12-23T11:00:00Z", "2026-12-23T14:00:00Z"),
            row(
                "release-night",
                "2026-12-24T01:00:00Z",
                "2026-12-24T11:00:00Z"
            ),
        ]
    );
    let types: Vec<&str> = svg
        .kind("rect", "exception")
        .iter()
        .map(|n| n.attribute("data-type").unwrap())
        .collect();
    assert_eq!(types, ["extend", "suspend"]);
    assert_eq!(
        bands("holiday"),
        [row(
            "Christmas Day",
            "2026-12-25T05:00:00Z",
            "2026-12-26T05:00:00Z"
        )]
    );
    assert_eq!(svg.labels("holiday"), ["Christmas Day"]);
    assert_eq!(
        svg.labels("exception"),
        ["late-start (extend)", "release-night (suspend)"]
    );
    assert!(svg.kind("line", "dst").is_empty());
}

/// An exception for one target: the targets that differ from the plan get rows of their own,
/// the one the exception names with its band, the one it needs with the reason.
#[test]
fn svg_draws_targets_that_an_exception_sets_apart() {
    let exception = r#"---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata: {name: db-migration, namespace: hibernator-system}
spec:
  planRef: {name: prod-offhours}
  targets: [prod-db]
  validFrom: "2026-11-27T02:00:00Z"
  validUntil: "2026-11-27T04:00:00Z"
  type: suspend
  windows: [{start: "00:00", end: "23:59", daysOfWeek: [THU, FRI]}]
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exception.yaml");
    std::fs::write(&file, exception).unwrap();
    let text = picture(
        &[
            examples().to_str().unwrap(),
            file.to_str().unwrap(),
            "--plan",
            "prod-offhours",
            "--from",
            "2026-11-26T12:00:00Z",
            "--until",
            "2026-11-27T12:00:00Z",
            "--format",
            "svg",
        ],
        None,
    );
    let svg = Svg::parse(&text);
    // Thanksgiving: the plan sleeps all day.
    assert_eq!(
        svg.asleep("prod-offhours", None),
        spans(&[("2026-11-26T12:00:00Z", "2026-11-27T12:00:00Z")])
    );
    let apart = spans(&[
        ("2026-11-26T12:00:00Z", "2026-11-27T02:00:00Z"),
        ("2026-11-27T04:00:00Z", "2026-11-27T12:00:00Z"),
    ]);
    assert_eq!(svg.asleep("prod-offhours", Some("prod-db")), apart);
    assert_eq!(svg.asleep("prod-offhours", Some("prod-cluster")), apart);
    svg.assert_positions();
    let band = svg.kind("rect", "exception");
    assert_eq!(band.len(), 1);
    assert_eq!(band[0].attribute("data-target"), Some("prod-db"));
    assert_eq!(band[0].attribute("data-name"), Some("db-migration"));
    assert_eq!(
        span(&band[0]),
        (
            "2026-11-27T02:00:00Z".to_string(),
            "2026-11-27T04:00:00Z".to_string()
        )
    );
    assert_eq!(svg.labels("note"), ["awake: needed by prod-db"]);
    assert_eq!(
        svg.labels("holiday"),
        ["Thanksgiving", "Thanksgiving"],
        "both days of the calendar's event"
    );
}

#[test]
fn svg_escapes_names_from_the_manifests() {
    let docs = format!(
        r#"{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cal, namespace: team-a}}
data:
  days.ics: |
    BEGIN:VCALENDAR
    VERSION:2.0
    BEGIN:VEVENT
    DTSTART;VALUE=DATE:20261208
    SUMMARY:Q&A <offsite> "day" 'one'
    END:VEVENT
    END:VCALENDAR
---
apiVersion: hibernator.ardikasaputro.io/v1alpha1
kind: ScheduleException
metadata: {{name: days, namespace: team-a}}
spec:
  planRef: {{name: nights}}
  type: extend
  validFrom: "2026-12-01T00:00:00Z"
  validUntil: "2027-01-01T00:00:00Z"
  dates: ["2026-12-10"]
  calendarRef: {{name: cal, key: days.ics}}
"#,
        nights("nights", "America/New_York")
    );
    for format in ["svg", "html"] {
        let text = picture(
            &["-", "--from", "2026-12-07T05:00:00Z", "--format", format],
            Some(&docs),
        );
        let svg_text = match format {
            "svg" => &text[..],
            _ => &text[text.find("<svg").unwrap()..text.find("</svg>").unwrap() + 6],
        };
        let svg = Svg::parse(svg_text);
        assert_eq!(
            svg.labels("holiday"),
            ["Q&A <offsite> \"day\" 'one'", "holiday 2026-12-10"]
        );
    }
}

#[test]
fn svg_marks_now_inside_the_picture() {
    let before = Timestamp::now();
    let from = before - SignedDuration::from_hours(24);
    let text = picture(
        &["-", "--from", &from.to_string(), "--format", "svg"],
        Some(&nights("nights", "America/New_York")),
    );
    let after = Timestamp::now();
    let svg = Svg::parse(&text);
    let now = svg.kind("line", "now");
    assert_eq!(now.len(), 1);
    let at = ts(now[0].attribute("data-at").unwrap());
    assert!(before <= at && at <= after, "{at}");
    svg.assert_positions();
    // Outside the picture, no marker.
    let text = picture(
        &[
            "-",
            "--from",
            &(before + SignedDuration::from_hours(1)).to_string(),
            "--format",
            "svg",
        ],
        Some(&nights("nights", "America/New_York")),
    );
    assert!(Svg::parse(&text).kind("line", "now").is_empty());
}

#[test]
fn preview_rejects_an_unknown_format_and_a_bad_range() {
    let o = run(&["preview", "-", "--format", "png"], Some(""));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value 'png' for '--format <FORMAT>'")
            && err.contains("[possible values: svg, html]"),
        "{err}"
    );
    let o = run(
        &[
            "preview",
            "-",
            "--from",
            "2026-12-07T05:00:00Z",
            "--until",
            "2026-12-07T04:00:00Z",
            "--format",
            "svg",
        ],
        Some(""),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "--until \"2026-12-07T04:00:00Z\" is not after the start (2026-12-07T05:00:00Z)"
        ),
        "{err}"
    );
    let o = run(
        &[
            "preview",
            "-",
            "--from",
            "2026-12-07T05:00:00Z",
            "--until",
            "2027-12-07T05:00:00Z",
            "--format",
            "html",
        ],
        Some(""),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("a picture spans at most 62 days"), "{err}");
    let o = run(&["preview", "-", "-o", "json", "--format", "svg"], Some(""));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--output <OUTPUT>' cannot be used with '--format <FORMAT>'"),
        "{err}"
    );
}

#[test]
fn list_stops_at_until() {
    let o = run(
        &[
            "preview",
            "-",
            "--from",
            "2026-12-07T05:00:00Z",
            "--until",
            "2026-12-09T00:00:00Z",
            "-o",
            "json",
        ],
        Some(&nights("nights", "America/New_York")),
    );
    assert_eq!(o.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let at: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["at"].as_str().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "2026-12-07T11:00:00Z",
            "2026-12-08T01:00:00Z",
            "2026-12-08T11:00:00Z"
        ]
    );
}

// Rendering.

const CHROMIUM_ENV: &str = "HIBERNATOR_CHROMIUM";
/// The asleep colour of the picture.
const ASLEEP: [u8; 3] = [0x3b, 0x4a, 0x8c];
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 700;

/// The HTML page of the example's plans in Christmas week, screenshot by headless Chromium:
/// a PNG of the window's size, with the picture's colours in it.
#[test]
fn html_page_renders_in_headless_chromium() {
    let html = picture(
        &[
            examples().to_str().unwrap(),
            "--from",
            "2026-12-21T05:00:00Z",
            "--format",
            "html",
        ],
        None,
    );
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    // Self-contained: nothing to fetch (the SVG namespace is a name, not a download).
    for outside in ["<script", "<link", "<img", "src=", "href=", "@import"] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
    assert_eq!(
        html.matches("://").count(),
        html.matches("http://www.w3.org/2000/svg").count(),
        "a URL other than the SVG namespace in the page"
    );
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("week.html");
    std::fs::write(&page, &html).unwrap();
    let png = dir.path().join("week.png");
    let chromium = chromium();
    let started = Instant::now();
    screenshot(&chromium, &page, &png, dir.path());
    eprintln!(
        "chromium rendered the page in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot {}: {e}", png.display()));
    // The header: signature, then the IHDR chunk with width and height.
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (WIDTH, HEIGHT));
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let samples = info.color_type.samples();
    assert!(samples >= 3, "{:?}", info.color_type);
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks_exact(samples)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let mut colours = pixels.clone();
    colours.sort();
    colours.dedup();
    assert!(
        colours.len() > 50,
        "{} colours: not the picture",
        colours.len()
    );
    let asleep = pixels.iter().filter(|p| **p == ASLEEP).count();
    // Three plans' nights and weekends: tens of thousands of pixels.
    assert!(asleep > 20_000, "{asleep} pixels of the asleep colour");
}

/// Chromium: `$HIBERNATOR_CHROMIUM`, else `chromium` on `PATH`, else Debian's `chromium`
/// package installed now (as root with apt-get). Panics naming the package otherwise.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os(CHROMIUM_ENV) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{CHROMIUM_ENV}={} is not an executable file",
            p.display()
        );
        return p;
    }
    if let Some(p) = on_path("chromium") {
        return p;
    }
    install_chromium();
    on_path("chromium").expect("Debian's chromium package installs /usr/bin/chromium")
}

/// Installs Debian's `chromium` package, one process at a time.
fn install_chromium() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || on_path("apt-get").is_none() {
        panic!(
            "Chromium not found: install Debian's `chromium` package (apt-get install \
             --no-install-recommends chromium) or set {CHROMIUM_ENV} to a Chromium binary; \
             it is installed automatically only as root with apt-get"
        );
    }
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromium-install.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    fs4::fs_std::FileExt::lock_exclusive(&lock)
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if on_path("chromium").is_some() {
        return;
    }
    let started = Instant::now();
    for args in [
        &["update", "-q"][..],
        &[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=600",
            "chromium",
        ][..],
    ] {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("apt-get runs");
        assert!(
            out.status.success(),
            "apt-get {} failed ({}); the render test needs Debian's `chromium` package:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "installed Debian's chromium package in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Screenshots `page` into `png` with a window of WIDTH x HEIGHT.
fn screenshot(chromium: &Path, page: &Path, png: &Path, scratch: &Path) {
    let log = scratch.join("chromium.log");
    let mut child = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            // A local file to render: no updates, sync or other background connections.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromium.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} took over 120 s to screenshot:\n{}",
                chromium.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().expect("wait");
    assert!(
        status.success() && png.exists(),
        "{} failed ({status}):\n{}",
        chromium.display(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
