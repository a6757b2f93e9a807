//! A private network namespace `labqt-<pid>-<n>` holding one bridge (`br0`, 10.77.0.1/24)
//! and any number of tap devices enslaved to it (one per VM), plus optional peer namespaces
//! joined to the bridge by a veth (other hosts on the segment). Everything the lab starts runs
//! inside it (`ip netns exec`), so tests never touch the host's network and can use the fixed
//! ports 67/69/8081 concurrently with other tests.
//!
//! Drop kills every process left in the namespace (`ip netns pids`) and deletes it.
//! [`Netns::create`] first reaps namespaces of this naming scheme whose owning test process is
//! gone (a test killed with SIGKILL cannot clean up after itself).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::process::run;

/// Name prefix of every namespace this crate creates.
pub const PREFIX: &str = "labqt-";
/// The bridge inside every lab namespace.
pub const BRIDGE: &str = "br0";
/// The bridge's address: where the appliance (and the peers) listen.
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const PREFIX_LEN: u8 = 24;

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct Netns {
    name: String,
    taps: AtomicU32,
    peers: AtomicU32,
}

/// Where a program runs: a namespace, the interface it serves and that interface's address.
#[derive(Debug, Clone)]
pub struct Place {
    pub ns: String,
    pub iface: String,
    pub addr: Ipv4Addr,
}

impl Place {
    /// A command that runs `program` in this place's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }
}

/// A namespace joined to a lab's bridge by a veth (see [`Netns::add_peer`]); deleted (with
/// everything in it) on drop.
#[derive(Debug)]
pub struct PeerNs {
    name: String,
    addr: Ipv4Addr,
}

impl PeerNs {
    pub fn place(&self) -> Place {
        Place {
            ns: self.name.clone(),
            iface: "eth0".to_string(),
            addr: self.addr,
        }
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

impl Netns {
    /// Creates the namespace with `lo` and the bridge up and addressed.
    pub fn create() -> Result<Netns> {
        reap_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns {
            name,
            taps: AtomicU32::new(0),
            peers: AtomicU32::new(0),
        };
        let addr = format!("{BRIDGE_ADDR}/{PREFIX_LEN}");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", BRIDGE, "type", "bridge"],
            // No STP/forwarding delay: a tap joins and forwards at once.
            &[
                "link",
                "set",
                BRIDGE,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
            &["addr", "add", &addr, "dev", BRIDGE],
            &["link", "set", BRIDGE, "up"],
        ] {
            ns.ip(args)?;
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args…>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Where programs on the bridge itself run: this namespace, `br0`, 10.77.0.1.
    pub fn place(&self) -> Place {
        Place {
            ns: self.name.clone(),
            iface: BRIDGE.to_string(),
            addr: BRIDGE_ADDR,
        }
    }

    /// A second namespace plugged into the bridge by a veth pair, its end (`eth0`) addressed
    /// `addr`/24: another host on the segment (e.g. the site's own DHCP server beside the
    /// appliance, which must not share the appliance's udp/67).
    pub fn add_peer(&self, addr: Ipv4Addr) -> Result<PeerNs> {
        let n = self.peers.fetch_add(1, Ordering::SeqCst);
        let peer = PeerNs {
            name: format!("{}p{n}", self.name),
            addr,
        };
        run(Command::new("ip").args(["netns", "add", &peer.name]))?;
        let veth = format!("veth{n}");
        self.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ])?;
        self.ip(&["link", "set", &veth, "master", BRIDGE])?;
        self.ip(&["link", "set", &veth, "up"])?;
        let cidr = format!("{addr}/{PREFIX_LEN}");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", &cidr, "dev", "eth0"],
            &["link", "set", "eth0", "up"],
        ] {
            run(Command::new("ip").arg("-n").arg(&peer.name).args(args))?;
        }
        Ok(peer)
    }

    /// Adds a tap on the bridge and returns its name (`tap0`, `tap1`, …).
    pub fn add_tap(&self) -> Result<String> {
        let tap = format!("tap{}", self.taps.fetch_add(1, Ordering::SeqCst));
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", BRIDGE])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Kills every process in namespace `name` and deletes it.
fn destroy(name: &str) {
    if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", name])) {
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            let _ = run(Command::new("kill").arg("-9").args(&pids));
        }
    }
    if let Err(e) = run(Command::new("ip").args(["netns", "delete", name])) {
        eprintln!("lab: cannot delete netns {name}: {e:#}");
    }
}

/// Deletes `labqt-<pid>-<n>[p<m>]` namespaces whose `<pid>` no longer runs.
fn reap_stale() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("lab: reaping stale netns {name} (pid {pid} is gone)");
            destroy(name);
        }
    }
}

/// The namespaces of this naming scheme that exist now (for leak checks in tests).
pub fn list_own() -> Result<Vec<String>> {
    let me = format!("{PREFIX}{}-", std::process::id());
    let list = run(Command::new("ip").args(["netns", "list"])).context("ip netns list")?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&me))
        .map(str::to_string)
        .collect())
}
