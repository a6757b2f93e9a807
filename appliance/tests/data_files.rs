//! The data dir as another local user or a thief of one file would see it, with the real
//! `appliance serve`: the dir is 0700 and the store, admin token and secrets key 0600 on a
//! fresh install; an older, more open install is tightened at start with one log line; and
//! the store file alone holds no BMC password in clear (nor can it be opened without the
//! key file).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::Appliance;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `appliance serve` on `data` (which the box creates itself) with DHCP and TFTP off, its
/// log in `log`; the child, with the HTTP address.
fn spawn_raw(tmp: &Path, data: &Path, log: &Path) -> (std::process::Child, std::net::SocketAddr) {
    let config = tmp.join("raw.toml");
    std::fs::write(
        &config,
        "[dhcp]\nmode = \"off\"\n[tftp]\nenabled = false\n\
             [siderolink]\nlisten = \"127.0.0.1:0\"\n[admin_tls]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let child = std::process::Command::new(support::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .arg("--http-listen")
        .arg(addr.to_string())
        .env_remove("APPLIANCE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (child, addr)
}

/// Waits up to 20 s for `child` to exit (killing it after that): its status, if it exited.
fn exit_status(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let deadline = appliance::clock::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if appliance::clock::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn fresh_install_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    // A data dir the box creates itself (the test fixture would create it first).
    let data = tmp.path().join("var/lib/appliance");
    let log = tmp.path().join("log");
    let (mut child, addr) = spawn_raw(tmp.path(), &data, &log);
    let deadline = appliance::clock::now() + std::time::Duration::from_secs(20);
    while support::http_get(addr, "/healthz").is_none_or(|(code, _)| code != 200) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(appliance::clock::now() < deadline, "not healthy");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode(&data), 0o700, "data dir");
    for name in ["state.redb", "admin.token", "secrets.key"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains("tightened"),
        "nothing to fix on a fresh install: {log}"
    );
}

#[test]
fn an_open_existing_install_is_tightened_at_start_with_one_log_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = {
        let mut app = Appliance::start_in(&data);
        let token = app.token();
        app.stop();
        token
    };
    // What an older version left behind: everything readable by every local user.
    chmod(&data, 0o755);
    chmod(&data.join("state.redb"), 0o644);
    chmod(&data.join("admin.token"), 0o644);
    let mut app = Appliance::start_in(&data);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("state.redb")), 0o600);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(
        app.token(),
        token,
        "the token is kept, only its mode changes"
    );
    let log = app.stop_and_log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("tightened")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    for what in ["755→700", "state.redb 644→600", "admin.token 644→600"] {
        assert!(lines[0].contains(what), "{what} missing in {}", lines[0]);
    }
}

#[test]
fn the_store_file_alone_holds_no_bmc_password() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut app = Appliance::start_in(&data);
    let yaml = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: node-1\nspec:\n  accepted: true\n---\napiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: node-2\nspec:\n  accepted: true\n  bmc:\n    endpoint: 10.0.0.9\n    user: admin\n    pass: Inline-Bmc-Pass-8\n";
    let out = app.ctl_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(out.status.success(), "{out:?}");
    let pwfile = tmp.path().join("pw");
    std::fs::write(&pwfile, "Stored-Bmc-Pass-7\n").unwrap();
    app.ctl_ok(&[
        "server",
        "bmc",
        "node-1",
        "--endpoint",
        "127.0.0.1",
        "--user",
        "admin",
        "--password-file",
        pwfile.to_str().unwrap(),
    ]);
    app.stop();
    let bytes = std::fs::read(data.join("state.redb")).unwrap();
    assert!(bytes.len() > 4096, "the store was written");
    assert!(
        !contains(&bytes, "Stored-Bmc-Pass-7"),
        "BMC secret in clear in state.redb"
    );
    assert!(
        !contains(&bytes, "Inline-Bmc-Pass-8"),
        "inline spec.bmc.pass in clear in state.redb"
    );
    // A copy of the store without its key does not start with a new key: it says so.
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(data.join("state.redb"), copy.join("state.redb")).unwrap();
    let log = tmp.path().join("copy.log");
    let (mut child, _) = spawn_raw(tmp.path(), &copy, &log);
    let status = exit_status(&mut child);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {err}");
    assert!(
        err.contains("secrets.key") && err.contains("missing"),
        "{err}"
    );
    assert!(!copy.join("secrets.key").exists());
    // With its key the box reads the credentials back.
    let app = Appliance::start_in(&data);
    let shown = app.ctl_ok(&["get", "server", "node-1", "-o", "yaml"]);
    assert!(shown.contains("node-1-bmc"), "{shown}");
}
