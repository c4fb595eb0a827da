//! Materialising a pod's volumes as files in its sandbox directory: secret, configMap,
//! downwardAPI, projected (secret, configMap, downwardAPI, serviceAccountToken through the real
//! TokenRequest API), emptyDir and existing hostPath paths.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use super::env::{
    NodeFacts, Objects, config_map_entries, field_value, resource_value, secret_entries,
};

/// Who owns volume files, from the pod's security context.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ownership {
    /// `fsGroup`: volume files are group-owned by it and group-readable.
    pub fs_group: Option<u32>,
    /// The `runAsUser` all containers share, if they do: service-account tokens are owned by it
    /// with mode 0600.
    pub token_owner: Option<u32>,
}

/// A materialised volume.
#[derive(Debug, Clone)]
pub(crate) struct VolumeDir {
    /// Host path of the volume's root.
    pub path: PathBuf,
    /// Kubernetes mounts this volume type read-only whatever the mount says.
    pub always_read_only: bool,
}

/// A projected service-account token to keep fresh.
#[derive(Debug, Clone)]
pub(crate) struct TokenFile {
    pub path: PathBuf,
    pub service_account: String,
    pub projection: ServiceAccountTokenProjection,
    pub mode: u32,
    pub refresh_at: Instant,
}

/// All volumes of a pod.
#[derive(Debug, Default)]
pub(crate) struct PodVolumes {
    pub dirs: BTreeMap<String, VolumeDir>,
    pub tokens: Vec<TokenFile>,
}

/// What materialisation needs besides the pod.
pub(crate) struct VolumeContext<'a> {
    pub client: &'a kube::Client,
    pub facts: &'a NodeFacts,
    pub ownership: Ownership,
}

/// A file to write into a volume: relative path, contents, mode.
type ItemFile = (String, Vec<u8>, Option<i32>);

fn io_err(action: &str, path: &Path, e: std::io::Error) -> String {
    format!("failed to {action} {}: {e}", path.display())
}

/// A relative path from a volume item, checked like the API server does (no `..`, not absolute).
fn item_path(base: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("invalid item path {relative:?}"));
    }
    Ok(base.join(rel))
}

fn write_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
    }
    // Write beside, then rename: a refreshed token replaces the old one atomically.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, data).map_err(|e| io_err("write", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", &tmp, e))?;
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::chown(&tmp, owner, group).map_err(|e| io_err("chown", &tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e))
}

fn file_mode(item_mode: Option<i32>, default_mode: Option<i32>, ownership: Ownership) -> u32 {
    let mode = item_mode.or(default_mode).unwrap_or(0o644) as u32 & 0o777;
    if ownership.fs_group.is_some() {
        mode | 0o440
    } else {
        mode
    }
}

fn key_files(
    entries: &BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    optional: bool,
    what: &str,
) -> Result<Vec<ItemFile>, String> {
    match items {
        None => Ok(entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect()),
        Some(items) => items
            .iter()
            .filter_map(|item| match entries.get(&item.key) {
                Some(v) => Some(Ok((item.path.clone(), v.clone(), item.mode))),
                None if optional => None,
                None => Some(Err(format!(
                    "configured key {:?} not found in {what}",
                    item.key
                ))),
            })
            .collect(),
    }
}

fn downward_files(
    pod: &Pod,
    facts: &NodeFacts,
    items: &[DownwardAPIVolumeFile],
) -> Result<Vec<ItemFile>, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, facts, field)?
        } else if let Some(resource) = &item.resource_field_ref {
            let name = resource.container_name.clone().unwrap_or_default();
            let container = spec
                .containers
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name:?} not found for resourceFieldRef"))?;
            resource_value(container, facts, resource)?
        } else {
            return Err(format!("downwardAPI item {:?} has no source", item.path));
        };
        out.push((item.path.clone(), value.into_bytes(), item.mode));
    }
    Ok(out)
}

/// Requests a token for the pod's service account through the TokenRequest API, bound to the
/// pod, with the projection's audience and expiry (as the kubelet does).
pub(crate) async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    service_account: &str,
    projection: &ServiceAccountTokenProjection,
) -> Result<(String, Instant), String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let expiration = projection.expiration_seconds.unwrap_or(3600);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(
                projection
                    .audience
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
            ),
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let response = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            format!("failed to fetch token for service account {service_account:?}: {e}")
        })?;
    let token = response
        .status
        .and_then(|s| s.token)
        .ok_or("the TokenRequest response has no token")?;
    // The kubelet refreshes at 80% of the lifetime.
    let refresh = Duration::from_secs((expiration.max(1) as u64) * 8 / 10);
    Ok((token, Instant::now() + refresh))
}

/// Writes a fresh token to `file`.
pub(crate) async fn refresh_token(
    client: &kube::Client,
    pod: &Pod,
    file: &mut TokenFile,
    ownership: Ownership,
) -> Result<(), String> {
    let (token, refresh_at) =
        request_token(client, pod, &file.service_account, &file.projection).await?;
    write_file(
        &file.path,
        token.as_bytes(),
        file.mode,
        ownership.token_owner,
        ownership.fs_group,
    )?;
    file.refresh_at = refresh_at;
    Ok(())
}

