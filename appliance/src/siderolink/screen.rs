//! The endpoint's screening of every UDP datagram before a peer's `Tunn` sees it: the
//! shared `RateLimiter` checks the WireGuard message shape and MAC1 (and, under handshake
//! load, answers a handshake without a valid MAC2 with a cookie reply), then the peer is
//! found: a handshake initiation by the static key it carries (anonymous decryption with
//! the box's key), anything else by its receiver index, whose upper 24 bits are the peer's
//! `Tunn` index. No socket, no peer table: the caller passes the key lookup. Depends on
//! boringtun and std only, so `fuzz/` includes it by path (target `siderolink_screen`);
//! [`check_screen`] is the property both the fuzzer and the `cargo test` smoke run.
//! boringtun's limiter reads the clock and randomness, hence here and not in `protocol/`.

use std::net::IpAddr;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Screened<'a> {
    /// Under handshake load: send this cookie reply to the source, nothing else.
    Cookie(&'a [u8]),
    /// No WireGuard message, or a wrong MAC1.
    Invalid,
    /// A handshake initiation whose static key is no peer's (or that does not decrypt).
    UnknownKey,
    /// For the peer with this `Tunn` index; `initiation` if it is a handshake initiation.
    Peer { index: u32, initiation: bool },
}

/// The box's side of the screening: its static key pair and the shared limiter.
pub struct Screen<'k> {
    pub secret: &'k StaticSecret,
    pub public: &'k PublicKey,
    pub limiter: &'k RateLimiter,
}

impl Screen<'_> {
    /// Screens `datagram` from `src`; `peer_of_key` maps a static public key to its
    /// peer's `Tunn` index. A cookie reply is written into `buf`.
    pub fn screen<'b>(
        &self,
        src: IpAddr,
        datagram: &[u8],
        buf: &'b mut [u8],
        peer_of_key: impl Fn(&[u8; 32]) -> Option<u32>,
    ) -> Screened<'b> {
        match self.limiter.verify_packet(Some(src), datagram, buf) {
            Err(TunnResult::WriteToNetwork(cookie)) => Screened::Cookie(cookie),
            Err(_) => Screened::Invalid,
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(self.secret, self.public, &init)
                    .ok()
                    .and_then(|h| peer_of_key(&h.peer_static_public))
                {
                    Some(index) => Screened::Peer {
                        index,
                        initiation: true,
                    },
                    None => Screened::UnknownKey,
                }
            }
            Ok(Packet::HandshakeResponse(p)) => peer(p.receiver_idx),
            Ok(Packet::PacketCookieReply(p)) => peer(p.receiver_idx),
            Ok(Packet::PacketData(p)) => peer(p.receiver_idx),
        }
    }
}

fn peer(receiver_idx: u32) -> Screened<'static> {
    Screened::Peer {
        index: receiver_idx >> 8,
        initiation: false,
    }
}

/// Message type and length of a WireGuard datagram, as boringtun parses it.
fn shape(d: &[u8]) -> Option<(u32, usize)> {
    let t = u32::from_le_bytes(d.get(..4)?.try_into().ok()?);
    Some((t, d.len()))
}

/// The box key of the property runs (fixed: the property is about the bytes).
const BOX_KEY: [u8; 32] = [7; 32];
/// The one known peer's key.
const PEER_KEY: [u8; 32] = [9; 32];
/// That peer's `Tunn` index.
const PEER_INDEX: u32 = 0x00ab_cdef;

