//! `preview --format svg|html`: a picture of the coming days. One row per plan, and one per
//! target where ScheduleExceptions for some targets make it differ from its plan; asleep
//! blocks, exceptions and holidays with their names, DST changes, day lines in the plan's time
//! zone, now, and a legend.
//!
//! Everything drawn is read from the schedule engine: the blocks from the transitions and
//! target wishes `preview` lists, an exception's highlight from the plan's sleeps with and
//! without it, holidays from the compiled exceptions, DST changes from the time zone database.
//! Elements carry `data-*` attributes (instants as RFC 3339 UTC) for programs and tests.

use clap::ValueEnum;
use hibernator_api::exception::ExceptionType;
use hibernator_api::graph::ExecutionGraph;
use hibernator_api::plan::{Operation, Schedule};
use hibernator_api::schedule::{CompiledSchedule, Exception, Transition, resolve_local};
use jiff::civil::{Date, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::preview::sides;

/// What `preview --format` draws.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An SVG image.
    Svg,
    /// An HTML page with the SVG image inline and no external resources.
    Html,
}

/// A plan to draw, as `preview` compiled it.
pub(crate) struct Plan {
    pub name: String,
    pub namespace: String,
    /// `spec.schedule`, to compile the schedule without one of its exceptions.
    pub spec: Schedule,
    /// The ScheduleExceptions of the plan, compiled.
    pub exceptions: Vec<Exception>,
    pub schedule: CompiledSchedule,
    pub graph: ExecutionGraph,
}

/// A half-open interval of instants.
type Span = (Timestamp, Timestamp);

/// The picture, computed, before it is written out.
pub(crate) struct Chart {
    from: Timestamp,
    until: Timestamp,
    /// Now, when inside the picture.
    now: Option<Timestamp>,
    groups: Vec<Group>,
}

/// A plan's rows and what is drawn across them.
struct Group {
    plan: String,
    namespace: String,
    tz: TimeZone,
    tz_name: String,
    /// The plan's row first, then those of the targets that differ from it.
    rows: Vec<Row>,
    bands: Vec<Band>,
    /// Local midnights from the picture's first day to the day after its last.
    days: Vec<(Date, Timestamp)>,
    dst: Vec<DstChange>,
}

/// The plan's row (no target) or a target's.
struct Row {
    target: Option<String>,
    asleep: Vec<Span>,
    /// Why the target departs from its plan, where no exception band on the row says so.
    notes: Vec<(Span, String)>,
}

/// What a band highlights.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BandKind {
    /// Where a ScheduleException changes the sleeps.
    Exception(ExceptionType),
    /// A whole day asleep from an exception's `dates` or calendar.
    Holiday(Date),
}

/// A highlighted stretch of a row, or of all the plan's rows.
struct Band {
    kind: BandKind,
    name: String,
    /// The row; none: the plan's, drawn across all its rows.
    row: Option<usize>,
    span: Span,
}

/// A name to write next to a band or a stretch of a row.
struct Label<'a> {
    /// `data-kind` of the text.
    kind: &'static str,
    name: &'a str,
    row: usize,
    /// Where the stretch named starts.
    x: f64,
    /// The texts to try, longest first.
    texts: Vec<String>,
    /// The lanes to try, preferred first.
    lanes: [Lane; 2],
}

/// The two lanes of a row for text: above and below its blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Above,
    Below,
}

/// A change of the plan's UTC offset.
struct DstChange {
    at: Timestamp,
    before: Offset,
    after: Offset,
    abbreviations: (String, String),
}

impl Chart {
    /// The picture of `plans` from `from` to `until`; `now` is marked when inside.
    pub(crate) fn new(plans: &[Plan], from: Timestamp, until: Timestamp, now: Timestamp) -> Self {
        Self {
            from,
            until,
            now: (from <= now && now < until).then_some(now),
            groups: plans.iter().map(|p| group(p, from, until)).collect(),
        }
    }
}

/// The transitions of `schedule` after `from` and before `until`, by
/// [`CompiledSchedule::transitions`] in batches.
fn transitions(schedule: &CompiledSchedule, from: Timestamp, until: Timestamp) -> Vec<Transition> {
    const BATCH: usize = 16;
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let batch = schedule.transitions(at, BATCH);
        let full = batch.len() == BATCH;
        for t in batch {
            if t.at >= until {
                return out;
            }
            at = t.at;
            out.push(t);
        }
        if !full {
            return out;
        }
    }
}

/// The stretches of constant value of a sequence of changes `(instant, value)` that starts at
/// the picture's start; the last one ends at `until`.
fn stretches<T: PartialEq>(
    changes: impl IntoIterator<Item = (Timestamp, T)>,
    until: Timestamp,
) -> Vec<(Span, T)> {
    let mut out: Vec<(Span, T)> = Vec::new();
    for (at, value) in changes {
        if let Some(((_, end), last)) = out.last_mut() {
            if *last == value {
                continue;
            }
            *end = at;
        }
        out.push(((at, until), value));
    }
    out.retain(|((start, end), _)| start < end);
    out
}

