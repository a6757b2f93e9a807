//! Authenticated first contact of an agent, sans-IO (issue 16 item 2): the one-boot tokens
//! `/ipxe` hands out, the signatures on agent calls, the key-pinning rule, and junk SMBIOS
//! UUIDs. Time, randomness and the store's facts are inputs; nothing here does IO.
//!
//! - **Boot token**: each `/ipxe` answer that boots the agent carries
//!   `appliance.token=<64 hex>` in the agent's kernel args, minted from 32 random bytes the
//!   caller passes in, bound to that request's UUID and MAC, valid for one registration until
//!   it expires. [`TokenBook`] keeps only the SHA-256 of each token.
//! - **Agent key**: the agent generates an ed25519 key per boot (in memory only) and sends
//!   its public half in `appliance-agent-key` on CreateServer; every call it makes carries
//!   `appliance-seq` (a per-boot counter) and `appliance-sig`, an ed25519 signature over
//!   [`call_message`] (method, sequence number, encoded request). The box keeps the key as the
//!   server's annotation [`KEY_ANNOTATION`] and checks every later call against it, with a
//!   [`ReplayWindow`] over the sequence numbers.
//! - **Pinning rule** ([`key_rule`]): the pinned key re-registers without a token; a server
//!   without a pin pins a key presented with a fresh token; another key replaces the pin only
//!   with a fresh token bound to this server (UUID + one of its NICs) while no agent with the
//!   pinned key is running; otherwise an operator approves it (`appliance ctl server rekey`).
//! - **Junk UUIDs** ([`junk_uuid`], [`same_chassis`], [`fallback_name`]): all zeros, all F, one
//!   repeated digit, the known firmware placeholders, and one UUID on two chassis; such
//!   machines are named `mac-<lowest NIC MAC, 12 hex digits>-<baseboard serial>`.

use std::collections::{HashMap, VecDeque};

use ring::signature::{ED25519, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The kernel argument that carries the boot token.
pub const TOKEN_ARG: &str = "appliance.token";
/// gRPC metadata: the boot token (CreateServer only).
pub const MD_TOKEN: &str = "appliance-boot-token";
/// gRPC metadata: the agent's ed25519 public key, 64 hex digits (CreateServer only).
pub const MD_KEY: &str = "appliance-agent-key";
/// gRPC metadata: the call's sequence number, decimal.
pub const MD_SEQ: &str = "appliance-seq";
/// gRPC metadata: the ed25519 signature over [`call_message`], 128 hex digits.
pub const MD_SIG: &str = "appliance-sig";
/// The Server annotation holding the pinned agent key (64 hex digits).
pub const KEY_ANNOTATION: &str = "appliance.sidero.dev/agent-key";
/// The Server label flagging a machine whose SMBIOS UUID is not unique (value: the reason).
pub const JUNK_LABEL: &str = "appliance.sidero.dev/junk-uuid";
/// The agent API's method names as they are signed (their gRPC names).
pub mod method {
    pub const CREATE_SERVER: &str = "CreateServer";
    pub const MARK_SERVER_AS_WIPED: &str = "MarkServerAsWiped";
    pub const RECONCILE_SERVER_ADDRESSES: &str = "ReconcileServerAddresses";
    pub const HEARTBEAT: &str = "Heartbeat";
    pub const UPDATE_BMC_INFO: &str = "UpdateBMCInfo";
    pub const NEXT_ACTION: &str = "NextAction";
    pub const REPORT_WIPE_PROGRESS: &str = "ReportWipeProgress";
}

/// Most tokens outstanding per (UUID, MAC): the oldest goes first.
pub const PER_CLIENT: usize = 4;

/// Why a boot token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("the boot token is not 64 hex digits")]
    Malformed,
    #[error(
        "the boot token is unknown or already used (a token registers one boot once; this box may have restarted since it was handed out)"
    )]
    Unknown,
    #[error("the boot token expired")]
    Expired,
    #[error("the boot token was handed out for UUID {minted}, not {presented}")]
    WrongUuid { minted: String, presented: String },
    #[error("the boot token was handed out for NIC {minted}, which is not among the NICs reported")]
    WrongMac { minted: String },
}

#[derive(Debug, Clone)]
struct Entry {
    uuid: String,
    mac: [u8; 6],
    expires_ms: u64,
}

