//! Validation: one entry point that returns every problem in a set of documents at once,
//! each with the object, the field path, the bad value and a hint.
//!
//! Layers, per document of a kind Hibernator owns:
//! 1. structure, against the generated CRD schema, as the API server sees it (types, required
//!    fields, enums, patterns, bounds, list-map keys) plus unknown fields, which the API server
//!    would prune or reject;
//! 2. the CRD's CEL rules, evaluated client-side (kube-cel), when the structure is sound;
//! 3. semantics no schema can express: time zones, dependency cycles, typed parameters,
//!    lead times;
//! 4. references across the documents (plan -> connector, K8SCluster -> CloudProvider,
//!    ScheduleException -> plan).
//!
//! The controller uses [`plan_semantics`] on objects the API server has already checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;

use crate::common::{CONNECTOR_GROUP, GROUP, VERSION};
use crate::exception::{MAX_LEAD_TIME_SECONDS, ScheduleException, parse_lead_time};
use crate::graph::{ExecutionGraph, GraphError};
use crate::notification::HibernationNotification;
use crate::params::TargetParameters;
use crate::plan::HibernationPlan;
use crate::schedule::{ScheduleError, Window, time_zone};

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The document would be rejected or the plan could not run.
    Error,
    /// Probably not what was meant.
    Warning,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Where the document came from (`file.yaml`, `file.yaml#2`, `<stdin>#1`).
    pub source: String,
    /// `Kind namespace/name` of the object.
    pub object: String,
    /// Field path, e.g. `spec.targets[2].parameters.clusterName`.
    pub field: String,
    /// The offending value, as JSON (shortened), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Error or warning.
    pub severity: Severity,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.object, self.field)?;
        if let Some(v) = &self.value {
            write!(f, " = {v}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// A parsed document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// File name and position, for messages.
    pub source: String,
    /// The document.
    pub value: Value,
}

/// Options of [`validate_documents`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Do not report references to objects that are not among the documents.
    pub allow_missing_refs: bool,
    /// Only what the API server itself checks (served kind and version, metadata, schema with
    /// unknown fields, CEL rules): no semantic checks. With `allow_missing_refs`, a document is
    /// valid exactly when the API server accepts it (the end-to-end tests hold the two to that).
    pub server_side_only: bool,
}

/// The outcome of a validation.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Objects of Hibernator's kinds that were checked.
    pub checked: Vec<String>,
    /// Documents of other kinds, ignored.
    pub ignored: usize,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when no problem is an error.
    pub fn is_valid(&self) -> bool {
        !self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// The kinds Hibernator owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// HibernationPlan.
    HibernationPlan,
    /// ScheduleException.
    ScheduleException,
    /// CloudProvider.
    CloudProvider,
    /// K8SCluster.
    K8SCluster,
    /// HibernationNotification.
    HibernationNotification,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::HibernationPlan,
        Kind::ScheduleException,
        Kind::CloudProvider,
        Kind::K8SCluster,
        Kind::HibernationNotification,
    ];

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HibernationPlan => "HibernationPlan",
            Self::ScheduleException => "ScheduleException",
            Self::CloudProvider => "CloudProvider",
            Self::K8SCluster => "K8SCluster",
            Self::HibernationNotification => "HibernationNotification",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Self::HibernationPlan | Self::ScheduleException | Self::HibernationNotification => {
                GROUP
            }
            Self::CloudProvider | Self::K8SCluster => CONNECTOR_GROUP,
        }
    }

    fn crd_file(self) -> &'static str {
        match self {
            Self::HibernationPlan => "hibernationplans.yaml",
            Self::ScheduleException => "scheduleexceptions.yaml",
            Self::CloudProvider => "cloudproviders.yaml",
            Self::K8SCluster => "k8sclusters.yaml",
            Self::HibernationNotification => "hibernationnotifications.yaml",
        }
    }
}

/// The generated schema of each kind.
static SCHEMAS: LazyLock<HashMap<Kind, Value>> = LazyLock::new(|| {
    let crds = crate::crds::all();
    Kind::ALL
        .into_iter()
        .map(|k| {
            let crd = &crds
                .iter()
                .find(|(f, _)| *f == k.crd_file())
                .expect("every kind has a CRD")
                .1;
            (k, crate::crds::for_kube_cel(crate::crds::schema_of(crd)))
        })
        .collect()
});

/// The schema of a kind's objects.
pub fn schema(kind: Kind) -> &'static Value {
    &SCHEMAS[&kind]
}

/// Identity of a checked object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ObjectKey {
    kind: Kind,
    namespace: String,
    name: String,
}

