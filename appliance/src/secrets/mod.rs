//! Secrets at rest: one symmetric key per box, kept in its own 0600 file in the data dir
//! (`secrets.key`, see [`keyfile`]), and sealed values that are useless without it. A copy
//! of `state.redb` alone (a backup, a support bundle, a file read by another local user)
//! leaks no secret.
//!
//! Use it for every secret the box keeps, so there is one mechanism to review:
//! - the store seals BMC credentials (`bmc_secrets` records, inline `spec.bmc.pass`) with
//!   the key it opened beside its file (`Store::open`), and exposes
//!   `Store::seal_secret`/`Store::open_secret` for other rooms that keep secrets in redb
//!   (WireGuard private keys, talosconfig);
//! - a secret kept in its own file is written with [`files::write_private`] (0600, atomic)
//!   and, if it must not be readable from a copy of the data dir either, sealed first.
//!
//! A sealed value is `MAGIC ‖ nonce (12) ‖ ChaCha20-Poly1305(plaintext) ‖ tag (16)`. The
//! caller names a `context` (e.g. `"bmc_secrets/default/s1-bmc"`) that is authenticated as
//! associated data: a sealed value moved to another record does not open. The nonce is an
//! input ([`SecretKey::seal`]) so tests are deterministic; [`SecretKey::seal_random`] takes
//! it from the OS (`getrandom`), and random 96-bit nonces are safe for far more seals than
//! the box ever makes with one key.
//!
//! The AEAD is `ring`'s (already linked for rustls): no new crypto dependency.
//!
//! Pure apart from `seal_random` (OS randomness); the files live in [`keyfile`] and
//! [`files`].

pub mod ca;
pub mod files;
pub mod keyfile;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sha2::Digest;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the authentication tag.
const TAG_LEN: usize = 16;
/// Marks a sealed value (format version 1). JSON and UTF-8 text never start with 0xA5.
const MAGIC: [u8; 4] = [0xA5, b'S', b'K', 1];

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("value is not sealed (no seal header)")]
    NotSealed,
    #[error("sealed value is truncated ({len} bytes)")]
    Truncated { len: usize },
    #[error("sealed value does not open with this key (wrong key, wrong record, or altered)")]
    Unauthentic,
    #[error("no randomness available for a nonce")]
    Random,
}

/// The box's secrets key. Debug never prints key material.
pub struct SecretKey {
    key: LessSafeKey,
    id: u64,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(id {:016x})", self.id)
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretKey {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte key");
        let digest = sha2::Sha256::new()
            .chain_update(b"appliance secrets key id\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        SecretKey {
            key: LessSafeKey::new(unbound),
            id: u64::from_be_bytes(id),
        }
    }

    /// A fingerprint of the key (a one-way hash; reveals nothing about the key). Stores
    /// record it to tell a missing or different key file from a damaged record.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Seals `plaintext` for `context` with the given nonce. A nonce must never repeat
    /// under one key: pass fresh OS randomness ([`SecretKey::seal_random`]) outside tests.
    pub fn seal(&self, context: &str, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .expect("ChaCha20-Poly1305 seals any length the box uses");
        out.extend_from_slice(&body);
        out
    }

    /// Seals with a nonce from the OS.
    pub fn seal_random(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SecretsError::Random)?;
        Ok(self.seal(context, plaintext, nonce))
    }

    /// Opens a value sealed for `context` by this key.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let rest = sealed.strip_prefix(&MAGIC).ok_or(SecretsError::NotSealed)?;
        let (nonce, body) = rest
            .split_first_chunk::<NONCE_LEN>()
            .filter(|(_, body)| body.len() >= TAG_LEN)
            .ok_or(SecretsError::Truncated { len: sealed.len() })?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| SecretsError::Unauthentic)?;
        Ok(plain.to_vec())
    }
}

/// Whether `bytes` carry the seal header (sealed by some key; not proof it opens).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes(&[b; KEY_LEN])
    }

    #[test]
    fn round_trip_and_ciphertext_hides_the_plaintext() {
        let k = key(7);
        let sealed = k.seal("bmc_secrets/default/s1-bmc", b"hunter2-password", [1; 12]);
        assert!(is_sealed(&sealed));
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "plaintext visible in {sealed:?}"
        );
        assert_eq!(sealed.len(), 4 + 12 + 16 + 16);
        assert_eq!(
            k.open("bmc_secrets/default/s1-bmc", &sealed).unwrap(),
            b"hunter2-password"
        );
        // Deterministic for a given nonce (the nonce is an input).
        assert_eq!(
            sealed,
            k.seal("bmc_secrets/default/s1-bmc", b"hunter2-password", [1; 12])
        );
        assert_ne!(
            sealed,
            k.seal("bmc_secrets/default/s1-bmc", b"hunter2-password", [2; 12])
        );
    }

    #[test]
    fn wrong_key_context_or_altered_bytes_do_not_open() {
        let k = key(7);
        let sealed = k.seal("a", b"secret", [3; 12]);
        assert_eq!(key(8).open("a", &sealed), Err(SecretsError::Unauthentic));
        assert_eq!(k.open("b", &sealed), Err(SecretsError::Unauthentic));
        for i in 4..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                k.open("a", &bad),
                Err(SecretsError::Unauthentic),
                "byte {i}"
            );
        }
        assert_eq!(
            k.open("a", b"{\"user\":\"x\"}"),
            Err(SecretsError::NotSealed)
        );
        assert!(matches!(
            k.open("a", &sealed[..20]),
            Err(SecretsError::Truncated { .. })
        ));
        assert_eq!(k.open("a", &[]), Err(SecretsError::NotSealed));
    }

    #[test]
    fn empty_plaintext_and_random_nonces() {
        let k = key(1);
        let a = k.seal_random("c", b"").unwrap();
        let b = k.seal_random("c", b"").unwrap();
        assert_ne!(a, b, "fresh nonces");
        assert_eq!(k.open("c", &a).unwrap(), b"");
    }

    #[test]
    fn id_depends_on_the_key_and_debug_hides_it() {
        assert_eq!(key(1).id(), key(1).id());
        assert_ne!(key(1).id(), key(2).id());
        let shown = format!("{:?}", key(0xAB));
        assert!(shown.starts_with("SecretKey(id "), "{shown}");
        assert!(!shown.contains("abab"), "{shown}");
    }
}
