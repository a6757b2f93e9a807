//! The in-test API server's state: resource types, objects with resourceVersion, generation,
//! uid, managed fields, finalizers and deletionTimestamp, and the event log that watches
//! replay (bounded: older revisions are compacted away and a watch from them gets 410 Gone).

use super::ssa::{Owners, Scope};
use super::types::{self, ResourceType, status};
use crate::schema::{Problem, admit};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::broadcast;

/// (group, plural, namespace or "", name).
pub type Key = (String, String, String, String);

/// An error answer: HTTP status and a `Status` object.
pub type Failure = (u16, Value);

#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub type_: &'static str,
    pub object: Value,
}

pub struct State {
    pub rv: u64,
    /// (group, version, plural) → type.
    pub types: BTreeMap<(String, String, String), ResourceType>,
    pub objects: BTreeMap<Key, (Value, Owners)>,
    pub events: VecDeque<Event>,
    /// Events with `rv <= compacted` are gone.
    pub compacted: u64,
    pub retain_events: usize,
    pub feed: broadcast::Sender<Event>,
    uid: u64,
    /// Watches answered 410 Gone so far.
    pub gone_answers: u64,
    /// Fixed clock for timestamps unless a test moves it (seconds since the epoch).
    pub now: u64,
}

/// RFC 3339 UTC for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// 422 Invalid, worded as the apiserver words it: `Kind.group "name" is invalid: field: why`.
fn invalid(t: &ResourceType, name: &str, causes: Vec<(String, String)>) -> Failure {
    let kind = if t.group.is_empty() {
        t.kind.clone()
    } else {
        format!("{}.{}", t.kind, t.group)
    };
    let reasons: Vec<String> = causes
        .iter()
        .map(|(f, m)| {
            if m.starts_with(f.as_str()) {
                m.clone()
            } else {
                format!("{f}: {m}")
            }
        })
        .collect();
    let message = format!("{kind} \"{name}\" is invalid: {}", reasons.join(", "));
    let kind = &t.kind;
    let causes: Vec<Value> = causes
        .iter()
        .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
        .collect();
    (
        422,
        status(
            422,
            "Invalid",
            &message,
            Some(json!({"name": name, "kind": kind, "causes": causes})),
        ),
    )
}

/// Who writes and how: the field manager, `fieldValidation`, `dryRun=All`.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub manager: &'a str,
    pub validation: FieldValidation,
    pub dry_run: bool,
}

