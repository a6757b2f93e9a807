//! Table-driven tests of the DHCP core: every boot arch/option combination in both modes,
//! every message type and client state, relay handling, persistence round trip, malformed
//! input, and a bounded fuzz smoke plus a property test of "never hands out an address twice".

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Encodable};
use proptest::prelude::*;

use super::*;

const BOX: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const T0: u64 = 1_800_000_000;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn pool(start: &str, end: &str) -> Pool {
    Pool {
        start: ip(start),
        end: ip(end),
        netmask: ip("255.255.255.0"),
        router: Some(ip(&format!("{}.1", start.rsplit_once('.').unwrap().0))),
        dns: vec![ip("10.0.0.53")],
        domain: Some("rack.test".into()),
        lease_time_secs: 3600,
    }
}

fn config(mode: Mode) -> ServerConfig {
    ServerConfig {
        mode,
        server_ips: vec![BOX],
        pools: vec![
            pool("10.0.0.100", "10.0.0.199"),
            pool("10.5.0.100", "10.5.0.110"),
        ],
        reservations: vec![Reservation {
            mac: [0x52, 0x54, 0, 0, 0, 0x99],
            ip: ip("10.0.0.10"),
            hostname: Some("node-r".into()),
        }],
        boot: BootConfig::default(),
        decline_hold_secs: 600,
    }
}

fn server(mode: Mode) -> DhcpServer {
    DhcpServer::new(config(mode), Vec::new()).unwrap()
}

/// A client request, built with dhcproto.
#[derive(Clone, Default)]
struct Pkt {
    ty: Option<MessageType>,
    mac: u8,
    arch: Option<u16>,
    vc: Option<&'static str>,
    uc: Option<&'static [u8]>,
    ipxe175: bool,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    ciaddr: Option<Ipv4Addr>,
    giaddr: Option<Ipv4Addr>,
    broadcast: bool,
    guid: Option<Vec<u8>>,
    relay_info: Option<Vec<u8>>,
}

impl Pkt {
    fn new(ty: MessageType, mac: u8) -> Pkt {
        Pkt {
            ty: Some(ty),
            mac,
            ..Pkt::default()
        }
    }
    fn mac_bytes(&self) -> [u8; 6] {
        [0x52, 0x54, 0, 0, 0, self.mac]
    }
    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::new_with_id(
            0x1234_0000 | u32::from(self.mac),
            self.ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            &self.mac_bytes(),
        );
        m.set_opcode(Opcode::BootRequest);
        if self.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        if let Some(t) = self.ty {
            o.insert(DhcpOption::MessageType(t));
        }
        if let Some(a) = self.arch {
            o.insert(DhcpOption::ClientSystemArchitecture(a.into()));
        }
        if let Some(v) = self.vc {
            o.insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
        }
        if let Some(u) = self.uc {
            o.insert(DhcpOption::UserClass(u.to_vec()));
        }
        if self.ipxe175 {
            o.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::from(175u8),
                vec![0xb1, 1, 1],
            )));
        }
        if let Some(r) = self.requested {
            o.insert(DhcpOption::RequestedIpAddress(r));
        }
        if let Some(s) = self.server_id {
            o.insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(g) = &self.guid {
            o.insert(DhcpOption::ClientMachineIdentifier(g.clone()));
        }
        let mut out = m.to_vec().unwrap();
        if let Some(info) = &self.relay_info {
            assert_eq!(out.pop(), Some(255));
            out.push(82);
            out.push(info.len() as u8);
            out.extend_from_slice(info);
            out.push(255);
        }
        out
    }
}

fn src_of(p: &Pkt) -> SocketAddrV4 {
    SocketAddrV4::new(p.ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED), 68)
}

fn send(s: &mut DhcpServer, now: u64, port: Port, p: &Pkt) -> Result<Decision, DropReason> {
    s.handle(now, port, src_of(p), &p.bytes())
}

fn reply(d: &Decision) -> (Message, &Reply) {
    let r = d.reply.as_ref().expect("a reply");
    (Message::from_bytes(&r.packet).unwrap(), r)
}

fn opt_bytes(m: &Message, code: OptionCode) -> Option<Vec<u8>> {
    match m.opts().get(code)? {
        DhcpOption::ClassIdentifier(v)
        | DhcpOption::BootfileName(v)
        | DhcpOption::TFTPServerName(v)
        | DhcpOption::VendorExtensions(v)
        | DhcpOption::ClientMachineIdentifier(v) => Some(v.clone()),
        DhcpOption::Unknown(u) => Some(u.data().to_vec()),
        other => panic!("unexpected option {other:?}"),
    }
}

fn text(m: &Message, code: OptionCode) -> Option<String> {
    opt_bytes(m, code).map(|v| String::from_utf8(v).unwrap())
}

/// DISCOVER + REQUEST (selecting) for `mac`; returns the bound address.
fn dora(s: &mut DhcpServer, now: u64, mac: u8) -> Ipv4Addr {
    let d = send(s, now, Port::Dhcp, &Pkt::new(MessageType::Discover, mac)).unwrap();
    let (offer, _) = reply(&d);
    let addr = offer.yiaddr();
    let req = Pkt {
        requested: Some(addr),
        server_id: Some(BOX),
        ..Pkt::new(MessageType::Request, mac)
    };
    let d = send(s, now, Port::Dhcp, &req).unwrap();
    let (ack, _) = reply(&d);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), addr);
    addr
}

// ---------------------------------------------------------------- boot file choice

struct BootCase {
    name: &'static str,
    arch: Option<u16>,
    vc: Option<&'static str>,
    uc: Option<&'static [u8]>,
    ipxe175: bool,
    /// (option 60, option 67, TFTP server in siaddr + option 66)
    want: Option<(&'static str, &'static str, bool)>,
}

const HTTP_X64: &str = "http://10.0.0.1:8081/tftp/ipxe.efi";
const HTTP_ARM: &str = "http://10.0.0.1:8081/tftp/grubaa64.efi";
const SCRIPT: &str = "http://10.0.0.1:8081/boot.ipxe";

