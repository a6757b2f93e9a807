//! Table-driven tests of the read-transfer machine against a simulated RFC 1350/7440
//! client on a virtual clock, with chosen packets lost.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::protocol::tftp::wire::decode;

const T0: Duration = Duration::from_secs(1000);

fn file(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn opts(blksize: Option<u16>, windowsize: Option<u16>, tsize: bool) -> RequestedOptions {
    RequestedOptions {
        blksize,
        windowsize,
        tsize,
        ..Default::default()
    }
}

/// A client as RFC 7440 describes it: ACKs after `windowsize` in-order blocks or the
/// final short block; on a gap (a block ahead of the expected one) it ACKs the last
/// in-order block once and drops the rest.
struct Client {
    blksize: usize,
    windowsize: u16,
    expected: u16,
    in_window: u16,
    gap_acked: bool,
    data: Vec<u8>,
    done: bool,
    oacks: Vec<Vec<RawOption>>,
}

impl Client {
    fn new() -> Client {
        Client {
            blksize: 512,
            windowsize: 1,
            expected: 1,
            in_window: 0,
            gap_acked: false,
            data: Vec::new(),
            done: false,
            oacks: Vec::new(),
        }
    }

    fn on_data(&mut self, block: u16, payload: &[u8]) -> Option<u16> {
        if self.done {
            // Dallying (RFC 1350): re-ACK the final block.
            return Some(self.expected.wrapping_sub(1));
        }
        // A block from the past (a retransmission of something we have): lock-step
        // clients re-ACK it (RFC 1350); windowed ones drop it silently.
        if block.wrapping_sub(self.expected) > 0x8000 {
            return (self.windowsize == 1).then(|| self.expected.wrapping_sub(1));
        }
        if block != self.expected {
            if self.gap_acked {
                return None;
            }
            self.gap_acked = true;
            self.in_window = 0;
            return Some(self.expected.wrapping_sub(1));
        }
        self.gap_acked = false;
        self.data.extend_from_slice(payload);
        self.expected = self.expected.wrapping_add(1);
        self.in_window += 1;
        if payload.len() < self.blksize {
            self.done = true;
            return Some(block);
        }
        if self.in_window == self.windowsize {
            self.in_window = 0;
            return Some(block);
        }
        None
    }
}

struct Outcome {
    status: Status,
    data: Vec<u8>,
    stats: TransferStats,
    /// Virtual time the transfer took.
    elapsed: Duration,
    oacks: Vec<Vec<RawOption>>,
    sent_blocks: Vec<u16>,
}

/// Runs one transfer. `lose` holds indices (0-based, counting every DATA the server
/// emits) of DATA packets that never arrive; `lose_acks` the same for client ACKs.
fn run(
    content: &[u8],
    options: RequestedOptions,
    limits: &Limits,
    lose: &[u64],
    lose_acks: &[u64],
) -> Outcome {
    let lose: HashSet<u64> = lose.iter().copied().collect();
    let lose_acks: HashSet<u64> = lose_acks.iter().copied().collect();
    let mut client = Client::new();
    let mut out = Vec::new();
    let mut now = T0;
    let mut t = ReadTransfer::start(now, &options, content.len() as u64, limits, &mut out);
    let mut data_seq = 0u64;
    let mut ack_seq = 0u64;
    let mut sent_blocks = Vec::new();
    for _round in 0..10_000_000 {
        let mut acks = Vec::new();
        for tx in out.drain(..) {
            match tx {
                Transmit::Packet(bytes) => match decode(&bytes).unwrap() {
                    Packet::Oack { options } => {
                        for o in &options {
                            match o.name.as_str() {
                                "blksize" => client.blksize = o.value.parse().unwrap(),
                                "windowsize" => client.windowsize = o.value.parse().unwrap(),
                                _ => {}
                            }
                        }
                        client.oacks.push(options);
                        acks.push(0);
                    }
                    Packet::Error { .. } => {}
                    p => panic!("server sent {p:?}"),
                },
                Transmit::Data { block, offset, len } => {
                    sent_blocks.push(block);
                    let seq = data_seq;
                    data_seq += 1;
                    if lose.contains(&seq) {
                        continue;
                    }
                    let start = usize::try_from(offset).unwrap();
                    let payload = &content[start..start + len];
                    if let Some(a) = client.on_data(block, payload) {
                        acks.push(a);
                    }
                }
            }
        }
        if t.is_finished() {
            break;
        }
        let mut delivered = false;
        for a in acks {
            let seq = ack_seq;
            ack_seq += 1;
            if lose_acks.contains(&seq) {
                continue;
            }
            delivered = true;
            t.handle_packet(now, &Packet::Ack { block: a }, &mut out);
        }
        if !delivered && out.is_empty() && !t.is_finished() {
            now = t.poll_at().expect("a running transfer has a deadline");
            t.handle_timeout(now, &mut out);
        }
    }
    Outcome {
        status: t.status().clone(),
        data: client.data,
        stats: t.stats,
        elapsed: now - T0,
        oacks: client.oacks,
        sent_blocks,
    }
}

struct Case {
    name: &'static str,
    size: usize,
    options: RequestedOptions,
    lose: &'static [u64],
    lose_acks: &'static [u64],
    /// Expected DATA packets sent, retransmissions, virtual seconds.
    want_sent: u64,
    want_retransmits: u64,
    want_secs: u64,
}

#[test]
fn transfers_complete_with_the_right_bytes() {
    let limits = Limits::default();
    let cases = [
        Case {
            name: "plain 512, lock-step",
            size: 512 * 3 + 100,
            options: opts(None, None, false),
            lose: &[],
            lose_acks: &[],
            want_sent: 4,
            want_retransmits: 0,
            want_secs: 0,
        },
        Case {
            name: "exact multiple of 512 ends with an empty block",
            size: 1024,
            options: opts(None, None, false),
            lose: &[],
            lose_acks: &[],
            want_sent: 3,
            want_retransmits: 0,
            want_secs: 0,
        },
        Case {
            name: "empty file",
            size: 0,
            options: opts(None, None, false),
            lose: &[],
            lose_acks: &[],
            want_sent: 1,
            want_retransmits: 0,
            want_secs: 0,
        },
        Case {
            name: "blksize 1468 (ipxe.efi size)",
            size: 850_528,
            options: opts(Some(1468), None, true),
            lose: &[],
            lose_acks: &[],
            want_sent: 850_528 / 1468 + 1,
            want_retransmits: 0,
            want_secs: 0,
        },
        Case {
            name: "windowsize 8, no loss",
            size: 1468 * 20 + 1,
            options: opts(Some(1468), Some(8), false),
            lose: &[],
            lose_acks: &[],
            want_sent: 21,
            want_retransmits: 0,
            want_secs: 0,
        },
        Case {
            // Blocks 1..8 go out; block 4 (index 3) is lost; the client ACKs 3 on seeing 5,
            // the server resends 4..11 at once, no timeout needed.
            name: "windowsize 8, block in the middle lost",
            size: 1468 * 20 + 1,
            options: opts(Some(1468), Some(8), false),
            lose: &[3],
            lose_acks: &[],
            want_sent: 21 + 5,
            want_retransmits: 5,
            want_secs: 0,
        },
        Case {
            // The last block of the first window is lost: the client has 1..7 and ACKs
            // nothing; the server times out after 1 s and resends 1..8; the client drops
            // 1..7 as old, takes 8 and ACKs the full window.
            name: "windowsize 8, last block of a window lost",
            size: 1468 * 20 + 1,
            options: opts(Some(1468), Some(8), false),
            lose: &[7],
            lose_acks: &[],
            want_sent: 21 + 8,
            want_retransmits: 8,
            want_secs: 1,
        },
        Case {
            name: "lock-step DATA lost: retransmit after the timeout",
            size: 2000,
            options: opts(None, None, false),
            lose: &[1],
            lose_acks: &[],
            want_sent: 5,
            want_retransmits: 1,
            want_secs: 1,
        },
        Case {
            name: "ACK lost: retransmit, duplicate DATA re-ACKed by the client",
            size: 2000,
            options: opts(None, None, false),
            lose: &[],
            lose_acks: &[1],
            want_sent: 5,
            want_retransmits: 1,
            want_secs: 1,
        },
        Case {
            name: "OACK lost: the OACK is resent",
            size: 100,
            options: opts(Some(1024), None, true),
            lose: &[],
            lose_acks: &[0],
            want_sent: 1,
            want_retransmits: 0,
            want_secs: 1,
        },
    ];
    for c in cases {
        let content = file(c.size);
        let o = run(&content, c.options, &limits, c.lose, c.lose_acks);
        assert_eq!(o.status, Status::Complete, "{}", c.name);
        assert!(o.data == content, "{}: bytes differ", c.name);
        assert_eq!(
            (o.stats.data_sent, o.stats.retransmits, o.elapsed.as_secs()),
            (c.want_sent, c.want_retransmits, c.want_secs),
            "{}: (sent, retransmits, seconds)",
            c.name
        );
    }
}

#[test]
fn block_numbers_wrap_past_65535() {
    // 70,000 blocks of 8 bytes: block numbers go ..65535, 0, 1, ..
    let content = file(8 * 70_000 + 3);
    let o = run(
        &content,
        opts(Some(8), Some(16), false),
        &Limits::default(),
        &[65_540],
        &[],
    );
    assert_eq!(o.status, Status::Complete);
    assert!(o.data == content);
    let i = o.sent_blocks.iter().position(|&b| b == 65535).unwrap();
    assert_eq!(o.sent_blocks[i + 1], 0);
    assert_eq!(*o.sent_blocks.last().unwrap(), (70_001 % 65_536) as u16);
}

#[test]
fn oack_reports_tsize_and_granted_values() {
    let content = file(850_528);
    let limits = Limits {
        max_blksize: 1468,
        max_windowsize: 16,
        ..Limits::default()
    };
    let mut options = opts(Some(8192), Some(64), true);
    options.timeout = Some(3);
    let o = run(&content, options, &limits, &[], &[]);
    assert_eq!(o.status, Status::Complete);
    let got: Vec<(String, String)> = o.oacks[0]
        .iter()
        .map(|o| (o.name.clone(), o.value.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("blksize", "1468"),
        ("timeout", "3"),
        ("tsize", "850528"),
        ("windowsize", "16"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn negotiated_timeout_is_used_for_retransmission() {
    let mut options = opts(None, None, false);
    options.timeout = Some(5);
    let o = run(&file(100), options, &Limits::default(), &[0], &[]);
    assert_eq!(o.status, Status::Complete);
    assert_eq!(o.elapsed, Duration::from_secs(5));
}

#[test]
fn unknown_and_invalid_options_are_left_out_of_the_oack() {
    // Only unusable options: no OACK at all, plain transfer with 512-byte blocks.
    let raw = [
        RawOption {
            name: "blksize".into(),
            value: "4".into(),
        },
        RawOption {
            name: "multicast".into(),
            value: "".into(),
        },
    ];
    let options = RequestedOptions::parse(&raw);
    assert_eq!(options.ignored.len(), 2);
    let mut out = Vec::new();
    let t = ReadTransfer::start(T0, &options, 1000, &Limits::default(), &mut out);
    assert!(!t.negotiated().oack);
    assert_eq!(
        out,
        vec![Transmit::Data {
            block: 1,
            offset: 0,
            len: 512
        }]
    );
}

#[test]
fn client_refusing_the_oack_ends_the_transfer() {
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(
        T0,
        &opts(Some(1468), None, true),
        1000,
        &Limits::default(),
        &mut out,
    );
    assert!(matches!(out[0], Transmit::Packet(_)));
    out.clear();
    t.handle_packet(
        T0,
        &Packet::Error {
            code: ErrorCode::OptionNegotiation,
            message: "no".into(),
        },
        &mut out,
    );
    assert!(out.is_empty(), "an ERROR is never answered");
    assert!(matches!(
        t.status(),
        Status::Failed(ReadTransferError::Peer {
            code: ErrorCode::OptionNegotiation,
            ..
        })
    ));
    assert_eq!(t.poll_at(), None);
}

#[test]
fn duplicate_and_bogus_acks_are_ignored() {
    let limits = Limits::default();
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(T0, &opts(None, None, false), 2000, &limits, &mut out);
    out.clear();
    t.handle_packet(T0, &Packet::Ack { block: 1 }, &mut out);
    assert_eq!(out.len(), 1, "block 2 sent");
    out.clear();
    // Duplicate ACK 1 (Sorcerer's Apprentice): nothing is resent.
    for _ in 0..3 {
        t.handle_packet(T0, &Packet::Ack { block: 1 }, &mut out);
    }
    // ACK for a block never sent, and ACK 0 without OACK.
    t.handle_packet(T0, &Packet::Ack { block: 9 }, &mut out);
    t.handle_packet(T0, &Packet::Ack { block: 0 }, &mut out);
    assert!(out.is_empty());
    assert_eq!(t.stats.ignored_acks, 5);
    assert_eq!(*t.status(), Status::Running);
    // During OACK negotiation, an ACK other than 0 is ignored too.
    let mut t = ReadTransfer::start(T0, &opts(Some(1024), None, false), 10, &limits, &mut out);
    out.clear();
    t.handle_packet(T0, &Packet::Ack { block: 1 }, &mut out);
    assert!(out.is_empty());
}

#[test]
fn gives_up_after_max_retries_and_tells_the_client() {
    let limits = Limits {
        max_retries: 3,
        ..Limits::default()
    };
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(T0, &opts(None, None, false), 2000, &limits, &mut out);
    let mut now = T0;
    // Early calls do nothing.
    out.clear();
    t.handle_timeout(now + Duration::from_millis(999), &mut out);
    assert!(out.is_empty());
    for _ in 0..3 {
        now = t.poll_at().unwrap();
        t.handle_timeout(now, &mut out);
        assert_eq!(
            std::mem::take(&mut out),
            vec![Transmit::Data {
                block: 1,
                offset: 0,
                len: 512
            }]
        );
    }
    now = t.poll_at().unwrap();
    assert_eq!(now, T0 + Duration::from_secs(4));
    t.handle_timeout(now, &mut out);
    assert_eq!(out.len(), 1);
    let Transmit::Packet(bytes) = &out[0] else {
        panic!()
    };
    assert!(matches!(
        decode(bytes).unwrap(),
        Packet::Error {
            code: ErrorCode::NotDefined,
            ..
        }
    ));
    assert_eq!(
        *t.status(),
        Status::Failed(ReadTransferError::TimedOut { retries: 3 })
    );
    assert_eq!(t.poll_at(), None);
}

#[test]
fn illegal_and_malformed_packets_end_the_transfer_with_an_error() {
    let limits = Limits::default();
    let illegal: [Packet<'_>; 3] = [
        Packet::Data {
            block: 1,
            data: b"x",
        },
        Packet::Rrq(wire::Request {
            filename: "f".into(),
            mode: Mode::Octet,
            options: vec![],
        }),
        Packet::Oack { options: vec![] },
    ];
    for p in illegal {
        let mut out = Vec::new();
        let mut t = ReadTransfer::start(T0, &opts(None, None, false), 10, &limits, &mut out);
        out.clear();
        t.handle_packet(T0, &p, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(
            t.status(),
            Status::Failed(ReadTransferError::Illegal(_))
        ));
        // Once finished, nothing more happens.
        out.clear();
        t.handle_packet(T0, &Packet::Ack { block: 1 }, &mut out);
        t.handle_timeout(T0 + Duration::from_secs(60), &mut out);
        assert!(out.is_empty());
    }
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(T0, &opts(None, None, false), 10, &limits, &mut out);
    out.clear();
    t.handle_malformed(DecodePacketError::TooShort(1), &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        t.status(),
        Status::Failed(ReadTransferError::Malformed(_))
    ));
}

#[test]
fn decide_table() {
    fn rrq(name: &str, mode: &str, opts: &str) -> Vec<u8> {
        let mut v = vec![0, 1];
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        v.extend_from_slice(mode.as_bytes());
        v.push(0);
        v.extend_from_slice(opts.as_bytes());
        v
    }
    let refuse = |code: ErrorCode| move |d: &Decision| matches!(d, Decision::Refuse { code: c, .. } if *c == code);
    let read = |path: &'static str| move |d: &Decision| matches!(d, Decision::Read { path: p, .. } if p == std::path::Path::new(path));
    type Check = Box<dyn Fn(&Decision) -> bool>;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "plain RRQ",
            rrq("ipxe.efi", "octet", ""),
            Box::new(read("ipxe.efi")),
        ),
        (
            "leading slash",
            rrq("/undionly.kpxe", "OCTET", "blksize\x001468\x00"),
            Box::new(read("undionly.kpxe")),
        ),
        (
            "traversal",
            rrq("../../etc/passwd", "octet", ""),
            Box::new(refuse(ErrorCode::AccessViolation)),
        ),
        (
            "netascii served",
            rrq("f.txt", "NetASCII", ""),
            Box::new(
                |d: &Decision| matches!(d, Decision::Read { mode: Mode::Netascii, path, .. } if path == std::path::Path::new("f.txt")),
            ),
        ),
        (
            "netascii offers no tsize",
            rrq("f.txt", "netascii", "tsize\x000\x00blksize\x001024\x00"),
            Box::new(|d: &Decision| {
                matches!(d, Decision::Read { options, .. }
                    if !options.tsize && options.blksize == Some(1024) && options.ignored.len() == 1)
            }),
        ),
        (
            "octet keeps tsize",
            rrq("f.txt", "octet", "tsize\x000\x00"),
            Box::new(|d: &Decision| matches!(d, Decision::Read { options, .. } if options.tsize)),
        ),
        (
            "mail refused",
            rrq("f", "mail", ""),
            Box::new(refuse(ErrorCode::IllegalOperation)),
        ),
        (
            "slash only",
            rrq("/", "octet", ""),
            Box::new(refuse(ErrorCode::FileNotFound)),
        ),
        (
            "WRQ",
            {
                let mut v = rrq("f", "octet", "");
                v[1] = 2;
                v
            },
            Box::new(refuse(ErrorCode::AccessViolation)),
        ),
        (
            "ACK on the listening port",
            vec![0, 4, 0, 1],
            Box::new(refuse(ErrorCode::IllegalOperation)),
        ),
        (
            "garbage",
            vec![0xde, 0xad, 0xbe, 0xef],
            Box::new(refuse(ErrorCode::IllegalOperation)),
        ),
        (
            "empty datagram",
            vec![],
            Box::new(refuse(ErrorCode::IllegalOperation)),
        ),
        (
            "ERROR is not answered",
            vec![0, 5, 0, 0, 0],
            Box::new(|d: &Decision| *d == Decision::Ignore),
        ),
        (
            "broken ERROR is not answered",
            vec![0, 5, 0],
            Box::new(|d: &Decision| *d == Decision::Ignore),
        ),
    ];
    for (name, bytes, check) in cases {
        let d = decide(&bytes);
        assert!(check(&d), "{name}: {d:?}");
    }
}

#[test]
fn a_paced_transfer_holds_each_window_for_the_interval_and_runs_free_when_released() {
    let pace = Duration::from_secs(1);
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(
        T0,
        &opts(Some(1432), None, true),
        1432 * 5 + 7,
        &Limits::default(),
        &mut out,
    );
    t.set_pace(T0, Some(pace), &mut out);
    assert!(t.paced());
    // The OACK goes out at once, before any pacing.
    assert!(
        matches!(&out[..], [Transmit::Packet(p)] if matches!(decode(p), Ok(Packet::Oack { .. })))
    );
    out.clear();
    // ACK 0 right away: block 1 waits for the interval.
    let ms = Duration::from_millis;
    t.handle_packet(T0 + ms(5), &Packet::Ack { block: 0 }, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(t.poll_at(), Some(T0 + pace));
    // The client's retransmitted ACK 0 changes nothing (no Sorcerer's Apprentice).
    t.handle_packet(T0 + ms(255), &Packet::Ack { block: 0 }, &mut out);
    t.handle_timeout(T0 + ms(999), &mut out);
    assert!(out.is_empty(), "{out:?}");
    t.handle_timeout(T0 + pace, &mut out);
    assert_eq!(
        out,
        vec![Transmit::Data {
            block: 1,
            offset: 0,
            len: 1432
        }]
    );
    out.clear();
    // Block 1 is lost: it is retransmitted on the normal deadline, counted as such.
    t.handle_timeout(T0 + pace + Duration::from_secs(1), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(t.stats.retransmits, 1);
    out.clear();
    // ACK 1 arrives 10 ms after the retransmission, a full interval after block 1 first
    // went out: block 2 goes at once.
    let at = T0 + pace + Duration::from_secs(1) + ms(10);
    t.handle_packet(at, &Packet::Ack { block: 1 }, &mut out);
    assert_eq!(
        out,
        vec![Transmit::Data {
            block: 2,
            offset: 1432,
            len: 1432
        }]
    );
    out.clear();
    // ACK 2 at once: block 3 waits for the interval after block 2.
    t.handle_packet(at + ms(10), &Packet::Ack { block: 2 }, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(t.poll_at(), Some(at + pace));
    // Released (a full-speed slot freed): the held block goes at once, the rest as fast
    // as the client ACKs.
    t.set_pace(at + ms(20), None, &mut out);
    assert!(!t.paced());
    assert_eq!(
        out,
        vec![Transmit::Data {
            block: 3,
            offset: 2 * 1432,
            len: 1432
        }]
    );
    for block in 3..=5 {
        out.clear();
        t.handle_packet(at + ms(21), &Packet::Ack { block }, &mut out);
        assert_eq!(out.len(), 1, "block {} at once", block + 1);
    }
    t.handle_packet(at + ms(22), &Packet::Ack { block: 6 }, &mut out);
    assert_eq!(*t.status(), Status::Complete);
}

/// iPXE's retry timer (`src/net/retry.c`) as its TFTP client runs it: a timeout of at
/// least 0.25 s, doubled on every expiry; the transfer fails when it would pass 10 s. A
/// packet received decrements the expiry count, or, with no expiry outstanding, smooths
/// the timeout toward four round trips (`t := 7t/8 + rtt/2`).
#[derive(Debug, Clone, Copy)]
struct IpxeTimer {
    timeout: Duration,
    count: u32,
    started: Duration,
    deadline: Option<Duration>,
}

impl IpxeTimer {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> IpxeTimer {
        IpxeTimer {
            timeout: Self::MIN,
            count: 0,
            started: Duration::ZERO,
            deadline: None,
        }
    }

    fn start(&mut self, now: Duration) {
        self.timeout = self.timeout.clamp(Self::MIN, Self::MAX);
        self.started = now;
        self.deadline = Some(now + self.timeout);
    }

    fn stop(&mut self, now: Duration) {
        if self.deadline.take().is_none() {
            return;
        }
        if self.count > 0 {
            self.count -= 1;
        } else {
            self.timeout = self.timeout - self.timeout / 8 + (now - self.started) / 2;
        }
    }

    /// `true`: the client gives up.
    fn expire(&mut self) -> bool {
        self.deadline = None;
        self.count += 1;
        self.timeout *= 2;
        if self.timeout > Self::MAX {
            self.timeout = Self::MAX;
            return true;
        }
        false
    }
}

/// How the server treats a read request that finds every full-speed slot taken.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Waiting {
    /// Started at once and paced (one window per interval) until a slot frees.
    Paced(Duration),
    /// Kept in a queue without an answer until a slot frees (the box before pacing).
    Silent,
}

#[derive(Debug, Default)]
struct StormResult {
    completed: usize,
    /// `(client, block it waited for)` of every client that gave up.
    gave_up: Vec<(usize, u16)>,
    data_sent: u64,
    retransmits: u64,
    /// The longest a client waited for the server's next packet.
    longest_silence: Duration,
    /// The largest retry timeout any client reached.
    largest_timeout: Duration,
    /// Virtual time when the last client finished.
    end: Duration,
}

/// `clients` lock-step iPXE clients (blksize 1432, tsize) read a `blocks`-block file; the
/// k-th sends its RRQ at `k * spread / clients`; every packet takes `delay` each way; the
/// server runs `slots` transfers at full speed and treats the rest as `waiting` says,
/// releasing the oldest waiter whenever a transfer ends. Event-driven on a virtual clock.
fn storm(
    clients: usize,
    blocks: u64,
    slots: usize,
    waiting: Waiting,
    spread: Duration,
    delay: Duration,
) -> StormResult {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        /// A client's packet reaches the server (`None`: the RRQ, else an ACK).
        ToServer(usize, Option<u16>),
        /// A server packet reaches the client.
        ToClient(usize, Vec<u8>),
        ClientTimer(usize),
        ServerPoll(usize),
    }
    struct C {
        timer: IpxeTimer,
        /// What it would retransmit (`None`: the RRQ).
        last: Option<u16>,
        expect: u16,
        got: u64,
        last_heard: Duration,
        done: bool,
        failed: bool,
    }
    let size = 1432 * blocks - 100;
    let limits = Limits::default();
    let options = opts(Some(1432), None, true);
    let mut clients_st: Vec<C> = (0..clients)
        .map(|_| C {
            timer: IpxeTimer::new(),
            last: None,
            expect: 1,
            got: 0,
            last_heard: Duration::ZERO,
            done: false,
            failed: false,
        })
        .collect();
    let mut transfers: Vec<Option<ReadTransfer>> = (0..clients).map(|_| None).collect();
    let mut queued: VecDeque<usize> = VecDeque::new();
    let mut queued_set: HashSet<usize> = HashSet::new();
    let mut running = 0usize;
    type Events = BinaryHeap<Reverse<(Duration, u64, Ev)>>;
    let mut ev: Events = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |ev: &mut Events, at: Duration, e: Ev| {
        seq += 1;
        ev.push(Reverse((at, seq, e)));
    };
    let mut r = StormResult::default();
    for (k, c) in clients_st.iter_mut().enumerate() {
        let at = spread * u32::try_from(k).unwrap() / u32::try_from(clients).unwrap();
        c.last_heard = at;
        c.timer.start(at);
        push(&mut ev, at + delay, Ev::ToServer(k, None));
        push(&mut ev, at + IpxeTimer::MIN, Ev::ClientTimer(k));
    }
    // Sends what the transfer put in `out` and schedules its next poll.
    let flush = |k: usize,
                 now: Duration,
                 t: &ReadTransfer,
                 out: &mut Vec<Transmit>,
                 ev: &mut Events,
                 push: &mut dyn FnMut(&mut Events, Duration, Ev)| {
        for tx in out.drain(..) {
            let bytes = match tx {
                Transmit::Packet(p) => p,
                Transmit::Data { block, len, .. } => {
                    let mut b = Vec::new();
                    wire::encode_data_header(block, &mut b, &vec![0u8; len]);
                    b
                }
            };
            push(ev, now + delay, Ev::ToClient(k, bytes));
        }
        if let Some(at) = t.poll_at() {
            push(ev, at, Ev::ServerPoll(k));
        }
    };
    let mut out = Vec::new();
    while let Some(Reverse((now, _, e))) = ev.pop() {
        let mut ended = None;
        match e {
            Ev::ToServer(k, None) => {
                if transfers[k].is_some() || queued_set.contains(&k) {
                    continue; // a retransmitted RRQ
                }
                if running < slots {
                    running += 1;
                } else if waiting == Waiting::Silent {
                    queued.push_back(k);
                    queued_set.insert(k);
                    continue;
                } else {
                    queued.push_back(k);
                    queued_set.insert(k);
                }
                let mut t = ReadTransfer::start(now, &options, size, &limits, &mut out);
                if let (Waiting::Paced(p), true) = (waiting, queued_set.contains(&k)) {
                    t.set_pace(now, Some(p), &mut out);
                }
                flush(k, now, &t, &mut out, &mut ev, &mut push);
                transfers[k] = Some(t);
            }
            Ev::ToServer(k, Some(block)) => {
                let Some(t) = transfers[k].as_mut() else {
                    continue;
                };
                t.handle_packet(now, &Packet::Ack { block }, &mut out);
                flush(k, now, t, &mut out, &mut ev, &mut push);
                if t.is_finished() {
                    ended = Some(k);
                }
            }
            Ev::ServerPoll(k) => {
                let Some(t) = transfers[k].as_mut() else {
                    continue;
                };
                if t.poll_at() != Some(now) {
                    continue; // superseded
                }
                t.handle_timeout(now, &mut out);
                flush(k, now, t, &mut out, &mut ev, &mut push);
                if t.is_finished() {
                    ended = Some(k);
                }
            }
            Ev::ToClient(k, bytes) => {
                let c = &mut clients_st[k];
                if c.done || c.failed {
                    continue;
                }
                let ack = match decode(&bytes).unwrap() {
                    Packet::Oack { .. } if c.expect == 1 => Some(0),
                    Packet::Data { block, data } if block == c.expect => {
                        c.got += data.len() as u64;
                        c.expect = c.expect.wrapping_add(1);
                        if data.len() < 1432 {
                            c.done = true;
                            r.completed += 1;
                            r.end = r.end.max(now);
                        }
                        Some(block)
                    }
                    // A duplicate: ACKed again.
                    _ => Some(c.expect.wrapping_sub(1)),
                };
                r.longest_silence = r.longest_silence.max(now - c.last_heard);
                c.last_heard = now;
                c.timer.stop(now);
                c.last = ack;
                push(&mut ev, now + delay, Ev::ToServer(k, ack));
                if !c.done {
                    c.timer.start(now);
                    push(&mut ev, c.timer.deadline.unwrap(), Ev::ClientTimer(k));
                }
            }
            Ev::ClientTimer(k) => {
                let c = &mut clients_st[k];
                if c.done || c.failed || c.timer.deadline != Some(now) {
                    continue;
                }
                if c.timer.expire() {
                    c.failed = true;
                    r.gave_up.push((k, c.expect));
                    continue;
                }
                r.largest_timeout = r.largest_timeout.max(c.timer.timeout);
                push(&mut ev, now + delay, Ev::ToServer(k, c.last));
                c.timer.start(now);
                push(&mut ev, c.timer.deadline.unwrap(), Ev::ClientTimer(k));
            }
        }
        if let Some(k) = ended {
            let t = transfers[k].as_ref().unwrap();
            r.data_sent += t.stats.data_sent;
            r.retransmits += t.stats.retransmits;
            if queued_set.remove(&k) {
                queued.retain(|&q| q != k); // ended while waiting (paced)
                continue;
            }
            running -= 1;
            // The oldest waiter takes the slot.
            if let Some(next) = queued.pop_front() {
                queued_set.remove(&next);
                running += 1;
                match transfers[next].as_mut() {
                    Some(t) => {
                        t.set_pace(now, None, &mut out);
                        flush(next, now, t, &mut out, &mut ev, &mut push);
                    }
                    None => {
                        let t = ReadTransfer::start(now, &options, size, &limits, &mut out);
                        flush(next, now, &t, &mut out, &mut ev, &mut push);
                        transfers[next] = Some(t);
                    }
                }
            }
        }
    }
    r
}

#[test]
fn a_storm_of_waiting_ipxe_clients_all_complete_when_paced_and_time_out_when_kept_silent() {
    // 300 clients power on within 2 s; 8 full-speed slots; 100 blocks each at 10 ms a
    // round trip: one slot-full finishes every second, the last client waits ~37 s.
    let ms = Duration::from_millis;
    let silent = storm(300, 100, 8, Waiting::Silent, ms(2000), ms(5));
    assert!(
        silent.gave_up.len() > 100,
        "kept silent, the clients behind the first ~16 s of work give up: {silent:?}"
    );
    assert!(silent.gave_up.iter().all(|&(_, block)| block == 1));

    let paced = storm(300, 100, 8, Waiting::Paced(ms(1000)), ms(2000), ms(5));
    assert_eq!(paced.gave_up, vec![], "{paced:?}");
    assert_eq!(paced.completed, 300);
    // Each block went out once: the waiting clients' retransmitted ACKs never made the
    // server resend (no Sorcerer's Apprentice), and nothing was lost.
    assert_eq!(
        (paced.data_sent, paced.retransmits),
        (300 * 100, 0),
        "{paced:?}"
    );
    // A waiting client hears the server at least once a pace interval (plus the round
    // trip), and its retry timer settles well below iPXE's 10 s limit.
    assert!(paced.longest_silence <= ms(1020), "{paced:?}");
    assert!(paced.largest_timeout <= Duration::from_secs(4), "{paced:?}");
    // Pacing serves the waiters' blocks on top of the full-speed slots: the storm ends
    // no later than the slots alone would have taken (300 / 8 slot-fulls of ~1 s).
    assert!(paced.end <= Duration::from_secs(40), "{paced:?}");
}
