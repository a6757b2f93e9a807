//! Field ownership for server-side apply, as the apiserver tracks it in
//! `metadata.managedFields`: each (manager, operation, subresource) owns a set of leaf field
//! paths. Objects are granular maps unless the schema says `x-kubernetes-map-type: atomic`;
//! lists are atomic (the structural-schema default) except `metadata.finalizers`, a set whose
//! elements are owned one by one. An apply conflicts on a field another manager owns with a
//! different value (unless forced); it removes fields its manager owned before and no longer
//! applies, when nobody else owns them. Updates (PUT, merge patch) take ownership of what they
//! change.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// One step of a field path: `f:<key>` or a set element `v:<json>`.
pub type Path = Vec<String>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Manager {
    pub name: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `""` or `"status"`.
    pub subresource: String,
}

/// Ownership of one object: manager → (owned paths, apiVersion, time).
#[derive(Clone, Debug, Default)]
pub struct Owners {
    pub sets: BTreeMap<Manager, (BTreeSet<Path>, String, String)>,
}

/// Which part of an object a request writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scope {
    /// Everything but `status` when the kind has a status subresource.
    Main {
        status_subresource: bool,
    },
    Status,
}

/// The leaf fields of `obj` in `scope`, with their values.
pub fn leaves(obj: &Value, schema: Option<&Value>, scope: Scope) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let in_scope = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, key) => key == "status",
            (Scope::Main { status_subresource }, "status") => !status_subresource,
            (Scope::Main { .. }, _) => true,
        };
        if !in_scope {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            metadata_leaves(v, &mut out);
        } else {
            walk(
                v,
                schema
                    .and_then(|s| s.get("properties"))
                    .and_then(|p| p.get(k)),
                schema.is_some(),
                path,
                &mut out,
            );
        }
    }
    out
}

fn metadata_leaves(meta: &Value, out: &mut BTreeMap<Path, Value>) {
    let Some(meta) = meta.as_object() else { return };
    for key in ["labels", "annotations"] {
        for (k, v) in meta
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.insert(
                vec!["f:metadata".into(), format!("f:{key}"), format!("f:{k}")],
                v.clone(),
            );
        }
    }
    for f in meta
        .get("finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.insert(
            vec!["f:metadata".into(), "f:finalizers".into(), format!("v:{f}")],
            f.clone(),
        );
    }
    if let Some(refs) = meta.get("ownerReferences") {
        out.insert(
            vec!["f:metadata".into(), "f:ownerReferences".into()],
            refs.clone(),
        );
    }
}

fn walk(
    v: &Value,
    schema: Option<&Value>,
    typed: bool,
    path: Path,
    out: &mut BTreeMap<Path, Value>,
) {
    let granular = match (v, schema) {
        (Value::Object(m), _) if m.is_empty() => false,
        (Value::Object(_), None) => !typed, // built-in kinds: maps are granular
        (Value::Object(_), Some(s)) => {
            s.get("x-kubernetes-map-type").and_then(Value::as_str) != Some("atomic")
                && (s.get("properties").is_some()
                    || s.get("additionalProperties").is_some_and(Value::is_object))
        }
        _ => false,
    };
    if !granular {
        out.insert(path, v.clone());
        return;
    }
    for (k, child) in v.as_object().unwrap() {
        let child_schema = schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(k))
                .or(s.get("additionalProperties").filter(|a| a.is_object()))
        });
        let mut p = path.clone();
        p.push(format!("f:{k}"));
        // A field the schema does not know (preserve-unknown-fields) is owned whole.
        if typed && child_schema.is_none() {
            out.insert(p, child.clone());
        } else {
            walk(child, child_schema, typed, p, out);
        }
    }
}

/// The value at `path` in `obj` (`None` when absent).
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        if let Some(key) = step.strip_prefix("f:") {
            cur = cur.get(key)?;
        } else {
            let want: Value = serde_json::from_str(&step[2..]).ok()?;
            return cur.as_array()?.iter().find(|x| **x == want);
        }
    }
    Some(cur)
}