/// The namespace assumed for documents without one (as `kubectl apply` would with the
/// default context).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Validates a set of documents: every owned object on its own, then the references between
/// them. Documents of other kinds are counted and ignored.
pub fn validate_documents(docs: &[Document], opts: Options) -> Report {
    let mut report = Report::default();
    let mut objects: Vec<(ObjectKey, &Document)> = Vec::new();
    for doc in docs {
        let api_version = doc
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name = doc
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if group != GROUP && group != CONNECTOR_GROUP {
            report.ignored += 1;
            continue;
        }
        let name = doc
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = doc
            .value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string();
        let label = format!("{kind_name} {namespace}/{name}");
        let mut problems = Problems::new(&doc.source, &label, &doc.value);
        let Some(kind) = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind_name && k.group() == group)
        else {
            let expected: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| k.group() == group)
                .map(|k| k.as_str())
                .collect();
            problems.error(
                "kind",
                format!("{group} has no kind {kind_name:?}"),
                Some(format!("kinds of {group}: {}", expected.join(", "))),
            );
            report.problems.extend(problems.list);
            continue;
        };
        if version != VERSION {
            problems.error(
                "apiVersion",
                format!("{api_version} is not served; {group}/{VERSION} is"),
                Some(format!("write apiVersion: {group}/{VERSION}")),
            );
            report.problems.extend(problems.list);
            continue;
        }
        report.checked.push(label.clone());
        check_metadata(&doc.value, &mut problems);
        check_object(kind, &doc.value, &mut problems, !opts.server_side_only);
        report.problems.extend(problems.list);
        objects.push((
            ObjectKey {
                kind,
                namespace,
                name,
            },
            doc,
        ));
    }
    if !opts.allow_missing_refs {
        check_references(&objects, &mut report);
    }
    check_calendars(docs, &objects, opts.allow_missing_refs, &mut report);
    check_notification_secrets(docs, &objects, &mut report);
    report
}

/// A Secret a notification names, when it is among the documents, has the key named. Secrets
/// that are not among them are not reported: webhook URLs carry tokens and are kept out of Git
/// on purpose.
fn check_notification_secrets(
    docs: &[Document],
    objects: &[(ObjectKey, &Document)],
    report: &mut Report,
) {
    for (key, doc) in objects {
        if key.kind != Kind::HibernationNotification {
            continue;
        }
        let Ok(n) = serde_json::from_value::<HibernationNotification>(doc.value.clone()) else {
            continue;
        };
        let label = format!("HibernationNotification {}/{}", key.namespace, key.name);
        let mut problems = Problems::new(&doc.source, &label, &doc.value);
        for (i, sink) in n.spec.sinks.iter().enumerate() {
            let refs = [
                sink.slack
                    .as_ref()
                    .map(|w| ("slack.webhookSecretRef", &w.webhook_secret_ref)),
                sink.teams
                    .as_ref()
                    .map(|w| ("teams.webhookSecretRef", &w.webhook_secret_ref)),
                sink.webhook
                    .as_ref()
                    .map(|w| ("webhook.urlSecretRef", &w.url_secret_ref)),
                sink.webhook
                    .as_ref()
                    .and_then(|w| w.hmac_secret_ref.as_ref())
                    .map(|r| ("webhook.hmacSecretRef", r)),
            ];
            for (field, r) in refs.into_iter().flatten() {
                let secret = docs.iter().find(|d| {
                    d.value.get("kind").and_then(Value::as_str) == Some("Secret")
                        && d.value.pointer("/metadata/name").and_then(Value::as_str)
                            == Some(r.name.as_str())
                        && d.value
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or(DEFAULT_NAMESPACE)
                            == key.namespace
                });
                let Some(secret) = secret else { continue };
                let has_key = ["data", "stringData"]
                    .iter()
                    .any(|d| secret.value.get(*d).and_then(|m| m.get(&r.key)).is_some());
                if !has_key {
                    problems.error(
                        &format!("spec.sinks[{i}].{field}.key"),
                        format!("Secret {}/{} has no key {:?}", key.namespace, r.name, r.key),
                        Some("add the key to the Secret, or fix the reference".into()),
                    );
                }
            }
        }
        report.problems.extend(problems.list);
    }
}

/// Checks of a HibernationNotification that no schema can express: distinct sink names, a
/// readable `headsUpBefore`, a selector that selects something. The controller reports these
/// as `Stalled`.
pub fn notification_semantics(n: &HibernationNotification) -> Vec<SemanticProblem> {
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, sink) in n.spec.sinks.iter().enumerate() {
        let name = sink.effective_name();
        if let Some(first) = seen.insert(name.clone(), i) {
            out.push(SemanticProblem::new(
                format!("spec.sinks[{i}].name"),
                format!("the name {name:?} is taken by spec.sinks[{first}]"),
                Some("give the sinks distinct names".into()),
            ));
        }
        if sink.type_().is_none() {
            out.push(SemanticProblem::new(
                format!("spec.sinks[{i}]"),
                "give exactly one of slack, teams and webhook".into(),
                None,
            ));
        }
    }
    if n.heads_up_before().is_none() {
        out.push(SemanticProblem::new(
            "spec.headsUpBefore".into(),
            format!(
                "{:?} is not a duration of at most 24h",
                n.spec.heads_up_before.as_deref().unwrap_or_default()
            ),
            Some("write it like 15m, 1h or 1h30m".into()),
        ));
    }
    if let Some(s) = &n.spec.selector {
        let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty());
        if empty {
            out.push(SemanticProblem::new(
                "spec.selector".into(),
                "an empty selector selects no plan (not every plan)".into(),
                Some("give matchLabels or matchExpressions, or planRefs".into()),
            ));
        } else if let Err(e) = kube::core::Selector::try_from(s.clone()) {
            out.push(SemanticProblem::new(
                "spec.selector".into(),
                e.to_string(),
                None,
            ));
        }
    }
    out
}

