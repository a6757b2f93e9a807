//! The `kube-bridge` binary: `--help` works; `crds` and `components` print exactly the
//! checked-in manifests; `run` takes the same settings as flags (on the box) or as the
//! environment the provider's Deployment sets (every variable the Deployment sets is one
//! `run` reads), and refuses a bad configuration with exit 2 naming the problem. `run` does
//! not sync yet: with a valid configuration it says so and exits 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kube-bridge");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in
        std::env::vars().filter(|(k, _)| k.starts_with("KUBE_BRIDGE_") || k == "KUBECONFIG")
    {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_lists_the_commands_and_every_run_setting_with_its_env_variable() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["run", "crds", "components"] {
        assert!(help.contains(&format!("  {cmd} ")), "{help}");
    }
    let out = run(&["run", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for (flag, env) in [
        ("--box", "KUBE_BRIDGE_BOX"),
        ("--box-id", "KUBE_BRIDGE_BOX_ID"),
        ("--credentials", "KUBE_BRIDGE_CREDENTIALS"),
        ("--token-file", "KUBE_BRIDGE_TOKEN_FILE"),
        ("--poll-ms", "KUBE_BRIDGE_POLL_MS"),
        ("--kubeconfig", "KUBECONFIG"),
        ("--lease-namespace", "KUBE_BRIDGE_LEASE_NAMESPACE"),
        ("--log", "KUBE_BRIDGE_LOG"),
    ] {
        assert!(help.contains(&format!("{flag} ")), "{flag}: {help}");
        assert!(help.contains(&format!("[env: {env}=")), "{env}: {help}");
    }
    // The Deployment runs `run` and sets only variables `run` reads.
    let deployment = kube_bridge::manifests::MANAGER
        .split("\n---\n")
        .find(|d| d.contains("kind: Deployment"))
        .unwrap();
    let doc: serde_json::Value = yaml_serde::from_str(deployment).unwrap();
    let container = &doc["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["run"]));
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            help.contains(&format!("[env: {name}=")),
            "the Deployment sets {name}, which run does not read"
        );
    }
}

#[test]
fn crds_and_components_print_the_checked_in_manifests() {
    let out = run(&["crds"], &[]);
    assert!(out.status.success());
    let expected: Vec<String> = kube_bridge::crd::all()
        .iter()
        .map(|c| {
            std::fs::read_to_string(
                crate_dir()
                    .join("config/crd")
                    .join(kube_bridge::crd::file_name(c)),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(text(&out.stdout), expected.join("---\n"));
    let out = run(&["components"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        std::fs::read_to_string(crate_dir().join("config/infrastructure-components.yaml")).unwrap()
    );
}

fn credentials(dir: &Path, files: &[&str]) -> String {
    for f in files {
        std::fs::write(dir.join(f), "test").unwrap();
    }
    dir.display().to_string()
}

#[test]
fn run_checks_its_configuration_from_flags_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), &["ca.crt", "tls.crt", "tls.key"]);
    // Missing settings: clap's usage error (exit 2) names them.
    let out = run(&["run"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--box"), "{}", text(&out.stderr));
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[
                ("KUBE_BRIDGE_BOX", "ftp://10.5.0.1"),
                ("KUBE_BRIDGE_BOX_ID", "rack-12"),
            ],
            "https://",
        ),
        (
            &[
                ("KUBE_BRIDGE_BOX", "http://10.5.0.1:8081"),
                ("KUBE_BRIDGE_BOX_ID", "rack-12"),
                ("KUBE_BRIDGE_TOKEN_FILE", "/nonexistent/token"),
            ],
            "no such file",
        ),
        (
            &[
                ("KUBE_BRIDGE_BOX", "http://10.5.0.1:8081"),
                ("KUBE_BRIDGE_BOX_ID", "rack-12"),
                ("KUBE_BRIDGE_CREDENTIALS", &creds),
            ],
            "needs --token-file",
        ),
        (
            &[
                ("KUBE_BRIDGE_BOX", "https://10.5.0.1:8443"),
                ("KUBE_BRIDGE_BOX_ID", "rack 12"),
                ("KUBE_BRIDGE_CREDENTIALS", &creds),
            ],
            "--box-id",
        ),
        (
            &[
                ("KUBE_BRIDGE_BOX", "https://10.5.0.1:8443"),
                ("KUBE_BRIDGE_BOX_ID", "rack-12"),
                ("KUBE_BRIDGE_CREDENTIALS", "/nonexistent"),
            ],
            "ca.crt is missing",
        ),
    ];
    for (env, why) in cases {
        let out = run(&["run"], env);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{why}: {}",
            text(&out.stderr)
        );
    }
    let partial = tempfile::tempdir().unwrap();
    let partial = credentials(partial.path(), &["ca.crt", "tls.crt"]);
    let out = run(
        &[
            "run",
            "--box",
            "https://10.5.0.1:8443",
            "--box-id",
            "rack-12",
            "--credentials",
            &partial,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("tls.key is missing"),
        "{}",
        text(&out.stderr)
    );
    // Valid flags, in the cluster (environment) and on the box (flags + kubeconfig); files
    // that are not PEM are named before anything connects.
    let env = [
        ("KUBE_BRIDGE_BOX", "https://10.5.0.1:8443"),
        ("KUBE_BRIDGE_BOX_ID", "rack-12"),
        ("KUBE_BRIDGE_CREDENTIALS", creds.as_str()),
    ];
    let out = run(&["run"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ca.crt holds no PEM certificate"),
        "{}",
        text(&out.stderr)
    );
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let kc = kubeconfig.display().to_string();
    let out = run(
        &[
            "run",
            "--box",
            "https://10.5.0.1:8443",
            "--box-id",
            "rack-12",
            "--credentials",
            &creds,
            "--kubeconfig",
            &kc,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = run(
        &[
            "run",
            "--box",
            "https://10.5.0.1:8443",
            "--box-id",
            "rack-12",
            "--credentials",
            &creds,
            "--kubeconfig",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() {
    for cmd in ["crds", "components"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // closed before the first write: every write gets EPIPE
        let out = Command::new(BIN)
            .arg(cmd)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{cmd}");
    }
}