/// Outstanding boot tokens by SHA-256, bounded: when full, expired tokens go first, then the
/// one expiring soonest; at most [`PER_CLIENT`] per (UUID, MAC).
#[derive(Debug)]
pub struct TokenBook {
    entries: HashMap<[u8; 32], Entry>,
    by_client: HashMap<(String, [u8; 6]), VecDeque<[u8; 32]>>,
    max: usize,
    ttl_ms: u64,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn mac_text(m: [u8; 6]) -> String {
    crate::model::MacAddr(m).to_string()
}

impl TokenBook {
    pub fn new(max: usize, ttl_ms: u64) -> TokenBook {
        TokenBook {
            entries: HashMap::new(),
            by_client: HashMap::new(),
            max: max.max(1),
            ttl_ms,
        }
    }

    /// Tokens outstanding.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A new token for `uuid` (lower-case) and `mac` from 32 `random` bytes: its text (64 hex
    /// digits), which only the answer carries; the book keeps its hash.
    pub fn mint(&mut self, random: [u8; 32], uuid: &str, mac: [u8; 6], now_ms: u64) -> String {
        let text = hex::encode(random);
        let h = digest(text.as_bytes());
        let key = (uuid.to_string(), mac);
        let q = self.by_client.entry(key.clone()).or_default();
        while q.len() >= PER_CLIENT {
            if let Some(old) = q.pop_front() {
                self.entries.remove(&old);
            }
        }
        q.push_back(h);
        if self.entries.len() >= self.max {
            self.make_room(now_ms);
        }
        self.entries.insert(
            h,
            Entry {
                uuid: uuid.to_string(),
                mac,
                expires_ms: now_ms.saturating_add(self.ttl_ms),
            },
        );
        text
    }

    fn make_room(&mut self, now_ms: u64) {
        let expired: Vec<[u8; 32]> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_ms <= now_ms)
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            self.forget(&h);
        }
        while self.entries.len() >= self.max {
            let Some(h) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires_ms)
                .map(|(h, _)| *h)
            else {
                break;
            };
            self.forget(&h);
        }
    }

    fn forget(&mut self, h: &[u8; 32]) {
        if let Some(e) = self.entries.remove(h) {
            let key = (e.uuid, e.mac);
            if let Some(q) = self.by_client.get_mut(&key) {
                q.retain(|x| x != h);
                if q.is_empty() {
                    self.by_client.remove(&key);
                }
            }
        }
    }

    /// Checks `token` for a registration of `uuid` whose report names `macs`, without using
    /// it up: the MAC it was handed out for.
    pub fn check(
        &self,
        token: &str,
        uuid: &str,
        macs: &[[u8; 6]],
        now_ms: u64,
    ) -> Result<[u8; 6], TokenError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed);
        }
        let h = digest(token.to_ascii_lowercase().as_bytes());
        let e = self.entries.get(&h).ok_or(TokenError::Unknown)?;
        if e.expires_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        if e.uuid != uuid {
            return Err(TokenError::WrongUuid {
                minted: e.uuid.clone(),
                presented: uuid.to_string(),
            });
        }
        if !macs.contains(&e.mac) {
            return Err(TokenError::WrongMac {
                minted: mac_text(e.mac),
            });
        }
        Ok(e.mac)
    }

    /// Uses `token` up (after [`TokenBook::check`] passed and the registration is admitted):
    /// false when it was used up meanwhile (a concurrent replay).
    pub fn consume(&mut self, token: &str) -> bool {
        let h = digest(token.to_ascii_lowercase().as_bytes());
        let had = self.entries.contains_key(&h);
        self.forget(&h);
        had
    }
}

/// An agent's ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentKey(pub [u8; 32]);

impl std::fmt::Display for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for AgentKey {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut k).map_err(|_| AuthError::BadKey)?;
        Ok(AgentKey(k))
    }
}

/// Why a signed call was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("appliance-agent-key is not an ed25519 public key (64 hex digits)")]
    BadKey,
    #[error("the call carries no appliance-seq/appliance-sig (this box wants signed agent calls)")]
    Unsigned,
    #[error("appliance-seq is not a number")]
    BadSeq,
    #[error("appliance-sig is not 128 hex digits")]
    BadSig,
    #[error("the signature does not verify with the server's pinned agent key")]
    Forged,
    #[error("sequence number {0} was already used or is too old (a replayed call)")]
    Replayed(u64),
}

