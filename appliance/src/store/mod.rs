//! The store: one redb file under the data dir, the only writer of durable state.
//!
//! Every state change is one write transaction committed with redb's default (immediate,
//! fsync'd) durability; a change is acknowledged only after its commit returns. After each
//! commit the changed keys go out on a broadcast change feed that the reconciler, console
//! and kube-bridge subscribe to. Only this module names redb types.
//!
//! Secrets in the store (BMC credentials, and later WireGuard keys and talosconfig) are
//! sealed with the box's secrets key (`crate::secrets`), read from `secrets.key` beside the
//! store file and created with a new store. The store records the key's id: a store that
//! holds sealed records refuses to open without that key file, or with another one.
//!
//! Schema changes across an A/B update (`snapshot.rs`): before an older store migrates it
//! is copied to `state.v<old>.redb`; a store of a newer schema than this binary's is put
//! aside and this schema's snapshot restored (the box came back on the older slot), or
//! refused when there is none.
//!
//! Deleting a Server removes, in the same transaction, what the box kept about it outside
//! the objects: its SideroLink log lines, applied Talos event ids, node record and boot
//! timeline (`Txn::forget_server`).

mod admin_tls;
mod bmc;
mod changelog;
mod console;
mod db;
mod events;
mod group;
mod leases;
mod leases6;
mod migrate;
mod node_logs;
mod siderolink;
mod siderolink_index;
mod snapshot;
mod tables;
mod timeline;
mod txn;
mod wal;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use redb::{ReadableTable, ReadableTableMetadata};
use tokio::sync::{broadcast, watch};

use crate::model::{Kind, Object};
use crate::secrets::{SecretKey, SecretsError, keyfile};

pub use admin_tls::ClientRecord;
pub use bmc::{BmcSettings, REDACTED, bmc_secret_name, redact_secrets};
pub use changelog::{LoggedChange, Retention, Since};
pub use events::{AllocationRecord, EVENTS_PER_SERVER, EventRecord, NewEvent};
pub use group::Group;
pub use migrate::SCHEMA_VERSION;
pub use node_logs::{NodeLogQuery, NodeLogRecord};
pub use siderolink::NodeRecord;
use tables::{CHANGE_LOG, META, OBJECTS, object_key};
pub use timeline::{TimelineLimits, TimelineOp, TimelineRecord};
pub use txn::Txn;

/// A committed change, as sent on the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub revision: u64,
    pub kind: Kind,
    pub name: String,
    pub op: ChangeOp,
    /// The object as this change committed it (`None` for a delete): a subscriber reads
    /// it here instead of reading the store again after every commit. Shared, not copied,
    /// between subscribers; the feed holds it until the slowest receiver has seen it.
    pub object: Option<Arc<Object>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Put,
    Delete,
}

/// An object as stored, with the store revision of its last change.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub object: Object,
    pub revision: u64,
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyResult {
    Created,
    Configured,
    Unchanged,
}

