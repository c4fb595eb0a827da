//! The Argo CD health checks under `deploy/argocd/resource_customizations/`, run as Argo CD
//! runs them: the real Lua script, the object as a global `obj` table, the returned table read
//! as `{status, message}`.
//!
//! Argo CD embeds gopher-lua (Lua 5.1) with only the base, package and table libraries and a
//! reduced os. These tests run Lua 5.4 with the same libraries, so the scripts are also
//! checked for constructs that Lua 5.1 does not have. They are the fast check; the judge is
//! the real Argo CD (`argocd::` in the end-to-end tests), which found the `string.format` the
//! scripts used to call when these tests opened the string library.
//!
//! Every case of each kind's `health_test.yaml` (Argo CD's own test layout, so the checks can
//! be contributed upstream as they are) is run, and the HibernationPlan fixtures are checked
//! to parse with the API types and to cover every status shape the controller writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gitops_checks::{relative, repo_root};
use mlua::{Lua, LuaOptions, StdLib, Table, Value as LuaValue};
use serde_json::Value;

const HEALTH_STATUSES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

fn customizations() -> PathBuf {
    repo_root().join("deploy/argocd/resource_customizations")
}

/// `(group, kind, directory)` of every health check.
fn checks() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for group in std::fs::read_dir(customizations()).expect("resource_customizations exists") {
        let group = group.unwrap().path();
        for kind in std::fs::read_dir(&group).unwrap() {
            let kind = kind.unwrap().path();
            out.push((
                group.file_name().unwrap().to_string_lossy().into_owned(),
                kind.file_name().unwrap().to_string_lossy().into_owned(),
                kind,
            ));
        }
    }
    out.sort();
    out
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", relative(path)));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", relative(path)))
}

/// A JSON value as Argo CD hands it to Lua: objects and arrays become tables (arrays 1-based),
/// null nothing at all. gopher-lua has only floats and prints a whole one without a fraction
/// (`tostring(3)` is "3"), as Lua 5.4 prints an integer: whole numbers become integers here,
/// the others floats.
fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().expect("a finite number")),
        },
        Value::String(s) => LuaValue::String(lua.create_string(s)?),
        Value::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table()?;
            for (k, item) in map {
                if !item.is_null() {
                    t.raw_set(k.as_str(), to_lua(lua, item)?)?;
                }
            }
            LuaValue::Table(t)
        }
    })
}

/// Runs a health script on an object; returns `(status, message)`.
fn health(script: &str, obj: &Value) -> (String, String) {
    // Argo CD opens the base, package and table libraries and a reduced os (no string, math
    // or io): a script that calls `string.format` fails there, and so it does here. The
    // end-to-end test `argocd::` runs the scripts in the real Argo CD.
    let lua =
        Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default()).expect("a Lua state");
    lua.globals()
        .set("obj", to_lua(&lua, obj).expect("the object converts"))
        .unwrap();
    let result: Table = lua
        .load(script)
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("the script failed: {e}"));
    let status: String = result.get("status").expect("a status string");
    let message: Option<String> = result.get("message").expect("a message string or nil");
    assert!(
        HEALTH_STATUSES.contains(&status.as_str()),
        "unknown health status {status}"
    );
    (status, message.unwrap_or_default())
}

#[test]
fn every_kind_has_a_health_check_with_tests() {
    let found: Vec<String> = checks()
        .into_iter()
        .map(|(group, kind, _)| format!("{group}/{kind}"))
        .collect();
    assert_eq!(
        found,
        [
            "connector.hibernator.ardikasaputro.io/CloudProvider",
            "connector.hibernator.ardikasaputro.io/K8SCluster",
            "hibernator.ardikasaputro.io/HibernationNotification",
            "hibernator.ardikasaputro.io/HibernationPlan",
            "hibernator.ardikasaputro.io/ScheduleException",
        ]
    );
    for (_, _, dir) in checks() {
        for file in ["health.lua", "health_test.yaml"] {
            assert!(dir.join(file).is_file(), "{} lacks {file}", relative(&dir));
        }
    }
}

