//! Shared by the console tests: start a real `appliance serve` on a free loopback port
//! with a temp data dir, talk plain HTTP/1.1 to it (from any loopback source address), and
//! run `appliance ctl` against it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)] // not every console test runs the binary by path
pub use support::BIN;

/// A running `appliance serve` (the shared fixture, DHCP/TFTP and asset downloads off);
/// killed on drop.
pub struct Appliance {
    inner: support::Appliance,
}

impl std::ops::Deref for Appliance {
    type Target = support::Appliance;
    fn deref(&self) -> &support::Appliance {
        &self.inner
    }
}

impl Appliance {
    pub fn start() -> Appliance {
        Appliance::start_with("")
    }

    /// Starts with `extra` TOML appended to the test config. No outbound asset downloads:
    /// the fixtures name public URLs (tests stay on loopback).
    pub fn start_with(extra: &str) -> Appliance {
        Appliance {
            inner: support::Appliance::start_config(&format!(
                "[boot]\ndownload_assets = false\n{extra}"
            )),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn base_url(&self) -> String {
        self.inner.endpoint()
    }

    /// `appliance ctl …` against this box; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.inner.ctl_stdin(args, stdin);
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
        self.try_request_from(None, method, path, headers, body)
    }

    /// As `request`, from the loopback source address `src` (any of 127.0.0.0/8), so a
    /// test can act as several clients (or as a proxy in front of the box).
    pub fn request_from(
        &self,
        src: IpAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        self.try_request_from(Some(src), method, path, headers, body)
            .unwrap()
    }

    pub fn try_request_from(
        &self,
        src: Option<IpAddr>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<Response> {
        let mut s = match src {
            None => TcpStream::connect(self.addr)?,
            Some(ip) => {
                let sock = socket2::Socket::new(
                    socket2::Domain::for_address(self.addr),
                    socket2::Type::STREAM,
                    None,
                )?;
                sock.bind(&SocketAddr::new(ip, 0).into())?;
                sock.connect(&self.addr.into())?;
                sock.into()
            }
        };
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
