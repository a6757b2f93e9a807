//! RFC 1350 `netascii` on the sending side: a file's bytes as they go on the wire, with
//! LF → CR LF and CR → CR NUL; every other byte is sent as it is (the end-of-line rules of
//! RFC 764 that RFC 1350 points to, which tftp-hpa's client undoes on receipt).
//!
//! The DATA blocks of a netascii transfer are counted over this translated stream:
//! [`encoded_len`] is the length [`ReadTransfer`](super::transfer::ReadTransfer) is started
//! with, and its [`Transmit::Data`] offsets and lengths are positions in the stream. The
//! [`Encoder`] produces any window of the stream without translating the file up to it: it
//! remembers where recent block starts fall in the file (marks), so the glue reads only the
//! file bytes a window needs, from memory or from disk, and never holds a translated copy.
//!
//! Pure: the glue reads the file bytes a [`Plan`] names and hands them back.

use std::collections::BTreeMap;

use super::transfer::Transmit;

/// The wire form of one file byte: the bytes and how many of them count.
fn translate(b: u8) -> ([u8; 2], usize) {
    match b {
        b'\n' => ([b'\r', b'\n'], 2),
        b'\r' => ([b'\r', 0], 2),
        b => ([b, 0], 1),
    }
}

/// The length of the netascii form of `file` (or of a piece of it: lengths add up, since
/// each byte is translated on its own).
pub fn encoded_len(file: &[u8]) -> u64 {
    let line_ends = file.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    (file.len() + line_ends) as u64
}

/// The netascii form of a whole file (for tests and small inputs; transfers use
/// [`Encoder`], which translates one window at a time).
pub fn encode_all(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(file.len());
    for &b in file {
        let (bytes, n) = translate(b);
        out.extend_from_slice(&bytes[..n]);
    }
    out
}

/// What [`Encoder::encode`] needs for one window: the file bytes
/// `file_offset..file_offset + file_len` (fewer at the end of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stream range the window covers.
    pub start: u64,
    pub end: u64,
    /// The mark the translation starts from: this stream position is where file byte
    /// `file_offset` begins.
    mark: u64,
    pub file_offset: u64,
    pub file_len: u64,
}

/// Produces windows of one file's netascii stream for one transfer.
#[derive(Debug, Clone)]
pub struct Encoder {
    blksize: u64,
    /// Stream position → file offset of the file byte starting there, recorded for the
    /// byte in which each block sent so far begins. Position 0 is file offset 0 (implicit).
    marks: BTreeMap<u64, u64>,
}

impl Encoder {
    /// An encoder for a transfer with the negotiated `blksize`.
    pub fn new(blksize: u16) -> Encoder {
        Encoder {
            blksize: u64::from(blksize.max(1)),
            marks: BTreeMap::new(),
        }
    }

    /// Which file bytes the DATA in `out` need; `None` when they carry no bytes.
    pub fn plan(&self, out: &[Transmit]) -> Option<Plan> {
        let (start, end) = out
            .iter()
            .filter_map(|t| match t {
                Transmit::Data { offset, len, .. } => Some((*offset, *offset + *len as u64)),
                Transmit::Packet(_) => None,
            })
            .fold((u64::MAX, 0), |(s, e), (a, b)| (s.min(a), e.max(b)));
        if start >= end {
            return None;
        }
        let (mark, file_offset) = self
            .marks
            .range(..=start)
            .next_back()
            .map_or((0, 0), |(&t, &f)| (t, f));
        Some(Plan {
            start,
            end,
            mark,
            file_offset,
            // Every file byte yields at least one stream byte; one more byte marks where
            // the next window begins.
            file_len: end - mark + 1,
        })
    }

    /// Translates `file` (the bytes `plan` named, or fewer at the end of the file) into the
    /// stream bytes `plan.start..plan.end` (fewer at the end of the file).
    ///
    /// Marks before the plan's start are dropped: a transfer never goes back before its
    /// first unacknowledged block, which is where every window it sends starts.
    pub fn encode(&mut self, plan: &Plan, file: &[u8]) -> Vec<u8> {
        self.marks = self.marks.split_off(&plan.mark);
        let mut out = Vec::with_capacity(usize::try_from(plan.end - plan.start).unwrap_or(0));
        let (mut pos, mut offset) = (plan.mark, plan.file_offset);
        for &b in file {
            let (bytes, n) = translate(b);
            let n = n as u64;
            // A block begins within this byte's translation: remember where (also for the
            // byte just past the window, where the next window begins).
            if pos.div_ceil(self.blksize) * self.blksize < pos + n {
                self.marks.insert(pos, offset);
            }
            if pos >= plan.end {
                break;
            }
            for (i, &c) in (0..n).zip(&bytes) {
                if (plan.start..plan.end).contains(&(pos + i)) {
                    out.push(c);
                }
            }
            pos += n;
            offset += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests;
