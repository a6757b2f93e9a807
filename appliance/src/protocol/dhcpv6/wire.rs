//! DHCPv6 wire format (RFC 8415 §8, §21), by hand: a message is a type, a 3-byte
//! transaction id and TLV options (code u16, length u16); IA_NA and IAADDR carry options of
//! their own. [`parse`] checks every length before it reads and keeps only what the server
//! uses, so no input can make it panic; [`Out`] builds replies.

use std::net::Ipv6Addr;

pub const SOLICIT: u8 = 1;
pub const ADVERTISE: u8 = 2;
pub const REQUEST: u8 = 3;
pub const CONFIRM: u8 = 4;
pub const RENEW: u8 = 5;
pub const REBIND: u8 = 6;
pub const REPLY: u8 = 7;
pub const RELEASE: u8 = 8;
pub const DECLINE: u8 = 9;
pub const INFORMATION_REQUEST: u8 = 11;
pub const RELAY_FORW: u8 = 12;

pub const OPT_CLIENTID: u16 = 1;
pub const OPT_SERVERID: u16 = 2;
pub const OPT_IA_NA: u16 = 3;
pub const OPT_IAADDR: u16 = 5;
pub const OPT_ORO: u16 = 6;
pub const OPT_STATUS_CODE: u16 = 13;
pub const OPT_RAPID_COMMIT: u16 = 14;
pub const OPT_USER_CLASS: u16 = 15;
pub const OPT_VENDOR_CLASS: u16 = 16;
pub const OPT_DNS_SERVERS: u16 = 23;
pub const OPT_BOOTFILE_URL: u16 = 59;
pub const OPT_BOOTFILE_PARAM: u16 = 60;
pub const OPT_CLIENT_ARCH_TYPE: u16 = 61;

pub const STATUS_SUCCESS: u16 = 0;
pub const STATUS_NO_ADDRS_AVAIL: u16 = 2;
pub const STATUS_NO_BINDING: u16 = 3;
pub const STATUS_NOT_ON_LINK: u16 = 4;

/// Longest DUID RFC 8415 §11.1 allows (128 octets) plus its 2-byte type.
pub const MAX_DUID: usize = 130;

/// Why a datagram was not answered. Logged by the glue; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("malformed DHCPv6 message: {0}")]
    Malformed(String),
    #[error("message type {0} is not served here")]
    Unhandled(u8),
    #[error("addressed to another server")]
    OtherServer,
    #[error("{0}")]
    Ignored(&'static str),
}

/// One IA_NA: its IAID and the addresses named in it (by a client's request, or a server's
/// answer with their lifetimes and the IA's status, which the agent's client reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub addrs: Vec<Ipv6Addr>,
    /// (preferred, valid) lifetime of each of `addrs`, in the same order.
    pub lifetimes: Vec<(u32, u32)>,
    /// The status code option inside the IA_NA, if any.
    pub status: Option<u16>,
}

/// A screened client message with the fields the server reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub msg_type: u8,
    pub xid: [u8; 3],
    pub client_id: Option<Vec<u8>>,
    pub server_id: Option<Vec<u8>>,
    pub ia_na: Vec<IaNa>,
    /// Option 61: the first architecture type listed.
    pub arch: Option<u16>,
    /// Option 16: the first vendor-class data item (e.g. `HTTPClient:Arch:00016:UNDI:003001`).
    pub vendor_class: Option<Vec<u8>>,
    /// Option 15: the first user-class data item (`iPXE` for iPXE).
    pub user_class: Option<Vec<u8>>,
    /// Option 6: the option codes the client asked for.
    pub oro: Vec<u16>,
    pub rapid_commit: bool,
    /// Option 13 at the top level (a server's answer).
    pub status: Option<u16>,
    /// Option 23 (a server's answer).
    pub dns: Vec<Ipv6Addr>,
}

fn malformed(s: impl Into<String>) -> DropReason {
    DropReason::Malformed(s.into())
}

/// Splits `bytes` into (code, value) options, checking every length (also for reading replies
/// in tests and the fuzz target).
pub fn options(mut bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, DropReason> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(malformed("truncated option header"));
        }
        let code = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let rest = &bytes[4..];
        if rest.len() < len {
            return Err(malformed(format!("option {code} runs past the end")));
        }
        out.push((code, &rest[..len]));
        bytes = &rest[len..];
        if out.len() > 256 {
            return Err(malformed("more than 256 options"));
        }
    }
    Ok(out)
}

/// The first item of a list of (u16 length, data) items.
fn first_item(mut v: &[u8]) -> Result<Option<Vec<u8>>, DropReason> {
    let mut first = None;
    while !v.is_empty() {
        if v.len() < 2 {
            return Err(malformed("truncated class item"));
        }
        let len = usize::from(u16::from_be_bytes([v[0], v[1]]));
        if v.len() - 2 < len {
            return Err(malformed("class item runs past the end"));
        }
        if first.is_none() {
            first = Some(v[2..2 + len].to_vec());
        }
        v = &v[2 + len..];
    }
    Ok(first)
}

fn duid(v: &[u8], what: &str) -> Result<Vec<u8>, DropReason> {
    if v.len() < 3 || v.len() > MAX_DUID {
        return Err(malformed(format!("{what} of {} bytes", v.len())));
    }
    Ok(v.to_vec())
}

