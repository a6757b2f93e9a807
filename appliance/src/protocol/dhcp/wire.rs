//! DHCPv4 wire format: turning datagram bytes into a checked [`Request`] and building
//! replies. `dhcproto` does the header/option codec; this file screens the bytes first.
//!
//! Why a screen: `dhcproto` 0.15 panics on some inputs (an `hlen` above 16 makes
//! `Message::chaddr` slice out of bounds; options 80, 81 and 94 with unexpected lengths hit
//! `debug_assert!`/overflow panics) and stops decoding options at the first malformed one.
//! So [`parse`] walks the option area itself, keeps only the options the core reads (after
//! checking their lengths), and hands `dhcproto` a clean buffer. Options the core echoes
//! verbatim (82 relay agent information) or only tests for (175 iPXE) are taken from the
//! raw walk and never decoded by `dhcproto`.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

/// RFC 2131 magic cookie, at offset 236.
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header up to and including the magic cookie.
const HEADER_LEN: usize = 240;

/// Why a datagram was not answered. Logged by the glue; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("BOOTP request without a DHCP message type (BOOTP is not served)")]
    NoMessageType,
    #[error("message type {0} is not handled here")]
    UnhandledMessageType(String),
    #[error("addressed to another server ({0})")]
    OtherServer(Ipv4Addr),
    #[error("not a PXE/HTTP-boot client (no option 93, no PXEClient/HTTPClient vendor class)")]
    NotPxeClient,
    #[error(
        "no boot file for client architecture {0} ({name}, option 93)",
        name = super::boot::arch_name(*.0)
    )]
    UnsupportedArch(u16),
    #[error("no pool serves the client's subnet (giaddr {0})")]
    NoPool(Ipv4Addr),
    #[error("pool exhausted for subnet of {0}")]
    PoolExhausted(Ipv4Addr),
    #[error("{0}")]
    Ignored(&'static str),
}

/// A request that passed the screen, with the fields the core reads pulled out.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Message,
    pub msg_type: MessageType,
    /// Hardware address (`chaddr[..hlen]`), at most 16 bytes.
    pub chaddr: Vec<u8>,
    /// Option 61 when present and non-empty, else `htype` + `chaddr`.
    pub client_id: Vec<u8>,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// Option 93, first architecture in the list.
    pub arch: Option<u16>,
    /// Option 60.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77.
    pub user_class: Option<Vec<u8>>,
    /// Option 97, raw.
    pub machine_id: Option<Vec<u8>>,
    /// Option 175 (iPXE encapsulated options) was present.
    pub ipxe_encap: bool,
    /// Option 82, raw value (all fragments concatenated), echoed to the relay.
    pub relay_info: Option<Vec<u8>>,
}

impl Request {
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.msg.ciaddr()
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        self.msg.giaddr()
    }
    pub fn broadcast_flag(&self) -> bool {
        self.msg.flags().broadcast()
    }
}

/// Options the core reads, with the exact or minimum length it accepts.
fn keep(code: u8, len: usize) -> Result<bool, String> {
    let exact = |n: usize| {
        if len == n {
            Ok(true)
        } else {
            Err(format!("option {code} has length {len}, expected {n}"))
        }
    };
    match code {
        50 | 51 | 54 => exact(4),
        53 => exact(1),
        57 => exact(2),
        93 => {
            if len >= 2 {
                Ok(true)
            } else {
                Err(format!("option 93 has length {len}, expected at least 2"))
            }
        }
        12 | 55 | 60 | 61 | 77 | 97 => Ok(true),
        _ => Ok(false),
    }
}

