//! IPMI-over-LAN bytes: the RMCP header, ASF presence ping, the IPMI 1.5 (auth type none)
//! and IPMI 2.0 / RMCP+ session headers with integrity (HMAC-SHA1-96, HMAC-SHA256-128) and
//! confidentiality (AES-CBC-128), the IPMI LAN message framing with its two checksums, and
//! the RMCP+ open-session / RAKP 1-4 payloads.
//!
//! Pure: bytes in, values or `DecodeError` out. Never panics on input; every length is
//! checked before it is used. Randomness (IVs) is passed in by the caller.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use hmac::{Hmac, Mac};

/// UDP port of IPMI over LAN.
pub const IPMI_PORT: u16 = 623;

const RMCP_VERSION: u8 = 0x06;
const RMCP_SEQ_NO_ACK: u8 = 0xFF;
const RMCP_CLASS_ASF: u8 = 0x06;
const RMCP_CLASS_IPMI: u8 = 0x07;
const ASF_IANA: [u8; 4] = [0x00, 0x00, 0x11, 0xBE];
const ASF_PING: u8 = 0x80;
const ASF_PONG: u8 = 0x40;

const AUTH_TYPE_NONE: u8 = 0x00;
const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
const NEXT_HEADER: u8 = 0x07;

/// RMCP+ payload types (IPMI 2.0 table 13-16).
pub mod payload {
    pub const IPMI: u8 = 0x00;
    pub const OEM: u8 = 0x02;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP1: u8 = 0x12;
    pub const RAKP2: u8 = 0x13;
    pub const RAKP3: u8 = 0x14;
    pub const RAKP4: u8 = 0x15;
}

/// Why bytes from the network were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} needs {need} bytes, got {got}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("not an RMCP packet (version byte {0:#04x})")]
    NotRmcp(u8),
    #[error("RMCP class {0:#04x} is not IPMI")]
    Class(u8),
    #[error("session auth type {0:#04x} is not the expected one")]
    AuthType(u8),
    #[error("OEM payloads are not supported")]
    OemPayload,
    #[error("payload type {got:#04x}, expected {expected:#04x}")]
    PayloadType { got: u8, expected: u8 },
    #[error("session id {got:#010x}, expected {expected:#010x}")]
    SessionId { got: u32, expected: u32 },
    #[error("session trailer is malformed")]
    Trailer,
    #[error("integrity check failed (authcode mismatch)")]
    Integrity,
    #[error("packet is not authenticated inside an authenticated session")]
    Unauthenticated,
    #[error("packet is not encrypted inside an encrypted session")]
    Unencrypted,
    #[error("encrypted payload is malformed: {0}")]
    Crypt(&'static str),
    #[error("IPMI message checksum mismatch")]
    Checksum,
    #[error("{0}")]
    Malformed(&'static str),
}

fn need(what: &'static str, bytes: &[u8], n: usize) -> Result<(), DecodeError> {
    if bytes.len() < n {
        Err(DecodeError::Short {
            what,
            need: n,
            got: bytes.len(),
        })
    } else {
        Ok(())
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The RMCP+ cipher suites this implementation speaks. Both use AES-CBC-128 for
/// confidentiality; they differ in the RAKP and integrity hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    pub fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    /// Authentication (RAKP) algorithm number.
    pub fn auth_alg(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 0x01,
            CipherSuite::Suite17 => 0x03,
        }
    }

    /// Integrity algorithm number.
    pub fn integrity_alg(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 0x01,
            CipherSuite::Suite17 => 0x04,
        }
    }

    /// Confidentiality algorithm number (AES-CBC-128 for both).
    pub fn conf_alg(self) -> u8 {
        0x01
    }

    /// Length of a full RAKP HMAC (RAKP 2/3 auth codes, SIK, K1, K2).
    pub fn hmac_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 20,
            CipherSuite::Suite17 => 32,
        }
    }

    /// Length of the RAKP 4 integrity check value and of each packet's authcode.
    pub fn icv_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// HMAC of the concatenation of `parts` with `key`, with this suite's hash.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            CipherSuite::Suite3 => {
                let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts any key length");
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
            CipherSuite::Suite17 => {
                let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts any key length");
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
        }
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id())
    }
}

