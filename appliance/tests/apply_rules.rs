//! What `appliance ctl apply` (admin gRPC `Apply`) takes, with the real `appliance serve`:
//! Kubernetes' name and label rules, one size cap (1 MiB, as the console's editors), and
//! every Sidero fixture still applies.

mod support;

use support::Appliance;

fn apply(app: &Appliance, yaml: &str) -> Result<String, String> {
    let out = app.ctl_stdin(&["apply", "-f", "-"], Some(yaml));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

fn server(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: '{name}'\n  labels: {{{labels}}}\nspec:\n  accepted: false\n"
    )
}

#[test]
fn names_and_labels_follow_kubernetes_rules_and_nothing_is_written_otherwise() {
    let app = Appliance::start();
    for (yaml, why) in [
        (server("a..b", ""), "metadata.name"),
        (server("a.-b", ""), "metadata.name"),
        (server("ok", "rack: 'r 12'"), "metadata.labels.rack"),
        (
            server("ok", &format!("rack: {}", "r".repeat(64))),
            "metadata.labels.rack",
        ),
        (server("ok", "'-rack': r1"), "metadata.labels.-rack"),
        (
            server("ok", "'bad..prefix/rack': r1"),
            "metadata.labels.bad..prefix/rack",
        ),
    ] {
        let err = apply(&app, &yaml).expect_err(&yaml);
        assert!(err.contains(why), "{yaml}: {err}");
    }
    let listed = app.ctl_ok(&["get", "servers"]);
    assert!(
        !listed.contains("a..b") && !listed.contains("ok "),
        "{listed}"
    );
    // What Kubernetes takes, the box takes.
    apply(
        &app,
        &server(
            "a.b-c",
            "rack: r12, 'topology.kubernetes.io/zone': east-1, 'sidero.dev/empty': ''",
        ),
    )
    .unwrap();
}

#[test]
fn one_apply_takes_at_most_one_mib() {
    let app = Appliance::start();
    let doc = server("big", "");
    // 1.5 MiB of comment after one valid document: under gRPC's 4 MiB message limit.
    let over = format!("{doc}#{}\n", "x".repeat(3 << 19));
    let err = apply(&app, &over).unwrap_err();
    assert!(err.contains("1 MiB"), "{err}");
    let listed = app.ctl_ok(&["get", "servers"]);
    assert!(!listed.contains("big"), "{listed}");
    // Just under the cap is fine.
    let under = format!("{doc}#{}\n", "x".repeat((1 << 20) - doc.len() - 3));
    assert!(under.len() < 1 << 20);
    apply(&app, &under).unwrap();
}

#[test]
fn sidero_fixtures_still_apply() {
    let app = Appliance::start();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sidero");
    let mut applied = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // A v1alpha1-shaped sample, kept to prove it is refused (model tests).
        if name == "serverclass-stale-sample.yaml" {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).unwrap();
        apply(&app, &yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        applied += 1;
    }
    assert_eq!(applied, 7);
}