/// Screens and decodes one datagram.
pub fn parse(bytes: &[u8]) -> Result<Request, DropReason> {
    if bytes.len() < HEADER_LEN {
        return Err(DropReason::Malformed(format!(
            "{} bytes, shorter than the 240-byte DHCP header",
            bytes.len()
        )));
    }
    if bytes[0] != 1 {
        return Err(DropReason::NotRequest(bytes[0]));
    }
    let hlen = bytes[2] as usize;
    if hlen == 0 || hlen > 16 {
        return Err(DropReason::Malformed(format!("hlen {hlen} outside 1..=16")));
    }
    if bytes[236..240] != MAGIC {
        return Err(DropReason::Malformed("no DHCP magic cookie".into()));
    }

    let mut clean = Vec::with_capacity(bytes.len());
    clean.extend_from_slice(&bytes[..HEADER_LEN]);
    let mut relay_info: Option<Vec<u8>> = None;
    let mut ipxe_encap = false;
    let mut i = HEADER_LEN;
    let mut ended = false;
    while i < bytes.len() {
        let code = bytes[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            ended = true;
            break;
        }
        let Some(&len) = bytes.get(i + 1) else {
            return Err(DropReason::Malformed(format!(
                "option {code} truncated (no length)"
            )));
        };
        let len = len as usize;
        let Some(value) = bytes.get(i + 2..i + 2 + len) else {
            return Err(DropReason::Malformed(format!(
                "option {code} length {len} runs past the end of the packet"
            )));
        };
        match code {
            82 => relay_info
                .get_or_insert_with(Vec::new)
                .extend_from_slice(value),
            175 => ipxe_encap = true,
            12 if std::str::from_utf8(value).is_err() => {} // hostname we cannot show: skip
            _ => {
                if keep(code, len).map_err(DropReason::Malformed)? {
                    clean.extend_from_slice(&bytes[i..i + 2 + len]);
                }
            }
        }
        i += 2 + len;
    }
    if !ended {
        return Err(DropReason::Malformed(
            "options not terminated by END".into(),
        ));
    }
    clean.push(255);

    let msg =
        Message::from_bytes(&clean).map_err(|e| DropReason::Malformed(format!("decode: {e}")))?;
    let opts = msg.opts();
    let msg_type = opts.msg_type().ok_or(DropReason::NoMessageType)?;
    let chaddr = msg.chaddr().to_vec();
    let client_id = match opts.get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => id.clone(),
        _ => {
            let mut id = Vec::with_capacity(1 + chaddr.len());
            id.push(u8::from(msg.htype()));
            id.extend_from_slice(&chaddr);
            id
        }
    };
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    let bytes_of = |code| match opts.get(code) {
        Some(DhcpOption::ClassIdentifier(v))
        | Some(DhcpOption::UserClass(v))
        | Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let vendor_class = bytes_of(OptionCode::ClassIdentifier);
    let user_class = bytes_of(OptionCode::UserClass);
    let machine_id = bytes_of(OptionCode::ClientMachineIdentifier);
    Ok(Request {
        msg_type,
        chaddr,
        client_id,
        requested_ip,
        server_id,
        hostname,
        arch,
        vendor_class,
        user_class,
        machine_id,
        ipxe_encap,
        relay_info,
        msg,
    })
}

/// Starts a BOOTREPLY for `req`: xid, htype, chaddr, flags and giaddr copied.
pub fn reply_to(req: &Request, msg_type: MessageType) -> Message {
    let mut m = Message::new_with_id(
        req.msg.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &req.chaddr,
    );
    m.set_opcode(v4::Opcode::BootReply)
        .set_htype(req.msg.htype())
        .set_flags(req.msg.flags());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    m
}

/// Encodes a reply, appending option 82 verbatim when the request came through a relay.
pub fn encode(msg: &Message, relay_info: Option<&[u8]>) -> Result<Vec<u8>, DropReason> {
    let mut out = msg
        .to_vec()
        .map_err(|e| DropReason::Malformed(format!("cannot encode reply: {e}")))?;
    if let Some(info) = relay_info.filter(|i| !i.is_empty() && i.len() <= 255) {
        // dhcproto ends the option list with END; option 82 goes right before it (RFC 3046
        // asks for it last).
        if out.last() == Some(&255) {
            out.pop();
            out.push(82);
            out.push(info.len() as u8);
            out.extend_from_slice(info);
            out.push(255);
        }
    }
    // dhcproto reserves 512 bytes; a reply is ~300. Under a storm, replies wait by the
    // thousand for their group commit (an ACK goes out only once its lease is durable) or
    // the next send batch, so their size is part of the peak RSS (issue 16).
    out.shrink_to_fit();
    Ok(out)
}

/// The PXE vendor options (option 43) a proxy or server puts in a `PXEClient` reply:
/// sub-option 6 (PXE_DISCOVERY_CONTROL) = 8, "a boot file name is present: download it,
/// no boot-server discovery, no menu". Without it some PXE ROMs ignore a proxy offer or go
/// looking for a boot server on port 4011 (PXE-E55).
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 0x08, 255];

/// Option 175: iPXE's encapsulated options.
pub const IPXE_ENCAP: u8 = 175;
/// Encapsulated 175.176 `no-pxedhcp` = 1: do not wait for or request ProxyDHCP.
pub const IPXE_NO_PXEDHCP: [u8; 3] = [176, 1, 1];