/// The holiday calendar of each ScheduleException with a `calendarRef`: its ConfigMap among the
/// documents, and the iCalendar text in it readable (errors with line numbers).
fn check_calendars(
    docs: &[Document],
    objects: &[(ObjectKey, &Document)],
    allow_missing: bool,
    report: &mut Report,
) {
    for (key, doc) in objects {
        if key.kind != Kind::ScheduleException {
            continue;
        }
        let Ok(e) = serde_json::from_value::<ScheduleException>(doc.value.clone()) else {
            continue;
        };
        let Some(r) = &e.spec.calendar_ref else {
            continue;
        };
        let label = format!("ScheduleException {}/{}", key.namespace, key.name);
        let mut problems = Problems::new(&doc.source, &label, &doc.value);
        let config_map = docs.iter().find(|d| {
            d.value.get("apiVersion").and_then(Value::as_str) == Some("v1")
                && d.value.get("kind").and_then(Value::as_str) == Some("ConfigMap")
                && d.value.pointer("/metadata/name").and_then(Value::as_str) == Some(&r.name)
                && d.value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_NAMESPACE)
                    == key.namespace
        });
        let cm = format!("ConfigMap {}/{}", key.namespace, r.name);
        match config_map {
            None if allow_missing => {}
            None => problems.error(
                "spec.calendarRef.name",
                format!("{cm} is not among the documents"),
                Some("add it to the documents validated together, or pass --allow-missing-refs when it already exists in the cluster".into()),
            ),
            Some(d) => match d.value.pointer(&format!("/data/{}", r.key.replace('~', "~0").replace('/', "~1"))).and_then(Value::as_str) {
                None => problems.error(
                    "spec.calendarRef.key",
                    format!("{cm} has no key {:?} in data", r.key),
                    None,
                ),
                Some(text) => {
                    let from = e.spec.valid_from.0.to_zoned(jiff::tz::TimeZone::UTC).date();
                    let until = e.spec.valid_until.0.to_zoned(jiff::tz::TimeZone::UTC).date();
                    if let Err(err) = crate::calendar::holidays(text, from, until) {
                        problems.error(
                            "spec.calendarRef",
                            format!("{cm} key {}: {err}", r.key),
                            Some("the calendar must be iCalendar (RFC 5545) with all-day events".into()),
                        );
                    }
                }
            },
        }
        report.problems.extend(problems.list);
    }
}

/// Checks one object of a known kind (all layers but references).
fn check_object(kind: Kind, value: &Value, problems: &mut Problems<'_>, semantics: bool) {
    let schema = schema(kind);
    let before = problems.list.len();
    if let Some(spec_schema) = schema.pointer("/properties/spec") {
        match value.get("spec") {
            Some(spec) => structural(spec_schema, spec, "spec", problems),
            None => problems.error("spec", "spec is missing".into(), None),
        }
    }
    let structure_ok = problems.list.len() == before;
    // Semantic checks name the targets involved, so they come before the CEL rules, whose
    // messages must stay static to fit the API server's cost budget.
    match kind {
        _ if !semantics => {}
        Kind::HibernationPlan => {
            if let Ok(plan) = serde_json::from_value::<HibernationPlan>(value.clone()) {
                let (order_errors, order_warnings) = gitops_order(&plan);
                for p in plan_semantics(&plan)
                    .into_iter()
                    .chain(unsafe_selectors(&plan))
                    .chain(order_errors)
                {
                    problems.push_semantic(p);
                }
                for p in order_warnings {
                    problems.push(p.field, p.message, p.hint, Severity::Warning);
                }
            }
        }
        Kind::ScheduleException => {
            if let Ok(e) = serde_json::from_value::<ScheduleException>(value.clone()) {
                for p in exception_semantics(&e) {
                    problems.push_semantic(p);
                }
            }
        }
        Kind::HibernationNotification => {
            if let Ok(n) = serde_json::from_value::<HibernationNotification>(value.clone()) {
                for p in notification_semantics(&n) {
                    problems.push_semantic(p);
                }
            }
        }
        Kind::CloudProvider | Kind::K8SCluster => {}
    }
    if structure_ok {
        cel(schema, value, problems);
    }
}

