//! The bridge's TLS client of the box's mTLS admin port (`[admin_tls] listen`, :8443).
//!
//! Trust is the box's own admin CA and nothing else: `ca.crt` from `appliance ctl bridge
//! enroll` is the only root, the box's certificate must name [`DEFAULT_SERVER_NAME`] (or
//! `--box-server-name`), and the bridge shows `tls.crt`/`tls.key` as its client certificate.
//! The three files are read again for every new connection, from the directory as written by
//! `enroll --out` or as the kubelet mounts a Secret (the `..data` link swapped atomically), so
//! a re-enrolled certificate is picked up without a restart. The channel's URI is the box's
//! address with `http`: TLS is done here, in the connector, not by tonic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tonic::transport::Uri;

/// The name every box's admin TLS certificate carries (`appliance ctl bridge enroll` prints it).
pub const DEFAULT_SERVER_NAME: &str = "appliance-admin";

/// The files of a credentials directory (and the keys of the Secret).
pub const FILES: [&str; 3] = ["ca.crt", "tls.crt", "tls.key"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--credentials {dir}: reading {file}: {source}")]
    Read {
        dir: PathBuf,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("--credentials {dir}: {file} holds no PEM certificate")]
    NoCertificate { dir: PathBuf, file: &'static str },
    #[error("--credentials {dir}: tls.key holds no PEM private key")]
    NoKey { dir: PathBuf },
    #[error("--credentials {dir}: {source}")]
    Config { dir: PathBuf, source: rustls::Error },
    #[error("--box-server-name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

/// A credentials directory and the server name the box's certificate must carry.
#[derive(Debug)]
pub struct Credentials {
    dir: PathBuf,
    server_name: ServerName<'static>,
}

impl Credentials {
    /// Checks `server_name` and that the directory's files make a client configuration now.
    pub fn new(dir: &Path, server_name: &str) -> Result<Credentials, TlsError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        let c = Credentials {
            dir: dir.to_path_buf(),
            server_name,
        };
        c.client_config()?;
        Ok(c)
    }

    /// The rustls client configuration from the files as they are now.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        // A mounted Secret: read all three through one resolution of `..data`, so a swap
        // between two reads cannot pair an old certificate with a new key.
        let base = std::fs::canonicalize(self.dir.join("..data"))
            .ok()
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| self.dir.clone());
        let read = |file: &'static str| {
            std::fs::read(base.join(file)).map_err(|source| TlsError::Read {
                dir: self.dir.clone(),
                file,
                source,
            })
        };
        let (ca, cert, key) = (read("ca.crt")?, read("tls.crt")?, read("tls.key")?);
        let certs = |pem: &[u8], file: &'static str| {
            let v: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .filter_map(Result::ok)
                .collect();
            if v.is_empty() {
                Err(TlsError::NoCertificate {
                    dir: self.dir.clone(),
                    file,
                })
            } else {
                Ok(v)
            }
        };
        let config_err = |source| TlsError::Config {
            dir: self.dir.clone(),
            source,
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&ca, "ca.crt")? {
            roots.add(c).map_err(config_err)?;
        }
        let chain = certs(&cert, "tls.crt")?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| TlsError::NoKey {
            dir: self.dir.clone(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_err)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Opens a TCP connection to `uri`'s authority and does the TLS handshake over it.
    async fn connect(
        self: Arc<Self>,
        uri: Uri,
    ) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        let other = |e: String| std::io::Error::other(e);
        let config = self.client_config().map_err(|e| other(e.to_string()))?;
        let authority = uri
            .authority()
            .ok_or_else(|| other(format!("box URL {uri} has no host")))?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(8443)
        );
        let tcp = TcpStream::connect(&addr).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(config)
            .connect(self.server_name.clone(), tcp)
            .await
            .map(TokioIo::new)
            .map_err(|e| {
                let server_name = self.server_name.to_str();
                other(format!(
                    "TLS handshake with the box at {addr}: {e} (the box's certificate must be \
                     issued by ca.crt in {} and name {server_name})",
                    self.dir.display()
                ))
            })
    }
}

/// The URI the channel is built with for an mTLS box URL (`https://host[:port]`, default port
/// 8443): the same address with `http`, as TLS is done by [`connect_lazy`]'s connector.
pub fn channel_uri(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    Some(format!("http://{rest}"))
}

/// A channel over `endpoint` (made from [`channel_uri`]) whose connections are TLS with
/// `credentials`, connecting lazily: the box may be down now and come back later.
pub fn connect_lazy(
    endpoint: &tonic::transport::Endpoint,
    credentials: Arc<Credentials>,
) -> tonic::transport::Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
        credentials.clone().connect(uri)
    }))
}

/// Whether a failure's text says the box refused this bridge's client certificate at TLS
/// (revoked, not enrolled, another CA, none sent).
pub fn client_refused(text: &str) -> bool {
    [
        "CertificateRevoked",
        "BadCertificate",
        "UnknownCA",
        "CertificateRequired",
        "CertificateUnknown",
    ]
    .iter()
    .any(|alert| text.contains(&format!("alert: {alert}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_alerts_are_recognised() {
        assert!(client_refused(
            "transport error: connection error: received fatal alert: CertificateRevoked"
        ));
        assert!(client_refused("received fatal alert: UnknownCA"));
        assert!(!client_refused("connection refused"));
        assert!(!client_refused("received fatal alert: HandshakeFailure"));
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Credentials::new(tmp.path(), DEFAULT_SERVER_NAME).unwrap_err();
        assert!(e.to_string().contains("reading ca.crt"), "{e}");
        for f in FILES {
            std::fs::write(tmp.path().join(f), "not pem").unwrap();
        }
        let e = Credentials::new(tmp.path(), DEFAULT_SERVER_NAME).unwrap_err();
        assert!(
            e.to_string().contains("ca.crt holds no PEM certificate"),
            "{e}"
        );
        let e = Credentials::new(tmp.path(), "not a name!").unwrap_err();
        assert!(matches!(e, TlsError::ServerName(_)), "{e}");
    }
}
