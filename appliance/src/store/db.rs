//! The store's open redb database: every transaction of the store begins here.
//!
//! A write that failed on the disk (the data dir's filesystem full, an I/O error) leaves
//! redb refusing every later transaction with `PreviousIo` until the file is closed and
//! opened again. [`Db`] does that on the next transaction: while the cause lasts each
//! attempt fails with the cause's own error (`No space left on device`), and once it is gone
//! (space freed) the store works again without a restart of the box. redb's commit is
//! atomic, so the reopened file holds every commit that returned and none that failed.
//!
//! Also the test-only durability switch: in a debug build (`cfg(debug_assertions)`: never the
//! release binary that images, `scripts/build-static` and CI's musl build ship),
//! `APPLIANCE_FAULT_STORE_DURABILITY=none` in the environment makes every commit
//! `Durability::None` (no fsync), so the QEMU power-cut test (`qemu-tests/tests/durability.rs`)
//! can show that it catches a store that does not flush. A release build never reads the
//! variable, and no configuration key reaches it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{
    Database, ReadTransaction, ReadableDatabase, StorageError, TransactionError, WriteTransaction,
};

use super::{StoreError, wal};

/// The open database, reopened after an I/O error poisoned it.
pub(super) struct Db {
    path: PathBuf,
    cache_bytes: usize,
    /// The database and how many times it was opened; `None` after a reopen that failed
    /// (the next transaction tries again).
    slot: RwLock<(Option<Database>, u64)>,
    durability_none: bool,
    /// A commit failed on the disk: redb refuses everything until reopened.
    poisoned: AtomicBool,
}

impl Db {
    pub(super) fn new(path: &Path, db: Database, cache_bytes: usize) -> Db {
        let durability_none = durability_none_requested();
        if durability_none {
            tracing::warn!(
                store = %path.display(),
                "fault injection (debug build): every store commit is Durability::None, no fsync"
            );
        }
        Db {
            path: path.to_path_buf(),
            cache_bytes,
            slot: RwLock::new((Some(db), 0)),
            durability_none,
            poisoned: AtomicBool::new(false),
        }
    }

    /// Opens the file at `path` as the store does: under its write-ahead log (`wal.rs`),
    /// replaying the log first after an unclean stop.
    pub(super) fn open_file(
        path: &Path,
        cache_bytes: usize,
    ) -> Result<Database, redb::DatabaseError> {
        let (file, _) = wal::LoggedFile::open(path).map_err(|e| match e {
            wal::WalError::Locked { .. } => redb::DatabaseError::DatabaseAlreadyOpen,
            wal::WalError::Io { ref source, .. } => {
                redb::DatabaseError::from(std::io::Error::new(source.kind(), e.to_string()))
            }
            other => redb::DatabaseError::from(std::io::Error::other(other.to_string())),
        })?;
        Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(file)
    }

    /// Runs `f` on the open database (unit tests that set the file up by hand).
    #[cfg(test)]
    pub(super) fn with<T>(&self, f: impl FnOnce(&Database) -> T) -> Result<T, StoreError> {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        match slot.0.as_ref() {
            Some(db) => Ok(f(db)),
            None => Err(StoreError::Transaction(TransactionError::Storage(
                StorageError::PreviousIo,
            ))),
        }
    }

    /// Begins a read transaction.
    pub(super) fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.begin(|db| db.begin_read())
    }

    /// Begins a write transaction (its commit is durable when it returns: one flush of the
    /// write-ahead log, `wal.rs`).
    pub(super) fn write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.begin(|db| db.begin_write())?;
        if self.durability_none {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Durability(e.to_string()))?;
        }
        Ok(txn)
    }

    /// Commits `txn`; a commit that failed on the disk has the next transaction reopen the
    /// file first.
    pub(super) fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(|e| {
            if matches!(&e, redb::CommitError::Storage(_)) {
                self.poisoned.store(true, Ordering::SeqCst);
            }
            StoreError::from(e)
        })
    }

    fn begin<T>(
        &self,
        f: impl Fn(&Database) -> Result<T, TransactionError>,
    ) -> Result<T, StoreError> {
        let failed_generation = {
            let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
            let poisoned = self.poisoned.load(Ordering::SeqCst);
            match slot.0.as_ref().filter(|_| !poisoned).map(&f) {
                Some(Err(TransactionError::Storage(StorageError::PreviousIo))) | None => slot.1,
                Some(other) => return other.map_err(StoreError::from),
            }
        };
        self.reopen(failed_generation)?;
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        match slot.0.as_ref() {
            Some(db) => f(db).map_err(StoreError::from),
            None => Err(StoreError::Transaction(TransactionError::Storage(
                StorageError::PreviousIo,
            ))),
        }
    }

    /// Closes the poisoned database and opens the file again, unless another caller already
    /// did since `failed_generation`.
    fn reopen(&self, failed_generation: u64) -> Result<(), StoreError> {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if slot.1 != failed_generation {
            return Ok(());
        }
        if let Some(old) = slot.0.take() {
            // A write transaction still alive defers the close to its end; the open below then
            // finds the file still held and the next transaction tries again.
            if let Err(e) = old.close() {
                tracing::warn!(store = %self.path.display(), error = %e, "closing the store after an I/O error");
            }
        }
        slot.1 += 1;
        self.poisoned.store(false, Ordering::SeqCst);
        match Db::open_file(&self.path, self.cache_bytes) {
            Ok(db) => {
                tracing::warn!(store = %self.path.display(), "store reopened after an I/O error");
                slot.0 = Some(db);
                Ok(())
            }
            Err(source) => {
                tracing::warn!(store = %self.path.display(), error = %source, "store cannot be opened again after an I/O error");
                Err(StoreError::Reopen {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

#[cfg(debug_assertions)]
fn durability_none_requested() -> bool {
    std::env::var("APPLIANCE_FAULT_STORE_DURABILITY").is_ok_and(|v| v == "none")
}

#[cfg(not(debug_assertions))]
fn durability_none_requested() -> bool {
    false
}