/// Keys of an established session: K1 (integrity) and K2 (first 16 bytes = AES key).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub suite: CipherSuite,
    pub k1: Vec<u8>,
    pub k2: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// K1 = HMAC(SIK, 20 × 0x01), K2 = HMAC(SIK, 20 × 0x02) (IPMI 2.0 §13.32; the constants
    /// are 20 bytes for SHA-256 too, as ipmitool and BMCs implement it).
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> SessionKeys {
        SessionKeys {
            suite,
            k1: suite.hmac(sik, &[&[0x01; 20]]),
            k2: suite.hmac(sik, &[&[0x02; 20]]),
        }
    }

    fn aes_key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.k2[..16]);
        k
    }

    fn authcode(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = self.suite.hmac(&self.k1, &[data]);
        mac.truncate(self.suite.icv_len());
        mac
    }

    /// AES-CBC-128 with the IPMI pad (1, 2, 3, … then the pad length): IV ‖ ciphertext.
    pub fn encrypt(&self, plain: &[u8], iv: [u8; 16]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut buf = Vec::with_capacity(16 + plain.len() + pad + 1);
        buf.extend_from_slice(plain);
        buf.extend((1..=pad as u8).collect::<Vec<u8>>());
        buf.push(pad as u8);
        let len = buf.len();
        let enc = cbc::Encryptor::<aes::Aes128>::new(&self.aes_key().into(), &iv.into());
        enc.encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("buffer is a whole number of blocks");
        let mut out = iv.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Inverse of [`SessionKeys::encrypt`], checking the pad.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return Err(DecodeError::Crypt("length is not IV + whole AES blocks"));
        }
        let (iv, ct) = data.split_at(16);
        let mut iv_arr = [0u8; 16];
        iv_arr.copy_from_slice(iv);
        let mut buf = ct.to_vec();
        let dec = cbc::Decryptor::<aes::Aes128>::new(&self.aes_key().into(), &iv_arr.into());
        dec.decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| DecodeError::Crypt("AES-CBC decryption failed"))?;
        let pad = *buf.last().expect("at least one block") as usize;
        if pad > 15 || pad + 1 > buf.len() {
            return Err(DecodeError::Crypt("pad length out of range"));
        }
        let body = buf.len() - pad - 1;
        if buf[body..body + pad]
            .iter()
            .enumerate()
            .any(|(i, b)| *b as usize != i + 1)
        {
            return Err(DecodeError::Crypt("pad bytes are not 1, 2, 3, …"));
        }
        buf.truncate(body);
        Ok(buf)
    }
}

// ---------------------------------------------------------------------------------------
// RMCP and ASF ping

fn rmcp_header(class: u8) -> [u8; 4] {
    [RMCP_VERSION, 0x00, RMCP_SEQ_NO_ACK, class]
}

fn check_rmcp(bytes: &[u8], class: u8) -> Result<(), DecodeError> {
    need("RMCP header", bytes, 4)?;
    if bytes[0] != RMCP_VERSION {
        return Err(DecodeError::NotRmcp(bytes[0]));
    }
    if bytes[3] & 0x1F != class {
        return Err(DecodeError::Class(bytes[3]));
    }
    Ok(())
}

/// An ASF Presence Ping with message tag `tag`.
pub fn encode_asf_ping(tag: u8) -> Vec<u8> {
    let mut out = rmcp_header(RMCP_CLASS_ASF).to_vec();
    out.extend_from_slice(&ASF_IANA);
    out.extend_from_slice(&[ASF_PING, tag, 0x00, 0x00]);
    out
}

/// An ASF Presence Pong: returns its message tag and whether the entity supports IPMI.
pub fn decode_asf_pong(bytes: &[u8]) -> Result<(u8, bool), DecodeError> {
    check_rmcp(bytes, RMCP_CLASS_ASF)?;
    need("ASF pong", bytes, 12)?;
    if bytes[4..8] != ASF_IANA || bytes[8] != ASF_PONG {
        return Err(DecodeError::Malformed("not an ASF presence pong"));
    }
    let tag = bytes[9];
    let len = bytes[11] as usize;
    need("ASF pong data", &bytes[12..], len.min(16))?;
    // Data: IANA(4) OEM(4) supported entities(1): bit 7 = IPMI supported.
    let ipmi = len >= 9 && bytes.get(20).is_some_and(|b| b & 0x80 != 0);
    Ok((tag, ipmi))
}

