//! ServerClass status for the reconcile task: which classes each server belongs to and
//! whether it is in use (`ClassIndex`, rebuilt on a class change or a lagged feed, updated
//! per server write), the write of every class's `serversAvailable` / `serversInUse`, and
//! the built-in `any` class (created if missing, its qualifiers reset as Sidero does).

use std::collections::{BTreeMap, HashMap};

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

    /// (available, in use) per class, sorted by server name. The names are gathered and
    /// sorted as borrowed strings and copied once (server names are the keys of
    /// `members`, so each appears once per class).
    pub(super) fn status(&self) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
        let mut out: BTreeMap<&str, (Vec<&str>, Vec<&str>)> = self
            .classes
            .keys()
            .map(|k| (k.as_str(), Default::default()))
            .collect();
        for (server, (in_use, classes)) in &self.members {
            for c in classes {
                if let Some((avail, used)) = out.get_mut(c.as_str()) {
                    if *in_use {
                        used.push(server);
                    } else {
                        avail.push(server);
                    }
                }
            }
        }
        let owned = |mut names: Vec<&str>| -> Vec<String> {
            names.sort_unstable();
            names.into_iter().map(str::to_string).collect()
        };
        out.into_iter()
            .map(|(k, (a, u))| (k.to_string(), (owned(a), owned(u))))
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
            // Read and found different just above: not read and compared again.
            t.put_changed(Object::ServerClass(class))?;
        }
        Ok(())
    })
}

/// The built-in `any` class as it is created: no qualifiers, so every accepted, uncordoned
/// server is a member.
fn fresh_any_class() -> Result<Object, LifecycleError> {
    let doc = serde_json::json!({
        "apiVersion": Kind::ServerClass.api_version(),
        "kind": "ServerClass",
        "metadata": { "name": ANY },
        "spec": {},
    });
    Object::from_json(Kind::ServerClass, &doc.to_string())
        .map_err(|e| LifecycleError::Internal(e.to_string()))
}

/// A class's `spec.qualifiers` as JSON: what [`ensure_any_class`] compares with the fresh
/// `any` class's.
fn qualifiers(c: &ServerClass) -> Option<Value> {
    serde_json::to_value(&c.spec)
        .ok()
        .and_then(|v| v.get("qualifiers").cloned())
}

/// Creates the built-in `any` class if missing, and resets its qualifiers (as Sidero does
/// on every reconcile), so it lists every accepted, uncordoned server.
pub fn ensure_any_class(store: &Store) -> Result<(), LifecycleError> {
    store.transact(|t| {
        let fresh = fresh_any_class()?;
        match t.get(Kind::ServerClass, ANY)? {
            None => {
                t.put(&fresh)?;
            }
            Some(stored) => {
                if let (Object::ServerClass(mut class), Object::ServerClass(f)) =
                    (stored.object, fresh)
                    && qualifiers(&class) != qualifiers(&f)
                {
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
        Ok(())
    })
}

/// A class changed (`carried`: the class as the change wrote it, `None` for a delete):
/// returns whether its spec differs from the indexed one (then members must be
/// recomputed). Resets `any`'s qualifiers.
///
/// The spec is read from the carried class, not from the store: the class status writer
/// changes `any` with every flush, and `any` holds every server's name, so reading and
/// decoding it again (twice, with the reset's check, in a write transaction of its own)
/// cost more than half as much as the flush itself. A later change of the class comes on
/// the feed with its own object, so the last one compared is the stored one. Likewise
/// `any` is reset only when the carried version has qualifiers to reset (or is gone, or
/// not carried): the status writes never have.
pub(super) fn class_changed(
    lc: &Lifecycle,
    index: &ClassIndex,
    name: &str,
    carried: Option<&Object>,
) -> Result<bool, LifecycleError> {
    let mut carried = match carried {
        Some(Object::ServerClass(c)) => Some(c),
        _ => None,
    };
    if name == ANY {
        let reset_due = match (carried, fresh_any_class()?) {
            (Some(c), Object::ServerClass(fresh)) => qualifiers(c) != qualifiers(&fresh),
            _ => true,
        };
        if reset_due {
            ensure_any_class(lc.store())?;
            // The reset may have written a new version: compare the stored one.
            carried = None;
        }
    }
    let spec = match carried {
        Some(c) => serde_json::to_value(&c.spec).ok(),
        None => lc
            .store()
            .get(Kind::ServerClass, name)?
            .and_then(|s| match s.object {
                Object::ServerClass(c) => serde_json::to_value(&c.spec).ok(),
                _ => None,
            }),
    };
    Ok(spec.as_ref() != index.classes.get(name).map(|(v, _)| v))
}
