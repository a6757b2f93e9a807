//! Lifecycle events and allocations as persisted records, and their read API.
//!
//! `EventRecord`: one lifecycle transition of one server (what happened, from which state to
//! which, when), appended in the same transaction as the transition (see `txn.rs`).
//! `AllocationRecord`: who holds an allocated server and the bootstrap data the metadata
//! service serves for it. Both are JSON in their own tables (`tables.rs`, lifecycle room).

use redb::{ReadableTable, TableError};
use serde::{Deserialize, Serialize};

use super::tables::{ALLOCATIONS, EVENTS};
use super::{Store, StoreError};
use crate::model::Kind;

/// How many events are kept per server (older ones are dropped on append).
pub const EVENTS_PER_SERVER: usize = 256;

/// An event to append (the sequence number is assigned by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Milliseconds since the Unix epoch (time is an input, never read here).
    pub time_ms: u64,
    pub server: String,
    pub event: String,
    pub from: String,
    pub to: String,
    pub message: String,
}

/// A stored lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub server: String,
    pub event: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl EventRecord {
    pub(super) fn from_new(seq: u64, e: NewEvent) -> EventRecord {
        EventRecord {
            seq,
            time_ms: e.time_ms,
            server: e.server,
            event: e.event,
            from: e.from,
            to: e.to,
            message: e.message,
        }
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("event records serialise")
    }

    fn decode(server: &str, bytes: &[u8]) -> Result<EventRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptRecord {
            kind: Kind::Server,
            name: server.to_string(),
            message: format!("lifecycle event: {e}"),
        })
    }
}

/// Who holds an allocated server, and what the metadata service serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRecord {
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class: Option<String>,
    /// The machine config (Talos YAML) before patches.
    #[serde(default)]
    pub bootstrap_data: String,
    /// RFC 6902 operations applied after the ServerClass and Server patches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub time_ms: u64,
}

impl AllocationRecord {
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("allocation records serialise")
    }

    pub(super) fn decode(server: &str, bytes: &[u8]) -> Result<AllocationRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptRecord {
            kind: Kind::ServerBinding,
            name: server.to_string(),
            message: format!("allocation: {e}"),
        })
    }
}

impl Store {
    /// Lifecycle events, oldest first: of one server, or of all servers (by sequence).
    /// `limit` > 0 keeps only the newest `limit`.
    pub fn events(
        &self,
        server: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(EVENTS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        match server {
            Some(name) => {
                for entry in table.range((name, 0)..=(name, u64::MAX))? {
                    let (_, v) = entry?;
                    out.push(EventRecord::decode(name, v.value())?);
                }
            }
            None => {
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    out.push(EventRecord::decode(k.value().0, v.value())?);
                }
                out.sort_by_key(|e| e.seq);
            }
        }
        if limit > 0 && out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }

    /// The allocation of one server, if it is allocated.
    pub fn allocation(&self, server: &str) -> Result<Option<AllocationRecord>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(ALLOCATIONS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        table
            .get(server)?
            .map(|v| AllocationRecord::decode(server, v.value()))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Object};

    fn server(name: &str) -> Object {
        crate::model::parse_documents(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\n"
        ))
        .unwrap()
        .remove(0)
    }

    fn ev(server: &str, event: &str) -> NewEvent {
        NewEvent {
            time_ms: 1,
            server: server.into(),
            event: event.into(),
            from: "a".into(),
            to: "b".into(),
            message: String::new(),
        }
    }

    #[test]
    fn transact_writes_objects_and_events_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert!(store.events(None, 0).unwrap().is_empty());
        let mut feed = store.subscribe();
        store
            .transact(|t| {
                t.put(&server("a"))?;
                t.append_event(ev("a", "registered"))?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert!(store.get(Kind::Server, "a").unwrap().is_some());
        assert_eq!(feed.try_recv().unwrap().name, "a");
        // A failing closure writes nothing, not even the event appended before the failure.
        let r: Result<(), StoreError> = store.transact(|t| {
            t.put(&server("b"))?;
            t.append_event(ev("b", "registered"))?;
            Err(StoreError::NotFound {
                kind: Kind::Server,
                name: "x".into(),
            })
        });
        assert!(r.is_err());
        assert!(store.get(Kind::Server, "b").unwrap().is_none());
        let all = store.events(None, 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].seq, 1);
        assert!(feed.try_recv().is_err());
    }

    #[test]
    fn events_are_per_server_ordered_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .transact(|t| {
                for i in 0..(EVENTS_PER_SERVER + 10) {
                    t.append_event(ev("a", &format!("e{i}")))?;
                    if i % 2 == 0 {
                        t.append_event(ev("b", &format!("e{i}")))?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let a = store.events(Some("a"), 0).unwrap();
        assert_eq!(a.len(), EVENTS_PER_SERVER);
        assert_eq!(
            a.last().unwrap().event,
            format!("e{}", EVENTS_PER_SERVER + 9)
        );
        assert!(a.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.events(Some("a"), 3).unwrap().len(), 3);
        assert!(store.events(Some("zzz"), 0).unwrap().is_empty());
        let all = store.events(None, 0).unwrap();
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn event_numbers_continue_across_transactions_and_a_restarted_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .transact(|t| {
                t.append_event(ev("a", "e1"))?;
                t.append_event(ev("b", "e2"))?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        // The second job fails after appending: the transaction starts over without it, so
        // its number is taken by the third job.
        let results = store
            .transact_each(&["c", "fail", "d"], |t, name| {
                t.append_event(ev(name, "e"))?;
                if *name == "fail" {
                    return Err(StoreError::NotFound {
                        kind: Kind::Server,
                        name: name.to_string(),
                    });
                }
                Ok(())
            })
            .unwrap();
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        // An aborted transaction takes no number either.
        let r: Result<(), StoreError> = store.transact(|t| {
            t.append_event(ev("x", "e"))?;
            Err(StoreError::NotFound {
                kind: Kind::Server,
                name: "x".into(),
            })
        });
        assert!(r.is_err());
        store.transact(|t| t.append_event(ev("e", "e"))).unwrap();
        let numbered: Vec<(u64, String)> = store
            .events(None, 0)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.server))
            .collect();
        assert_eq!(
            numbered,
            [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")].map(|(n, s)| (n, s.to_string()))
        );
    }

    #[test]
    fn allocations_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert!(store.allocation("a").unwrap().is_none());
        let rec = AllocationRecord {
            owner: "ns/m1".into(),
            server_class: Some("any".into()),
            bootstrap_data: "version: v1alpha1\n".into(),
            config_patches: vec![],
            environment: None,
            time_ms: 5,
        };
        store.transact(|t| t.put_allocation("a", &rec)).unwrap();
        assert_eq!(store.allocation("a").unwrap(), Some(rec.clone()));
        store
            .transact(|t| {
                assert_eq!(t.allocations()?.len(), 1);
                t.delete_allocation("a")
            })
            .unwrap();
        assert!(store.allocation("a").unwrap().is_none());
    }
}
