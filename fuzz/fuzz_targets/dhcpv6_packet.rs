//! Any bytes as a sequence of DHCPv6 messages into the DHCPv6 core: must not panic, every
//! reply must parse again as TLV options, and no IA (client DUID + IAID) holds two bound
//! addresses at once.
//! (`protocol/dhcpv6/tests.rs::fuzz_smoke_never_panics` runs the same property in
//! `cargo test`.)
//!
//! Input layout: chunks separated by the 4 bytes `0xde 0xad 0xbe 0xef`; the first byte of a
//! chunk advances the clock, the rest is the message.
#![no_main]

use std::collections::HashMap;
use std::net::Ipv6Addr;

use appliance_fuzz::dhcp::{BootConfig, LeaseState};
use appliance_fuzz::dhcpv6::{Config, Dhcpv6Server, wire};
use libfuzzer_sys::fuzz_target;

fn config() -> Config {
    Config {
        server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1],
        server_ip: "fd00::1".parse().unwrap(),
        prefix: "fd00::".parse().unwrap(),
        prefix_len: 64,
        pool_start: "fd00::100".parse().unwrap(),
        pool_end: "fd00::103".parse().unwrap(),
        preferred_secs: 30,
        valid_secs: 60,
        dns: vec!["fd00::53".parse().unwrap()],
        boot: BootConfig::default(),
        boot_file_params: vec!["x".into()],
        decline_hold_secs: 20,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut server = Dhcpv6Server::new(config(), Vec::new()).unwrap();
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
            if l.state == LeaseState::Bound && l.expires_at > now {
                if let Some(other) = held.insert((&l.duid, l.iaid), l.addr) {
                    panic!("one IA holds {other} and {}", l.addr);
                }
            }
        }
    }
});
