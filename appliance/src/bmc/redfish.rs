//! Redfish over HTTPS (reqwest + rustls with ring; no OpenSSL): ComputerSystem power state,
//! `ComputerSystem.Reset` actions and the `Boot.BootSourceOverride*` PATCH.
//!
//! Auth: a session (`X-Auth-Token` from the SessionService) when the service root links
//! one, else HTTP basic auth. A 401 on a session request means the session expired: log in
//! again once and retry. TLS: certificates must chain to the system roots unless the
//! server's BMC settings say `insecure_tls`; either way the certificate's SHA-256 is
//! pinned on first contact (via the `on_pin` callback, which stores it) and a later
//! mismatch is a [`BmcError::CertificateChanged`].
//!
//! May touch: HTTPS to the BMC. The pin goes to the store through the caller's callback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    BmcError, BmcFuture, BootOverride, BootTarget, Credentials, Firmware, PowerAction, PowerState,
};

/// How a Redfish BMC is reached and trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishTarget {
    /// `https://host[:port]` (or `http://` for lab emulators).
    pub base_url: String,
    /// Accept a certificate that does not chain to a trusted root (self-signed BMCs).
    pub insecure_tls: bool,
    /// SHA-256 (hex) of the certificate seen on first contact.
    pub pinned_sha256: Option<String>,
    /// ComputerSystem id; the first member of the Systems collection when unset.
    pub system_id: Option<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// Called with the hex SHA-256 of a certificate the first time one is accepted.
pub type PinCallback = Arc<dyn Fn(String) + Send + Sync>;

/// The certificate decision: pin check, then insecure or WebPKI verification.
#[derive(Debug)]
struct PinningVerifier {
    insecure: bool,
    pinned: Mutex<Option<String>>,
    /// (pinned, seen) of the last mismatch, for the error message.
    mismatch: Mutex<Option<(String, String)>>,
    /// Fingerprint accepted without a pin, not yet reported.
    fresh: Mutex<Option<String>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = hex::encode(Sha256::digest(end_entity.as_ref()));
        if let Some(pinned) = self.pinned.lock().expect("pin lock").clone() {
            if pinned.eq_ignore_ascii_case(&seen) {
                return Ok(ServerCertVerified::assertion());
            }
            *self.mismatch.lock().expect("pin lock") = Some((pinned, seen));
            return Err(rustls::Error::General(
                "BMC certificate differs from the pinned one".into(),
            ));
        }
        if !self.insecure {
            match &self.webpki {
                Some(v) => {
                    v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
                }
                None => {
                    return Err(rustls::Error::General(
                        "no trusted root certificates on this system".into(),
                    ));
                }
            }
        }
        *self.fresh.lock().expect("pin lock") = Some(seen.clone());
        *self.pinned.lock().expect("pin lock") = Some(seen);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn system_roots(
    provider: &Arc<CryptoProvider>,
) -> Option<Arc<rustls::client::WebPkiServerVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return None;
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// Not decided yet (service root not read).
    Unknown,
    Basic,
    /// Session login URL, and the current token if logged in.
    Session {
        login_url: String,
        token: Option<String>,
    },
}

/// A Redfish BMC.
pub struct RedfishBmc {
    target: RedfishTarget,
    creds: Credentials,
    client: reqwest::Client,
    verifier: Arc<PinningVerifier>,
    on_pin: Option<PinCallback>,
    auth: tokio::sync::Mutex<Auth>,
    system_path: tokio::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("base_url", &self.target.base_url)
            .field("user", &self.creds.username)
            .field("insecure_tls", &self.target.insecure_tls)
            .finish()
    }
}

/// A Redfish reply worth looking at.
struct Reply {
    status: StatusCode,
    body: Value,
    token: Option<String>,
}

