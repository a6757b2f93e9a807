//! The netascii translation, and whole netascii transfers: [`ReadTransfer`] counting
//! blocks over the stream and [`Encoder`] producing each window from the file bytes its
//! [`Plan`] names, against a windowed client that loses chosen DATA packets.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::protocol::tftp::transfer::{Limits, ReadTransfer, Status};
use crate::protocol::tftp::wire::{Packet, RequestedOptions};

/// What a netascii client stores (tftp-hpa: CR LF → LF, CR NUL → CR).
fn decode(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        match (stream[i], stream.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.push(b'\n');
                i += 2;
            }
            (b'\r', Some(0)) => {
                out.push(b'\r');
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[test]
fn line_ends_are_translated_as_rfc_1350_says() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"", b""),
        (b"plain", b"plain"),
        (b"a\nb", b"a\r\nb"),
        (b"a\rb", b"a\r\0b"),
        (b"dos\r\n", b"dos\r\0\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"\r\r", b"\r\0\r\0"),
        // Bytes outside 7-bit ASCII and NUL itself go as they are.
        (b"\0\xff\x80\t", b"\0\xff\x80\t"),
    ];
    for (file, wire) in cases {
        assert_eq!(encode_all(file), *wire, "{file:?}");
        assert_eq!(encoded_len(file), wire.len() as u64, "{file:?}");
        assert_eq!(decode(wire), *file, "{file:?}");
    }
}

/// A file with line ends everywhere, including on both sides of 512-byte boundaries.
fn text(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| match (i * 7 + i / 13) % 11 {
            0 => b'\n',
            1 => b'\r',
            2 => 0,
            n => b'a' + n as u8,
        })
        .collect()
}

struct Run {
    stream: Vec<u8>,
    /// Largest number of file bytes a window needed beyond its own stream length.
    max_extra_read: u64,
    max_marks: usize,
    retransmits: u64,
}

/// Serves `file` in netascii with the given options; the client loses the DATA packets
/// whose index (0-based, counting every DATA sent) is in `lose`, acknowledges after a full
/// window, the final short block, a gap (once, the last in-order block) or a duplicate.
fn serve(file: &[u8], blksize: u16, windowsize: u16, lose: &[u64]) -> Run {
    let lose: HashSet<u64> = lose.iter().copied().collect();
    let options = RequestedOptions {
        blksize: Some(blksize),
        windowsize: Some(windowsize),
        ..Default::default()
    };
    let mut now = Duration::from_secs(1);
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(
        now,
        &options,
        encoded_len(file),
        &Limits::default(),
        &mut out,
    );
    let n = t.negotiated();
    let mut enc = Encoder::new(n.blksize);
    let mut run = Run {
        stream: Vec::new(),
        max_extra_read: 0,
        max_marks: 0,
        retransmits: 0,
    };
    let (mut expected, mut in_window, mut seq) = (1u16, 0u16, 0u64);
    let mut gap_acked = false;
    for _ in 0..1_000_000 {
        // What the glue does with one batch: plan, read those file bytes, encode.
        let window = enc.plan(&out).map(|plan| {
            run.max_extra_read = run
                .max_extra_read
                .max(plan.file_len - (plan.end - plan.start));
            let from = usize::try_from(plan.file_offset).unwrap().min(file.len());
            let to = (from + usize::try_from(plan.file_len).unwrap()).min(file.len());
            let bytes = enc.encode(&plan, &file[from..to]);
            run.max_marks = run.max_marks.max(enc.marks.len());
            (plan.start, bytes)
        });
        let mut ack = None;
        for tx in out.drain(..) {
            let Transmit::Data { block, offset, len } = tx else {
                ack = Some(0); // the OACK
                continue;
            };
            // No window: only empty DATA (the final block of a stream of whole blocks).
            let payload = window.as_ref().map_or(&[][..], |(start, bytes)| {
                let at = usize::try_from(offset - start).unwrap();
                &bytes[at.min(bytes.len())..(at + len).min(bytes.len())]
            });
            assert_eq!(payload.len(), len, "block {block} short");
            seq += 1;
            if lose.contains(&(seq - 1)) {
                continue;
            }
            if block == expected {
                run.stream.extend_from_slice(payload);
                expected = expected.wrapping_add(1);
                in_window += 1;
                gap_acked = false;
                if in_window == n.windowsize || len < usize::from(n.blksize) {
                    ack = Some(block);
                    in_window = 0;
                }
            } else if block.wrapping_sub(expected) < 0x8000 {
                if !gap_acked {
                    ack = Some(expected.wrapping_sub(1));
                    gap_acked = true;
                }
                in_window = 0;
            } else {
                ack = Some(expected.wrapping_sub(1)); // a duplicate: re-ACK
                in_window = 0;
            }
        }
        if t.is_finished() {
            break;
        }
        match ack {
            Some(block) => t.handle_packet(now, &Packet::Ack { block }, &mut out),
            None => {
                now = t.poll_at().expect("running transfer has a deadline");
                t.handle_timeout(now, &mut out);
            }
        }
    }
    assert_eq!(t.status(), &Status::Complete);
    run.retransmits = t.stats.retransmits;
    run
}