#[rustfmt::skip]
fn boot_cases() -> Vec<BootCase> {
    let c = |name, arch, vc, uc, ipxe175, want| BootCase { name, arch, vc, uc, ipxe175, want };
    const PXE: &str = "PXEClient";
    const HTTP: &str = "HTTPClient";
    vec![
        c("bios", Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), None, false, Some((PXE, "undionly.kpxe", true))),
        c("uefi ia32 (no 32-bit file)", Some(6), None, None, false, None),
        c("uefi x64", Some(7), Some("PXEClient:Arch:00007:UNDI:003016"), None, false, Some((PXE, "ipxe.efi", true))),
        c("uefi bc", Some(9), None, None, false, Some((PXE, "ipxe.efi", true))),
        c("uefi arm64", Some(11), Some("PXEClient:Arch:00011:UNDI:003000"), None, false, Some((PXE, "grubaa64.efi", true))),
        c("http x86 (no 32-bit file)", Some(15), Some("HTTPClient:Arch:00015:UNDI:003000"), None, false, None),
        c("http x64", Some(16), Some("HTTPClient:Arch:00016:UNDI:003001"), None, false, Some((HTTP, HTTP_X64, false))),
        c("http arm64", Some(19), Some("HTTPClient:Arch:00019:UNDI:003000"), None, false, Some((HTTP, HTTP_ARM, false))),
        c("ipxe bios (user class)", Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), Some(b"iPXE"), false, Some((PXE, SCRIPT, false))),
        c("ipxe efi (option 175)", Some(7), Some("PXEClient:Arch:00007:UNDI:003016"), None, true, Some((PXE, SCRIPT, false))),
        c("ipxe rfc3004 user class", Some(11), None, Some(b"\x04iPXE"), false, Some((PXE, SCRIPT, false))),
        c("ipxe over http boot", Some(16), Some("HTTPClient:Arch:00016"), Some(b"iPXE"), false, Some((HTTP, SCRIPT, false))),
        c("arch from vendor class only", None, Some("PXEClient:Arch:00007:UNDI:003016"), None, false, Some((PXE, "ipxe.efi", true))),
        c("legacy PXEClient without arch", None, Some("PXEClient"), None, false, Some((PXE, "undionly.kpxe", true))),
        c("other user class is not iPXE", Some(0), None, Some(b"gPXE"), false, Some((PXE, "undionly.kpxe", true))),
        c("unsupported arch (arm32)", Some(10), Some("PXEClient:Arch:00010"), None, false, None),
        c("plain client", None, Some("udhcp 1.35.0"), None, false, None),
    ]
}

fn check_boot(m: &Message, case: &BootCase) {
    let name = case.name;
    match case.want {
        Some((vc, file, tftp)) => {
            assert_eq!(
                text(m, OptionCode::ClassIdentifier).as_deref(),
                Some(vc),
                "{name}: 60"
            );
            assert_eq!(
                text(m, OptionCode::BootfileName).as_deref(),
                Some(file),
                "{name}: 67"
            );
            assert_eq!(
                m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
                file,
                "{name}: file"
            );
            if tftp {
                assert_eq!(m.siaddr(), BOX, "{name}: siaddr");
                assert_eq!(
                    text(m, OptionCode::TFTPServerName).as_deref(),
                    Some("10.0.0.1"),
                    "{name}: 66"
                );
            } else {
                assert_eq!(
                    opt_bytes(m, OptionCode::TFTPServerName),
                    None,
                    "{name}: no 66"
                );
            }
            let pxe43 = opt_bytes(m, OptionCode::VendorExtensions);
            if vc == "PXEClient" {
                assert_eq!(pxe43, Some(vec![6, 1, 8, 255]), "{name}: 43");
            } else {
                assert_eq!(pxe43, None, "{name}: no 43 for HTTPClient");
            }
        }
        None => {
            assert_eq!(
                opt_bytes(m, OptionCode::BootfileName),
                None,
                "{name}: no boot file"
            );
            assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED, "{name}: no siaddr");
        }
    }
}

#[test]
fn server_mode_boot_info_for_every_arch() {
    for (i, case) in boot_cases().iter().enumerate() {
        let mut s = server(Mode::Server);
        let p = Pkt {
            arch: case.arch,
            vc: case.vc,
            uc: case.uc,
            ipxe175: case.ipxe175,
            ..Pkt::new(MessageType::Discover, i as u8)
        };
        let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
        let (offer, _) = reply(&d);
        assert_eq!(
            offer.opts().msg_type(),
            Some(MessageType::Offer),
            "{}",
            case.name
        );
        assert!(
            !offer.yiaddr().is_unspecified(),
            "{}: server mode gives an address",
            case.name
        );
        check_boot(&offer, case);
        // iPXE is told not to look for a ProxyDHCP server (server mode has no :4011).
        let is_ipxe = case.want.is_some_and(|(_, file, _)| file == SCRIPT);
        assert_eq!(
            opt_bytes(&offer, OptionCode::Unknown(175)),
            is_ipxe.then(|| vec![176, 1, 1]),
            "{}: 175.176 no-pxedhcp",
            case.name
        );
        // The ACK carries the same boot information.
        let req = Pkt {
            requested: Some(offer.yiaddr()),
            server_id: Some(BOX),
            ty: Some(MessageType::Request),
            ..p
        };
        let d = send(&mut s, T0, Port::Dhcp, &req).unwrap();
        check_boot(&reply(&d).0, case);
    }
}

#[test]
fn proxy_mode_boot_info_for_every_arch_and_no_address() {
    for (i, case) in boot_cases().iter().enumerate() {
        let mut s = server(Mode::Proxy);
        let guid: Vec<u8> = std::iter::once(0).chain(1..=16).collect();
        let p = Pkt {
            arch: case.arch,
            vc: case.vc,
            uc: case.uc,
            ipxe175: case.ipxe175,
            guid: Some(guid.clone()),
            ..Pkt::new(MessageType::Discover, i as u8)
        };
        let got = send(&mut s, T0, Port::Dhcp, &p);
        if case.want.is_none() {
            let err = got.unwrap_err();
            assert!(
                matches!(
                    err,
                    DropReason::NotPxeClient | DropReason::UnsupportedArch(6 | 10 | 15)
                ),
                "{}: {err}",
                case.name
            );
            continue;
        }
        let d = got.unwrap();
        assert!(d.changes.is_empty(), "proxy never writes leases");
        let (offer, r) = reply(&d);
        assert_eq!(
            offer.opts().msg_type(),
            Some(MessageType::Offer),
            "{}",
            case.name
        );
        assert_eq!(
            offer.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "{}: no address",
            case.name
        );
        assert_eq!(offer.siaddr(), BOX, "{}: siaddr", case.name);
        assert_eq!(r.to, Destination::Broadcast);
        assert_eq!(
            offer.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(BOX)),
            "{}: 54",
            case.name
        );
        assert_eq!(
            opt_bytes(&offer, OptionCode::ClientMachineIdentifier),
            Some(guid),
            "{}: 97",
            case.name
        );
        assert!(
            offer.opts().get(OptionCode::SubnetMask).is_none(),
            "no network config"
        );
        assert!(
            offer.opts().get(OptionCode::AddressLeaseTime).is_none(),
            "no lease"
        );
        check_boot(&offer, case);

        // Port 4011: the client, now with an address, asks the proxy directly.
        let req = Pkt {
            ty: Some(MessageType::Request),
            ciaddr: Some(ip("10.0.0.150")),
            ..p.clone()
        };
        let d = s
            .handle(
                T0,
                Port::Pxe,
                SocketAddrV4::new(ip("10.0.0.150"), 68),
                &req.bytes(),
            )
            .unwrap();
        let (ack, r) = reply(&d);
        assert_eq!(
            ack.opts().msg_type(),
            Some(MessageType::Ack),
            "{}",
            case.name
        );
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            r.to,
            Destination::Unicast(SocketAddrV4::new(ip("10.0.0.150"), 68))
        );
        check_boot(&ack, case);
    }
}

