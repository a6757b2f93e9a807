//! Router advertisements (RFC 4861 §4.2) for the provisioning segment, built and screened
//! here, sent by `net/dhcpv6.rs` from a raw ICMPv6 socket (the kernel fills in the checksum).
//!
//! The box is no router: the advertisement sets the Managed flag (addresses come from
//! DHCPv6) and the Other flag, a router lifetime of 0 unless configured (not a default
//! router), and one Prefix Information option for the configured prefix, on-link, without
//! autonomous (SLAAC) addressing.

use std::net::Ipv6Addr;

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// Router lifetime, seconds (0: not a default router).
    pub router_lifetime_secs: u16,
    pub valid_secs: u32,
    pub preferred_secs: u32,
    /// The sending interface's Ethernet address (source link-layer option).
    pub mac: Option<[u8; 6]>,
}

/// The ICMPv6 message (checksum left 0 for the kernel).
pub fn build(a: &Advert) -> Vec<u8> {
    let mut v = vec![
        ROUTER_ADVERTISEMENT,
        0,
        0,
        0,
        64,          // current hop limit
        0x80 | 0x40, // Managed, Other
    ];
    v.extend_from_slice(&a.router_lifetime_secs.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes()); // reachable time: unspecified
    v.extend_from_slice(&0u32.to_be_bytes()); // retrans timer: unspecified
    if let Some(mac) = a.mac {
        v.extend_from_slice(&[1, 1]);
        v.extend_from_slice(&mac);
    }
    // Prefix information: type 3, length 4 (32 bytes), on-link (L), not autonomous (A off).
    v.extend_from_slice(&[3, 4, a.prefix_len, 0x80]);
    v.extend_from_slice(&a.valid_secs.to_be_bytes());
    v.extend_from_slice(&a.preferred_secs.to_be_bytes());
    v.extend_from_slice(&[0; 4]);
    let m = if a.prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(a.prefix_len.min(128)))
    };
    v.extend_from_slice(&Ipv6Addr::from(u128::from(a.prefix) & m).octets());
    v
}

/// True when `icmp` (an ICMPv6 message as a raw socket delivers it) is a router
/// solicitation that deserves an answer (type 133, code 0, at least 8 bytes).
pub fn is_solicitation(icmp: &[u8]) -> bool {
    icmp.len() >= 8 && icmp[0] == ROUTER_SOLICITATION && icmp[1] == 0
}
