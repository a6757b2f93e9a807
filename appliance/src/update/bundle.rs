//! The update bundle format, pure: no IO. A bundle is one file:
//!
//! ```text
//! 0      8 bytes   magic "APLBNDL1"
//! 8      4 bytes   manifest length M, little-endian (1 ..= MAX_MANIFEST)
//! 12     M bytes   manifest (UTF-8 text, below)
//! 12+M   64 bytes  ed25519 signature over bytes 0 .. 12+M
//! 76+M   payload   the components, in manifest order, back to back
//! ```
//!
//! The manifest, one `key value…` per line, every line required once except `component`:
//!
//! ```text
//! appliance-bundle 1
//! arch x86_64
//! version 0.1.0+3f2a1b
//! component root 61341696 <sha256 hex>
//! component kernel 8082368 <sha256 hex>
//! component initrd 12003441 <sha256 hex>
//! ```
//!
//! The signature covers the manifest, the manifest names each component's size and SHA-256,
//! so one signature covers every payload byte. The file's length must be exactly the header
//! plus the components (a truncated or padded bundle is refused before any payload is read).

use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// First bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"APLBNDL1";
/// Length of the fixed prefix: magic + manifest length.
pub const PREFIX_LEN: usize = 12;
/// Largest manifest accepted.
pub const MAX_MANIFEST: usize = 16 * 1024;
/// ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// The components of a bundle, in payload order.
pub const COMPONENTS: [ComponentKind; 3] = [
    ComponentKind::Root,
    ComponentKind::Kernel,
    ComponentKind::Initrd,
];

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not an update bundle (no APLBNDL1 magic)")]
    Magic,
    #[error("bundle truncated: {got} bytes, the header alone needs {need}")]
    ShortHeader { got: u64, need: u64 },
    #[error("manifest length {0} out of range (1..={MAX_MANIFEST})")]
    ManifestLength(usize),
    #[error("bad signature: the bundle was not signed by this box's update key, or was altered")]
    Signature,
    #[error("manifest line {line}: {why}")]
    Manifest { line: usize, why: String },
    #[error("manifest: `{0}` missing")]
    Missing(&'static str),
    #[error("bundle is for {bundle}, this box is {host}")]
    Arch { bundle: String, host: String },
    #[error("bundle is {got} bytes, its manifest says {want} (truncated or padded)")]
    Length { got: u64, want: u64 },
    #[error("component {kind}: SHA-256 does not match the signed manifest")]
    Digest { kind: ComponentKind },
    #[error("component {kind}: {size} bytes does not fit the {room}-byte {what}")]
    TooLarge {
        kind: ComponentKind,
        size: u64,
        room: u64,
        what: &'static str,
    },
    #[error("signing key: {0}")]
    Key(String),
}

/// One part of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    /// The slot's root filesystem (squashfs), written to the inactive root partition.
    Root,
    /// The slot's kernel, written to `<esp>/<slot>/vmlinuz`.
    Kernel,
    /// The slot's initrd, written to `<esp>/<slot>/initrd.img`.
    Initrd,
}

impl ComponentKind {
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Root => "root",
            ComponentKind::Kernel => "kernel",
            ComponentKind::Initrd => "initrd",
        }
    }
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A component as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub kind: ComponentKind,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `std::env::consts::ARCH` of the box it is for (`x86_64`, `aarch64`).
    pub arch: String,
    /// The image version it installs (the root's `IMAGE_VERSION`).
    pub version: String,
    /// root, kernel, initrd in this order.
    pub components: Vec<Component>,
}

impl Manifest {
    /// The manifest text (what is signed, inside the header).
    pub fn render(&self) -> String {
        let mut s = format!(
            "appliance-bundle 1\narch {}\nversion {}\n",
            self.arch, self.version
        );
        for c in &self.components {
            s.push_str(&format!(
                "component {} {} {}\n",
                c.kind,
                c.size,
                hex::encode(c.sha256)
            ));
        }
        s
    }