#[test]
fn every_health_test_case_passes() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (_, kind, dir) in checks() {
        let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
        let tests = read_yaml(&dir.join("health_test.yaml"));
        let cases = tests["tests"].as_array().expect("a tests list");
        assert!(!cases.is_empty(), "{} has no tests", relative(&dir));
        // Every fixture is used by a test case.
        let mut fixtures: Vec<String> = std::fs::read_dir(dir.join("testdata"))
            .unwrap()
            .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        fixtures.sort();
        let mut used: Vec<String> = cases
            .iter()
            .map(|c| c["inputPath"].as_str().unwrap().to_string())
            .collect();
        used.sort();
        assert_eq!(
            fixtures,
            used,
            "{}: fixtures and test cases differ",
            relative(&dir)
        );
        for case in cases {
            let input = case["inputPath"].as_str().unwrap();
            let obj = read_yaml(&dir.join(input));
            assert_eq!(obj["kind"], kind.as_str(), "{input} is not a {kind}");
            let want = (
                case["healthStatus"]["status"].as_str().unwrap().to_string(),
                case["healthStatus"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let got = health(&script, &obj);
            ran += 1;
            if got != want {
                failures.push(format!("{kind} {input}: want {want:?}, got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 30, "only {ran} cases ran");
}

#[test]
fn plan_health_follows_the_rules_on_every_fixture() {
    // Independent of the expected messages: the status each rule of GITOPS.md asks for.
    let dir = customizations().join("hibernator.ardikasaputro.io/HibernationPlan");
    let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
    for obj in plan_fixtures().values() {
        let name = obj["metadata"]["name"].as_str().unwrap();
        let (status, _) = health(&script, obj);
        let st = &obj["status"];
        let cond = |t: &str| {
            st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == t)
                .map(|c| c["status"].as_str().unwrap().to_string())
        };
        let want = if !obj["metadata"]["deletionTimestamp"].is_null()
            || st.is_null()
            || (!st["observedGeneration"].is_null()
                && st["observedGeneration"] != obj["metadata"]["generation"])
            || cond("Reconciling").as_deref() == Some("True")
        {
            "Progressing"
        } else if cond("Stalled").as_deref() == Some("True") {
            "Degraded"
        } else if obj["spec"]["suspend"] == true {
            "Suspended"
        } else if cond("Ready").as_deref() == Some("True") {
            "Healthy"
        } else {
            "Progressing"
        };
        assert_eq!(status, want, "{name}");
    }
}

/// HibernationPlan fixtures by file name.
fn plan_fixtures() -> BTreeMap<String, Value> {
    let dir = customizations().join("hibernator.ardikasaputro.io/HibernationPlan/testdata");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read_yaml(&p),
            )
        })
        .collect()
}

#[test]
fn plan_fixtures_are_objects_the_api_types_read_and_write_back_unchanged() {
    for (file, obj) in plan_fixtures() {
        let plan: hibernator_api::HibernationPlan = serde_json::from_value(obj.clone())
            .unwrap_or_else(|e| panic!("{file} does not parse as a HibernationPlan: {e}"));
        let back = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            back["status"], obj["status"],
            "{file}: the status does not round-trip through the API types"
        );
    }
}

/// One status shape: the phase and the conditions' status and reason, `None` for "any".
struct Shape {
    phase: Option<&'static str>,
    ready: (&'static str, &'static str),
    stalled: Option<&'static str>,
    hibernated: Option<(&'static str, &'static str)>,
    spec_suspend: bool,
}

const fn shape(
    phase: Option<&'static str>,
    ready: (&'static str, &'static str),
    stalled: Option<&'static str>,
    hibernated: Option<(&'static str, &'static str)>,
) -> Shape {
    Shape {
        phase,
        ready,
        stalled,
        hibernated,
        spec_suspend: false,
    }
}

/// Every status shape the controller writes (crates/hibernator-controller: `decide` and the
/// invalid-spec paths of `reconcile`).
const SHAPES: &[Shape] = &[
    // Steady states and scheduled transitions: Ready=True with the phase as reason.
    shape(
        Some("Active"),
        ("True", "Active"),
        None,
        Some(("False", "Awake")),
    ),
    shape(
        Some("Hibernating"),
        ("True", "Hibernating"),
        None,
        Some(("False", "Hibernating")),
    ),
    shape(
        Some("Hibernated"),
        ("True", "Hibernated"),
        None,
        Some(("True", "Hibernated")),
    ),
    shape(
        Some("WakingUp"),
        ("True", "WakingUp"),
        None,
        Some(("False", "WakingUp")),
    ),
    // Steady with some targets awake by a ScheduleException for some targets only.
    shape(
        Some("PartlyAwake"),
        ("True", "PartlyAwake"),
        None,
        Some(("False", "PartlyAwake")),
    ),
    // suspendUntil in the future.
    shape(
        Some("Suspended"),
        ("True", "Suspended"),
        None,
        Some(("False", "Awake")),
    ),
    // spec.suspend.
    Shape {
        phase: Some("Suspended"),
        ready: ("True", "Suspended"),
        stalled: None,
        hibernated: Some(("False", "Awake")),
        spec_suspend: true,
    },
    // Strict: a failure with a retry pending, hibernation and wake-up.
    shape(
        Some("Error"),
        ("False", "TargetFailed"),
        None,
        Some(("False", "HibernationFailed")),
    ),
    shape(
        Some("Error"),
        ("False", "TargetFailed"),
        None,
        Some(("False", "WakeUpFailed")),
    ),
    // Strict: retries exhausted.
    shape(
        Some("Error"),
        ("False", "RetriesExhausted"),
        Some("RetriesExhausted"),
        Some(("False", "HibernationFailed")),
    ),
    shape(
        Some("Error"),
        ("False", "RetriesExhausted"),
        Some("RetriesExhausted"),
        Some(("False", "WakeUpFailed")),
    ),
    // BestEffort: the operation ended with failures.
    shape(
        Some("Hibernated"),
        ("False", "TargetFailed"),
        None,
        Some(("False", "PartiallyHibernated")),
    ),
    shape(
        Some("Active"),
        ("False", "TargetFailed"),
        None,
        Some(("False", "Awake")),
    ),
    // A connector missing or unusable, within and after the grace period.
    shape(None, ("False", "ReferenceNotFound"), None, None),
    shape(
        None,
        ("False", "ReferenceNotFound"),
        Some("ReferenceNotFound"),
        None,
    ),
    shape(None, ("False", "ReferenceInvalid"), None, None),
    shape(
        None,
        ("False", "ReferenceInvalid"),
        Some("ReferenceInvalid"),
        None,
    ),
    // Invalid spec: semantic problems, or a stored object the types cannot read (no phase).
    shape(None, ("False", "InvalidSpec"), Some("InvalidSpec"), None),
];

#[test]
fn plan_fixtures_cover_every_status_shape_the_controller_writes() {
    let fixtures = plan_fixtures();
    let cond = |obj: &Value, t: &str| -> Option<(String, String)> {
        obj["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| {
                (
                    c["status"].as_str().unwrap().to_string(),
                    c["reason"].as_str().unwrap().to_string(),
                )
            })
    };
    let pair = |p: (&str, &str)| (p.0.to_string(), p.1.to_string());
    let mut missing = Vec::new();
    for s in SHAPES {
        let found = fixtures.values().any(|obj| {
            obj["metadata"]["deletionTimestamp"].is_null()
                && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
                && s.phase.is_none_or(|p| obj["status"]["phase"] == p)
                && cond(obj, "Ready") == Some(pair(s.ready))
                && cond(obj, "Stalled") == s.stalled.map(|r| pair(("True", r)))
                && s.hibernated
                    .is_none_or(|h| cond(obj, "Hibernated") == Some(pair(h)))
                && (obj["spec"]["suspend"] == true) == s.spec_suspend
        });
        if !found {
            missing.push(format!(
                "phase {:?}, Ready {:?}, Stalled {:?}, Hibernated {:?}, spec.suspend {}",
                s.phase, s.ready, s.stalled, s.hibernated, s.spec_suspend
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "no fixture for:\n{}",
        missing.join("\n")
    );
    // And the states around them: no status yet, stale status, deletion, Reconciling.
    for file in [
        "no-status.yaml",
        "stale-generation.yaml",
        "deleting.yaml",
        "reconciling.yaml",
        "no-conditions.yaml",
        "ready-unknown.yaml",
    ] {
        assert!(fixtures.contains_key(file), "no fixture {file}");
    }
}

#[test]
fn a_hibernated_plan_is_healthy_and_only_spec_suspend_is_suspended() {
    let dir = customizations().join("hibernator.ardikasaputro.io/HibernationPlan");
    let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
    for (file, obj) in plan_fixtures() {
        let (status, _) = health(&script, &obj);
        if status == "Suspended" {
            assert_eq!(obj["spec"]["suspend"], true, "{file} is Suspended");
        }
        if obj["status"]["phase"] == "Hibernated"
            && obj["metadata"]["deletionTimestamp"].is_null()
            && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            && obj["status"]["conditions"][0]["status"] == "True"
        {
            assert_eq!(status, "Healthy", "{file}");
        }
    }
}

/// Lua 5.2+ syntax, and library functions that gopher-lua (Lua 5.1) lacks or Argo CD does not
/// open.
#[test]
fn scripts_use_only_lua_5_1() {
    const FORBIDDEN: &[&str] = &[
        "goto",
        "::",
        "//",
        "<<",
        ">>",
        "&",
        "|",
        "<const>",
        "<close>",
        "\\z",
        "\\u{",
        "utf8.",
        "table.unpack",
        "table.move",
        "table.pack",
        // Argo CD opens neither the string nor the math library (nor string methods).
        "string.",
        "math.",
        ":format(",
        ":sub(",
        ":find(",
        ":match(",
        ":gsub(",
        "rawlen",
        "_ENV",
        "setfenv",
        "getfenv",
        "os.",
        "io.",
        "require",
        "load(",
    ];
    for (_, _, dir) in checks() {
        let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
        let code: String = script
            .lines()
            .map(|l| match l.find("--") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        for token in FORBIDDEN {
            assert!(
                !code.contains(token),
                "{}: `{token}` is not Lua 5.1 or not available in Argo CD",
                relative(&dir)
            );
        }
        // `~` only as part of `~=` (5.3 has it as bitwise not / xor).
        assert!(
            code.match_indices('~')
                .all(|(i, _)| code[i..].starts_with("~=")),
            "{}: `~` outside `~=`",
            relative(&dir)
        );
    }
}

#[test]
fn argocd_cm_snippet_holds_the_scripts_verbatim() {
    let cm = read_yaml(&repo_root().join("deploy/argocd/argocd-cm.yaml"));
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().expect("data");
    for (group, kind, dir) in checks() {
        let key = format!("resource.customizations.health.{group}_{kind}");
        let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
        assert_eq!(
            data.get(&key).and_then(Value::as_str),
            Some(script.as_str()),
            "{key} in deploy/argocd/argocd-cm.yaml differs from {}; run `cargo xtask argocd-cm`",
            relative(&dir.join("health.lua"))
        );
    }
    assert_eq!(data.len(), checks().len(), "extra keys in argocd-cm.yaml");
}

#[test]
fn a_script_error_is_not_mistaken_for_a_verdict() {
    // The harness itself: a script that does not return a table fails loudly; a whole number
    // prints as gopher-lua prints it; the string and math libraries are not there, as in Argo
    // CD, so a script that uses them fails instead of passing here and failing there.
    let r = std::panic::catch_unwind(|| health("return nil", &serde_json::json!({})));
    assert!(r.is_err());
    let (s, m) = health(
        r#"return {status = "Healthy", message = "generation " .. tostring(obj.n) .. " of " .. obj.m}"#,
        &serde_json::json!({"n": 3, "m": 2.5}),
    );
    assert_eq!((s.as_str(), m.as_str()), ("Healthy", "generation 3 of 2.5"));
    for script in [
        r#"return {status = "Healthy", message = string.format("%d", obj.n)}"#,
        r#"return {status = "Healthy", message = math.floor(obj.n)}"#,
        r#"return {status = "Healthy", message = ("x"):upper()}"#,
    ] {
        let r = std::panic::catch_unwind(|| health(script, &serde_json::json!({"n": 3})));
        assert!(
            r.is_err(),
            "{script} ran without the string and math libraries"
        );
    }
}