/// How a write handles fields the schema does not know (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl State {
    pub fn new(retain_events: usize) -> Self {
        let mut s = State {
            rv: 1,
            types: BTreeMap::new(),
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            compacted: 0,
            retain_events,
            feed: broadcast::channel(4096).0,
            uid: 0,
            gone_answers: 0,
            now: 1_764_950_400, // 2025-12-05T16:00:00Z
        };
        for t in types::builtins() {
            s.types
                .insert((t.group.clone(), t.version.clone(), t.plural.clone()), t);
        }
        for ns in ["default", "kube-system"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            let t = s.find("", "v1", "namespaces").unwrap();
            s.create(
                &t,
                "",
                obj,
                Write {
                    manager: "kube-apiserver",
                    validation: FieldValidation::Strict,
                    dry_run: false,
                },
                None,
            )
            .unwrap();
        }
        s
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .get(&(group.into(), version.into(), plural.into()))
            .cloned()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!(
            "6b1c{:04x}-0000-4000-8000-{:012x}",
            self.uid >> 48,
            self.uid
        )
    }

    fn record(&mut self, t: &ResourceType, namespace: &str, type_: &'static str, object: Value) {
        let e = Event {
            rv: self.rv,
            group: t.group.clone(),
            plural: t.plural.clone(),
            namespace: namespace.into(),
            type_,
            object,
        };
        self.events.push_back(e.clone());
        while self.events.len() > self.retain_events {
            let old = self.events.pop_front().unwrap();
            self.compacted = old.rv;
        }
        let _ = self.feed.send(e);
    }

    /// Drops every event so far: a watch from any earlier revision gets 410 Gone.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.events.clear();
    }

    /// Schema checks (CRs only): prunes, defaults, validates; unknown fields are an error
    /// under Strict and a warning otherwise.
    fn admit(
        t: &ResourceType,
        obj: &mut Value,
        validation: FieldValidation,
    ) -> Result<Vec<String>, Failure> {
        let Some(schema) = &t.schema else {
            return Ok(vec![]);
        };
        let errors = admit(schema, obj);
        let (unknown, errors): (Vec<_>, Vec<_>) =
            errors.into_iter().partition(|e| e.kind == Problem::Unknown);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if !errors.is_empty() {
            let causes = errors
                .iter()
                .map(|e| (e.path.clone(), e.to_string()))
                .collect();
            return Err(invalid(t, &name, causes));
        }
        let unknown: Vec<String> = unknown
            .iter()
            .map(|e| format!("unknown field \"{}\"", e.path))
            .collect();
        if validation == FieldValidation::Strict && !unknown.is_empty() {
            let message = format!("strict decoding error: {}", unknown.join(", "));
            return Err((400, status(400, "BadRequest", &message, None)));
        }
        Ok(if validation == FieldValidation::Warn {
            unknown
        } else {
            vec![]
        })
    }

    fn check_identity(t: &ResourceType, namespace: &str, obj: &Value) -> Result<String, Failure> {
        if obj["apiVersion"] != t.api_version().as_str() || obj["kind"] != t.kind.as_str() {
            let m = format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                obj["apiVersion"],
                t.api_version()
            );
            return Err((400, status(400, "BadRequest", &m, None)));
        }
        let name = obj["metadata"]["name"].as_str().filter(|n| !n.is_empty());
        let Some(name) = name else {
            return Err(invalid(
                t,
                "",
                vec![(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        };
        if let Some(ns) = obj["metadata"]["namespace"].as_str()
            && ns != namespace
        {
            let m = "the namespace of the provided object does not match the namespace sent on the request";
            return Err((400, status(400, "BadRequest", m, None)));
        }
        Ok(name.to_owned())
    }

    /// POST: creates `obj`. Returns the stored object and warnings.
    pub fn create(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        mut obj: Value,
        w: Write<'_>,
        owners_after: Option<Owners>,
    ) -> Result<(Value, Vec<String>), Failure> {
        let Write {
            manager,
            validation,
            dry_run,
        } = w;
        if let Some(g) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|_| obj["metadata"]["name"].is_null())
        {
            obj["metadata"]["name"] = json!(format!("{g}{:05x}", self.uid + 1));
        }
        let name = Self::check_identity(t, namespace, &obj)?;
        if obj["metadata"].get("resourceVersion").is_some() && owners_after.is_none() {
            let m = "resourceVersion should not be set on objects to be created";
            return Err((500, status(500, "InternalError", m, None)));
        }
        if t.namespaced && namespace.is_empty() {
            return Err((
                400,
                status(
                    400,
                    "BadRequest",
                    "the namespace of the object must be set",
                    None,
                ),
            ));
        }
        if t.namespaced
            && !self.objects.contains_key(&(
                String::new(),
                "namespaces".into(),
                String::new(),
                namespace.into(),
            ))
        {
            return Err((
                404,
                status(
                    404,
                    "NotFound",
                    &format!("namespaces \"{namespace}\" not found"),
                    None,
                ),
            ));
        }
        let key = (
            t.group.clone(),
            t.plural.clone(),
            namespace.to_owned(),
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            let resource = if t.group.is_empty() {
                t.plural.clone()
            } else {
                format!("{}.{}", t.plural, t.group)
            };
            let m = format!("{resource} \"{name}\" already exists");
            return Err((
                409,
                status(
                    409,
                    "AlreadyExists",
                    &m,
                    Some(json!({"name": name, "group": t.group, "kind": t.plural})),
                ),
            ));
        }
        if t.status_subresource && t.schema.is_some() {
            obj.as_object_mut().unwrap().remove("status");
        }
        let warnings = Self::admit(t, &mut obj, validation)?;
        let mut crd_types = None;
        if t.kind == "CustomResourceDefinition" {
            let declared =
                types::from_crd(&obj).map_err(|m| invalid(t, &name, vec![("spec".into(), m)]))?;
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": rfc3339(self.now)},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": rfc3339(self.now)},
                ],
                "storedVersions": obj["spec"]["versions"].as_array().unwrap().iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
            });
            crd_types = Some(declared);
        }
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.remove("generateName");
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        if t.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        if dry_run {
            return Ok((obj, warnings));
        }
        self.rv += 1;
        let uid = self.next_uid();
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(rfc3339(self.now)));
        meta.insert("generation".into(), json!(1));
        let owners = owners_after.unwrap_or_else(|| {
            let mut owners = Owners::default();
            let scope = Scope::Main {
                status_subresource: t.status_subresource,
            };
            owners.update(
                &json!({}),
                &obj,
                t.schema.as_ref(),
                scope,
                manager,
                &t.api_version(),
                &rfc3339(self.now),
            );
            owners
        });
        obj["metadata"]["managedFields"] = owners.render();
        self.objects.insert(key, (obj.clone(), owners));
        if let Some(declared) = crd_types {
            for d in declared {
                self.types
                    .insert((d.group.clone(), d.version.clone(), d.plural.clone()), d);
            }
        }
        self.record(t, namespace, "ADDED", obj.clone());
        Ok((obj, warnings))
    }

    pub fn get(&self, t: &ResourceType, namespace: &str, name: &str) -> Result<Value, Failure> {
        let key = (
            t.group.clone(),
            t.plural.clone(),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.objects
            .get(&key)
            .map(|(o, _)| with_version(o, t))
            .ok_or_else(|| (404, types::not_found(t, name)))
    }

    pub fn list(&self, t: &ResourceType, namespace: &str, selector: &Selector) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == t.group && *p == t.plural && (namespace.is_empty() || *ns == namespace)
            })
            .map(|(_, (o, _))| with_version(o, t))
            .filter(|o| selector.matches(o))
            .collect();
        json!({
            "apiVersion": t.api_version(), "kind": format!("{}List", t.kind),
            "metadata": {"resourceVersion": self.rv.to_string()}, "items": items,
        })
    }

    /// Writes `new` over the stored object (PUT, merge patch or apply already merged): the
    /// resourceVersion precondition, status subresource split, finalizer rules, generation,
    /// ownership, and the real delete once the last finalizer of a deleting object is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        mut new: Value,
        scope: Scope,
        w: Write<'_>,
        owners_after: Option<Owners>,
    ) -> Result<(Value, Vec<String>), Failure> {
        let Write {
            manager,
            validation,
            dry_run,
        } = w;
        let key = (
            t.group.clone(),
            t.plural.clone(),
            namespace.to_owned(),
            name.to_owned(),
        );
        let Some((old, owners)) = self.objects.get(&key).cloned() else {
            return Err((404, types::not_found(t, name)));
        };
        Self::check_identity(t, namespace, &new)?;
        if new["metadata"]["name"] != name {
            return Err((
                400,
                status(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                    None,
                ),
            ));
        }
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && rv != old["metadata"]["resourceVersion"]
        {
            let resource = if t.group.is_empty() {
                t.plural.clone()
            } else {
                format!("{}.{}", t.plural, t.group)
            };
            let m = format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            );
            return Err((
                409,
                status(
                    409,
                    "Conflict",
                    &m,
                    Some(json!({"name": name, "group": t.group, "kind": t.plural})),
                ),
            ));
        }
        // Only the part of the object this endpoint owns changes.
        match scope {
            Scope::Status => {
                let status_part = new.get("status").cloned();
                new = old.clone();
                match status_part {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().unwrap().remove("status");
                    }
                }
            }
            Scope::Main {
                status_subresource: true,
            } => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().unwrap().remove("status");
                }
            },
            Scope::Main { .. } => {}
        }
        let warnings = Self::admit(t, &mut new, validation)?;
        // Server-owned metadata stays the server's.
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    new["metadata"].as_object_mut().unwrap().remove(k);
                }
            }
        }
        let finalizers = |o: &Value| -> Vec<Value> {
            o["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let deleting = old["metadata"].get("deletionTimestamp").is_some();
        if deleting
            && finalizers(&new)
                .iter()
                .any(|f| !finalizers(&old).contains(f))
        {
            let m = "Forbidden: no new finalizers can be added if the object is being deleted";
            return Err(invalid(
                t,
                name,
                vec![("metadata.finalizers".into(), m.into())],
            ));
        }
        let unchanged = strip_volatile(&old) == strip_volatile(&new);
        if dry_run || (unchanged && owners_after.is_none()) {
            return Ok((with_version(&old, t), warnings));
        }
        let spec_changed = {
            let body = |o: &Value| {
                let mut o = o.clone();
                let m = o.as_object_mut().unwrap();
                m.remove("metadata");
                m.remove("status");
                o
            };
            body(&old) != body(&new)
        };
        if spec_changed && t.kind != "Namespace" {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        let now = rfc3339(self.now);
        let owners = match owners_after {
            Some(o) => o,
            None => {
                let mut o = owners;
                o.update(
                    &old,
                    &new,
                    t.schema.as_ref(),
                    scope,
                    manager,
                    &t.api_version(),
                    &now,
                );
                o
            }
        };
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        new["metadata"]["managedFields"] = owners.render();
        if deleting && finalizers(&new).is_empty() {
            self.objects.remove(&key);
            self.record(t, namespace, "DELETED", new.clone());
            return Ok((new, warnings));
        }
        self.objects.insert(key, (new.clone(), owners));
        self.record(t, namespace, "MODIFIED", new.clone());
        Ok((with_version(&new, t), warnings))
    }

    /// DELETE: with finalizers, marks the object (deletionTimestamp) and keeps it.
    pub fn delete(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<(u16, Value), Failure> {
        let key = (
            t.group.clone(),
            t.plural.clone(),
            namespace.to_owned(),
            name.to_owned(),
        );
        let Some((mut obj, owners)) = self.objects.get(&key).cloned() else {
            return Err((404, types::not_found(t, name)));
        };
        if dry_run {
            return Ok((200, obj));
        }
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj["metadata"].get("deletionTimestamp").is_none() {
                self.rv += 1;
                obj["metadata"]["deletionTimestamp"] = json!(rfc3339(self.now));
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.objects.insert(key, (obj.clone(), owners));
                self.record(t, namespace, "MODIFIED", obj.clone());
            }
            return Ok((202, with_version(&obj, t)));
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.remove(&key);
        self.record(t, namespace, "DELETED", obj.clone());
        Ok((200, with_version(&obj, t)))
    }

    pub fn owners(&self, t: &ResourceType, namespace: &str, name: &str) -> Option<(Value, Owners)> {
        self.objects
            .get(&(
                t.group.clone(),
                t.plural.clone(),
                namespace.to_owned(),
                name.to_owned(),
            ))
            .cloned()
    }
}

/// The stored object as `t`'s version presents it.
fn with_version(o: &Value, t: &ResourceType) -> Value {
    let mut o = o.clone();
    o["apiVersion"] = json!(t.api_version());
    o
}

/// The object without what every write changes anyway (for no-op detection).
fn strip_volatile(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    o
}

/// `fieldSelector` (metadata.name/metadata.namespace equality) and `labelSelector`
/// (`k=v`, `k==v`, `k!=v`, `k`, `!k`, comma = AND).
#[derive(Clone, Debug, Default)]
pub struct Selector {
    fields: Vec<(String, String)>,
    labels: Vec<(String, Option<String>, bool)>,
}

impl Selector {
    pub fn parse(field: Option<&str>, label: Option<&str>) -> Result<Self, String> {
        let mut s = Selector::default();
        for part in field.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once("==")
                .or_else(|| part.split_once('='))
                .ok_or(format!("invalid field selector {part:?}"))?;
            if !matches!(k, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {k}"));
            }
            s.fields.push((k.into(), v.into()));
        }
        for part in label.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = part.split_once("!=") {
                s.labels.push((k.into(), Some(v.into()), false));
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                s.labels.push((k.into(), Some(v.into()), true));
            } else if let Some(k) = part.strip_prefix('!') {
                s.labels.push((k.into(), None, false));
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unsupported label selector {part:?}"));
            } else {
                s.labels.push((part.into(), None, true));
            }
        }
        Ok(s)
    }

    pub fn matches(&self, o: &Value) -> bool {
        let meta = &o["metadata"];
        let fields_ok = self.fields.iter().all(|(k, v)| match k.as_str() {
            "metadata.name" => meta["name"] == v.as_str(),
            _ => meta["namespace"] == v.as_str(),
        });
        let labels = meta["labels"].as_object().cloned().unwrap_or_else(Map::new);
        let labels_ok = self.labels.iter().all(|(k, v, eq)| {
            let got = labels.get(k).and_then(Value::as_str);
            match (v, eq) {
                (Some(v), true) => got == Some(v.as_str()),
                (Some(v), false) => got != Some(v.as_str()),
                (None, true) => got.is_some(),
                (None, false) => got.is_none(),
            }
        });
        fields_ok && labels_ok
    }
}

