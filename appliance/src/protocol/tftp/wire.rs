//! TFTP packets on the wire (RFC 1350) with option extension (RFC 2347: OACK; RFC 2348
//! blksize, RFC 2349 timeout/tsize, RFC 7440 windowsize): panic-free decoding of untrusted
//! bytes into [`Packet`] and encoding back.
//!
//! Pure: bytes in, values out. No IO, no clock. Every malformed input is a
//! [`DecodePacketError`], never a panic (fuzzed by `fuzz/fuzz_targets/tftp_packet.rs`).

use std::fmt;

/// Opcodes (RFC 1350 §5, RFC 2347).
pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Default block size when no blksize option is negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// blksize range allowed by RFC 2348.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// The largest packet we ever need to decode or encode: DATA with the largest block.
pub const MAX_PACKET: usize = 4 + MAX_BLKSIZE as usize;

/// Transfer mode of a request (RFC 1350 §5; compared case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    /// Obsolete (RFC 1350 says it should not be used); decoded so it can be refused clearly.
    Mail,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        }
    }
}

/// One option name/value pair as sent (RFC 2347). Names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOption {
    pub name: String,
    pub value: String,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    /// Options in the order sent, unparsed; see [`RequestedOptions::parse`].
    pub options: Vec<RawOption>,
}

/// TFTP error codes (RFC 1350 §5, RFC 2347 code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    OptionNegotiation,
    /// A code outside 0..=8 received from a peer.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(c) => c,
        }
    }

    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            c => ErrorCode::Other(c),
        }
    }
}

/// A decoded packet. DATA borrows its payload from the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: ErrorCode, message: String },
    Oack { options: Vec<RawOption> },
}

impl Packet<'_> {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Rrq(_) => "RRQ",
            Packet::Wrq(_) => "WRQ",
            Packet::Data { .. } => "DATA",
            Packet::Ack { .. } => "ACK",
            Packet::Error { .. } => "ERROR",
            Packet::Oack { .. } => "OACK",
        }
    }
}

/// Which string field of a packet a decode error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Filename,
    Mode,
    OptionName,
    OptionValue,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Filename => "filename",
            Field::Mode => "mode",
            Field::OptionName => "option name",
            Field::OptionValue => "option value",
        })
    }
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodePacketError {
    #[error("packet of {0} bytes is too short")]
    TooShort(usize),
    #[error("packet of {0} bytes is too long")]
    TooLong(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0} is not terminated by a NUL byte")]
    Unterminated(Field),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(Field),
    #[error("empty {0}")]
    Empty(Field),
    #[error("unknown transfer mode {0:?}")]
    UnknownMode(String),
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("option {0:?} appears twice")]
    DuplicateOption(String),
    #[error("DATA block of {0} bytes exceeds the largest block size")]
    BlockTooLarge(usize),
}

/// Decodes one datagram. Never panics.
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, DecodePacketError> {
    if buf.len() < 2 {
        return Err(DecodePacketError::TooShort(buf.len()));
    }
    if buf.len() > MAX_PACKET {
        return Err(DecodePacketError::TooLong(buf.len()));
    }
    let opcode = u16::from_be_bytes([buf[0], buf[1]]);
    let body = &buf[2..];
    match opcode {
        OP_RRQ => decode_request(body).map(Packet::Rrq),
        OP_WRQ => decode_request(body).map(Packet::Wrq),
        OP_DATA => {
            let (block, data) = split_block(buf)?;
            if data.len() > MAX_BLKSIZE as usize {
                return Err(DecodePacketError::BlockTooLarge(data.len()));
            }
            Ok(Packet::Data { block, data })
        }
        OP_ACK => {
            // Trailing bytes after the block number are tolerated (some firmware pads).
            let (block, _) = split_block(buf)?;
            Ok(Packet::Ack { block })
        }
        OP_ERROR => {
            let (code, rest) = split_block(buf)?;
            // Peers do not always NUL-terminate or send UTF-8 in error messages; the
            // message is informational, so take what is there.
            let text = match rest.iter().position(|&b| b == 0) {
                Some(end) => &rest[..end],
                None => rest,
            };
            Ok(Packet::Error {
                code: ErrorCode::from_u16(code),
                message: String::from_utf8_lossy(text).into_owned(),
            })
        }
        OP_OACK => decode_options(body).map(|options| Packet::Oack { options }),
        other => Err(DecodePacketError::UnknownOpcode(other)),
    }
}