/// UEFI HTTP boot (issue 17 item 2): an x64 `HTTPClient` gets `HTTPClient` back and the
/// boot file as a URL on the box's HTTP server, never a TFTP server, in server and proxy mode
/// alike, with or without option 93; the reply names the client's class for the timeline.
#[test]
fn uefi_http_boot_gets_a_url_and_no_tftp_in_both_modes() {
    for (mode, arch) in [
        (Mode::Server, Some(16)),
        (Mode::Server, None),
        (Mode::Proxy, Some(16)),
        (Mode::Proxy, None),
    ] {
        let mut s = server(mode);
        let p = Pkt {
            arch,
            vc: Some("HTTPClient:Arch:00016:UNDI:003001"),
            ..Pkt::new(MessageType::Discover, 0x16)
        };
        let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
        let (offer, r) = reply(&d);
        let what = format!("{mode:?} arch {arch:?}");
        assert_eq!(
            text(&offer, OptionCode::ClassIdentifier).as_deref(),
            Some("HTTPClient"),
            "{what}"
        );
        assert_eq!(
            text(&offer, OptionCode::BootfileName).as_deref(),
            Some(HTTP_X64),
            "{what}"
        );
        assert_eq!(
            opt_bytes(&offer, OptionCode::TFTPServerName),
            None,
            "{what}: no 66"
        );
        assert_eq!(
            opt_bytes(&offer, OptionCode::VendorExtensions),
            None,
            "{what}: no 43"
        );
        assert_eq!(r.boot_file.as_deref(), Some(HTTP_X64), "{what}");
        assert_eq!(
            r.client_class.as_deref(),
            Some("HTTPClient:Arch:00016:UNDI:003001"),
            "{what}"
        );
        assert_eq!(
            offer.yiaddr().is_unspecified(),
            mode == Mode::Proxy,
            "{what}"
        );
    }
    // The recorded class is printable and bounded whatever the client sent.
    let mut s = server(Mode::Server);
    let long = format!("HTTPClient:Arch:00016\n\x01{}", "x".repeat(200));
    let p = Pkt {
        arch: Some(16),
        vc: Some(Box::leak(long.into_boxed_str())),
        ..Pkt::new(MessageType::Discover, 0x17)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    let class = reply(&d).1.client_class.clone().unwrap();
    assert!(
        class.starts_with("HTTPClient:Arch:00016\\n\\x01x"),
        "{class}"
    );
    assert_eq!(class.chars().count(), 64, "{class}");
    assert!(class.chars().all(|c| c.is_ascii_graphic()), "{class}");
}

#[test]
fn boot_file_names_are_configurable() {
    let mut cfg = config(Mode::Proxy);
    cfg.boot = BootConfig {
        http_port: 9090,
        bios: Some("bios.kpxe".into()),
        uefi_x64: Some("snponly.efi".into()),
        uefi_arm64: Some("grubnetaa64.efi".into()),
        ipxe_script: "/ipxe/start".into(),
    };
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    for (arch, uc, want) in [
        (0, None, "bios.kpxe"),
        (7, None, "snponly.efi"),
        (11, None, "grubnetaa64.efi"),
        (16, None, "http://10.0.0.1:9090/tftp/snponly.efi"),
        (19, None, "http://10.0.0.1:9090/tftp/grubnetaa64.efi"),
        (7, Some(&b"iPXE"[..]), "http://10.0.0.1:9090/ipxe/start"),
    ] {
        let p = Pkt {
            arch: Some(arch),
            uc,
            ..Pkt::new(MessageType::Discover, 1)
        };
        let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
        assert_eq!(
            text(&reply(&d).0, OptionCode::BootfileName).as_deref(),
            Some(want)
        );
    }
}

#[test]
fn a_missing_boot_file_is_refused_not_served() {
    let mut cfg = config(Mode::Server);
    cfg.boot.uefi_arm64 = None;
    let mut s = DhcpServer::new(cfg.clone(), Vec::new()).unwrap();
    for arch in [11, 19] {
        let p = Pkt {
            arch: Some(arch),
            ..Pkt::new(MessageType::Discover, 1)
        };
        let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
        assert_eq!(opt_bytes(&reply(&d).0, OptionCode::BootfileName), None);
        assert_eq!(d.no_boot_file, Some(arch));
        cfg.mode = Mode::Proxy;
        let err = send(
            &mut DhcpServer::new(cfg.clone(), Vec::new()).unwrap(),
            T0,
            Port::Dhcp,
            &p,
        )
        .unwrap_err();
        assert_eq!(err, DropReason::UnsupportedArch(arch));
    }
    // The others are still served, and iPXE on arm64 still gets its script.
    let p = Pkt {
        arch: Some(7),
        ..Pkt::new(MessageType::Discover, 2)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    assert_eq!(
        text(&reply(&d).0, OptionCode::BootfileName).as_deref(),
        Some("ipxe.efi")
    );
    let p = Pkt {
        arch: Some(11),
        uc: Some(b"iPXE"),
        ..Pkt::new(MessageType::Discover, 3)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    assert_eq!(
        text(&reply(&d).0, OptionCode::BootfileName).as_deref(),
        Some(SCRIPT)
    );
}

#[test]
fn proxy_ignores_what_is_not_its_business() {
    let mut s = server(Mode::Proxy);
    let pxe = |ty| Pkt {
        arch: Some(7),
        ..Pkt::new(ty, 1)
    };
    for (port, p, want) in [
        (Port::Dhcp, pxe(MessageType::Request), "only DISCOVER"),
        (Port::Dhcp, pxe(MessageType::Release), "only DISCOVER"),
        (Port::Pxe, pxe(MessageType::Discover), "on port 4011"),
        (Port::Dhcp, Pkt::new(MessageType::Discover, 1), "not a PXE"),
    ] {
        let err = send(&mut s, T0, port, &p).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    // An invalid option 97 is not echoed (Sidero drops the packet; we still answer).
    let p = Pkt {
        guid: Some(vec![1, 2, 3]),
        ..pxe(MessageType::Discover)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    assert_eq!(
        opt_bytes(&reply(&d).0, OptionCode::ClientMachineIdentifier),
        None
    );
}

#[test]
fn every_iana_architecture_gets_a_file_or_a_named_refusal() {
    let served = |arch: u16| match boot::classify(Some(arch), None, None, false) {
        ClientKind::Boot(fw) => Some(fw),
        ClientKind::Unsupported(a) => {
            assert_eq!(a, arch);
            None
        }
        ClientKind::Plain => panic!("arch {arch} taken for a plain client"),
    };
    for arch in 0..=41u16 {
        assert_ne!(arch_name(arch), "unassigned", "{arch} is in the registry");
        let mut s = server(Mode::Server);
        let p = Pkt {
            arch: Some(arch),
            ..Pkt::new(MessageType::Discover, 1)
        };
        let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
        let (offer, _) = reply(&d);
        assert!(
            !offer.yiaddr().is_unspecified(),
            "{arch}: an address either way"
        );
        let file = opt_bytes(&offer, OptionCode::BootfileName);
        match served(arch) {
            Some(_) => {
                assert!(file.is_some(), "{arch}: boot file");
                assert_eq!(d.no_boot_file, None, "{arch}");
            }
            None => {
                assert_eq!(file, None, "{arch}: no boot file");
                assert_eq!(d.no_boot_file, Some(arch), "{arch}: refusal reported");
                // Proxy mode drops it with a reason naming the architecture.
                let err = send(&mut server(Mode::Proxy), T0, Port::Dhcp, &p).unwrap_err();
                assert_eq!(err, DropReason::UnsupportedArch(arch));
                assert!(err.to_string().contains(arch_name(arch)), "{err}");
            }
        }
    }
    let served: Vec<u16> = (0..=41).filter(|a| served(*a).is_some()).collect();
    assert_eq!(served, [0, 7, 9, 11, 16, 19]);
    assert_eq!(arch_name(42), "unassigned");
    assert_eq!(
        DropReason::UnsupportedArch(12).to_string(),
        "no boot file for client architecture 12 (PowerPC Open Firmware, option 93)"
    );
}

// ---------------------------------------------------------------- reply destinations

#[test]
fn replies_go_to_the_hardware_address_unless_broadcast_is_asked() {
    let mut s = server(Mode::Server);
    let mac = [0x52, 0x54, 0, 0, 0, 7];
    let d = send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 7)).unwrap();
    let (offer, r) = reply(&d);
    let addr = offer.yiaddr();
    assert_eq!(r.to, Destination::Link { ip: addr, mac });
    let ack = |broadcast| Pkt {
        requested: Some(addr),
        server_id: Some(BOX),
        broadcast,
        ..Pkt::new(MessageType::Request, 7)
    };
    let d = send(&mut s, T0, Port::Dhcp, &ack(false)).unwrap();
    assert_eq!(reply(&d).1.to, Destination::Link { ip: addr, mac });
    let d = send(&mut s, T0, Port::Dhcp, &ack(true)).unwrap();
    assert_eq!(reply(&d).1.to, Destination::Broadcast);
    let d = send(
        &mut s,
        T0,
        Port::Dhcp,
        &Pkt {
            broadcast: true,
            ..Pkt::new(MessageType::Discover, 8)
        },
    )
    .unwrap();
    assert_eq!(reply(&d).1.to, Destination::Broadcast);
    // A NAK is always broadcast (the client's address is in doubt).
    let nak = Pkt {
        requested: Some(ip("10.0.0.250")),
        ..Pkt::new(MessageType::Request, 9)
    };
    let d = send(&mut s, T0, Port::Dhcp, &nak).unwrap();
    assert_eq!(reply(&d).0.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(reply(&d).1.to, Destination::Broadcast);
    // A hardware address that is not Ethernet cannot be framed: broadcast.
    let mut m = Message::from_bytes(&Pkt::new(MessageType::Discover, 10).bytes()).unwrap();
    m.set_htype(dhcproto::v4::HType::IEEE802);
    let d = s
        .handle(
            T0,
            Port::Dhcp,
            src_of(&Pkt::default()),
            &m.to_vec().unwrap(),
        )
        .unwrap();
    assert_eq!(reply(&d).1.to, Destination::Broadcast);
}

// ---------------------------------------------------------------- several interfaces

#[test]
fn each_interface_serves_its_own_pool_as_its_own_server() {
    let second = ip("10.5.0.1");
    let mut cfg = config(Mode::Server);
    cfg.server_ips.push(second);
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    let p = Pkt {
        arch: Some(7),
        ..Pkt::new(MessageType::Discover, 1)
    };
    let d = s
        .handle_on(T0, Port::Dhcp, second, src_of(&p), &p.bytes())
        .unwrap();
    let (offer, r) = reply(&d);
    assert_eq!(
        offer.yiaddr(),
        ip("10.5.0.100"),
        "the second interface's pool"
    );
    assert_eq!(r.from, second);
    assert_eq!(
        offer.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(second))
    );
    assert_eq!(offer.siaddr(), second, "boot server is this interface");
    assert_eq!(
        text(&offer, OptionCode::TFTPServerName).as_deref(),
        Some("10.5.0.1")
    );
    // The REQUEST naming the second address binds there.
    let req = Pkt {
        requested: Some(offer.yiaddr()),
        server_id: Some(second),
        ty: Some(MessageType::Request),
        ..p.clone()
    };
    let d = s
        .handle_on(T0, Port::Dhcp, second, src_of(&req), &req.bytes())
        .unwrap();
    assert_eq!(reply(&d).0.opts().msg_type(), Some(MessageType::Ack));
    // A client on the first interface is served from the first pool by the first address.
    let d = send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 2)).unwrap();
    let (offer, r) = reply(&d);
    assert_eq!((offer.yiaddr(), r.from), (ip("10.0.0.100"), BOX));
    // Neither box address is ever handed out, and a datagram for an address that is not
    // the box's is dropped.
    assert!(
        s.probe_targets(T0)
            .iter()
            .all(|a| *a != second && *a != BOX)
    );
    let err = s
        .handle_on(T0, Port::Dhcp, ip("10.9.9.9"), src_of(&p), &p.bytes())
        .unwrap_err();
    assert!(matches!(err, DropReason::Ignored(_)), "{err}");
    let mut empty = config(Mode::Server);
    empty.server_ips.clear();
    assert_eq!(
        DhcpServer::new(empty, Vec::new()).unwrap_err(),
        ServerConfigError::NoServerAddress
    );
}

// ---------------------------------------------------------------- ARP probing

#[test]
fn probes_run_ahead_of_allocation_and_a_conflict_is_held() {
    let mut cfg = config(Mode::Server);
    cfg.pools.truncate(1);
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    let first = s.probe_targets(T0);
    assert_eq!(
        first,
        ["10.0.0.100", "10.0.0.101", "10.0.0.102", "10.0.0.103"].map(ip),
        "the next addresses allocation hands out"
    );
    assert!(
        s.probe_targets(T0 + 1).is_empty(),
        "probed ones are not probed again"
    );
    // 10.0.0.100 answers: held, persisted as declined under the host's hardware id.
    let squatter = [2, 0, 0, 0, 0, 0x42];
    let held = s.arp_seen(T0 + 1, ip("10.0.0.100"), squatter).unwrap();
    assert_eq!(held.state, LeaseState::Declined);
    assert_eq!(held.expires_at, T0 + 1 + 600);
    assert_eq!(held.chaddr, squatter);
    // Answers for addresses not being probed, or that came too late, count for nothing.
    assert_eq!(s.arp_seen(T0 + 1, ip("10.0.0.150"), squatter), None);
    assert_eq!(s.arp_seen(T0 + 10, ip("10.0.0.101"), squatter), None);
    // The held address is skipped: the first client gets the next one.
    let d = send(
        &mut s,
        T0 + 2,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 1),
    )
    .unwrap();
    assert_eq!(reply(&d).0.yiaddr(), ip("10.0.0.101"));
    // Persisted, the hold survives a restart and ends with its time.
    let later = T0 + 1 + 600;
    let s2 = DhcpServer::new(config(Mode::Server), [held.clone()]).unwrap();
    assert!(!s2.leases().available_for(held.addr, &[9], T0 + 2));
    assert!(s2.leases().available_for(held.addr, &[9], later));
    // Proxy mode probes nothing.
    assert!(server(Mode::Proxy).probe_targets(T0).is_empty());
}

