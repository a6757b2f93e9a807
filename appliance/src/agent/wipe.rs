//! Disk wipes: which byte ranges to zero (pure) and writing the zeros (blocking file I/O on
//! the device node; callers run it off the async runtime).
//!
//! - fast: the first and the last MiB of the disk — the partition table, the protective MBR
//!   and the primary GPT at the start, the backup GPT at the end, and most filesystem
//!   superblocks. (Sidero's fast wipe zeroes only the first MiB after a BLKDISCARD; the backup
//!   GPT survives there. We do not discard: that needs an ioctl, and the crate denies unsafe.)
//! - full: every byte, in [`CHUNK`] writes, with progress after each chunk.
//!
//! Data reaches the disk: the device is opened for writing, written with positioned writes
//! and `fsync`ed before the wipe counts as done.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub const MIB: u64 = 1 << 20;
/// Size of one write of a full wipe.
pub const CHUNK: u64 = 4 * MIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fast,
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Full => "full",
        }
    }
}

/// A byte range `[offset, offset + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
}

/// The ranges a wipe zeroes on a disk of `size` bytes, in ascending order, non-overlapping,
/// each at most [`CHUNK`] long (so progress can be reported between writes).
pub fn ranges(mode: Mode, size: u64) -> Vec<Range> {
    let spans: Vec<(u64, u64)> = match mode {
        Mode::Full => vec![(0, size)],
        Mode::Fast if size <= 2 * MIB => vec![(0, size)],
        Mode::Fast => vec![(0, MIB), (size - MIB, size)],
    };
    let mut out = Vec::new();
    for (start, end) in spans {
        let mut off = start;
        while off < end {
            let len = CHUNK.min(end - off);
            out.push(Range { offset: off, len });
            off += len;
        }
    }
    out
}

/// Total bytes a wipe writes.
pub fn total(ranges: &[Range]) -> u64 {
    ranges.iter().map(|r| r.len).sum()
}

#[derive(Debug, Error)]
pub enum WipeError {
    #[error("open {path} for writing")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("find the size of {path}")]
    Size {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write zeros to {path} at byte {offset}")]
    Write {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("flush {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Zeroes `path` (a block device, or a file in tests) per `mode`; the size is the device's
/// own (seek to end). `progress(bytes_done, bytes_total)` is called after every write.
/// Returns the bytes written.
pub fn wipe(path: &Path, mode: Mode, mut progress: impl FnMut(u64, u64)) -> Result<u64, WipeError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| WipeError::Open {
            path: path.into(),
            source,
        })?;
    let size = f.seek(SeekFrom::End(0)).map_err(|source| WipeError::Size {
        path: path.into(),
        source,
    })?;
    let ranges = ranges(mode, size);
    let total = total(&ranges);
    let zeros = vec![0u8; CHUNK as usize];
    let mut done = 0;
    progress(0, total);
    for r in ranges {
        f.write_all_at(&zeros[..r.len as usize], r.offset)
            .map_err(|source| WipeError::Write {
                path: path.into(),
                offset: r.offset,
                source,
            })?;
        done += r.len;
        progress(done, total);
    }
    f.sync_all().map_err(|source| WipeError::Sync {
        path: path.into(),
        source,
    })?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fast_wipe_covers_first_and_last_mib() {
        let size = 96 * MIB;
        assert_eq!(
            ranges(Mode::Fast, size),
            vec![
                Range {
                    offset: 0,
                    len: MIB
                },
                Range {
                    offset: size - MIB,
                    len: MIB
                }
            ]
        );
        // Small disks are zeroed whole, never twice.
        assert_eq!(
            ranges(Mode::Fast, 3 * 512),
            vec![Range {
                offset: 0,
                len: 1536
            }]
        );
        assert_eq!(
            ranges(Mode::Fast, 2 * MIB),
            vec![Range {
                offset: 0,
                len: 2 * MIB
            }]
        );
        assert!(ranges(Mode::Fast, 0).is_empty());
        // Not MiB-aligned: the last MiB is the real end.
        let odd = 5 * MIB + 512;
        assert_eq!(
            ranges(Mode::Fast, odd)[1],
            Range {
                offset: odd - MIB,
                len: MIB
            }
        );
    }

    #[test]
    fn full_wipe_is_chunked() {
        let r = ranges(Mode::Full, 10 * MIB + 7);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[2],
            Range {
                offset: 8 * MIB,
                len: 2 * MIB + 7
            }
        );
        assert_eq!(total(&r), 10 * MIB + 7);
    }

    proptest! {
        #[test]
        fn ranges_are_ordered_disjoint_bounded(size in 0u64..(1 << 40), full in any::<bool>()) {
            let mode = if full { Mode::Full } else { Mode::Fast };
            if full && size > 64 * CHUNK { return Ok(()); } // keep the vector small
            let r = ranges(mode, size);
            let mut end = 0;
            for x in &r {
                prop_assert!(x.offset >= end && x.len > 0 && x.len <= CHUNK);
                end = x.offset + x.len;
            }
            prop_assert!(end <= size);
            if size > 0 {
                prop_assert_eq!(r[0].offset, 0);
                prop_assert_eq!(end, size);
            }
            if !full {
                prop_assert_eq!(total(&r), size.min(2 * MIB));
            }
        }
    }

    fn patterned(path: &Path, size: usize) {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn fast_wipe_of_a_file_zeroes_only_the_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let size = 5 * MIB as usize;
        patterned(&p, size);
        let mut calls = Vec::new();
        let n = wipe(&p, Mode::Fast, |d, t| calls.push((d, t))).unwrap();
        assert_eq!(n, 2 * MIB);
        assert_eq!(
            calls,
            vec![(0, 2 * MIB), (MIB, 2 * MIB), (2 * MIB, 2 * MIB)]
        );
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), size, "the file did not grow");
        let m = MIB as usize;
        assert!(data[..m].iter().all(|b| *b == 0));
        assert!(data[size - m..].iter().all(|b| *b == 0));
        assert!(data[m..size - m].iter().all(|b| *b != 0));
    }

    #[test]
    fn full_wipe_of_a_file_zeroes_everything_with_progress() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let size = 9 * MIB as usize + 512;
        patterned(&p, size);
        let mut last = (0, 0);
        let mut calls = 0;
        wipe(&p, Mode::Full, |d, t| {
            assert!(d >= last.0);
            last = (d, t);
            calls += 1;
        })
        .unwrap();
        assert_eq!(last, (size as u64, size as u64));
        assert_eq!(calls, 4);
        assert!(std::fs::read(&p).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn errors_name_the_device() {
        let e = wipe(Path::new("/nonexistent/vdz"), Mode::Fast, |_, _| {}).unwrap_err();
        assert!(matches!(e, WipeError::Open { .. }));
        assert!(e.to_string().contains("/nonexistent/vdz"), "{e}");
    }
}
