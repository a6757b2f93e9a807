//! Boot timeline events as bounded rings: table `timeline` keyed by (key, sequence) where
//! the key is a server name or a pending client (`mac:<mac>`, `ip:<addr>`; server names
//! never hold a `:`), a count per key in `timeline_counts`, one global sequence in `meta`.
//! A batch of operations (appends, and moves of a pending client's events to the key it
//! turned out to be) is one transaction; after it each touched key keeps its newest events
//! (`per_server` for servers, `per_pending` for clients) and at most `pending_keys`
//! clients are held (the oldest goes), so the file never grows past
//! (servers × `per_server` + `pending_keys` × `per_pending`) events.

use std::collections::BTreeSet;

use redb::{ReadableTable, ReadableTableMetadata, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::tables::{
    self, META, TIMELINE, TIMELINE_COUNTS, TIMELINE_PENDING, TIMELINE_PENDING_KEYS,
};
use super::{Store, StoreError};
use crate::model::Kind;

/// One stored timeline event (`timeline::event::Event` plus where it came from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRecord {
    /// Assigned by the store (0 before).
    #[serde(default)]
    pub seq: u64,
    /// When the step began, ms since the Unix epoch.
    pub time_ms: u64,
    pub step: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The client's MAC and address when the room knew them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl TimelineRecord {
    fn decode(key: &str, bytes: &[u8]) -> Result<TimelineRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptRecord {
            kind: Kind::Server,
            name: key.to_string(),
            message: format!("timeline event: {e}"),
        })
    }
}

/// One operation of a timeline batch, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineOp {
    Append {
        key: String,
        record: TimelineRecord,
    },
    /// Every event of `from` goes to `to`, keeping its sequence number (so its place).
    Move {
        from: String,
        to: String,
    },
}

/// Ring sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineLimits {
    pub per_server: u64,
    pub per_pending: u64,
    pub pending_keys: u64,
}

fn is_pending(key: &str) -> bool {
    key.contains(':')
}

fn count(counts: &redb::Table<&str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(counts.get(key)?.map(|v| v.value()).unwrap_or(0))
}

/// The timeline's four tables, each opened once in a write transaction (every table opened
/// costs a table-tree lookup, and another when the commit records its root: a batch of 1,024
/// appends opened them thousands of times).
struct Rings<'txn> {
    events: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    counts: redb::Table<'txn, &'static str, u64>,
    pending_keys: redb::Table<'txn, &'static str, u64>,
    pending: redb::Table<'txn, u64, &'static str>,
}

impl<'txn> Rings<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Rings<'txn>, StoreError> {
        Ok(Rings {
            events: txn.open_table(TIMELINE)?,
            counts: txn.open_table(TIMELINE_COUNTS)?,
            pending_keys: txn.open_table(TIMELINE_PENDING_KEYS)?,
            pending: txn.open_table(TIMELINE_PENDING)?,
        })
    }

    /// Deletes every event of `key` and its bookkeeping.
    fn drop_key(&mut self, key: &str) -> Result<(), StoreError> {
        let seqs: Vec<u64> = self
            .events
            .range((key, 0)..=(key, u64::MAX))?
            .map(|e| e.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for s in seqs {
            self.events.remove((key, s))?;
        }
        self.counts.remove(key)?;
        if let Some(created) = self.pending_keys.remove(key)? {
            self.pending.remove(created.value())?;
        }
        Ok(())
    }

    /// `key` holds `held` more events from `first` on: counted, and a pending client that
    /// held none is now pending since `first`.
    fn added(&mut self, key: &str, held: u64, more: u64, first: u64) -> Result<(), StoreError> {
        self.counts.insert(key, held + more)?;
        if is_pending(key) && held == 0 {
            self.pending_keys.insert(key, first)?;
            self.pending.insert(first, key)?;
        }
        Ok(())
    }
}

/// Deletes every event of `key` and its bookkeeping.
pub(super) fn drop_key(txn: &WriteTransaction, key: &str) -> Result<(), StoreError> {
    Rings::open(txn)?.drop_key(key)
}

