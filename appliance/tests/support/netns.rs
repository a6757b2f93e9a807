//! Network-namespace helpers for root-only tests: namespaces and veth pairs this test
//! creates (deleted on drop), and child processes run inside a namespace with their output
//! in a log file. Included with `#[path]`; check `prereq` first (root, `ip`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Runs `cmd`; panics with its stderr unless it succeeds. Returns its stdout.
pub fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A short unique tag for namespace and interface names (interface names max 15 chars).
pub fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 10000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Network namespaces deleted on drop (which also deletes the veths inside).
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn new(names: &[String]) -> Namespaces {
        for n in names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        Namespaces(names.to_vec())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Creates a veth pair `a` (in `ns_a`) <-> `b` (in `ns_b`), both up, with optional addresses.
pub fn veth(ns_a: &str, a: &str, addr_a: Option<&str>, ns_b: &str, b: &str, addr_b: Option<&str>) {
    run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
    run(&["ip", "link", "set", a, "netns", ns_a]);
    run(&["ip", "link", "set", b, "netns", ns_b]);
    for (ns, dev, addr) in [(ns_a, a, addr_a), (ns_b, b, addr_b)] {
        if let Some(addr) = addr {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        }
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
}

/// A child process run in a namespace, killed on drop; its stderr+stdout go to `log`.
pub struct Proc {
    pub child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(ns: &str, cmd: &[&str], log: &Path) -> Proc {
        Proc::spawn_env(ns, cmd, &[], log)
    }

    /// As `spawn`, with extra environment variables.
    pub fn spawn_env(ns: &str, cmd: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 20 s) until the log contains `needle`; panics if the process exits
    /// first.
    pub fn wait_for_log(&mut self, needle: &str) {
        let deadline = appliance::clock::now() + Duration::from_secs(20);
        while appliance::clock::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited with {status} before `{needle}`:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no `{needle}` within 20 s:\n{}", self.log());
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the exit status and how
    /// long it took, or None (and kills it) when it did not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = appliance::clock::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// SIGTERM, then wait up to 10 s (a clean stop, as systemd does it).
    pub fn stop(mut self) {
        let _ = self.terminate(Duration::from_secs(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
