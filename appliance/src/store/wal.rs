//! The store file under a write-ahead log: redb's storage backend for `state.redb`, so that a
//! commit costs one sequential append and one `fdatasync` of a small log instead of an
//! `fdatasync` of the redb file itself.
//!
//! Why: redb's commit writes its dirty pages where they live in the file (15 pages, ~60 KiB,
//! scattered, for one admin apply) and then flushes the file. Flushing scattered pages costs
//! this machine's disk 390-650 µs; the same bytes appended to a log and flushed cost ~130 µs
//! (measured with a small probe before this module was written; `scripts/bench store`
//! measures the result against etcd, whose WAL works the same way).
//!
//! How: every write and length change redb makes goes to the redb file at once (into the
//! kernel's page cache, not flushed) and is also written, as an operation of the next record,
//! to the log (`state.wal`) after its last record, in pieces of up to [`STAGE`] bytes kept in
//! memory (a DHCP storm's timeline commit writes 1-2 MiB: kept whole, it was up to 2 MiB of
//! the box's peak RSS, issue 16). When redb asks for its data to be made durable
//! (`sync_data`, once per commit), the rest is written, then the record's header, which
//! checksums everything since the last time, and the log alone is flushed. When the log is full the redb file is flushed instead and the log starts over (a
//! checkpoint); so it does when the database closes, so that a closed store is one complete
//! file (snapshots copy it alone). Reads come from the redb file, whose page cache holds every
//! write.
//!
//! After a crash the redb file holds the last checkpoint plus any subset of the writes since
//! (the kernel flushes dirty pages whenever it likes). Opening replays every complete record
//! of the log, in order, onto the file and flushes it: the file then holds every commit
//! whose `sync_data` returned, exactly, plus perhaps some writes of the one commit that was
//! still running, which is the state redb's own recovery is built for (a crash between its
//! writes and its flush). A record cut short by the crash fails its checksum and ends the
//! replay; it belonged to a commit that was never acknowledged.
//!
//! Layout of the log, in 4 KiB blocks (a record never shares a block with the one before, so
//! writing a record can never tear one already flushed):
//! - block 0, the start: `APPLWAL1`, a random generation, the redb file's device and inode,
//!   a CRC-32 of those. Written (and flushed) when the log starts over; the generation is new
//!   each time, so records of an earlier round still further on in the file are not read.
//! - from block 1, records: `APWR`, generation, sequence number from 0, payload length,
//!   CRC-32 of all that and the payload; then the payload, a list of operations: `1`
//!   offset length bytes (a write) or `2` length (the file's new length).
//!
//! Failure: an error of any write, length change or flush makes the backend refuse
//! everything after it (redb then has the store reopen the file, `db.rs`), and its close does
//! not checkpoint; the reopen replays the log, which leaves the file at the last acknowledged
//! commit. One exception: a log append that fails (the disk is full while the log still
//! grows to its size) checkpoints instead, and the commit stands if that works, since every
//! write of it is already in the redb file.
//!
//! The log is locked (`flock`) while open: a second box on the same data dir is refused as
//! redb's own file lock refused it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Log size at which the next commit checkpoints instead of appending: bounds the disk the
/// log takes and the replay after a crash (a few hundred commits of an admin apply).
pub(super) const CAPACITY: u64 = 32 * 1024 * 1024;

/// Most bytes of the next record's operations kept in memory: more are written to the log
/// (not flushed) ahead of the record's header. A commit of an admin apply (~60 KiB) or of a
/// lease group still goes out in one write with its header. Operations that would not fit in
/// the log (a commit larger than it, or commits that never ask for durability) are dropped
/// and the next `sync_data` checkpoints instead.
const STAGE: usize = 256 * 1024;

const BLOCK: u64 = 4096;
const START_MAGIC: &[u8; 8] = b"APPLWAL1";
const RECORD_MAGIC: &[u8; 4] = b"APWR";
/// Record header: magic, generation, sequence, payload length, CRC-32.
const RECORD_HEADER: usize = 4 + 8 + 8 + 4 + 4;
const OP_WRITE: u8 = 1;
const OP_SET_LEN: u8 = 2;

/// The log file that belongs to the redb file at `path`: the same name with the extension
/// `.wal` (`state.wal` for `state.redb`).
pub(super) fn wal_path(path: &Path) -> PathBuf {
    path.with_extension("wal")
}

