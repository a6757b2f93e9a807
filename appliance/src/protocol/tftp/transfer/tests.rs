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
