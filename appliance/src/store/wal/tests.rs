//! The write-ahead log under redb: what a crash leaves is brought back by the replay, and
//! nothing else is. A crash is simulated by dropping the backend without its close (which
//! would checkpoint) and by overwriting the store file with what it held at its last flush
//! (the kernel's page cache of the writes since is what a power cut loses).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTableMetadata, StorageBackend, TableDefinition};

use super::*;

fn page(byte: u8) -> Vec<u8> {
    vec![byte; 4096]
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

/// What a power cut does to the store file: its content goes back to `flushed` (same file,
/// same inode; only the bytes change).
fn lose_page_cache(path: &Path, flushed: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(0).unwrap();
    f.write_all_at(flushed, 0).unwrap();
}

/// A new dir holding a store file of one zero page.
fn one_page_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::write(&path, page(0)).unwrap();
    (dir, path)
}

/// Commits page `b` over page 0 for each `b`, one flush each: one record each.
fn commit_first_page(f: &LoggedFile, bytes: std::ops::RangeInclusive<u8>) {
    for b in bytes {
        f.write(0, &page(b)).unwrap();
        f.sync_data().unwrap();
    }
}

#[test]
fn replay_brings_back_every_flushed_write_and_nothing_unflushed() {
    let (_dir, path) = one_page_store();
    {
        let (f, replayed) = LoggedFile::open(&path).unwrap();
        assert_eq!(replayed, Replayed::default());
        f.write(0, &page(1)).unwrap();
        f.sync_data().unwrap();
        f.set_len(3 * 4096).unwrap();
        f.write(8192, &page(2)).unwrap();
        f.sync_data().unwrap();
        // Written, never flushed: a commit the crash cut short.
        f.write(4096, &page(3)).unwrap();
        assert_eq!(f.checkpoints(), 0, "two commits fit in the log");
    }
    lose_page_cache(&path, &page(0));
    let (f, replayed) = LoggedFile::open(&path).unwrap();
    assert_eq!(replayed.records, 2);
    assert_eq!(replayed.bytes, 2 * 4096);
    assert_eq!(f.len().unwrap(), 3 * 4096);
    assert_eq!(read_at(&path, 0, 4096), page(1));
    assert_eq!(read_at(&path, 4096, 4096), vec![0u8; 4096]);
    assert_eq!(read_at(&path, 8192, 4096), page(2));
}

#[test]
fn a_torn_record_ends_the_replay() {
    let (_dir, path) = one_page_store();
    {
        let (f, _) = LoggedFile::open(&path).unwrap();
        commit_first_page(&f, 1..=3);
    }
    // Each record is one 4 KiB write plus its header: blocks 1-2, 3-4, 5-6. Damage the third.
    let log = OpenOptions::new()
        .write(true)
        .open(wal_path(&path))
        .unwrap();
    log.write_all_at(&[0xff; 16], 5 * 4096 + 100).unwrap();
    lose_page_cache(&path, &page(0));
    let (_f, replayed) = LoggedFile::open(&path).unwrap();
    assert_eq!(replayed.records, 2);
    assert_eq!(read_at(&path, 0, 4096), page(2));
}

#[test]
fn records_of_an_earlier_round_are_not_replayed() {
    let (_dir, path) = one_page_store();
    {
        let (f, _) = LoggedFile::open(&path).unwrap();
        commit_first_page(&f, 1..=3);
        // A clean close: the file is flushed in place, the log starts over.
        f.close().unwrap();
    }
    {
        let (f, replayed) = LoggedFile::open(&path).unwrap();
        assert_eq!(
            replayed.records, 0,
            "a clean close leaves nothing to replay"
        );
        f.write(4096, &page(9)).unwrap();
        f.sync_data().unwrap();
    }
    // The log still holds the earlier round's second and third records after the new one.
    let (_f, replayed) = LoggedFile::open(&path).unwrap();
    assert_eq!(replayed.records, 1);
    assert_eq!(read_at(&path, 0, 4096), page(3));
    assert_eq!(read_at(&path, 4096, 4096), page(9));
}

#[test]
fn the_log_is_written_ahead_of_its_records_in_growing_steps() {
    let (_dir, path) = one_page_store();
    let log_len = || std::fs::metadata(wal_path(&path)).unwrap().len();
    {
        let (f, _) = LoggedFile::open(&path).unwrap();
        assert_eq!(log_len(), BLOCK, "a new log is its start block");
        commit_first_page(&f, 1..=1);
        // The record (blocks 1-2) and zeros after it, up to the first 64 KiB step.
        assert_eq!(log_len(), BLOCK + 64 * 1024);
        // Records of two blocks: 7 more fill the step; the 9th needs the next one, as long
        // as all that was written so far.
        commit_first_page(&f, 2..=8);
        assert_eq!(log_len(), BLOCK + 64 * 1024);
        commit_first_page(&f, 9..=16);
        assert_eq!(log_len(), 2 * (BLOCK + 64 * 1024));
        commit_first_page(&f, 17..=17);
        assert_eq!(log_len(), 4 * (BLOCK + 64 * 1024));
    }
    // The zeros end the replay like any dead block; every record before them counts.
    lose_page_cache(&path, &page(0));
    let (_f, replayed) = LoggedFile::open(&path).unwrap();
    assert_eq!(replayed.records, 17);
    assert_eq!(read_at(&path, 0, 4096), page(17));
}

