//! Schema version and migrations. Runs once at open, before anything reads the store.
//!
//! A new file is stamped with `SCHEMA_VERSION`. An older file runs each step in
//! `MIGRATIONS` from its version up, each in its own transaction together with the version
//! bump. A newer file is refused untouched.

use std::path::Path;

use redb::{Database, ReadableTable, WriteTransaction};

use super::StoreError;
use super::tables::{META, META_SCHEMA_VERSION, OBJECTS};

/// The schema this binary reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

type Step = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` migrates version `i + 1` to `i + 2`. Empty while there is one version.
const MIGRATIONS: &[Step] = &[];

pub fn run(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    let found = {
        let meta = txn.open_table(META)?;
        meta.get(META_SCHEMA_VERSION)?.map(|v| v.value())
    };
    match found {
        None => {
            txn.open_table(OBJECTS)?;
            txn.open_table(META)?
                .insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            txn.commit()?;
            Ok(())
        }
        Some(v) if v == SCHEMA_VERSION => {
            txn.abort()?;
            Ok(())
        }
        Some(v) if v > SCHEMA_VERSION => {
            txn.abort()?;
            Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        Some(v) => {
            txn.abort()?;
            migrate_from(db, path, v, MIGRATIONS)
        }
    }
}

fn migrate_from(db: &Database, path: &Path, from: u64, steps: &[Step]) -> Result<(), StoreError> {
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
        step(&txn).map_err(wrap)?;
        txn.open_table(META)
            .map_err(|e| wrap(e.into()))?
            .insert(META_SCHEMA_VERSION, version + 1)
            .map_err(|e| wrap(e.into()))?;
        txn.commit().map_err(|e| wrap(e.into()))?;
    }
    Ok(())
}

/// Stamps a schema version, for tests of the refusal/migration paths.
#[cfg(test)]
pub fn force_version(db: &Database, version: u64) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(META_SCHEMA_VERSION, version)?;
    txn.commit()?;
    Ok(())
}