/// What opening found in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Replayed {
    /// Records applied to the redb file.
    pub records: u64,
    /// Bytes of those records' writes.
    pub bytes: u64,
}

/// redb's storage backend: the redb file, its log, and what has not been logged yet.
pub(super) struct LoggedFile {
    main: File,
    main_path: PathBuf,
    log_path: PathBuf,
    state: Mutex<LogState>,
    /// Tests: the next close acts as a crash (no checkpoint, the log left as it is).
    #[cfg(test)]
    crash_on_close: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct LogState {
    log: File,
    generation: u64,
    /// The next record's sequence number and where it goes.
    seq: u64,
    end: u64,
    /// How far the log file has been written, ever (its blocks are allocated): a record
    /// inside it overwrites and its flush is data only; one beyond it would also flush the
    /// file's new size and extents, which costs this machine's disk ~2.5x (see `extend`).
    written: u64,
    /// The next record: room for its header, then the operations written to the redb file
    /// since the last durable point and not yet written to the log, encoded as in a record's
    /// payload (the header is filled in place, so a record of up to [`STAGE`] bytes is
    /// written without a copy, in one write).
    pending: Vec<u8>,
    /// Bytes of the next record's payload already written to the log after its header's
    /// room at `end` (when `pending` reached [`STAGE`]), and their CRC-32.
    streamed: u64,
    streamed_crc: crc32fast::Hasher,
    /// Writes were dropped from `pending` (too many): the next durable point must be a
    /// checkpoint. Also set for a new file, so that the redb file's first content is flushed
    /// in place before it is relied on.
    must_checkpoint: bool,
    /// An operation failed: refuse everything, do not checkpoint at close.
    failed: Option<String>,
    checkpoints: u64,
}

impl std::fmt::Debug for LoggedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedFile")
            .field("main", &self.main_path)
            .field("log", &self.log_path)
            .finish()
    }
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is in use by another process (another appliance on this data dir?)")]
    Locked { path: PathBuf },
    #[error("{path}: a complete record of the write-ahead log is unreadable: {message}")]
    BadRecord { path: PathBuf, message: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock(m: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_generation() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    u64::from_le_bytes(b)
}

fn align(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Opens `path` for reading and writing, created 0600 if missing.
fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::secrets::files::FILE_MODE)
        .open(path)
}

fn identity(main: &File) -> io::Result<(u64, u64)> {
    let m = main.metadata()?;
    Ok((m.dev(), m.ino()))
}

