//! The frames a simulated firmware client sends and reads, as bytes: Ethernet framing, ARP
//! answers, the DHCP requests of the two firmware stages (the NIC's UEFI PXE and iPXE) and
//! their replies, TFTP read requests, acknowledgements and the server's packets.
//!
//! Pure: bytes in, bytes out (the IPv4/UDP datagram is the appliance's own
//! `protocol::dhcp::link::ipv4_udp`).

use std::net::{Ipv4Addr, SocketAddrV4};

use appliance::protocol::dhcp::link::{ETH_P_ARP, ETH_P_IP, ipv4_udp};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

/// The broadcast hardware address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Which firmware sends a DHCP request: the NIC's UEFI PXE ROM (fetches iPXE over TFTP) or
/// iPXE itself (user class `iPXE`, gets the `/boot.ipxe` URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pxe,
    Ipxe,
}

/// An Ethernet frame around `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4/UDP datagram in an Ethernet frame.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    ethernet(dst_mac, src_mac, ETH_P_IP, &ipv4_udp(src, dst, payload))
}

/// What an incoming frame is, as far as the clients care.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A UDP datagram.
    Udp {
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &'a [u8],
    },
    /// An ARP request: who has `target`, tell `sender_ip` at `sender_mac`.
    ArpRequest {
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    Other,
}

/// Parses an Ethernet frame (unfragmented IPv4 UDP, ARP requests; all else is `Other`).
pub fn parse(frame: &[u8]) -> Frame<'_> {
    if frame.len() < 14 {
        return Frame::Other;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let p = &frame[14..];
    match ethertype {
        ETH_P_ARP if p.len() >= 28 && p[6..8] == [0, 1] && p[4] == 6 && p[5] == 4 => {
            let mut sender_mac = [0; 6];
            sender_mac.copy_from_slice(&p[8..14]);
            Frame::ArpRequest {
                sender_mac,
                sender_ip: Ipv4Addr::new(p[14], p[15], p[16], p[17]),
                target: Ipv4Addr::new(p[24], p[25], p[26], p[27]),
            }
        }
        ETH_P_IP if p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 17 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
            if fragment || ihl < 20 || total > p.len() || total < ihl + 8 {
                return Frame::Other;
            }
            let u = &p[ihl..total];
            let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
            if udp_len < 8 || udp_len > u.len() {
                return Frame::Other;
            }
            Frame::Udp {
                src: SocketAddrV4::new(
                    Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                    u16::from_be_bytes([u[0], u[1]]),
                ),
                dst: SocketAddrV4::new(
                    Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                    u16::from_be_bytes([u[2], u[3]]),
                ),
                payload: &u[8..udp_len],
            }
        }
        _ => Frame::Other,
    }
}

/// The ARP reply: `ip` is at `mac`, to the asker.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    p.extend_from_slice(&mac);
    p.extend_from_slice(&ip.octets());
    p.extend_from_slice(&to_mac);
    p.extend_from_slice(&to_ip.octets());
    ethernet(to_mac, mac, ETH_P_ARP, &p)
}

/// One client's DHCP identity.
#[derive(Debug, Clone)]
pub struct DhcpClient {
    pub mac: [u8; 6],
    /// SMBIOS UUID bytes (option 97, and iPXE's `${uuid}`).
    pub uuid: [u8; 16],
    pub xid: u32,
}

/// A DHCPDISCOVER or DHCPREQUEST (`requested` + `server` set) as `stage` sends it, with the
/// broadcast flag (both UEFI PXE and iPXE set it) and option 93 = 7 (x86-64 UEFI).
pub fn dhcp_request(
    c: &DhcpClient,
    stage: Stage,
    requested: Option<(Ipv4Addr, Ipv4Addr)>,
    secs: u16,
) -> Vec<u8> {
    let mut m = Message::new_with_id(
        c.xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &c.mac,
    );
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default().set_broadcast());
    m.set_secs(secs);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(if requested.is_some() {
        MessageType::Request
    } else {
        MessageType::Discover
    }));
    if let Some((ip, server)) = requested {
        o.insert(DhcpOption::RequestedIpAddress(ip));
        o.insert(DhcpOption::ServerIdentifier(server));
    }
    o.insert(DhcpOption::MaxMessageSize(1472));
    o.insert(DhcpOption::ClientSystemArchitecture(7.into()));
    let mut guid = vec![0u8];
    guid.extend_from_slice(&c.uuid);
    o.insert(DhcpOption::ClientMachineIdentifier(guid));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::VendorExtensions,
        OptionCode::ClassIdentifier,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
    match stage {
        Stage::Pxe => {
            o.insert(DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
            ));
        }
        Stage::Ipxe => {
            o.insert(DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:003010".to_vec(),
            ));
            o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
    }
    m.to_vec().expect("a DHCP message always encodes")
}

/// The parts of a DHCP reply the clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReply {
    pub xid: u32,
    pub kind: MessageType,
    pub yiaddr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub siaddr: Ipv4Addr,
    /// Option 67, else the `file` field.
    pub boot_file: String,
    pub netmask: Option<Ipv4Addr>,
}

