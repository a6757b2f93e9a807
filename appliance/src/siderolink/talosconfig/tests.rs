//! Talosconfig parsing: Talos's shape (base64 PEM, Ed25519 keys under Talos's own PEM
//! label), the chosen context, and the refusals.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ED25519};

use super::*;

/// (ca pem, client crt pem, client key pem as Talos writes it).
fn talos_like() -> (String, String, String) {
    let ca_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let crt = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let key_pem = key
        .serialize_pem()
        .replace("PRIVATE KEY", "ED25519 PRIVATE KEY");
    (ca_cert.pem(), crt.pem(), key_pem)
}

fn file(context: &str, entries: &[(&str, &str, &str, &str)]) -> String {
    let mut s = format!("context: {context}\ncontexts:\n");
    for (name, ca, crt, key) in entries {
        s += &format!(
            "  {name}:\n    endpoints: [192.0.2.10]\n    ca: {}\n    crt: {}\n    key: {}\n",
            STANDARD.encode(ca),
            STANDARD.encode(crt),
            STANDARD.encode(key)
        );
    }
    s
}

#[test]
fn reads_talos_shape_with_ed25519_key_label() {
    let (ca, crt, key) = talos_like();
    assert!(key.contains("BEGIN ED25519 PRIVATE KEY"));
    let t = Talosconfig::parse(file("prod", &[("prod", &ca, &crt, &key)]).as_bytes()).unwrap();
    assert_eq!(t.context, "prod");
    let config = t.client_config().unwrap();
    assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
    assert!(config.client_auth_cert_resolver.has_certs());
    // Debug never shows key material.
    assert!(!format!("{t:?}").contains("PRIVATE"));
}

#[test]
fn picks_the_named_or_only_context() {
    let (ca, crt, key) = talos_like();
    let two = file("b", &[("a", "x", "y", "z"), ("b", &ca, &crt, &key)]);
    assert_eq!(Talosconfig::parse(two.as_bytes()).unwrap().context, "b");
    let only = file("", &[("solo", &ca, &crt, &key)]).replace("context: \n", "");
    assert_eq!(Talosconfig::parse(only.as_bytes()).unwrap().context, "solo");
}

#[test]
fn refusals_name_the_problem() {
    let (ca, crt, key) = talos_like();
    let err = |s: &str| Talosconfig::parse(s.as_bytes()).unwrap_err().to_string();
    assert!(err("contexts: [").contains("not valid YAML"));
    assert!(err(&file("other", &[("prod", &ca, &crt, &key)])).contains("no context \"other\""));
    let two =
        file("", &[("a", &ca, &crt, &key), ("b", &ca, &crt, &key)]).replace("context: \n", "");
    assert!(err(&two).contains("holds 2"));
    let no_key = file("p", &[("p", &ca, &crt, &key)]).replace("    key:", "    nokey:");
    assert!(err(&no_key).contains("has no key"));
    let bad = "contexts:\n  p:\n    ca: \"%%% not base64\"\n    crt: x\n    key: y\n";
    assert!(err(bad).contains("ca is not base64"), "{}", err(bad));
    assert!(err(&file("p", &[("p", "not pem", &crt, &key)])).contains("ca holds no certificate"));
    assert!(err(&file("p", &[("p", &ca, &crt, "nothing")])).contains("key holds no private key"));
    // A key that is not the certificate's.
    let (_, _, other_key) = talos_like();
    assert!(err(&file("p", &[("p", &ca, &crt, &other_key)])).contains("TLS client identity"));
    assert!(err(&"x".repeat(MAX_TALOSCONFIG + 1)).contains("larger than"));
}