/// When `schedule` sleeps within `[from, until)`: its side at `from`, then its transitions.
fn asleep(schedule: &CompiledSchedule, from: Timestamp, until: Timestamp) -> Vec<Span> {
    let first = schedule.evaluate(from).in_off_hours;
    let changes = std::iter::once((from, first)).chain(
        transitions(schedule, from, until)
            .into_iter()
            .map(|t| (t.at, t.operation == Operation::Hibernate)),
    );
    stretches(changes, until)
        .into_iter()
        .filter(|(_, asleep)| *asleep)
        .map(|(span, _)| span)
        .collect()
}

/// Where exactly one of two lists of disjoint spans holds.
fn difference(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut cuts: Vec<Timestamp> = a.iter().chain(b).flat_map(|s| [s.0, s.1]).collect();
    cuts.sort();
    cuts.dedup();
    let holds = |spans: &[Span], t: Timestamp| spans.iter().any(|s| s.0 <= t && t < s.1);
    let mut out: Vec<Span> = Vec::new();
    for pair in cuts.windows(2) {
        if holds(a, pair[0]) == holds(b, pair[0]) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == pair[0] => last.1 = pair[1],
            _ => out.push((pair[0], pair[1])),
        }
    }
    out
}

fn overlaps(a: Span, b: Span) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Everything drawn for one plan.
fn group(plan: &Plan, from: Timestamp, until: Timestamp) -> Group {
    let schedule = &plan.schedule;
    let tz = schedule.time_zone().clone();
    let plan_asleep = asleep(schedule, from, until);
    let mut rows = rows(plan, &plan_asleep, from, until);
    let mut bands = exception_bands(plan, &rows, &plan_asleep, from, until);
    holiday_bands(plan, &tz, &rows, from, until, &mut bands);
    for (r, row) in rows.iter_mut().enumerate() {
        row.notes.retain(|(span, _)| {
            !bands
                .iter()
                .any(|b| b.row == Some(r) && overlaps(b.span, *span))
        });
    }
    Group {
        plan: plan.name.clone(),
        namespace: plan.namespace.clone(),
        tz_name: schedule.time_zone_name().to_string(),
        days: days(&tz, from, until),
        dst: dst_changes(&tz, from, until),
        tz,
        rows,
        bands,
    }
}

/// The plan's row, then one for each target whose sleeps differ from the plan's.
fn rows(plan: &Plan, plan_asleep: &[Span], from: Timestamp, until: Timestamp) -> Vec<Row> {
    let schedule = &plan.schedule;
    let mut rows = vec![Row {
        target: None,
        asleep: plan_asleep.to_vec(),
        notes: vec![],
    }];
    if schedule.has_scoped_exceptions() {
        let sides: Vec<_> =
            sides(schedule, &plan.graph, from, |s| transitions(s, from, until)).collect();
        for (i, name) in plan.graph.names().iter().enumerate() {
            let own = stretches(
                sides.iter().map(|(at, w)| (*at, w.targets[i].asleep)),
                until,
            );
            let asleep: Vec<Span> = own.into_iter().filter(|x| x.1).map(|x| x.0).collect();
            if asleep == plan_asleep {
                continue;
            }
            let notes = stretches(
                sides
                    .iter()
                    .map(|(at, w)| (*at, w.targets[i].departs.clone())),
                until,
            )
            .into_iter()
            .filter_map(|(span, why)| why.map(|w| (span, w)))
            .collect();
            rows.push(Row {
                target: Some(name.clone()),
                asleep,
                notes,
            });
        }
    }
    rows
}

/// The index of `target`'s row, if it has one.
fn row_of(rows: &[Row], target: &str) -> Option<usize> {
    rows.iter()
        .position(|r| r.target.as_deref() == Some(target))
}

/// The exception bands: where the sleeps with an exception differ from those without it.
fn exception_bands(
    plan: &Plan,
    rows: &[Row],
    plan_asleep: &[Span],
    from: Timestamp,
    until: Timestamp,
) -> Vec<Band> {
    let schedule = &plan.schedule;
    let mut bands = Vec::new();
    for (i, e) in plan.exceptions.iter().enumerate() {
        if e.windows.is_empty() && e.type_ != ExceptionType::Replace {
            // Only whole days: drawn as holidays.
            continue;
        }
        let mut others = plan.exceptions.clone();
        others.remove(i);
        let Ok(without) = CompiledSchedule::new(&plan.spec, others) else {
            continue;
        };
        let band = |row: Option<usize>, span: Span| Band {
            kind: BandKind::Exception(e.type_),
            name: e.name.clone(),
            row,
            span,
        };
        if e.targets.is_empty() {
            for span in difference(plan_asleep, &asleep(&without, from, until)) {
                bands.push(band(None, span));
            }
        } else {
            for t in &e.targets {
                let Some(row) = row_of(rows, t) else { continue };
                let with = asleep(&schedule.for_target(t), from, until);
                let wo = asleep(&without.for_target(t), from, until);
                for span in difference(&with, &wo) {
                    bands.push(band(Some(row), span));
                }
            }
        }
    }
    bands
}