/// Parses a BOOTREPLY; `None` for anything else.
pub fn dhcp_reply(payload: &[u8]) -> Option<DhcpReply> {
    let m = Message::decode(&mut dhcproto::Decoder::new(payload)).ok()?;
    if m.opcode() != Opcode::BootReply {
        return None;
    }
    let kind = match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => *t,
        _ => return None,
    };
    let boot_file = match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => String::from_utf8_lossy(f).into_owned(),
        _ => m
            .fname_str()
            .and_then(Result::ok)
            .unwrap_or_default()
            .to_string(),
    };
    Some(DhcpReply {
        xid: m.xid(),
        kind,
        yiaddr: m.yiaddr(),
        server: match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        },
        siaddr: m.siaddr(),
        boot_file: boot_file.trim_end_matches('\0').to_string(),
        netmask: match m.opts().get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(s)) => Some(*s),
            _ => None,
        },
    })
}

/// The transaction id of a BOOTREPLY, read without decoding the options (the receive
/// loop's demultiplexer).
pub fn bootreply_xid(payload: &[u8]) -> Option<u32> {
    (payload.len() >= 240 && payload[0] == 2)
        .then(|| u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]))
}

/// A TFTP read request in octet mode with the options iPXE sends: `blksize` and `tsize 0`.
pub fn tftp_rrq(file: &str, blksize: u16) -> Vec<u8> {
    let mut p = vec![0, 1];
    for part in [file, "octet", "blksize", &blksize.to_string(), "tsize", "0"] {
        p.extend_from_slice(part.as_bytes());
        p.push(0);
    }
    p
}

/// A TFTP acknowledgement of `block`.
pub fn tftp_ack(block: u16) -> Vec<u8> {
    let mut p = vec![0, 4];
    p.extend_from_slice(&block.to_be_bytes());
    p
}

/// A TFTP error packet (iPXE sends one to end a transfer it abandons).
pub fn tftp_error(code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0, 5];
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// A packet from a TFTP server.
#[derive(Debug, PartialEq, Eq)]
pub enum Tftp<'a> {
    /// Option acknowledgement: the options granted.
    Oack(Vec<(String, String)>),
    Data(u16, &'a [u8]),
    Error(u16, String),
    Other,
}

/// Parses a TFTP server packet.
pub fn tftp(p: &[u8]) -> Tftp<'_> {
    if p.len() < 4 {
        return Tftp::Other;
    }
    match u16::from_be_bytes([p[0], p[1]]) {
        3 => Tftp::Data(u16::from_be_bytes([p[2], p[3]]), &p[4..]),
        5 => Tftp::Error(
            u16::from_be_bytes([p[2], p[3]]),
            String::from_utf8_lossy(p[4..].split(|b| *b == 0).next().unwrap_or_default())
                .into_owned(),
        ),
        6 => {
            let parts: Vec<String> = p[2..]
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                .collect();
            Tftp::Oack(
                parts
                    .chunks_exact(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            )
        }
        _ => Tftp::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_frame_parses_back() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 1234);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 69);
        let f = udp_frame(BROADCAST, [2, 0, 0, 0, 0, 1], src, dst, b"hello");
        assert_eq!(
            parse(&f),
            Frame::Udp {
                src,
                dst,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn discover_carries_the_stage_and_the_identity() {
        let c = DhcpClient {
            mac: [0x52, 0x54, 0, 0, 1, 0],
            uuid: [7; 16],
            xid: 0x1234_5678,
        };
        let bytes = dhcp_request(&c, Stage::Ipxe, None, 3);
        let m = Message::decode(&mut dhcproto::Decoder::new(&bytes)).unwrap();
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(m.chaddr(), &c.mac);
        assert!(m.flags().broadcast());
        assert_eq!(
            m.opts().get(OptionCode::UserClass),
            Some(&DhcpOption::UserClass(b"iPXE".to_vec()))
        );
        let pxe = dhcp_request(
            &c,
            Stage::Pxe,
            Some((Ipv4Addr::new(10, 0, 1, 5), c.xid.into())),
            0,
        );
        let m = Message::decode(&mut dhcproto::Decoder::new(&pxe)).unwrap();
        assert_eq!(m.opts().get(OptionCode::UserClass), None);
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 1, 5)))
        );
    }

    #[test]
    fn tftp_packets_round_trip() {
        assert_eq!(
            tftp_rrq("ipxe.efi", 1432),
            b"\x00\x01ipxe.efi\x00octet\x00blksize\x001432\x00tsize\x000\x00"
        );
        assert_eq!(
            tftp(b"\x00\x06blksize\x001432\x00tsize\x00850528\x00"),
            Tftp::Oack(vec![
                ("blksize".into(), "1432".into()),
                ("tsize".into(), "850528".into())
            ])
        );
        assert_eq!(tftp(b"\0\x03\0\x02abc"), Tftp::Data(2, b"abc"));
        assert_eq!(tftp(b"\0\x05\0\x01nope\0"), Tftp::Error(1, "nope".into()));
    }

    #[test]
    fn arp_requests_are_recognised() {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&[2, 0, 0, 0, 0, 9, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 1, 7]);
        let f = ethernet(BROADCAST, [2, 0, 0, 0, 0, 9], ETH_P_ARP, &p);
        assert_eq!(
            parse(&f),
            Frame::ArpRequest {
                sender_mac: [2, 0, 0, 0, 0, 9],
                sender_ip: Ipv4Addr::new(10, 0, 0, 1),
                target: Ipv4Addr::new(10, 0, 1, 7)
            }
        );
    }
}