// ---------------------------------------------------------------------------------------
// IPMI 1.5 session header, auth type none (pre-session Get Channel Auth Capabilities)

/// An IPMI 1.5 packet outside a session (auth type none, session id 0).
pub fn encode_v15_unauthenticated(message: &[u8]) -> Vec<u8> {
    let mut out = rmcp_header(RMCP_CLASS_IPMI).to_vec();
    out.push(AUTH_TYPE_NONE);
    out.extend_from_slice(&[0; 4]); // session sequence
    out.extend_from_slice(&[0; 4]); // session id
    out.push(message.len() as u8);
    out.extend_from_slice(message);
    out
}

/// The IPMI message inside an IPMI 1.5 packet with auth type none.
pub fn decode_v15_unauthenticated(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    check_rmcp(bytes, RMCP_CLASS_IPMI)?;
    need("IPMI 1.5 session header", bytes, 14)?;
    if bytes[4] != AUTH_TYPE_NONE {
        return Err(DecodeError::AuthType(bytes[4]));
    }
    let len = bytes[13] as usize;
    need("IPMI 1.5 payload", &bytes[14..], len)?;
    Ok(&bytes[14..14 + len])
}

// ---------------------------------------------------------------------------------------
// IPMI 2.0 / RMCP+ session header

/// A decoded RMCP+ packet: the header fields and the (decrypted) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Packet {
    pub payload_type: u8,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// Encodes an RMCP+ packet. With `secure = Some((keys, iv))` the payload is encrypted and
