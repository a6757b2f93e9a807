//! Store snapshots around schema changes (A/B updates): before a binary migrates the store
//! to its schema, the file as the older schema left it is copied beside it, named by that
//! schema version (`state.v<N>.redb`, 0600, in the data dir, so on the data partition);
//! a binary that finds a store of a NEWER schema than its own (the box came back on the
//! older slot after an update) puts that store aside (`state.v<M>.rolled-back.redb`) and
//! restores its own version's snapshot, or refuses clearly when there is none.
//!
//! Files only: the store is closed while a snapshot is written or restored. Each step
//! leaves a complete file under its final name (write to a temporary name, fsync, rename,
//! fsync the directory), so a crash in between never leaves a half snapshot or no store.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The snapshot of the store at `path` taken at schema `version`: `<stem>.v<version>.redb`
/// beside it (`state.v2.redb` for `state.redb`).
pub fn snapshot_path(path: &Path, version: u64) -> PathBuf {
    path.with_file_name(format!("{}.v{version}.redb", stem(path)))
}

/// Where a newer-schema store is put aside when its snapshot is restored:
/// `<stem>.v<version>.rolled-back.redb`.
pub fn rolled_back_path(path: &Path, version: u64) -> PathBuf {
    path.with_file_name(format!("{}.v{version}.rolled-back.redb", stem(path)))
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Snapshot {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the (closed) store at `path` to its snapshot for schema `version`, mode 0600;
/// replaces an older snapshot of the same version. Returns the snapshot's path.
pub fn write(path: &Path, version: u64) -> Result<PathBuf, StoreError> {
    let dest = snapshot_path(path, version);
    let tmp = dest.with_file_name(format!(
        ".{}.tmp",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    {
        let mut from = File::open(path).map_err(io_err(path))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::secrets::files::FILE_MODE)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        io::copy(&mut from, &mut to).map_err(io_err(&tmp))?;
        to.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    sync_dir(&dest)?;
    Ok(dest)
}

/// Puts the newer-schema store at `path` (schema `found`) aside and moves the snapshot of
/// schema `supported` in its place. `Ok(None)` when there is no such snapshot (nothing is
/// touched); `Ok(Some((snapshot, aside)))` after the restore.
pub fn restore(
    path: &Path,
    found: u64,
    supported: u64,
) -> Result<Option<(PathBuf, PathBuf)>, StoreError> {
    let snapshot = snapshot_path(path, supported);
    if !fs::metadata(&snapshot).is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let aside = rolled_back_path(path, found);
    fs::rename(path, &aside).map_err(io_err(&aside))?;
    fs::rename(&snapshot, path).map_err(io_err(path))?;
    sync_dir(path)?;
    Ok(Some((snapshot, aside)))
}

fn sync_dir(file: &Path) -> Result<(), StoreError> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