impl Store {
    /// Applies `ops` in one transaction (appended records get sequence numbers in order),
    /// then trims every touched key to its ring size and drops the oldest pending clients
    /// beyond `pending_keys`. Returns the appended records that `keep` picks, with their
    /// keys, as stored.
    ///
    /// `ops` is taken one at a time and each appended record is dropped once stored unless
    /// kept: a batch's records are never all held at once (a DHCP storm's batch of 1,024
    /// records and their strings took ~0.5 MiB more at its peak; issue 16, the box's RSS).
    pub fn apply_timeline(
        &self,
        ops: impl IntoIterator<Item = TimelineOp>,
        limits: TimelineLimits,
        mut keep: impl FnMut(&str, &TimelineRecord) -> bool,
    ) -> Result<Vec<(String, TimelineRecord)>, StoreError> {
        let mut appended = Vec::new();
        let mut ops = ops.into_iter().peekable();
        if ops.peek().is_none() {
            return Ok(appended);
        }
        let txn = self.inner.db.write()?;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        {
            let mut meta = txn.open_table(META)?;
            let mut rings = Rings::open(&txn)?;
            let mut seq = meta
                .get(tables::META_TIMELINE_SEQ)?
                .map(|v| v.value())
                .unwrap_or(0);
            for op in ops {
                match op {
                    TimelineOp::Append { key, mut record } => {
                        seq += 1;
                        record.seq = seq;
                        let json = serde_json::to_vec(&record).expect("timeline records serialise");
                        rings.events.insert((key.as_str(), seq), json.as_slice())?;
                        let held = count(&rings.counts, &key)?;
                        rings.added(&key, held, 1, seq)?;
                        if keep(&key, &record) {
                            appended.push((key.clone(), record));
                        }
                        touched.insert(key);
                    }
                    TimelineOp::Move { from, to } => {
                        let moved: Vec<(u64, Vec<u8>)> = rings
                            .events
                            .range((from.as_str(), 0)..=(from.as_str(), u64::MAX))?
                            .map(|e| e.map(|(k, v)| (k.value().1, v.value().to_vec())))
                            .collect::<Result<_, _>>()?;
                        if moved.is_empty() {
                            continue;
                        }
                        rings.drop_key(&from)?;
                        for (s, v) in &moved {
                            rings.events.insert((to.as_str(), *s), v.as_slice())?;
                        }
                        let held = count(&rings.counts, &to)?;
                        rings.added(&to, held, moved.len() as u64, moved[0].0)?;
                        touched.remove(&from);
                        touched.insert(to);
                    }
                }
            }
            meta.insert(tables::META_TIMELINE_SEQ, seq)?;
            for key in &touched {
                let max = if is_pending(key) {
                    limits.per_pending
                } else {
                    limits.per_server
                }
                .max(1);
                let held = count(&rings.counts, key)?;
                let excess = held.saturating_sub(max);
                if excess == 0 {
                    continue;
                }
                let old: Vec<u64> = rings
                    .events
                    .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))?
                    .take(excess as usize)
                    .map(|e| e.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for s in old {
                    rings.events.remove((key.as_str(), s))?;
                }
                rings.counts.insert(key.as_str(), held - excess)?;
            }
            while rings.pending.len()? > limits.pending_keys {
                let Some(oldest) = rings.pending.first()?.map(|(_, k)| k.value().to_string())
                else {
                    break;
                };
                rings.drop_key(&oldest)?;
            }
        }
        self.inner.db.commit(txn)?;
        Ok(appended)
    }

    /// The stored events of `key` (a server name or a pending client), by arrival.
    pub fn timeline(&self, key: &str) -> Result<Vec<TimelineRecord>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(TIMELINE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range((key, 0)..=(key, u64::MAX))? {
            let (_, v) = entry?;
            out.push(TimelineRecord::decode(key, v.value())?);
        }
        Ok(out)
    }

    /// The pending clients held (`mac:…`, `ip:…`), oldest first.
    pub fn timeline_pending(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(TIMELINE_PENDING) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        table
            .iter()?
            .map(|e| e.map(|(_, k)| k.value().to_string()).map_err(Into::into))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time_ms: u64, step: &str) -> TimelineRecord {
        TimelineRecord {
            seq: 0,
            time_ms,
            step: step.into(),
            outcome: "ok".into(),
            detail: String::new(),
            bytes: None,
            duration_ms: None,
            mac: None,
            ip: None,
        }
    }

    fn append(key: &str, time_ms: u64, step: &str) -> TimelineOp {
        TimelineOp::Append {
            key: key.into(),
            record: rec(time_ms, step),
        }
    }

    const LIMITS: TimelineLimits = TimelineLimits {
        per_server: 4,
        per_pending: 2,
        pending_keys: 2,
    };

    fn steps(store: &Store, key: &str) -> Vec<String> {
        store
            .timeline(key)
            .unwrap()
            .into_iter()
            .map(|r| r.step)
            .collect()
    }

    #[test]
    fn rings_are_bounded_and_pending_clients_move_to_their_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let stored = store
            .apply_timeline(
                vec![
                    append("ip:10.0.0.5", 1, "tftp"),
                    append("mac:52:54:00:00:00:01", 2, "dhcp-offer"),
                    append("mac:52:54:00:00:00:01", 3, "dhcp-ack"),
                    append("mac:52:54:00:00:00:01", 4, "ipxe"),
                    TimelineOp::Move {
                        from: "ip:10.0.0.5".into(),
                        to: "mac:52:54:00:00:00:01".into(),
                    },
                ],
                LIMITS,
                |_, _| true,
            )
            .unwrap();
        assert_eq!(
            stored.iter().map(|(_, r)| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // The client's ring holds 2: the oldest by arrival went (tftp, offer).
        assert_eq!(steps(&store, "mac:52:54:00:00:00:01"), ["dhcp-ack", "ipxe"]);
        assert!(store.timeline("ip:10.0.0.5").unwrap().is_empty());
        assert_eq!(store.timeline_pending().unwrap(), ["mac:52:54:00:00:00:01"]);
        // The registration moves it to the server, which holds up to 4. Only the records
        // `keep` picks come back.
        let kept = store
            .apply_timeline(
                vec![
                    append("s1", 0, "boot-script"),
                    TimelineOp::Move {
                        from: "mac:52:54:00:00:00:01".into(),
                        to: "s1".into(),
                    },
                    append("s1", 10, "registered"),
                ],
                LIMITS,
                |_, r| r.step == "registered",
            )
            .unwrap();
        assert_eq!(
            kept.iter()
                .map(|(k, r)| (k.as_str(), r.seq, r.step.as_str()))
                .collect::<Vec<_>>(),
            [("s1", 6, "registered")]
        );
        assert_eq!(
            steps(&store, "s1"),
            ["dhcp-ack", "ipxe", "boot-script", "registered"]
        );
        assert!(store.timeline_pending().unwrap().is_empty());
        store
            .apply_timeline(vec![append("s1", 11, "wiped")], LIMITS, |_, _| true)
            .unwrap();
        assert_eq!(
            steps(&store, "s1"),
            ["ipxe", "boot-script", "registered", "wiped"]
        );
        // At most 2 pending clients: the oldest goes.
        for (i, key) in ["ip:10.0.0.1", "ip:10.0.0.2", "ip:10.0.0.3"]
            .iter()
            .enumerate()
        {
            store
                .apply_timeline(vec![append(key, 20 + i as u64, "tftp")], LIMITS, |_, _| {
                    true
                })
                .unwrap();
        }
        assert_eq!(
            store.timeline_pending().unwrap(),
            ["ip:10.0.0.2", "ip:10.0.0.3"]
        );
        assert!(store.timeline("ip:10.0.0.1").unwrap().is_empty());
        // Kept across a reopen.
        drop(store);
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(steps(&store, "s1").len(), 4);
        assert_eq!(store.timeline_pending().unwrap().len(), 2);
    }
}
