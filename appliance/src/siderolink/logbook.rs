//! The node log book: decoded Talos log lines from the endpoint, written to the store's
//! bounded per-server ring (`store::NodeLogRecord`, `[siderolink] log_lines_per_server`)
//! in batches (one transaction per [`BATCH_WINDOW`] or [`BATCH_MAX`] lines, never one per
//! line), then announced to followers (`ctl server logs -f`, the console's live tail).
//!
//! Built once by `app.rs` (the console and the admin API read it; SideroLink feeds it), so
//! it exists, empty, when SideroLink is off.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::endpoint::{NodeLog, Stats};
use crate::store::{NodeLogQuery, NodeLogRecord, Store, StoreError};

/// Lines gathered at most this long before they are committed.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// At most this many lines per transaction.
pub const BATCH_MAX: usize = 1024;
/// Stored lines announced to followers and not yet read by the slowest; one that falls
/// further behind reads the store again from its last line.
const ANNOUNCED: usize = 4096;

/// Handle to the log book; cheap to clone.
#[derive(Clone)]
pub struct LogBook {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    per_server: usize,
    stats: Arc<Stats>,
    /// Stored lines announced to followers; made by the first follower (a broadcast
    /// channel writes all its 4,096 slots when made, and without a receiver a line sent
    /// is dropped anyway, so until someone follows there is nothing to hold).
    stored: OnceLock<broadcast::Sender<Arc<NodeLogRecord>>>,
}

impl std::fmt::Debug for LogBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBook")
            .field("per_server", &self.inner.per_server)
            .finish_non_exhaustive()
    }
}

