//! The mTLS admin port's TLS side: the rustls server configuration of `[admin_tls] listen`,
//! with a certificate issued at start by the box's admin CA (`secrets/ca.rs`, key sealed in
//! the store) and client certificates required: signed by that CA AND currently enrolled by
//! name (its SHA-256 recorded by `ctl bridge enroll`, not revoked). Enroll and revoke go
//! through [`AdminTls`], which updates the store and the in-memory set the verifier reads,
//! so a revocation refuses the next handshake (sessions are never resumed: a resumption
//! would skip the check), and tells the listener
//! ([`AdminTls::changes`]) to close the connections the revoked certificate already holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use sha2::Digest;

use crate::secrets::ca::{Authority, CaError, Issued};
use crate::store::{ClientRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminTlsError {
    #[error("admin CA")]
    Ca(#[from] CaError),
    #[error("admin TLS state in the store")]
    Store(#[from] StoreError),
    #[error("admin TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("admin TLS client verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("admin TLS certificate PEM")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("client name `{0}` must be 1-63 of [a-z0-9.-]")]
    BadName(String),
    #[error("no client named `{0}` is enrolled")]
    NotEnrolled(String),
}

/// Enrolled client certificates by SHA-256 of their DER: name and revoked.
type Enrolled = Arc<RwLock<HashMap<[u8; 32], (String, bool)>>>;

/// The admin CA, the enrolled clients and the listener's TLS configuration.
#[derive(Clone)]
pub struct AdminTls {
    store: Store,
    ca: Arc<Authority>,
    enrolled: Enrolled,
    config: Arc<rustls::ServerConfig>,
    /// Bumped by every enrolment and revocation.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTls").finish_non_exhaustive()
    }
}

impl AdminTls {
    /// Loads (or creates, once) the CA and the enrolled clients, and issues the listener's
    /// certificate for `names` (plus `appliance-admin`, localhost and loopback). Blocking
    /// (store reads, key generation).
    pub fn load(store: Store, names: &[String]) -> Result<AdminTls, AdminTlsError> {
        let (key_pem, cert_pem) = store.admin_ca_or_create(|| {
            let (key, ca) = Authority::create()?;
            Ok::<_, AdminTlsError>((key, ca.cert_pem))
        })?;
        let ca = Authority::from_parts(&key_pem, cert_pem)?;
        let mut enrolled = HashMap::new();
        for c in store.admin_clients()? {
            if let Some(fp) = parse_fp(&c.sha256) {
                enrolled.insert(fp, (c.name, c.revoked));
            }
        }
        let enrolled: Enrolled = Arc::new(RwLock::new(enrolled));
        let now = crate::clock::unix_secs();
        let server = ca.issue_server(names, now, 10 * 365 * 86400)?;
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()?;
        let verifier = Arc::new(EnrolledOnly {
            inner,
            enrolled: enrolled.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.cert_der.clone()), ca_der],
                PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())?,
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // No session resumption: a resumed session skips the client certificate check, so a
        // revoked certificate would get back in with a ticket from before its revocation.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(AdminTls {
            store,
            ca: Arc::new(ca),
            enrolled,
            config: Arc::new(config),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Changes whenever the enrolled set does (a connection then checks [`Self::admits`]).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether `cert` (a client's certificate, DER) is enrolled and not revoked now.
    pub fn admits(&self, cert: &[u8]) -> bool {
        let fp: [u8; 32] = sha2::Sha256::digest(cert).into();
        matches!(
            self.enrolled.read().expect("enrolled lock").get(&fp),
            Some((_, false))
        )
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Issues a client certificate for `name` (replacing an earlier one), valid `days`.
    /// Blocking (store write).
    pub fn enroll(&self, name: &str, days: u64) -> Result<Issued, AdminTlsError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !ok {
            return Err(AdminTlsError::BadName(name.to_string()));
        }
        let issued = self
            .ca
            .issue_client(name, crate::clock::unix_secs(), days * 86400)?;
        let fp: [u8; 32] = sha2::Sha256::digest(&issued.cert_der).into();
        self.store.put_admin_client(&ClientRecord {
            name: name.to_string(),
            sha256: hex::encode(fp),
            issued_unix_ms: crate::clock::unix_ms(),
            revoked: false,
        })?;
        let mut set = self.enrolled.write().expect("enrolled lock");
        set.retain(|_, (n, _)| n != name);
        set.insert(fp, (name.to_string(), false));
        drop(set);
        self.changes.send_modify(|g| *g += 1);
        Ok(issued)
    }

    /// Revokes `name`'s certificate. Blocking (store write).
    pub fn revoke(&self, name: &str) -> Result<(), AdminTlsError> {
        let mut record = self
            .store
            .admin_clients()?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| AdminTlsError::NotEnrolled(name.to_string()))?;
        record.revoked = true;
        self.store.put_admin_client(&record)?;
        let mut set = self.enrolled.write().expect("enrolled lock");
        for (n, revoked) in set.values_mut() {
            if n == name {
                *revoked = true;
            }
        }
        drop(set);
        self.changes.send_modify(|g| *g += 1);
        Ok(())
    }
}

fn parse_fp(hex_text: &str) -> Option<[u8; 32]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// WebPKI verification against the admin CA, then: the certificate must be enrolled and
/// not revoked.
#[derive(Debug)]
struct EnrolledOnly {
    inner: Arc<dyn ClientCertVerifier>,
    enrolled: Enrolled,
}

impl ClientCertVerifier for EnrolledOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let fp: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        match self.enrolled.read().expect("enrolled lock").get(&fp) {
            Some((_, false)) => Ok(ClientCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