/// the packet carries an integrity trailer; without, it is sent in the clear (pre-session).
pub fn encode_v2(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    secure: Option<(&SessionKeys, [u8; 16])>,
) -> Vec<u8> {
    let mut out = rmcp_header(RMCP_CLASS_IPMI).to_vec();
    out.push(AUTH_TYPE_RMCP_PLUS);
    let body = match secure {
        Some((keys, iv)) => {
            out.push(0xC0 | (payload_type & 0x3F));
            keys.encrypt(payload, iv)
        }
        None => {
            out.push(payload_type & 0x3F);
            payload.to_vec()
        }
    };
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    if let Some((keys, _)) = secure {
        // Pad so that everything from the auth type through the next-header byte is a
        // multiple of 4 bytes.
        let covered = out.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = keys.authcode(&out[4..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Decodes an RMCP+ packet. With `keys`, the packet must be authenticated and encrypted
/// (both suites we speak have integrity and confidentiality): the authcode is verified and
/// the payload decrypted. Without keys, an authenticated/encrypted packet is refused.
pub fn decode_v2(bytes: &[u8], keys: Option<&SessionKeys>) -> Result<V2Packet, DecodeError> {
    check_rmcp(bytes, RMCP_CLASS_IPMI)?;
    need("RMCP+ session header", bytes, 16)?;
    if bytes[4] != AUTH_TYPE_RMCP_PLUS {
        return Err(DecodeError::AuthType(bytes[4]));
    }
    let pt = bytes[5];
    let encrypted = pt & 0x80 != 0;
    let authenticated = pt & 0x40 != 0;
    let payload_type = pt & 0x3F;
    if payload_type == payload::OEM {
        return Err(DecodeError::OemPayload);
    }
    let session_id = u32_le(&bytes[6..10]);
    let seq = u32_le(&bytes[10..14]);
    let len = u16::from_le_bytes([bytes[14], bytes[15]]) as usize;
    need("RMCP+ payload", &bytes[16..], len)?;
    let body = &bytes[16..16 + len];
    match keys {
        None => {
            if authenticated || encrypted {
                return Err(DecodeError::Malformed(
                    "authenticated or encrypted packet before the session is established",
                ));
            }
            if bytes.len() != 16 + len {
                return Err(DecodeError::Trailer);
            }
            Ok(V2Packet {
                payload_type,
                encrypted,
                authenticated,
                session_id,
                seq,
                payload: body.to_vec(),
            })
        }
        Some(keys) => {
            if !authenticated {
                return Err(DecodeError::Unauthenticated);
            }
            let code_len = keys.suite.icv_len();
            let rest = &bytes[16 + len..];
            if rest.len() < 2 + code_len {
                return Err(DecodeError::Trailer);
            }
            let trailer_len = rest.len() - code_len;
            let pad = rest[trailer_len - 2] as usize;
            if pad > 3 || trailer_len != pad + 2 || rest[trailer_len - 1] != NEXT_HEADER {
                return Err(DecodeError::Trailer);
            }
            let covered = &bytes[4..bytes.len() - code_len];
            let expected = keys.authcode(covered);
            if !constant_time_eq(&expected, &bytes[bytes.len() - code_len..]) {
                return Err(DecodeError::Integrity);
            }
            if !encrypted {
                return Err(DecodeError::Unencrypted);
            }
            let payload = keys.decrypt(body)?;
            Ok(V2Packet {
                payload_type,
                encrypted,
                authenticated,
                session_id,
                seq,
                payload,
            })
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------
// IPMI LAN message (inside either session format)

/// Address of the BMC (responder) and of the remote console software (requester).
const BMC_ADDR: u8 = 0x20;
const CONSOLE_ADDR: u8 = 0x81;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// A request message to the BMC (LUN 0), with requester sequence `rq_seq` (0..=63).
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![BMC_ADDR, netfn << 2];
    out.push(checksum(&out));
    let start = out.len();
    out.extend_from_slice(&[CONSOLE_ADDR, (rq_seq & 0x3F) << 2, cmd]);
    out.extend_from_slice(data);
    let c = checksum(&out[start..]);
    out.push(c);
    out
}

/// A response message from the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMessage {
    /// The response netfn (request netfn + 1).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion: u8,
    pub data: Vec<u8>,
}

/// Checks the header checksum (bytes 0..2) and the body checksum (3..last) of an IPMI LAN
/// message of at least 4 bytes; returns the index of the body checksum byte.
fn verify_checksums(bytes: &[u8]) -> Result<usize, DecodeError> {
    if checksum(&bytes[..2]) != bytes[2] {
        return Err(DecodeError::Checksum);
    }
    let last = bytes.len() - 1;
    if checksum(&bytes[3..last]) != bytes[last] {
        return Err(DecodeError::Checksum);
    }
    Ok(last)
}

/// Decodes a response message, verifying both checksums.
pub fn decode_response(bytes: &[u8]) -> Result<ResponseMessage, DecodeError> {
    need("IPMI response message", bytes, 8)?;
    let last = verify_checksums(bytes)?;
    Ok(ResponseMessage {
        netfn: bytes[1] >> 2,
        cmd: bytes[5],
        rq_seq: bytes[4] >> 2,
        completion: bytes[6],
        data: bytes[7..last].to_vec(),
    })
}

/// A request message as the BMC sees it (for test responders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMessage {
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub data: Vec<u8>,
}

/// Decodes a request message, verifying both checksums.
pub fn decode_request(bytes: &[u8]) -> Result<RequestMessage, DecodeError> {
    need("IPMI request message", bytes, 7)?;
    let last = verify_checksums(bytes)?;
    Ok(RequestMessage {
        netfn: bytes[1] >> 2,
        cmd: bytes[5],
        rq_seq: bytes[4] >> 2,
        data: bytes[6..last].to_vec(),
    })
}

/// A response message from the BMC's side (for test responders).
pub fn encode_response(netfn: u8, cmd: u8, rq_seq: u8, completion: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![CONSOLE_ADDR, (netfn | 1) << 2];
    out.push(checksum(&out));
    let start = out.len();
    out.extend_from_slice(&[BMC_ADDR, (rq_seq & 0x3F) << 2, cmd, completion]);
    out.extend_from_slice(data);
    let c = checksum(&out[start..]);
    out.push(c);
    out
}

// ---------------------------------------------------------------------------------------
// RMCP+ open session and RAKP messages (IPMI 2.0 §13.17-13.23)

/// Open Session Request: asks for `suite` at privilege `max_priv` (4 = administrator).
pub fn encode_open_session_request(
    tag: u8,
    max_priv: u8,
    console_sid: u32,
    suite: CipherSuite,
) -> Vec<u8> {
    let mut out = vec![tag, max_priv, 0, 0];
    out.extend_from_slice(&console_sid.to_le_bytes());
    out.extend_from_slice(&[0x00, 0, 0, 0x08, suite.auth_alg(), 0, 0, 0]);
    out.extend_from_slice(&[0x01, 0, 0, 0x08, suite.integrity_alg(), 0, 0, 0]);
    out.extend_from_slice(&[0x02, 0, 0, 0x08, suite.conf_alg(), 0, 0, 0]);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionRequest {
    pub tag: u8,
    pub max_priv: u8,
    pub console_sid: u32,
    pub auth_alg: u8,
    pub integrity_alg: u8,
    pub conf_alg: u8,
}

/// Decodes an Open Session Request (BMC side, for test responders).
pub fn decode_open_session_request(b: &[u8]) -> Result<OpenSessionRequest, DecodeError> {
    need("open session request", b, 32)?;
    Ok(OpenSessionRequest {
        tag: b[0],
        max_priv: b[1] & 0x0F,
        console_sid: u32_le(&b[4..8]),
        auth_alg: b[12] & 0x3F,
        integrity_alg: b[20] & 0x3F,
        conf_alg: b[28] & 0x3F,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    /// RMCP+ status code; 0 = success (see [`rakp_status_text`]).
    pub status: u8,
    pub max_priv: u8,
    pub console_sid: u32,
    pub bmc_sid: u32,
    pub auth_alg: u8,
    pub integrity_alg: u8,
    pub conf_alg: u8,
}

pub fn decode_open_session_response(b: &[u8]) -> Result<OpenSessionResponse, DecodeError> {
    need("open session response", b, 2)?;
    let status = b[1];
    if status != 0 {
        // Errors may be truncated after the console session id.
        return Ok(OpenSessionResponse {
            tag: b[0],
            status,
            max_priv: b.get(2).copied().unwrap_or(0),
            console_sid: if b.len() >= 8 { u32_le(&b[4..8]) } else { 0 },
            bmc_sid: 0,
            auth_alg: 0,
            integrity_alg: 0,
            conf_alg: 0,
        });
    }
    need("open session response", b, 36)?;
    Ok(OpenSessionResponse {
        tag: b[0],
        status,
        max_priv: b[2] & 0x0F,
        console_sid: u32_le(&b[4..8]),
        bmc_sid: u32_le(&b[8..12]),
        auth_alg: b[16] & 0x3F,
        integrity_alg: b[24] & 0x3F,
        conf_alg: b[32] & 0x3F,
    })
}

pub fn encode_open_session_response(r: &OpenSessionResponse) -> Vec<u8> {
    let mut out = vec![r.tag, r.status, r.max_priv, 0];
    out.extend_from_slice(&r.console_sid.to_le_bytes());
    out.extend_from_slice(&r.bmc_sid.to_le_bytes());
    out.extend_from_slice(&[0x00, 0, 0, 0x08, r.auth_alg, 0, 0, 0]);
    out.extend_from_slice(&[0x01, 0, 0, 0x08, r.integrity_alg, 0, 0, 0]);
    out.extend_from_slice(&[0x02, 0, 0, 0x08, r.conf_alg, 0, 0, 0]);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp1 {
    pub tag: u8,
    pub bmc_sid: u32,
    pub console_random: [u8; 16],
    /// The whole requested-role byte (privilege in bits 3:0, bit 4 = name-only lookup).
    pub role: u8,
    pub username: Vec<u8>,
}

pub fn encode_rakp1(m: &Rakp1) -> Vec<u8> {
    let mut out = vec![m.tag, 0, 0, 0];
    out.extend_from_slice(&m.bmc_sid.to_le_bytes());
    out.extend_from_slice(&m.console_random);
    out.extend_from_slice(&[m.role, 0, 0, m.username.len() as u8]);
    out.extend_from_slice(&m.username);
    out
}

pub fn decode_rakp1(b: &[u8]) -> Result<Rakp1, DecodeError> {
    need("RAKP 1", b, 28)?;
    let ulen = b[27] as usize;
    if ulen > 16 {
        return Err(DecodeError::Malformed(
            "RAKP 1 user name longer than 16 bytes",
        ));
    }
    need("RAKP 1 user name", &b[28..], ulen)?;
    let mut console_random = [0u8; 16];
    console_random.copy_from_slice(&b[8..24]);
    Ok(Rakp1 {
        tag: b[0],
        bmc_sid: u32_le(&b[4..8]),
        console_random,
        role: b[24],
        username: b[28..28 + ulen].to_vec(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth_code: Vec<u8>,
}

pub fn decode_rakp2(b: &[u8]) -> Result<Rakp2, DecodeError> {
    need("RAKP 2", b, 2)?;
    if b[1] != 0 {
        return Ok(Rakp2 {
            tag: b[0],
            status: b[1],
            console_sid: if b.len() >= 8 { u32_le(&b[4..8]) } else { 0 },
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            auth_code: Vec::new(),
        });
    }
    need("RAKP 2", b, 40)?;
    let mut bmc_random = [0u8; 16];
    bmc_random.copy_from_slice(&b[8..24]);
    let mut bmc_guid = [0u8; 16];
    bmc_guid.copy_from_slice(&b[24..40]);
    Ok(Rakp2 {
        tag: b[0],
        status: b[1],
        console_sid: u32_le(&b[4..8]),
        bmc_random,
        bmc_guid,
        auth_code: b[40..].to_vec(),
    })
}

pub fn encode_rakp2(m: &Rakp2) -> Vec<u8> {
    let mut out = vec![m.tag, m.status, 0, 0];
    out.extend_from_slice(&m.console_sid.to_le_bytes());
    out.extend_from_slice(&m.bmc_random);
    out.extend_from_slice(&m.bmc_guid);
    out.extend_from_slice(&m.auth_code);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp3 {
    pub tag: u8,
    pub status: u8,
    pub bmc_sid: u32,
    pub auth_code: Vec<u8>,
}

pub fn encode_rakp3(m: &Rakp3) -> Vec<u8> {
    let mut out = vec![m.tag, m.status, 0, 0];
    out.extend_from_slice(&m.bmc_sid.to_le_bytes());
    out.extend_from_slice(&m.auth_code);
    out
}

pub fn decode_rakp3(b: &[u8]) -> Result<Rakp3, DecodeError> {
    need("RAKP 3", b, 8)?;
    Ok(Rakp3 {
        tag: b[0],
        status: b[1],
        bmc_sid: u32_le(&b[4..8]),
        auth_code: b[8..].to_vec(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub icv: Vec<u8>,
}

pub fn decode_rakp4(b: &[u8]) -> Result<Rakp4, DecodeError> {
    need("RAKP 4", b, 2)?;
    if b[1] != 0 {
        return Ok(Rakp4 {
            tag: b[0],
            status: b[1],
            console_sid: if b.len() >= 8 { u32_le(&b[4..8]) } else { 0 },
            icv: Vec::new(),
        });
    }
    need("RAKP 4", b, 8)?;
    Ok(Rakp4 {
        tag: b[0],
        status: b[1],
        console_sid: u32_le(&b[4..8]),
        icv: b[8..].to_vec(),
    })
}

pub fn encode_rakp4(m: &Rakp4) -> Vec<u8> {
    let mut out = vec![m.tag, m.status, 0, 0];
    out.extend_from_slice(&m.console_sid.to_le_bytes());
    out.extend_from_slice(&m.icv);
    out
}

/// The RMCP+ status codes of open-session and RAKP replies (IPMI 2.0 table 13-15).
pub fn rakp_status_text(status: u8) -> &'static str {
    match status {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name (unknown user)",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown status",
    }
}
