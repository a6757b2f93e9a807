//! A BMC in front of a real VM: OpenIPMI's `ipmi_sim` runs inside the lab namespace on
//! `10.77.0.1:623` (RMCP+/lanplus, user `admin`/`password`), and its `chassis_control` hook
//! starts and stops a real QEMU (TCG) PXE client on a tap of the lab bridge. So an IPMI
//! `power on` from the appliance really powers a machine that then PXE boots from it.
//!
//! The hook (written next to its `state/` folder) is handed the VM's exact QEMU arguments
//! by [`VmSpec::qemu_args`] (`state/qemu.args`, one per line): the same network, firmware
//! and serial setup as the lab's own VMs. It implements:
//! - `get power` → `power:1` only while that QEMU process lives and is not a zombie (a
//!   daemonized QEMU is reparented to PID 1, which may reap it late);
//! - `set power 1|0`, `set reset 1`, `set shutdown 1` → start (daemonized, pidfile) / stop
//!   (SIGTERM, then SIGKILL after 0.5 s); starting is a no-op when it already runs;
//! - `set boot pxe|default|…` → remembered; at the next start `pxe` keeps the NIC's
//!   `bootindex`, anything else removes it (with `-boot strict=on` the firmware then does
//!   not PXE boot).
//!
//! Every call is logged to `state/calls.log`, starts and stops to `state/vm.log`. A call
//! returns in well under a second: a slower hook makes the IPMI client retransmit and
//! ipmi_sim repeat the action.
//!
//! Also [`DhcpCapture`]: `tcpdump` on the bridge recording the DHCPDISCOVERs of one MAC with
//! their time, an observer independent of the appliance.
//!
//! Drop kills the VM (by its pidfile, after checking the pid is that QEMU) and ipmi_sim; the
//! lab namespace's own drop kills anything left in it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::lab::Lab;
use crate::netns::{BRIDGE, BRIDGE_ADDR};
use crate::process::{Guarded, run};
use crate::tail;
use crate::vm::VmSpec;

/// Where ipmi_sim listens (inside the lab namespace).
pub const BMC_ADDR: Ipv4Addr = BRIDGE_ADDR;
pub const BMC_PORT: u16 = 623;
pub const BMC_USER: &str = "admin";
pub const BMC_PASSWORD: &str = "password";

const HOOK: &str = r#"#!/bin/sh
# ipmi_sim chassis_control hook driving a real QEMU VM (written by qemu-tests/src/bmc.rs).
# Called as: <script> <mc> get power boot | set power 1|0 | set boot pxe|default|none|...
#            | set reset 1 | set shutdown 1 | check
# Keep it well under 1 s: a slower answer makes the IPMI client retransmit and ipmi_sim
# repeat the action.
S=$(cd "$(dirname "$0")" && pwd)/state
op=$2
shift 2
echo "$(date +%s.%N) $op $*" >> "$S/calls.log"

vm_pid() {   # the pid, only if it is our QEMU and alive (a zombie counts as off)
  local pid
  pid=$(cat "$S/qemu.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && grep -q qemu-system "/proc/$pid/cmdline" 2>/dev/null || return 1
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ] || return 1
  echo "$pid"
}
vm_start() {
  vm_pid >/dev/null && return 0
  local boot
  boot=$(cat "$S/boot" 2>/dev/null || echo default)
  set -f
  IFS='
'
  if [ "$boot" = pxe ]; then
    set -- $(cat "$S/qemu.args")
  else
    set -- $(sed 's/^\(virtio-net-pci,.*\),bootindex=0/\1/' "$S/qemu.args")
  fi
  unset IFS
  set +f
  rm -f "$S/qemu.pid"
  echo "$(date +%s.%N) start boot=$boot" >> "$S/vm.log"
  if qemu-system-x86_64 "$@" -daemonize -pidfile "$S/qemu.pid" </dev/null >>"$S/vm.log" 2>&1; then
    echo "$(date +%s.%N) started pid=$(cat "$S/qemu.pid" 2>/dev/null)" >> "$S/vm.log"
  else
    echo "$(date +%s.%N) qemu failed to start" >> "$S/vm.log"
  fi
}
vm_stop() {
  local pid i
  pid=$(vm_pid) || { rm -f "$S/qemu.pid"; return 0; }
  echo "$(date +%s.%N) stop pid=$pid" >> "$S/vm.log"
  kill "$pid" 2>/dev/null
  i=0
  while vm_pid >/dev/null && [ $i -lt 10 ]; do sleep 0.05; i=$((i+1)); done
  vm_pid >/dev/null && kill -9 "$pid" 2>/dev/null
  rm -f "$S/qemu.pid"
  echo "$(date +%s.%N) stopped pid=$pid" >> "$S/vm.log"
}