    /// Strict reading: every key known, once; components exactly root, kernel, initrd.
    pub fn parse(text: &str) -> Result<Manifest, BundleError> {
        let bad = |line: usize, why: String| BundleError::Manifest { line, why };
        let mut format = false;
        let mut arch = None;
        let mut version = None;
        let mut components: Vec<Component> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let mut words = raw.split(' ');
            let key = words.next().unwrap_or("");
            let rest: Vec<&str> = words.collect();
            let once = |seen: bool| {
                if seen {
                    Err(bad(line, format!("`{key}` given twice")))
                } else {
                    Ok(())
                }
            };
            let one_word = |rest: &[&str]| -> Result<String, BundleError> {
                match rest {
                    [w] if is_token(w) => Ok((*w).to_string()),
                    _ => Err(bad(
                        line,
                        format!("`{key}` takes one word of [A-Za-z0-9._+-]"),
                    )),
                }
            };
            match key {
                "appliance-bundle" => {
                    once(format)?;
                    if rest != ["1"] {
                        return Err(bad(
                            line,
                            format!("format {} unknown (this box reads 1)", rest.join(" ")),
                        ));
                    }
                    format = true;
                }
                "arch" => {
                    once(arch.is_some())?;
                    arch = Some(one_word(&rest)?);
                }
                "version" => {
                    once(version.is_some())?;
                    version = Some(one_word(&rest)?);
                }
                "component" => {
                    let [kind, size, sha] = rest[..] else {
                        return Err(bad(
                            line,
                            "expected `component <kind> <size> <sha256>`".into(),
                        ));
                    };
                    let want = COMPONENTS.get(components.len()).copied();
                    if want.map(ComponentKind::name) != Some(kind) {
                        return Err(bad(
                            line,
                            format!(
                                "component `{kind}` out of place (expected root, kernel, initrd in this order)"
                            ),
                        ));
                    }
                    let size: u64 = size
                        .parse()
                        .map_err(|_| bad(line, format!("size `{size}` is not a number")))?;
                    let mut sha256 = [0u8; 32];
                    hex::decode_to_slice(sha, &mut sha256)
                        .map_err(|_| bad(line, "sha256 is not 64 hex digits".into()))?;
                    components.push(Component {
                        kind: want.expect("checked above"),
                        size,
                        sha256,
                    });
                }
                "" => return Err(bad(line, "empty line".into())),
                other => return Err(bad(line, format!("unknown key `{other}`"))),
            }
        }
        if !format {
            return Err(BundleError::Missing("appliance-bundle"));
        }
        if components.len() != COMPONENTS.len() {
            return Err(BundleError::Missing("component (root, kernel, initrd)"));
        }
        Ok(Manifest {
            arch: arch.ok_or(BundleError::Missing("arch"))?,
            version: version.ok_or(BundleError::Missing("version"))?,
            components,
        })
    }

    /// Total payload bytes.
    pub fn payload_len(&self) -> u64 {
        self.components.iter().map(|c| c.size).sum()
    }

    pub fn component(&self, kind: ComponentKind) -> &Component {
        self.components
            .iter()
            .find(|c| c.kind == kind)
            .expect("a parsed manifest has every component")
    }
}

fn is_token(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 128
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// How many header bytes follow the 12-byte prefix (manifest + signature).
pub fn header_rest_len(prefix: &[u8; PREFIX_LEN]) -> Result<usize, BundleError> {
    if &prefix[..8] != MAGIC {
        return Err(BundleError::Magic);
    }
    let m = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
    if m == 0 || m > MAX_MANIFEST {
        return Err(BundleError::ManifestLength(m));
    }
    Ok(m + SIGNATURE_LEN)
}

/// A verified header: the manifest is signed by the key and fits this box's arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub manifest: Manifest,
    /// Bytes before the payload (prefix + manifest + signature).
    pub len: u64,
}

impl Header {
    /// The exact length the whole bundle file must have.
    pub fn bundle_len(&self) -> u64 {
        self.len + self.manifest.payload_len()
    }
}