// ---------------------------------------------------------------- server mode messages

#[test]
fn dora_offers_then_acks_with_network_options_and_a_durable_change() {
    let mut s = server(Mode::Server);
    let d = send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 1)).unwrap();
    assert!(d.changes.is_empty(), "offers are not persisted");
    let (offer, r) = reply(&d);
    let addr = offer.yiaddr();
    assert_eq!(addr, ip("10.0.0.100"));
    // No broadcast flag: straight to the client's hardware address (RFC 2131 §4.1).
    assert_eq!(
        r.to,
        Destination::Link {
            ip: addr,
            mac: [0x52, 0x54, 0, 0, 0, 1]
        }
    );
    assert_eq!(r.from, BOX);
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.xid(), 0x1234_0001);
    assert_eq!(offer.chaddr(), &[0x52, 0x54, 0, 0, 0, 1]);
    let o = offer.opts();
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(BOX))
    );
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![ip("10.0.0.1")]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip("10.0.0.53")]))
    );
    assert_eq!(
        o.get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("rack.test".into()))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(
        o.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );

    let req = Pkt {
        requested: Some(addr),
        server_id: Some(BOX),
        ..Pkt::new(MessageType::Request, 1)
    };
    let d = send(&mut s, T0, Port::Dhcp, &req).unwrap();
    let (ack, _) = reply(&d);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), addr);
    assert_eq!(d.changes.len(), 1);
    let LeaseChange::Put(l) = &d.changes[0] else {
        panic!("{:?}", d.changes)
    };
    assert_eq!(
        (l.addr, l.state, l.expires_at),
        (addr, LeaseState::Bound, T0 + 3600)
    );
    assert_eq!(l.chaddr, vec![0x52, 0x54, 0, 0, 0, 1]);
}

