//! Helpers for the GitOps and monitoring checks: where the repository is, the real tools the
//! checks run (`kubectl kustomize`, `kubeconform`, `helm`, `promtool`), and the metric names
//! the chart's Grafana dashboard and Prometheus rules query. A tool that cannot be found is a
//! test failure with the reason, never a skipped check.
//!
//! The tests live in `tests/`; other crates' tests (the `kubectl-hibernator` pipeline in
//! `hibernator-cli`, the end-to-end scrape of the controller) use these helpers as a
//! dev-dependency.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use promql_parser::label::{METRIC_NAME, MatchOp};
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

/// Environment variable naming the `kubectl` to use.
pub const KUBECTL_ENV: &str = "HIBERNATOR_KUBECTL";
/// Environment variable naming the `kubeconform` to use instead of building it.
pub const KUBECONFORM_ENV: &str = "HIBERNATOR_KUBECONFORM";
/// Environment variable naming the `helm` to use instead of building it.
pub const HELM_ENV: &str = "HIBERNATOR_HELM";
/// Environment variable naming the `promtool` to use.
pub const PROMTOOL_ENV: &str = "HIBERNATOR_PROMTOOL";
/// The Debian package that ships `promtool`.
pub const PROMTOOL_PACKAGE: &str = "prometheus";
/// The kubectl release the checks are written against (`kubectl.1.33` of the Google Cloud CLI
/// packages); any recent `kubectl` builds the same output.
pub const KUBECTL_VERSIONED: &str = "kubectl.1.33";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `examples/gitops` in the repository.
pub fn gitops_examples() -> PathBuf {
    repo_root().join("examples/gitops")
}

/// Every directory under `examples/gitops` holding a `kustomization.yaml`, sorted.
pub fn example_kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        if entries
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        {
            out.push(dir.to_path_buf());
        }
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&gitops_examples(), &mut out);
    out
}

/// Every `.yaml` file under `dir`, recursively, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// The repository-relative form of `path`, for messages.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A `kubectl` binary, run with its own empty home so no user configuration or cache leaks in.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The binary.
    pub path: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    /// Finds kubectl: `$HIBERNATOR_KUBECTL`, else `kubectl.1.33` (on `PATH`, in the files of
    /// the `kubectl` Debian package, or in the Google Cloud CLI's usual directory), else
    /// `kubectl` on `PATH`. Panics with what was tried when there is none. `home` becomes
    /// its `HOME`.
    pub fn find(home: &Path) -> Self {
        let mut tried = Vec::new();
        let path = find_kubectl(&mut tried).unwrap_or_else(|| {
            panic!(
                "kubectl not found (tried: {}); install kubectl or set {KUBECTL_ENV}",
                tried.join(", ")
            )
        });
        std::fs::create_dir_all(home)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", home.display()));
        Self {
            path,
            home: home.to_path_buf(),
        }
    }

    /// A command for this kubectl with a clean environment for configuration.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null());
        c
    }

    /// `kubectl kustomize DIR`: the built manifests. Panics with kubectl's error on failure.
    pub fn kustomize(&self, dir: &Path) -> String {
        let out = self.try_kustomize(dir);
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed: {}",
            relative(dir),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
    }

    /// `kubectl kustomize DIR`, whatever the outcome.
    pub fn try_kustomize(&self, dir: &Path) -> Output {
        self.command()
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()))
    }
}

fn find_kubectl(tried: &mut Vec<String>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(KUBECTL_ENV) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{KUBECTL_ENV}={} is not an executable file",
            p.display()
        );
        return Some(p);
    }
    tried.push(format!("${KUBECTL_ENV} (unset)"));
    tried.push(format!("{KUBECTL_VERSIONED} on PATH"));
    if let Some(p) = on_path(KUBECTL_VERSIONED) {
        return Some(p);
    }
    tried.push("dpkg -L kubectl".into());
    if let Ok(out) = Command::new("dpkg").args(["-L", "kubectl"]).output()
        && out.status.success()
    {
        let listing = String::from_utf8_lossy(&out.stdout);
        if let Some(p) = listing
            .lines()
            .map(PathBuf::from)
            .find(|p| p.file_name().is_some_and(|n| n == KUBECTL_VERSIONED) && is_executable(p))
        {
            return Some(p);
        }
    }
    let usual = Path::new("/usr/lib/google-cloud-sdk/bin").join(KUBECTL_VERSIONED);
    tried.push(usual.display().to_string());
    if is_executable(&usual) {
        return Some(usual);
    }
    tried.push("kubectl on PATH".into());
    on_path("kubectl")
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

/// The `kubeconform` binary: `$HIBERNATOR_KUBECONFORM`, else the one `tools/k8s/build.sh`
/// builds (from its pinned Go module; cached after the first build). Panics when neither
/// works.
pub fn kubeconform() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| k8s_tool(KUBECONFORM_ENV, "kubeconform"))
        .clone()
}