impl LogBook {
    /// A log book keeping `per_server` lines per server; counts into `stats`.
    pub fn new(store: Store, per_server: usize, stats: Arc<Stats>) -> LogBook {
        LogBook {
            inner: Arc::new(Inner {
                store,
                per_server: per_server.max(1),
                stats,
                stored: OnceLock::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Stored lines of `server` (oldest first).
    pub async fn read(
        &self,
        server: &str,
        query: NodeLogQuery,
    ) -> Result<Vec<NodeLogRecord>, StoreError> {
        let store = self.inner.store.clone();
        let server = server.to_string();
        tokio::task::spawn_blocking(move || store.node_logs(&server, &query))
            .await
            .expect("log read task")
    }

    /// The stored lines of `server` matching `query`, then every line stored after them,
    /// as it is committed (in order, none twice; a follower that fell behind the
    /// announcements re-reads the store from its last line). Ends when the log book goes.
    pub async fn follow(
        &self,
        server: &str,
        query: NodeLogQuery,
    ) -> Result<impl Stream<Item = Result<NodeLogRecord, StoreError>> + Send + 'static, StoreError>
    {
        // Subscribe first: a line committed meanwhile is in the backlog or announced
        // (or both: the sequence number drops the second copy).
        let rx = self
            .inner
            .stored
            .get_or_init(|| broadcast::channel(ANNOUNCED).0)
            .subscribe();
        let backlog = self.read(server, query).await?;
        let last_seq = backlog.last().map_or(0, |l| l.seq);
        let state = Follow {
            book: self.clone(),
            server: server.to_string(),
            rx,
            last_seq,
            pending: backlog.into(),
        };
        Ok(futures_util::stream::unfold(state, Follow::next))
    }

    /// Writes the endpoint's decoded lines until `shutdown` (spawned by `app.rs` as a
    /// SideroLink task); lines still queued at shutdown are written before it returns.
    pub async fn record(
        self,
        mut lines: broadcast::Receiver<Arc<NodeLog>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                r = lines.recv() => r,
            };
            let mut batch = Vec::new();
            match first {
                Ok(l) => batch.push(l),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lost(n);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < BATCH_MAX {
                match tokio::time::timeout_at(deadline, lines.recv()).await {
                    Ok(Ok(l)) => batch.push(l),
                    Ok(Err(broadcast::error::RecvError::Lagged(n))) => self.lost(n),
                    Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                }
            }
            self.write(batch).await;
        }
        let mut rest = Vec::new();
        while let Ok(l) = lines.try_recv() {
            rest.push(l);
        }
        self.write(rest).await;
    }

    fn lost(&self, n: u64) {
        self.inner.stats.log_lines_dropped.inc_by(n);
        tracing::warn!(
            lines = n,
            "SideroLink log lines lost: the log writer fell behind"
        );
    }

    /// Stores one batch (one transaction) and announces the stored lines.
    pub async fn write(&self, batch: Vec<Arc<NodeLog>>) {
        if batch.is_empty() {
            return;
        }
        let now = crate::clock::unix_ms();
        let records: Vec<NodeLogRecord> = batch
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .map(|l| NodeLogRecord {
                seq: 0,
                time_ms: now,
                server: l.server,
                address: l.address.to_string(),
                msg: l.line.msg,
                talos_time: l.line.time,
                talos_level: l.line.level,
                fields: l.line.fields,
            })
            .collect();
        let n = records.len() as u64;
        let store = self.inner.store.clone();
        let per_server = self.inner.per_server;
        let stored =
            tokio::task::spawn_blocking(move || store.append_node_logs(records, per_server)).await;
        match stored {
            Ok(Ok(stored)) => {
                self.inner.stats.log_lines_stored.inc_by(n);
                if let Some(tx) = self.inner.stored.get() {
                    for r in stored {
                        let _ = tx.send(Arc::new(r));
                    }
                }
            }
            Ok(Err(e)) => {
                self.inner.stats.log_lines_dropped.inc_by(n);
                tracing::warn!(lines = n, error = %crate::error_chain(&e), "SideroLink log lines not stored");
            }
            Err(e) => {
                self.inner.stats.log_lines_dropped.inc_by(n);
                tracing::warn!(lines = n, error = %e, "SideroLink log write task failed");
            }
        }
    }
}

/// The state of one follower.
struct Follow {
    book: LogBook,
    server: String,
    rx: broadcast::Receiver<Arc<NodeLogRecord>>,
    last_seq: u64,
    pending: VecDeque<NodeLogRecord>,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<NodeLogRecord, StoreError>, Follow)> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                self.last_seq = self.last_seq.max(r.seq);
                return Some((Ok(r), self));
            }
            match self.rx.recv().await {
                Ok(r) if r.server == self.server && r.seq > self.last_seq => {
                    self.last_seq = r.seq;
                    return Some((Ok((*r).clone()), self));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let query = NodeLogQuery {
                        after_seq: self.last_seq,
                        ..Default::default()
                    };
                    match self.book.read(&self.server, query).await {
                        Ok(lines) => self.pending = lines.into(),
                        Err(e) => return Some((Err(e), self)),
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::siderolink::logline::LogLine;
    use futures_util::StreamExt;

    fn node_log(server: &str, msg: &str) -> Arc<NodeLog> {
        Arc::new(NodeLog {
            server: server.into(),
            address: "fd00::2".parse().unwrap(),
            line: LogLine {
                msg: msg.into(),
                time: None,
                level: Some("info".into()),
                fields: vec![],
            },
        })
    }

    #[tokio::test]
    async fn batches_are_stored_bounded_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let stats = Arc::new(Stats::default());
        let book = LogBook::new(store, 4, stats.clone());
        let (tx, rx) = broadcast::channel(64);
        let (stop, shutdown) = watch::channel(false);
        let writer = tokio::spawn(book.clone().record(rx, shutdown));
        for i in 0..3 {
            tx.send(node_log("a", &format!("old{i}"))).unwrap();
        }
        tx.send(node_log("b", "other")).unwrap();
        // The follower sees the stored backlog, then new lines of its server only.
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen = book.read("a", NodeLogQuery::default()).await.unwrap();
            if seen.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.len(), 3);
        let follow = book.follow("a", NodeLogQuery::default()).await.unwrap();
        tokio::pin!(follow);
        for i in 0..3 {
            tx.send(node_log("a", &format!("new{i}"))).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 6 {
            let r = tokio::time::timeout(Duration::from_secs(5), follow.next())
                .await
                .expect("line within 5 s")
                .unwrap()
                .unwrap();
            got.push(r.msg);
        }
        assert_eq!(got, ["old0", "old1", "old2", "new0", "new1", "new2"]);
        // The ring holds 4.
        let _ = stop.send(true);
        writer.await.unwrap();
        let held = book.read("a", NodeLogQuery::default()).await.unwrap();
        assert_eq!(
            held.iter().map(|l| l.msg.as_str()).collect::<Vec<_>>(),
            ["old2", "new0", "new1", "new2"]
        );
        assert_eq!(stats.log_lines_stored.get(), 7);
        assert_eq!(stats.log_lines_dropped.get(), 0);
    }
}
