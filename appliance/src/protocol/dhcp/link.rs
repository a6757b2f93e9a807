//! The link-layer payloads the DHCP glue sends and reads on a packet socket (`net/packet.rs`,
//! which adds and strips the Ethernet header): an IPv4 + UDP datagram for a reply sent
//! straight to a client's hardware address ([`ipv4_udp`]), and ARP probes and the ARP
//! replies that answer them ([`arp_probe`], [`probe_answer`]).
//!
//! Pure: bytes in, bytes out.

use std::net::{Ipv4Addr, SocketAddrV4};

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;

/// RFC 1071 checksum of `data` added to `sum`, folded.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 datagram (20-byte header, DF set, TTL 64) carrying `payload` in UDP from `src`
/// to `dst`, with both checksums.
pub fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let ip_sum = checksum(0, &p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // Pseudo header: source, destination, protocol, UDP length.
    let mut pseudo = 0u32;
    for half in [src.ip().octets(), dst.ip().octets()] {
        pseudo += u32::from(u16::from_be_bytes([half[0], half[1]]));
        pseudo += u32::from(u16::from_be_bytes([half[2], half[3]]));
    }
    pseudo += 17 + udp_len as u32;
    let udp_sum = match checksum(pseudo, &p[20..]) {
        0 => 0xffff,
        s => s,
    };
    p[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// An ARP probe (RFC 5227 §2.1.1): who has `target`, from `mac` with sender address
/// 0.0.0.0, so no host's ARP cache learns anything from it.
pub fn arp_probe(mac: [u8; 6], target: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut p = [0u8; ARP_LEN];
    p[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    p[8..14].copy_from_slice(&mac);
    // Sender protocol address 0.0.0.0, target hardware address zero.
    p[24..28].copy_from_slice(&target.octets());
    p
}

/// The sender of an Ethernet/IPv4 ARP packet (request or reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpSender {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

/// The host answering a probe: the sender of an Ethernet/IPv4 ARP reply whose target
/// address is 0.0.0.0 (a reply to a probe, RFC 5227 §2.1.1). `None` for anything else:
/// requests, replies to ordinary requests (a client that just got an address resolving the
/// box is no conflict), other hosts' probes.
pub fn probe_answer(bytes: &[u8]) -> Option<ArpSender> {
    let p = bytes.get(..ARP_LEN)?;
    if p[..8] != [0, 1, 0x08, 0x00, 6, 4, 0, 2] || p[24..28] != [0, 0, 0, 0] {
        return None;
    }
    let mac: [u8; 6] = p[8..14].try_into().ok()?;
    let ip = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    (!ip.is_unspecified()).then_some(ArpSender { mac, ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp_checksums_verify_to_zero() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 67);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 150), 68);
        for payload in [&b"odd"[..], &b"even"[..], &[0u8; 300][..]] {
            let p = ipv4_udp(src, dst, payload);
            assert_eq!(p.len(), 28 + payload.len());
            assert_eq!(checksum(0, &p[..20]), 0, "IPv4 header checksum");
            assert_eq!(&p[12..16], &[10, 0, 0, 1]);
            assert_eq!(&p[16..20], &[10, 0, 0, 150]);
            assert_eq!(&p[20..24], &[0, 67, 0, 68]);
            let mut pseudo = 0u32;
            for w in [[10u8, 0], [0, 1], [10, 0], [0, 150]] {
                pseudo += u32::from(u16::from_be_bytes(w));
            }
            pseudo += 17 + (8 + payload.len()) as u32;
            assert_eq!(checksum(pseudo, &p[20..]), 0, "UDP checksum");
            assert_eq!(&p[28..], payload);
        }
    }

    #[test]
    fn arp_probe_and_parse() {
        let mac = [2, 0, 0, 0, 0, 7];
        let probe = arp_probe(mac, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&probe[24..], &[10, 0, 0, 100]);
        // A probe is no answer.
        assert_eq!(probe_answer(&probe), None);
        // The owner's reply as Linux sends it: op 2, sender = the probed address, target
        // our MAC and 0.0.0.0.
        let mut reply = probe;
        reply[7] = 2;
        reply[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        reply[14..18].copy_from_slice(&[10, 0, 0, 100]);
        reply[18..24].copy_from_slice(&mac);
        reply[24..28].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            probe_answer(&reply),
            Some(ArpSender {
                mac: [2, 0, 0, 0, 0, 9],
                ip: Ipv4Addr::new(10, 0, 0, 100)
            })
        );
        let mut request = reply;
        request[7] = 1;
        assert_eq!(probe_answer(&request), None, "a request from the address");
        let mut ordinary = reply;
        ordinary[24..28].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(
            probe_answer(&ordinary),
            None,
            "a reply to someone's request"
        );
        assert_eq!(probe_answer(&reply[..27]), None, "short");
    }
}