/// Sets `path` in `obj` to `value`, creating maps on the way; a set element is added.
pub fn set(obj: &mut Value, path: &[String], value: Value) {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = obj;
    for step in parents {
        let key = &step[2..];
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if last.starts_with("v:") {
        if !cur.is_array() {
            *cur = Value::Array(vec![]);
        }
        let list = cur.as_array_mut().unwrap();
        if !list.contains(&value) {
            list.push(value);
        }
    } else {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur.as_object_mut()
            .unwrap()
            .insert(last[2..].to_owned(), value);
    }
}

/// Removes `path` from `obj` (a set element from its list).
pub fn remove(obj: &mut Value, path: &[String]) {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = obj;
    for step in parents {
        match cur.get_mut(&step[2..]) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(elem) = last.strip_prefix("v:") {
        let want: Value = serde_json::from_str(elem).unwrap_or(Value::Null);
        if let Some(list) = cur.as_array_mut() {
            list.retain(|x| *x != want);
        }
    } else if let Some(map) = cur.as_object_mut() {
        map.remove(&last[2..]);
    }
}

/// A field a manager cannot take: who owns it.
#[derive(Debug)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

/// `.spec.bmc.endpoint` / `.metadata.finalizers[="x"]`, as the apiserver prints a field.
pub fn display(path: &[String]) -> String {
    path.iter()
        .map(|s| match s.strip_prefix("f:") {
            Some(k) => format!(".{k}"),
            None => format!("[={}]", &s[2..]),
        })
        .collect()
}

impl Owners {
    /// Applies `config` (its leaves in `scope`) to `live` for `manager`. `Err` lists the
    /// conflicts (nothing changed); with `force` the fields are taken over instead.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        live: &mut Value,
        config: &Value,
        schema: Option<&Value>,
        scope: Scope,
        manager: &str,
        api_version: &str,
        now: &str,
        force: bool,
    ) -> Result<(), Vec<Conflict>> {
        let me = Manager {
            name: manager.into(),
            operation: "Apply".into(),
            subresource: if scope == Scope::Status {
                "status".into()
            } else {
                String::new()
            },
        };
        let wanted = leaves(config, schema, scope);
        let mut conflicts = Vec::new();
        for (path, value) in &wanted {
            for (other, (owned, av, _)) in &self.sets {
                if other.name == manager || !owned.contains(path) {
                    continue;
                }
                if get(live, path) != Some(value) {
                    conflicts.push(Conflict {
                        manager: other.name.clone(),
                        api_version: av.clone(),
                        field: display(path),
                    });
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        if force {
            for (other, (owned, _, _)) in self.sets.iter_mut() {
                if other.name != manager {
                    owned.retain(|p| !wanted.get(p).is_some_and(|v| get(live, p) != Some(v)));
                }
            }
        }
        let before = self
            .sets
            .get(&me)
            .map(|(s, _, _)| s.clone())
            .unwrap_or_default();
        for path in before.iter().filter(|p| !wanted.contains_key(*p)) {
            let owned_elsewhere = self
                .sets
                .iter()
                .any(|(m, (s, _, _))| *m != me && s.contains(path));
            if !owned_elsewhere {
                remove(live, path);
            }
        }
        for (path, value) in &wanted {
            set(live, path, value.clone());
        }
        self.sets.insert(
            me,
            (wanted.into_keys().collect(), api_version.into(), now.into()),
        );
        self.sets.retain(|_, (s, _, _)| !s.is_empty());
        Ok(())
    }

    /// Records a non-apply write from `old` to `new` by `manager`: it owns what it changed.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        old: &Value,
        new: &Value,
        schema: Option<&Value>,
        scope: Scope,
        manager: &str,
        api_version: &str,
        now: &str,
    ) {
        let (before, after) = (leaves(old, schema, scope), leaves(new, schema, scope));
        let changed: BTreeSet<Path> = after
            .iter()
            .filter(|(p, v)| before.get(*p) != Some(*v))
            .map(|(p, _)| p.clone())
            .collect();
        let gone: BTreeSet<&Path> = before.keys().filter(|p| !after.contains_key(*p)).collect();
        for (owned, _, _) in self.sets.values_mut() {
            owned.retain(|p| !changed.contains(p) && !gone.contains(p));
        }
        if !changed.is_empty() {
            let me = Manager {
                name: manager.into(),
                operation: "Update".into(),
                subresource: if scope == Scope::Status {
                    "status".into()
                } else {
                    String::new()
                },
            };
            let entry = self
                .sets
                .entry(me)
                .or_insert_with(|| (BTreeSet::new(), String::new(), String::new()));
            entry.0.extend(changed);
            entry.1 = api_version.into();
            entry.2 = now.into();
        }
        self.sets.retain(|_, (s, _, _)| !s.is_empty());
    }

    /// `metadata.managedFields` in the apiserver's `FieldsV1` form.
    pub fn render(&self) -> Value {
        let entries: Vec<Value> = self
            .sets
            .iter()
            .map(|(m, (paths, api_version, time))| {
                let mut fields = Value::Object(Map::new());
                for p in paths {
                    let mut cur = &mut fields;
                    for step in p {
                        cur = cur
                            .as_object_mut()
                            .unwrap()
                            .entry(step.clone())
                            .or_insert_with(|| json!({}));
                    }
                }
                let mut e = json!({
                    "manager": m.name, "operation": m.operation, "apiVersion": api_version,
                    "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields,
                });
                if !m.subresource.is_empty() {
                    e["subresource"] = json!(m.subresource);
                }
                e
            })
            .collect();
        Value::Array(entries)
    }
}
