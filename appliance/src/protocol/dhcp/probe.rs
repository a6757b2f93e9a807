//! Rogue DHCP detection, sans-IO: the probe DISCOVER the box sends on its provisioning
//! segment, and the classification of the frames that answer it.
//!
//! The glue (`net/dhcp_probe.rs`) picks the transaction id (randomness), sends
//! [`Probe::discover`] from udp/68, and hands every Ethernet frame its packet socket
//! captured to [`Probe::classify`]: an OFFER for this probe's transaction id and hardware
//! address is attributed to the server that sent it and classified as the box itself, a
//! server named in the config (`dhcp.expected_servers`, the site's server in proxy mode), or
//! a rogue. Frames are read by hand (Ethernet II, IPv4, UDP, BOOTP + the two options read),
//! never panicking, and without `dhcproto` (which panics on some hostile inputs, see
//! `wire.rs`). The broadcast flag stays clear, so a server may unicast its offer to the
//! offered address at our MAC; the glue's packet socket sees those frames as well.

use std::net::Ipv4Addr;

/// Ethernet II header length.
const ETH_LEN: usize = 14;
/// BOOTP fixed header + magic cookie.
const BOOTP_LEN: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// DHCP message type OFFER (option 53).
const DHCPOFFER: u8 = 2;

/// One probe round's DISCOVER: a transaction id (from the caller's randomness) and the
/// hardware address of the provisioning interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub xid: u32,
    pub mac: [u8; 6],
}

/// Who sent an offer, relative to this box's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferFrom {
    /// The box itself (its own address as server identifier or source).
    Own,
    /// A server named in `dhcp.expected_servers`.
    Expected,
    /// Anyone else: a rogue DHCP server on the provisioning segment.
    Rogue,
}

/// An offer answering a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferSeen {
    /// Ethernet source address of the frame.
    pub server_mac: [u8; 6],
    /// IPv4 source address of the datagram.
    pub source_ip: Ipv4Addr,
    /// Option 54, when present.
    pub server_id: Option<Ipv4Addr>,
    /// The address offered (`yiaddr`).
    pub offered: Ipv4Addr,
    /// Sent to an address other than 255.255.255.255 (the server unicast its offer).
    pub unicast: bool,
    pub from: OfferFrom,
}

impl Probe {
    /// The DISCOVER to send (UDP payload): `chaddr` = our MAC, broadcast flag clear,
    /// asking for the usual parameters; no PXE options (the box's own proxy stays silent).
    pub fn discover(&self) -> Vec<u8> {
        let mut p = vec![0u8; BOOTP_LEN];
        p[0] = 1; // BOOTREQUEST
        p[1] = 1; // Ethernet
        p[2] = 6;
        p[4..8].copy_from_slice(&self.xid.to_be_bytes());
        p[28..34].copy_from_slice(&self.mac);
        p[236..240].copy_from_slice(&MAGIC);
        // 53 DISCOVER; 61 client id (type 1 + MAC); 55 mask, router, DNS, server id; end.
        p.extend_from_slice(&[53, 1, 1, 61, 7, 1]);
        p.extend_from_slice(&self.mac);
        p.extend_from_slice(&[55, 4, 1, 3, 6, 54, 255]);
        p
    }

    /// Reads a captured Ethernet frame: an OFFER answering this probe (same transaction id
    /// and `chaddr`), classified against the box's own addresses and the expected servers
    /// (each compared with the server identifier and with the source address). Anything
    /// else (other traffic, other transactions, truncated or malformed frames) is `None`.
    pub fn classify(
        &self,
        frame: &[u8],
        own: &[Ipv4Addr],
        expected: &[Ipv4Addr],
    ) -> Option<OfferSeen> {
        let udp = udp_to_client(frame)?;
        let b = udp.payload;
        if b.len() < BOOTP_LEN || b[0] != 2 || b[236..240] != MAGIC {
            return None;
        }
        if b[4..8] != self.xid.to_be_bytes() || b[28..34] != self.mac {
            return None;
        }
        let offered = ip_at(b, 16)?;
        let (mut msg_type, mut server_id) = (None, None);
        for (code, value) in options(&b[BOOTP_LEN..]) {
            match (code, value.len()) {
                (53, 1) => msg_type = Some(value[0]),
                (54, 4) => server_id = ip_at(value, 0),
                _ => {}
            }
        }
        if msg_type != Some(DHCPOFFER) {
            return None;
        }
        let is = |list: &[Ipv4Addr]| {
            list.contains(&udp.source_ip) || server_id.is_some_and(|s| list.contains(&s))
        };
        let from = if is(own) {
            OfferFrom::Own
        } else if is(expected) {
            OfferFrom::Expected
        } else {
            OfferFrom::Rogue
        };
        Some(OfferSeen {
            server_mac: udp.source_mac,
            source_ip: udp.source_ip,
            server_id,
            offered,
            unicast: udp.dest_ip != Ipv4Addr::BROADCAST,
            from,
        })
    }
}

/// A UDP datagram to port 68 pulled out of an Ethernet frame.
struct ClientDatagram<'a> {
    source_mac: [u8; 6],
    source_ip: Ipv4Addr,
    dest_ip: Ipv4Addr,
    payload: &'a [u8],
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// Ethernet II → IPv4 (unfragmented) → UDP to port 68; `None` for anything else.
fn udp_to_client(frame: &[u8]) -> Option<ClientDatagram<'_>> {
    let source_mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH_LEN..)?;
    let version_ihl = *ip.first()?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    // More-fragments flag or a fragment offset: not a whole datagram.
    let frag = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?);
    if frag & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
    let ip = ip.get(..total)?;
    let udp = ip.get(ihl..)?;
    if udp.get(2..4)? != 68u16.to_be_bytes() {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?));
    let payload = udp.get(8..udp_len.max(8))?;
    Some(ClientDatagram {
        source_mac,
        source_ip: ip_at(ip, 12)?,
        dest_ip: ip_at(ip, 16)?,
        payload,
    })
}

