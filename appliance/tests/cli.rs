//! CLI tests: the real binary, `appliance serve` driven by `appliance ctl`.

#[path = "support/prereq.rs"]
mod prereq;
mod support;

use support::{Appliance, BIN, http_get};

const SIDERO_YAML: &str = r#"
apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: 4c4c4544-0039-3010-8048-b7c04f384432
  labels:
    rack: a1
spec:
  accepted: false
---
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: workers
spec: {}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata:
  name: talos
spec: {}
"#;

#[test]
fn version_and_help_and_default_config() {
    let out = std::process::Command::new(BIN)
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("appliance "));
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for word in ["serve", "ctl", "config", "version"] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
    let def = std::process::Command::new(BIN)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&def.stdout).contains("[http]"));
}

#[test]
fn config_show_applies_file_flags_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "show", "--config"])
        .arg(&file)
        .args(["--dhcp-mode", "proxy"])
        .env("APPLIANCE_DATA_DIR", "/srv/appliance")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:9999"), "{text}");
    assert!(text.contains("mode = \"proxy\""), "{text}");
    assert!(text.contains("/srv/appliance"), "{text}");
}

#[test]
fn bad_config_file_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[http]\nlisen = \"127.0.0.1:9999\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen") && err.contains("c.toml"), "{err}");
}