/// The code of a status code option (its message is not kept).
fn status_code(v: &[u8]) -> Result<u16, DropReason> {
    match v {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(malformed("status code shorter than 2 bytes")),
    }
}

/// Screens and decodes one message (not a relay message): a client's for the server, a
/// server's answer for the agent's client (`client.rs`).
pub fn parse(bytes: &[u8]) -> Result<Message, DropReason> {
    if bytes.len() < 4 {
        return Err(malformed(format!(
            "{} bytes, shorter than a header",
            bytes.len()
        )));
    }
    let msg_type = bytes[0];
    if msg_type == RELAY_FORW {
        return Err(DropReason::Ignored("relayed messages are not served"));
    }
    let mut m = Message {
        msg_type,
        xid: [bytes[1], bytes[2], bytes[3]],
        ..Message::default()
    };
    for (code, v) in options(&bytes[4..])? {
        match code {
            OPT_CLIENTID => m.client_id = Some(duid(v, "client id")?),
            OPT_SERVERID => m.server_id = Some(duid(v, "server id")?),
            OPT_IA_NA => {
                if v.len() < 12 {
                    return Err(malformed("IA_NA shorter than 12 bytes"));
                }
                let iaid = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                let (mut addrs, mut lifetimes, mut ia_status) = (Vec::new(), Vec::new(), None);
                for (c, a) in options(&v[12..])? {
                    if c == OPT_IAADDR {
                        if a.len() < 24 {
                            return Err(malformed("IAADDR shorter than 24 bytes"));
                        }
                        let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
                        addrs.push(Ipv6Addr::from(octets));
                        let word =
                            |i: usize| u32::from_be_bytes(a[i..i + 4].try_into().expect("4"));
                        lifetimes.push((word(16), word(20)));
                    } else if c == OPT_STATUS_CODE {
                        ia_status = Some(status_code(a)?);
                    }
                }
                if m.ia_na.iter().any(|ia| ia.iaid == iaid) {
                    return Err(malformed(format!("IAID {iaid} twice")));
                }
                if m.ia_na.len() >= 8 {
                    return Err(malformed("more than 8 IA_NA"));
                }
                m.ia_na.push(IaNa {
                    iaid,
                    addrs,
                    lifetimes,
                    status: ia_status,
                });
            }
            OPT_ORO => {
                if v.len() % 2 != 0 {
                    return Err(malformed("odd option request length"));
                }
                m.oro = v
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            OPT_CLIENT_ARCH_TYPE => {
                if v.len() < 2 || v.len() % 2 != 0 {
                    return Err(malformed("client architecture type of odd length"));
                }
                m.arch = Some(u16::from_be_bytes([v[0], v[1]]));
            }
            OPT_VENDOR_CLASS => {
                if v.len() < 4 {
                    return Err(malformed("vendor class shorter than its enterprise number"));
                }
                m.vendor_class = first_item(&v[4..])?;
            }
            OPT_USER_CLASS => m.user_class = first_item(v)?,
            OPT_RAPID_COMMIT => m.rapid_commit = true,
            OPT_STATUS_CODE => m.status = Some(status_code(v)?),
            OPT_DNS_SERVERS => {
                if v.len() % 16 != 0 || v.len() > 16 * 8 {
                    return Err(malformed("DNS servers not a list of at most 8 addresses"));
                }
                m.dns = v
                    .chunks_exact(16)
                    .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).expect("16 bytes")))
                    .collect();
            }
            _ => {}
        }
    }
    Ok(m)
}

/// A reply under construction.
#[derive(Debug, Clone)]
pub struct Out {
    bytes: Vec<u8>,
}

impl Out {
    pub fn new(msg_type: u8, xid: [u8; 3]) -> Out {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(msg_type);
        bytes.extend_from_slice(&xid);
        Out { bytes }
    }

    /// Appends option `code` with `value` (at most 65535 bytes; longer values are cut).
    pub fn opt(&mut self, code: u16, value: &[u8]) -> &mut Out {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.bytes.extend_from_slice(&code.to_be_bytes());
        self.bytes
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A status code option's value.
pub fn status(code: u16, message: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(message.as_bytes());
    v
}

/// An IA_NA value: IAID, T1, T2 and its options (already encoded TLVs).
pub fn ia_na(iaid: u32, t1: u32, t2: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + inner.len());
    v.extend_from_slice(&iaid.to_be_bytes());
    v.extend_from_slice(&t1.to_be_bytes());
    v.extend_from_slice(&t2.to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// One encoded TLV (for options inside an IA_NA).
pub fn tlv(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = Out { bytes: Vec::new() };
    o.opt(code, value);
    o.bytes
}

/// An IAADDR TLV.
pub fn iaaddr(addr: Ipv6Addr, preferred: u32, valid: u32) -> Vec<u8> {
    let mut v = addr.octets().to_vec();
    v.extend_from_slice(&preferred.to_be_bytes());
    v.extend_from_slice(&valid.to_be_bytes());
    tlv(OPT_IAADDR, &v)
}

/// A list of (u16 length, data) items (user class, vendor class data, boot file params).
pub fn items<'a>(list: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = Vec::new();
    for item in list {
        let item = &item[..item.len().min(usize::from(u16::MAX))];
        v.extend_from_slice(&(item.len() as u16).to_be_bytes());
        v.extend_from_slice(item);
    }
    v
}