fn check_metadata(value: &Value, problems: &mut Problems<'_>) {
    static NAME: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(crate::common::NAME_PATTERN).expect("valid pattern"));
    match value.pointer("/metadata/name").and_then(Value::as_str) {
        None => problems.error(
            "metadata.name",
            "metadata.name is missing".into(),
            Some("every object needs a name".into()),
        ),
        Some(n) if n.len() > 253 || !NAME.is_match(n) => problems.error(
            "metadata.name",
            "not a valid object name".into(),
            Some("lower-case letters, digits, '-' and '.', starting and ending with a letter or digit".into()),
        ),
        Some(_) => {}
    }
}

/// A problem found by the semantic checks, before it is tied to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticProblem {
    /// Field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

impl SemanticProblem {
    fn new(field: String, message: String, hint: Option<String>) -> Self {
        Self {
            field,
            message,
            hint,
        }
    }
}

impl std::fmt::Display for SemanticProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks of a plan that no schema can express: time zone, windows, execution graph, typed
/// parameters. The controller reports these as `Stalled`.
pub fn plan_semantics(plan: &HibernationPlan) -> Vec<SemanticProblem> {
    let mut out = Vec::new();
    let spec = &plan.spec;
    if let Err(e) = time_zone(&spec.schedule.timezone) {
        out.push(SemanticProblem::new(
            "spec.schedule.timezone".into(),
            e.to_string(),
            Some(time_zone_hint(&spec.schedule.timezone)),
        ));
    }
    for (i, w) in spec.schedule.off_hours.iter().enumerate() {
        if let Err(e) = Window::parse(w) {
            out.push(window_problem(&format!("spec.schedule.offHours[{i}]"), &e));
        }
    }
    if let Some(interval) = spec
        .behavior
        .as_ref()
        .and_then(|b| b.enforce.as_ref())
        .and_then(|e| e.interval.as_deref())
        && let Err(message) = crate::plan::parse_enforce_interval(interval)
    {
        out.push(SemanticProblem::new(
            "spec.behavior.enforce.interval".into(),
            message,
            Some("hours and/or minutes from 15m to 168h, e.g. 6h or 1h30m".into()),
        ));
    }
    if let Err(errors) = ExecutionGraph::compile(spec) {
        for e in errors {
            let hint = match &e {
                GraphError::Cycle { .. } => {
                    Some("remove one of the dependencies on the cycle".into())
                }
                GraphError::UnknownTarget { .. } => Some(format!(
                    "targets are: {}",
                    spec.targets
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                GraphError::InNoStage { .. } => Some("add each target to one stage".into()),
                _ => None,
            };
            out.push(SemanticProblem {
                field: e.field(),
                message: e.to_string(),
                hint,
            });
        }
    }
    for (i, t) in spec.targets.iter().enumerate() {
        if let Err(e) = TargetParameters::parse(t.type_, t.parameters.as_ref()) {
            out.push(SemanticProblem::new(
                format!("spec.targets[{i}].parameters"),
                e.to_string(),
                None,
            ));
        }
        if let (Some(kind), Some(cref)) = (t.type_.connector_kind(), &t.connector_ref)
            && kind != cref.kind
        {
            out.push(SemanticProblem {
                field: format!("spec.targets[{i}].connectorRef.kind"),
                message: format!(
                    "target type {} needs a {}, not a {}",
                    t.type_,
                    kind.as_str(),
                    cref.kind.as_str()
                ),
                hint: None,
            });
        }
    }
    out
}

/// The order of `gitops` targets: in each K8SCluster, a plan's `workloads` and `karpenter`
/// targets must hibernate after every `gitops` target of that cluster (an error otherwise:
/// Flux or Argo CD would scale them up again while they sleep), and a cluster with such targets
/// but no `gitops` target gets a warning (when Git manages those objects, nothing stops it).
/// `validate` reports both; the controller does not refuse such plans.
pub fn gitops_order(plan: &HibernationPlan) -> (Vec<SemanticProblem>, Vec<SemanticProblem>) {
    use crate::params::TargetType;
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let Ok(graph) = ExecutionGraph::compile(&plan.spec) else {
        return (errors, warnings);
    };
    let cluster = |i: usize| {
        plan.spec.targets[i]
            .connector_ref
            .as_ref()
            .map(|c| c.name.as_str())
    };
    let of = |t: TargetType| -> Vec<usize> {
        (0..plan.spec.targets.len())
            .filter(|&i| plan.spec.targets[i].type_ == t)
            .collect()
    };
    let gitops = of(TargetType::Gitops);
    let mut scaled = of(TargetType::Workloads);
    scaled.extend(of(TargetType::Karpenter));
    scaled.sort_unstable();
    for w in scaled {
        let target = &plan.spec.targets[w];
        let Some(c) = cluster(w) else { continue };
        let pausers: Vec<usize> = gitops
            .iter()
            .copied()
            .filter(|&g| cluster(g) == Some(c))
            .collect();
        if pausers.is_empty() {
            warnings.push(SemanticProblem::new(
                format!("spec.targets[{w}]"),
                format!(
                    "{} target {} in K8SCluster {c}: no gitops target of this plan pauses Flux or \
                     Argo CD in that cluster first; if Git manages these objects, a sync can \
                     scale them up again while the plan sleeps",
                    target.type_, target.name
                ),
                Some(
                    "add a gitops target for the Kustomizations, HelmReleases or Applications \
                     that apply them, hibernated before this one (docs/operations.md, \"GitOps \
                     tools\")"
                        .into(),
                ),
            ));
            continue;
        }
        for g in pausers {
            if graph.precedes(g, w) {
                continue;
            }
            let gname = &plan.spec.targets[g].name;
            errors.push(SemanticProblem::new(
                format!("spec.targets[{w}]"),
                format!(
                    "{} target {} hibernates before or alongside gitops target {gname} of the \
                     same K8SCluster {c}: Flux or Argo CD could scale it up again before \
                     {gname} pauses them",
                    target.type_, target.name
                ),
                Some(format!(
                    "make {} depend on {gname} (DAG: a dependency from {gname} to {}; \
                     Sequential: list {gname} first; Staged: put {gname} in an earlier stage)",
                    target.name, target.name
                )),
            ));
        }
    }
    (errors, warnings)
}

/// Label selectors without `matchLabels` or `matchExpressions` select everything: for a target
/// that puts things to sleep that is almost never meant, so they are refused (name the
/// namespaces or NodePools, or give labels). `validate` reports them as errors; the controller
/// refuses to hibernate a plan that has them (its wake-ups still run, so that a plan asleep
/// when this rule arrived still wakes up).
pub fn unsafe_selectors(plan: &HibernationPlan) -> Vec<SemanticProblem> {
    plan.spec
        .targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            TargetParameters::parse(t.type_, t.parameters.as_ref())
                .ok()
                .map(|p| empty_selectors(i, &p))
        })
        .flatten()
        .collect()
}