case $op in
  get) for what in "$@"; do
         case $what in
           power) if vm_pid >/dev/null; then echo "power:1"; else echo "power:0"; fi;;
           boot)  echo "boot:$(cat "$S/boot" 2>/dev/null || echo default)";;
           *) echo "Invalid parameter: $what"; exit 1;;
         esac
       done;;
  set) while [ -n "$1" ]; do
         what=$1; value=$2; shift 2
         case $what in
           power) if [ "$value" = 1 ]; then vm_start; else vm_stop; fi;;
           reset) vm_stop; vm_start;;
           boot)  echo "$value" > "$S/boot";;
           shutdown) vm_stop;;
           identify) :;;
           *) echo "Invalid parameter: $what"; exit 1;;
         esac
       done;;
  check) :;;
  *) echo "bad op $op"; exit 1;;
esac
exit 0
"#;

/// ipmi_sim plus the VM its chassis hook powers.
#[derive(Debug)]
pub struct SimBmc {
    sim: Guarded,
    dir: PathBuf,
    state: PathBuf,
    ns_name: String,
    name: String,
    mac: String,
}

impl SimBmc {
    /// Writes the hook, `lan.conf`, `sim.emu` and the VM's QEMU arguments (a new tap on the
    /// bridge), starts ipmi_sim in the lab namespace and waits until `ipmitool` gets an
    /// answer from it. The VM is off.
    pub fn start(lab: &Lab, name: &str, mac: &str, spec: &VmSpec) -> Result<SimBmc> {
        let dir = lab.dir().join(format!("bmc-{name}"));
        let state = dir.join("state");
        std::fs::create_dir_all(&state).context("bmc state dir")?;
        std::fs::create_dir_all(dir.join("sim")).context("ipmi_sim state dir")?;
        let tap = lab.ns().add_tap()?;
        let args = spec.qemu_args(&dir, name, mac, &tap)?;
        if args.iter().any(|a| a.contains('\n')) {
            bail!("a QEMU argument contains a newline: {args:?}");
        }
        std::fs::write(state.join("qemu.args"), args.join("\n") + "\n")?;
        let hook = dir.join("chassis_control.sh");
        std::fs::write(&hook, HOOK)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        // ipmi_sim expands nothing: absolute paths only.
        std::fs::write(
            dir.join("lan.conf"),
            format!(
                "name \"{name}\"\nset_working_mc 0x20\n  startlan 1\n    addr {BMC_ADDR} {BMC_PORT}\n    priv_limit admin\n    allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  user 2 true \"{BMC_USER}\" \"{BMC_PASSWORD}\" admin 10 none md2 md5 straight\n",
                hook.display()
            ),
        )?;
        SimBmc::spawn(lab, dir, state, name, mac, &[])
    }

    /// An in-band BMC for a VM built with [`VmSpec::inband_bmc`]`(serial_port)`: ipmi_sim
    /// also listens on `127.0.0.1:<serial_port>` in the namespace for QEMU's
    /// `ipmi-bmc-extern` (`serial kcs … codec VM`) and has no chassis hook. Its LAN side
    /// serves RMCP+ on [`BMC_ADDR`]:[`BMC_PORT`], but the LAN configuration the guest reads
    /// in-band (channel 1, parameter 3) starts as 0.0.0.0: see [`SimBmc::set_lan_address`].
    pub fn start_inband(lab: &Lab, name: &str, serial_port: u16) -> Result<SimBmc> {
        let dir = lab.dir().join(format!("bmc-{name}"));
        let state = dir.join("state");
        std::fs::create_dir_all(&state).context("bmc state dir")?;
        std::fs::create_dir_all(dir.join("sim")).context("ipmi_sim state dir")?;
        std::fs::write(
            dir.join("lan.conf"),
            format!(
                "name \"{name}\"\nset_working_mc 0x20\n  startlan 1\n    addr {BMC_ADDR} {BMC_PORT}\n    priv_limit admin\n    allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  serial kcs 127.0.0.1 {serial_port} codec VM\n  user 2 true \"{BMC_USER}\" \"{BMC_PASSWORD}\" admin 10 none md2 md5 straight\n"
            ),
        )?;
        SimBmc::spawn(lab, dir, state, name, "", &[])
    }

