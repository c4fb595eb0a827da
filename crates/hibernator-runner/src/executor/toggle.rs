//! The engine for objects put to sleep by one field rather than by scaling: Flux's
//! `spec.suspend`, a CronJob's `spec.suspend`, Argo CD's `spec.syncPolicy.automated` and KEDA's
//! `autoscaling.keda.sh/paused-replicas` annotation. Hibernation records the field exactly as
//! found (`null` when absent) before it changes anything, then sets the sleeping value; wake-up
//! writes back exactly what was recorded (a field that was absent is removed, an object that was
//! already suspended stays suspended). Every write names the resource version just read, so a
//! record always describes what was changed.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::{Map, Value, json};

use super::{Ctx, KubeError, ResourceOutcome, RunError, Tally};
use crate::k8s::{Kube, is_conflict, is_not_found};

/// The field manager of the runner's writes.
pub const FIELD_MANAGER: &str = "hibernator-runner";
/// KEDA's annotation that pauses a ScaledObject at a replica count.
pub const KEDA_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// How often a change is retried when the object changed between the look and the write.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Which field puts an object to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `spec.suspend: true` (Flux Kustomizations and HelmReleases, CronJobs), set with
    /// server-side apply as `flux suspend` does.
    Suspend,
    /// `spec.syncPolicy.automated` removed (Argo CD Applications): no automated sync, no
    /// self-heal, no prune.
    ArgoAutomated,
    /// `metadata.annotations["autoscaling.keda.sh/paused-replicas"]: "0"` (KEDA ScaledObjects).
    KedaPaused,
}

