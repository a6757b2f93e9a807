//! Shared by the console tests: start a real `appliance serve` on a free loopback port
//! with a temp data dir, talk plain HTTP/1.1 to it, and run `appliance ctl` against it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_appliance");

/// A running `appliance serve`; killed on drop.
pub struct Appliance {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Appliance {
    pub fn start() -> Appliance {
        Appliance::start_with("")
    }

    /// Starts with `extra` TOML appended to the test config (DHCP off, TFTP off).
    pub fn start_with(extra: &str) -> Appliance {
        // A port picked by the kernel and released again; retried if someone takes it.
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            // Only the HTTP listener: DHCP/TFTP would need fixed ports (and root), which
            // parallel tests cannot share.
            let cfg = dir.path().join("config.toml");
            // No outbound asset downloads: the fixtures name public URLs (tests stay on
            // loopback).
            std::fs::write(
                &cfg,
                format!(
                    "[dhcp]\nmode = \"off\"\n[tftp]\nenabled = false\n[boot]\ndownload_assets = false\n{extra}"
                ),
            )
            .unwrap();
            let child = Command::new(BIN)
                .arg("serve")
                .arg("--config")
                .arg(&cfg)
                .arg("--data-dir")
                .arg(dir.path())
                .arg("--http-listen")
                .arg(addr.to_string())
                .env("APPLIANCE_LOG_LEVEL", "warn")
                .env_remove("APPLIANCE_CONFIG")
                .env_remove("APPLIANCE_DHCP_MODE")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
                .spawn()
                .unwrap();
            let mut app = Appliance { child, addr, dir };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = app.child.try_wait() {
                    break;
                }
                if let Ok(r) = app.try_request("GET", "/healthz", &[], None)
                    && r.status == 200
                {
                    return app;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log =
                std::fs::read_to_string(app.dir.path().join("serve.log")).unwrap_or_default();
            drop(app);
        }
        panic!("appliance serve did not come up:\n{last_log}");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `appliance ctl …` against this box; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(BIN)
            .arg("ctl")
            .arg("--endpoint")
            .arg(self.base_url())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(Response::parse(&raw))
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        self.try_request(method, path, headers, body).unwrap()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Path of the workspace `target/` dir (from this test binary's location).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    exe.ancestors().nth(3).unwrap().to_path_buf()
}