/// Apply (server-side): merges `config` into the live object (or a new one) with field
/// ownership; returns the merged object and the new ownership for [`State::replace`], or
/// the object to create.
pub fn apply_merge(
    live: Option<(Value, Owners)>,
    config: &Value,
    t: &ResourceType,
    scope: Scope,
    manager: &str,
    now: &str,
    force: bool,
) -> Result<(Value, Owners), Failure> {
    let (mut obj, mut owners) = live.unwrap_or_else(|| {
        (json!({"apiVersion": config["apiVersion"], "kind": config["kind"], "metadata": {"name": config["metadata"]["name"]}}), Owners::default())
    });
    owners
        .apply(&mut obj, config, t.schema.as_ref(), scope, manager, &t.api_version(), now, force)
        .map_err(|conflicts| {
            let n = conflicts.len();
            let lines: Vec<String> = conflicts.iter().map(|c| format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.field)).collect();
            let message = if n == 1 { format!("Apply failed with 1 conflict: {}", lines[0]) } else { format!("Apply failed with {n} conflicts: {}", lines.join("\n")) };
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": c.field}))
                .collect();
            (409, status(409, "Conflict", &message, Some(json!({"causes": causes}))))
        })?;
    // Keep the live object's resourceVersion so replace's precondition passes.
    Ok((obj, owners))
}
