//! The admin `Watch` stream: committed object changes read from the store's durable change
//! log (`store/changelog.rs`), from a revision on.
//!
//! The stream is pulled: the log is read (in batches, on the blocking pool) only when the
//! client takes the next event, and a commit only wakes a caught-up stream (through
//! `Store::committed`, which carries no objects). A slow or stuck watcher therefore holds no buffer of its own and never slows a
//! commit; when it falls behind the log's retention, its next read ends the stream with
//! OUT_OF_RANGE, the same "too old: list again" answer a resume from a compacted revision
//! gets. Watchers at once are capped (`[watch] max_watchers`); on shutdown streams end with
//! UNAVAILABLE.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use appliance_rpc::admin::{ChangeType, WatchEvent, WatchRequest};
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::model::Kind;
use crate::store::{ChangeOp, LoggedChange, Since, Store, StoreError};

/// Changes read from the log at once.
const BATCH: usize = 256;
/// Shortest bookmark interval a client may ask for.
const MIN_BOOKMARK: Duration = Duration::from_millis(100);

/// Trailer naming the oldest revision a watch can resume after.
pub const COMPACT_REVISION_KEY: &str = "appliance-compact-revision";
/// Trailer naming the store's current revision.
pub const REVISION_KEY: &str = "appliance-revision";

/// The stream a `Watch` call answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

/// Watch settings (`[watch]` in the config).
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Bookmark interval when the client does not ask for one.
    pub bookmark: Duration,
    /// Open streams at once, all clients together.
    pub max_watchers: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            bookmark: Duration::from_secs(15),
            max_watchers: 256,
        }
    }
}

/// Builds watch streams: the store, the shutdown signal and the watcher cap.
#[derive(Debug, Clone)]
pub struct Watches {
    store: Store,
    shutdown: watch::Receiver<bool>,
    bookmark: Duration,
    slots: Arc<Semaphore>,
    max_watchers: usize,
}

impl Watches {
    pub fn new(store: Store, settings: &WatchSettings, shutdown: watch::Receiver<bool>) -> Self {
        Watches {
            store,
            shutdown,
            bookmark: settings.bookmark.max(MIN_BOOKMARK),
            slots: Arc::new(Semaphore::new(settings.max_watchers)),
            max_watchers: settings.max_watchers,
        }
    }

    /// Checks the request and opens a stream; a compacted or future `since_revision` is
    /// refused here, before any event.
    pub async fn open(&self, req: WatchRequest) -> Result<WatchStream, Status> {
        let filter = Filter::parse(&req)?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} watch streams are open, the most this box serves ([watch] max_watchers)",
                self.max_watchers
            ))
        })?;
        // Subscribe before the first read, so no commit between the two goes unnoticed.
        let mut wake = self.store.committed();
        wake.borrow_and_update();
        let store = self.store.clone();
        let since = req.since_revision;
        let (start, check) = blocking(&self.store, move |s| {
            Ok(match since {
                Some(r) => (r, s.changes_since(r, 0)?),
                None => {
                    let r = s.revision()?;
                    (r, s.changes_since(r, 0)?)
                }
            })
        })
        .await?;
        if let Since::Compacted {
            compacted,
            revision,
        } = check
        {
            return Err(too_old(start, compacted, revision, false));
        }
        let bookmark = match req.bookmark_interval_ms {
            0 => self.bookmark,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_BOOKMARK),
        };
        let state = State {
            store,
            wake,
            shutdown: self.shutdown.clone(),
            filter,
            pos: start,
            pending: VecDeque::new(),
            bookmark,
            last_sent: tokio::time::Instant::now(),
            caught_up: false,
            done: false,
            _permit: permit,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next)))
    }
}

/// Which changes a stream carries.
#[derive(Debug)]
struct Filter {
    kinds: Vec<Kind>,
    name: Option<String>,
}

impl Filter {
    fn parse(req: &WatchRequest) -> Result<Filter, Status> {
        let kinds = req
            .kinds
            .iter()
            .map(|k| super::admin::parse_kind(k))
            .collect::<Result<Vec<_>, _>>()?;
        let name = (!req.name.is_empty()).then(|| req.name.clone());
        if name.is_some() && kinds.len() != 1 {
            return Err(Status::invalid_argument(
                "watching one object by name needs exactly one kind",
            ));
        }
        Ok(Filter { kinds, name })
    }

    fn wants(&self, c: &LoggedChange) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&c.kind))
            && self.name.as_ref().is_none_or(|n| *n == c.name)
    }
}

