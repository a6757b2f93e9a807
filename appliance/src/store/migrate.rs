//! Schema version and migrations. Runs once at open, before anything reads the store.
//!
//! A new file is stamped with `SCHEMA_VERSION` and the id of its secrets key. An older file
//! runs each step in `MIGRATIONS` from its version up, each in its own transaction together
//! with the version bump; before that, `Store::open` writes a snapshot of the file as it
//! was (`snapshot.rs`). A newer file is refused untouched (an older binary could not read
//! what a newer one sealed) unless `Store::open` found and restored this binary's snapshot.
//!
//! Versions: 1 = secrets in clear; 2 = BMC secrets and inline BMC passwords sealed with
//! the secrets key (`crate::secrets`), whose id is recorded in `meta`; 3 = the durable
//! change log (`change_log`, `changelog.rs`), started empty at the store's revision; 4 =
//! the SideroLink index; 5 = the file is kept under a write-ahead log (`wal.rs`, `state.wal`
//! beside it): between checkpoints the file alone is not the store, so a binary that does not
//! replay the log must not read it. No record changes: the bump makes an older binary (back
//! on the other slot after an update) restore its own snapshot instead of reading the file;
//! 6 = a put's change-log entry may refer to the object's record instead of copying it
//! (`changelog.rs`), which an older binary would read as a corrupt entry. Entries written
//! whole before stay as they are: this binary reads both.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableError, WriteTransaction};

use super::StoreError;
use super::tables::{
    self, BMC_SECRETS, CHANGE_LOG, META, META_LOG_COMPACTED, META_SCHEMA_VERSION,
    META_SECRETS_KEY_ID, OBJECTS,
};
use crate::model::Kind;
use crate::secrets::SecretKey;

/// The schema this binary reads and writes.
pub const SCHEMA_VERSION: u64 = 6;

/// One migration step; returns how many records it rewrote.
type Step = fn(&WriteTransaction, &SecretKey) -> Result<usize, StoreError>;

/// `MIGRATIONS[i]` migrates version `i + 1` to `i + 2`.
const MIGRATIONS: &[Step] = &[
    seal_secrets,
    start_change_log,
    index_siderolink,
    under_write_ahead_log,
    log_refers_to_records,
];

/// What opening did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Already at `SCHEMA_VERSION`, or stamped new.
    Current,
    /// Migrated; this many clear-text secrets were sealed.
    Migrated { sealed: usize },
}

/// The secrets key id recorded in the store, if any.
pub fn recorded_key_id(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(meta.get(META_SECRETS_KEY_ID)?.map(|v| v.value()))
}

pub fn run(db: &Database, path: &Path, key: &SecretKey) -> Result<Outcome, StoreError> {
    let txn = db.begin_write()?;
    let found = {
        let meta = txn.open_table(META)?;
        meta.get(META_SCHEMA_VERSION)?.map(|v| v.value())
    };
    match found {
        None => {
            txn.open_table(OBJECTS)?;
            txn.open_table(CHANGE_LOG)?;
            txn.open_multimap_table(super::siderolink_index::SIDEROLINK_INDEX)?;
            let mut meta = txn.open_table(META)?;
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            meta.insert(META_SECRETS_KEY_ID, key.id())?;
            drop(meta);
            txn.commit()?;
            Ok(Outcome::Current)
        }
        Some(v) if v == SCHEMA_VERSION => {
            let recorded = txn.open_table(META)?.get(META_SECRETS_KEY_ID)?.is_some();
            if recorded {
                txn.abort()?;
            } else {
                txn.open_table(META)?
                    .insert(META_SECRETS_KEY_ID, key.id())?;
                txn.commit()?;
            }
            Ok(Outcome::Current)
        }
        Some(v) if v > SCHEMA_VERSION => {
            txn.abort()?;
            Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
                snapshot: super::snapshot::snapshot_path(path, SCHEMA_VERSION),
            })
        }
        Some(v) => {
            txn.abort()?;
            let sealed = migrate_from(db, path, v, MIGRATIONS, key)?;
            Ok(Outcome::Migrated { sealed })
        }
    }
}