    /// Sets the static IP address of LAN channel 1 (over LAN with ipmitool, as an operator
    /// would): what Get LAN Configuration parameter 3 then returns, also in-band.
    pub fn set_lan_address(&self, ip: Ipv4Addr) -> Result<()> {
        self.ipmitool(&["lan", "set", "1", "ipsrc", "static"])?;
        self.ipmitool(&["lan", "set", "1", "ipaddr", &ip.to_string()])?;
        let print = self.ipmitool(&["lan", "print", "1"])?;
        if !print.contains(&ip.to_string()) {
            bail!("ipmi_sim did not take the LAN address {ip}:\n{print}");
        }
        Ok(())
    }

    /// Writes `sim.emu`, starts ipmi_sim (`lan.conf` already in `dir`) in the lab namespace
    /// and waits until `ipmitool` gets an answer from it.
    fn spawn(
        lab: &Lab,
        dir: PathBuf,
        state: PathBuf,
        name: &str,
        mac: &str,
        extra: &[&str],
    ) -> Result<SimBmc> {
        std::fs::write(
            dir.join("sim.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )?;
        let mut cmd = lab.ns().command("ipmi_sim");
        cmd.arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("sim.emu"))
            .arg("-s")
            .arg(dir.join("sim"))
            .arg("-n")
            .args(extra);
        let sim = Guarded::spawn("ipmi_sim", cmd, &dir.join("ipmi_sim.log"))?;
        let mut bmc = SimBmc {
            sim,
            dir,
            state,
            ns_name: lab.ns().name().to_string(),
            name: name.to_string(),
            mac: mac.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = bmc.sim.exited() {
                bail!("ipmi_sim exited ({status})\n{}", bmc.report());
            }
            if let Ok(out) = bmc.ipmitool(&["chassis", "power", "status"])
                && out.contains("Chassis Power is")
            {
                return Ok(bmc);
            }
            if Instant::now() >= deadline {
                bail!("ipmi_sim does not answer ipmitool\n{}", bmc.report());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// The VM's QEMU pid while it runs (alive, not a zombie, really QEMU).
    pub fn qemu_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.state.join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        qemu_alive(pid).then_some(pid)
    }

    /// Waits until the VM runs (`Some(pid)`) or is off (`None`), as `on` asks.
    pub fn wait_power(&self, on: bool, timeout: Duration) -> Result<Option<u32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let pid = self.qemu_pid();
            if pid.is_some() == on {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                let want = if on { "on" } else { "off" };
                bail!(
                    "VM {} not {want} within {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a QEMU other than `old` runs (after a cycle or reset); returns its pid.
    pub fn wait_new_vm(&self, old: u32, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.qemu_pid().filter(|p| *p != old) {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                bail!(
                    "VM {} not restarted (still pid {old} or off) within {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids the hook started, in order (from its VM log).
    pub fn started_pids(&self) -> Vec<u32> {
        self.vm_log()
            .lines()
            .filter_map(|l| l.split_once(" started pid=")?.1.trim().parse().ok())
            .collect()
    }

    /// The hook's call log (`<epoch> <op> <args>` per call from ipmi_sim).
    pub fn calls(&self) -> String {
        read_lossy(&self.state.join("calls.log"))
    }

    /// The hook's VM log (starts, stops, QEMU's own messages).
    pub fn vm_log(&self) -> String {
        read_lossy(&self.state.join("vm.log"))
    }

    /// The serial console of the current (or last) power-on: QEMU truncates it on start.
    pub fn serial(&self) -> String {
        read_lossy(&self.dir.join(format!("{}.serial.log", self.name)))
    }

    /// Waits until a serial line contains `needle` and returns it.
    pub fn wait_serial(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.serial().lines().find(|l| l.contains(needle)) {
                return Ok(line.trim_end_matches('\r').to_string());
            }
            if Instant::now() >= deadline {
                bail!(
                    "VM {} did not print {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ipmitool -I lanplus -C 3` against the sim, from inside the namespace (an
    /// independent client to cross-check what the appliance set).
    pub fn ipmitool(&self, args: &[&str]) -> Result<String> {
        self.ipmitool_as(BMC_USER, BMC_PASSWORD, args)
    }

    /// [`SimBmc::ipmitool`] logged in as another user.
    pub fn ipmitool_as(&self, user: &str, password: &str, args: &[&str]) -> Result<String> {
        let port = BMC_PORT.to_string();
        let addr = BMC_ADDR.to_string();
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "ipmitool"])
            .args(["-I", "lanplus", "-H", &addr, "-p", &port])
            .args(["-U", user, "-P", password, "-C", "3", "-N", "1", "-R", "2"])
            .args(args))
    }

    /// ipmi_sim's own log.
    pub fn sim_log(&self) -> String {
        self.sim.log()
    }

    /// Everything a failure message needs.
    pub fn report(&self) -> String {
        format!(
            "--- bmc hook calls ({}) ---\n{}\n--- bmc vm log ---\n{}\n--- ipmi_sim log ---\n{}\n--- serial ---\n{}\n",
            self.state.join("calls.log").display(),
            tail(&self.calls(), 2000),
            tail(&self.vm_log(), 2000),
            tail(&self.sim.log(), 1000),
            tail(&self.serial(), 2000)
        )
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        if let Some(pid) = self.qemu_pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        self.sim.kill();
    }
}

/// `/proc/<pid>` is a QEMU that is not a zombie.
fn qemu_alive(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("qemu-system") {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Seconds since the epoch (the clock tcpdump and the hook stamp their lines with).
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `tcpdump` on the lab bridge, keeping the DHCP requests one MAC sends.
#[derive(Debug)]
pub struct DhcpCapture {
    process: Guarded,
}

impl DhcpCapture {
    /// Starts capturing and waits until tcpdump listens.
    pub fn start(lab: &Lab, mac: &str) -> Result<DhcpCapture> {
        let mut cmd = lab.ns().command("tcpdump");
        cmd.args(["-i", BRIDGE, "-n", "-l", "-tt", "-v"])
            .arg(format!("ether src {mac} and udp dst port 67"));
        let log = lab
            .dir()
            .join(format!("tcpdump-{}.log", mac.replace(':', "")));
        let mut process = Guarded::spawn("tcpdump", cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process.log().contains("listening on") {
            if let Some(status) = process.exited() {
                bail!("tcpdump exited ({status}): {}", process.log());
            }
            if Instant::now() >= deadline {
                bail!("tcpdump did not start: {}", process.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(DhcpCapture { process })
    }

    /// Epoch times of the DHCPDISCOVERs seen so far.
    pub fn discovers(&self) -> Vec<f64> {
        parse_discovers(&self.process.log())
    }

    /// Waits until more than `seen` DHCPDISCOVERs were captured; returns the time of the
    /// first new one.
    pub fn wait_discover(&self, seen: usize, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.discovers().get(seen) {
                return Ok(*t);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no new DHCPDISCOVER within {timeout:?}; capture:\n{}",
                    tail(&self.process.log(), 2000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// The timestamps (`-tt`) of the packets whose `-v` decode says `DHCP-Message … Discover`.
fn parse_discovers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut stamp = None;
    for line in text.lines() {
        if let Some(t) = line
            .split_whitespace()
            .next()
            .filter(|_| !line.starts_with(char::is_whitespace))
            .and_then(|w| w.parse::<f64>().ok())
        {
            stamp = Some(t);
        }
        if line.contains("DHCP-Message") && line.trim_end().ends_with("Discover") {
            out.extend(stamp.take());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_discovers;

    #[test]
    fn discovers_are_read_from_tcpdump_verbose_output() {
        let text = "tcpdump: listening on br0, link-type EN10MB (Ethernet), snapshot length 262144 bytes
1764150000.250000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 375)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 52:54:00:77:b0:01, length 347, xid 0x1, Flags [none]
\t  Client-Ethernet-Address 52:54:00:77:b0:01
\t  Vendor-rfc1048 Extensions
\t    DHCP-Message (53), length 1: Discover
1764150001.500000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 387)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 52:54:00:77:b0:01, length 359
\t    DHCP-Message (53), length 1: Request
1764150009.000000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 375)
\t    DHCP-Message (53), length 1: Discover
";
        assert_eq!(parse_discovers(text), vec![1764150000.25, 1764150009.0]);
    }
}