/// The bytes an agent signs for one call: a domain tag, the gRPC method name (`CreateServer`),
/// the sequence number (8 bytes, big-endian) and the encoded request.
pub fn call_message(method: &str, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + method.len() + body.len());
    m.extend_from_slice(b"appliance-agent-call-v1\0");
    m.extend_from_slice(method.as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The sequence number and signature from their metadata texts.
pub fn parse_signature(seq: Option<&str>, sig: Option<&str>) -> Result<(u64, [u8; 64]), AuthError> {
    let (Some(seq), Some(sig)) = (seq, sig) else {
        return Err(AuthError::Unsigned);
    };
    let seq = seq.trim().parse::<u64>().map_err(|_| AuthError::BadSeq)?;
    let mut s = [0u8; 64];
    hex::decode_to_slice(sig.trim(), &mut s).map_err(|_| AuthError::BadSig)?;
    Ok((seq, s))
}

/// Whether `sig` is `key`'s signature over [`call_message`]`(method, seq, body)`.
pub fn verify_call(
    key: &AgentKey,
    method: &str,
    seq: u64,
    body: &[u8],
    sig: &[u8; 64],
) -> Result<(), AuthError> {
    UnparsedPublicKey::new(&ED25519, &key.0)
        .verify(&call_message(method, seq, body), sig)
        .map_err(|_| AuthError::Forged)
}

/// Anti-replay over sequence numbers (as IPsec's): the highest seen and a 64-wide bitmap
/// below it, so calls that overtake each other (a heartbeat during a progress report) pass,
/// a number used twice or older than the window does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    top: u64,
    seen: u64,
}

impl ReplayWindow {
    /// Accepts `seq` once (0 is never valid); marks it used.
    pub fn accept(&mut self, seq: u64) -> Result<(), AuthError> {
        if seq == 0 {
            return Err(AuthError::Replayed(0));
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq;
            return Ok(());
        }
        let back = self.top - seq;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return Err(AuthError::Replayed(seq));
        }
        self.seen |= 1 << back;
        Ok(())
    }
}

/// What CreateServer presents and what the box knows, for [`key_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyClaim {
    /// The server's pinned key (its annotation), if any.
    pub pinned: Option<AgentKey>,
    pub presented: AgentKey,
    /// A fresh boot token bound to this server's UUID and one of its NICs came with it.
    pub fresh_token: bool,
    /// An agent with the pinned key is running: its boot is open and it called within the
    /// last 3 poll intervals.
    pub live: bool,
}

/// What becomes of the pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDecision {
    /// The pinned key itself (a registration again in the same boot).
    Keep,
    /// No key was pinned: pin the presented one.
    Pin,
    /// A new boot of this server: the presented key replaces the pinned one.
    Replace,
    Refuse(KeyRefusal),
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyRefusal {
    #[error(
        "a first registration needs the boot token this box's /ipxe put on the agent's kernel command line"
    )]
    NeedToken,
    #[error(
        "the server has another agent key pinned and this call brought no fresh boot token for it; an operator approves a new key (appliance ctl server rekey NAME)"
    )]
    OtherKey,
    #[error(
        "the server's agent with its pinned key is running; a second agent with another key is refused even with a boot token: an operator approves a new key (appliance ctl server rekey NAME)"
    )]
    LiveAgent,
}

/// The pinning rule (ARCHITECTURE.md, README "Security"):
/// - the pinned key itself: kept (no token needed: the same boot registering again);
/// - no pin: the presented key is pinned with a fresh token, refused without;
/// - another key: replaces the pin only with a fresh token and no live agent on the pinned
///   key (a real reboot ends the old agent); else an operator's `rekey` removes the pin first.
pub fn key_rule(c: KeyClaim) -> KeyDecision {
    match c.pinned {
        Some(p) if p == c.presented => KeyDecision::Keep,
        None if c.fresh_token => KeyDecision::Pin,
        None => KeyDecision::Refuse(KeyRefusal::NeedToken),
        Some(_) if !c.fresh_token => KeyDecision::Refuse(KeyRefusal::OtherKey),
        Some(_) if c.live => KeyDecision::Refuse(KeyRefusal::LiveAgent),
        Some(_) => KeyDecision::Replace,
    }
}