/// Adds a band for each exception holiday, once per row and date.
fn holiday_bands(
    plan: &Plan,
    tz: &TimeZone,
    rows: &[Row],
    from: Timestamp,
    until: Timestamp,
    bands: &mut Vec<Band>,
) {
    for e in &plan.exceptions {
        let on: Vec<Option<usize>> = if e.targets.is_empty() {
            vec![None]
        } else {
            e.targets
                .iter()
                .filter_map(|t| row_of(rows, t).map(Some))
                .collect()
        };
        for h in &e.holidays {
            let Ok(next) = h.date.tomorrow() else {
                continue;
            };
            let start = resolve_local(tz, h.date.to_datetime(Time::midnight()));
            let end = resolve_local(tz, next.to_datetime(Time::midnight()));
            let span = (
                start.max(e.valid_from).max(from),
                end.min(e.valid_until).min(until),
            );
            if span.0 >= span.1 {
                continue;
            }
            let name = h
                .name
                .clone()
                .unwrap_or_else(|| format!("holiday {}", h.date));
            for row in &on {
                let kind = BandKind::Holiday(h.date);
                if !bands.iter().any(|b| b.kind == kind && b.row == *row) {
                    bands.push(Band {
                        kind,
                        name: name.clone(),
                        row: *row,
                        span,
                    });
                }
            }
        }
    }
}

/// Local midnights in `tz` from `from`'s day to the day after `until`'s.
fn days(tz: &TimeZone, from: Timestamp, until: Timestamp) -> Vec<(Date, Timestamp)> {
    let mut days = Vec::new();
    let mut day = from.to_zoned(tz.clone()).date();
    let last = until.to_zoned(tz.clone()).date();
    while day <= last {
        let Ok(next) = day.tomorrow() else { break };
        days.push((day, resolve_local(tz, day.to_datetime(Time::midnight()))));
        day = next;
    }
    days.push((day, resolve_local(tz, day.to_datetime(Time::midnight()))));
    days
}

/// The changes of `tz`'s UTC offset after `from` and before `until`.
fn dst_changes(tz: &TimeZone, from: Timestamp, until: Timestamp) -> Vec<DstChange> {
    tz.following(from)
        .take_while(|t| t.timestamp() < until)
        .filter_map(|t| {
            let just_before = t
                .timestamp()
                .saturating_sub(SignedDuration::from_nanos(1))
                .ok()?;
            let before = tz.to_offset_info(just_before);
            (before.offset() != t.offset()).then(|| DstChange {
                at: t.timestamp(),
                before: before.offset(),
                after: t.offset(),
                abbreviations: (
                    before.abbreviation().to_string(),
                    t.abbreviation().to_string(),
                ),
            })
        })
        .collect()
}

/// Where a plan's parts go, down the picture.
#[derive(Clone, Copy)]
struct Frame {
    /// The top of the day labels.
    top: f64,
    rows_top: f64,
    rows_bottom: f64,
    /// The bottom of the DST lane, or of the rows when there is none.
    bottom: f64,
}

impl Frame {
    /// The top of row `r`.
    fn row_y(&self, r: usize) -> f64 {
        self.rows_top + ROW * r as f64
    }
}

/// The attributes that tell a plan's elements apart from other plans'.
fn group_ids(g: &Group) -> Vec<(&'static str, String)> {
    vec![
        ("data-plan", g.plan.clone()),
        ("data-namespace", g.namespace.clone()),
    ]
}

// Layout, in SVG user units (CSS pixels).
const WIDTH: f64 = 1360.0;
/// Where the time line begins and ends.
const X0: f64 = 250.0;
const X1: f64 = WIDTH - 24.0;
/// Title and the now label.
const TOP: f64 = 70.0;
/// Day labels above a plan's rows.
const STRIP: f64 = 20.0;
const ROW: f64 = 56.0;
/// The asleep blocks within a row.
const BLOCK_TOP: f64 = 17.0;
const BLOCK_HEIGHT: f64 = 22.0;
/// DST labels below a plan's rows.
const DST_LANE: f64 = 18.0;
const GAP: f64 = 18.0;
const LEGEND: f64 = 46.0;

const ASLEEP: &str = "#3b4a8c";
const AWAKE: &str = "#e6e9f0";
const EXCEPTION: &str = "#e8890c";
const EXCEPTION_TEXT: &str = "#a35a00";
const HOLIDAY: &str = "#2f9e44";
const HOLIDAY_TEXT: &str = "#237032";
const DST: &str = "#c2255c";
const NOW: &str = "#e03131";
const GRID: &str = "#aab2c0";
const MUTED: &str = "#5c6677";
const INK: &str = "#1f2533";

const STYLE: &str = "\
body { margin: 0; padding: 20px; background: #eef1f5; }
main { display: inline-block; background: #fff; border-radius: 6px; overflow: hidden;
       box-shadow: 0 1px 4px rgba(20, 30, 60, 0.18); }
