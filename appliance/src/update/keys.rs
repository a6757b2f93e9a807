//! Update signing keys, pure: ed25519 in the PEM files OpenSSL writes
//! (`openssl genpkey -algorithm ed25519` → PKCS#8 `PRIVATE KEY`; `openssl pkey -pubout` →
//! SubjectPublicKeyInfo `PUBLIC KEY`), which `appliance update keygen` writes too.

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::bundle::BundleError;

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, BundleError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| BundleError::Key(format!("no `{begin}` block")))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| BundleError::Key(format!("no `{end}` line")))?;
    let b64: String = text[start..start + stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| BundleError::Key(format!("`{label}` is not base64")))
}

/// A PKCS#8 ed25519 private key from PEM.
pub fn private_from_pem(text: &str) -> Result<Ed25519KeyPair, BundleError> {
    let der = pem_body(text, "PRIVATE KEY")?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| BundleError::Key(format!("not an ed25519 PKCS#8 key: {e}")))
}

/// An ed25519 public key from PEM (SubjectPublicKeyInfo).
pub fn public_from_pem(text: &str) -> Result<[u8; 32], BundleError> {
    let der = pem_body(text, "PUBLIC KEY")?;
    match der.strip_prefix(&SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => Ok(key.try_into().expect("32 bytes")),
        _ => Err(BundleError::Key("not an ed25519 public key".into())),
    }
}

/// The public half of `key` as PEM.
pub fn public_pem(key: &Ed25519KeyPair) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.public_key().as_ref());
    pem("PUBLIC KEY", &der)
}

/// A new private key as PKCS#8 PEM.
pub fn generate_private_pem() -> Result<String, BundleError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| BundleError::Key("no randomness from the OS".into()))?;
    Ok(pem("PRIVATE KEY", pkcs8.as_ref()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's test key pair (made by OpenSSL), as the image build and the QEMU
    /// test use it.
    const TEST_KEY: &str = include_str!("../../../scripts/keys/update-test.pem");
    const TEST_PUB: &str = include_str!("../../../scripts/keys/update-test.pub.pem");

    #[test]
    fn openssl_pem_files_read_and_match() {
        let k = private_from_pem(TEST_KEY).unwrap();
        assert_eq!(
            public_from_pem(TEST_PUB).unwrap(),
            <[u8; 32]>::try_from(k.public_key().as_ref()).unwrap()
        );
        // What we write is what OpenSSL wrote.
        assert_eq!(public_pem(&k), TEST_PUB);
    }

    #[test]
    fn generated_keys_round_trip_and_garbage_is_refused() {
        let pem = generate_private_pem().unwrap();
        let k = private_from_pem(&pem).unwrap();
        let p = public_from_pem(&public_pem(&k)).unwrap();
        assert_eq!(&p[..], k.public_key().as_ref());
        for bad in [
            "",
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            TEST_KEY,
        ] {
            assert!(public_from_pem(bad).is_err(), "{bad}");
        }
        assert!(private_from_pem(TEST_PUB).is_err());
    }
}
