//! Test fixture: a real `appliance serve` child process on a free loopback port with a
//! temporary data dir, and helpers to run `appliance ctl` against it. The box's log goes to
//! a temp file (never a pipe nobody drains, which would stall a chatty box), and a start
//! that lost its port to another test is retried on a new one. `console_support` wraps this.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_appliance");

/// A running appliance; killed on drop.
pub struct Appliance {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: tempfile::NamedTempFile,
    _tmp: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Appliance {
    /// Starts on a fresh temp data dir.
    pub fn start() -> Appliance {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut a = Appliance::start_in(&data_dir);
        a._tmp = Some(tmp);
        a
    }

    /// Starts on a fresh temp data dir with `config` appended to the test config.
    pub fn start_config(config: &str) -> Appliance {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut a = Appliance::start_custom(&data_dir, config, "warn", &[]);
        a._tmp = Some(tmp);
        a
    }

    /// Starts on a given data dir (kept by the caller across restarts).
    pub fn start_in(data_dir: &Path) -> Appliance {
        Appliance::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Appliance {
        Appliance::start_custom(data_dir, "", "warn", extra)
    }

    /// Starts with `config` appended to the test config and the given log level.
    pub fn start_custom(
        data_dir: &Path,
        config: &str,
        log_level: &str,
        extra: &[&str],
    ) -> Appliance {
        // Tests run in parallel (and as root in CI): no service on the privileged ports. A
        // test that wants TFTP gives its own `[tftp]` table (on a free port).
        std::fs::create_dir_all(data_dir).unwrap();
        let path = data_dir.join("test-config.toml");
        let tftp = if config.contains("[tftp]") {
            ""
        } else {
            "[tftp]\nenabled = false\n"
        };
        // SideroLink's WireGuard port likewise: loopback, a kernel-picked port.
        let siderolink = if config.contains("[siderolink]") {
            ""
        } else {
            "[siderolink]\nlisten = \"127.0.0.1:0\"\n"
        };
        // The mTLS admin port likewise.
        // The tests written before authenticated first contact (issue 16) play agents
        // without boot tokens: Sidero-compatible mode, where the agent API's other rules
        // stay on; `tests/agent_first_contact.rs` and qemu-tests run the default, tokens.
        let agent = if config.contains("[agent]") {
            ""
        } else {
            "[agent]\nfirst_contact = \"sidero-compatible\"\n"
        };
        let admin_tls = if config.contains("[admin_tls]") {
            ""
        } else {
            "[admin_tls]\nlisten = \"127.0.0.1:0\"\n"
        };
        std::fs::write(
            &path,
            format!("[dhcp]\nmode = \"off\"\n{tftp}{siderolink}{admin_tls}{agent}{config}"),
        )
        .unwrap();
        // The port is picked by the kernel and released again, so another test may take it
        // first: then the box exits at once and is started again on a new port.
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = Command::new(BIN)
                .args(["serve", "--log-level", log_level])
                .arg("--config")
                .arg(&path)
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--http-listen")
                .arg(addr.to_string())
                .args(extra)
                .env_remove("APPLIANCE_CONFIG")
                .env_remove("APPLIANCE_DHCP_MODE")
                .env_remove("APPLIANCE_LOG_LEVEL")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.reopen().unwrap())
                .spawn()
                .expect("appliance binary starts");
            let mut a = Appliance {
                child,
                addr,
                data_dir: data_dir.to_path_buf(),
                log,
                _tmp: None,
            };
            match a.wait_healthy() {
                Ok(()) => return a,
                Err(log) if log.to_ascii_lowercase().contains("address already in use") => {
                    last_log = log;
                }
                Err(log) => panic!("appliance exited early: {log}"),
            }
        }
        panic!("appliance could not get a free port in 5 tries: {last_log}");
    }

    /// Waits for `/healthz`; the log if the box exited first.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = appliance::clock::now() + Duration::from_secs(20);
        while appliance::clock::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("{status}: {}", self.log()));
            }
            if http_get(self.addr, "/healthz").is_some_and(|(code, _)| code == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "appliance did not become healthy on {}: {}",
            self.addr,
            self.log()
        );
    }

    /// Everything the box has written to stderr (its log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `appliance ctl <args>` against this box with the token from its data dir.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("ctl")
            .arg("--endpoint")
            .arg(self.endpoint())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// `ctl` that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        // SIGTERM for a graceful stop.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Stops gracefully and returns everything the box wrote to stderr (its log).
    pub fn stop_and_log(&mut self) -> String {
        self.stop();
        self.log()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal HTTP/1.1 GET over std: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((code, body))
}

/// A data dir at `root/name` holding ServerClass `kept`, the box that wrote it stopped.
pub fn data_dir_with_class(root: &Path, name: &str) -> PathBuf {
    let data = root.join(name);
    let mut app = Appliance::start_in(&data);
    let yaml = root.join(format!("{name}.yaml"));
    std::fs::write(
        &yaml,
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: kept\nspec: {}\n",
    )
    .unwrap();
    app.ctl_ok(&["apply", "-f", yaml.to_str().unwrap()]);
    app.stop();
    data
}

/// Runs `serve` on `data_dir` expecting it to refuse to start (within 20 s): its stderr.
pub fn serve_refused(data_dir: &Path) -> String {
    let config = data_dir.join("test-config.toml");
    let mut child = Command::new(BIN)
        .args(["serve", "--log-level", "warn", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("APPLIANCE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = appliance::clock::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if appliance::clock::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running on {}", data_dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "serve started on {}",
        data_dir.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