svg { display: block; max-width: 100%; height: auto; }
svg rect[data-kind=\"asleep\"]:hover { fill: #26326e; }
svg rect[data-kind=\"exception\"]:hover, svg rect[data-kind=\"holiday\"]:hover { opacity: 0.7; }
";

impl Chart {
    /// The picture as an SVG document.
    pub(crate) fn svg(&self) -> String {
        let mut m = Markup(String::new());
        let heights: Vec<f64> = self.groups.iter().map(Group::height).collect();
        let body: f64 = if self.groups.is_empty() {
            40.0
        } else {
            heights.iter().sum()
        };
        let height = TOP + body + LEGEND;
        self.draw_heading(&mut m, height);
        let mut y = TOP;
        for (g, h) in self.groups.iter().zip(&heights) {
            self.draw_group(&mut m, g, y);
            y += h;
        }
        if let Some(now) = self.now {
            self.draw_now(&mut m, now, y);
        }
        self.legend(&mut m, height - LEGEND + 12.0);
        m.close("svg");
        m.0
    }

    /// The `<svg>` start tag, the hatch pattern, the background and the title lines.
    fn draw_heading(&self, m: &mut Markup, height: f64) {
        m.open(
            "svg",
            &[
                ("xmlns", "http://www.w3.org/2000/svg".into()),
                ("width", num(WIDTH)),
                ("height", num(height)),
                ("viewBox", format!("0 0 {} {}", num(WIDTH), num(height))),
                (
                    "font-family",
                    "DejaVu Sans, Verdana, Arial, sans-serif".into(),
                ),
                ("role", "img".into()),
                ("aria-label", self.title()),
                ("data-from", self.from.to_string()),
                ("data-until", self.until.to_string()),
                ("data-x0", num(X0)),
                ("data-x1", num(X1)),
            ],
        );
        m.text_el("title", &[], &self.title());
        m.raw(&format!(
            "<defs><pattern id=\"exception-hatch\" width=\"8\" height=\"8\" \
             patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
             <rect width=\"8\" height=\"8\" fill=\"{EXCEPTION}\" fill-opacity=\"0.16\"/>\
             <rect width=\"3\" height=\"8\" fill=\"{EXCEPTION}\" fill-opacity=\"0.45\"/>\
             </pattern></defs>"
        ));
        m.empty(
            "rect",
            &[
                ("width", num(WIDTH)),
                ("height", num(height)),
                ("fill", "#ffffff".into()),
            ],
        );
        m.text_el(
            "text",
            &[
                ("x", "16".into()),
                ("y", "26".into()),
                ("font-size", "17".into()),
                ("font-weight", "bold".into()),
                ("fill", INK.into()),
            ],
            "Hibernator: the coming days",
        );
        m.text_el(
            "text",
            &[
                ("x", "16".into()),
                ("y", "45".into()),
                ("font-size", "11".into()),
                ("fill", MUTED.into()),
            ],
            &format!(
                "{} to {} UTC; day lines, dates and times in each plan's time zone",
                utc(self.from),
                utc(self.until)
            ),
        );
        if self.groups.is_empty() {
            m.text_el(
                "text",
                &[
                    ("x", num(X0)),
                    ("y", num(TOP + 24.0)),
                    ("font-size", "13".into()),
                    ("fill", MUTED.into()),
                ],
                "No HibernationPlan in the input.",
            );
        }
    }

    /// The now line across all plans, down to `bottom`, and its label.
    fn draw_now(&self, m: &mut Markup, now: Timestamp, bottom: f64) {
        let x = num(self.x(now));
        m.titled(
            "line",
            &[
                ("data-kind", "now".into()),
                ("data-at", now.to_string()),
                ("x1", x.clone()),
                ("x2", x.clone()),
                ("y1", num(TOP - 12.0)),
                ("y2", num(bottom - GAP / 2.0)),
                ("stroke", NOW.into()),
                ("stroke-width", "2".into()),
            ],
            &format!("now: {} UTC", utc(now)),
        );
        let label = format!("now {} UTC", utc(now));
        let (lx, anchor) = label_at(self.x(now) + 4.0, &label, 11.0);
        m.text_el(
            "text",
            &[
                ("data-kind", "now".into()),
                ("x", num(lx)),
                ("y", num(TOP - 16.0)),
                ("text-anchor", anchor.into()),
                ("font-size", "11".into()),
                ("font-weight", "bold".into()),
                ("fill", NOW.into()),
            ],
            &label,
        );
    }

    /// The picture in a self-contained HTML page.
    pub(crate) fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n{}</main>\n\
             </body>\n</html>\n",
            escape(&self.title()),
            self.svg()
        )
    }

    fn title(&self) -> String {
        format!(
            "Hibernator preview, {} to {} UTC",
            utc(self.from),
            utc(self.until)
        )
    }

    /// The x of an instant.
    fn x(&self, t: Timestamp) -> f64 {
        let whole = self.until.duration_since(self.from).as_secs_f64();
        X0 + t.duration_since(self.from).as_secs_f64() / whole * (X1 - X0)
    }

    /// One plan's rows, days, bands, blocks, names and clock changes, from `top` down.
    fn draw_group(&self, m: &mut Markup, g: &Group, top: f64) {
        let rows_top = top + STRIP;
        let rows_bottom = rows_top + ROW * g.rows.len() as f64;
        let f = Frame {
            top,
            rows_top,
            rows_bottom,
            bottom: rows_bottom + if g.dst.is_empty() { 0.0 } else { DST_LANE },
        };
        m.open(
            "g",
            &[
                ("data-plan", g.plan.clone()),
                ("data-namespace", g.namespace.clone()),
                ("data-time-zone", g.tz_name.clone()),
            ],
        );
        self.draw_row_heads(m, g, f);
        self.draw_days(m, g, f);
        self.draw_bands(m, g, f);
        self.draw_blocks(m, g, f);
        let labels = self.labels(g);
        self.draw_labels(m, &labels, f);
        self.draw_dst(m, g, f);
        m.close("g");
    }

    /// Row labels and the awake tracks.
    fn draw_row_heads(&self, m: &mut Markup, g: &Group, f: Frame) {
        for (r, row) in g.rows.iter().enumerate() {
            let y = f.row_y(r);
            m.empty(
                "rect",
                &[
                    ("x", num(X0)),
                    ("y", num(y + BLOCK_TOP)),
                    ("width", num(X1 - X0)),
                    ("height", num(BLOCK_HEIGHT)),
                    ("fill", AWAKE.into()),
                ],
            );
            match &row.target {
                None => {
                    m.titled_text(
                        &[
                            ("x", "16".into()),
                            ("y", num(y + 28.0)),
                            ("font-size", "13".into()),
                            ("font-weight", "bold".into()),
                            ("fill", INK.into()),
                        ],
                        &shorten(&g.plan, 30),
                        &g.plan,
                    );
                    let sub = format!("{} · {}", g.namespace, g.tz_name);
                    m.titled_text(
                        &[
                            ("x", "16".into()),
                            ("y", num(y + 43.0)),
                            ("font-size", "10".into()),
                            ("fill", MUTED.into()),
                        ],
                        &shorten(&sub, 40),
                        &sub,
                    );
                }
                Some(t) => {
                    m.titled_text(
                        &[
                            ("x", "28".into()),
                            ("y", num(y + 32.0)),
                            ("font-size", "12".into()),
                            ("fill", INK.into()),
                        ],
                        &format!("↳ target {}", shorten(t, 26)),
                        &format!("target {t} of plan {}", g.plan),
                    );
                }
            }
        }
    }

    /// Day lines and day labels, in the plan's time zone.
    fn draw_days(&self, m: &mut Markup, g: &Group, f: Frame) {
        for pair in g.days.windows(2) {
            let ((date, start), (_, end)) = (pair[0], pair[1]);
            if self.from < start && start < self.until {
                let x = num(self.x(start));
                m.titled(
                    "line",
                    &[
                        ("data-kind", "day".into()),
                        ("data-plan", g.plan.clone()),
                        ("data-date", date.to_string()),
                        ("data-at", start.to_string()),
                        ("x1", x.clone()),
                        ("x2", x),
                        ("y1", num(f.top + 2.0)),
                        ("y2", num(f.bottom)),
                        ("stroke", GRID.into()),
                        ("stroke-width", "1".into()),
                    ],
                    &format!("{date} 00:00 {}", g.tz_name),
                );
            }
            let (a, b) = (start.max(self.from), end.min(self.until));
            if a >= b {
                continue;
            }
            let room = self.x(b) - self.x(a) - 6.0;
            let midnight = date.to_zoned(g.tz.clone());
            let Some(label) = [
                midnight
                    .as_ref()
                    .map(|z| z.strftime("%a %-d %b").to_string()),
                midnight.as_ref().map(|z| z.strftime("%-d").to_string()),
            ]
            .into_iter()
            .flatten()
            .find(|l| text_width(l, 11.0) <= room) else {
                continue;
            };
            m.text_el(
                "text",
                &[
                    ("x", num((self.x(a) + self.x(b)) / 2.0)),
                    ("y", num(f.top + 14.0)),
                    ("text-anchor", "middle".into()),
                    ("font-size", "11".into()),
                    ("fill", MUTED.into()),
                ],
                &label,
            );
        }
    }

    /// Exception and holiday bands, under the blocks.
    fn draw_bands(&self, m: &mut Markup, g: &Group, f: Frame) {
        for b in &g.bands {
            let (y, h) = match b.row {
                None => (f.rows_top, f.rows_bottom - f.rows_top),
                Some(r) => (f.row_y(r), ROW),
            };
            let mut attrs = vec![];
            let fill = match b.kind {
                BandKind::Exception(t) => {
                    attrs.push(("data-kind", "exception".to_string()));
                    attrs.push(("data-type", t.as_str().to_string()));
                    "url(#exception-hatch)"
                }
                BandKind::Holiday(date) => {
                    attrs.push(("data-kind", "holiday".to_string()));
                    attrs.push(("data-date", date.to_string()));
                    HOLIDAY
                }
            };
            attrs.push(("data-name", b.name.clone()));
            attrs.extend(group_ids(g));
            if let Some(r) = b.row {
                attrs.push(("data-target", g.rows[r].target.clone().unwrap_or_default()));
            }
            attrs.extend([
                ("data-start", b.span.0.to_string()),
                ("data-end", b.span.1.to_string()),
                ("x", num(self.x(b.span.0))),
                ("y", num(y)),
                ("width", num(self.x(b.span.1) - self.x(b.span.0))),
                ("height", num(h)),
                ("fill", fill.to_string()),
            ]);
            if let BandKind::Holiday(_) = b.kind {
                attrs.push(("fill-opacity", "0.17".to_string()));
            }
            m.titled("rect", &attrs, &self.band_title(g, b));
        }
    }

    /// The asleep blocks of each row, with their times inside when they fit.
    fn draw_blocks(&self, m: &mut Markup, g: &Group, f: Frame) {
        for (r, row) in g.rows.iter().enumerate() {
            let y = f.row_y(r) + BLOCK_TOP;
            let mut ids = group_ids(g);
            if let Some(t) = &row.target {
                ids.push(("data-target", t.clone()));
            }
            for &(start, end) in &row.asleep {
                let (x, w) = (self.x(start), self.x(end) - self.x(start));
                let mut attrs = vec![("data-kind", "asleep".to_string())];
                attrs.extend(ids.iter().cloned());
                attrs.extend([
                    ("data-start", start.to_string()),
                    ("data-end", end.to_string()),
                    ("x", num(x)),
                    ("y", num(y)),
                    ("width", num(w)),
                    ("height", num(BLOCK_HEIGHT)),
                    ("rx", "3".into()),
                    ("fill", ASLEEP.into()),
                ]);
                let title = format!(
                    "asleep {} to {}",
                    local(&g.tz, start, "%a %Y-%m-%d %H:%M %Z"),
                    local(&g.tz, end, "%a %Y-%m-%d %H:%M %Z")
                );
                m.titled("rect", &attrs, &title);
                if let Some(label) = self
                    .block_labels(&g.tz, start, end)
                    .into_iter()
                    .find(|l| text_width(l, 9.0) + 4.0 <= w)
                {
                    m.text_el(
                        "text",
                        &[
                            ("x", num(x + w / 2.0)),
                            ("y", num(y + 14.5)),
                            ("text-anchor", "middle".into()),
                            ("font-size", "9".into()),
                            ("fill", "#ffffff".into()),
                            ("pointer-events", "none".into()),
                        ],
                        &label,
                    );
                }
            }
        }
    }

    /// The names to write: of exceptions below the blocks, of holidays and why a target
    /// departs above, each in the other lane when its own is taken; by row, then left to right.
    fn labels<'a>(&self, g: &'a Group) -> Vec<Label<'a>> {
        let mut labels: Vec<Label> = g
            .bands
            .iter()
            .map(|b| match b.kind {
                BandKind::Exception(t) => Label {
                    kind: "exception",
                    name: &b.name,
                    row: b.row.unwrap_or(0),
                    x: self.x(b.span.0),
                    texts: vec![format!("{} ({})", b.name, t.as_str()), b.name.clone()],
                    lanes: [Lane::Below, Lane::Above],
                },
                BandKind::Holiday(_) => Label {
                    kind: "holiday",
                    name: &b.name,
                    row: b.row.unwrap_or(0),
                    x: self.x(b.span.0),
                    texts: vec![b.name.clone()],
                    lanes: [Lane::Above, Lane::Below],
                },
            })
            .collect();
        for (r, row) in g.rows.iter().enumerate() {
            for ((start, _), why) in &row.notes {
                labels.push(Label {
                    kind: "note",
                    name: why,
                    row: r,
                    x: self.x(*start),
                    texts: vec![why.clone()],
                    lanes: [Lane::Above, Lane::Below],
                });
            }
        }
        labels.sort_by(|a, b| a.row.cmp(&b.row).then(a.x.total_cmp(&b.x)));
        labels
    }

    /// Writes each of `labels` in the first lane and text that fit, or not at all.
    fn draw_labels(&self, m: &mut Markup, labels: &[Label], f: Frame) {
        let mut placed: Vec<(usize, Lane, f64, f64, String)> = Vec::new();
        for l in labels {
            // A band cut in pieces (or a holiday of several days) is named once nearby.
            let named = placed.iter().any(|(row, _, left, right, text)| {
                *row == l.row && l.texts.contains(text) && l.x < right + 40.0 && l.x + 40.0 > *left
            });
            if named {
                continue;
            }
            let spot = l.texts.iter().find_map(|text| {
                l.lanes.iter().find_map(|&lane| {
                    let (x, anchor) = label_at(l.x + 3.0, text, 10.0);
                    let w = text_width(text, 10.0);
                    let (left, right) = if anchor == "end" {
                        (x - w, x)
                    } else {
                        (x, x + w)
                    };
                    let free = !placed.iter().any(|(row, ln, a, b, _)| {
                        *row == l.row && *ln == lane && left < b + 8.0 && *a < right + 8.0
                    });
                    free.then_some((text, lane, x, anchor, left, right))
                })
            });
            let Some((text, lane, x, anchor, left, right)) = spot else {
                continue;
            };
            placed.push((l.row, lane, left, right, text.clone()));
            let y = f.row_y(l.row)
                + match lane {
                    Lane::Above => 12.0,
                    Lane::Below => ROW - 4.0,
                };
            let (fill, style) = match l.kind {
                "exception" => (EXCEPTION_TEXT, ("font-weight", "bold")),
                "holiday" => (HOLIDAY_TEXT, ("font-weight", "bold")),
                _ => (MUTED, ("font-style", "italic")),
            };
            m.text_el(
                "text",
                &[
                    ("data-kind", l.kind.into()),
                    ("data-name", l.name.into()),
                    ("x", num(x)),
                    ("y", num(y)),
                    ("text-anchor", anchor.into()),
                    ("font-size", "10".into()),
                    (style.0, style.1.into()),
                    ("fill", fill.into()),
                ],
                text,
            );
        }
    }

    /// A dashed line and a label at each change of the plan's UTC offset.
    fn draw_dst(&self, m: &mut Markup, g: &Group, f: Frame) {
        for d in &g.dst {
            let x = self.x(d.at);
            let clock = |o: Offset| o.to_datetime(d.at).strftime("%H:%M").to_string();
            let label = format!(
                "{} {} → {}, {} → {} ({} → {})",
                local(&g.tz, d.at, "%a %-d %b"),
                clock(d.before),
                clock(d.after),
                offset(d.before),
                offset(d.after),
                d.abbreviations.0,
                d.abbreviations.1
            );
            m.titled(
                "line",
                &[
                    ("data-kind", "dst".into()),
                    ("data-plan", g.plan.clone()),
                    ("data-at", d.at.to_string()),
                    ("data-offset-before", offset(d.before)),
                    ("data-offset-after", offset(d.after)),
                    ("x1", num(x)),
                    ("x2", num(x)),
                    ("y1", num(f.rows_top)),
                    ("y2", num(f.bottom)),
                    ("stroke", DST.into()),
                    ("stroke-width", "1.5".into()),
                    ("stroke-dasharray", "4 3".into()),
                ],
                &format!("clocks change in {}: {label}", g.tz_name),
            );
            // Right of the line, or left of it near the end.
            let (lx, anchor) = if x + 4.0 + text_width(&label, 10.0) > X1 {
                (x - 4.0, "end")
            } else {
                (x + 4.0, "start")
            };
            m.text_el(
                "text",
                &[
                    ("data-kind", "dst".into()),
                    ("x", num(lx)),
                    ("y", num(f.rows_bottom + 13.0)),
                    ("text-anchor", anchor.into()),
                    ("font-size", "10".into()),
                    ("fill", DST.into()),
                ],
                &label,
            );
        }
    }

    fn band_title(&self, g: &Group, b: &Band) -> String {
        let span = format!(
            "{} to {}",
            local(&g.tz, b.span.0, "%a %Y-%m-%d %H:%M %Z"),
            local(&g.tz, b.span.1, "%a %Y-%m-%d %H:%M %Z")
        );
        match b.kind {
            BandKind::Exception(t) => {
                let effect = match t {
                    ExceptionType::Suspend => "kept awake",
                    ExceptionType::Extend => "asleep longer",
                    ExceptionType::Replace => "windows replaced",
                };
                format!(
                    "ScheduleException {} ({}): {effect}, {span}",
                    b.name,
                    t.as_str()
                )
            }
            BandKind::Holiday(date) => format!("holiday {} ({date}): {span}", b.name),
        }
    }

    /// Labels for a block, longest first; a block cut by the picture's edge says so.
    fn block_labels(&self, tz: &TimeZone, start: Timestamp, end: Timestamp) -> Vec<String> {
        let long = end.duration_since(start) >= SignedDuration::from_hours(24);
        let formats: &[&str] = if long {
            &["%a %H:%M", "%H:%M"]
        } else {
            &["%H:%M"]
        };
        formats
            .iter()
            .map(|f| {
                let (a, b) = (local(tz, start, f), local(tz, end, f));
                match (start == self.from, end == self.until) {
                    (false, false) => format!("{a}–{b}"),
                    (true, false) => format!("until {b}"),
                    (false, true) => format!("from {a}"),
                    (true, true) => String::new(),
                }
            })
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn legend(&self, m: &mut Markup, y: f64) {
        let mut x = 16.0;
        let mut item =
            |m: &mut Markup, key: &str, label: &str, swatch: &dyn Fn(&mut Markup, f64)| {
                m.open("g", &[("data-legend", key.into())]);
                swatch(m, x);
                m.text_el(
                    "text",
                    &[
                        ("x", num(x + 26.0)),
                        ("y", num(y + 12.0)),
                        ("font-size", "11".into()),
                        ("fill", INK.into()),
                    ],
                    label,
                );
                m.close("g");
                x += 26.0 + text_width(label, 11.0) * 0.9 + 20.0;
            };
        let rect = |fill: &'static str, opacity: &'static str| {
            move |m: &mut Markup, x: f64| {
                m.empty(
                    "rect",
                    &[
                        ("x", num(x)),
                        ("y", num(y + 2.0)),
                        ("width", "20".into()),
                        ("height", "13".into()),
                        ("rx", "2".into()),
                        ("fill", fill.into()),
                        ("fill-opacity", opacity.into()),
                    ],
                );
            }
        };
        let line = |stroke: &'static str, width: &'static str, dash: &'static str| {
            move |m: &mut Markup, x: f64| {
                m.empty(
                    "line",
                    &[
                        ("x1", num(x + 10.0)),
                        ("x2", num(x + 10.0)),
                        ("y1", num(y)),
                        ("y2", num(y + 17.0)),
                        ("stroke", stroke.into()),
                        ("stroke-width", width.into()),
                        ("stroke-dasharray", dash.into()),
                    ],
                );
            }
        };
        item(m, "asleep", "asleep", &rect(ASLEEP, "1"));
        item(m, "awake", "awake", &rect(AWAKE, "1"));
        item(
            m,
            "exception",
            "ScheduleException (where it changes the sleeps)",
            &rect("url(#exception-hatch)", "1"),
        );
        item(m, "holiday", "holiday", &rect(HOLIDAY, "0.3"));
        item(
            m,
            "day",
            "midnight in the plan's time zone",
            &line(GRID, "1", "none"),
        );
        item(m, "dst", "clock change (DST)", &line(DST, "1.5", "4 3"));
        item(m, "now", "now", &line(NOW, "2", "none"));
    }
}

