//! The box's admin CA (rcgen, ECDSA P-256): it issues the certificate of the mTLS admin
//! listener and the client certificates of `ctl bridge enroll`. The CA key is kept in the
//! store sealed with the secrets key (`store/admin_tls.rs`); the CA's parameters are fixed, so
//! the issuer is rebuilt from the key alone after a restart.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// The DNS name every admin listener certificate carries: clients that reach the box by an
/// address not in its certificate verify against this name.
pub const SERVER_NAME: &str = "appliance-admin";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("no randomness for a certificate serial")]
    Random(#[source] getrandom::Error),
}

/// A CA key and its certificate (PEM).
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A certificate and its private key (PEM).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// DER of the certificate (what the TLS peer presents).
    pub cert_der: Vec<u8>,
}

fn ca_params() -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "appliance admin CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    Ok(params)
}

impl Authority {
    /// A new CA: its key as PKCS#8 PEM (to be sealed) and the authority.
    pub fn create() -> Result<(String, Authority), CaError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let cert_pem = ca_params()?.self_signed(&key)?.pem();
        let authority = Authority::from_parts(&key_pem, cert_pem)?;
        Ok((key_pem, authority))
    }

    /// The CA from its stored key and certificate.
    pub fn from_parts(key_pem: &str, cert_pem: String) -> Result<Authority, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Authority {
            issuer: Issuer::new(ca_params()?, key),
            cert_pem,
        })
    }

    /// The listener's certificate: [`SERVER_NAME`], `localhost`, loopback and `names`
    /// (host names or IP addresses), valid for `valid_secs` from `now_unix`.
    pub fn issue_server(
        &self,
        names: &[String],
        now_unix: u64,
        valid_secs: u64,
    ) -> Result<Issued, CaError> {
        let mut params = leaf(now_unix, valid_secs)?;
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        let mut sans = vec![SERVER_NAME.to_string(), "localhost".into()];
        sans.extend(names.iter().cloned());
        params.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            SanType::IpAddress("::1".parse().expect("ip")),
        ];
        for n in sans {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.try_into()?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for `name` (its CN), valid for `valid_secs` from `now_unix`.
    pub fn issue_client(
        &self,
        name: &str,
        now_unix: u64,
        valid_secs: u64,
    ) -> Result<Issued, CaError> {
        let mut params = leaf(now_unix, valid_secs)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

fn leaf(now_unix: u64, valid_secs: u64) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // An hour of slack for clocks a little behind the box's.
    params.not_before = epoch + Duration::from_secs(now_unix.saturating_sub(3600));
    params.not_after = epoch + Duration::from_secs(now_unix.saturating_add(valid_secs));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(CaError::Random)?;
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}
