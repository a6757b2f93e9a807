//! Node log lines (Talos kernel/service logs received over SideroLink) as a bounded ring
//! per server: table `node_logs` keyed by (server, sequence), a per-server count in
//! `node_log_counts`, one global sequence in `meta`. A batch of lines is one transaction;
//! after it, each server keeps only its newest `per_server` lines, so the file never grows
//! past servers × `per_server` × the longest accepted line.

use redb::{ReadableTable, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::tables::{self, META, NODE_LOG_COUNTS, NODE_LOGS};
use super::{Store, StoreError};
use crate::model::Kind;

/// One stored log line: Sidero's fields (`msg`, `talos-time`, `talos-level` and the rest
/// as sent) plus the server it came from, its overlay address and when the box got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLogRecord {
    /// Assigned by the store (0 before).
    #[serde(default)]
    pub seq: u64,
    /// Milliseconds since the Unix epoch when the box received the line.
    pub time_ms: u64,
    pub server: String,
    /// The node's SideroLink address the line came through.
    pub address: String,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talos_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talos_level: Option<String>,
    /// Every other key of the Talos JSON object, sorted by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

impl NodeLogRecord {
    fn decode(server: &str, bytes: &[u8]) -> Result<NodeLogRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptRecord {
            kind: Kind::Server,
            name: server.to_string(),
            message: format!("node log line: {e}"),
        })
    }
}

/// Which stored lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLogQuery {
    /// Only lines with a sequence number above this.
    pub after_seq: u64,
    /// Only lines received at or after this time (ms since the epoch).
    pub since_ms: u64,
    /// At most this many (the newest); 0 = all.
    pub limit: usize,
}

/// Deletes every stored line of `server` and its count, inside `wtx`.
pub(super) fn drop_server(wtx: &WriteTransaction, server: &str) -> Result<(), StoreError> {
    wtx.open_table(NODE_LOGS)?
        .retain_in((server, 0)..=(server, u64::MAX), |_, _| false)?;
    wtx.open_table(NODE_LOG_COUNTS)?.remove(server)?;
    Ok(())
}

impl Store {
    /// Appends `lines` in one transaction, assigning sequence numbers in order, then drops
    /// the oldest lines of each server beyond `per_server` (at least 1). Returns the lines
    /// as stored.
    pub fn append_node_logs(
        &self,
        mut lines: Vec<NodeLogRecord>,
        per_server: usize,
    ) -> Result<Vec<NodeLogRecord>, StoreError> {
        if lines.is_empty() {
            return Ok(lines);
        }
        let per_server = per_server.max(1) as u64;
        let txn = self.inner.db.write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut logs = txn.open_table(NODE_LOGS)?;
            let mut counts = txn.open_table(NODE_LOG_COUNTS)?;
            let mut seq = meta
                .get(tables::META_NODE_LOG_SEQ)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut added: std::collections::BTreeMap<String, u64> = Default::default();
            for line in &mut lines {
                seq += 1;
                line.seq = seq;
                let json = serde_json::to_vec(&*line).expect("log records serialise");
                logs.insert((line.server.as_str(), seq), json.as_slice())?;
                *added.entry(line.server.clone()).or_default() += 1;
            }
            meta.insert(tables::META_NODE_LOG_SEQ, seq)?;
            for (server, n) in added {
                let held = counts.get(server.as_str())?.map(|v| v.value()).unwrap_or(0) + n;
                let excess = held.saturating_sub(per_server);
                if excess > 0 {
                    let mut old = Vec::with_capacity(excess as usize);
                    for entry in logs
                        .range((server.as_str(), 0)..=(server.as_str(), u64::MAX))?
                        .take(excess as usize)
                    {
                        old.push(entry?.0.value().1);
                    }
                    for s in old {
                        logs.remove((server.as_str(), s))?;
                    }
                }
                counts.insert(server.as_str(), held - excess)?;
            }
        }
        self.inner.db.commit(txn)?;
        Ok(lines)
    }

    /// Stored log lines of `server`, oldest first, filtered by `query`.
    pub fn node_logs(
        &self,
        server: &str,
        query: &NodeLogQuery,
    ) -> Result<Vec<NodeLogRecord>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(NODE_LOGS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        let from = query.after_seq.saturating_add(1);
        for entry in table.range((server, from)..=(server, u64::MAX))? {
            let (_, v) = entry?;
            let r = NodeLogRecord::decode(server, v.value())?;
            if r.time_ms >= query.since_ms {
                out.push(r);
            }
        }
        if query.limit > 0 && out.len() > query.limit {
            out.drain(..out.len() - query.limit);
        }
        Ok(out)
    }

    /// Log lines held for `server`.
    pub fn node_log_count(&self, server: &str) -> Result<u64, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(NODE_LOG_COUNTS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(server)?.map(|v| v.value()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(server: &str, msg: &str, time_ms: u64) -> NodeLogRecord {
        NodeLogRecord {
            seq: 0,
            time_ms,
            server: server.into(),
            address: "fdae::2".into(),
            msg: msg.into(),
            talos_time: Some("2026-12-05T10:00:00Z".into()),
            talos_level: Some("info".into()),
            fields: vec![("facility".into(), "kern".into())],
        }
    }

    #[test]
    fn ring_keeps_the_newest_lines_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let batch: Vec<_> = (0..7)
            .map(|i| line("a", &format!("a{i}"), 1000 + i))
            .chain([line("b", "b0", 5)])
            .collect();
        let stored = store.append_node_logs(batch, 3).unwrap();
        assert_eq!(
            stored.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        let a = store.node_logs("a", &NodeLogQuery::default()).unwrap();
        assert_eq!(
            a.iter().map(|l| l.msg.as_str()).collect::<Vec<_>>(),
            ["a4", "a5", "a6"]
        );
        assert_eq!(store.node_log_count("a").unwrap(), 3);
        // A later batch trims again; b is untouched by a's ring.
        store
            .append_node_logs(vec![line("a", "a7", 2000), line("a", "a8", 2001)], 3)
            .unwrap();
        let a = store.node_logs("a", &NodeLogQuery::default()).unwrap();
        assert_eq!(
            a.iter().map(|l| l.msg.as_str()).collect::<Vec<_>>(),
            ["a6", "a7", "a8"]
        );
        assert_eq!(
            a[0].fields,
            vec![("facility".to_string(), "kern".to_string())]
        );
        assert_eq!(
            store
                .node_logs("b", &NodeLogQuery::default())
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .node_logs("c", &NodeLogQuery::default())
                .unwrap()
                .is_empty()
        );
        // Filters: after a sequence number, since a time, newest n.
        let q = |after_seq, since_ms, limit| NodeLogQuery {
            after_seq,
            since_ms,
            limit,
        };
        let msgs = |v: Vec<NodeLogRecord>| v.into_iter().map(|l| l.msg).collect::<Vec<_>>();
        assert_eq!(
            msgs(store.node_logs("a", &q(8, 0, 0)).unwrap()),
            ["a7", "a8"]
        );
        assert_eq!(msgs(store.node_logs("a", &q(0, 2001, 0)).unwrap()), ["a8"]);
        assert_eq!(msgs(store.node_logs("a", &q(0, 0, 1)).unwrap()), ["a8"]);
        // The lines survive a reopen.
        drop(store);
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(
            store
                .node_logs("a", &NodeLogQuery::default())
                .unwrap()
                .len(),
            3
        );
    }
}
