//! The API server's audit log, parsed, so tests can assert which writes a component made and
//! with which field manager.
//!
//! Policy (see [`POLICY`]): reads (`get`, `list`, `watch`) are not logged; secrets, configmaps
//! and token reviews are logged at `Metadata` level (no bodies: they carry credentials);
//! every other request at `Request` level (with the request body). The log is written in
//! blocking mode, so an event is on disk when the API server answers the request.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The audit policy the testbed's API server runs with.
pub const POLICY: &str = r#"{
  "apiVersion": "audit.k8s.io/v1",
  "kind": "Policy",
  "omitStages": ["RequestReceived"],
  "rules": [
    {"level": "None", "verbs": ["get", "list", "watch"]},
    {"level": "Metadata", "resources": [
      {"group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
      {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}
    ]},
    {"level": "Request"}
  ]
}
"#;

/// Who made a request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditUser {
    /// For example `admin`, `system:node:kube-testbed` or
    /// `system:serviceaccount:kube-system:job-controller`.
    #[serde(default)]
    pub username: String,
    /// The user's UID, if any.
    #[serde(default)]
    pub uid: Option<String>,
    /// Group memberships.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The object a request is about.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditObjectRef {
    /// Plural resource name, e.g. `pods`.
    #[serde(default)]
    pub resource: Option<String>,
    /// Namespace, for namespaced resources.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Object name (absent for creates with `generateName`).
    #[serde(default)]
    pub name: Option<String>,
    /// API group (empty for the core group).
    #[serde(default)]
    pub api_group: Option<String>,
    /// API version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Subresource, e.g. `status`.
    #[serde(default)]
    pub subresource: Option<String>,
}

/// The response status of a request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AuditResponseStatus {
    /// HTTP status code.
    #[serde(default)]
    pub code: Option<u16>,
}

/// One `audit.k8s.io/v1` Event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `Metadata` or `Request`.
    pub level: String,
    /// Unique per request.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// `ResponseComplete` (or `Panic`).
    pub stage: String,
    /// The request URI, query included.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Kubernetes verb: `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The authenticated user.
    pub user: AuditUser,
    /// The client's user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The object, when the request is about one.
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    /// The response status.
    #[serde(default)]
    pub response_status: Option<AuditResponseStatus>,
    /// The request body (level `Request` only).
    #[serde(default)]
    pub request_object: Option<serde_json::Value>,
    /// When the request was received (RFC 3339).
    #[serde(default)]
    pub request_received_timestamp: Option<String>,
    /// The `fieldManager` query parameter, if the request had one.
    #[serde(skip)]
    pub field_manager: Option<String>,
}

impl AuditEvent {
    /// Whether the request changed (or tried to change) state.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// The HTTP status code of the response, 0 if unknown.
    pub fn code(&self) -> u16 {
        self.response_status
            .as_ref()
            .and_then(|s| s.code)
            .unwrap_or_default()
    }

    /// The object's resource (`pods`, `jobs`, ...), if any.
    pub fn resource(&self) -> Option<&str> {
        self.object_ref.as_ref()?.resource.as_deref()
    }

    /// The object's namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.object_ref.as_ref()?.namespace.as_deref()
    }

    /// The object's name, if any.
    pub fn name(&self) -> Option<&str> {
        self.object_ref.as_ref()?.name.as_deref()
    }

    /// The subresource (`status`, `token`, ...), if any.
    pub fn subresource(&self) -> Option<&str> {
        self.object_ref.as_ref()?.subresource.as_deref()
    }

    /// The value of a query parameter of the request URI (percent-decoded).
    pub fn query_param(&self, key: &str) -> Option<String> {
        query_param(&self.request_uri, key)
    }
}

fn query_param(uri: &str, key: &str) -> Option<String> {
    let (_, query) = uri.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as in form-encoded query strings).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the audit log at `path`. A last line still being written is skipped.
pub fn read_audit_log(path: &Path) -> Result<Vec<AuditEvent>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditEvent>(line) {
            Ok(mut event) => {
                event.field_manager = query_param(&event.request_uri, "fieldManager");
                events.push(event);
            }
            Err(_) if !complete && index + 1 == lines.len() => {}
            Err(source) => {
                return Err(Error::Audit {
                    path: PathBuf::from(path),
                    line: index + 1,
                    source,
                });
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_event_and_its_field_manager() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a1","stage":"ResponseComplete","requestURI":"/apis/batch/v1/namespaces/t1/jobs/j/status?fieldManager=my%20ctrl\u0026force=true","verb":"patch","user":{"username":"admin","groups":["system:masters","system:authenticated"]},"userAgent":"kube-rs","objectRef":{"resource":"jobs","namespace":"t1","name":"j","apiGroup":"batch","apiVersion":"v1","subresource":"status"},"responseStatus":{"metadata":{},"code":200},"requestObject":{"status":{}}}"#;
        // The second line is still being written.
        std::fs::write(&path, format!("{line}\n{{\"kind\":\"Ev")).unwrap();
        let events = read_audit_log(&path).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.verb, "patch");
        assert!(e.is_write());
        assert_eq!(e.field_manager.as_deref(), Some("my ctrl"));
        assert_eq!(e.query_param("force").as_deref(), Some("true"));
        assert_eq!(e.resource(), Some("jobs"));
        assert_eq!(e.subresource(), Some("status"));
        assert_eq!(e.namespace(), Some("t1"));
        assert_eq!(e.user.username, "admin");
        assert_eq!(e.code(), 200);
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "not json\n").unwrap();
        assert!(matches!(
            read_audit_log(&path),
            Err(Error::Audit { line: 1, .. })
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