/// Why a UUID is not unique to one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Junk {
    AllZero,
    AllF,
    /// One hex digit repeated (11111111-1111-…).
    Repeated,
    /// A firmware vendor's placeholder seen on many machines.
    Placeholder,
    /// Registered already by another chassis (no NIC in common).
    Duplicate,
}

impl Junk {
    /// The [`JUNK_LABEL`] value.
    pub fn as_str(self) -> &'static str {
        match self {
            Junk::AllZero => "all-zero",
            Junk::AllF => "all-f",
            Junk::Repeated => "repeated-digit",
            Junk::Placeholder => "placeholder",
            Junk::Duplicate => "duplicate",
        }
    }
}

/// Placeholder UUIDs firmware ships with (AMI Aptio's default, and its byte-swapped form).
const PLACEHOLDERS: [&str; 2] = [
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
];

/// Whether a canonical (lower-case 8-4-4-4-12) UUID is junk by its form alone.
pub fn junk_uuid(uuid: &str) -> Option<Junk> {
    let digits: Vec<u8> = uuid.bytes().filter(|b| *b != b'-').collect();
    let first = *digits.first()?;
    if digits.iter().all(|b| *b == b'0') {
        Some(Junk::AllZero)
    } else if digits.iter().all(|b| *b == b'f') {
        Some(Junk::AllF)
    } else if digits.iter().all(|b| *b == first) {
        Some(Junk::Repeated)
    } else if PLACEHOLDERS.contains(&uuid) {
        Some(Junk::Placeholder)
    } else {
        None
    }
}

/// Whether a registration reporting NICs `reported` is the chassis stored with `stored`:
/// one NIC in common (a server stored without NICs is taken as the same).
pub fn same_chassis(stored: &[[u8; 6]], reported: &[[u8; 6]]) -> bool {
    stored.is_empty() || stored.iter().any(|m| reported.contains(m))
}

/// Serials that are not serials (DMI defaults).
fn placeholder_serial(s: &str) -> bool {
    const WORDS: [&str; 12] = [
        "",
        "to be filled by o.e.m.",
        "default string",
        "not specified",
        "not applicable",
        "none",
        "n/a",
        "na",
        "unknown",
        "0123456789",
        "system serial number",
        "base board serial number",
    ];
    let l = s.trim().to_ascii_lowercase();
    WORDS.contains(&l.as_str()) || l.bytes().all(|b| Some(&b) == l.as_bytes().first())
}