#[test]
fn concurrent_discovers_get_different_addresses_and_offers_expire() {
    let mut cfg = config(Mode::Server);
    cfg.pools[0].end = ip("10.0.0.100"); // one address
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    let a = send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 1)).unwrap();
    assert_eq!(reply(&a).0.yiaddr(), ip("10.0.0.100"));
    let b = send(
        &mut s,
        T0 + 1,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 2),
    );
    assert!(matches!(b, Err(DropReason::PoolExhausted(_))), "{b:?}");
    // A's offer is held for OFFER_HOLD_SECS, then free.
    let later = T0 + server::OFFER_HOLD_SECS + 1;
    let b = send(
        &mut s,
        later,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 2),
    )
    .unwrap();
    assert_eq!(reply(&b).0.yiaddr(), ip("10.0.0.100"));
    // A comes back late: its REQUEST is refused now.
    let req = Pkt {
        requested: Some(ip("10.0.0.100")),
        server_id: Some(BOX),
        ..Pkt::new(MessageType::Request, 1)
    };
    let d = send(&mut s, later, Port::Dhcp, &req).unwrap();
    assert_eq!(reply(&d).0.opts().msg_type(), Some(MessageType::Nak));
}

#[test]
fn many_clients_never_share_an_address() {
    let mut s = server(Mode::Server);
    let mut seen = HashMap::new();
    for mac in 0..100u8 {
        let addr = dora(&mut s, T0, mac);
        assert!(seen.insert(addr, mac).is_none(), "{addr} twice");
        assert_ne!(addr, ip("10.0.0.10"), "reserved address never dynamic");
    }
    let d = send(
        &mut s,
        T0,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 200),
    );
    assert!(
        matches!(d, Err(DropReason::PoolExhausted(_))),
        "100-address pool is full"
    );
}

#[test]
fn selecting_another_server_withdraws_our_offer() {
    let mut cfg = config(Mode::Server);
    cfg.pools[0].end = ip("10.0.0.100");
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 1)).unwrap();
    let req = Pkt {
        requested: Some(ip("192.168.1.50")),
        server_id: Some(ip("192.168.1.1")),
        ..Pkt::new(MessageType::Request, 1)
    };
    let err = send(&mut s, T0, Port::Dhcp, &req).unwrap_err();
    assert_eq!(err, DropReason::OtherServer(ip("192.168.1.1")));
    let b = send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 2)).unwrap();
    assert_eq!(reply(&b).0.yiaddr(), ip("10.0.0.100"));
}