impl Group {
    fn height(&self) -> f64 {
        STRIP
            + ROW * self.rows.len() as f64
            + if self.dst.is_empty() { 0.0 } else { DST_LANE }
            + GAP
    }
}

/// SVG markup, written by hand rather than with an SVG or XML crate: the picture is a few
/// element kinds with fixed attribute names, and all text from the manifests (plan, target,
/// exception, holiday and time zone names) goes through [`escape`], so a library would add a
/// dependency to the plugin for little.
struct Markup(String);

impl Markup {
    /// `<name attrs>`, then a tooltip and text when given, then the end tag, on one line;
    /// `<name attrs/>` when there is neither.
    fn element(
        &mut self,
        name: &str,
        attrs: &[(&str, String)],
        title: Option<&str>,
        text: Option<&str>,
    ) {
        self.0.push('<');
        self.0.push_str(name);
        for (k, v) in attrs {
            self.0.push(' ');
            self.0.push_str(k);
            self.0.push_str("=\"");
            self.0.push_str(&escape(v));
            self.0.push('"');
        }
        if title.is_none() && text.is_none() {
            self.0.push_str("/>\n");
            return;
        }
        self.0.push('>');
        if let Some(title) = title {
            self.0.push_str("<title>");
            self.0.push_str(&escape(title));
            self.0.push_str("</title>");
        }
        if let Some(text) = text {
            self.0.push_str(&escape(text));
        }
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push_str(">\n");
    }