/// The `helm` binary: `$HIBERNATOR_HELM`, else the one `tools/k8s/build.sh` builds. Panics
/// when neither works.
pub fn helm() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| k8s_tool(HELM_ENV, "helm")).clone()
}

/// `$env` when set, else `name` from the directory `tools/k8s/build.sh` prints.
fn k8s_tool(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{env}={} is not an executable file",
            p.display()
        );
        return p;
    }
    let bin = k8s_tools_dir().join(name);
    assert!(
        is_executable(&bin),
        "tools/k8s/build.sh did not produce {}",
        bin.display()
    );
    bin
}

/// The directory of the tools `tools/k8s/build.sh` builds (once per process).
fn k8s_tools_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("tools/k8s/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "tools/k8s/build.sh failed ({}); it builds kubeconform and helm from their Go \
             modules. Set {KUBECONFORM_ENV} and {HELM_ENV} to use other binaries",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .last()
            .expect("tools/k8s/build.sh prints the tools directory last");
        PathBuf::from(dir.trim())
    })
    .clone()
}

/// `helm template hib deploy/helm/hibernator --namespace hibernator-system` with `--set`
/// values: the rendered YAML stream. Helm runs with empty homes of its own. Panics with helm's
/// error on failure.
pub fn helm_template(sets: &[&str]) -> String {
    let out = helm_command(&["template", "hib"], sets);
    assert!(
        out.status.success(),
        "helm template with {sets:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// `helm ARGS deploy/helm/hibernator --namespace hibernator-system --set ...`, whatever the
/// outcome.
pub fn helm_command(args: &[&str], sets: &[&str]) -> Output {
    let helm = helm();
    let home = target_dir().join("gitops-checks-helm-home");
    let mut cmd = Command::new(&helm);
    cmd.args(args)
        .arg(chart_dir())
        .args(["--namespace", "hibernator-system"])
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", helm.display()))
}

/// Cargo's target directory (scratch files, locks).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The `promtool` binary: `$HIBERNATOR_PROMTOOL`, else `promtool` on `PATH`, else the one
/// Debian's `prometheus` package installs (see [`debian_tool`]).
pub fn promtool() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| debian_tool("promtool", PROMTOOL_PACKAGE, PROMTOOL_ENV))
        .clone()
}

/// An executable a Debian package provides: `$env` when set, else `binary` on `PATH`, else, as
/// root with `apt-get`, `binary` after installing `package` (once, under a file lock). Panics
/// with what to install when there is none.
pub fn debian_tool(binary: &str, package: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{env}={} is not an executable file",
            p.display()
        );
        return p;
    }
    if let Some(p) = on_path(binary) {
        return p;
    }
    let how = format!(
        "install Debian's `{package}` package (apt-get install --no-install-recommends \
         {package}) or set {env}"
    );
    let Some(apt) = on_path("apt-get") else {
        panic!("{binary} not found (${env} unset, not on PATH, no apt-get); {how}");
    };
    assert!(
        rustix::process::geteuid().is_root(),
        "{binary} not found (${env} unset, not on PATH; not root, so apt-get cannot install \
         it); {how}"
    );
    install_package(&apt, binary, package);
    on_path(binary).unwrap_or_else(|| {
        panic!("the `{package}` package is installed but {binary} is not on PATH; {how}")
    })
}