impl RedfishBmc {
    pub fn new(
        target: RedfishTarget,
        creds: Credentials,
        on_pin: Option<PinCallback>,
    ) -> Result<RedfishBmc, BmcError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinningVerifier {
            insecure: target.insecure_tls,
            pinned: Mutex::new(target.pinned_sha256.clone()),
            mismatch: Mutex::new(None),
            fresh: Mutex::new(None),
            webpki: if target.insecure_tls {
                None
            } else {
                system_roots(&provider)
            },
            provider: provider.clone(),
        });
        let config_err = |message: String| BmcError::Config {
            endpoint: target.base_url.clone(),
            message,
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(target.request_timeout)
            .connect_timeout(target.request_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| config_err(crate::error_chain(&e)))?;
        Ok(RedfishBmc {
            target,
            creds,
            client,
            verifier,
            on_pin,
            auth: tokio::sync::Mutex::new(Auth::Unknown),
            system_path: tokio::sync::Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.target.base_url.trim_end_matches('/'), path)
        }
    }

    fn map_err(&self, e: reqwest::Error) -> BmcError {
        let endpoint = self.target.base_url.clone();
        if let Some((pinned, seen)) = self.verifier.mismatch.lock().expect("pin lock").take() {
            return BmcError::CertificateChanged {
                endpoint,
                pinned,
                seen,
            };
        }
        let chain = crate::error_chain(&e);
        if e.is_timeout() {
            BmcError::Timeout {
                endpoint,
                after: self.target.request_timeout,
                last_drop: None,
            }
        } else if e.is_connect() && (chain.contains("certificate") || chain.contains("TLS")) {
            BmcError::Protocol {
                endpoint,
                message: format!(
                    "TLS: {chain} (a self-signed BMC certificate is accepted only with insecure TLS set for this server)"
                ),
            }
        } else if e.is_connect() {
            BmcError::Unreachable {
                endpoint,
                source: std::io::Error::other(chain),
            }
        } else {
            BmcError::Protocol {
                endpoint,
                message: chain,
            }
        }
    }

    fn report_pin(&self) {
        if let Some(fp) = self.verifier.fresh.lock().expect("pin lock").take()
            && let Some(cb) = &self.on_pin
        {
            cb(fp);
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: &Auth,
    ) -> Result<Reply, BmcError> {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("Accept", "application/json");
        match auth {
            Auth::Basic => {
                req = req.basic_auth(&self.creds.username, Some(&self.creds.password));
            }
            Auth::Session {
                token: Some(token), ..
            } => {
                req = req.header("X-Auth-Token", token);
            }
            _ => {}
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.map_err(e))?;
        self.report_pin();
        let status = resp.status();
        let token = resp
            .headers()
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| self.map_err(e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok(Reply {
            status,
            body,
            token,
        })
    }

    /// Decides basic vs session auth from the (unauthenticated) service root.
    async fn discover_auth(&self) -> Result<Auth, BmcError> {
        let root = self
            .send(Method::GET, "/redfish/v1/", None, &Auth::Unknown)
            .await?;
        if !root.status.is_success() {
            return Ok(Auth::Basic);
        }
        let sessions = root
            .body
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str);
        Ok(match sessions {
            Some(url) => Auth::Session {
                login_url: url.to_string(),
                token: None,
            },
            None => Auth::Basic,
        })
    }

    async fn login(&self, login_url: &str) -> Result<String, BmcError> {
        let body = json!({"UserName": self.creds.username, "Password": self.creds.password});
        let r = self
            .send(Method::POST, login_url, Some(&body), &Auth::Unknown)
            .await?;
        if r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN {
            return Err(self.auth_error(&r));
        }
        if !r.status.is_success() {
            return Err(self.refused("session login", &r));
        }
        r.token.ok_or_else(|| BmcError::Protocol {
            endpoint: self.target.base_url.clone(),
            message: "session login returned no X-Auth-Token".into(),
        })
    }

    fn auth_error(&self, r: &Reply) -> BmcError {
        BmcError::Auth {
            endpoint: self.target.base_url.clone(),
            message: format!(
                "HTTP {}: wrong user name or password{}",
                r.status.as_u16(),
                redfish_message(&r.body)
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
        }
    }

    fn refused(&self, what: &str, r: &Reply) -> BmcError {
        BmcError::Refused {
            endpoint: self.target.base_url.clone(),
            message: format!(
                "{what}: HTTP {}{}",
                r.status.as_u16(),
                redfish_message(&r.body)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// An authenticated request; re-logs in once when a session token was refused.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, BmcError> {
        let mut auth = self.auth.lock().await;
        if *auth == Auth::Unknown {
            *auth = self.discover_auth().await?;
        }
        for attempt in 0..2 {
            if let Auth::Session { login_url, token } = &mut *auth
                && token.is_none()
            {
                *token = Some(self.login(login_url).await?);
            }
            let r = self.send(method.clone(), path, body, &auth).await?;
            if r.status != StatusCode::UNAUTHORIZED {
                return Ok(r);
            }
            match &mut *auth {
                Auth::Session { token, .. } if attempt == 0 => {
                    tracing::info!(endpoint = %self.target.base_url, "Redfish session expired; logging in again");
                    *token = None;
                }
                _ => return Err(self.auth_error(&r)),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn system(&self) -> Result<String, BmcError> {
        let mut cached = self.system_path.lock().await;
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let path = match &self.target.system_id {
            Some(id) => format!("/redfish/v1/Systems/{id}"),
            None => {
                let r = self
                    .request(Method::GET, "/redfish/v1/Systems", None)
                    .await?;
                if !r.status.is_success() {
                    return Err(self.refused("list systems", &r));
                }
                r.body
                    .pointer("/Members/0/@odata.id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| BmcError::Protocol {
                        endpoint: self.target.base_url.clone(),
                        message: "Systems collection has no members".into(),
                    })?
            }
        };
        *cached = Some(path.clone());
        Ok(path)
    }

    async fn get_system(&self) -> Result<Value, BmcError> {
        let path = self.system().await?;
        let r = self.request(Method::GET, &path, None).await?;
        if !r.status.is_success() {
            return Err(self.refused("read system", &r));
        }
        Ok(r.body)
    }

    pub async fn system_power_state(&self) -> Result<PowerState, BmcError> {
        let sys = self.get_system().await?;
        Ok(match sys.get("PowerState").and_then(Value::as_str) {
            Some("On") | Some("PoweringOff") => PowerState::On,
            Some("Off") | Some("PoweringOn") => PowerState::Off,
            _ => PowerState::Unknown,
        })
    }

    pub async fn system_reset(&self, action: PowerAction) -> Result<(), BmcError> {
        let sys = self.get_system().await?;
        let reset = sys.pointer("/Actions/#ComputerSystem.Reset");
        let allowed: Vec<&str> = reset
            .and_then(|r| r.get("ResetType@Redfish.AllowableValues"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let allows = |t: &str| allowed.is_empty() || allowed.contains(&t);
        let is_on = sys.get("PowerState").and_then(Value::as_str) == Some("On");
        let reset_type = match action {
            PowerAction::On => "On",
            PowerAction::Off => "ForceOff",
            PowerAction::Reset => "ForceRestart",
            PowerAction::Soft => "GracefulShutdown",
            PowerAction::Cycle if !is_on => "On",
            PowerAction::Cycle if allowed.contains(&"PowerCycle") => "PowerCycle",
            PowerAction::Cycle => "ForceRestart",
        };
        if !allows(reset_type) {
            return Err(BmcError::Refused {
                endpoint: self.target.base_url.clone(),
                message: format!("reset type {reset_type} not offered (allowed: {allowed:?})"),
            });
        }
        let target = match reset.and_then(|r| r.get("target")).and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => format!("{}/Actions/ComputerSystem.Reset", self.system().await?),
        };
        let r = self
            .request(
                Method::POST,
                &target,
                Some(&json!({"ResetType": reset_type})),
            )
            .await?;
        if !r.status.is_success() {
            return Err(self.refused(&format!("reset {reset_type}"), &r));
        }
        Ok(())
    }

    pub async fn system_set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let path = self.system().await?;
        let body = json!({"Boot": {
            "BootSourceOverrideTarget": match boot.target {
                BootTarget::Pxe => "Pxe",
                BootTarget::Disk => "Hdd",
            },
            "BootSourceOverrideEnabled": if boot.persistent { "Continuous" } else { "Once" },
            "BootSourceOverrideMode": match boot.firmware {
                Firmware::Uefi => "UEFI",
                Firmware::Bios => "Legacy",
            },
        }});
        let r = self.request(Method::PATCH, &path, Some(&body)).await?;
        if !r.status.is_success() {
            return Err(self.refused("set boot override", &r));
        }
        Ok(())
    }
}

/// The human message of a Redfish error body, if any.
fn redfish_message(body: &Value) -> Option<String> {
    body.pointer("/error/@Message.ExtendedInfo/0/Message")
        .or_else(|| body.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl super::Bmc for RedfishBmc {
    fn endpoint(&self) -> &str {
        &self.target.base_url
    }

    fn power_state(&self) -> BmcFuture<'_, PowerState> {
        Box::pin(self.system_power_state())
    }

    fn power(&self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(self.system_reset(action))
    }

    fn set_boot(&self, boot: BootOverride) -> BmcFuture<'_, ()> {
        Box::pin(self.system_set_boot(boot))
    }
}

#[cfg(test)]
mod tests;