    fn open(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.element(name, attrs, None, None);
        // An element left open: take back the "/>".
        self.0.truncate(self.0.len() - 3);
        self.0.push_str(">\n");
    }

    fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push_str(">\n");
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.element(name, attrs, None, None);
    }

    /// An element with text in it.
    fn text_el(&mut self, name: &str, attrs: &[(&str, String)], text: &str) {
        self.element(name, attrs, None, Some(text));
    }

    /// An element with a tooltip.
    fn titled(&mut self, name: &str, attrs: &[(&str, String)], title: &str) {
        self.element(name, attrs, Some(title), None);
    }

    /// A `<text>` with a tooltip (the whole of a shortened text).
    fn titled_text(&mut self, attrs: &[(&str, String)], text: &str, title: &str) {
        self.element("text", attrs, Some(title), Some(text));
    }

    /// Markup written here, not from the input.
    fn raw(&mut self, markup: &str) {
        self.0.push_str(markup);
        self.0.push('\n');
    }
}

/// Text for XML content or a quoted attribute value: markup characters as entities, and
/// characters that XML 1.0 does not allow as U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn num(v: f64) -> String {
    format!("{v:.2}")
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M").to_string()
}

fn local(tz: &TimeZone, t: Timestamp, format: &str) -> String {
    t.to_zoned(tz.clone()).strftime(format).to_string()
}