/// Checks a header (`bytes` = prefix + manifest + signature, as `header_rest_len` said):
/// signature first (nothing of an unsigned manifest is trusted), then the manifest's
/// syntax, its arch against `host_arch`, and `file_len` against the length it implies.
pub fn verify_header(
    bytes: &[u8],
    public_key: &[u8; 32],
    host_arch: &str,
    file_len: u64,
) -> Result<Header, BundleError> {
    let prefix: &[u8; PREFIX_LEN] = bytes
        .get(..PREFIX_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or(BundleError::ShortHeader {
            got: bytes.len() as u64,
            need: PREFIX_LEN as u64,
        })?;
    let rest = header_rest_len(prefix)?;
    let total = PREFIX_LEN + rest;
    if bytes.len() < total {
        return Err(BundleError::ShortHeader {
            got: bytes.len() as u64,
            need: total as u64,
        });
    }
    let signed = &bytes[..total - SIGNATURE_LEN];
    let signature = &bytes[total - SIGNATURE_LEN..total];
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signed, signature)
        .map_err(|_| BundleError::Signature)?;
    let text = std::str::from_utf8(&signed[PREFIX_LEN..]).map_err(|_| BundleError::Manifest {
        line: 0,
        why: "not UTF-8".into(),
    })?;
    let manifest = Manifest::parse(text)?;
    if manifest.arch != host_arch {
        return Err(BundleError::Arch {
            bundle: manifest.arch,
            host: host_arch.to_string(),
        });
    }
    let header = Header {
        manifest,
        len: total as u64,
    };
    if file_len != header.bundle_len() {
        return Err(BundleError::Length {
            got: file_len,
            want: header.bundle_len(),
        });
    }
    Ok(header)
}