#[test]
fn a_full_log_checkpoints_and_starts_over() {
    let (_dir, path) = one_page_store();
    let big = vec![7u8; 1024 * 1024];
    let commits = CAPACITY / big.len() as u64 + 8;
    {
        let (f, _) = LoggedFile::open(&path).unwrap();
        for i in 0..commits {
            f.write(i % 4 * big.len() as u64, &big).unwrap();
            f.sync_data().unwrap();
        }
        assert_eq!(f.checkpoints(), 1);
    }
    assert!(std::fs::metadata(wal_path(&path)).unwrap().len() <= CAPACITY);
    let (_f, replayed) = LoggedFile::open(&path).unwrap();
    assert!(
        replayed.records > 0 && replayed.records < commits,
        "{replayed:?} of {commits}"
    );
}

/// A commit larger than [`STAGE`] goes to the log in pieces ahead of its header, with at most
/// about [`STAGE`] of it in memory, and replays whole; a second one, streamed in part but never
/// flushed (no header), replays as nothing, as a commit cut short must.
#[test]
fn a_commit_larger_than_the_stage_is_streamed_and_replays_whole() {
    let (_dir, path) = one_page_store();
    let pages = (3 * STAGE / 4096) as u64;
    {
        let (f, _) = LoggedFile::open(&path).unwrap();
        f.set_len((pages + 1) * 4096).unwrap();
        for i in 1..=pages {
            f.write(i * 4096, &page(i as u8)).unwrap();
            let st = lock(&f.state);
            assert!(st.pending.len() < RECORD_HEADER + STAGE);
            assert!(st.pending.capacity() <= 2 * (RECORD_HEADER + STAGE));
        }
        assert!(lock(&f.state).streamed > 2 * STAGE as u64);
        f.sync_data().unwrap();
        // The next commit streams part of itself, then the crash.
        for i in 1..=pages {
            f.write(i * 4096, &page(0xee)).unwrap();
        }
        assert!(lock(&f.state).streamed > 0);
        assert_eq!(f.checkpoints(), 0);
    }
    lose_page_cache(&path, &page(0));
    let (f, replayed) = LoggedFile::open(&path).unwrap();
    assert_eq!(replayed.records, 1);
    assert_eq!(replayed.bytes, pages * 4096);
    assert_eq!(f.len().unwrap(), (pages + 1) * 4096);
    for i in [1, pages / 2, pages] {
        assert_eq!(read_at(&path, i * 4096, 4096), page(i as u8));
    }
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let (_first, _) = LoggedFile::open(&path).unwrap();
    assert!(matches!(
        LoggedFile::open(&path),
        Err(WalError::Locked { .. })
    ));
}

#[test]
fn the_log_of_a_replaced_store_file_is_not_replayed() {
    let (dir, path) = one_page_store();
    {
        let (f, _) = LoggedFile::open(&path).unwrap();
        commit_first_page(&f, 1..=1);
    }
    // An operator restores another store file in its place (a new inode).
    let other = dir.path().join("restored");
    std::fs::write(&other, page(5)).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let (_f, replayed) = LoggedFile::open(&path).unwrap();
    assert_eq!(replayed.records, 0);
    assert_eq!(read_at(&path, 0, 4096), page(5));
}

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn open_db(
    path: &Path,
) -> (
    redb::Database,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let (f, _) = LoggedFile::open(path).unwrap();
    let crash = f.crash_switch();
    let db = redb::Database::builder()
        .set_cache_size(1024 * 1024)
        .create_with_backend(f)
        .unwrap();
    (db, crash)
}

fn count(db: &redb::Database) -> u64 {
    let r = db.begin_read().unwrap();
    match r.open_table(T) {
        Ok(t) => t.len().unwrap(),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => panic!("{e}"),
    }
}

/// The whole chain with redb on top: 200 commits acknowledged after the last flush of the
/// store file survive the loss of every page the kernel held, through the log alone; and
/// the same loss without the log loses them (the check can fail).
#[test]
fn redb_commits_acknowledged_since_the_last_flush_survive_a_power_cut() {
    for keep_log in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (db, crash) = open_db(&path);
        // A new file is flushed in place at its first commit: this is what the disk holds.
        let flushed = std::fs::read(&path).unwrap();
        for i in 0..200u64 {
            let w = db.begin_write().unwrap();
            w.open_table(T)
                .unwrap()
                .insert(i, &[i as u8; 300][..])
                .unwrap();
            w.commit().unwrap();
        }
        crash.store(true, Ordering::SeqCst);
        drop(db);
        lose_page_cache(&path, &flushed);
        if !keep_log {
            std::fs::remove_file(wal_path(&path)).unwrap();
        }
        let (db, _) = open_db(&path);
        let n = count(&db);
        if keep_log {
            assert_eq!(n, 200, "acknowledged commits lost");
            let r = db.begin_read().unwrap();
            let t = r.open_table(T).unwrap();
            assert_eq!(t.get(199).unwrap().unwrap().value(), &[199u8; 300][..]);
        } else {
            assert_eq!(n, 0, "without the log the file alone cannot hold them");
        }
    }
}
