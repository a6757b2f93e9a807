//! Properties of the TFTP core that must hold for ANY input, as functions that panic on a
//! violation. Called by the cargo-fuzz target `fuzz/fuzz_targets/tftp_packet.rs` with fuzzer
//! input and by the bounded fuzz smoke in `cargo test` with generated input.
//!
//! Pure; no IO.

use std::time::Duration;

use super::path;
use super::transfer::{self, Decision, Limits, ReadTransfer, Status, Transmit};
use super::wire::{self, ErrorCode, Packet, RequestedOptions};

/// Decoding never panics; whatever decodes re-encodes to bytes that decode to the same
/// packet; the listener decision and path resolution never panic and never escape.
pub fn check_packet(data: &[u8]) {
    if let Ok(p) = wire::decode(data) {
        let mut buf = Vec::new();
        wire::encode(&p, &mut buf);
        let again = wire::decode(&buf).expect("an encoded packet decodes");
        assert_eq!(again, p, "round trip changed the packet");
        if let Packet::Rrq(r) | Packet::Wrq(r) = &p {
            let _ = RequestedOptions::parse(&r.options);
        }
    }
    match transfer::decide(data) {
        Decision::Read { path, .. } => assert_safe(&path),
        Decision::Refuse { message, .. } => assert!(!message.is_empty()),
        Decision::Ignore => {}
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(p) = path::resolve(s)
    {
        assert_safe(&p);
    }
}

fn assert_safe(p: &std::path::Path) {
    assert!(
        p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_))),
        "path {p:?} can escape the root"
    );
}