/// The name of a machine whose UUID is junk: `mac-<the lowest of its NIC MACs as 12 lower-case
/// hex digits>-<baseboard serial>`, the serial lower-cased with every run of characters other
/// than `a-z0-9` as one `-`, the whole at most 63 characters; without a usable serial (empty
/// or a DMI placeholder such as "To be filled by O.E.M.") just `mac-<mac>`. None without NICs.
pub fn fallback_name(macs: &[[u8; 6]], baseboard_serial: &str) -> Option<String> {
    let mac = macs.iter().min()?;
    let mut name = format!("mac-{}", hex::encode(mac));
    if !placeholder_serial(baseboard_serial) {
        let mut s = String::new();
        for c in baseboard_serial.trim().chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                s.push(c);
            } else if !s.is_empty() && !s.ends_with('-') {
                s.push('-');
            }
        }
        let s = s.trim_end_matches('-');
        if !s.is_empty() {
            name.push('-');
            name.push_str(s);
            name.truncate(63);
            while name.ends_with('-') {
                name.pop();
            }
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    const U: &str = "4c4c4544-0042-3510-8052-b4c04f4e3132";
    const M: [u8; 6] = [0x52, 0x54, 0, 0, 0, 7];

    #[test]
    fn a_token_registers_its_uuid_and_mac_once_until_it_expires() {
        let mut b = TokenBook::new(100, 1000);
        let t = b.mint([7; 32], U, M, 10_000);
        assert_eq!(t.len(), 64);
        // Nothing but the hash is kept.
        assert!(!format!("{b:?}").contains(&t));
        let other = [0x52, 0x54, 0, 0, 0, 8];
        assert_eq!(b.check(&t, U, &[other, M], 10_500), Ok(M));
        assert_eq!(
            b.check(&t.to_ascii_uppercase(), U, &[M], 10_500),
            Ok(M),
            "hex in any case"
        );
        assert!(matches!(
            b.check(&t, "4c4c4544-0042-3510-8052-b4c04f4e3133", &[M], 10_500),
            Err(TokenError::WrongUuid { .. })
        ));
        assert_eq!(
            b.check(&t, U, &[other], 10_500),
            Err(TokenError::WrongMac {
                minted: "52:54:00:00:00:07".into()
            })
        );
        assert_eq!(b.check(&t, U, &[M], 11_000), Err(TokenError::Expired));
        assert_eq!(b.check("xyz", U, &[M], 10_500), Err(TokenError::Malformed));
        assert_eq!(
            b.check(&"0".repeat(64), U, &[M], 10_500),
            Err(TokenError::Unknown)
        );
        assert!(b.consume(&t));
        assert_eq!(b.check(&t, U, &[M], 10_500), Err(TokenError::Unknown));
        assert!(!b.consume(&t), "a replay finds it used");
        assert!(b.is_empty());
    }

    #[test]
    fn the_book_is_bounded() {
        let mut b = TokenBook::new(3, 1000);
        // Per client: the fifth token for one (UUID, MAC) drops the first.
        let mut big = TokenBook::new(100, 1000);
        let ts: Vec<String> = (0..5u8).map(|i| big.mint([i; 32], U, M, 0)).collect();
        assert_eq!(big.len(), PER_CLIENT);
        assert_eq!(big.check(&ts[0], U, &[M], 1), Err(TokenError::Unknown));
        assert_eq!(big.check(&ts[4], U, &[M], 1), Ok(M));
        // Full: expired ones go first, then the one expiring soonest.
        let mac = |i: u8| [2, 0, 0, 0, 0, i];
        let a = b.mint([1; 32], U, mac(1), 0);
        let c = b.mint([2; 32], U, mac(2), 500);
        let d = b.mint([3; 32], U, mac(3), 600);
        let e = b.mint([4; 32], U, mac(4), 1200); // `a` expired at 1000
        assert_eq!(b.len(), 3);
        assert_eq!(b.check(&a, U, &[mac(1)], 1200), Err(TokenError::Unknown));
        let f = b.mint([5; 32], U, mac(5), 1300); // nothing expired: `c` (1500) goes
        assert_eq!(b.len(), 3);
        assert_eq!(b.check(&c, U, &[mac(2)], 1300), Err(TokenError::Unknown));
        for (t, m) in [(&d, 3), (&e, 4), (&f, 5)] {
            assert_eq!(b.check(t, U, &[mac(m)], 1300), Ok(mac(m)));
        }
    }

    #[test]
    fn calls_verify_with_the_signing_key_only() {
        let kp = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
        let key = AgentKey(kp.public_key().as_ref().try_into().unwrap());
        let body = b"\x0a\x24uuid";
        let sig: [u8; 64] = kp
            .sign(&call_message("Heartbeat", 3, body))
            .as_ref()
            .try_into()
            .unwrap();
        verify_call(&key, "Heartbeat", 3, body, &sig).unwrap();
        // Another method, sequence number, body or key: refused.
        for (m, s, b) in [
            ("NextAction", 3, &body[..]),
            ("Heartbeat", 4, &body[..]),
            ("Heartbeat", 3, &b"\x0a\x24uuie"[..]),
        ] {
            assert_eq!(verify_call(&key, m, s, b, &sig), Err(AuthError::Forged));
        }
        let other = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).unwrap();
        let other = AgentKey(other.public_key().as_ref().try_into().unwrap());
        assert_eq!(
            verify_call(&other, "Heartbeat", 3, body, &sig),
            Err(AuthError::Forged)
        );
        // Texts.
        assert_eq!(key.to_string().parse::<AgentKey>(), Ok(key));
        assert_eq!("abc".parse::<AgentKey>(), Err(AuthError::BadKey));
        let hexsig = hex::encode(sig);
        assert_eq!(
            parse_signature(Some("3"), Some(&hexsig)),
            Ok((3, sig)),
            "round trip"
        );
        assert_eq!(
            parse_signature(None, Some(&hexsig)),
            Err(AuthError::Unsigned)
        );
        assert_eq!(parse_signature(Some("3"), None), Err(AuthError::Unsigned));
        assert_eq!(
            parse_signature(Some("x"), Some(&hexsig)),
            Err(AuthError::BadSeq)
        );
        assert_eq!(
            parse_signature(Some("3"), Some("00")),
            Err(AuthError::BadSig)
        );
    }

    #[test]
    fn the_replay_window_takes_each_number_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(0), Err(AuthError::Replayed(0)));
        w.accept(1).unwrap();
        w.accept(3).unwrap();
        w.accept(2).unwrap(); // overtaken: still fine
        for n in [1, 2, 3] {
            assert_eq!(w.accept(n), Err(AuthError::Replayed(n)));
        }
        w.accept(100).unwrap();
        assert_eq!(w.accept(36), Err(AuthError::Replayed(36)), "older than 64");
        w.accept(37).unwrap();
        assert_eq!(w.accept(37), Err(AuthError::Replayed(37)));
        w.accept(1000).unwrap();
        assert_eq!(w.accept(100), Err(AuthError::Replayed(100)));
    }

    #[test]
    fn the_pinning_rule() {
        let k = |b| AgentKey([b; 32]);
        let c = |pinned, presented, fresh_token, live| KeyClaim {
            pinned,
            presented,
            fresh_token,
            live,
        };
        use KeyDecision::*;
        // Same key: kept, token or not, live or not.
        for (t, l) in [(false, false), (true, true), (false, true)] {
            assert_eq!(key_rule(c(Some(k(1)), k(1), t, l)), Keep);
        }
        assert_eq!(key_rule(c(None, k(1), true, false)), Pin);
        assert_eq!(
            key_rule(c(None, k(1), false, false)),
            Refuse(KeyRefusal::NeedToken)
        );
        assert_eq!(key_rule(c(Some(k(1)), k(2), true, false)), Replace);
        assert_eq!(
            key_rule(c(Some(k(1)), k(2), false, false)),
            Refuse(KeyRefusal::OtherKey)
        );
        assert_eq!(
            key_rule(c(Some(k(1)), k(2), true, true)),
            Refuse(KeyRefusal::LiveAgent)
        );
    }

    #[test]
    fn junk_uuids() {
        for (u, j) in [
            ("00000000-0000-0000-0000-000000000000", Junk::AllZero),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", Junk::AllF),
            ("11111111-1111-1111-1111-111111111111", Junk::Repeated),
            ("03000200-0400-0500-0006-000700080009", Junk::Placeholder),
        ] {
            assert_eq!(junk_uuid(u), Some(j), "{u}");
        }
        assert_eq!(junk_uuid(U), None);
        assert_eq!(junk_uuid("00000000-0000-0000-0000-000000000001"), None);
        assert_eq!(junk_uuid(""), None);
        let (a, b, c) = ([1; 6], [2; 6], [3; 6]);
        assert!(same_chassis(&[a, b], &[b, c]));
        assert!(!same_chassis(&[a], &[b, c]));
        assert!(same_chassis(&[], &[c]));
        assert_eq!(Junk::Duplicate.as_str(), "duplicate");
    }

    #[test]
    fn junk_machines_are_named_by_mac_and_baseboard_serial() {
        let macs = [[0x52, 0x54, 0, 0xab, 0, 9], [0x52, 0x54, 0, 0x12, 0, 1]];
        assert_eq!(
            fallback_name(&macs, "  CN7475 16A0/123 ").as_deref(),
            Some("mac-525400120001-cn7475-16a0-123")
        );
        for junk in [
            "",
            "To be filled by O.E.M.",
            "Default string",
            "0000000",
            "N/A",
        ] {
            assert_eq!(
                fallback_name(&macs, junk).as_deref(),
                Some("mac-525400120001"),
                "{junk}"
            );
        }
        assert_eq!(
            fallback_name(&macs, "---").as_deref(),
            Some("mac-525400120001")
        );
        let long = fallback_name(&macs, &"a-".repeat(60)).unwrap();
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
        assert!(crate::model::meta::validate_name(&long).is_ok(), "{long}");
        assert_eq!(fallback_name(&[], "SN1"), None);
    }
}