#[test]
fn apply_get_accept_cordon_delete_round_trip() {
    let a = Appliance::start();
    let out = a.ctl_stdin(&["apply", "-f", "-"], Some(SIDERO_YAML));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("server/4c4c4544-0039-3010-8048-b7c04f384432 created"),
        "{text}"
    );
    assert!(text.contains("serverclass/workers created"), "{text}");

    // Re-applying the same documents changes nothing.
    let again = a.ctl_stdin(&["apply", "-f", "-"], Some(SIDERO_YAML));
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));

    let list = a.ctl_ok(&["server", "list"]);
    assert!(
        list.contains("4c4c4544-0039-3010-8048-b7c04f384432"),
        "{list}"
    );
    assert!(list.lines().nth(1).unwrap().contains("false"), "{list}");

    a.ctl_ok(&["server", "accept", "4c4c4544-0039-3010-8048-b7c04f384432"]);
    a.ctl_ok(&["server", "cordon", "4c4c4544-0039-3010-8048-b7c04f384432"]);
    let yaml = a.ctl_ok(&[
        "get",
        "server",
        "4c4c4544-0039-3010-8048-b7c04f384432",
        "-o",
        "yaml",
    ]);
    assert!(yaml.contains("accepted: true"), "{yaml}");
    assert!(yaml.contains("cordoned: true"), "{yaml}");
    assert!(yaml.contains("rack: a1"), "{yaml}");
    a.ctl_ok(&["server", "uncordon", "4c4c4544-0039-3010-8048-b7c04f384432"]);
    let yaml = a.ctl_ok(&["server", "get", "4c4c4544-0039-3010-8048-b7c04f384432"]);
    assert!(!yaml.contains("cordoned: true"), "{yaml}");

    // What `get -o yaml` prints applies back unchanged.
    let all = a.ctl_ok(&["get", "serverclass", "-o", "yaml"]);
    let back = a.ctl_stdin(&["apply", "-f", "-"], Some(&all));
    assert!(String::from_utf8_lossy(&back.stdout).contains("serverclass/workers unchanged"));

    a.ctl_ok(&["server", "delete", "4c4c4544-0039-3010-8048-b7c04f384432"]);
    let missing = a.ctl(&["server", "get", "4c4c4544-0039-3010-8048-b7c04f384432"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    let status = a.ctl_ok(&["status"]);
    assert!(status.contains("ServerClass:"), "{status}");
}

#[test]
fn bad_documents_are_rejected_whole_with_a_clear_error() {
    let a = Appliance::start();
    let cases: &[(&str, &str)] = &[
        (
            "kind: Server\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: a}\nspec: {acepted: true}\n",
            "acepted",
        ),
        (
            "kind: Server\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: a}\nspec: {accepted: maybe}\n",
            "spec.accepted",
        ),
        (
            "kind: Server\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: a}\n---\nkind: Server\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: a}\n",
            "both define",
        ),
        (
            "kind: Gadget\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: a}\n",
            "unknown kind",
        ),
        (
            "kind: Server\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: Not_Valid}\n",
            "metadata.name",
        ),
        ("kind: Server\n  bad: [indent\n", "not valid YAML"),
    ];
    for (doc, expect) in cases {
        // A valid object first: it must not land when a later document is bad.
        let input = format!(
            "kind: ServerClass\napiVersion: metal.sidero.dev/v1alpha2\nmetadata: {{name: must-not-land}}\n---\n{doc}"
        );
        let out = a.ctl_stdin(&["apply", "-f", "-"], Some(&input));
        assert_eq!(out.status.code(), Some(1), "{doc}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "expected `{expect}` in: {err}");
        assert!(
            err.contains("document 2") || err.contains("documents 2"),
            "error names the document: {err}"
        );
    }
    let classes = a.ctl_ok(&["get", "serverclass"]);
    assert!(!classes.contains("must-not-land"), "{classes}");
    // The service is still up.
    assert_eq!(http_get(a.addr, "/healthz").unwrap().0, 200);
}

#[test]
fn admin_api_needs_the_token() {
    let a = Appliance::start();
    for token in ["", "0000", "wrong-token-but-long-enough"] {
        let out = std::process::Command::new(BIN)
            .args([
                "ctl",
                "--endpoint",
                &a.endpoint(),
                "--token",
                token,
                "status",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Bearer"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(BIN)
        .args([
            "ctl",
            "--endpoint",
            &a.endpoint(),
            "--token",
            &a.token(),
            "status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let metrics = http_get(a.addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("appliance_admin_auth_failures_total 3"),
        "{metrics}"
    );
}

#[test]
fn token_file_is_private_and_stable_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut a = Appliance::start_in(&dir);
    let first = a.token();
    let mode = std::fs::metadata(dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    a.stop();
    let b = Appliance::start_in(&dir);
    assert_eq!(b.token(), first);
}

#[test]
fn health_ready_metrics() {
    let a = Appliance::start();
    assert_eq!(http_get(a.addr, "/healthz").unwrap(), (200, "ok\n".into()));
    assert_eq!(http_get(a.addr, "/readyz").unwrap().0, 200);
    let (code, body) = http_get(a.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("appliance_store_objects{kind=\"Server\"} 0"),
        "{body}"
    );
}

#[test]
fn corrupt_store_refuses_to_start() {
    // A file that is not a redb store: the box must refuse it with its path, not overwrite it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.redb"), b"definitely not a redb file").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open store") && err.contains("state.redb"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("state.redb")).unwrap(),
        b"definitely not a redb file"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Waits for /healthz on `addr`, or panics with the child's stderr.
fn wait_health(child: &mut std::process::Child, addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("exited with {status}: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("not healthy");
}

/// The README's run command must work for a user who is not root: privileged services are
/// skipped with ONE warning, the data dir falls back to the user's state dir, the rest serves.
#[test]
fn non_root_user_gets_one_warning_and_serves_on_defaults() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let mut cmd = if is_root() {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            prereq::skip(
                "non_root_user_gets_one_warning_and_serves_on_defaults",
                "running as root and setpriv is missing: cannot drop to a user",
            );
            return;
        }
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    let mut child = cmd
        .args(["serve", "--http-listen", &addr.to_string()])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_health(&mut child, addr);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "expected one warning, got: {err}");
    assert!(warnings[0].contains("not running as root"), "{err}");
    assert!(
        home.path()
            .join(".local/state/appliance/admin.token")
            .exists(),
        "data dir fell back to the user's state dir: {err}"
    );
}

#[test]
fn json_logs_and_journald_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    for (format, expect_json) in [("json", true), ("journald", false)] {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let dir = tmp.path().join(format);
        let cfg = tmp.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[dhcp]\nmode = \"off\"\n[tftp]\nenabled = false\n\
             [siderolink]\nlisten = \"127.0.0.1:0\"\n[admin_tls]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let mut child = std::process::Command::new(BIN)
            .args([
                "serve",
                "--log",
                format,
                "--http-listen",
                &addr.to_string(),
                "--config",
            ])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir)
            // No journald socket here: a clear fallback to stderr is expected.
            .env_remove("JOURNAL_STREAM")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_health(&mut child, addr);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let log_lines: Vec<_> = err
            .lines()
            .filter(|l| !l.starts_with("admin token"))
            .collect();
        assert!(!log_lines.is_empty(), "{err}");
        if expect_json {
            for l in &log_lines {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON log line");
                assert!(v.get("level").is_some(), "{l}");
            }
        } else if !std::path::Path::new("/run/systemd/journal/socket").exists() {
            assert!(err.contains("journald is not reachable"), "{err}");
        }
    }
}

/// `appliance ctl <args>` against `a` with stdout on a pipe whose reader reads `lines` lines
/// and then closes its end (`lines == 0`: closed before ctl writes anything), like
/// `ctl … | head -N`. Returns the exit status and stderr.
fn ctl_into_closing_reader(
    a: &Appliance,
    args: &[&str],
    lines: usize,
) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new(BIN)
        .args(["ctl", "--endpoint", &a.endpoint(), "--token", &a.token()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    for _ in 0..lines {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "ctl printed less");
    }
    drop(reader);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn ctl_whose_reader_goes_away_exits_quietly() {
    let a = Appliance::start();
    // `ctl status | <reader gone before the first line>`: every write fails with EPIPE.
    let (status, stderr) = ctl_into_closing_reader(&a, &["status"], 0);
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr, "");

    // `ctl get server -o yaml | head -1` on more output than a pipe holds (64 KiB): ctl is
    // still writing, blocked on the full pipe, when the reader closes.
    let yaml: String = (0..1000)
        .map(|i| {
            format!(
                "---\napiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  \
                 name: 00000000-0000-4000-8000-{i:012}\n  labels:\n    rack: a{i}\n\
                 spec:\n  accepted: false\n  hostname: node-{i}.example.test\n"
            )
        })
        .collect();
    let applied = a.ctl_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let full = a.ctl_ok(&["get", "server", "-o", "yaml"]);
    assert!(full.len() > 2 * 65536, "{} bytes", full.len());
    let (status, stderr) = ctl_into_closing_reader(&a, &["get", "server", "-o", "yaml"], 1);
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn refused_connection_prints_each_cause_once() {
    let port = support::free_port(); // bound, then closed: nothing listens there
    let out = std::process::Command::new(BIN)
        .args([
            "ctl",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            "0123456789abcdef",
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the appliance at http://127.0.0.1:{port}: "
        )),
        "{stderr}"
    );
    for cause in ["transport error", "tcp connect error", "Connection refused"] {
        assert_eq!(stderr.matches(cause).count(), 1, "{cause}: {stderr}");
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
