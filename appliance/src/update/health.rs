//! The trial boot's health gate (`appliance update health`, run by
//! `appliance-healthy.service` before `boot-complete.target`): waits until `appliance
//! serve` answers `/readyz` with 200, or fails when the deadline passes (the unit's
//! `FailureAction=reboot` then reboots into the previous slot).
//!
//! Only a boot systemd-boot is counting is a trial: on any other boot (a blessed slot) the
//! gate passes at once, so an unhealthy service on a good slot never reboot-loops the box.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// systemd-boot's `LoaderBootCountPath` EFI variable: present only on a counted boot.
pub const BOOT_COUNT_VAR: &str = "LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Whether this boot is one systemd-boot counts (an update on trial).
pub fn is_trial_boot(efivars: &Path) -> bool {
    efivars.join(BOOT_COUNT_VAR).exists()
}

/// One `GET /readyz`; true on 200.
pub fn ready_once(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

/// Polls `/readyz` every `every` until 200 or `deadline` has passed; returns the time it
/// took, or `None` on timeout.
pub fn wait_ready(addr: SocketAddr, deadline: Duration, every: Duration) -> Option<Duration> {
    let start = crate::clock::now();
    loop {
        if ready_once(addr, every.max(Duration::from_secs(1))) {
            return Some(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot HTTP server answering every connection with `status`.
    fn server(status: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        addr
    }

    #[test]
    fn ready_only_on_200() {
        assert!(ready_once(server("200 OK"), Duration::from_secs(2)));
        assert!(!ready_once(
            server("503 Service Unavailable"),
            Duration::from_secs(2)
        ));
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!ready_once(closed, Duration::from_secs(1)));
        assert!(
            wait_ready(
                server("200 OK"),
                Duration::from_secs(5),
                Duration::from_millis(50)
            )
            .is_some()
        );
        assert!(
            wait_ready(
                server("503 Service Unavailable"),
                Duration::from_millis(300),
                Duration::from_millis(50)
            )
            .is_none()
        );
    }

    #[test]
    fn trial_boot_is_the_boot_count_variable() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_trial_boot(d.path()));
        std::fs::write(d.path().join(BOOT_COUNT_VAR), b"\x06\0\0\0").unwrap();
        assert!(is_trial_boot(d.path()));
    }
}