impl LoggedFile {
    /// Opens the redb file at `path` (created empty, mode 0600, if missing) and its log,
    /// replaying the log's complete records onto the file first.
    pub(super) fn open(path: &Path) -> Result<(LoggedFile, Replayed), WalError> {
        let main = open_private(path).map_err(io_at(path))?;
        let log_path = wal_path(path);
        let created = !log_path.exists();
        let log = open_private(&log_path).map_err(io_at(&log_path))?;
        match log.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WalError::Locked { path: log_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_at(&log_path)(e)),
        }
        if created {
            // The log's name must survive a crash as surely as its records.
            if let Some(dir) = log_path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_at(dir))?;
            }
        }
        let replayed = replay(&main, path, &log, &log_path)?;
        let written = log.metadata().map_err(io_at(&log_path))?.len();
        let main_empty = main.metadata().map_err(io_at(path))?.len() == 0;
        let file = LoggedFile {
            main,
            main_path: path.to_path_buf(),
            log_path,
            state: Mutex::new(LogState {
                log,
                generation: 0,
                seq: 0,
                end: BLOCK,
                written,
                pending: vec![0; RECORD_HEADER],
                streamed: 0,
                streamed_crc: crc32fast::Hasher::new(),
                must_checkpoint: main_empty,
                failed: None,
                checkpoints: 0,
            }),
            #[cfg(test)]
            crash_on_close: Default::default(),
        };
        {
            let mut st = lock(&file.state);
            file.start_over(&mut st).map_err(io_at(&file.log_path))?;
        }
        Ok((file, replayed))
    }

    /// Checkpoints made so far (tests).
    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> u64 {
        lock(&self.state).checkpoints
    }

    /// Tests: a switch that makes the close a crash (set it, then drop the database).
    #[cfg(test)]
    pub(super) fn crash_switch(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.crash_on_close.clone()
    }

    /// Writes a new start block (new generation) and flushes the log: every record before it
    /// is dead. Only after the redb file holds everything those records held.
    fn start_over(&self, st: &mut LogState) -> io::Result<()> {
        let generation = random_generation();
        let (dev, ino) = identity(&self.main)?;
        let mut block = vec![0u8; BLOCK as usize];
        block[..8].copy_from_slice(START_MAGIC);
        block[8..16].copy_from_slice(&generation.to_le_bytes());
        block[16..24].copy_from_slice(&dev.to_le_bytes());
        block[24..32].copy_from_slice(&ino.to_le_bytes());
        let crc = crc32fast::hash(&block[..32]);
        block[32..36].copy_from_slice(&crc.to_le_bytes());
        st.log.write_all_at(&block, 0)?;
        st.log.sync_data()?;
        st.generation = generation;
        st.seq = 0;
        st.end = BLOCK;
        st.written = st.written.max(BLOCK);
        Ok(())
    }

    /// Flushes the redb file in place and starts the log over.
    fn checkpoint(&self, st: &mut LogState) -> io::Result<()> {
        self.main.sync_data()?;
        st.clear_pending();
        st.must_checkpoint = false;
        self.start_over(st)?;
        st.checkpoints += 1;
        Ok(())
    }

    fn refuse(st: &LogState) -> io::Result<()> {
        match &st.failed {
            Some(cause) => Err(io::Error::other(format!(
                "the store's write-ahead log failed earlier ({cause}); the store must be opened again"
            ))),
            None => Ok(()),
        }
    }

    /// Runs `f`; an error marks the backend failed.
    fn guarded<T>(
        &self,
        st: &mut LogState,
        f: impl FnOnce(&Self, &mut LogState) -> io::Result<T>,
    ) -> io::Result<T> {
        Self::refuse(st)?;
        let r = f(self, st);
        if let Err(e) = &r {
            st.failed = Some(e.to_string());
        }
        r
    }

    fn keep(&self, st: &mut LogState, op: &[&[u8]]) {
        if st.must_checkpoint {
            return;
        }
        for part in op {
            st.pending.extend_from_slice(part);
        }
        if st.pending.len() >= RECORD_HEADER + STAGE {
            self.stream(st);
        }
    }

    /// Writes the operations kept in memory to the log, after what was streamed of the next
    /// record; not flushed, and not a record until `append` writes its header. Operations that
    /// would not fit in the log, or whose write fails, are dropped and the next durable point
    /// is a checkpoint (every write is in the redb file already).
    fn stream(&self, st: &mut LogState) {
        let at = st.end + (RECORD_HEADER as u64) + st.streamed;
        let to = at + (st.pending.len() - RECORD_HEADER) as u64;
        if align(to) > CAPACITY {
            st.clear_pending();
            st.must_checkpoint = true;
            return;
        }
        let written = if to > st.written {
            Self::extend(st, to)
        } else {
            Ok(())
        }
        .and_then(|()| st.log.write_all_at(&st.pending[RECORD_HEADER..], at));
        match written {
            Ok(()) => {
                st.streamed_crc.update(&st.pending[RECORD_HEADER..]);
                st.streamed = to - st.end - RECORD_HEADER as u64;
                st.pending.truncate(RECORD_HEADER);
            }
            Err(e) => {
                tracing::warn!(
                    log = %self.log_path.display(),
                    error = %e,
                    "store write-ahead log write failed; the next commit flushes the store file in place"
                );
                st.clear_pending();
                st.must_checkpoint = true;
            }
        }
    }

    /// Appends the next record (what was streamed of it, the rest of `st.pending`, then its
    /// header) and flushes the log.
    fn append(&self, st: &mut LogState) -> io::Result<()> {
        let payload_len = st.streamed + (st.pending.len() - RECORD_HEADER) as u64;
        let total = align(RECORD_HEADER as u64 + payload_len);
        if st.end + total > CAPACITY {
            return self.checkpoint(st);
        }
        let (generation, seq) = (st.generation, st.seq);
        let header = &mut st.pending[..RECORD_HEADER];
        header[..4].copy_from_slice(RECORD_MAGIC);
        header[4..12].copy_from_slice(&generation.to_le_bytes());
        header[12..20].copy_from_slice(&seq.to_le_bytes());
        header[20..24].copy_from_slice(&(payload_len as u32).to_le_bytes());
        let mut payload_crc = st.streamed_crc.clone();
        payload_crc.update(&st.pending[RECORD_HEADER..]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&st.pending[4..24]);
        crc.combine(&payload_crc);
        let crc = crc.finalize();
        st.pending[24..28].copy_from_slice(&crc.to_le_bytes());
        if st.end + total > st.written {
            Self::extend(st, st.end + total)?;
        }
        // The padding to the next block is not written: replay reads only what the header
        // says, and the next record starts on the next block.
        if st.streamed == 0 {
            st.log.write_all_at(&st.pending, st.end)?;
        } else {
            // The header last: until it is written, the record's start holds an earlier
            // round's bytes or zeros, and a crash before the flush tears it either way.
            let rest = st.end + RECORD_HEADER as u64 + st.streamed;
            st.log.write_all_at(&st.pending[RECORD_HEADER..], rest)?;
            st.log.write_all_at(&st.pending[..RECORD_HEADER], st.end)?;
        }
        st.log.sync_data()?;
        st.end += total;
        st.seq += 1;
        st.clear_pending();
        Ok(())
    }
}

