//! A cluster's talosconfig (the file `talosctl` reads), as an operator gives it to the box
//! for resets without BMC: `context` names the entry of `contexts` to use (or the only
//! one), whose `ca`, `crt` and `key` are base64 PEM: the cluster's OS CA, and the client
//! certificate and key the machine API (apid) requires. Parsing is pure; the result builds
//! the rustls client configuration of the reset call: the node is verified against `ca`,
//! the box presents `crt`/`key`.
//!
//! Talos writes Ed25519 keys with the PEM label `ED25519 PRIVATE KEY` around PKCS#8 bytes;
//! they are read as the PKCS#8 keys they are.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A talosconfig larger than this is refused (real ones are a few KiB).
pub const MAX_TALOSCONFIG: usize = 256 * 1024;

/// Why a talosconfig cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TalosconfigError {
    #[error("talosconfig is larger than {MAX_TALOSCONFIG} bytes")]
    TooLarge,
    #[error("talosconfig is not valid YAML of the talosctl shape")]
    Yaml(#[source] yaml_serde::Error),
    #[error("talosconfig has no context {0:?}")]
    NoContext(String),
    #[error("talosconfig names no context and holds {0} (set `context:`)")]
    AmbiguousContext(usize),
    #[error("talosconfig context {context:?} has no {field}")]
    Missing {
        context: String,
        field: &'static str,
    },
    #[error("talosconfig context {context:?}: {field} is not base64-encoded PEM")]
    Encoding {
        context: String,
        field: &'static str,
    },
    #[error("talosconfig context {context:?}: {field} holds no {what}")]
    Pem {
        context: String,
        field: &'static str,
        what: &'static str,
    },
    #[error("talosconfig client certificate and key do not form a TLS client identity")]
    Tls(#[source] rustls::Error),
}

#[derive(Debug, serde::Deserialize)]
struct File {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, Context>,
}

#[derive(Debug, serde::Deserialize)]
struct Context {
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    crt: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// The credentials of one talosconfig context.
pub struct Talosconfig {
    /// The context used.
    pub context: String,
    ca: Vec<CertificateDer<'static>>,
    crt: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Talosconfig {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Talosconfig")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

fn pem_field(
    context: &str,
    field: &'static str,
    value: Option<&String>,
) -> Result<Vec<u8>, TalosconfigError> {
    let value = value
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| TalosconfigError::Missing {
            context: context.to_string(),
            field,
        })?;
    STANDARD
        .decode(value)
        .map_err(|_| TalosconfigError::Encoding {
            context: context.to_string(),
            field,
        })
}

fn certificates(
    context: &str,
    field: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TalosconfigError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TalosconfigError::Pem {
            context: context.to_string(),
            field,
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of `pem`: any label rustls knows, or Talos's `ED25519 PRIVATE KEY`.
fn private_key(context: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TalosconfigError> {
    if let Ok(k) = PrivateKeyDer::from_pem_slice(pem) {
        return Ok(k);
    }
    // rustls's PEM reader skips unknown labels; read Talos's own by hand.
    let text = String::from_utf8_lossy(pem);
    let begin = "-----BEGIN ED25519 PRIVATE KEY-----";
    let end = "-----END ED25519 PRIVATE KEY-----";
    if let (Some(b), Some(e)) = (text.find(begin), text.find(end))
        && b < e
    {
        let body: String = text[b + begin.len()..e]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = STANDARD.decode(body) {
            return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)));
        }
    }
    Err(TalosconfigError::Pem {
        context: context.to_string(),
        field: "key",
        what: "private key",
    })
}

impl Talosconfig {
    /// Reads a talosconfig; every field of the chosen context is checked.
    pub fn parse(bytes: &[u8]) -> Result<Talosconfig, TalosconfigError> {
        if bytes.len() > MAX_TALOSCONFIG {
            return Err(TalosconfigError::TooLarge);
        }
        let file: File = yaml_serde::from_slice(bytes).map_err(TalosconfigError::Yaml)?;
        let name = match file.context.filter(|c| !c.is_empty()) {
            Some(c) => c,
            None if file.contexts.len() == 1 => {
                file.contexts.keys().next().cloned().unwrap_or_default()
            }
            None => return Err(TalosconfigError::AmbiguousContext(file.contexts.len())),
        };
        let ctx = file
            .contexts
            .get(&name)
            .ok_or_else(|| TalosconfigError::NoContext(name.clone()))?;
        let ca = certificates(&name, "ca", &pem_field(&name, "ca", ctx.ca.as_ref())?)?;
        let crt = certificates(&name, "crt", &pem_field(&name, "crt", ctx.crt.as_ref())?)?;
        let key = private_key(&name, &pem_field(&name, "key", ctx.key.as_ref())?)?;
        let config = Talosconfig {
            context: name,
            ca,
            crt,
            key,
        };
        // The pair must be usable before it is stored.
        config.client_config()?;
        Ok(config)
    }

    /// The rustls client configuration of the machine API call: the node's certificate
    /// must chain to the talosconfig's CA; the box presents the talosconfig's client
    /// certificate; ALPN h2 (gRPC).
    ///
    /// The node is reached at its SideroLink address, which WireGuard already binds to
    /// the node's key; whether apid's certificate also lists that address depends on the
    /// Talos version, so a certificate of the cluster's CA that does not name it is
    /// accepted (the chain, validity and signature are still checked).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TalosconfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).map_err(TalosconfigError::Tls)?;
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TalosconfigError::Tls(rustls::Error::General(e.to_string())))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TalosconfigError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterCa(webpki)))
            .with_client_auth_cert(self.crt.clone(), self.key.clone_key())
            .map_err(TalosconfigError::Tls)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// WebPKI verification against the cluster CA, tolerating only a name mismatch (see
/// [`Talosconfig::client_config`]).
#[derive(Debug)]
struct ClusterCa(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        // WebPKI checks the chain (trust anchor, validity, usage) before the name, so a
        // name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
