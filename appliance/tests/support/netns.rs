//! Network-namespace helpers for root-only tests: namespaces and veth pairs this test
//! creates (deleted on drop), the IPv6 segment of the DHCPv6 tests ([`Segment6`]), child
//! processes run inside a namespace with their output in a log file (`appliance serve` among
//! them, [`serve`]), `curl` from a namespace and a polling [`wait`]. Included with `#[path]`;
//! check `prereq` first (root, `ip`).
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

/// Polls `f` for up to `secs`; panics with `what` when it never holds.
pub fn wait(secs: u64, what: &str, f: impl Fn() -> bool) {
    let deadline = appliance::clock::now() + Duration::from_secs(secs);
    while !f() {
        assert!(appliance::clock::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two namespaces `{prefix}{tag}s` (the box) and `{prefix}{tag}c` (the client) joined by a
/// veth pair `{prefix}{tag}s0` / `{prefix}{tag}c0`, the box's side holding `box_addr/64`
/// without DAD (and `v4`, if given), both link-local addresses past DAD so that the box and
/// a DHCPv6 client can send from them. Deleted on drop.
pub struct Segment6 {
    pub ns_s: String,
    pub ns_c: String,
    pub dev_s: String,
    pub dev_c: String,
    _ns: Namespaces,
}

impl Segment6 {
    pub fn new(prefix: &str, box_addr: &str, v4: Option<&str>) -> Segment6 {
        let t = tag();
        let (ns_s, ns_c) = (format!("{prefix}{t}s"), format!("{prefix}{t}c"));
        let ns = Namespaces::new(&[ns_s.clone(), ns_c.clone()]);
        let (dev_s, dev_c) = (format!("{prefix}{t}s0"), format!("{prefix}{t}c0"));
        veth(&ns_s, &dev_s, v4, &ns_c, &dev_c, None);
        let cidr = format!("{box_addr}/64");
        run(&[
            "ip", "-n", &ns_s, "addr", "add", &cidr, "dev", &dev_s, "nodad",
        ]);
        for (ns, dev) in [(&ns_s, &dev_s), (&ns_c, &dev_c)] {
            wait(10, "link-local address still tentative", || {
                let a = run(&[
                    "ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link",
                ]);
                a.contains("fe80") && !a.contains("tentative")
            });
        }
        Segment6 {
            ns_s,
            ns_c,
            dev_s,
            dev_c,
            _ns: ns,
        }
    }

    /// The client interface's MAC address.
    pub fn client_mac(&self) -> String {
        let path = format!("/sys/class/net/{}/address", self.dev_c);
        run(&["ip", "netns", "exec", &self.ns_c, "cat", &path])
            .trim()
            .to_string()
    }
}

/// `curl` in `ns`: (status, body length, body); status 0 when nothing answered.
pub fn curl(ns: &str, url: &str) -> (u16, usize, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-g", "-s", "-m", "10"])
        .args(["-w", "\n%{http_code} %{size_download}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = tail.split_whitespace();
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let size = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, size, body.to_string())
}

/// Kills a daemonized process by its pid file on drop (also when an assertion failed).
pub struct KillPid(PathBuf);

impl Drop for KillPid {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

/// ISC `dhclient -6` once in `ns` on `dev` until bound (files `dir/{name}.*`; `conf` its
/// config, else dhclient's own; `duid` the lease file's `default-duid`, else dhclient
/// makes one): the bound address is added to `dev` (/64, no DAD). Returns the variables
/// its script saw at BOUND6 (`new_ip6_address`, `new_dhcp6_*`) and the guard that kills
/// the daemonized client.
pub fn dhclient6(
    ns: &str,
    dev: &str,
    dir: &Path,
    name: &str,
    conf: Option<&str>,
    duid: Option<&[u8]>,
) -> (std::collections::HashMap<String, String>, KillPid) {
    let lease = dir.join(format!("{name}.leases"));
    if let Some(duid) = duid {
        let octal: String = duid.iter().map(|b| format!("\\{b:03o}")).collect();
        std::fs::write(&lease, format!("default-duid \"{octal}\";\n")).unwrap();
    }
    let script = dir.join(format!("{name}.sh"));
    let out = dir.join(format!("{name}.out"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$reason\" in\n\
             BOUND6|REBOOT6) ip -6 addr add \"$new_ip6_address/64\" dev \"$interface\" nodad\n\
               env | grep -E '^(reason|new_)' > {out}.tmp && mv {out}.tmp {out} ;;\n\
             esac\nexit 0\n",
            out = out.display()
        ),
    )
    .unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]);
    let pid = dir.join(format!("{name}.pid"));
    let guard = KillPid(pid.clone());
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "dhclient", "-6", "-1", "-v"]);
    if let Some(conf) = conf {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        cmd.arg("-cf").arg(path);
    }
    let res = cmd
        .args(["-sf", script.to_str().unwrap()])
        .args(["-pf", pid.to_str().unwrap()])
        .args(["-lf", lease.to_str().unwrap()])
        .arg(dev)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_else(|_| {
        panic!(
            "dhclient -6 got no lease ({}):\n{}{}",
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        )
    });
    // The daemonized client writes its pid file just after the foreground one returned:
    // wait for it, so that the guard kills the client (else it outlives the test).
    wait(5, "dhclient -6 wrote no pid file", || {
        std::fs::read_to_string(&pid).is_ok_and(|p| !p.trim().is_empty())
    });
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    (vars, guard)
}

/// A stand-in agent Environment under `dir/agent/agent-amd64` (kernel and initramfs of
/// the given sizes) for `[boot] agent_dir`; returns that `agent_dir`.
pub fn agent_env(dir: &Path, kernel_len: usize, initrd_len: usize) -> PathBuf {
    let agent_dir = dir.join("agent");
    let env = agent_dir.join("agent-amd64");
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(env.join("vmlinuz"), vec![7u8; kernel_len]).unwrap();
    std::fs::write(env.join("initramfs.xz"), vec![9u8; initrd_len]).unwrap();
    agent_dir
}

/// `bin serve` in `ns` with `config` written to `dir/config.toml`, its output in
/// `dir/appliance.log`; returns once the log says `ready`.
pub fn serve(bin: &str, ns: &str, dir: &Path, config: &str, ready: &str) -> Proc {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut p = Proc::spawn(
        ns,
        &[bin, "serve", "--config", cfg.to_str().unwrap()],
        &dir.join("appliance.log"),
    );
    p.wait_for_log(ready);
    p
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