/// The signed header for `manifest` (the bundle is this followed by the components).
pub fn sign_header(manifest: &Manifest, key: &Ed25519KeyPair) -> Vec<u8> {
    let text = manifest.render();
    let mut out = Vec::with_capacity(PREFIX_LEN + text.len() + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    let sig = key.sign(&out);
    out.extend_from_slice(sig.as_ref());
    out
}

/// Hashes one component as its bytes stream by, sans-IO.
#[derive(Debug, Clone)]
pub struct ComponentCheck {
    component: Component,
    seen: u64,
    hasher: Sha256,
}

impl ComponentCheck {
    pub fn new(component: &Component) -> Self {
        ComponentCheck {
            component: component.clone(),
            seen: 0,
            hasher: Sha256::new(),
        }
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.component.size - self.seen
    }

    pub fn update(&mut self, data: &[u8]) {
        debug_assert!(data.len() as u64 <= self.remaining());
        self.seen += data.len() as u64;
        self.hasher.update(data);
    }

    /// All bytes seen and their SHA-256 is the signed one.
    pub fn finish(self) -> Result<(), BundleError> {
        let digest: [u8; 32] = self.hasher.finalize().into();
        if self.seen == self.component.size && digest == self.component.sha256 {
            Ok(())
        } else {
            Err(BundleError::Digest {
                kind: self.component.kind,
            })
        }
    }
}

/// The SHA-256 of `data` (for building manifests).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn keypair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn public(k: &Ed25519KeyPair) -> [u8; 32] {
        use ring::signature::KeyPair;
        k.public_key().as_ref().try_into().unwrap()
    }

    /// A bundle of three small components, and its manifest.
    fn bundle(key: &Ed25519KeyPair, arch: &str) -> (Vec<u8>, Manifest) {
        let parts: [&[u8]; 3] = [b"squashfs root bytes", b"kernel", b"initrd!"];
        let manifest = Manifest {
            arch: arch.into(),
            version: "1.2.3+abc".into(),
            components: COMPONENTS
                .iter()
                .zip(parts)
                .map(|(&kind, p)| Component {
                    kind,
                    size: p.len() as u64,
                    sha256: sha256(p),
                })
                .collect(),
        };
        let mut out = sign_header(&manifest, key);
        for p in parts {
            out.extend_from_slice(p);
        }
        (out, manifest)
    }

    /// The whole check as the writer does it: header, then each component's hash.
    fn verify(bytes: &[u8], pk: &[u8; 32], arch: &str) -> Result<Header, BundleError> {
        let prefix: &[u8; PREFIX_LEN] = bytes
            .get(..PREFIX_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(BundleError::ShortHeader {
                got: bytes.len() as u64,
                need: PREFIX_LEN as u64,
            })?;
        let n = PREFIX_LEN + header_rest_len(prefix)?;
        let h = verify_header(&bytes[..n.min(bytes.len())], pk, arch, bytes.len() as u64)?;
        let mut at = h.len as usize;
        for c in &h.manifest.components {
            let mut check = ComponentCheck::new(c);
            check.update(&bytes[at..at + c.size as usize]);
            at += c.size as usize;
            check.finish()?;
        }
        Ok(h)
    }

    #[test]
    fn a_signed_bundle_verifies_and_round_trips_its_manifest() {
        let k = keypair();
        let (b, m) = bundle(&k, "x86_64");
        let h = verify(&b, &public(&k), "x86_64").unwrap();
        assert_eq!(h.manifest, m);
        assert_eq!(h.bundle_len(), b.len() as u64);
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
    }

    #[test]
    fn another_key_or_any_flipped_header_byte_is_refused() {
        let k = keypair();
        let (b, _) = bundle(&k, "x86_64");
        assert_eq!(
            verify(&b, &public(&keypair()), "x86_64"),
            Err(BundleError::Signature)
        );
        let header_len = verify(&b, &public(&k), "x86_64").unwrap().len as usize;
        for i in PREFIX_LEN..header_len {
            let mut t = b.clone();
            t[i] ^= 0x01;
            assert_eq!(
                verify(&t, &public(&k), "x86_64"),
                Err(BundleError::Signature),
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_flipped_payload_byte_fails_its_component_digest() {
        let k = keypair();
        let (b, m) = bundle(&k, "x86_64");
        let header_len = b.len() - m.payload_len() as usize;
        let mut at = header_len;
        for c in &m.components {
            let mut t = b.clone();
            t[at] ^= 0x80;
            assert_eq!(
                verify(&t, &public(&k), "x86_64"),
                Err(BundleError::Digest { kind: c.kind })
            );
            at += c.size as usize;
        }
    }

    #[test]
    fn truncated_padded_wrong_arch_and_foreign_files_are_refused() {
        let k = keypair();
        let pk = public(&k);
        let (b, _) = bundle(&k, "x86_64");
        let want = b.len() as u64;
        assert_eq!(
            verify(&b[..b.len() - 1], &pk, "x86_64"),
            Err(BundleError::Length {
                got: want - 1,
                want
            })
        );
        let mut padded = b.clone();
        padded.push(0);
        assert_eq!(
            verify(&padded, &pk, "x86_64"),
            Err(BundleError::Length {
                got: want + 1,
                want
            })
        );
        assert!(matches!(
            verify(&b[..40], &pk, "x86_64"),
            Err(BundleError::ShortHeader { got: 40, .. })
        ));
        assert!(matches!(
            verify(&b[..5], &pk, "x86_64"),
            Err(BundleError::ShortHeader { got: 5, .. })
        ));
        assert_eq!(
            verify(&b, &pk, "aarch64"),
            Err(BundleError::Arch {
                bundle: "x86_64".into(),
                host: "aarch64".into()
            })
        );
        assert_eq!(
            verify(b"hsqs\0\0\0\0\0\0\0\0\0\0\0\0", &pk, "x86_64"),
            Err(BundleError::Magic)
        );
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&(MAX_MANIFEST as u32 + 1).to_le_bytes());
        assert_eq!(
            verify(&huge, &pk, "x86_64"),
            Err(BundleError::ManifestLength(MAX_MANIFEST + 1))
        );
    }

    #[test]
    fn manifest_reading_is_strict() {
        let ok = "appliance-bundle 1\narch x86_64\nversion 1\ncomponent root 1 {h}\ncomponent kernel 1 {h}\ncomponent initrd 1 {h}\n"
            .replace("{h}", &"ab".repeat(32));
        Manifest::parse(&ok).unwrap();
        let cases = [
            (
                ok.replace("appliance-bundle 1", "appliance-bundle 2"),
                "format 2 unknown",
            ),
            (ok.replace("arch x86_64\n", ""), "`arch` missing"),
            (format!("{ok}arch aarch64\n"), "`arch` given twice"),
            (ok.replace("version 1", "version a b"), "takes one word"),
            (ok.replace("version 1", "version ../x"), "takes one word"),
            (format!("{ok}color blue\n"), "unknown key `color`"),
            (
                ok.replace("component root", "component kernel"),
                "out of place",
            ),
            (
                ok.replace("component initrd 1", "component initrd x"),
                "not a number",
            ),
            (
                ok.replace(&format!("initrd 1 {}", "ab".repeat(32)), "initrd 1 abc"),
                "64 hex",
            ),
            (
                ok.replace(&format!("component initrd 1 {}\n", "ab".repeat(32)), ""),
                "missing",
            ),
            (format!("{ok}\n"), "empty line"),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?} for\n{text}");
        }
    }
}