fn split_block(buf: &[u8]) -> Result<(u16, &[u8]), DecodePacketError> {
    match buf.get(2..4) {
        Some(&[hi, lo]) => Ok((u16::from_be_bytes([hi, lo]), &buf[4..])),
        _ => Err(DecodePacketError::TooShort(buf.len())),
    }
}

/// Takes one NUL-terminated UTF-8 string from the front of `buf`.
fn take_str(buf: &[u8], field: Field) -> Result<(&str, &[u8]), DecodePacketError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodePacketError::Unterminated(field))?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| DecodePacketError::NotUtf8(field))?;
    Ok((s, &buf[end + 1..]))
}

fn decode_request(body: &[u8]) -> Result<Request, DecodePacketError> {
    let (filename, rest) = take_str(body, Field::Filename)?;
    if filename.is_empty() {
        return Err(DecodePacketError::Empty(Field::Filename));
    }
    let (mode, rest) = take_str(rest, Field::Mode)?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case("mail") {
        Mode::Mail
    } else {
        return Err(DecodePacketError::UnknownMode(mode.to_string()));
    };
    let options = decode_options(rest)?;
    Ok(Request {
        filename: filename.to_string(),
        mode,
        options,
    })
}

fn decode_options(mut rest: &[u8]) -> Result<Vec<RawOption>, DecodePacketError> {
    let mut options: Vec<RawOption> = Vec::new();
    // Some clients pad requests with NUL bytes after the last option; ignore that tail.
    while !rest.is_empty() && rest.iter().any(|&b| b != 0) {
        let (name, after_name) = take_str(rest, Field::OptionName)?;
        if name.is_empty() {
            return Err(DecodePacketError::Empty(Field::OptionName));
        }
        let (value, after_value) = match take_str(after_name, Field::OptionValue) {
            Ok(v) => v,
            Err(DecodePacketError::Unterminated(_)) if after_name.is_empty() => {
                return Err(DecodePacketError::OptionWithoutValue(name.to_string()));
            }
            Err(e) => return Err(e),
        };
        if options.iter().any(|o| o.name.eq_ignore_ascii_case(name)) {
            return Err(DecodePacketError::DuplicateOption(name.to_string()));
        }
        options.push(RawOption {
            name: name.to_string(),
            value: value.to_string(),
        });
        rest = after_value;
    }
    Ok(options)
}

/// Appends the encoding of `packet` to `out`.
///
/// Strings containing NUL cannot be represented; they are cut at the first NUL so the
/// output always decodes (the encoder is used only with our own, well-formed values).
pub fn encode(packet: &Packet<'_>, out: &mut Vec<u8>) {
    match packet {
        Packet::Rrq(r) => encode_request(OP_RRQ, r, out),
        Packet::Wrq(r) => encode_request(OP_WRQ, r, out),
        Packet::Data { block, data } => encode_data_header(*block, out, data),
        Packet::Ack { block } => {
            out.extend_from_slice(&OP_ACK.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
        }
        Packet::Error { code, message } => encode_error(*code, message, out),
        Packet::Oack { options } => {
            out.extend_from_slice(&OP_OACK.to_be_bytes());
            encode_options(options, out);
        }
    }
}

/// Encodes DATA: header then payload.
pub fn encode_data_header(block: u16, out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

/// Encodes an ERROR packet.
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    put_str(message, out);
}

fn encode_request(op: u16, r: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&op.to_be_bytes());
    put_str(&r.filename, out);
    put_str(r.mode.as_str(), out);
    encode_options(&r.options, out);
}