impl LoggedFile {
    /// Writes zeros from where the log was written so far to at least `to`, in steps that
    /// double (64 KiB up to 4 MiB, never past `CAPACITY`), flushed with the record that needs
    /// them. Why: appending to a file and flushing it also flushes its new length and
    /// extents; on this machine's disk that is ~330 µs per 48 KiB record against ~130 µs
    /// for overwriting written blocks. Until the log has been written to its size once,
    /// every record was such an append; now one record in many pays for the next stretch.
    /// Zeros are never a record (no magic), so replay stops at them as at any dead block.
    fn extend(st: &mut LogState, to: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let step = st.written.clamp(64 * 1024, 4 * 1024 * 1024);
        let target = align(to.max(st.written + step)).min(CAPACITY).max(to);
        let mut at = st.written;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            st.log.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        st.written = target;
        Ok(())
    }
}

impl LogState {
    /// Empties the next record, keeping a modest buffer.
    fn clear_pending(&mut self) {
        self.pending.truncate(RECORD_HEADER);
        self.streamed = 0;
        self.streamed_crc = crc32fast::Hasher::new();
        if self.pending.capacity() > 2 * (RECORD_HEADER + STAGE) {
            self.pending.shrink_to(64 * 1024);
        }
    }
}

impl redb::StorageBackend for LoggedFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.main.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.main.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut st = lock(&self.state);
        self.guarded(&mut st, |this, st| {
            this.main.set_len(len)?;
            this.keep(st, &[&[OP_SET_LEN], &len.to_le_bytes()]);
            Ok(())
        })
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut st = lock(&self.state);
        self.guarded(&mut st, |this, st| {
            if st.must_checkpoint {
                return this.checkpoint(st);
            }
            if st.pending.len() == RECORD_HEADER && st.streamed == 0 {
                return Ok(());
            }
            match this.append(st) {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Every write of the commit is in the redb file already: flushing it in
                    // place makes the commit durable (the log cannot grow on a full disk).
                    tracing::warn!(
                        log = %this.log_path.display(),
                        error = %e,
                        "store write-ahead log append failed; flushing the store file in place"
                    );
                    this.checkpoint(st)
                }
            }
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut st = lock(&self.state);
        self.guarded(&mut st, |this, st| {
            this.main.write_all_at(data, offset)?;
            this.keep(
                st,
                &[
                    &[OP_WRITE],
                    &offset.to_le_bytes(),
                    &(data.len() as u32).to_le_bytes(),
                    data,
                ],
            );
            Ok(())
        })
    }

    fn close(&self) -> Result<(), io::Error> {
        #[cfg(test)]
        if self
            .crash_on_close
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let mut st = lock(&self.state);
        if st.failed.is_some() {
            // The log, not the file, holds the truth: the next open replays it.
            return Ok(());
        }
        let r = self.checkpoint(&mut st);
        if let Err(e) = &r {
            st.failed = Some(e.to_string());
        }
        r
    }
}