fn empty_selectors(i: usize, params: &TargetParameters) -> Vec<SemanticProblem> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let empty = |s: &Option<LabelSelector>| {
        s.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        })
    };
    let mut fields = Vec::new();
    match params {
        TargetParameters::Workloads(p) => {
            if empty(&p.namespace_selector) {
                fields.push(("namespaceSelector", "every namespace of the cluster"));
            }
            if empty(&p.selector) {
                fields.push((
                    "selector",
                    "every workload of its namespaces (leave it out to mean that)",
                ));
            }
        }
        TargetParameters::Karpenter(p) if empty(&p.selector) => {
            fields.push(("selector", "every NodePool of the cluster"));
        }
        TargetParameters::Gitops(p) => {
            if empty(&p.flux.as_ref().and_then(|f| f.selector.clone())) {
                fields.push((
                    "flux.selector",
                    "every Flux Kustomization and HelmRelease of the cluster",
                ));
            }
            if empty(&p.argocd.as_ref().and_then(|a| a.selector.clone())) {
                fields.push((
                    "argocd.selector",
                    "every Argo CD Application of the cluster",
                ));
            }
        }
        _ => {}
    }
    fields
        .into_iter()
        .map(|(field, what)| {
            SemanticProblem::new(
                format!("spec.targets[{i}].parameters.{field}"),
                format!("an empty selector ({{}}) selects {what}"),
                Some("give matchLabels or matchExpressions, or name the objects".into()),
            )
        })
        .collect()
}

/// Checks of a ScheduleException that no schema can express.
pub fn exception_semantics(e: &ScheduleException) -> Vec<SemanticProblem> {
    let mut out = Vec::new();
    if let Some(lead) = &e.spec.lead_time {
        match parse_lead_time(lead) {
            Some(s) if s <= MAX_LEAD_TIME_SECONDS => {}
            _ => out.push(SemanticProblem::new(
                "spec.leadTime".into(),
                format!("leadTime {lead:?} is not a duration of at most 24h"),
                Some("write it like 30m, 2h or 1h30m".into()),
            )),
        }
    }
    for (i, w) in e.spec.windows.iter().enumerate() {
        if let Err(err) = Window::parse(w) {
            out.push(window_problem(&format!("spec.windows[{i}]"), &err));
        }
    }
    for (i, d) in e.spec.dates.iter().flatten().enumerate() {
        if d.0.parse::<jiff::civil::Date>().is_err() {
            out.push(SemanticProblem::new(
                format!("spec.dates[{i}]"),
                format!("{:?} is not a date", d.0),
                Some("write it as YYYY-MM-DD".into()),
            ));
        }
    }
    out
}

fn window_problem(path: &str, e: &ScheduleError) -> SemanticProblem {
    let field = match e {
        ScheduleError::EmptyWindow(_) => format!("{path}.end"),
        ScheduleError::NoDays => format!("{path}.daysOfWeek"),
        _ => path.to_string(),
    };
    SemanticProblem::new(field, e.to_string(), None)
}