/// Drives one read transfer with events decoded from `data` (ACKs with arbitrary or
/// nearby block numbers, timeouts, client errors, raw packets) and checks after every
/// step: DATA stays inside the file and on block boundaries with the right block number,
/// only the final block is short, a finished transfer has no deadline, a running one
/// has a deadline, and completion only follows sending the final block.
///
/// Returns the final status (Running when the events ran out).
pub fn check_transfer(data: &[u8]) -> Status {
    let Some((head, mut events)) = data.split_first_chunk::<8>() else {
        return Status::Running;
    };
    let file_size = u64::from(u32::from_le_bytes([head[0], head[1], head[2], 0])) % 300_000;
    let mut options = RequestedOptions::default();
    if head[3] & 1 != 0 {
        options.blksize = Some(u16::from_le_bytes([head[4], head[5]]).max(wire::MIN_BLKSIZE));
    }
    if head[3] & 2 != 0 {
        options.windowsize = Some(u16::from(head[6]).max(1));
    }
    options.tsize = head[3] & 4 != 0;
    if head[3] & 8 != 0 {
        options.timeout = Some(head[7].max(1));
    }
    let limits = Limits {
        max_retries: 3,
        max_windowsize: 32,
        ..Limits::default()
    };
    let mut now = Duration::from_secs(1);
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(now, &options, file_size, &limits, &mut out);
    let blksize = u64::from(t.negotiated().blksize);
    let mut last_block_sent = 0u16;
    let mut final_sent = false;
    let mut steps = 0;
    loop {
        for tx in out.drain(..) {
            match tx {
                Transmit::Data { block, offset, len } => {
                    let len = len as u64;
                    assert!(len <= blksize, "DATA longer than blksize");
                    assert_eq!(offset % blksize, 0, "DATA off a block boundary");
                    assert!(offset + len <= file_size, "DATA beyond the end of the file");
                    #[allow(clippy::cast_possible_truncation)]
                    let want = (offset / blksize + 1) as u16;
                    assert_eq!(block, want, "wrong block number for offset {offset}");
                    if len < blksize {
                        assert_eq!(offset + len, file_size, "short block before the end");
                        final_sent = true;
                    }
                    last_block_sent = block;
                }
                Transmit::Packet(bytes) => {
                    let p = wire::decode(&bytes).expect("our packets decode");
                    assert!(matches!(p, Packet::Oack { .. } | Packet::Error { .. }));
                }
            }
        }
        match t.status() {
            Status::Running => {
                let at = t.poll_at().expect("a running transfer has a deadline");
                assert!(at > now - Duration::from_nanos(1), "deadline in the past");
            }
            Status::Complete => {
                assert!(final_sent, "complete before the final block was sent");
                assert_eq!(t.poll_at(), None);
                return t.status().clone();
            }
            Status::Failed(_) => {
                assert_eq!(t.poll_at(), None);
                return t.status().clone();
            }
        }
        steps += 1;
        let Some((&tag, rest)) = events.split_first() else {
            return t.status().clone();
        };
        events = rest;
        let mut take2 = || {
            let v = events
                .get(..2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
            events = events.get(2..).unwrap_or(&[]);
            v
        };
        match tag {
            0..=99 => {
                // An ACK near the last block sent: in-window, duplicate or ahead.
                let delta = take2() % 64;
                let block = last_block_sent
                    .wrapping_sub(delta)
                    .wrapping_add(u16::from(tag % 3));
                t.handle_packet(now, &Packet::Ack { block }, &mut out);
            }
            100..=159 => {
                let block = take2();
                t.handle_packet(now, &Packet::Ack { block }, &mut out);
            }
            160..=219 => {
                now = t.poll_at().unwrap_or(now) + Duration::from_millis(u64::from(take2() % 3));
                t.handle_timeout(now, &mut out);
            }
            220..=229 => {
                now += Duration::from_millis(u64::from(take2()));
                t.handle_timeout(now, &mut out);
            }
            230..=239 => t.handle_packet(
                now,
                &Packet::Error {
                    code: ErrorCode::from_u16(take2()),
                    message: String::new(),
                },
                &mut out,
            ),
            _ => {
                let n = usize::from(take2() % 16).min(events.len());
                let (raw, rest) = events.split_at(n);
                events = rest;
                match wire::decode(raw) {
                    Ok(p) => t.handle_packet(now, &p, &mut out),
                    Err(e) => t.handle_malformed(e, &mut out),
                }
            }
        }
        if steps > 100_000 {
            return t.status().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Bounded fuzz smoke for `cargo test`: mutations of real packets plus random bytes
    //! from a seeded xorshift generator (deterministic, ~1 s in a debug build).

    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const SEEDS: &[&[u8]] = &[
        b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00",
        b"\x00\x01/ipxe.efi\x00octet\x00blksize\x001468\x00windowsize\x008\x00",
        b"\x00\x01../../etc/passwd\x00octet\x00",
        b"\x00\x02upload\x00octet\x00tsize\x00123\x00",
        b"\x00\x03\x00\x01hello",
        b"\x00\x04\xff\xff",
        b"\x00\x05\x00\x08option refused\x00",
        b"\x00\x06blksize\x001468\x00tsize\x00850528\x00",
    ];

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                1 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v.truncate(i);
                }
                2 => {
                    let i = rng.below(v.len() + 1);
                    v.insert(i, [0, b'.', b'/', b'\\', 0xff][rng.below(5)]);
                }
                3 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v.remove(i);
                }
                _ => v.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
            }
        }
        v
    }

    #[test]
    fn fuzz_smoke_packets() {
        let mut rng = Rng(0x7f7f_1234_5678_9abc);
        for i in 0..100_000 {
            let input = if i % 4 == 0 {
                (0..rng.below(64)).map(|_| rng.next() as u8).collect()
            } else {
                let seed = SEEDS[rng.below(SEEDS.len())];
                mutate(&mut rng, seed)
            };
            check_packet(&input);
        }
    }

    #[test]
    fn fuzz_smoke_transfers() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (mut complete, mut failed) = (0, 0);
        for _ in 0..2_000 {
            let len = 8 + rng.below(600);
            let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Half the runs: small files and mostly "ACK what was sent", so many finish.
            if rng.below(2) == 0 {
                input[1] = 0;
                input[2] = 0;
                for b in input.iter_mut().skip(8).step_by(3) {
                    *b %= 100;
                }
            }
            match check_transfer(&input) {
                Status::Complete => complete += 1,
                Status::Failed(_) => failed += 1,
                Status::Running => {}
            }
        }
        // The smoke must reach both ends, or it checks little.
        assert!(
            complete > 50 && failed > 50,
            "complete {complete}, failed {failed}"
        );
    }
}
