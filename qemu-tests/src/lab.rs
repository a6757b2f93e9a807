//! The `Lab` fixture: one network namespace with a bridge, a scratch directory for configs
//! and logs, the appliance and/or reference peers inside the namespace, and VMs on taps.
//!
//! Teardown is drop: VMs (owned by the test, dropped before the lab), then the appliance and
//! peers, then the namespace (which kills anything still running in it). When the test
//! panics the scratch directory is kept and its path printed, so the logs survive a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::appliance::{self, Appliance, ApplianceConfig};
use std::net::Ipv4Addr;

use crate::netns::{Netns, PeerNs};
use crate::peers::{Dnsmasq, DnsmasqRole, StaticHttp};
use crate::tail;
use crate::vm::{Vm, VmSpec};

#[derive(Debug)]
pub struct Lab {
    appliance: Option<Appliance>,
    dnsmasq: Option<Dnsmasq>,
    http: Option<StaticHttp>,
    peer: Option<PeerNs>,
    ns: Netns,
    dir: Option<tempfile::TempDir>,
    vms_started: u32,
    keep_dir: bool,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        let ns = Netns::create()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}.", ns.name()))
            .tempdir()
            .context("lab scratch dir")?;
        Ok(Lab {
            appliance: None,
            dnsmasq: None,
            http: None,
            peer: None,
            ns,
            dir: Some(dir),
            vms_started: 0,
            keep_dir: false,
        })
    }

    /// The set-up every agent test repeats: the amd64 agent Environment built from this
    /// tree ([`crate::env::agent_env`]), a new lab, and the appliance started with `config`
    /// booting unknown servers into that Environment.
    pub fn with_agent(config: ApplianceConfig) -> Result<Lab> {
        let env = crate::env::agent_env()?;
        let mut lab = Lab::new()?;
        lab.start_appliance(&config.agent_env(&env))?;
        Ok(lab)
    }

    /// The scratch directory (configs, logs, serial consoles, data dir).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir lives until drop").path()
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Starts `appliance serve` in the namespace and waits until it answers /healthz.
    pub fn start_appliance(&mut self, config: &ApplianceConfig) -> Result<&mut Appliance> {
        let appliance = Appliance::start(&self.ns, self.dir(), config)?;
        Ok(self.appliance.insert(appliance))
    }

    pub fn appliance(&mut self) -> &mut Appliance {
        self.appliance.as_mut().expect("start_appliance first")
    }

    /// The appliance, shared (its `ctl` and log while other borrows of the lab are held).
    pub fn appliance_ref(&self) -> &Appliance {
        self.appliance.as_ref().expect("start_appliance first")
    }

    /// dnsmasq on the bridge itself (10.77.0.1), in the lab namespace.
    pub fn start_dnsmasq(&mut self, role: &DnsmasqRole) -> Result<&Dnsmasq> {
        let d = Dnsmasq::start(&self.ns.place(), self.dir(), role)?;
        Ok(self.dnsmasq.insert(d))
    }

    /// dnsmasq on another host of the segment: a peer namespace at 10.77.0.2 (so it does
    /// not share udp/67 with the appliance, as on a real site).
    pub fn start_dnsmasq_peer(&mut self, role: &DnsmasqRole) -> Result<&Dnsmasq> {
        let peer = self.ns.add_peer(Ipv4Addr::new(10, 77, 0, 2))?;
        let place = peer.place();
        self.peer = Some(peer);
        let d = Dnsmasq::start(&place, self.dir(), role)?;
        Ok(self.dnsmasq.insert(d))
    }

    pub fn dnsmasq(&self) -> Option<&Dnsmasq> {
        self.dnsmasq.as_ref()
    }

    pub fn start_static_http(&mut self, root: &Path, port: u16) -> Result<&StaticHttp> {
        let h = StaticHttp::start(&self.ns.place(), self.dir(), root, port)?;
        Ok(self.http.insert(h))
    }

    pub fn static_http(&self) -> Option<&StaticHttp> {
        self.http.as_ref()
    }

    /// Boots a VM on a new tap. The test owns it; dropping it kills QEMU.
    pub fn start_vm(&mut self, spec: &VmSpec) -> Result<Vm> {
        let n = self.vms_started;
        self.vms_started += 1;
        let mac = spec.mac.clone().unwrap_or_else(|| {
            // Unique within the lab; the namespace isolates labs from each other.
            format!("52:54:00:77:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff)
        });
        Vm::start(&self.ns, self.dir(), &format!("vm{n}"), mac, spec)
    }

    /// GET a URL (or a path on the appliance) from inside the namespace.
    pub fn http_get(&self, url_or_path: &str) -> Result<(u16, String)> {
        let url = if url_or_path.starts_with("http") {
            url_or_path.to_string()
        } else {
            format!(
                "http://{}:{}{url_or_path}",
                crate::netns::BRIDGE_ADDR,
                appliance::HTTP_PORT
            )
        };
        appliance::http_get(&self.ns, &url)
    }

    /// The ends of every service log, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        if let Some(a) = &self.appliance {
            out.push_str(&format!(
                "--- appliance log ({}) ---\n{}\n",
                a.log_path().display(),
                tail(&a.log(), 6000)
            ));
        }
        if let Some(d) = &self.dnsmasq {
            out.push_str(&format!(
                "--- dnsmasq log ({}) ---\n{}\n",
                d.log_path().display(),
                tail(&d.log(), 3000)
            ));
        }
        if let Some(h) = &self.http {
            out.push_str(&format!("--- httpd log ---\n{}\n", tail(&h.log(), 2000)));
        }
        out
    }

    /// `ctl get <kind> <name> -o json` on the lab's appliance.
    pub fn get(&self, kind: &str, name: &str) -> Result<Value> {
        let out = self
            .appliance_ref()
            .ctl(&["get", kind, name, "-o", "json"])?;
        serde_json::from_str(&out).with_context(|| format!("ctl get {kind} {name}: {out}"))
    }

    /// Polls `ctl get <kind> <name>` every 0.5 s until `check` holds on its JSON; fails
    /// after `timeout` naming `what`, with the last answer and the lab's logs.
    pub fn wait_until(
        &self,
        kind: &str,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get(kind, name);
            if let Ok(v) = &v
                && check(v)
            {
                return Ok(v.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{kind} {name}: {what} not reached within {timeout:?}; last: {v:#?}\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the agent in `vm` registered with the box: `AGENT-INVENTORY` on the
    /// serial console within `boot_timeout` of now, then `AGENT-REGISTERED` (the agent's
    /// line once CreateServer answered) within 120 s more. Fails on `AGENT-EXIT`, on QEMU
    /// exiting or on timeout, with the serial console and the lab's logs. Prints
    /// `time-to-registered: <kind> <seconds> s` (QEMU start → registered), the one line
    /// format every client kind's test prints (`grep time-to-registered:` gives the table).
    pub fn wait_registered(
        &self,
        vm: &mut Vm,
        kind: &str,
        boot_timeout: Duration,
    ) -> Result<Registered> {
        if let Err(e) = vm.wait_for("AGENT-INVENTORY", boot_timeout) {
            bail!("{e:#}\n{}", self.report());
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let line = loop {
            let exited = vm.exited();
            let serial = vm.serial();
            if let Some(l) = serial.lines().find(|l| l.contains("AGENT-REGISTERED")) {
                break l.trim_end().to_string();
            }
            if serial.contains("AGENT-EXIT") || Instant::now() >= deadline {
                bail!("agent did not register\n{serial}\n{}", self.report());
            }
            if let Some(status) = exited {
                bail!("QEMU exited ({status})\n{serial}\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        let after = vm.elapsed();
        println!(
            "time-to-registered: {kind} {:.1} s (QEMU start → registered, TCG)",
            after.as_secs_f64()
        );
        Ok(Registered { line, after })
    }

    /// Keep the scratch directory (logs, serial consoles) after drop, not only on panic.
    pub fn keep_dir_on_drop(&mut self) {
        self.keep_dir = true;
    }

    /// A file in the scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

/// An agent's registration seen on its serial console ([`Lab::wait_registered`]).
#[derive(Debug, Clone)]
pub struct Registered {
    /// The `AGENT-REGISTERED uuid=…` line.
    pub line: String,
    /// QEMU start → the line was seen (polled every 0.3 s).
    pub after: Duration,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if (panicking || self.keep_dir)
            && let Some(dir) = self.dir.take()
        {
            let why = if panicking { "test failed; " } else { "" };
            eprintln!("lab: {why}logs kept in {}", dir.keep().display());
        }
    }
}