fn time_zone_hint(name: &str) -> String {
    let db = jiff::tz::TimeZoneDatabase::bundled();
    let mut best: Vec<(f64, String)> = db
        .available()
        .map(|n| {
            (
                strsim::jaro_winkler(&n.as_str().to_lowercase(), &name.to_lowercase()),
                n.as_str().to_string(),
            )
        })
        .collect();
    best.sort_by(|a, b| b.0.total_cmp(&a.0));
    match best.first() {
        Some((score, n)) if *score > 0.85 => {
            format!("did you mean {n:?}? Use an IANA name such as America/New_York")
        }
        _ => "use an IANA time zone name such as America/New_York or Europe/Berlin".into(),
    }
}

/// Cross-document references.
fn check_references(objects: &[(ObjectKey, &Document)], report: &mut Report) {
    let exists = |kind: Kind, ns: &str, name: &str| {
        objects
            .iter()
            .any(|(k, _)| k.kind == kind && k.namespace == ns && k.name == name)
    };
    let missing_hint = "add it to the documents validated together, or pass --allow-missing-refs when it already exists in the cluster";
    for (key, doc) in objects {
        let label = format!("{} {}/{}", key.kind.as_str(), key.namespace, key.name);
        let mut problems = Problems::new(&doc.source, &label, &doc.value);
        match key.kind {
            Kind::HibernationPlan => {
                let targets = doc.value.pointer("/spec/targets").and_then(Value::as_array);
                for (i, t) in targets.into_iter().flatten().enumerate() {
                    let Some(cref) = t.get("connectorRef") else {
                        continue;
                    };
                    let kind = match cref.get("kind").and_then(Value::as_str) {
                        Some("CloudProvider") => Kind::CloudProvider,
                        Some("K8SCluster") => Kind::K8SCluster,
                        _ => continue,
                    };
                    let name = cref.get("name").and_then(Value::as_str).unwrap_or_default();
                    let ns = cref
                        .get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(&key.namespace);
                    if !exists(kind, ns, name) {
                        problems.error(
                            &format!("spec.targets[{i}].connectorRef.name"),
                            format!("{} {ns}/{name} is not among the documents", kind.as_str()),
                            Some(missing_hint.into()),
                        );
                    }
                }
            }
            Kind::K8SCluster => {
                if let Some(name) = doc
                    .value
                    .pointer("/spec/providerRef/name")
                    .and_then(Value::as_str)
                    && !exists(Kind::CloudProvider, &key.namespace, name)
                {
                    problems.error(
                        "spec.providerRef.name",
                        format!(
                            "CloudProvider {}/{name} is not among the documents",
                            key.namespace
                        ),
                        Some(missing_hint.into()),
                    );
                }
            }
            Kind::ScheduleException => {
                let plan_name = doc
                    .value
                    .pointer("/spec/planRef/name")
                    .and_then(Value::as_str);
                if let Some(name) = plan_name
                    && !exists(Kind::HibernationPlan, &key.namespace, name)
                {
                    problems.error(
                        "spec.planRef.name",
                        format!(
                            "HibernationPlan {}/{name} is not among the documents",
                            key.namespace
                        ),
                        Some(missing_hint.into()),
                    );
                }
                let plan = objects.iter().find(|(k, _)| {
                    k.kind == Kind::HibernationPlan
                        && k.namespace == key.namespace
                        && Some(k.name.as_str()) == plan_name
                });
                if let Some((_, plan)) = plan {
                    check_exception_targets(&doc.value, &plan.value, &mut problems);
                }
            }
            Kind::HibernationNotification => {
                check_notification_references(key, doc, objects, &mut problems);
            }
            Kind::CloudProvider => {}
        }
        report.problems.extend(problems.list);
    }
}