impl Field {
    /// The name of the value in the record (`{"suspend": false}`).
    fn record_key(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::ArgoAutomated => "automated",
            Self::KedaPaused => "pausedReplicas",
        }
    }

    /// The field's current value; `null` when absent.
    pub fn read(self, obj: &DynamicObject) -> Value {
        let found = match self {
            Self::Suspend => obj.data.pointer("/spec/suspend").cloned(),
            Self::ArgoAutomated => obj.data.pointer("/spec/syncPolicy/automated").cloned(),
            Self::KedaPaused => obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(KEDA_PAUSED_REPLICAS))
                .map(|v| Value::String(v.clone())),
        };
        found.unwrap_or(Value::Null)
    }

    /// True when `value` already keeps the object asleep.
    pub fn asleep(self, value: &Value) -> bool {
        match self {
            Self::Suspend => value == &Value::Bool(true),
            Self::ArgoAutomated => {
                value.is_null() || value.get("enabled") == Some(&Value::Bool(false))
            }
            Self::KedaPaused => value == &json!("0"),
        }
    }

    /// How a value reads in the story.
    pub fn describe(self, value: &Value) -> String {
        match (self, value) {
            (Self::Suspend, Value::Null) => "spec.suspend absent".into(),
            (Self::Suspend, v) => format!("spec.suspend: {v}"),
            (Self::ArgoAutomated, Value::Null) => "no automated sync".into(),
            (Self::ArgoAutomated, v) => format!("automated sync {v}"),
            (Self::KedaPaused, Value::Null) => "not paused".into(),
            (Self::KedaPaused, v) => format!("{KEDA_PAUSED_REPLICAS}: {v}"),
        }
    }

    /// What hibernation does, for the story.
    fn verb(self) -> &'static str {
        match self {
            Self::Suspend => "suspending",
            Self::ArgoAutomated => "turning off automated sync of",
            Self::KedaPaused => "pausing",
        }
    }

    /// The write that puts the object to sleep, if it is still at `resource_version`.
    fn sleep_patch(self, ar: &ApiResource, obj: &DynamicObject) -> (Patch<Value>, PatchParams) {
        let rv = obj.metadata.resource_version.clone();
        match self {
            // As `flux suspend` does; the resource version makes this an update of what was
            // recorded, never a create of an object that vanished meanwhile.
            Self::Suspend => (
                Patch::Apply(json!({
                    "apiVersion": ar.api_version,
                    "kind": ar.kind,
                    "metadata": {"name": obj.metadata.name, "namespace": obj.metadata.namespace,
                                 "resourceVersion": rv},
                    "spec": {"suspend": true},
                })),
                PatchParams::apply(FIELD_MANAGER).force(),
            ),
            Self::ArgoAutomated => (
                Patch::Merge(json!({
                    "metadata": {"resourceVersion": rv},
                    "spec": {"syncPolicy": {"automated": null}},
                })),
                merge_params(),
            ),
            Self::KedaPaused => (
                Patch::Merge(json!({
                    "metadata": {"resourceVersion": rv,
                                 "annotations": {KEDA_PAUSED_REPLICAS: "0"}},
                })),
                merge_params(),
            ),
        }
    }

    /// The write that puts back exactly `recorded` (`null`: the field is removed).
    fn restore_patch(self, obj: &DynamicObject, recorded: &Value) -> Patch<Value> {
        let rv = obj.metadata.resource_version.clone();
        Patch::Merge(match self {
            Self::Suspend => json!({
                "metadata": {"resourceVersion": rv},
                "spec": {"suspend": recorded},
            }),
            Self::ArgoAutomated => json!({
                "metadata": {"resourceVersion": rv},
                "spec": {"syncPolicy": {"automated": exact(&self.read(obj), recorded)}},
            }),
            Self::KedaPaused => json!({
                "metadata": {"resourceVersion": rv,
                             "annotations": {KEDA_PAUSED_REPLICAS: recorded}},
            }),
        })
    }
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// A merge-patch value turning `current` into exactly `recorded`: for objects, the recorded
/// keys with their values and `null` for keys that were not there.
pub fn exact(current: &Value, recorded: &Value) -> Value {
    let (Value::Object(current), Value::Object(wanted)) = (current, recorded) else {
        return recorded.clone();
    };
    let mut patch = wanted.clone();
    for key in current.keys() {
        if !wanted.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    Value::Object(patch)
}

/// The object a record's id (`<namespace>/<name>`) names; `None` when it names none.
fn object(id: &str) -> Option<Object> {
    id.split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
}

/// A kind of object put to sleep by a field.
pub struct Toggled {
    /// Its API resource.
    pub ar: ApiResource,
    /// How it is named (`Kustomization`).
    pub noun: &'static str,
    /// Key prefix of its records.
    pub prefix: &'static str,
    /// The field.
    pub field: Field,
}

/// One object: namespace and name.
pub type Object = (String, String);

impl Toggled {
    fn api(&self, kube: &Kube, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(kube.client.clone(), namespace, &self.ar)
    }

    /// `Kustomization flux-system/apps`.
    pub fn label(&self, (ns, name): &Object) -> String {
        format!("{} {ns}/{name}", self.noun)
    }

    /// `kustomization:flux-system/apps`.
    pub fn key(&self, (ns, name): &Object) -> String {
        format!("{}:{ns}/{name}", self.prefix)
    }

    /// The object; `None` when it, or its kind, does not exist (kube's `get_opt` takes the
    /// bare 404 of a kind that is not served for an error).
    async fn get(&self, kube: &Kube, o: &Object) -> Result<Option<DynamicObject>, KubeError> {
        match self.api(kube, &o.0).get(&o.1).await {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(KubeError::new("read", self.label(o), &e)),
        }
    }

    /// Puts `objects` to sleep, one after the other, each recorded first. Objects that do not
    /// exist (any more) are counted as missing.
    pub async fn sleep(
        &self,
        ctx: &Ctx<'_>,
        kube: &Kube,
        objects: &[Object],
    ) -> Result<Tally, RunError> {
        let mut tally = Tally {
            total: objects.len() as u32,
            ..Tally::default()
        };
        for o in objects {
            ctx.check_stop()?;
            match self.sleep_one(ctx, kube, o).await? {
                None => {
                    ctx.reporter
                        .warn(format!("{} no longer exists; skipped", self.label(o)));
                    tally.missing += 1;
                    ctx.progress(&format!("skipped {} (gone)", self.label(o)), true)
                        .await;
                }
                Some(changed) => {
                    if changed {
                        tally.changed += 1;
                    } else {
                        tally.already += 1;
                    }
                    ctx.progress(&format!("{} asleep", self.label(o)), true)
                        .await;
                }
            }
        }
        Ok(tally)
    }

    /// Records and puts one object to sleep: `None` when it is gone, else whether it changed.
    async fn sleep_one(
        &self,
        ctx: &Ctx<'_>,
        kube: &Kube,
        o: &Object,
    ) -> Result<Option<bool>, RunError> {
        let key = self.key(o);
        let mut attempt = 1;
        loop {
            let Some(obj) = self.get(kube, o).await? else {
                return Ok(None);
            };
            let value = self.field.read(&obj);
            let record = Map::from_iter([(self.field.record_key().to_string(), value.clone())]);
            let (stored, already) = ctx.record(&key, &Value::Object(record)).await?;
            if attempt == 1 {
                let stored = stored
                    .get(self.field.record_key())
                    .cloned()
                    .unwrap_or(Value::Null);
                ctx.reporter.info(if already {
                    format!(
                        "{key} was recorded earlier in this cycle ({}); keeping that record",
                        self.field.describe(&stored)
                    )
                } else {
                    format!("recorded {key}: {}", self.field.describe(&value))
                });
            }
            if self.field.asleep(&value) {
                ctx.reporter.info(format!(
                    "{} is already asleep ({})",
                    self.label(o),
                    self.field.describe(&value)
                ));
                return Ok(Some(false));
            }
            ctx.reporter
                .info(format!("{} {}", self.field.verb(), self.label(o)));
            let (patch, params) = self.field.sleep_patch(&self.ar, &obj);
            match self.api(kube, &o.0).patch(&o.1, &params, &patch).await {
                Ok(_) => return Ok(Some(true)),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                    ctx.reporter.info(format!(
                        "{} changed meanwhile; looking again",
                        self.label(o)
                    ));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(KubeError::new("put to sleep", self.label(o), &e).into());
                }
            }
        }
    }

    /// Puts back the recorded value of every record (`(namespace/name, record)`); each
    /// outcome is noted, one failure does not stop the others.
    pub async fn restore(
        &self,
        ctx: &Ctx<'_>,
        kube: &Kube,
        records: &[(String, Value)],
    ) -> Result<Tally, RunError> {
        let mut tally = Tally {
            total: records.len() as u32,
            ..Tally::default()
        };
        for (id, record) in records {
            ctx.check_stop()?;
            let key = format!("{}:{id}", self.prefix);
            let Some(o) = object(id) else {
                let message = "its key is not <kind>:<namespace>/<name>; the record is kept";
                ctx.reporter
                    .warn(format!("ignoring restore record {key}: {message}"));
                ctx.outcome(&key, ResourceOutcome::Failed(message.into()));
                tally.failed += 1;
                continue;
            };
            let recorded = record
                .get(self.field.record_key())
                .cloned()
                .unwrap_or(Value::Null);
            match self.restore_one(ctx, kube, &o, &recorded).await {
                Ok(None) => {
                    tally.missing += 1;
                    ctx.not_found(&key, &self.label(&o)).await;
                }
                Ok(Some(changed)) => {
                    if changed {
                        tally.changed += 1;
                    } else {
                        tally.already += 1;
                    }
                    ctx.outcome(&key, ResourceOutcome::Restored);
                    ctx.progress(&format!("{} restored", self.label(&o)), true)
                        .await;
                }
                Err(e) if e.is_stop() => return Err(e),
                Err(e) => {
                    tally.failed += 1;
                    ctx.failed(&key, &e).await;
                }
            }
        }
        Ok(tally)
    }

    /// In-sleep check of the recorded objects (`(namespace/name, record)`): each one this
    /// operator put to sleep must still hold the sleeping value. One found awake is reported
    /// (`Report`) or put to sleep again (`Reapply`: the record of the night is kept, the first
    /// record wins). An object that was already asleep before the night is not ours to keep
    /// asleep.
    pub async fn check(
        &self,
        ctx: &Ctx<'_>,
        kube: &Kube,
        records: &[(String, Value)],
        mode: hibernator_api::plan::EnforceMode,
    ) -> Result<Tally, RunError> {
        let mut tally = Tally {
            total: records.len() as u32,
            ..Tally::default()
        };
        for (id, record) in records {
            ctx.check_stop()?;
            let key = format!("{}:{id}", self.prefix);
            let recorded = record
                .get(self.field.record_key())
                .cloned()
                .unwrap_or(Value::Null);
            let Some(o) = object(id).filter(|_| !self.field.asleep(&recorded)) else {
                // Asleep before the night (or a key this runner cannot read: the wake-up says so).
                tally.already += 1;
                ctx.outcome(&key, ResourceOutcome::Asleep);
                continue;
            };
            let value = match self.get(kube, &o).await {
                Ok(Some(obj)) => self.field.read(&obj),
                Ok(None) => {
                    tally.missing += 1;
                    ctx.check_not_found(&key, &self.label(&o)).await;
                    continue;
                }
                Err(e) => {
                    tally.failed += 1;
                    ctx.check_failed(&key, &e.into()).await;
                    continue;
                }
            };
            let found = self.field.describe(&value);
            if self.field.asleep(&value) {
                ctx.reporter
                    .info(format!("{} has {found}, as it should", self.label(&o)));
                tally.already += 1;
                ctx.outcome(&key, ResourceOutcome::Asleep);
                ctx.progress(&format!("{} asleep", self.label(&o)), true)
                    .await;
                continue;
            }
            ctx.reporter.warn(format!(
                "{} has {found} although it was put to sleep in cycle {}: drifted",
                self.label(&o),
                ctx.execution.cycle_id
            ));
            if mode != hibernator_api::plan::EnforceMode::Reapply {
                tally.left += 1;
                ctx.outcome(&key, ResourceOutcome::Drifted(found.clone()));
                ctx.progress(&format!("{} drifted ({found})", self.label(&o)), true)
                    .await;
                continue;
            }
            match self.sleep_one(ctx, kube, &o).await {
                Ok(Some(true)) => {
                    tally.changed += 1;
                    ctx.outcome(&key, ResourceOutcome::Reapplied(found));
                    ctx.progress(&format!("{} asleep again", self.label(&o)), true)
                        .await;
                }
                Ok(Some(false)) => {
                    // Put back to sleep by someone else between the look and the write.
                    tally.already += 1;
                    ctx.outcome(&key, ResourceOutcome::Asleep);
                }
                Ok(None) => {
                    tally.missing += 1;
                    ctx.check_not_found(&key, &self.label(&o)).await;
                }
                Err(e) if e.is_stop() => return Err(e),
                Err(e) => {
                    tally.failed += 1;
                    ctx.check_failed(&key, &e).await;
                }
            }
        }
        Ok(tally)
    }

    /// Puts back one recorded value: `None` when the object is gone, else whether it changed.
    async fn restore_one(
        &self,
        ctx: &Ctx<'_>,
        kube: &Kube,
        o: &Object,
        recorded: &Value,
    ) -> Result<Option<bool>, RunError> {
        let mut attempt = 1;
        loop {
            let Some(obj) = self.get(kube, o).await? else {
                return Ok(None);
            };
            let current = self.field.read(&obj);
            if attempt == 1 {
                ctx.reporter.info(format!(
                    "found {} ({}); it had {} before hibernation",
                    self.label(o),
                    self.field.describe(&current),
                    self.field.describe(recorded)
                ));
            }
            if &current == recorded {
                return Ok(Some(false));
            }
            let patch = self.field.restore_patch(&obj, recorded);
            match self
                .api(kube, &o.0)
                .patch(&o.1, &merge_params(), &patch)
                .await
            {
                Ok(_) => {
                    ctx.reporter.info(format!(
                        "{} restored ({})",
                        self.label(o),
                        self.field.describe(recorded)
                    ));
                    return Ok(Some(true));
                }
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) if is_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                    ctx.reporter.info(format!(
                        "{} changed meanwhile; looking again",
                        self.label(o)
                    ));
                    attempt += 1;
                }
                Err(e) => return Err(KubeError::new("restore", self.label(o), &e).into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(data: Value, annotations: Option<(&str, &str)>) -> DynamicObject {
        let mut o = DynamicObject {
            types: None,
            metadata: Default::default(),
            data,
        };
        o.metadata.resource_version = Some("7".into());
        o.metadata.annotations =
            annotations.map(|(k, v)| [(k.to_string(), v.to_string())].into_iter().collect());
        o
    }

    #[test]
    fn fields_read_absence_as_null_and_know_when_asleep() {
        let f = Field::Suspend;
        assert_eq!(f.read(&obj(json!({"spec": {}}), None)), Value::Null);
        assert_eq!(
            f.read(&obj(json!({"spec": {"suspend": false}}), None)),
            json!(false)
        );
        assert!(f.asleep(&json!(true)) && !f.asleep(&json!(false)) && !f.asleep(&Value::Null));

        let a = Field::ArgoAutomated;
        let auto = json!({"prune": true, "selfHeal": true});
        assert_eq!(
            a.read(&obj(
                json!({"spec": {"syncPolicy": {"automated": auto}}}),
                None
            )),
            auto
        );
        assert!(a.asleep(&Value::Null));
        assert!(a.asleep(&json!({"enabled": false, "selfHeal": true})));
        assert!(!a.asleep(&auto));

        let k = Field::KedaPaused;
        assert_eq!(
            k.read(&obj(json!({}), Some((KEDA_PAUSED_REPLICAS, "2")))),
            json!("2")
        );
        assert_eq!(k.read(&obj(json!({}), None)), Value::Null);
        assert!(k.asleep(&json!("0")) && !k.asleep(&json!("2")));
    }

    #[test]
    fn restore_patches_put_back_exactly_what_was_recorded() {
        let a = Field::ArgoAutomated;
        let now = obj(
            json!({"spec": {"syncPolicy": {"automated": {"prune": false, "allowEmpty": true}}}}),
            None,
        );
        let Patch::Merge(p) = a.restore_patch(&now, &json!({"selfHeal": true})) else {
            panic!("merge patch")
        };
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "7"},
                   "spec": {"syncPolicy": {"automated": {"selfHeal": true, "prune": null, "allowEmpty": null}}}})
        );
        let Patch::Merge(p) = Field::Suspend.restore_patch(&now, &Value::Null) else {
            panic!("merge patch")
        };
        assert_eq!(p["spec"], json!({"suspend": null}), "absent is removed");
        let Patch::Merge(p) = Field::KedaPaused.restore_patch(&now, &json!("3")) else {
            panic!("merge patch")
        };
        assert_eq!(p["metadata"]["annotations"][KEDA_PAUSED_REPLICAS], "3");
    }
}