/// Materialises every volume of `pod` under `root`.
pub(crate) async fn materialize(
    ctx: &VolumeContext<'_>,
    pod: &Pod,
    objects: &mut Objects,
    root: &Path,
) -> Result<PodVolumes, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let service_account = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut volumes = PodVolumes::default();
    for volume in spec.volumes.iter().flatten() {
        let dir = root.join(&volume.name);
        let (path, always_read_only) = materialize_one(
            ctx,
            pod,
            objects,
            volume,
            &dir,
            &service_account,
            &mut volumes.tokens,
        )
        .await
        .map_err(|e| format!("volume {:?}: {e}", volume.name))?;
        volumes.dirs.insert(
            volume.name.clone(),
            VolumeDir {
                path,
                always_read_only,
            },
        );
    }
    Ok(volumes)
}

async fn materialize_one(
    ctx: &VolumeContext<'_>,
    pod: &Pod,
    objects: &mut Objects,
    volume: &Volume,
    dir: &Path,
    service_account: &str,
    tokens: &mut Vec<TokenFile>,
) -> Result<(PathBuf, bool), String> {
    let ownership = ctx.ownership;
    let mkdir = |path: &Path, mode: u32| -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| io_err("create", path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("chmod", path, e))?;
        if let Some(group) = ownership.fs_group {
            std::os::unix::fs::chown(path, None, Some(group))
                .map_err(|e| io_err("chown", path, e))?;
        }
        Ok(())
    };
    let write_all = |files: Vec<ItemFile>, default_mode: Option<i32>| {
        for (rel, data, mode) in files {
            let path = item_path(dir, &rel)?;
            write_file(
                &path,
                &data,
                file_mode(mode, default_mode, ownership),
                None,
                ownership.fs_group,
            )?;
        }
        Ok::<(), String>(())
    };

    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let optional = secret.optional == Some(true);
        mkdir(dir, 0o755)?;
        match objects.secret(&name).await? {
            Some(s) => write_all(
                key_files(
                    &secret_entries(&s),
                    &secret.items,
                    optional,
                    &format!("secret {name:?}"),
                )?,
                secret.default_mode,
            )?,
            None if optional => {}
            None => return Err(format!("secret {name:?} not found")),
        }
        return Ok((dir.to_path_buf(), true));
    }
    if let Some(cm) = &volume.config_map {
        let name = cm.name.clone();
        let optional = cm.optional == Some(true);
        mkdir(dir, 0o755)?;
        match objects.config_map(&name).await? {
            Some(c) => write_all(
                key_files(
                    &config_map_entries(&c),
                    &cm.items,
                    optional,
                    &format!("configmap {name:?}"),
                )?,
                cm.default_mode,
            )?,
            None if optional => {}
            None => return Err(format!("configmap {name:?} not found")),
        }
        return Ok((dir.to_path_buf(), true));
    }
    if let Some(downward) = &volume.downward_api {
        mkdir(dir, 0o755)?;
        let files = downward_files(
            pod,
            ctx.facts,
            downward.items.as_deref().unwrap_or_default(),
        )?;
        write_all(files, downward.default_mode)?;
        return Ok((dir.to_path_buf(), true));
    }
    if let Some(projected) = &volume.projected {
        mkdir(dir, 0o755)?;
        let default_mode = projected.default_mode;
        for source in projected.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                let name = s.name.clone();
                let optional = s.optional == Some(true);
                match objects.secret(&name).await? {
                    Some(secret) => write_all(
                        key_files(
                            &secret_entries(&secret),
                            &s.items,
                            optional,
                            &format!("secret {name:?}"),
                        )?,
                        default_mode,
                    )?,
                    None if optional => {}
                    None => return Err(format!("secret {name:?} not found")),
                }
            } else if let Some(c) = &source.config_map {
                let name = c.name.clone();
                let optional = c.optional == Some(true);
                match objects.config_map(&name).await? {
                    Some(cm) => write_all(
                        key_files(
                            &config_map_entries(&cm),
                            &c.items,
                            optional,
                            &format!("configmap {name:?}"),
                        )?,
                        default_mode,
                    )?,
                    None if optional => {}
                    None => return Err(format!("configmap {name:?} not found")),
                }
            } else if let Some(d) = &source.downward_api {
                let files = downward_files(pod, ctx.facts, d.items.as_deref().unwrap_or_default())?;
                write_all(files, default_mode)?;
            } else if let Some(projection) = &source.service_account_token {
                let path = item_path(dir, &projection.path)?;
                let mode = match ownership.token_owner {
                    Some(_) => 0o600,
                    None => file_mode(None, default_mode, ownership),
                };
                let mut file = TokenFile {
                    path,
                    service_account: service_account.to_string(),
                    projection: projection.clone(),
                    mode,
                    refresh_at: Instant::now(),
                };
                refresh_token(ctx.client, pod, &mut file, ownership).await?;
                tokens.push(file);
            } else {
                return Err(
                    "unsupported projected source (kube-testbed supports secret, configMap, downwardAPI, serviceAccountToken)"
                        .into(),
                );
            }
        }
        return Ok((dir.to_path_buf(), true));
    }
    if volume.empty_dir.is_some() {
        mkdir(dir, 0o777)?;
        // create_dir_all honours the umask; make it world-writable as the kubelet does.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| io_err("chmod", dir, e))?;
        return Ok((dir.to_path_buf(), false));
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if !path.exists() {
            return Err(format!(
                "hostPath {} does not exist (kube-testbed does not create paths on the host)",
                host.path
            ));
        }
        return Ok((path, false));
    }
    Err("unsupported volume type (kube-testbed supports secret, configMap, downwardAPI, projected, emptyDir and existing hostPath paths)".into())
}
