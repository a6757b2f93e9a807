//! ServerClass status for the reconcile task: which classes each server belongs to and
//! whether it is in use (`ClassIndex`, rebuilt on a class change or a lagged feed, updated
//! per server write), the write of every class's `serversAvailable` / `serversInUse`, and
//! the built-in `any` class (created if missing, its qualifiers reset as Sidero does).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::apply::LifecycleError;
use super::classes::{ANY, Matcher};
use super::task::Lifecycle;
use crate::model::{Kind, Object, Server, ServerClass};
use crate::store::{Store, StoreError};

/// Which classes each server belongs to, and whether it is in use.
#[derive(Debug, Default)]
pub(super) struct ClassIndex {
    /// Class name → (spec as JSON, matcher).
    classes: BTreeMap<String, (Value, Matcher)>,
    /// Server name → (in use, member of these classes).
    members: HashMap<String, (bool, Vec<String>)>,
}

impl ClassIndex {
    fn evaluate(&self, server: &Server) -> (bool, Vec<String>) {
        let in_use = server.status.as_ref().is_some_and(|s| s.in_use);
        let classes = self
            .classes
            .iter()
            .filter(|(_, (_, m))| m.matches(server))
            .map(|(n, _)| n.clone())
            .collect();
        (in_use, classes)
    }

    /// Returns true if the membership changed.
    pub(super) fn update_server(&mut self, server: &Server) -> bool {
        let v = self.evaluate(server);
        let name = &server.metadata.name;
        if self.members.get(name) == Some(&v) {
            return false;
        }
        self.members.insert(name.clone(), v);
        true
    }

    pub(super) fn remove_server(&mut self, name: &str) -> bool {
        self.members.remove(name).is_some()
    }

    pub(super) fn rebuild(&mut self, store: &Store) -> Result<(), StoreError> {
        self.classes.clear();
        for s in store.list(Kind::ServerClass)? {
            if let Object::ServerClass(c) = s.object {
                let spec = serde_json::to_value(&c.spec).unwrap_or(Value::Null);
                self.classes
                    .insert(c.metadata.name.clone(), (spec, Matcher::new(&c)));
            }
        }
        self.members.clear();
        let members = store.scan(Kind::Server, |s| match s.object {
            Object::Server(server) => Some((server.metadata.name.clone(), self.evaluate(&server))),
            _ => None,
        })?;
        self.members.extend(members);
        Ok(())
    }

    /// (available, in use) per class, sorted by server name.
    pub(super) fn status(&self) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
        let mut out: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = self
            .classes
            .keys()
            .map(|k| (k.clone(), Default::default()))
            .collect();
        for (server, (in_use, classes)) in &self.members {
            for c in classes {
                if let Some((avail, used)) = out.get_mut(c) {
                    if *in_use {
                        used.insert(server.clone());
                    } else {
                        avail.insert(server.clone());
                    }
                }
            }
        }
        out.into_iter()
            .map(|(k, (a, u))| (k, (a.into_iter().collect(), u.into_iter().collect())))
            .collect()
    }
}

/// Writes each class's member lists where they changed, in one transaction.
pub(super) fn write_class_status(
    store: &Store,
    status: &BTreeMap<String, (Vec<String>, Vec<String>)>,
) -> Result<(), StoreError> {
    store.transact(|t| {
        for (name, (avail, used)) in status {
            let Some(stored) = t.get(Kind::ServerClass, name)? else {
                continue;
            };
            let Object::ServerClass(mut class) = stored.object else {
                continue;
            };
            let st = class.status.get_or_insert_with(Default::default);
            if st.servers_available == *avail && st.servers_in_use == *used {
                continue;
            }
            st.servers_available = avail.clone();
            st.servers_in_use = used.clone();
            t.put(&Object::ServerClass(class))?;
        }
        Ok(())
    })
}

/// Creates the built-in `any` class if missing, and resets its qualifiers (as Sidero does
/// on every reconcile), so it lists every accepted, uncordoned server.
pub fn ensure_any_class(store: &Store) -> Result<(), LifecycleError> {
    store.transact(|t| {
        let doc = serde_json::json!({
            "apiVersion": Kind::ServerClass.api_version(),
            "kind": "ServerClass",
            "metadata": { "name": ANY },
            "spec": {},
        });
        let fresh = Object::from_json(Kind::ServerClass, &doc.to_string())
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        match t.get(Kind::ServerClass, ANY)? {
            None => {
                t.put(&fresh)?;
            }
            Some(stored) => {
                if let (Object::ServerClass(mut class), Object::ServerClass(f)) =
                    (stored.object, fresh)
                {
                    let q = |c: &ServerClass| {
                        serde_json::to_value(&c.spec)
                            .ok()
                            .and_then(|v| v.get("qualifiers").cloned())
                    };
                    if q(&class) != q(&f) {
                        let mut spec = serde_json::to_value(&class.spec).unwrap_or_default();
                        if let Some(m) = spec.as_object_mut() {
                            m.remove("qualifiers");
                        }
                        if let Ok(s) = serde_json::from_value(spec) {
                            class.spec = s;
                            t.put(&Object::ServerClass(class))?;
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// A class changed: returns whether its spec differs from the indexed one (then members
/// must be recomputed). Resets `any`'s qualifiers.
pub(super) fn class_changed(
    lc: &Lifecycle,
    index: &ClassIndex,
    name: &str,
) -> Result<bool, LifecycleError> {
    if name == ANY {
        ensure_any_class(lc.store())?;
    }
    let now = lc.store().get(Kind::ServerClass, name)?;
    let spec = now.and_then(|s| match s.object {
        Object::ServerClass(c) => serde_json::to_value(&c.spec).ok(),
        _ => None,
    });
    Ok(spec.as_ref() != index.classes.get(name).map(|(v, _)| v))
}