fn migrate_from(
    db: &Database,
    path: &Path,
    from: u64,
    steps: &[Step],
    key: &SecretKey,
) -> Result<usize, StoreError> {
    let mut rewritten = 0;
    for version in from..SCHEMA_VERSION {
        let wrap = |source: StoreError| StoreError::Migration {
            path: path.to_path_buf(),
            from: version,
            source: Box::new(source),
        };
        let step = version
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| steps.get(i))
            .ok_or_else(|| wrap(StoreError::MissingMigration { version }))?;
        let txn = db.begin_write().map_err(|e| wrap(e.into()))?;
        rewritten += step(&txn, key).map_err(wrap)?;
        txn.open_table(META)
            .map_err(|e| wrap(e.into()))?
            .insert(META_SCHEMA_VERSION, version + 1)
            .map_err(|e| wrap(e.into()))?;
        txn.commit().map_err(|e| wrap(e.into()))?;
    }
    Ok(rewritten)
}

/// 1 → 2: seals every clear `bmc_secrets` value and every inline `spec.bmc.pass`, and
/// records the key's id.
fn seal_secrets(txn: &WriteTransaction, key: &SecretKey) -> Result<usize, StoreError> {
    let mut sealed = 0;
    {
        let mut secrets = txn.open_table(BMC_SECRETS)?;
        let mut clear = Vec::new();
        for entry in secrets.iter()? {
            let (k, v) = entry?;
            if !crate::secrets::is_sealed(v.value()) {
                clear.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        for (id, bytes) in clear {
            let map = super::bmc::decode_secret(&id, &bytes, key)?;
            let value = super::bmc::encode_secret(&id, &map, key)?;
            secrets.insert(id.as_str(), value.as_slice())?;
            sealed += 1;
        }
    }
    {
        let mut objects = txn.open_table(OBJECTS)?;
        let prefix = tables::kind_prefix(Kind::Server);
        let mut clear = Vec::new();
        for entry in objects.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            let Some(name) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            let stored = tables::decode_unsealed(Kind::Server, name, v.value())?;
            if super::bmc::has_clear_inline_pass(&stored.object) {
                clear.push((k.value().to_string(), stored));
            }
        }
        for (k, stored) in clear {
            let record = tables::encode_record(stored.revision, &stored.object, key)?;
            objects.insert(k.as_str(), record.as_slice())?;
            sealed += 1;
        }
    }
    txn.open_table(META)?
        .insert(META_SECRETS_KEY_ID, key.id())?;
    Ok(sealed)
}

/// 2 → 3: creates the change log, empty: a watch can resume only from the store's
/// revision at the upgrade on (older revisions list again).
fn start_change_log(txn: &WriteTransaction, _key: &SecretKey) -> Result<usize, StoreError> {
    txn.open_table(CHANGE_LOG)?;
    let mut meta = txn.open_table(META)?;
    let revision = meta
        .get(tables::META_REVISION)?
        .map(|v| v.value())
        .unwrap_or(0);
    meta.insert(META_LOG_COMPACTED, revision)?;
    Ok(0)
}

/// 3 → 4: builds the SideroLink index (overlay address / WireGuard key → binding) from
/// every stored ServerBinding.
fn index_siderolink(txn: &WriteTransaction, _key: &SecretKey) -> Result<usize, StoreError> {
    super::siderolink_index::rebuild(txn)?;
    Ok(0)
}

/// 4 → 5: nothing to rewrite; the version says the file is kept under the write-ahead log
/// (`Store::open` checkpoints right after, so the file alone already holds version 5).
fn under_write_ahead_log(_txn: &WriteTransaction, _key: &SecretKey) -> Result<usize, StoreError> {
    Ok(0)
}

/// 5 → 6: nothing to rewrite; the version keeps an older binary, which reads only whole
/// entries, from the change log's entries that refer to records.
fn log_refers_to_records(_txn: &WriteTransaction, _key: &SecretKey) -> Result<usize, StoreError> {
    Ok(0)
}

/// The schema version recorded in `db` (`None` for a new file), read only.
pub fn found_version(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(meta.get(META_SCHEMA_VERSION)?.map(|v| v.value()))
}

/// Stamps a schema version, for tests of the refusal/migration/rollback paths.
pub fn stamp_version(db: &Database, version: u64) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(META_SCHEMA_VERSION, version)?;
    txn.commit()?;
    Ok(())
}
