//! The box's SideroLink identity, as Sidero keeps it (`SCM/internal/siderolink/config.go`):
//! an installation id (the base64 text of 32 random bytes) from which the overlay prefix is
//! derived, and the WireGuard private key. Created once from 64 random bytes; the prefix
//! and the public key follow from it. Debug never prints key material.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::protocol::siderolink::address::Prefix;
use crate::store::{Store, StoreError};

/// The installation id and the server's WireGuard key.
#[derive(Clone)]
pub struct Identity {
    installation_id: String,
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("prefix", &self.prefix())
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

/// A WireGuard key that is not 32 bytes of standard base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WireGuard key (32 bytes, standard base64)")]
pub struct KeyError;

impl Identity {
    /// From stored parts.
    pub fn new(installation_id: String, private_key: [u8; 32]) -> Identity {
        let secret = StaticSecret::from(private_key);
        let public = PublicKey::from(&secret);
        Identity {
            installation_id,
            secret,
            public,
        }
    }

    /// A new identity from 64 random bytes (the first 32 become the installation id's
    /// text, as Sidero uses a generated key's base64 for it).
    pub fn generate(random: [u8; 64]) -> Identity {
        let (id, key) = random.split_at(32);
        let mut private_key = [0u8; 32];
        private_key.copy_from_slice(key);
        Identity::new(STANDARD.encode(id), private_key)
    }

    pub fn installation_id(&self) -> &str {
        &self.installation_id
    }

    /// The overlay /64.
    pub fn prefix(&self) -> Prefix {
        Prefix::derive(&self.installation_id)
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The private key bytes, only for sealing them into the store.
    pub fn private_key_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public.as_bytes())
    }
}

/// Why the box's SideroLink identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("SideroLink identity store access failed")]
    Store(#[from] StoreError),
    #[error("stored SideroLink private key is {0} bytes, not 32")]
    KeyLength(usize),
    #[error("no OS randomness for a new SideroLink identity")]
    Random,
}

/// The identity stored in redb (private key sealed with the box's secrets key), created
/// on first start.
pub fn load_or_create(store: &Store) -> Result<Identity, IdentityError> {
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).map_err(|_| IdentityError::Random)?;
    let fresh = Identity::generate(random);
    let key = fresh.private_key_bytes();
    let (id, stored) = store.siderolink_identity_or_insert((fresh.installation_id(), &key))?;
    let stored: [u8; 32] = stored
        .as_slice()
        .try_into()
        .map_err(|_| IdentityError::KeyLength(stored.len()))?;
    Ok(Identity::new(id, stored))
}

/// Reads a WireGuard public key as `wgtypes.ParseKey` does: standard base64 of 32 bytes.
pub fn parse_public_key(s: &str) -> Result<PublicKey, KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|_| KeyError)?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError)?;
    Ok(PublicKey::from(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_hides_its_key() {
        let a = Identity::generate([7; 64]);
        let b = Identity::new(a.installation_id().to_string(), a.private_key_bytes());
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.prefix(), b.prefix());
        assert_eq!(a.prefix(), Prefix::derive(&STANDARD.encode([7u8; 32])));
        let dbg = format!("{a:?}");
        assert!(
            !dbg.contains(&STANDARD.encode(a.private_key_bytes())),
            "{dbg}"
        );
        assert!(dbg.contains(&a.public_key_base64()));
    }

    #[test]
    fn identity_persists_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let first = {
            let store = Store::open(&path).unwrap();
            let a = load_or_create(&store).unwrap();
            let b = load_or_create(&store).unwrap();
            assert_eq!(a.public_key(), b.public_key(), "created once");
            assert_eq!(a.installation_id(), b.installation_id());
            a
        };
        let store = Store::open(&path).unwrap();
        let again = load_or_create(&store).unwrap();
        assert_eq!(again.public_key(), first.public_key(), "survives a restart");
        assert_eq!(again.prefix(), first.prefix());
        drop(store);
        // The key is sealed at rest: its bytes are nowhere in the store file.
        let raw = std::fs::read(&path).unwrap();
        let key = first.private_key_bytes();
        assert!(
            !raw.windows(32).any(|w| w == key),
            "private key stored in clear"
        );
        assert!(
            raw.windows(first.installation_id().len())
                .any(|w| w == first.installation_id().as_bytes()),
            "installation id (not secret) is stored as is"
        );
    }

    #[test]
    fn public_keys_parse_like_wgtypes() {
        let k = Identity::generate([1; 64]).public_key_base64();
        assert!(parse_public_key(&k).is_ok());
        for bad in [
            "",
            "abc",
            &STANDARD.encode([0u8; 31]),
            &STANDARD.encode([0u8; 33]),
            "!!!!",
        ] {
            assert_eq!(parse_public_key(bad), Err(KeyError), "{bad}");
        }
    }
}