impl ApplyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyResult::Created => "created",
            ApplyResult::Configured => "configured",
            ApplyResult::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub kind: Kind,
    pub name: String,
    pub result: ApplyResult,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {path} is empty but its secrets key {key_path} exists: the store was truncated; \
         restore it from a backup, or remove both files to start with an empty store"
    )]
    Truncated { path: PathBuf, key_path: PathBuf },
    #[error("cannot create store {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(
        "store {path} has schema version {found}, newer than this binary's {supported}, and \
         there is no snapshot {snapshot} (taken before the newer version migrated it) to roll \
         back to; refusing to open it (run the newer appliance version again, or restore a \
         backup)"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
        /// The snapshot of this binary's schema that a rollback would restore (absent).
        snapshot: PathBuf,
    },
    #[error("store snapshot {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {path} failed schema migration from version {from}")]
    Migration {
        path: PathBuf,
        from: u64,
        #[source]
        source: Box<StoreError>,
    },
    #[error("this binary has no migration step from schema version {version}")]
    MissingMigration { version: u64 },
    #[error("{kind} `{name}` not found")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} `{name}` cannot be changed: {reason}")]
    Rejected {
        kind: Kind,
        name: String,
        reason: String,
    },
    #[error("stored {kind} `{name}` is unreadable: {message}")]
    CorruptRecord {
        kind: Kind,
        name: String,
        message: String,
    },
    #[error("admin TLS record {record} is unreadable: {message}")]
    CorruptAdminTls { record: String, message: String },
    #[error("change log entry {revision} is unreadable: {message}")]
    CorruptChange { revision: u64, message: String },
    #[error("stored DHCP lease for {addr} is unreadable: {message}")]
    CorruptLease {
        addr: std::net::Ipv4Addr,
        message: String,
    },
    #[error("stored DHCPv6 lease for {addr} is unreadable: {message}")]
    CorruptLease6 {
        addr: std::net::Ipv6Addr,
        message: String,
    },
    #[error("store transaction failed")]
    Transaction(#[from] redb::TransactionError),
    #[error("store table access failed")]
    Table(#[from] redb::TableError),
    #[error("store read/write failed")]
    Storage(#[from] redb::StorageError),
    #[error("store commit failed")]
    Commit(#[from] redb::CommitError),
    /// A group commit (`group.rs`) failed or stopped; the message is the cause, given to
    /// every call it held.
    #[error("store commit failed: {0}")]
    GroupCommit(String),
    /// The store was closed after an I/O error (`db.rs`) and could not be opened again
    /// yet; the next transaction tries again.
    #[error("store {path} could not be opened again after an I/O error: {source}")]
    Reopen {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    /// The test-only durability switch (`db.rs`) was refused by redb.
    #[error("store durability: {0}")]
    Durability(String),
    #[error("store secrets key")]
    SecretsKey(#[from] keyfile::KeyFileError),
    #[error(
        "store {path} holds sealed secrets but their key {key_path} is missing; restore that \
         file from the backup of this box (a new key cannot open them)"
    )]
    SecretsKeyMissing { path: PathBuf, key_path: PathBuf },
    #[error(
        "{key_path} is not the key the secrets in store {path} were sealed with; restore the \
         matching key file"
    )]
    SecretsKeyMismatch { path: PathBuf, key_path: PathBuf },
    #[error("secret {record}")]
    Secret {
        record: String,
        #[source]
        source: SecretsError,
    },
    #[error("cannot compact store {path} after sealing its secrets")]
    Compact {
        path: PathBuf,
        #[source]
        source: redb::CompactionError,
    },
}

/// redb's page cache (reads and the write buffer). redb's default (1 GiB) keeps every page
/// it ever touched: the whole file, 136 MiB with 10,000 registered servers. Pages beyond it
/// are read back with `pread` from the kernel's page cache. 1 MiB: what the box's
/// transactions touch again fits in it, and every page a commit writes enters the cache, so
/// a bigger one only fills with pages written once. Measured (`--profile fast`, load 5.5-7.8):
/// admin applies, 3 x 2,000 at 1 and 16 writers, read 138 and 87 pages back with `pread`
/// (3 and 3 with 8 MiB); a DHCP storm at 9,000 DORA/s (45,000 clients) read 0.34 pages per
/// DORA, no more box CPU (2.72/3.05 vs 2.89/3.39 s), 3.8-5.6 MiB less peak RSS than with
/// 8 MiB, which the cache filled within the storm's first second.
const CACHE_BYTES: usize = 1024 * 1024;
/// Committed changes the feed holds for its slowest receiver; one further behind lags.
const FEED: usize = 4096;

/// A blocking task that panicked or was cancelled before it returned.
#[derive(Debug, thiserror::Error)]
#[error("store task failed: {0}")]
pub struct TaskFailed(String);

/// Runs `f` (store work: redb reads and fsyncing commits) on tokio's blocking pool and
/// waits for it: the one `spawn_blocking` wrapper the services' store calls go through.
pub async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, TaskFailed> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TaskFailed(e.to_string()))
}