/// A notification's plans and Secrets among the documents: every `planRefs` name is a plan
/// (an error otherwise, as for an exception's plan), a selector matching none of them is
/// probably a mistake (a warning), and a Secret given among the documents has the key
/// referenced. Secrets that are not among the documents are not reported: they are kept out of
/// Git on purpose.
fn check_notification_references(
    key: &ObjectKey,
    doc: &Document,
    objects: &[(ObjectKey, &Document)],
    problems: &mut Problems<'_>,
) {
    let Ok(n) = serde_json::from_value::<HibernationNotification>(doc.value.clone()) else {
        return;
    };
    let plans: Vec<&Document> = objects
        .iter()
        .filter(|(k, _)| k.kind == Kind::HibernationPlan && k.namespace == key.namespace)
        .map(|(_, d)| *d)
        .collect();
    let plan_name = |d: &Document| {
        d.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    for (i, r) in n.spec.plan_refs.iter().flatten().enumerate() {
        if !plans.iter().any(|d| plan_name(d) == r.name) {
            let names: Vec<String> = plans.iter().map(|d| plan_name(d)).collect();
            problems.error(
                &format!("spec.planRefs[{i}].name"),
                format!(
                    "HibernationPlan {}/{} is not among the documents",
                    key.namespace, r.name
                ),
                Some(match closest(&r.name, names.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean {c:?}?"),
                    None => "add it to the documents validated together, or pass --allow-missing-refs when it already exists in the cluster".into(),
                }),
            );
        }
    }
    if n.spec.selector.is_some() && n.spec_problems().is_empty() {
        let selected = plans.iter().any(|d| {
            let labels: std::collections::BTreeMap<String, String> = d
                .value
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            n.selects(&plan_name(d), &labels)
        });
        if !selected {
            problems.push(
                "spec.selector".into(),
                format!(
                    "selects none of the HibernationPlans of namespace {} among the documents",
                    key.namespace
                ),
                Some("label the plans, or fix the selector".into()),
                Severity::Warning,
            );
        }
    }
}

/// Every `spec.targets` entry of an exception names a target of its plan.
fn check_exception_targets(exception: &Value, plan: &Value, problems: &mut Problems<'_>) {
    let names: Vec<&str> = plan
        .pointer("/spec/targets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    let targets = exception.pointer("/spec/targets").and_then(Value::as_array);
    for (i, t) in targets.into_iter().flatten().enumerate() {
        let Some(t) = t.as_str() else { continue };
        if !names.contains(&t) {
            let close = names
                .iter()
                .map(|n| (strsim::levenshtein(n, t), *n))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, n)| format!("did you mean {n:?}? "))
                .unwrap_or_default();
            problems.error(
                &format!("spec.targets[{i}]"),
                format!("{t:?} is not a target of the plan"),
                Some(format!("{close}its targets: {}", names.join(", "))),
            );
        }
    }
}

/// Collects the problems of one document.
struct Problems<'a> {
    source: &'a str,
    object: &'a str,
    doc: &'a Value,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    fn new(source: &'a str, object: &'a str, doc: &'a Value) -> Self {
        Self {
            source,
            object,
            doc,
            list: Vec::new(),
        }
    }

    fn push(&mut self, field: String, message: String, hint: Option<String>, severity: Severity) {
        let value = lookup(self.doc, &field).map(render_value);
        let problem = Problem {
            source: self.source.to_string(),
            object: self.object.to_string(),
            field,
            value,
            message,
            hint,
            severity,
        };
        if !self.list.contains(&problem) {
            self.list.push(problem);
        }
    }

    /// Adds a semantic problem unless the schema checks already reported one at the same
    /// field, inside it or around it (the same mistake seen twice).
    fn push_semantic(&mut self, p: SemanticProblem) {
        let related = |a: &str, b: &str| {
            a == b
                || a.strip_prefix(b)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
                || b.strip_prefix(a)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        if self.list.iter().any(|q| related(&q.field, &p.field)) {
            return;
        }
        self.push(p.field, p.message, p.hint, Severity::Error);
    }

    fn error(&mut self, field: &str, message: String, hint: Option<String>) {
        self.push(field.to_string(), message, hint, Severity::Error);
    }
}

/// The value at a field path such as `spec.targets[2].name`.
pub fn lookup<'v>(doc: &'v Value, path: &str) -> Option<&'v Value> {
    let mut node = doc;
    for segment in path.split('.') {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            node = node.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            node = match idx.parse::<usize>() {
                Ok(i) => node.get(i)?,
                Err(_) => node.get(idx.trim_matches('"'))?,
            };
        }
    }
    Some(node)
}

