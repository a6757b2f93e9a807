//! Any bytes as a sequence of DHCP datagrams into the DHCP core, in server and in proxy mode:
//! must not panic, every reply must decode again, a proxy reply never carries an address,
//! and an ACKed address is held in the lease table afterwards. ("Never twice" is the
//! proptest in `protocol/dhcp/tests.rs`.)
//!
//! Input layout: chunks separated by the 4 bytes `0xde 0xad 0xbe 0xef`; the first byte of a
//! chunk picks the port (bit 0) and advances the clock (bits 1..), the rest is the datagram.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use appliance_fuzz::dhcp::{
    BootConfig, DhcpServer, Mode, Pool, Port, Reservation, ServerConfig,
};
use dhcproto::Decodable;
use dhcproto::v4::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
    let mut server = DhcpServer::new(config(Mode::Server), Vec::new()).unwrap();
    let mut proxy = DhcpServer::new(config(Mode::Proxy), Vec::new()).unwrap();
    let mut now = 1_800_000_000u64;
    let sep = [0xde, 0xad, 0xbe, 0xef];
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, next) = match rest.windows(4).position(|w| w == sep) {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let Some((&ctl, packet)) = chunk.split_first() else { continue };
        let port = if ctl & 1 == 0 { Port::Dhcp } else { Port::Pxe };
        now += u64::from(ctl >> 1);
        let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        if let Ok(d) = proxy.handle(now, port, src, packet) {
            assert!(d.changes.is_empty(), "proxy wrote a lease");
            if let Some(r) = d.reply {
                let m = Message::from_bytes(&r.packet).expect("proxy reply decodes");
                assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxy handed out an address");
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
});