/// (description, request, expected reply type or None for silence)
#[test]
fn request_states_table() {
    let mut s = server(Mode::Server);
    let a = dora(&mut s, T0, 1); // 10.0.0.100 bound to client 1
    let b = dora(&mut s, T0, 2); // 10.0.0.101 bound to client 2
    let now = T0 + 100;
    let req = |mac, requested: Option<Ipv4Addr>, ciaddr: Option<Ipv4Addr>, broadcast| Pkt {
        requested,
        ciaddr,
        broadcast,
        ..Pkt::new(MessageType::Request, mac)
    };
    let unicast = |a| Destination::Unicast(SocketAddrV4::new(a, 68));
    let link = |ip, mac| Destination::Link {
        ip,
        mac: [0x52, 0x54, 0, 0, 0, mac],
    };
    let cases: Vec<(&str, Pkt, MessageType, Destination, Ipv4Addr)> = vec![
        (
            "init-reboot, own address",
            req(1, Some(a), None, false),
            MessageType::Ack,
            link(a, 1),
            a,
        ),
        (
            "init-reboot, own address, broadcast flag",
            req(1, Some(a), None, true),
            MessageType::Ack,
            Destination::Broadcast,
            a,
        ),
        (
            "init-reboot, someone else's",
            req(1, Some(b), None, false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "init-reboot, other network",
            req(3, Some(ip("192.168.9.9")), None, false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "init-reboot, unknown client, free address",
            req(3, Some(ip("10.0.0.150")), None, false),
            MessageType::Ack,
            link(ip("10.0.0.150"), 3),
            ip("10.0.0.150"),
        ),
        (
            "init-reboot, outside the range",
            req(4, Some(ip("10.0.0.250")), None, false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "init-reboot, the box's own address",
            req(4, Some(BOX), None, false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "init-reboot, reserved for another MAC",
            req(4, Some(ip("10.0.0.10")), None, false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "renewing",
            req(2, None, Some(b), false),
            MessageType::Ack,
            unicast(b),
            b,
        ),
        (
            "rebinding (broadcast)",
            req(2, None, Some(b), true),
            MessageType::Ack,
            unicast(b),
            b,
        ),
        (
            "renewing someone else's",
            req(5, None, Some(a), false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "renewing on a network not served",
            req(5, None, Some(ip("172.16.0.5")), false),
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
        ),
    ];
    for (name, p, want, to, yiaddr) in cases {
        let d = send(&mut s, now, Port::Dhcp, &p).unwrap();
        let (m, r) = reply(&d);
        assert_eq!(m.opts().msg_type(), Some(want), "{name}");
        assert_eq!(r.to, to, "{name}");
        assert_eq!(m.yiaddr(), yiaddr, "{name}");
        if want == MessageType::Ack {
            assert!(
                matches!(&d.changes[..], [LeaseChange::Put(l)] if l.expires_at == now + 3600),
                "{name}: lease extended: {:?}",
                d.changes
            );
        } else {
            assert!(d.changes.is_empty(), "{name}");
            assert!(
                m.opts().get(OptionCode::Message).is_some(),
                "{name}: NAK says why"
            );
        }
    }
    // A request with nothing to go on is dropped, not answered.
    let err = send(&mut s, now, Port::Dhcp, &Pkt::new(MessageType::Request, 9)).unwrap_err();
    assert!(matches!(err, DropReason::Malformed(_)), "{err}");
}

#[test]
fn decline_quarantines_the_address() {
    let mut cfg = config(Mode::Server);
    cfg.pools[0].end = ip("10.0.0.101");
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    let a = dora(&mut s, T0, 1);
    let decline = Pkt {
        requested: Some(a),
        server_id: Some(BOX),
        ..Pkt::new(MessageType::Decline, 1)
    };
    // Another client cannot decline it for us.
    assert!(
        send(
            &mut s,
            T0,
            Port::Dhcp,
            &Pkt {
                mac: 7,
                ..decline.clone()
            }
        )
        .is_err()
    );
    let d = send(&mut s, T0, Port::Dhcp, &decline).unwrap();
    assert!(d.reply.is_none(), "DECLINE gets no reply");
    assert!(matches!(&d.changes[..], [LeaseChange::Put(l)]
        if l.addr == a && l.state == LeaseState::Declined && l.expires_at == T0 + 600));
    // The client gets another address; a third client finds the pool exhausted.
    let b = dora(&mut s, T0, 1);
    assert_ne!(a, b);
    assert!(send(&mut s, T0, Port::Dhcp, &Pkt::new(MessageType::Discover, 3)).is_err());
    // After the quarantine the address is usable again.
    let d = send(
        &mut s,
        T0 + 601,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 3),
    )
    .unwrap();
    assert_eq!(reply(&d).0.yiaddr(), a);
}

#[test]
fn release_frees_the_address_and_keeps_affinity() {
    let mut cfg = config(Mode::Server);
    cfg.pools[0].end = ip("10.0.0.101");
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    let a = dora(&mut s, T0, 1);
    let rel = Pkt {
        ciaddr: Some(a),
        server_id: Some(BOX),
        ..Pkt::new(MessageType::Release, 1)
    };
    assert!(
        send(
            &mut s,
            T0,
            Port::Dhcp,
            &Pkt {
                mac: 2,
                ..rel.clone()
            }
        )
        .is_err(),
        "not yours"
    );
    let d = send(&mut s, T0, Port::Dhcp, &rel).unwrap();
    assert!(d.reply.is_none());
    assert!(matches!(&d.changes[..], [LeaseChange::Put(l)] if l.state == LeaseState::Released));
    // The same client gets the same address back.
    assert_eq!(dora(&mut s, T0 + 5, 1), a);
    // Released again, another client may take it (after the fresh one is used).
    send(&mut s, T0 + 6, Port::Dhcp, &rel).unwrap();
    let b = dora(&mut s, T0 + 6, 2);
    let c = dora(&mut s, T0 + 6, 3);
    assert_eq!([b, c].iter().filter(|x| **x == a).count(), 1);
}

#[test]
fn expired_leases_are_reused() {
    let mut cfg = config(Mode::Server);
    cfg.pools[0].end = ip("10.0.0.100");
    cfg.pools[0].lease_time_secs = 60;
    let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
    let a = dora(&mut s, T0, 1);
    assert!(
        send(
            &mut s,
            T0 + 59,
            Port::Dhcp,
            &Pkt::new(MessageType::Discover, 2)
        )
        .is_err()
    );
    let d = send(
        &mut s,
        T0 + 61,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 2),
    )
    .unwrap();
    assert_eq!(reply(&d).0.yiaddr(), a);
}

#[test]
fn inform_answers_with_configuration_only() {
    let mut s = server(Mode::Server);
    let p = Pkt {
        ciaddr: Some(ip("10.0.0.7")),
        arch: Some(7),
        ..Pkt::new(MessageType::Inform, 1)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    let (m, r) = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.ciaddr(), ip("10.0.0.7"));
    assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(m.opts().get(OptionCode::Router).is_some());
    assert_eq!(
        text(&m, OptionCode::BootfileName).as_deref(),
        Some("ipxe.efi")
    );
    assert_eq!(
        r.to,
        Destination::Unicast(SocketAddrV4::new(ip("10.0.0.7"), 68))
    );
    assert!(d.changes.is_empty());
}

#[test]
fn reservations_win_and_are_protected() {
    let mut s = server(Mode::Server);
    let d = send(
        &mut s,
        T0,
        Port::Dhcp,
        &Pkt::new(MessageType::Discover, 0x99),
    )
    .unwrap();
    let (m, _) = reply(&d);
    assert_eq!(m.yiaddr(), ip("10.0.0.10"));
    assert_eq!(
        m.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node-r".into()))
    );
    assert_eq!(dora(&mut s, T0, 0x99), ip("10.0.0.10"));
    // The reserved client asking for a pool address is told no.
    let p = Pkt {
        requested: Some(ip("10.0.0.150")),
        ..Pkt::new(MessageType::Request, 0x99)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    assert_eq!(reply(&d).0.opts().msg_type(), Some(MessageType::Nak));
}

#[test]
fn relayed_requests_use_the_relay_subnet_and_echo_option_82() {
    let mut s = server(Mode::Server);
    let relay = ip("10.5.0.1");
    let info = vec![1, 3, b'p', b'0', b'1'];
    let p = Pkt {
        giaddr: Some(relay),
        relay_info: Some(info.clone()),
        ..Pkt::new(MessageType::Discover, 1)
    };
    let d = send(&mut s, T0, Port::Dhcp, &p).unwrap();
    let r = d.reply.as_ref().unwrap();
    assert_eq!(r.to, Destination::Relay(relay));
    let m = Message::from_bytes(&r.packet).unwrap();
    assert_eq!(m.yiaddr(), ip("10.5.0.100"));
    assert_eq!(m.giaddr(), relay);
    let tail = &r.packet[r.packet.len() - info.len() - 3..];
    assert_eq!(
        tail[..2],
        [82, info.len() as u8],
        "option 82 last, verbatim"
    );
    assert_eq!(&tail[2..2 + info.len()], &info[..]);
    // A NAK through the relay asks it to broadcast.
    let bad = Pkt {
        giaddr: Some(relay),
        requested: Some(ip("10.0.0.150")),
        ..Pkt::new(MessageType::Request, 1)
    };
    let d = send(&mut s, T0, Port::Dhcp, &bad).unwrap();
    let (m, r) = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    assert!(m.flags().broadcast());
    assert_eq!(r.to, Destination::Relay(relay));
    // A relay on a subnet without a pool gets nothing.
    let p = Pkt {
        giaddr: Some(ip("172.16.0.1")),
        ..Pkt::new(MessageType::Discover, 1)
    };
    assert_eq!(
        send(&mut s, T0, Port::Dhcp, &p).unwrap_err(),
        DropReason::NoPool(ip("172.16.0.1"))
    );
}

#[test]
fn leases_survive_a_restart() {
    let mut s = server(Mode::Server);
    let mut stored: HashMap<Ipv4Addr, Lease> = HashMap::new();
    let mut apply = |changes: &[LeaseChange]| {
        for c in changes {
            match c {
                LeaseChange::Put(l) => {
                    stored.insert(l.addr, l.clone());
                }
                LeaseChange::Remove(a) => {
                    stored.remove(a);
                }
            }
        }
    };
    let mut addrs = Vec::new();
    for mac in 1..=3 {
        let d = send(
            &mut s,
            T0,
            Port::Dhcp,
            &Pkt::new(MessageType::Discover, mac),
        )
        .unwrap();
        let a = reply(&d).0.yiaddr();
        let req = Pkt {
            requested: Some(a),
            server_id: Some(BOX),
            ..Pkt::new(MessageType::Request, mac)
        };
        apply(&send(&mut s, T0, Port::Dhcp, &req).unwrap().changes);
        addrs.push(a);
    }
    let mut s = DhcpServer::new(config(Mode::Server), stored.values().cloned()).unwrap();
    // New clients never get the stored addresses, even when they ask for them.
    for mac in 10..20 {
        let p = Pkt {
            requested: Some(addrs[0]),
            ..Pkt::new(MessageType::Discover, mac)
        };
        let d = send(&mut s, T0 + 10, Port::Dhcp, &p).unwrap();
        assert!(!addrs.contains(&reply(&d).0.yiaddr()));
    }
    // Old clients get theirs back.
    for (i, mac) in (1..=3).enumerate() {
        let d = send(
            &mut s,
            T0 + 10,
            Port::Dhcp,
            &Pkt::new(MessageType::Discover, mac),
        )
        .unwrap();
        assert_eq!(reply(&d).0.yiaddr(), addrs[i]);
    }
}

#[test]
fn bad_core_config_is_an_error() {
    let mut c = config(Mode::Server);
    c.pools[0].start = ip("10.0.0.200");
    assert!(matches!(
        DhcpServer::new(c, Vec::new()),
        Err(ServerConfigError::Pool { index: 0, .. })
    ));
    let mut c = config(Mode::Server);
    c.pools[0].end = ip("10.0.1.5");
    assert!(DhcpServer::new(c, Vec::new()).is_err());
    let mut c = config(Mode::Server);
    c.reservations[0].ip = ip("192.168.0.5");
    assert!(matches!(
        DhcpServer::new(c, Vec::new()),
        Err(ServerConfigError::Reservation { .. })
    ));
    let mut c = config(Mode::Server);
    c.pools.clear();
    assert_eq!(
        DhcpServer::new(c, Vec::new()).unwrap_err(),
        ServerConfigError::NoPools
    );
}

// ---------------------------------------------------------------- malformed input

#[test]
fn malformed_packets_are_dropped_with_a_reason() {
    let good = Pkt::new(MessageType::Discover, 1).bytes();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "shorter than"),
        ("short", good[..100].to_vec(), "shorter than"),
        ("reply op", with(&|b| b[0] = 2), "not a BOOTREQUEST"),
        ("hlen 17", with(&|b| b[2] = 17), "hlen"),
        ("hlen 0", with(&|b| b[2] = 0), "hlen"),
        ("no cookie", with(&|b| b[236] = 0), "magic cookie"),
        (
            "no END",
            with(&|b| {
                b.pop();
            }),
            "not terminated",
        ),
        (
            "truncated option",
            with(&|b| {
                b.pop();
                b.extend_from_slice(&[60, 40, b'x']);
            }),
            "runs past",
        ),
        (
            "bad 53 length",
            with(&|b| {
                b.truncate(240);
                b.extend_from_slice(&[53, 2, 1, 1, 255]);
            }),
            "option 53",
        ),
        (
            "bad 50 length",
            with(&|b| {
                b.pop();
                b.extend_from_slice(&[50, 3, 1, 2, 3, 255]);
            }),
            "option 50",
        ),
        (
            "BOOTP",
            with(&|b| {
                b.truncate(240);
                b.push(255);
            }),
            "BOOTP",
        ),
        (
            "offer from a client",
            Pkt::new(MessageType::Offer, 1).bytes(),
            "not handled",
        ),
    ];
    let mut s = server(Mode::Server);
    for (name, bytes, want) in cases {
        let err = s
            .handle(
                T0,
                Port::Dhcp,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                &bytes,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    // Options dhcproto would panic on (81 short, 94 wrong length) are skipped, not fatal.
    let odd = with(&|b| {
        b.pop();
        b.extend_from_slice(&[81, 1, 0, 94, 2, 1, 2, 80, 3, 1, 2, 3, 121, 3, 40, 1, 2, 255]);
    });
    let d = s.handle(
        T0,
        Port::Dhcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        &odd,
    );
    assert!(d.is_ok(), "{d:?}");
    // Port 4011 is not served in server mode.
    assert!(send(&mut s, T0, Port::Pxe, &Pkt::new(MessageType::Discover, 1)).is_err());
}

/// Deterministic xorshift, so the fuzz smoke is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Bounded fuzz smoke (the real fuzzer is `fuzz/fuzz_targets/dhcp_packet.rs`): random
/// bytes and random mutations of valid packets, through parse + both modes, must never
/// panic. A few seconds in debug builds.
#[test]
fn fuzz_smoke_never_panics() {
    let seeds: Vec<Vec<u8>> = boot_cases()
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            [
                MessageType::Discover,
                MessageType::Request,
                MessageType::Inform,
                MessageType::Release,
                MessageType::Decline,
            ]
            .into_iter()
            .map(move |ty| {
                Pkt {
                    arch: c.arch,
                    vc: c.vc,
                    uc: c.uc,
                    ipxe175: c.ipxe175,
                    requested: Some(Ipv4Addr::new(10, 0, 0, 100 + i as u8)),
                    server_id: (i % 2 == 0).then_some(BOX),
                    ciaddr: (i % 3 == 0).then_some(Ipv4Addr::new(10, 0, 0, 100 + i as u8)),
                    giaddr: (i % 5 == 0).then_some(Ipv4Addr::new(10, 5, 0, 1)),
                    relay_info: (i % 4 == 0).then(|| vec![1, 2, 3, 4]),
                    ..Pkt::new(ty, i as u8)
                }
                .bytes()
            })
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut servers = [server(Mode::Server), server(Mode::Proxy)];
    for round in 0..20_000u64 {
        let mut b = if round % 10 == 0 {
            let n = (rng.next() % 600) as usize;
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            seeds[(rng.next() as usize) % seeds.len()].clone()
        };
        for _ in 0..(rng.next() % 8) {
            if b.is_empty() {
                break;
            }
            let i = (rng.next() as usize) % b.len();
            match rng.next() % 4 {
                0 => b[i] = rng.next() as u8,
                1 => b.truncate(i),
                2 => b.insert(i, rng.next() as u8),
                _ => {
                    if i >= 240 {
                        b[i] = [0, 12, 43, 50, 53, 54, 60, 61, 77, 82, 93, 97, 175, 255]
                            [(rng.next() % 14) as usize];
                    }
                }
            }
        }
        let port = if rng.next().is_multiple_of(4) {
            Port::Pxe
        } else {
            Port::Dhcp
        };
        for s in &mut servers {
            if let Ok(d) = s.handle(
                T0 + round / 100,
                port,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                &b,
            ) && let Some(r) = d.reply
            {
                // Every reply we produce decodes again.
                assert!(Message::from_bytes(&r.packet).is_ok());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Action {
    Discover(u8),
    Select(u8),
    InitReboot(u8, u8),
    Renew(u8),
    Release(u8),
    Decline(u8),
    Wait(u16),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..12u8).prop_map(Action::Discover),
        (0..12u8).prop_map(Action::Select),
        (0..12u8, 0..12u8).prop_map(|(c, a)| Action::InitReboot(c, a)),
        (0..12u8).prop_map(Action::Renew),
        (0..12u8).prop_map(Action::Release),
        (0..12u8).prop_map(Action::Decline),
        (0..200u16).prop_map(Action::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever 12 clients do against an 8-address pool, no address is ACKed to a client
    /// while another client's ACK on it is still running (not released, declined or expired).
    #[test]
    fn never_hands_out_an_address_twice(actions in proptest::collection::vec(action(), 1..120)) {
        let mut cfg = config(Mode::Server);
        cfg.pools[0].end = ip("10.0.0.107");
        cfg.pools[0].lease_time_secs = 300;
        cfg.reservations.clear();
        let mut s = DhcpServer::new(cfg, Vec::new()).unwrap();
        let mut now = T0;
        let mut offered: HashMap<u8, Ipv4Addr> = HashMap::new();
        let mut bound: HashMap<u8, Ipv4Addr> = HashMap::new();
        // addr -> (client, expires)
        let mut owners: HashMap<Ipv4Addr, (u8, u64)> = HashMap::new();
        for a in actions {
            let (mac, p) = match a {
                Action::Wait(secs) => { now += u64::from(secs); continue; }
                Action::Discover(c) => (c, Pkt::new(MessageType::Discover, c)),
                Action::Select(c) => (c, Pkt {
                    requested: offered.get(&c).copied().or(Some(ip("10.0.0.100"))),
                    server_id: Some(BOX),
                    ..Pkt::new(MessageType::Request, c)
                }),
                Action::InitReboot(c, n) => (c, Pkt {
                    requested: Some(Ipv4Addr::new(10, 0, 0, 100 + n % 8)),
                    ..Pkt::new(MessageType::Request, c)
                }),
                Action::Renew(c) => (c, Pkt {
                    ciaddr: Some(bound.get(&c).copied().unwrap_or(ip("10.0.0.101"))),
                    ..Pkt::new(MessageType::Request, c)
                }),
                Action::Release(c) => (c, Pkt {
                    ciaddr: bound.get(&c).copied(),
                    server_id: Some(BOX),
                    ..Pkt::new(MessageType::Release, c)
                }),
                Action::Decline(c) => (c, Pkt {
                    requested: bound.get(&c).copied(),
                    server_id: Some(BOX),
                    ..Pkt::new(MessageType::Decline, c)
                }),
            };
            let Ok(d) = send(&mut s, now, Port::Dhcp, &p) else { continue };
            match (&a, d.reply.as_ref()) {
                (Action::Release(c) | Action::Decline(c), None) => {
                    if let Some(addr) = bound.remove(c) {
                        owners.remove(&addr);
                    }
                }
                (_, Some(r)) => {
                    let m = Message::from_bytes(&r.packet).unwrap();
                    let addr = m.yiaddr();
                    match m.opts().msg_type() {
                        Some(MessageType::Offer) => { offered.insert(mac, addr); }
                        Some(MessageType::Ack) => {
                            if let Some((other, until)) = owners.get(&addr) {
                                prop_assert!(
                                    *other == mac || *until <= now,
                                    "{addr} ACKed to {mac} while {other} holds it until {until} (now {now})"
                                );
                            }
                            if let Some(old) = bound.insert(mac, addr) && old != addr {
                                owners.remove(&old);
                            }
                            owners.insert(addr, (mac, now + 300));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

fn expiries(leases: &mut [Lease]) -> impl Iterator<Item = &mut u64> {
    leases.iter_mut().map(|l| &mut l.expires_at)
}

/// The restart rule of lease time (`clamp_after_restart`): a lease written by an earlier
/// process, loaded after the wall clock was set back a day, lasts at most one lease time
/// more, never the day; set forward a day, it has ended and its address is free again.
#[test]
fn a_restart_after_a_wall_clock_jump_keeps_no_lease_beyond_one_lease_time() {
    let mut cfg = config(Mode::Server);
    cfg.pools[0].end = ip("10.0.0.100");
    cfg.pools[0].lease_time_secs = 60;
    let mut s = DhcpServer::new(cfg.clone(), Vec::new()).unwrap();
    let a = dora(&mut s, T0, 1);
    let stored: Vec<Lease> = s.leases().leases().collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].expires_at, T0 + 60);

    // Set back a day while the box was down: without the clamp the lease would end in a
    // day and a minute.
    let back = T0 - 86_400;
    let mut loaded = stored.clone();
    assert_eq!(clamp_after_restart(expiries(&mut loaded), back, 600), 1);
    assert_eq!(loaded[0].expires_at, back + 600);
    let mut s = DhcpServer::new(cfg.clone(), loaded).unwrap();
    let other = Pkt::new(MessageType::Discover, 2);
    assert!(
        send(&mut s, back + 599, Port::Dhcp, &other).is_err(),
        "still held"
    );
    let d = send(&mut s, back + 601, Port::Dhcp, &other).unwrap();
    assert_eq!(
        reply(&d).0.yiaddr(),
        a,
        "free after one lease time, not a day"
    );
    // Its own client renews it meanwhile: the same address.
    let mut loaded = stored.clone();
    clamp_after_restart(expiries(&mut loaded), back, 600);
    let mut s = DhcpServer::new(cfg.clone(), loaded).unwrap();
    assert_eq!(dora(&mut s, back + 10, 1), a);

    // Within the limit nothing changes.
    let mut loaded = stored.clone();
    assert_eq!(clamp_after_restart(expiries(&mut loaded), T0 + 30, 600), 0);
    assert_eq!(loaded, stored);

    // Set forward a day across a restart: as a day of downtime, the lease has ended.
    let fwd = T0 + 86_400;
    let mut loaded = stored.clone();
    assert_eq!(clamp_after_restart(expiries(&mut loaded), fwd, 600), 0);
    let mut s = DhcpServer::new(cfg, loaded).unwrap();
    let d = send(&mut s, fwd, Port::Dhcp, &other).unwrap();
    assert_eq!(reply(&d).0.yiaddr(), a);
}