/// Reads the start block: the generation, if the block is whole and names this redb file.
fn read_start(main: &File, log: &File, log_path: &Path) -> Result<Option<u64>, WalError> {
    let len = log.metadata().map_err(io_at(log_path))?.len();
    if len < BLOCK {
        return Ok(None);
    }
    let mut block = [0u8; 36];
    log.read_exact_at(&mut block, 0).map_err(io_at(log_path))?;
    if &block[..8] != START_MAGIC {
        return Ok(None);
    }
    let crc = u32::from_le_bytes(block[32..36].try_into().expect("4 bytes"));
    if crc32fast::hash(&block[..32]) != crc {
        // Torn while starting over, which happens only after a checkpoint flushed the redb
        // file: nothing of the log is needed.
        tracing::warn!(log = %log_path.display(), "store write-ahead log start block torn; nothing to replay");
        return Ok(None);
    }
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(block[r].try_into().expect("8 bytes"));
    let (dev, ino) = identity(main).map_err(io_at(log_path))?;
    if (u(16..24), u(24..32)) != (dev, ino) {
        tracing::warn!(
            log = %log_path.display(),
            "store write-ahead log belongs to another store file (the store file was replaced); not replayed"
        );
        return Ok(None);
    }
    Ok(Some(u(8..16)))
}

/// Applies every complete record of the current generation to the redb file, in order, and
/// flushes it.
fn replay(
    main: &File,
    main_path: &Path,
    log: &File,
    log_path: &Path,
) -> Result<Replayed, WalError> {
    let Some(generation) = read_start(main, log, log_path)? else {
        return Ok(Replayed::default());
    };
    let log_len = log.metadata().map_err(io_at(log_path))?.len();
    let mut at = BLOCK;
    let mut seq = 0u64;
    let mut done = Replayed::default();
    let mut payload = Vec::new();
    while at + RECORD_HEADER as u64 <= log_len {
        let mut h = [0u8; RECORD_HEADER];
        log.read_exact_at(&mut h, at).map_err(io_at(log_path))?;
        let g = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
        let s = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(h[20..24].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
        if &h[..4] != RECORD_MAGIC || g != generation || s != seq {
            break;
        }
        if at + RECORD_HEADER as u64 + n > log_len || n > CAPACITY {
            break;
        }
        payload.resize(n as usize, 0);
        log.read_exact_at(&mut payload, at + RECORD_HEADER as u64)
            .map_err(io_at(log_path))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[4..24]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            // The commit the crash cut short: never acknowledged.
            break;
        }
        done.bytes += apply_ops(main, &payload).map_err(|e| match e {
            ApplyError::Io(source) => WalError::Io {
                path: main_path.to_path_buf(),
                source,
            },
            ApplyError::Malformed(message) => WalError::BadRecord {
                path: log_path.to_path_buf(),
                message: format!("record {seq}: {message}"),
            },
        })?;
        done.records += 1;
        seq += 1;
        at = align(at + RECORD_HEADER as u64 + n);
    }
    if done.records > 0 {
        main.sync_data().map_err(io_at(main_path))?;
        tracing::info!(
            store = %main_path.display(),
            records = done.records,
            bytes = done.bytes,
            "replayed the store's write-ahead log after an unclean stop"
        );
    }
    Ok(done)
}

enum ApplyError {
    Io(io::Error),
    Malformed(String),
}

/// Applies one record's operations to `main`; the bytes written.
fn apply_ops(main: &File, mut ops: &[u8]) -> Result<u64, ApplyError> {
    fn take<'a>(ops: &mut &'a [u8], n: usize) -> Result<&'a [u8], ApplyError> {
        if ops.len() < n {
            return Err(ApplyError::Malformed("operation cut short".into()));
        }
        let (head, rest) = ops.split_at(n);
        *ops = rest;
        Ok(head)
    }
    let mut bytes = 0;
    while let Some((&tag, rest)) = ops.split_first() {
        ops = rest;
        match tag {
            OP_WRITE => {
                let offset = u64::from_le_bytes(take(&mut ops, 8)?.try_into().expect("8"));
                let len = u32::from_le_bytes(take(&mut ops, 4)?.try_into().expect("4"));
                let data = take(&mut ops, len as usize)?;
                main.write_all_at(data, offset).map_err(ApplyError::Io)?;
                bytes += u64::from(len);
            }
            OP_SET_LEN => {
                let len = u64::from_le_bytes(take(&mut ops, 8)?.try_into().expect("8"));
                main.set_len(len).map_err(ApplyError::Io)?;
            }
            other => return Err(ApplyError::Malformed(format!("unknown operation {other}"))),
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