fn render_value(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// The structural check: what the API server's schema validation and pruning would do to
/// `value`, with unknown fields reported instead of silently dropped.
///
/// Hand-written rather than a generic JSON-Schema validator because the API server's rules
/// are Kubernetes-specific (pruning of unknown fields, `x-kubernetes-preserve-unknown-fields`,
/// list-map keys, `int-or-string`) and its messages should name the field as `kubectl` does.
fn structural(schema: &Value, value: &Value, path: &str, problems: &mut Problems<'_>) {
    if value.is_null() {
        // The API server drops nulls of non-nullable fields: as if absent.
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            problems.error(path, "must be an integer or a string".into(), None);
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        let got = match value {
            Value::Object(_) => "an object",
            Value::Array(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
        };
        let hint = match (ty, value) {
            (Some("string"), Value::Number(_) | Value::Bool(_)) => Some("quote it".to_string()),
            _ => None,
        };
        problems.error(
            path,
            format!("must be {}, not {got}", type_name(ty.unwrap_or_default())),
            hint,
        );
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        let hint = value
            .as_str()
            .and_then(|s| closest(s, list.iter().map(String::as_str)))
            .map(|c| format!("did you mean {c:?}?"));
        problems.error(path, format!("must be one of: {}", list.join(", ")), hint);
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let additional = schema.get("additionalProperties");
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = req.as_str()
                    && map.get(r).is_none_or(Value::is_null)
                {
                    problems.error(&join(path, r), format!("{r} is required"), None);
                }
            }
            bounds(
                schema,
                "minProperties",
                "maxProperties",
                map.len(),
                "entries",
                path,
                problems,
            );
            for (k, v) in map {
                let child = join(path, k);
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    structural(s, v, &child, problems);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    structural(s, v, &child, problems);
                } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
                    let hint = props
                        .and_then(|p| closest(k, p.keys().map(String::as_str)))
                        .map(|c| format!("did you mean {c:?}?"))
                        .or_else(|| {
                            props.map(|p| {
                                format!(
                                    "fields here: {}",
                                    p.keys().cloned().collect::<Vec<_>>().join(", ")
                                )
                            })
                        });
                    problems.error(&child, format!("unknown field {k:?}"), hint);
                }
            }
        }
        Value::Array(items) => {
            bounds(
                schema,
                "minItems",
                "maxItems",
                items.len(),
                "items",
                path,
                problems,
            );
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
            match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    let mut seen = BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        if !seen.insert(item.to_string()) {
                            problems.error(
                                &format!("{path}[{i}]"),
                                format!("duplicate entry {item}"),
                                None,
                            );
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<&str> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                    for (i, item) in items.iter().enumerate() {
                        let key: Vec<String> = keys
                            .iter()
                            .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                            .collect();
                        let key = key.join(",");
                        if let Some(first) = seen.insert(key.clone(), i) {
                            problems.error(
                                &format!("{path}[{i}].{}", keys.join(",")),
                                format!(
                                    "duplicate {} {key}, also at {path}[{first}]",
                                    keys.join(",")
                                ),
                                Some(format!("each {} must be unique", keys.join(","))),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        Value::String(s) => {
            bounds(
                schema,
                "minLength",
                "maxLength",
                s.chars().count(),
                "characters",
                path,
                problems,
            );
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && !pattern(p).is_some_and(|re| re.is_match(s))
            {
                problems.error(path, format!("does not match {p}"), pattern_hint(p));
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time")
                && s.parse::<jiff::Timestamp>().is_err()
            {
                problems.error(
                    path,
                    "not an RFC 3339 date-time".into(),
                    Some("write it like 2026-12-24T00:00:00Z or 2026-12-24T00:00:00-05:00".into()),
                );
            }
        }
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && f < min
                {
                    problems.error(path, format!("must be at least {min}"), None);
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && f > max
                {
                    problems.error(path, format!("must be at most {max}"), None);
                }
            }
        }
        _ => {}
    }
}

fn bounds(
    schema: &Value,
    min_key: &str,
    max_key: &str,
    n: usize,
    unit: &str,
    path: &str,
    problems: &mut Problems<'_>,
) {
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && (n as u64) < min
    {
        problems.error(path, format!("needs at least {min} {unit}, has {n}"), None);
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && (n as u64) > max
    {
        problems.error(path, format!("allows at most {max} {unit}, has {n}"), None);
    }
}

fn type_name(t: &str) -> &str {
    match t {
        "object" => "an object",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        other => other,
    }
}

fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: LazyLock<std::sync::Mutex<HashMap<String, Option<regex::Regex>>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(p.to_string())
        .or_insert_with(|| regex::Regex::new(p).ok())
        .clone()
}

fn pattern_hint(p: &str) -> Option<String> {
    if p == crate::common::TIME_PATTERN {
        Some("write times as HH:MM on a 24-hour clock, e.g. 06:00 or 20:00".into())
    } else if p.contains("[0-9]{12}") && !p.contains("arn") {
        Some("an AWS account id has 12 digits; quote it so YAML keeps it a string".into())
    } else if p.starts_with("^[a-z]{2}") {
        Some("an AWS region such as us-east-1".into())
    } else if p.starts_with("^[a-z0-9]") {
        Some(
            "lower-case letters, digits and '-', starting and ending with a letter or digit".into(),
        )
    } else if p.contains("h)?") {
        Some("a duration such as 30m, 2h or 1h30m".into())
    } else {
        None
    }
}

/// The closest of `options` to `s`, when close enough to be a likely typo.
fn closest<'o>(s: &str, options: impl Iterator<Item = &'o str>) -> Option<&'o str> {
    options
        .map(|o| {
            (
                strsim::jaro_winkler(&s.to_lowercase(), &o.to_lowercase()),
                o,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The CEL rules of the CRD, evaluated on the document.
fn cel(schema: &Value, value: &Value, problems: &mut Problems<'_>) {
    static VALIDATOR: LazyLock<kube_cel::Validator> = LazyLock::new(kube_cel::Validator::new);
    // Only the spec carries rules; status written by hand in Git is the controller's business.
    let mut object = value.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Err(errors) = VALIDATOR.validate(schema, &object, None) {
        for e in errors.into_vec() {
            let field = e.field_path.trim_start_matches('.').to_string();
            problems.error(
                if field.is_empty() { "spec" } else { &field },
                e.message.clone(),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "variants"))]
pub mod variants;