/// Opens (or creates) the redb file at `path` with the bounded page cache.
fn open_db(path: &Path) -> Result<redb::Database, StoreError> {
    db::Db::open_file(path, CACHE_BYTES).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: db::Db,
    path: PathBuf,
    key: SecretKey,
    changes: broadcast::Sender<Change>,
    /// The revision of the last commit that changed something: a wake-up with no object
    /// attached, for readers of the change log that must not pin the feed's objects.
    committed: watch::Sender<u64>,
    /// The same changes without their objects, for followers that may fall behind for as
    /// long as a client lets them (the console's per-browser event stream). Made by the
    /// first such follower: a broadcast channel writes all its slots when made (288 KiB
    /// here), and until someone follows there is nothing to send.
    changes_without_objects: OnceLock<broadcast::Sender<Change>>,
    /// How much of the change log (`changelog.rs`) is kept.
    retention: Retention,
    /// Held from a commit that changed objects until its changes are published
    /// ([`Store::commit_in_order`]): the feed carries changes in revision order.
    feed_order: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (creating if missing, mode 0600) the store file, migrating an older schema and
    /// refusing a newer one or a corrupt file. The secrets key is `secrets.key` in the same
    /// directory ([`Store::key_path`]): created with a new store, required by one that
    /// holds sealed secrets. The change log keeps the default [`Retention`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, Retention::default())
    }

    /// [`Store::open`] with the change log bounded by `retention`.
    pub fn open_with(path: &Path, retention: Retention) -> Result<Store, StoreError> {
        // An existing empty file is a new database to redb. With a secrets key beside it the
        // store existed before (the key is written with the first open): refuse rather than
        // silently start over. Without a key it is our own first open cut short.
        let key_path = Store::key_path(path);
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) && key_path.exists() {
            return Err(StoreError::Truncated {
                path: path.to_path_buf(),
                key_path,
            });
        }
        // redb creates missing files with the umask's mode; create it private first (an
        // empty file is initialised as a new database).
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::secrets::files::FILE_MODE)
            .open(path)
            .map_err(|source| StoreError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        let mut db = open_db(path)?;
        // Schema changes of an A/B update: a snapshot before this binary migrates an older
        // store; an older binary finding a newer store restores the snapshot of its schema.
        match migrate::found_version(&db)? {
            Some(v) if v < migrate::SCHEMA_VERSION => {
                drop(db);
                let snap = snapshot::write(path, v)?;
                tracing::info!(
                    store = %path.display(),
                    snapshot = %snap.display(),
                    from = v,
                    to = migrate::SCHEMA_VERSION,
                    "store snapshot written before its schema migration"
                );
                db = open_db(path)?;
            }
            Some(v) if v > migrate::SCHEMA_VERSION => {
                drop(db);
                let Some((snap, aside)) = snapshot::restore(path, v, migrate::SCHEMA_VERSION)?
                else {
                    return Err(StoreError::NewerSchema {
                        path: path.to_path_buf(),
                        found: v,
                        supported: migrate::SCHEMA_VERSION,
                        snapshot: snapshot::snapshot_path(path, migrate::SCHEMA_VERSION),
                    });
                };
                tracing::warn!(
                    store = %path.display(),
                    snapshot = %snap.display(),
                    newer = %aside.display(),
                    found = v,
                    supported = migrate::SCHEMA_VERSION,
                    "store has a newer schema than this binary (the box runs an older version \
                     again): restored the snapshot taken before the newer version migrated it; \
                     the newer store, with the changes made since, is kept aside"
                );
                db = open_db(path)?;
            }
            _ => {}
        }
        let recorded = migrate::recorded_key_id(&db)?;
        let key = match (keyfile::load(&key_path)?, recorded) {
            (Some(key), Some(id)) if key.id() != id => {
                return Err(StoreError::SecretsKeyMismatch {
                    path: path.to_path_buf(),
                    key_path,
                });
            }
            (Some(key), _) => key,
            (None, Some(_)) => {
                return Err(StoreError::SecretsKeyMissing {
                    path: path.to_path_buf(),
                    key_path,
                });
            }
            (None, None) => keyfile::create(&key_path)?,
        };
        let outcome = migrate::run(&db, path, &key)?;
        if let migrate::Outcome::Migrated { sealed } = outcome
            && sealed > 0
        {
            // Sealing rewrote the records; compaction drops the pages that held them in
            // clear, so the old values do not linger in free space of the file.
            db.compact().map_err(|source| StoreError::Compact {
                path: path.to_path_buf(),
                source,
            })?;
            tracing::info!(
                store = %path.display(),
                sealed,
                "sealed clear-text secrets in the store with {}",
                key_path.display()
            );
        }
        if matches!(outcome, migrate::Outcome::Migrated { .. }) {
            // Closing checkpoints the write-ahead log (`wal.rs`): the file alone now holds
            // the migrated schema, which an older binary must find if it ever reads it.
            drop(db);
            db = open_db(path)?;
        }
        let (changes, _) = broadcast::channel(FEED);
        let (committed, _) = watch::channel(0);
        Ok(Store {
            inner: Arc::new(Inner {
                db: db::Db::new(path, db, CACHE_BYTES),
                path: path.to_path_buf(),
                key,
                changes,
                committed,
                changes_without_objects: OnceLock::new(),
                retention,
                feed_order: Mutex::new(()),
            }),
        })
    }

    /// The schema version recorded in the store file at `path` (`None` for a new, empty
    /// file), read without migrating or changing anything. Tests use it with
    /// [`Store::stamp_schema_version`]; an operator sees it in the start-up log.
    pub fn schema_version_of(path: &Path) -> Result<Option<u64>, StoreError> {
        migrate::found_version(&open_db(path)?)
    }

    /// Stamps `version` as the schema of the (closed) store file at `path`, as a binary of
    /// that schema would leave it; changes nothing else. For tests of the migration
    /// snapshot and the rollback restore with the real binary: nothing in the box calls it.
    #[doc(hidden)]
    pub fn stamp_schema_version(path: &Path, version: u64) -> Result<(), StoreError> {
        migrate::stamp_version(&open_db(path)?, version)
    }

    /// The secrets key file used with the store at `path`: `secrets.key` beside it.
    pub fn key_path(path: &Path) -> PathBuf {
        path.with_file_name(keyfile::KEY_FILE)
    }

    /// Seals a secret for a record of another room (`context` names the record, e.g.
    /// `"siderolink/<server>/wireguard"`); store the result, open it with
    /// [`Store::open_secret`] and the same context. See `crate::secrets`.
    pub fn seal_secret(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.inner
            .key
            .seal_random(context, plaintext)
            .map_err(|source| StoreError::Secret {
                record: context.to_string(),
                source,
            })
    }

    /// Opens what [`Store::seal_secret`] sealed for `context`.
    pub fn open_secret(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.inner
            .key
            .open(context, sealed)
            .map_err(|source| StoreError::Secret {
                record: context.to_string(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Subscribes to committed changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Subscribes to committed changes from now on, each without its object (`object` is
    /// `None`): what a follower paced by a remote client takes, so that a client that stops
    /// reading holds only the changes' names, never the objects.
    pub fn subscribe_without_objects(&self) -> broadcast::Receiver<Change> {
        self.inner
            .changes_without_objects
            .get_or_init(|| broadcast::channel(FEED).0)
            .subscribe()
    }

    /// Wakes on every commit that changed something (the value is its revision). Unlike
    /// [`Store::subscribe`] it holds no objects: a receiver that is never read (a stalled
    /// watch stream) costs nothing, where a feed receiver keeps up to the feed's capacity of
    /// committed objects alive.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// How many changes (with their objects) the feed still holds because some receiver
    /// has not seen them yet.
    pub fn feed_backlog(&self) -> usize {
        self.inner.changes.len()
    }

    /// The revision of the last committed change (0 for an empty store).
    pub fn revision(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.read()?;
        let meta = txn.open_table(META)?;
        Ok(meta
            .get(tables::META_REVISION)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    pub fn get(&self, kind: Kind, name: &str) -> Result<Option<Stored>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = txn.open_table(OBJECTS)?;
        let found = table.get(object_key(kind, name).as_str())?;
        found
            .map(|v| tables::decode_record(kind, name, v.value(), &self.inner.key))
            .transpose()
    }

    /// All objects of one kind, sorted by name.
    pub fn list(&self, kind: Kind) -> Result<Vec<Stored>, StoreError> {
        Ok(self.list_at(kind)?.0)
    }

    /// [`Store::list`] and the store revision it was read at (one snapshot): a watch from
    /// that revision misses no later change.
    pub fn list_at(&self, kind: Kind) -> Result<(Vec<Stored>, u64), StoreError> {
        let txn = self.inner.db.read()?;
        let revision = txn
            .open_table(META)?
            .get(tables::META_REVISION)?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok((self.list_in(&txn, kind)?, revision))
    }

    /// [`Store::get`] and the store revision it was read at (one snapshot).
    pub fn get_at(&self, kind: Kind, name: &str) -> Result<(Option<Stored>, u64), StoreError> {
        let txn = self.inner.db.read()?;
        let revision = txn
            .open_table(META)?
            .get(tables::META_REVISION)?
            .map(|v| v.value())
            .unwrap_or(0);
        let table = txn.open_table(OBJECTS)?;
        let found = table
            .get(object_key(kind, name).as_str())?
            .map(|v| tables::decode_record(kind, name, v.value(), &self.inner.key))
            .transpose()?;
        Ok((found, revision))
    }

    fn list_in(&self, txn: &redb::ReadTransaction, kind: Kind) -> Result<Vec<Stored>, StoreError> {
        self.scan_in(txn, kind, Some)
    }

    /// The objects of one kind that `keep` maps to `Some`, sorted by name, read in one
    /// snapshot. Each object is decoded and handed over in turn, so only what `keep` returns
    /// is held: a scan of 10,000 servers for the few with a BMC does not build all of them.
    pub fn scan<T>(
        &self,
        kind: Kind,
        keep: impl FnMut(Stored) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.inner.db.read()?;
        self.scan_in(&txn, kind, keep)
    }

    fn scan_in<T>(
        &self,
        txn: &redb::ReadTransaction,
        kind: Kind,
        mut keep: impl FnMut(Stored) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let table = txn.open_table(OBJECTS)?;
        let prefix = tables::kind_prefix(kind);
        let mut out = Vec::new();
        for entry in table.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            let Some(name) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            let stored = tables::decode_record(kind, name, v.value(), &self.inner.key)?;
            out.extend(keep(stored));
        }
        Ok(out)
    }

    /// Number of stored objects per kind. Every record is still decoded (a corrupt one is an
    /// error, as with [`Store::list`]) but none is kept.
    pub fn counts(&self) -> Result<BTreeMap<Kind, u64>, StoreError> {
        let txn = self.inner.db.read()?;
        let mut out = BTreeMap::new();
        for kind in Kind::ALL {
            let n = self.scan_in(&txn, kind, |_| Some(()))?.len() as u64;
            out.insert(kind, n);
        }
        Ok(out)
    }

    /// Creates or replaces objects in one transaction: all land or none does. An incoming
    /// object without `status` keeps the stored status (as `kubectl apply` does).
    pub fn apply(&self, objects: Vec<Object>) -> Result<Vec<Applied>, StoreError> {
        self.apply_with(objects, |_, _| None)
    }

    /// [`Store::apply`], with `complete` run (inside the same transaction) on each object
    /// about to be written, created or changed, with the transaction's time: it may fill in
    /// the object, and the event it returns is appended with it. The admin API's applies
    /// use it for the lifecycle's adoption of a Server applied without a lifecycle state, so
    /// that the apply and its adoption are one commit (`reconcile::edits::adopt_applied`).
    pub fn apply_with(
        &self,
        objects: Vec<Object>,
        complete: impl Fn(&mut Object, u64) -> Option<NewEvent>,
    ) -> Result<Vec<Applied>, StoreError> {
        self.transact(|t| {
            objects
                .into_iter()
                .map(|object| t.apply(object, &complete))
                .collect()
        })
    }

    /// [`Store::apply_with`], handing its result to `answer` once committed (or failed), and
    /// only then publishing the changes on the change feed. Why: the admin apply's commit
    /// thread answers its callers there, and the feed's followers (reconcile, console, class
    /// status, watches) woken first would run on the runtime's threads ahead of the calls'
    /// replies. What is published, and its order, is the same.
    pub fn apply_answered(
        &self,
        objects: Vec<Object>,
        complete: impl Fn(&mut Object, u64) -> Option<NewEvent>,
        answer: impl FnOnce(Result<Vec<Applied>, StoreError>),
    ) {
        let (result, unpublished) = self.transact_unpublished(|t| {
            objects
                .into_iter()
                .map(|object| t.apply(object, &complete))
                .collect()
        });
        answer(result);
        unpublished.publish();
    }

    /// Returns once every commit that returned before this call has put its changes on the
    /// change feed. Why: the admin apply answers its callers before it publishes
    /// (`apply_answered`), so a view kept from the feed and read right after an answer (the
    /// console's server rows) could still miss that caller's change. Waits at most for the
    /// commit in flight: a commit holds the feed's order lock from before it commits until
    /// it has published (`commit_in_order`).
    pub fn wait_published(&self) {
        drop(
            self.inner
                .feed_order
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// Changes one stored object with `edit` inside one transaction. `edit` may refuse with
    /// a reason; then nothing is written.
    pub fn update(
        &self,
        kind: Kind,
        name: &str,
        edit: impl FnOnce(&mut Object) -> Result<(), String>,
    ) -> Result<Stored, StoreError> {
        let txn = self.inner.db.write()?;
        let stored;
        let mut change = None;
        {
            let mut meta = txn.open_table(META)?;
            let mut table = txn.open_table(OBJECTS)?;
            let key = object_key(kind, name);
            let old = table
                .get(key.as_str())?
                .map(|v| tables::decode_record(kind, name, v.value(), &self.inner.key))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                })?;
            let mut object = old.object.clone();
            edit(&mut object).map_err(|reason| StoreError::Rejected {
                kind,
                name: name.to_string(),
                reason,
            })?;
            if object.kind() != kind || object.name() != name {
                return Err(StoreError::Rejected {
                    kind,
                    name: name.to_string(),
                    reason: "an update may not change kind or name".into(),
                });
            }
            if object == old.object {
                stored = old;
            } else {
                let revision = next_revision(&mut meta)?;
                if kind == Kind::ServerBinding {
                    let mut index = txn.open_multimap_table(siderolink_index::SIDEROLINK_INDEX)?;
                    siderolink_index::follow(&mut index, name, Some(&old.object), Some(&object))?;
                }
                let replaced = table.insert(
                    key.as_str(),
                    tables::encode_record(revision, &object, &self.inner.key)?.as_slice(),
                )?;
                let c = Change {
                    revision,
                    kind,
                    name: name.to_string(),
                    op: ChangeOp::Put,
                    object: Some(Arc::new(object.clone())),
                };
                self.log_one(
                    &txn,
                    &mut meta,
                    &c,
                    &object,
                    replaced.as_ref().map(|r| r.value()),
                )?;
                change = Some(c);
                stored = Stored { object, revision };
            }
        }
        let _order = match change {
            Some(_) => Some(self.commit_in_order(txn)?),
            None => {
                txn.abort()?;
                None
            }
        };
        self.publish(change);
        Ok(stored)
    }

    /// Deletes one object; returns the revision of the deletion.
    pub fn delete(&self, kind: Kind, name: &str) -> Result<u64, StoreError> {
        let txn = self.inner.db.write()?;
        let revision;
        let change;
        {
            let mut meta = txn.open_table(META)?;
            let mut table = txn.open_table(OBJECTS)?;
            let Some(removed) = table.remove(object_key(kind, name).as_str())? else {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            };
            let old = tables::decode_record(kind, name, removed.value(), &self.inner.key)?;
            revision = next_revision(&mut meta)?;
            if kind == Kind::ServerBinding {
                let mut index = txn.open_multimap_table(siderolink_index::SIDEROLINK_INDEX)?;
                siderolink_index::follow(&mut index, name, Some(&old.object), None)?;
            }
            change = Change {
                revision,
                kind,
                name: name.to_string(),
                op: ChangeOp::Delete,
                object: None,
            };
            self.log_one(&txn, &mut meta, &change, &old.object, Some(removed.value()))?;
        }
        if kind == Kind::Server {
            let mut talos_events = txn.open_table(tables::SIDEROLINK_EVENT_IDS)?;
            let mut siderolink = txn.open_table(tables::SIDEROLINK)?;
            txn::forget_server(&txn, &mut talos_events, &mut siderolink, name)?;
        }
        let _order = self.commit_in_order(txn)?;
        self.publish(Some(change));
        Ok(revision)
    }

    /// Total number of stored objects (all kinds).
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.read()?;
        Ok(txn.open_table(OBJECTS)?.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Logs one change made in `txn` (whose revision `meta` already holds) and prunes the
    /// change log. `replaced` is the record the change replaced or deleted, as it was
    /// stored: its log entry keeps its bytes (`changelog::keep_replaced`).
    fn log_one(
        &self,
        txn: &redb::WriteTransaction,
        meta: &mut redb::Table<'_, &'static str, u64>,
        change: &Change,
        object: &Object,
        replaced: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut log = txn.open_table(CHANGE_LOG)?;
        if let Some(record) = replaced {
            let mut scratch = Vec::new();
            changelog::keep_replaced(&mut log, change.kind, &change.name, record, &mut scratch)?;
        }
        let now_ms = crate::clock::unix_ms();
        changelog::append(&mut log, change, object, &self.inner.key, now_ms)?;
        self.prune_log(&mut log, meta, change.revision, now_ms)
    }

    fn prune_log(
        &self,
        log: &mut redb::Table<'_, u64, &'static [u8]>,
        meta: &mut redb::Table<'_, &'static str, u64>,
        revision: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        changelog::prune(log, meta, revision, self.inner.retention, now_ms)
    }

    /// Commits `txn`, which wrote changes for the feed, and returns the feed's order lock,
    /// taken before the commit: the caller publishes those changes before it lets go. Why:
    /// revisions are taken inside the write transaction, but publishing comes after the
    /// commit has let the next writer in; without the lock a later commit could publish
    /// first (the admin apply answers its callers in between, `apply_answered`), and
    /// followers that keep the last object they were sent by name (reconcile) would end
    /// with an older one. The next writer waits here only for that publish, which sends on
    /// channels and never blocks.
    pub(super) fn commit_in_order(
        &self,
        txn: redb::WriteTransaction,
    ) -> Result<MutexGuard<'_, ()>, StoreError> {
        let order = self
            .inner
            .feed_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.db.commit(txn)?;
        Ok(order)
    }

    fn publish(&self, changes: impl IntoIterator<Item = Change>) {
        let mut last = None;
        for c in changes {
            last = Some(c.revision);
            // No subscribers is fine: nobody is watching yet.
            if let Some(tx) = self.inner.changes_without_objects.get()
                && tx.receiver_count() > 0
            {
                let _ = tx.send(Change {
                    object: None,
                    ..c.clone()
                });
            }
            let _ = self.inner.changes.send(c);
        }
        if let Some(revision) = last {
            self.inner.committed.send_replace(revision);
        }
    }
}

/// Takes the next store revision and records it in `meta`, inside the caller's write
/// transaction (which then writes its change under that revision).
pub(crate) fn next_revision(
    meta: &mut redb::Table<'_, &'static str, u64>,
) -> Result<u64, StoreError> {
    let revision = meta
        .get(tables::META_REVISION)?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    meta.insert(tables::META_REVISION, revision)?;
    Ok(revision)
}

fn keep_status_if_absent(new: &mut Object, old: &Object) {
    match (new, old) {
        (Object::Server(n), Object::Server(o)) if n.status.is_none() => n.status = o.status.clone(),
        (Object::ServerClass(n), Object::ServerClass(o)) if n.status.is_none() => {
            n.status = o.status.clone()
        }
        (Object::Environment(n), Object::Environment(o)) if n.status.is_none() => {
            n.status = o.status.clone()
        }
        (Object::MetalMachine(n), Object::MetalMachine(o)) if n.status.is_none() => {
            n.status = o.status.clone()
        }
        (Object::ServerBinding(n), Object::ServerBinding(o)) if n.status.is_none() => {
            n.status = o.status.clone()
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