#[test]
fn transfers_count_blocks_over_the_translated_stream() {
    // (file size, blksize, windowsize, lost DATA)
    let cases: &[(usize, u16, u16, &[u64])] = &[
        (0, 512, 1, &[]),
        (1, 512, 1, &[]),
        (4000, 512, 1, &[]),
        (4000, 512, 1, &[0, 3, 4]),
        (20_000, 512, 8, &[]),
        (20_000, 512, 8, &[2, 9, 10, 17]),
        (20_000, 8, 4, &[1, 100, 101, 102]),
        (50_000, 1468, 16, &[5, 16, 31]),
    ];
    for &(size, blksize, windowsize, lose) in cases {
        let file = text(size);
        let run = serve(&file, blksize, windowsize, lose);
        let what = format!("size {size} blksize {blksize} window {windowsize} lose {lose:?}");
        assert_eq!(run.stream, encode_all(&file), "{what}");
        assert_eq!(decode(&run.stream), file, "{what}");
        assert_eq!(run.retransmits > 0, !lose.is_empty(), "{what}");
        // Each window starts from a mark at its first byte (or the byte before, when a
        // line end straddles the block start), whatever was lost: the file is never
        // re-translated from its start.
        assert!(run.max_extra_read <= 2, "{what}: {}", run.max_extra_read);
        assert!(
            run.max_marks <= usize::from(windowsize) + 2,
            "{what}: {}",
            run.max_marks
        );
    }
}

#[test]
fn line_ends_split_by_a_block_boundary_and_a_final_empty_block() {
    // 511 plain bytes then LF: its CR ends block 1 and its LF begins block 2.
    let mut split = vec![b'x'; 511];
    split.extend_from_slice(b"\nrest\r");
    // 256 LFs: 512 stream bytes exactly, so block 2 is the empty final block.
    let exact = vec![b'\n'; 256];
    for file in [split, exact] {
        for window in [1, 2] {
            let run = serve(&file, 512, window, &[1]);
            assert_eq!(run.stream, encode_all(&file));
            assert_eq!(decode(&run.stream), file);
        }
    }
    let run = serve(&vec![b'\n'; 256], 512, 1, &[]);
    assert_eq!(run.stream.len(), 512);
}

#[test]
fn a_window_asked_again_is_produced_again() {
    let file = text(3000);
    let mut enc = Encoder::new(512);
    let window = |start: u64, blocks: u64| -> Vec<Transmit> {
        (0..blocks)
            .map(|i| Transmit::Data {
                block: u16::try_from(start / 512 + i + 1).unwrap(),
                offset: start + i * 512,
                len: 512,
            })
            .collect()
    };
    let mut get = |out: &[Transmit]| {
        let plan = enc.plan(out).unwrap();
        let from = usize::try_from(plan.file_offset).unwrap();
        let to = (from + usize::try_from(plan.file_len).unwrap()).min(file.len());
        enc.encode(&plan, &file[from..to])
    };
    let all = encode_all(&file);
    let first = get(&window(0, 2));
    assert_eq!(first, all[..1024]);
    let next = get(&window(1024, 2));
    assert_eq!(next, all[1024..2048]);
    // A retransmission of the same window, then a window starting mid-way (a gap).
    assert_eq!(get(&window(1024, 2)), all[1024..2048]);
    assert_eq!(get(&window(1536, 2)), all[1536..2560]);
    // Only DATA count; an OACK alone needs no file bytes.
    assert_eq!(enc.plan(&[Transmit::Packet(vec![0, 6])]), None);
}