struct State {
    store: Store,
    /// Commits' wake-ups (`Store::committed`, not the object-carrying change feed: a stream
    /// that is not read must not keep committed objects alive).
    wake: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    filter: Filter,
    /// Every change up to here has been read from the log (and queued if wanted).
    pos: u64,
    pending: VecDeque<WatchEvent>,
    bookmark: Duration,
    last_sent: tokio::time::Instant,
    /// The bookmark after the first catch-up was queued.
    caught_up: bool,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

async fn next(mut s: State) -> Option<(Result<WatchEvent, Status>, State)> {
    loop {
        if let Some(event) = s.pending.pop_front() {
            s.last_sent = tokio::time::Instant::now();
            return Some((Ok(event), s));
        }
        if s.done {
            return None;
        }
        if *s.shutdown.borrow() {
            return Some((Err(shutting_down(s.pos)), s.finish()));
        }
        // Commits so far are covered by the read below; only a later one wakes the wait.
        s.wake.borrow_and_update();
        let pos = s.pos;
        let read = blocking(&s.store, move |store| store.changes_since(pos, BATCH)).await;
        let (changes, revision) = match read {
            Err(status) => return Some((Err(status), s.finish())),
            Ok(Since::Compacted {
                compacted,
                revision,
            }) => return Some((Err(too_old(pos, compacted, revision, true)), s.finish())),
            Ok(Since::Changes { changes, revision }) => (changes, revision),
        };
        let full = changes.len() == BATCH;
        for c in changes {
            s.pos = c.revision;
            if s.filter.wants(&c) {
                s.pending.push_back(event(c));
            }
        }
        if full {
            continue;
        }
        s.pos = s.pos.max(revision);
        if !s.caught_up {
            s.caught_up = true;
            s.pending.push_back(bookmark(s.pos));
        }
        if !s.pending.is_empty() {
            continue;
        }
        // Caught up with nothing to send: wait for a commit, the bookmark time or shutdown.
        let deadline = s.last_sent + s.bookmark;
        tokio::select! {
            r = s.wake.changed() => {
                if r.is_err() {
                    return Some((Err(shutting_down(s.pos)), s.finish()));
                }
            }
            _ = tokio::time::sleep_until(deadline) => s.pending.push_back(bookmark(s.pos)),
            _ = s.shutdown.changed() => {}
        }
    }
}

impl State {
    fn finish(mut self) -> State {
        self.done = true;
        self.pending.clear();
        self
    }
}

fn event(c: LoggedChange) -> WatchEvent {
    let mut object = c.object;
    // Inline BMC passwords never leave the box (bmc room), as in Get.
    crate::store::redact_secrets(&mut object);
    WatchEvent {
        r#type: match c.op {
            ChangeOp::Put => ChangeType::Put,
            ChangeOp::Delete => ChangeType::Delete,
        } as i32,
        revision: c.revision,
        kind: c.kind.to_string(),
        name: c.name,
        json: object.to_json(),
        committed_unix_ms: c.committed_ms,
    }
}

fn bookmark(revision: u64) -> WatchEvent {
    WatchEvent {
        r#type: ChangeType::Bookmark as i32,
        revision,
        ..Default::default()
    }
}

/// OUT_OF_RANGE: the revision is not in the change log (any more, or yet): list again.
fn too_old(asked: u64, compacted: u64, revision: u64, fell_behind: bool) -> Status {
    let message = if asked > revision {
        format!(
            "revision {asked} is newer than the box's store (revision {revision}; restored from \
             a backup?): list again and watch from the list's revision"
        )
    } else if fell_behind {
        format!(
            "this watch fell behind the box's change log (at revision {asked}; changes up to \
             {compacted} are no longer kept, the store is at {revision}): list again and watch \
             from the list's revision"
        )
    } else {
        format!(
            "revision {asked} is too old: changes up to {compacted} are no longer kept (the \
             store is at {revision}): list again and watch from the list's revision"
        )
    };
    let mut meta = MetadataMap::new();
    meta.insert(
        COMPACT_REVISION_KEY,
        compacted.to_string().parse().expect("digits"),
    );
    meta.insert(REVISION_KEY, revision.to_string().parse().expect("digits"));
    Status::with_metadata(tonic::Code::OutOfRange, message, meta)
}

fn shutting_down(pos: u64) -> Status {
    Status::unavailable(format!(
        "the box is shutting down; watch again from revision {pos}"
    ))
}

async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    let store = store.clone();
    crate::store::blocking(move || f(store))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(super::admin::store_status)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::model::parse_documents;

    fn class(name: &str, note: &str) -> Vec<crate::model::Object> {
        parse_documents(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: {name}\n  labels:\n    note: \"{note}\"\nspec:\n  qualifiers: {{}}\n"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn an_unread_stream_pins_no_committed_object_and_a_read_one_sees_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let watches = Watches::new(store.clone(), &WatchSettings::default(), shutdown);
        let req = WatchRequest {
            kinds: vec![],
            name: String::new(),
            since_revision: Some(0),
            bookmark_interval_ms: 0,
        };
        let _stalled = watches.open(req.clone()).await.unwrap();
        let mut read = watches.open(req).await.unwrap();
        // Caught up on an empty store: the first event is the bookmark.
        let first = read.next().await.unwrap().unwrap();
        assert_eq!(first.r#type, ChangeType::Bookmark as i32);
        for i in 0..20 {
            store.apply(class("c", &i.to_string())).unwrap();
        }
        // Nobody holds a feed receiver: the 20 commits' objects are not kept for the
        // stalled stream (a feed receiver per stream kept them until it read).
        assert_eq!(store.feed_backlog(), 0);
        // A waiting stream still wakes for a commit made after it went idle.
        for revision in 1..=20 {
            let e = tokio::time::timeout(Duration::from_secs(5), read.next())
                .await
                .expect("woken by the commits")
                .unwrap()
                .unwrap();
            assert_eq!((e.r#type, e.revision), (ChangeType::Put as i32, revision));
        }
        let waiting = tokio::spawn(async move { read.next().await.map(|e| e.unwrap().revision) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.apply(class("c", "late")).unwrap();
        let late = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a commit wakes a caught-up stream")
            .unwrap();
        assert_eq!(late, Some(21));
    }
}
