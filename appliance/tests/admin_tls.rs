//! The mTLS admin port against the real `appliance serve`: `ctl bridge enroll` writes a
//! client certificate that opens the admin API (status, get, watch) on `[admin_tls] listen`,
//! and `ctl --cert-dir` uses it without a token; no certificate, a certificate of another CA
//! and a revoked one are refused at TLS (a revoked one's open connection closed); the
//! enrolment service is not on the TLS port; the CA survives a restart and its key is not in
//! the store file in clear; the token path on :8081 keeps working.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use appliance_rpc::admin::admin_certs_client::AdminCertsClient;
use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{EnrollRequest, GetRequest, StatusRequest, WatchRequest};
use support::Appliance;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn tls_config(port: u16) -> String {
    format!("[admin_tls]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// A channel to the mTLS port with `identity` (PEM cert, key), trusting `ca`.
async fn connect(
    port: u16,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("appliance-admin");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// Whether a status call over the mTLS port with `identity` succeeds.
async fn status_ok(port: u16, ca: &str, identity: Option<(&str, &str)>) -> bool {
    match connect(port, ca, identity).await {
        Ok(channel) => AdminClient::new(channel)
            .status(StatusRequest {})
            .await
            .is_ok(),
        Err(_) => false,
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_clients_get_in_others_are_refused_at_tls() {
    appliance::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = support::free_port();
    let mut box_ = Appliance::start_custom(&data, &tls_config(port), "info", &[]);
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let out = box_.ctl_ok(&[
        "bridge",
        "enroll",
        "rack-1",
        "--out",
        creds.to_str().unwrap(),
    ]);
    assert!(out.contains("server name appliance-admin"), "{out}");
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        let mode = std::fs::metadata(creds.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let (ca, cert, key) = (
        read(&creds, "ca.crt"),
        read(&creds, "tls.crt"),
        read(&creds, "tls.key"),
    );
    // The enrolled certificate opens the admin API, watch included.
    let channel = connect(port, &ca, Some((&cert, &key))).await.unwrap();
    let mut admin = AdminClient::new(channel.clone());
    admin.status(StatusRequest {}).await.unwrap();
    let listed = admin
        .get(GetRequest {
            kind: "serverclass".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.objects.iter().any(|o| o.name == "any"));
    let mut stream = admin
        .watch(WatchRequest {
            kinds: vec![],
            name: String::new(),
            since_revision: Some(listed.revision),
            bookmark_interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.revision, listed.revision, "caught-up bookmark");
    // `ctl --cert-dir` uses the TLS port with these files and no token at all.
    let no_token = tmp.path().join("no-token");
    std::fs::create_dir(&no_token).unwrap();
    let ctl_tls = |endpoint: &str, args: &[&str]| {
        let out = std::process::Command::new(support::BIN)
            .arg("ctl")
            .args(["--endpoint", endpoint, "--cert-dir"])
            .arg(&creds)
            .arg("--data-dir")
            .arg(&no_token)
            .args(args)
            .env_remove("APPLIANCE_TOKEN")
            .env_remove("APPLIANCE_ENDPOINT")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let https = format!("https://127.0.0.1:{port}");
    let (ok, out, err) = ctl_tls(&https, &["status"]);
    assert!(ok && out.contains("revision:"), "{out}{err}");
    let (ok, out, err) = ctl_tls(&https, &["get", "serverclass"]);
    assert!(ok && out.contains("any"), "{out}{err}");
    let (ok, _, err) = ctl_tls(&format!("http://127.0.0.1:{port}"), &["status"]);
    assert!(
        !ok && err.contains("--cert-dir needs an https:// --endpoint"),
        "{err}"
    );
    // Enrolment is not served on the TLS port.
    let err = AdminCertsClient::new(channel)
        .enroll(EnrollRequest {
            name: "sneaky".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // No certificate: refused.
    assert!(!status_ok(port, &ca, None).await, "no client certificate");
    // A certificate from another CA (same name): refused.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    other_ca
        .distinguished_name
        .push(rcgen::DnType::CommonName, "appliance admin CA");
    let other_issuer = rcgen::Issuer::new(other_ca, other_key);
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "rack-1");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let forged = leaf.signed_by(&leaf_key, &other_issuer).unwrap();
    assert!(
        !status_ok(port, &ca, Some((&forged.pem(), &leaf_key.serialize_pem()))).await,
        "a certificate of another CA"
    );
    // The token path on :8081 still works.
    assert!(box_.ctl_ok(&["status"]).contains("revision:"));

    // After a restart the CA and the enrolment hold.
    box_.stop();
    let bytes = std::fs::read(data.join("state.redb")).unwrap();
    assert!(
        !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
        "the CA key is sealed in the store"
    );
    let box_ = Appliance::start_custom(&data, &tls_config(port), "info", &[]);
    assert!(
        status_ok(port, &ca, Some((&cert, &key))).await,
        "after restart"
    );
    // Revoked: refused, and a connection it already holds is closed (the same channel's
    // next calls fail: its reconnection cannot resume the old TLS session); enrolled again: a new certificate works, the old one does not.
    let mut held = AdminClient::new(connect(port, &ca, Some((&cert, &key))).await.unwrap());
    held.status(StatusRequest {}).await.unwrap();
    box_.ctl_ok(&["bridge", "revoke", "rack-1"]);
    assert!(!status_ok(port, &ca, Some((&cert, &key))).await, "revoked");
    let (ok, _, _) = ctl_tls(&https, &["status"]);
    assert!(!ok, "ctl with a revoked certificate");
    let deadline = appliance::clock::now() + std::time::Duration::from_secs(5);
    while held.status(StatusRequest {}).await.is_ok() {
        assert!(
            appliance::clock::now() < deadline,
            "a held connection of a revoked certificate still serves: {}",
            box_.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let secret = box_.ctl_ok(&["bridge", "enroll", "rack-1"]);
    assert!(
        secret.contains("kind: Secret") && secret.contains("  tls.key: "),
        "{secret}"
    );
    let field = |k: &str| {
        use base64::Engine;
        let line = secret
            .lines()
            .find_map(|l| l.strip_prefix(&format!("  {k}: ")))
            .unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(line)
                .unwrap(),
        )
        .unwrap()
    };
    let (cert2, key2) = (field("tls.crt"), field("tls.key"));
    assert_eq!(field("ca.crt"), ca);
    assert!(
        status_ok(port, &ca, Some((&cert2, &key2))).await,
        "re-enrolled"
    );
    assert!(
        !status_ok(port, &ca, Some((&cert, &key))).await,
        "old certificate"
    );
}
