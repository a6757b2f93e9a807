//! Properties of the DHCPv6 core that must hold for ANY input, as a function that panics on
//! a violation. Called by the cargo-fuzz target `fuzz/fuzz_targets/dhcpv6_packet.rs` and by
//! the corpus replay in `cargo test` (`appliance/tests/fuzz_corpus.rs`).
//!
//! Input layout: chunks separated by the 4 bytes `0xde 0xad 0xbe 0xef`; the first byte of a
//! chunk advances the clock, the rest is the message. Pure; no IO.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use super::{Config, Dhcpv6Server, wire};
use crate::protocol::dhcp::{BootConfig, LeaseState};

fn config() -> Config {
    Config {
        server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1],
        server_ip: "fd00::1".parse().expect("literal"),
        prefix: "fd00::".parse().expect("literal"),
        prefix_len: 64,
        pool_start: "fd00::100".parse().expect("literal"),
        pool_end: "fd00::103".parse().expect("literal"),
        preferred_secs: 30,
        valid_secs: 60,
        dns: vec!["fd00::53".parse().expect("literal")],
        boot: BootConfig::default(),
        boot_file_params: vec!["x".into()],
        decline_hold_secs: 20,
    }
}

/// Any bytes as a sequence of messages: never a panic, every reply parses again as TLV
/// options, and no IA (client DUID + IAID) holds two bound addresses at once.
pub fn check_messages(data: &[u8]) {
    let mut server = Dhcpv6Server::new(config(), Vec::new()).expect("valid config");
    let mut now = 1_800_000_000u64;
    let sep = [0xde, 0xad, 0xbe, 0xef];
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, next) = match rest.windows(4).position(|w| w == sep) {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let Some((&ctl, packet)) = chunk.split_first() else {
            continue;
        };
        now += u64::from(ctl);
        if let Ok(d) = server.handle(now, packet)
            && let Some(r) = d.reply
        {
            assert!(
                r.len() >= 4 && wire::options(&r[4..]).is_ok(),
                "reply does not parse"
            );
        }
        let mut held: HashMap<(&[u8], u32), Ipv6Addr> = HashMap::new();
        for l in server.leases() {
            if l.state == LeaseState::Bound
                && l.expires_at > now
                && let Some(other) = held.insert((&l.duid, l.iaid), l.addr)
            {
                panic!("one IA holds {other} and {}", l.addr);
            }
        }
    }
}