/// Byte 0 picks the limiter (even: at rest, odd: under load) and, bit 1, whether the
/// rest is taken as it is or grafted onto a valid initiation of the known peer (so the
/// fuzzer reaches the key lookup and the cookie path with valid MACs); the rest is the
/// datagram. Properties: no panic; a cookie only for a handshake message with a valid
/// MAC1 under load, 64 bytes, type 3, addressed to the sender index; an unknown key or an
/// initiation match only for a 148-byte type-1 message, and a match is the known peer;
/// any other message goes by its receiver index >> 8; every other shape is invalid.
pub fn check_screen(data: &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let body = data.get(1..).unwrap_or_default();
    let secret = StaticSecret::from(BOX_KEY);
    let public = PublicKey::from(&secret);
    let limiter = RateLimiter::new(&public, if mode & 1 == 1 { 0 } else { u64::MAX });
    let screen = Screen {
        secret: &secret,
        public: &public,
        limiter: &limiter,
    };
    let datagram = if mode & 2 == 2 {
        let mut init = initiation(&public, u32::from_le_bytes([mode, 1, 2, 3]));
        for (i, b) in body.iter().enumerate().take(init.len()) {
            // XOR keeps the valid initiation when the fuzzer gives zeros.
            init[(i * 7) % 148] ^= b;
        }
        init
    } else {
        body.to_vec()
    };
    let src = IpAddr::from([198, 18, 0, 2]);
    let peer_key = PublicKey::from(&StaticSecret::from(PEER_KEY)).to_bytes();
    let mut buf = vec![0u8; 256];
    let got = screen.screen(src, &datagram, &mut buf, |k| {
        (*k == peer_key).then_some(PEER_INDEX)
    });
    let shape = shape(&datagram);
    let handshake = matches!(shape, Some((1, 148)) | Some((2, 92)));
    match got {
        Screened::Cookie(c) => {
            assert!(handshake && mode & 1 == 1, "cookie for {shape:?} at rest");
            assert_eq!(c.len(), 64, "cookie reply length");
            assert_eq!(&c[..4], &3u32.to_le_bytes(), "cookie reply type");
            assert_eq!(
                &c[4..8],
                &datagram[4..8],
                "cookie reply not to the sender index"
            );
        }
        Screened::Invalid => {}
        Screened::UnknownKey => {
            assert_eq!(shape, Some((1, 148)), "unknown key of a non-initiation")
        }
        Screened::Peer {
            index,
            initiation: true,
        } => {
            assert_eq!(shape, Some((1, 148)), "initiation of another shape");
            assert_eq!(
                index, PEER_INDEX,
                "initiation matched to a key that is no peer"
            );
        }
        Screened::Peer {
            index,
            initiation: false,
        } => {
            let (t, len) = shape.expect("a peer's message has a type");
            assert!(
                matches!((t, len), (2, 92) | (3, 64)) || (t == 4 && len >= 32),
                "type {t} length {len} reached a peer"
            );
            let receiver = u32::from_le_bytes(
                datagram[if t == 2 { 8..12 } else { 4..8 }]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(index, receiver >> 8);
        }
    }
}

/// A valid handshake initiation of the known peer towards `public`.
fn initiation(public: &PublicKey, index: u32) -> Vec<u8> {
    let mut t = boringtun::noise::Tunn::new(
        StaticSecret::from(PEER_KEY),
        *public,
        None,
        None,
        index,
        None,
    );
    let mut buf = vec![0u8; 256];
    match t.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => unreachable!("a fresh Tunn always makes an initiation"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen_with(limit: u64, datagram: &[u8]) -> String {
        let secret = StaticSecret::from(BOX_KEY);
        let public = PublicKey::from(&secret);
        let limiter = RateLimiter::new(&public, limit);
        let screen = Screen {
            secret: &secret,
            public: &public,
            limiter: &limiter,
        };
        let peer_key = PublicKey::from(&StaticSecret::from(PEER_KEY)).to_bytes();
        let mut buf = vec![0u8; 256];
        format!(
            "{:?}",
            screen.screen(IpAddr::from([10, 0, 0, 1]), datagram, &mut buf, |k| (*k
                == peer_key)
                .then_some(PEER_INDEX))
        )
    }

    #[test]
    fn initiations_by_key_cookies_under_load_the_rest_by_index() {
        let public = PublicKey::from(&StaticSecret::from(BOX_KEY));
        let init = initiation(&public, 5);
        assert_eq!(
            screen_with(100, &init),
            format!("Peer {{ index: {PEER_INDEX}, initiation: true }}")
        );
        assert!(screen_with(0, &init).starts_with("Cookie("));
        // Another key, valid MACs: unknown.
        let mut other =
            boringtun::noise::Tunn::new(StaticSecret::from([3; 32]), public, None, None, 1, None);
        let mut buf = [0u8; 256];
        let TunnResult::WriteToNetwork(o) = other.format_handshake_initiation(&mut buf, true)
        else {
            panic!()
        };
        assert_eq!(screen_with(100, o), "UnknownKey");
        // A bit flipped: MAC1 fails.
        let mut bad = init.clone();
        bad[50] ^= 1;
        assert_eq!(screen_with(100, &bad), "Invalid");
        // Data by receiver index >> 8.
        let mut data = vec![4, 0, 0, 0];
        data.extend((PEER_INDEX << 8 | 7).to_le_bytes());
        data.extend([0; 40]);
        assert_eq!(
            screen_with(0, &data),
            format!("Peer {{ index: {PEER_INDEX}, initiation: false }}")
        );
        assert_eq!(screen_with(100, b"\x04\0\0\0short"), "Invalid");
    }

    /// Bounded fuzz smoke (the real fuzzer is `fuzz/fuzz_targets/siderolink_screen.rs`):
    /// the seed datagrams and mutations of them through [`check_screen`].
    #[test]
    fn fuzz_smoke_screening_holds_its_properties() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let public = PublicKey::from(&StaticSecret::from(BOX_KEY));
        let init = initiation(&public, 9);
        let mut data4 = vec![4, 0, 0, 0];
        data4.extend([0xef, 0xcd, 0xab, 0x01]);
        data4.extend([0; 60]);
        let seeds: [&[u8]; 4] = [&init, &data4, &[0; 92], &[3, 0, 0, 0]];
        for mode in 0..4u8 {
            for s in seeds {
                let mut d = vec![mode];
                d.extend_from_slice(s);
                check_screen(&d);
            }
        }
        for _ in 0..600 {
            let s = seeds[(next() % 4) as usize];
            let mut d = vec![next() as u8];
            d.extend_from_slice(s);
            for _ in 0..(next() % 4) {
                let i = 1 + (next() as usize) % d.len();
                match next() % 3 {
                    0 if i < d.len() => d[i] ^= 1 << (next() % 8),
                    1 => d.truncate(i),
                    _ => d.insert(i, next() as u8),
                }
            }
            check_screen(&d);
        }
    }
}