/// `apt-get install --no-install-recommends <package>`, after an `apt-get update` when the
/// package lists do not know it yet. Serialised across test processes by a lock file in the
/// target directory (and skipped when another process installed `binary` meanwhile); apt's own
/// lock is waited for.
fn install_package(apt: &Path, binary: &str, package: &str) {
    let dir = target_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let lock_path = dir.join("apt-install.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    fs4::fs_std::FileExt::lock_exclusive(&lock)
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if on_path(binary).is_some() {
        return;
    }
    let apt_get = |args: &[&str]| {
        Command::new(apt)
            .args(["-y", "-q", "-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", apt.display()))
    };
    let install = ["install", "--no-install-recommends", package];
    let started = std::time::Instant::now();
    let mut out = apt_get(&install);
    if !out.status.success() {
        let update = apt_get(&["update"]);
        assert!(
            update.status.success(),
            "apt-get update failed ({}): {}",
            update.status,
            String::from_utf8_lossy(&update.stderr)
        );
        out = apt_get(&install);
    }
    assert!(
        out.status.success(),
        "apt-get install --no-install-recommends {package} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "installed Debian's {package} package for {binary} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The Helm chart, `deploy/helm/hibernator`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/helm/hibernator")
}

/// The Grafana dashboard the chart ships.
pub fn dashboard_file() -> PathBuf {
    chart_dir().join("dashboards/hibernator.json")
}

/// The Prometheus rule file the chart ships.
pub fn rules_file() -> PathBuf {
    chart_dir().join("rules/hibernator.rules.yaml")
}

/// The promtool unit tests of [`rules_file`].
pub fn rules_test_file() -> PathBuf {
    chart_dir().join("rules/hibernator.rules.test.yaml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", relative(path)))
}

/// The dashboard, parsed.
pub fn dashboard() -> Value {
    let path = dashboard_file();
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", relative(&path)))
}

/// The rule file, parsed.
pub fn rules() -> Value {
    let path = rules_file();
    serde_saphyr::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", relative(&path)))
}

/// Every panel of a dashboard, those inside collapsed rows included.
pub fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL of the dashboard: `(where, expression)` for every panel target's `expr` and
/// the selector of every `label_values(SELECTOR, LABEL)` variable query, with Grafana's
/// interval variables replaced by [`grafana_to_promql`].
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut out = Vec::new();
    for panel in dashboard_panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    format!(
                        "panel {} ({}) target {}",
                        panel["id"], panel["title"], target["refId"]
                    ),
                    grafana_to_promql(expr),
                ));
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if var["type"] != "query" {
            continue;
        }
        let query = query.unwrap_or_else(|| panic!("variable {} has no query", var["name"]));
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .unwrap_or_else(|| {
                panic!(
                    "variable {}: query {query:?} is not label_values(SELECTOR, LABEL)",
                    var["name"]
                )
            });
        out.push((
            format!("variable {}", var["name"]),
            grafana_to_promql(selector),
        ));
    }
    out
}

/// The PromQL of the rule file: `(where, expression)` for every rule.
pub fn rule_exprs() -> Vec<(String, String)> {
    let rules = rules();
    let mut out = Vec::new();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("rule {name:?} of group {} has no expr", group["name"]));
            out.push((
                format!("rule {} of group {}", name.unwrap_or("?"), group["name"]),
                expr.to_string(),
            ));
        }
    }
    out
}

/// A dashboard expression as PromQL: Grafana's range variables (`$__rate_interval`,
/// `$__interval`, `$__range`, also spelt `${...}`) become `5m`. Dashboard variables in label
/// values (`"$namespace"`) are already valid PromQL strings.
pub fn grafana_to_promql(expr: &str) -> String {
    let mut out = expr.to_string();
    for var in ["__rate_interval", "__interval", "__range"] {
        out = out
            .replace(&format!("${{{var}}}"), "5m")
            .replace(&format!("${var}"), "5m");
    }
    out
}

/// The metric names an expression selects (`name{...}` or `{__name__="name"}`). Errs with the
/// parser's message when it is not PromQL.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let selector = match expr {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            self.0.extend(selector.name.clone());
            self.0.extend(
                selector
                    .matchers
                    .matchers
                    .iter()
                    .filter(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
                    .map(|m| m.value.clone()),
            );
            Ok(true)
        }
    }
    let ast = promql_parser::parser::parse(expr)?;
    let mut names = Names(BTreeSet::new());
    let Ok(_) = walk_expr(&mut names, &ast);
    Ok(names.0)
}

/// The metric families `exprs` query: names from [`metric_names`], a histogram's `_bucket`,
/// `_sum` and `_count` series as the histogram's name, and without `up` (Prometheus's own).
/// Errs naming the expression that is not PromQL.
pub fn referenced_metrics<'a>(
    exprs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for (source, expr) in exprs {
        let names = metric_names(expr).map_err(|e| format!("{source}: {expr:?}: {e}"))?;
        out.extend(names.into_iter().filter(|n| n != "up").map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .map(str::to_string)
                .unwrap_or(n)
        }));
    }
    Ok(out)
}

