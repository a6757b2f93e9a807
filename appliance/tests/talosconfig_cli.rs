//! `appliance ctl talosconfig set|list|delete` against the real binary: a talosconfig as
//! talosctl writes it (Ed25519, Talos's PEM label) is accepted and named by cluster, never
//! shown back (not by `list`, not in the log, not in clear in `state.redb`, which stays
//! 0600); a broken file, a missing file and a bad cluster name are refused with the reason
//! and change nothing; the stored one survives a restart; delete forgets it.

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ED25519};

mod support;

use support::Appliance;

fn talosconfig() -> (String, String) {
    let ca_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let crt = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap()
        .pem();
    let key_pem = key
        .serialize_pem()
        .replace("PRIVATE KEY", "ED25519 PRIVATE KEY");
    let b64 = STANDARD.encode(&key_pem);
    let file = format!(
        "context: prod\ncontexts:\n  prod:\n    endpoints: [192.0.2.1]\n    ca: {}\n    crt: {}\n    key: {}\n",
        STANDARD.encode(ca_pem),
        STANDARD.encode(crt),
        b64
    );
    (file, b64)
}

#[test]
fn ctl_talosconfig_set_list_delete() {
    let mut app = Appliance::start();
    let dir = tempfile::tempdir().unwrap();
    let (file, key_b64) = talosconfig();
    let path = dir.path().join("talosconfig");
    std::fs::write(&path, &file).unwrap();
    let p = path.to_str().unwrap();

    let out = app.ctl_ok(&["talosconfig", "set", p, "--cluster", "prod"]);
    assert!(out.contains("cluster prod stored (context prod)"), "{out}");
    // From stdin, without --cluster: the `default` one.
    let out = app.ctl_stdin(&["talosconfig", "set", "-"], Some(&file));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(app.ctl_ok(&["talosconfig", "list"]).trim(), "default\nprod");

    // Refusals name the problem and change nothing.
    let broken = dir.path().join("broken");
    std::fs::write(&broken, file.replace("  prod:", "  other:")).unwrap();
    let out = app.ctl(&[
        "talosconfig",
        "set",
        broken.to_str().unwrap(),
        "--cluster",
        "x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no context \"prod\""), "{err}");
    let out = app.ctl(&["talosconfig", "set", "/nonexistent/talosconfig"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = app.ctl(&["talosconfig", "set", p, "--cluster", "Bad Name!"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("label value"));
    assert_eq!(app.ctl_ok(&["talosconfig", "list"]).trim(), "default\nprod");

    // Never shown back, never logged, sealed at rest in a 0600 store.
    let log = app.log();
    assert!(
        !log.contains(&key_b64[..40]) && !log.contains("PRIVATE KEY"),
        "{log}"
    );
    let state = app.data_dir.join("state.redb");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    app.stop();
    let raw = std::fs::read(&state).unwrap();
    for needle in [
        key_b64.as_bytes(),
        b"ED25519 PRIVATE KEY".as_slice(),
        b"endpoints",
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "found {:?} in clear in state.redb",
            String::from_utf8_lossy(needle)
        );
    }

    // Kept across a restart; delete forgets it.
    let data = app.data_dir.clone();
    let app = Appliance::start_in(&data);
    assert_eq!(app.ctl_ok(&["talosconfig", "list"]).trim(), "default\nprod");
    app.ctl_ok(&["talosconfig", "delete", "--cluster", "prod"]);
    assert_eq!(app.ctl_ok(&["talosconfig", "list"]).trim(), "default");
    let out = app.ctl(&["talosconfig", "delete", "--cluster", "prod"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no talosconfig"));
}
