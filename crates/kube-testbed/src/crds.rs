//! The real CustomResourceDefinitions of third-party projects (Flux, Argo CD, Argo Rollouts,
//! KEDA), fetched by `tools/crds/fetch.sh` from the Go module proxy, and their installation into
//! a cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};

use crate::error::{Error, Result, error_chain};

/// Environment variable naming a directory that already holds the CRD files (skips `fetch.sh`).
pub const CRDS_DIR_ENV: &str = "HIBERNATOR_CRDS";

/// The field manager of the server-side applies done by [`install_third_party_crds`].
pub const FIELD_MANAGER: &str = "kube-testbed";

/// How long [`install_third_party_crds`] waits for one CRD to be established and served.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// The fetch script, located from this crate's source directory like
/// [`build_script`](crate::build_script).
pub fn fetch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/crds/fetch.sh")
}

/// The directory holding the third-party CRDs as `<plural>.<group>.yaml` files (for example
/// `kustomizations.kustomize.toolkit.fluxcd.io.yaml`) and a `VERSIONS` file.
///
/// Runs `tools/crds/fetch.sh` (instant when cached, a few seconds of downloads otherwise) once
/// per process; `HIBERNATOR_CRDS=DIR` skips it and uses `DIR`. Blocking.
pub fn third_party_crds_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| fetch().map_err(|e| error_chain(&e)))
        .clone()
        .map_err(|detail| Error::FetchCrds {
            script: fetch_script(),
            detail,
        })
}

fn fetch() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CRDS_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let script = fetch_script();
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|source| Error::Spawn {
            name: script.display().to_string(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().map(str::trim).unwrap_or_default();
    if !output.status.success() || last.is_empty() {
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::FetchCrds {
            script,
            detail: format!("{}; stderr:\n{}", output.status, tail.join("\n")),
        });
    }
    Ok(PathBuf::from(last))
}

/// Installs third-party CRDs by name (the file stems in [`third_party_crds_dir`], which are the
/// CRDs' names, for example `"kustomizations.kustomize.toolkit.fluxcd.io"`).
///
/// Each file is server-side applied with field manager `kube-testbed` and force, then awaited
/// (up to 60 s per CRD) until it is `Established` and every served version answers a list
/// call. Idempotent; concurrent calls within one process are serialised, so tests sharing a
/// cluster may all call it for the same names.
pub async fn install_third_party_crds(client: &kube::Client, names: &[&str]) -> Result<()> {
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let dir = tokio::task::spawn_blocking(third_party_crds_dir)
        .await
        .map_err(|e| Error::FetchCrds {
            script: fetch_script(),
            detail: format!("the thread running it failed: {e}"),
        })??;
    let _guard = INSTALLING.lock().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        let (raw, crd) = read_crd(&dir, name).await?;
        crds.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&raw),
        )
        .await
        .map_err(|e| Error::kube(format!("apply the CustomResourceDefinition {name}"), e))?;
        wait_until_served(client, &crds, &crd).await?;
    }
    Ok(())
}

/// Reads `<dir>/<name>.yaml`: one CustomResourceDefinition named `name`, returned both as
/// written (what is applied) and typed (what is awaited).
async fn read_crd(dir: &Path, name: &str) -> Result<(serde_json::Value, CustomResourceDefinition)> {
    let path = dir.join(format!("{name}.yaml"));
    let invalid = |detail: String| Error::CrdFile {
        path: path.clone(),
        detail,
    };
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "no such CRD file; available: {}",
                available(dir).join(", ")
            )));
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| invalid(format!("not YAML: {e}")))?;
    documents.retain(|doc| !doc.is_null());
    let [raw] = <[serde_json::Value; 1]>::try_from(documents).map_err(|documents| {
        invalid(format!(
            "expected one YAML document, found {}",
            documents.len()
        ))
    })?;
    let crd: CustomResourceDefinition = serde_json::from_value(raw.clone())
        .map_err(|e| invalid(format!("not a CustomResourceDefinition: {e}")))?;
    if raw.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
        return Err(invalid("kind is not CustomResourceDefinition".into()));
    }
    if crd.metadata.name.as_deref() != Some(name) {
        return Err(invalid(format!(
            "the CRD inside is named {:?}",
            crd.metadata.name
        )));
    }
    Ok((raw, crd))
}

/// The CRD names in `dir`, for error messages.
fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".yaml"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Polls until the CRD is `Established` and a list of each served version succeeds.
async fn wait_until_served(
    client: &kube::Client,
    crds: &Api<CustomResourceDefinition>,
    crd: &CustomResourceDefinition,
) -> Result<()> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let spec = &crd.spec;
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let last = match check_served(client, crds, crd).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "the CustomResourceDefinition {name} ({}) to be established and served",
                    spec.names.kind
                ),
                seconds: READY_LIMIT.as_secs(),
                details: format!("; last check: {last}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One readiness check: `Ok` when established and every served version lists.
async fn check_served(
    client: &kube::Client,
    crds: &Api<CustomResourceDefinition>,
    crd: &CustomResourceDefinition,
) -> std::result::Result<(), String> {
    let name = crd.metadata.name.as_deref().unwrap_or_default();
    let current = crds.get(name).await.map_err(|e| e.to_string())?;
    let established = current
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if !established {
        return Err("not Established yet".into());
    }
    let spec = &crd.spec;
    for version in spec.versions.iter().filter(|v| v.served) {
        let resource = ApiResource {
            group: spec.group.clone(),
            version: version.name.clone(),
            api_version: format!("{}/{}", spec.group, version.name),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        api.list(&ListParams::default().limit(1))
            .await
            .map_err(|e| format!("listing {}: {e}", resource.api_version))?;
    }
    Ok(())
}