fn encode_options(options: &[RawOption], out: &mut Vec<u8>) {
    for o in options {
        put_str(&o.name, out);
        put_str(&o.value, out);
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.extend_from_slice(&bytes[..end]);
    out.push(0);
}

/// The options of a request this server understands, parsed and range-checked.
///
/// Following RFC 2347 ("the server should simply omit unrecognized options"), unknown
/// options and known options with unusable values are left out (listed in `ignored`)
/// rather than failing the request; the transfer then uses the defaults for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedOptions {
    /// RFC 2348, 8..=65464; values above the maximum are clamped to it.
    pub blksize: Option<u16>,
    /// RFC 2349 seconds, 1..=255.
    pub timeout: Option<u8>,
    /// RFC 2349: the client asks for the file size (value in a RRQ is normally 0).
    pub tsize: bool,
    /// RFC 7440, 1..=65535.
    pub windowsize: Option<u16>,
    /// Option names we left out, with the reason, for logs.
    pub ignored: Vec<(String, &'static str)>,
}

impl RequestedOptions {
    pub fn parse(options: &[RawOption]) -> RequestedOptions {
        let mut out = RequestedOptions::default();
        for o in options {
            let value = o.value.trim().parse::<u64>();
            let name = o.name.to_ascii_lowercase();
            let mut ignore = |why| out.ignored.push((o.name.clone(), why));
            match (name.as_str(), value) {
                ("blksize", Ok(v)) if v >= u64::from(MIN_BLKSIZE) => {
                    out.blksize =
                        Some(u16::try_from(v.min(u64::from(MAX_BLKSIZE))).unwrap_or(MAX_BLKSIZE));
                }
                ("timeout", Ok(v @ 1..=255)) => out.timeout = u8::try_from(v).ok(),
                ("tsize", Ok(_)) => out.tsize = true,
                ("windowsize", Ok(v @ 1..)) => {
                    out.windowsize = Some(u16::try_from(v).unwrap_or(u16::MAX));
                }
                ("blksize" | "timeout" | "tsize" | "windowsize", _) => ignore("value out of range"),
                _ => ignore("unknown option"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(name: &str, value: &str) -> RawOption {
        RawOption {
            name: name.into(),
            value: value.into(),
        }
    }

    fn roundtrip(p: Packet<'_>) {
        let mut buf = Vec::new();
        encode(&p, &mut buf);
        assert_eq!(decode(&buf).unwrap(), p, "bytes {buf:?}");
    }

    #[test]
    fn every_packet_kind_roundtrips() {
        roundtrip(Packet::Rrq(Request {
            filename: "ipxe.efi".into(),
            mode: Mode::Octet,
            options: vec![],
        }));
        roundtrip(Packet::Rrq(Request {
            filename: "/undionly.kpxe".into(),
            mode: Mode::Netascii,
            options: vec![
                opt("blksize", "1468"),
                opt("tsize", "0"),
                opt("windowsize", "8"),
            ],
        }));
        roundtrip(Packet::Wrq(Request {
            filename: "x".into(),
            mode: Mode::Mail,
            options: vec![opt("timeout", "3")],
        }));
        roundtrip(Packet::Data {
            block: 65535,
            data: &[1, 2, 3],
        });
        roundtrip(Packet::Data {
            block: 0,
            data: &[],
        });
        roundtrip(Packet::Ack { block: 42 });
        roundtrip(Packet::Error {
            code: ErrorCode::AccessViolation,
            message: "read-only".into(),
        });
        roundtrip(Packet::Error {
            code: ErrorCode::Other(77),
            message: String::new(),
        });
        roundtrip(Packet::Oack {
            options: vec![opt("blksize", "1468"), opt("tsize", "850528")],
        });
        roundtrip(Packet::Oack { options: vec![] });
    }

    #[test]
    fn decodes_a_real_ipxe_rrq() {
        // As iPXE sends it: filename, "octet", then blksize and tsize.
        let buf = b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00";
        let Packet::Rrq(r) = decode(buf).unwrap() else {
            panic!("not a RRQ")
        };
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(r.mode, Mode::Octet);
        let o = RequestedOptions::parse(&r.options);
        assert_eq!(o.blksize, Some(1432));
        assert!(o.tsize);
        assert!(o.ignored.is_empty());
    }

    #[test]
    fn mode_is_case_insensitive_and_nul_padding_is_tolerated() {
        let Packet::Rrq(r) = decode(b"\x00\x01f\x00OcTeT\x00\x00\x00").unwrap() else {
            panic!()
        };
        assert_eq!(r.mode, Mode::Octet);
        assert!(r.options.is_empty());
    }

    #[test]
    fn ack_with_padding_and_error_without_nul() {
        assert_eq!(
            decode(b"\x00\x04\x00\x07\x00\x00").unwrap(),
            Packet::Ack { block: 7 }
        );
        assert_eq!(
            decode(b"\x00\x05\x00\x01no nul").unwrap(),
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "no nul".into()
            }
        );
        // Non-UTF-8 messages are kept lossily.
        assert!(matches!(
            decode(b"\x00\x05\x00\x00\xff\x00").unwrap(),
            Packet::Error { .. }
        ));
    }

    #[test]
    fn every_decode_error() {
        use DecodePacketError as E;
        let big = {
            let mut v = vec![0, 3, 0, 1];
            v.resize(MAX_PACKET + 1, 0);
            v
        };
        let cases: &[(&[u8], E)] = &[
            (b"", E::TooShort(0)),
            (b"\x00", E::TooShort(1)),
            (b"\x00\x03\x00", E::TooShort(3)),
            (b"\x00\x04\x01", E::TooShort(3)),
            (b"\x00\x05", E::TooShort(2)),
            (b"\x00\x07\x00\x00", E::UnknownOpcode(7)),
            (b"\x00\x00", E::UnknownOpcode(0)),
            (b"\x00\x01file", E::Unterminated(Field::Filename)),
            (b"\x00\x01file\x00octet", E::Unterminated(Field::Mode)),
            (b"\x00\x01\x00octet\x00", E::Empty(Field::Filename)),
            (b"\x00\x01\xff\x00octet\x00", E::NotUtf8(Field::Filename)),
            (b"\x00\x01f\x00\xc3\x00", E::NotUtf8(Field::Mode)),
            (b"\x00\x01f\x00binary\x00", E::UnknownMode("binary".into())),
            (
                b"\x00\x01f\x00octet\x00blksize\x00",
                E::OptionWithoutValue("blksize".into()),
            ),
            (
                b"\x00\x01f\x00octet\x00blksize",
                E::Unterminated(Field::OptionName),
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00512",
                E::Unterminated(Field::OptionValue),
            ),
            (
                b"\x00\x01f\x00octet\x00\x00512\x00",
                E::Empty(Field::OptionName),
            ),
            (
                b"\x00\x01f\x00octet\x00\xfe\x00512\x00",
                E::NotUtf8(Field::OptionName),
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x00\xfe\x00",
                E::NotUtf8(Field::OptionValue),
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x000\x00TSIZE\x000\x00",
                E::DuplicateOption("TSIZE".into()),
            ),
            (
                b"\x00\x06blksize\x00",
                E::OptionWithoutValue("blksize".into()),
            ),
            (&big, E::TooLong(MAX_PACKET + 1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes).as_ref(), Err(want), "input {bytes:?}");
            // Every error has a message.
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn largest_data_block_decodes() {
        let mut v = vec![0, 3, 0, 1];
        v.resize(MAX_PACKET, 7);
        let Packet::Data { block, data } = decode(&v).unwrap() else {
            panic!()
        };
        assert_eq!((block, data.len()), (1, MAX_BLKSIZE as usize));
    }

    #[test]
    fn encoder_cuts_strings_at_nul() {
        let mut buf = Vec::new();
        encode_error(ErrorCode::NotDefined, "a\0b", &mut buf);
        assert_eq!(
            decode(&buf).unwrap(),
            Packet::Error {
                code: ErrorCode::NotDefined,
                message: "a".into()
            }
        );
    }

    #[test]
    fn requested_options_ranges() {
        let check = |name: &str, value: &str, want: RequestedOptions| {
            let got = RequestedOptions::parse(&[opt(name, value)]);
            assert_eq!(
                (
                    got.blksize,
                    got.timeout,
                    got.tsize,
                    got.windowsize,
                    got.ignored.len()
                ),
                (
                    want.blksize,
                    want.timeout,
                    want.tsize,
                    want.windowsize,
                    want.ignored.len()
                ),
                "{name}={value}"
            );
        };
        let ignored = || RequestedOptions {
            ignored: vec![(String::new(), "")],
            ..Default::default()
        };
        let some = |f: fn(&mut RequestedOptions)| {
            let mut o = RequestedOptions::default();
            f(&mut o);
            o
        };
        check("blksize", "8", some(|o| o.blksize = Some(8)));
        check("BLKSIZE", "1468", some(|o| o.blksize = Some(1468)));
        check("blksize", "65464", some(|o| o.blksize = Some(65464)));
        check("blksize", "70000", some(|o| o.blksize = Some(65464)));
        check("blksize", "99999999999999999999999", ignored());
        check("blksize", "7", ignored());
        check("blksize", "-1", ignored());
        check("blksize", "x", ignored());
        check("timeout", "1", some(|o| o.timeout = Some(1)));
        check("timeout", "255", some(|o| o.timeout = Some(255)));
        check("timeout", "0", ignored());
        check("timeout", "256", ignored());
        check("tsize", "0", some(|o| o.tsize = true));
        check("tsize", "", ignored());
        check("windowsize", "1", some(|o| o.windowsize = Some(1)));
        check("windowsize", "65535", some(|o| o.windowsize = Some(65535)));
        check("windowsize", "70000", some(|o| o.windowsize = Some(65535)));
        check("windowsize", "0", ignored());
        check("multicast", "", ignored());
        check("rollover", "0", ignored());
    }
}