/// `-04:00`, `+05:30`.
fn offset(o: Offset) -> String {
    let s = o.seconds();
    let sign = if s < 0 { '-' } else { '+' };
    let s = s.unsigned_abs();
    format!("{sign}{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// About how wide a text is in the picture's font (a little wider than DejaVu Sans).
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// Where a label that should start at `x` goes: there, or right-aligned to the time line's end
/// when it would run past it.
fn label_at(x: f64, text: &str, size: f64) -> (f64, &'static str) {
    let x = x.max(X0 + 3.0);
    if x + text_width(text, size) > X1 {
        (X1 - 3.0, "end")
    } else {
        (x, "start")
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_names_from_breaking_the_markup() {
        assert_eq!(
            escape("Q&A <day> \"x\" 'y'\u{1}"),
            "Q&amp;A &lt;day&gt; &quot;x&quot; &apos;y&apos;\u{FFFD}"
        );
    }

    #[test]
    fn difference_is_where_one_side_holds() {
        let t = |h: i64| Timestamp::from_second(h * 3600).unwrap();
        let a = [(t(0), t(10)), (t(20), t(30))];
        let b = [(t(0), t(8)), (t(20), t(30)), (t(40), t(45))];
        assert_eq!(difference(&a, &b), vec![(t(8), t(10)), (t(40), t(45))]);
        assert_eq!(difference(&a, &a), vec![]);
    }
}