/// The DHCP options area as (code, value) pairs, stopping at END or at the first option
/// that runs past the end.
fn options(mut b: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            let (&code, rest) = b.split_first()?;
            match code {
                0 => b = rest,
                255 => return None,
                _ => {
                    let (&len, rest) = rest.split_first()?;
                    let value = rest.get(..usize::from(len))?;
                    b = &rest[usize::from(len)..];
                    return Some((code, value));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
    const ROGUE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x02];

    fn probe() -> Probe {
        Probe {
            xid: 0x1234_5678,
            mac: MAC,
        }
    }

    /// An Ethernet frame from `ROGUE_MAC` carrying a DHCP message of `msg_type` from `src`
    /// (also its server id) to `dst`.
    fn offer_frame(xid: u32, chaddr: [u8; 6], msg_type: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut d = vec![0u8; BOOTP_LEN];
        d[0] = 2;
        d[1] = 1;
        d[2] = 6;
        d[4..8].copy_from_slice(&xid.to_be_bytes());
        d[16..20].copy_from_slice(&[10, 0, 0, 77]);
        d[28..34].copy_from_slice(&chaddr);
        d[236..240].copy_from_slice(&MAGIC);
        d.extend_from_slice(&[53, 1, msg_type, 0, 54, 4]);
        d.extend_from_slice(&src);
        d.push(255);
        let mut udp = Vec::new();
        udp.extend_from_slice(&67u16.to_be_bytes());
        udp.extend_from_slice(&68u16.to_be_bytes());
        udp.extend_from_slice(&((8 + d.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&d);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&udp);
        let mut f = Vec::new();
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&ROGUE_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 4]); // Ethernet padding past the IP length
        f
    }

    #[test]
    fn discover_carries_xid_mac_and_no_broadcast_flag() {
        let d = probe().discover();
        assert_eq!(d[0], 1);
        assert_eq!(&d[4..8], &0x1234_5678u32.to_be_bytes());
        assert_eq!(&d[10..12], &[0, 0], "broadcast flag clear");
        assert_eq!(&d[28..34], &MAC);
        let opts: Vec<_> = options(&d[BOOTP_LEN..]).collect();
        assert_eq!(opts[0], (53, &[1u8][..]));
        // dhcproto (what real servers' parsers resemble) reads it as a DISCOVER.
        use dhcproto::Decodable;
        let m = dhcproto::v4::Message::from_bytes(&d).unwrap();
        assert_eq!(
            m.opts().msg_type(),
            Some(dhcproto::v4::MessageType::Discover)
        );
        assert_eq!(m.xid(), 0x1234_5678);
    }

    #[test]
    fn unicast_offer_from_unknown_server_is_rogue() {
        let f = offer_frame(0x1234_5678, MAC, 2, [10, 0, 0, 2], [10, 0, 0, 77]);
        let seen = probe()
            .classify(&f, &[Ipv4Addr::new(10, 0, 0, 1)], &[])
            .unwrap();
        assert_eq!(
            seen,
            OfferSeen {
                server_mac: ROGUE_MAC,
                source_ip: Ipv4Addr::new(10, 0, 0, 2),
                server_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
                offered: Ipv4Addr::new(10, 0, 0, 77),
                unicast: true,
                from: OfferFrom::Rogue,
            }
        );
    }

    #[test]
    fn own_and_expected_servers_are_not_rogue() {
        let f = offer_frame(0x1234_5678, MAC, 2, [10, 0, 0, 2], [255; 4]);
        let own = probe().classify(&f, &[Ipv4Addr::new(10, 0, 0, 2)], &[]);
        assert_eq!(own.unwrap().from, OfferFrom::Own);
        let exp = probe()
            .classify(
                &f,
                &[Ipv4Addr::new(10, 0, 0, 1)],
                &[Ipv4Addr::new(10, 0, 0, 2)],
            )
            .unwrap();
        assert_eq!(exp.from, OfferFrom::Expected);
        assert!(!exp.unicast);
    }

    #[test]
    fn other_transactions_and_messages_are_ignored() {
        let p = probe();
        let own = [Ipv4Addr::new(10, 0, 0, 1)];
        for f in [
            offer_frame(0x1234_5679, MAC, 2, [10, 0, 0, 2], [255; 4]),
            offer_frame(0x1234_5678, ROGUE_MAC, 2, [10, 0, 0, 2], [255; 4]),
            offer_frame(0x1234_5678, MAC, 5, [10, 0, 0, 2], [255; 4]), // ACK
        ] {
            assert_eq!(p.classify(&f, &own, &[]), None);
        }
    }

    #[test]
    fn truncated_and_garbled_frames_never_panic() {
        let p = probe();
        let f = offer_frame(0x1234_5678, MAC, 2, [10, 0, 0, 2], [255; 4]);
        for n in 0..f.len() {
            let _ = p.classify(&f[..n], &[], &[]);
        }
        // Every single-byte corruption of every position.
        for i in 0..f.len() {
            for v in [0u8, 0x0f, 0x45, 0xff] {
                let mut g = f.clone();
                g[i] = v;
                let _ = p.classify(&g, &[], &[]);
            }
        }
        // A frame shorter than its IP total length is refused.
        assert!(p.classify(&f[..f.len() - 5], &[], &[]).is_none());
    }
}