/// Every metric the chart's dashboard and rules query (see [`referenced_metrics`]). Panics
/// when an expression is not PromQL.
pub fn monitoring_metric_names() -> BTreeSet<String> {
    let exprs: Vec<(String, String)> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    referenced_metrics(exprs.iter().map(|(s, e)| (s.as_str(), e.as_str())))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The metric families a Prometheus text exposition declares (`# TYPE NAME KIND`). A counter
/// is known by both spellings of its name, with and without `_total`: OpenMetrics (as
/// `prometheus_client` writes it) declares `hibernator_x` for samples `hibernator_x_total`,
/// the classic text format declares `hibernator_x_total`.
pub fn exposition_families(scrape_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape_text.lines() {
        let Some(decl) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = decl.split_whitespace();
        let Some(name) = words.next() else { continue };
        out.insert(name.to_string());
        if words.next() == Some("counter") {
            match name.strip_suffix("_total") {
                Some(base) => out.insert(base.to_string()),
                None => out.insert(format!("{name}_total")),
            };
        }
    }
    out
}

/// The names of `wanted` that `scrape_text` declares no family of (see
/// [`exposition_families`]), sorted.
pub fn missing_from(wanted: &BTreeSet<String>, scrape_text: &str) -> Vec<String> {
    let families = exposition_families(scrape_text);
    wanted
        .iter()
        .filter(|n| !families.contains(*n))
        .cloned()
        .collect()
}

/// The metrics the dashboard and rules query ([`monitoring_metric_names`]) that a scrape of
/// the controller (Prometheus text exposition) does not declare, sorted. Empty when every
/// panel and alert has its metric.
pub fn missing_metrics(scrape_text: &str) -> Vec<String> {
    missing_from(&monitoring_metric_names(), scrape_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn metric_names_come_from_every_selector() {
        assert_eq!(
            metric_names(
                r#"histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job="x"}[5m])))
                   / on () group_left b and {__name__="c", d="e"} unless count(f offset 1h)
                   or max_over_time(g[1h:5m]) > 2"#
            )
            .unwrap(),
            set(&["a_seconds_bucket", "b", "c", "f", "g"])
        );
        assert_eq!(metric_names("vector(1) + time()").unwrap(), set(&[]));
        assert!(metric_names("sum by (le) (").is_err());
        assert!(metric_names("rate(x[$__rate_interval])").is_err());
        assert_eq!(
            metric_names(&grafana_to_promql(
                r#"rate(x{plan=~"$plan"}[$__rate_interval]) + increase(y[${__range}])"#
            ))
            .unwrap(),
            set(&["x", "y"])
        );
    }

    #[test]
    fn referenced_metrics_name_histograms_and_leave_out_up() {
        let names = referenced_metrics([
            (
                "one",
                "rate(h_seconds_bucket[5m]) / rate(h_seconds_count[5m])",
            ),
            ("two", "h_seconds_sum + c_total + absent(up{job=\"x\"})"),
        ])
        .unwrap();
        assert_eq!(names, set(&["c_total", "h_seconds"]));
        let err = referenced_metrics([("panel 7", "sum(")]).unwrap_err();
        assert!(err.starts_with("panel 7: \"sum(\": "), "{err}");
    }

    const OPENMETRICS: &str = "\
# HELP hibernator_executions Finished runner executions.
# TYPE hibernator_executions counter
hibernator_executions_total{result=\"failed\"} 1
# TYPE hibernator_leader gauge
hibernator_leader 1
# TYPE hibernator_runner_duration_seconds histogram
hibernator_runner_duration_seconds_bucket{le=\"+Inf\"} 0
# EOF
";

    #[test]
    fn exposition_families_know_counters_by_both_names() {
        assert_eq!(
            exposition_families(OPENMETRICS),
            set(&[
                "hibernator_executions",
                "hibernator_executions_total",
                "hibernator_leader",
                "hibernator_runner_duration_seconds",
            ])
        );
        assert_eq!(
            exposition_families("# TYPE x_total counter\nx_total 3\n# TYPE y gauge\n"),
            set(&["x", "x_total", "y"])
        );
    }

    #[test]
    fn missing_from_lists_what_the_scrape_lacks() {
        let wanted = set(&[
            "hibernator_executions_total",
            "hibernator_leader",
            "hibernator_plans_stalled",
            "hibernator_runner_duration_seconds",
        ]);
        assert_eq!(
            missing_from(&wanted, OPENMETRICS),
            ["hibernator_plans_stalled"]
        );
        assert_eq!(missing_from(&wanted, ""), Vec::from_iter(wanted.clone()));
    }

    /// A scrape declaring every queried family, each counter in one of its two spellings,
    /// misses nothing; leaving one out names it.
    #[test]
    fn missing_metrics_checks_the_dashboard_and_rules() {
        let names = monitoring_metric_names();
        assert!(names.contains("hibernator_leader"), "{names:?}");
        assert!(
            names.contains("hibernator_schedule_boundary_lag_seconds"),
            "{names:?}"
        );
        assert!(!names.contains("up"), "{names:?}");
        let scrape = |skip: &str| {
            let mut text = String::new();
            for (i, name) in names.iter().filter(|n| *n != skip).enumerate() {
                let decl = match name.strip_suffix("_total") {
                    Some(base) if i % 2 == 0 => format!("# TYPE {base} counter\n"),
                    Some(_) => format!("# TYPE {name} counter\n"),
                    None => format!("# TYPE {name} gauge\n"),
                };
                text.push_str(&decl);
            }
            text.push_str("# EOF\n");
            text
        };
        assert_eq!(missing_metrics(&scrape("")), Vec::<String>::new());
        assert_eq!(
            missing_metrics(&scrape("hibernator_leader")),
            ["hibernator_leader"]
        );
    }
}
