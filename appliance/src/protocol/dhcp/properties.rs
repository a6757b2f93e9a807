//! Properties of the DHCP core that must hold for ANY input, as a function that panics on a
//! violation. Called by the cargo-fuzz target `fuzz/fuzz_targets/dhcp_packet.rs` and by the
//! corpus replay in `cargo test` (`appliance/tests/fuzz_corpus.rs`). ("Never twice" is the
//! proptest in `tests.rs`.)
//!
//! Input layout: chunks separated by the 4 bytes `0xde 0xad 0xbe 0xef`; the first byte of a
//! chunk picks the port (bit 0) and advances the clock (bits 1..), the rest is the datagram.
//! Pure; no IO.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::Decodable;
use dhcproto::v4::{Message, MessageType};

use super::{BootConfig, DhcpServer, Mode, Pool, Port, Reservation, ServerConfig};

/// The chunk separator of the input layout.
pub const SEPARATOR: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

fn config(mode: Mode) -> ServerConfig {
    ServerConfig {
        mode,
        server_ips: vec![Ipv4Addr::new(10, 0, 0, 1)],
        pools: vec![
            Pool {
                start: Ipv4Addr::new(10, 0, 0, 100),
                end: Ipv4Addr::new(10, 0, 0, 103),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 1)],
                domain: Some("fuzz.test".into()),
                lease_time_secs: 60,
            },
            Pool {
                start: Ipv4Addr::new(10, 5, 0, 10),
                end: Ipv4Addr::new(10, 5, 0, 12),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: None,
                dns: vec![],
                domain: None,
                lease_time_secs: 30,
            },
        ],
        reservations: vec![Reservation {
            mac: [0x52, 0x54, 0, 0, 0, 1],
            ip: Ipv4Addr::new(10, 0, 0, 50),
            hostname: None,
        }],
        boot: BootConfig::default(),
        decline_hold_secs: 20,
    }
}

/// Any bytes as a sequence of datagrams into a server-mode and a proxy-mode core: never a
/// panic, every reply decodes again, a proxy never writes a lease nor hands out an address,
/// an ACKed address is held in the lease table afterwards, and the rogue-DHCP probe's
/// classifier never panics on the same datagram.
pub fn check_datagrams(data: &[u8]) {
    let mut server = DhcpServer::new(config(Mode::Server), Vec::new()).expect("valid config");
    let mut proxy = DhcpServer::new(config(Mode::Proxy), Vec::new()).expect("valid config");
    let mut now = 1_800_000_000u64;
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, next) = match rest.windows(4).position(|w| w == SEPARATOR) {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let Some((&ctl, packet)) = chunk.split_first() else {
            continue;
        };
        let port = if ctl & 1 == 0 { Port::Dhcp } else { Port::Pxe };
        now += u64::from(ctl >> 1);
        let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        if let Ok(d) = proxy.handle(now, port, src, packet) {
            assert!(d.changes.is_empty(), "proxy wrote a lease");
            if let Some(r) = d.reply {
                let m = Message::from_bytes(&r.packet).expect("proxy reply decodes");
                assert_eq!(
                    m.yiaddr(),
                    Ipv4Addr::UNSPECIFIED,
                    "proxy handed out an address"
                );
            }
        }
        if let Ok(d) = server.handle(now, port, src, packet)
            && let Some(r) = d.reply
        {
            let m = Message::from_bytes(&r.packet).expect("server reply decodes");
            if m.opts().msg_type() == Some(MessageType::Ack) && !m.yiaddr().is_unspecified() {
                assert!(
                    server.leases().holder(m.yiaddr(), now).is_some(),
                    "ACKed {} but the table does not hold it",
                    m.yiaddr()
                );
            }
        }
    }
}

/// Any bytes as a captured Ethernet frame read by the rogue-DHCP probe: never a panic; an
/// offer is only ever reported for this probe's transaction, and it is `Own` exactly when its
/// source or server identifier is one of the box's addresses. The probe's transaction id and
/// MAC are the frame's own `xid`/`chaddr` when it is long enough, so the fuzzer reaches the
/// classification instead of stopping at the transaction check.
pub fn check_probe_frame(frame: &[u8]) {
    // Ethernet 14 + IPv4 20 (no options) + UDP 8 = 42: where the BOOTP payload starts.
    let at = |off: usize, n: usize| frame.get(42 + off..42 + off + n);
    let xid = at(4, 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let mut mac = [0u8; 6];
    if let Some(b) = at(28, 6) {
        mac.copy_from_slice(b);
    }
    let probe = super::probe::Probe { xid, mac };
    let own = [Ipv4Addr::new(10, 0, 0, 1)];
    let expected = [Ipv4Addr::new(10, 0, 0, 2)];
    if let Some(seen) = probe.classify(frame, &own, &expected) {
        let mine =
            own.contains(&seen.source_ip) || seen.server_id.is_some_and(|s| own.contains(&s));
        assert_eq!(
            seen.from == super::probe::OfferFrom::Own,
            mine,
            "offer classified {:?} from {} (server id {:?})",
            seen.from,
            seen.source_ip,
            seen.server_id
        );
    }
}
