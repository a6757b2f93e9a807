//! A real OpenIPMI `ipmi_sim` BMC on a free loopback UDP port (lanplus, user admin /
//! password), whose chassis control script keeps power and boot device in files, plus an
//! `ipmitool` helper to cross-check what the box did. Shared by the BMC and lifecycle tests.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a program is on PATH.
pub fn have(p: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {p}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Sim {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ipmitool(port: u16, args: &[&str]) -> String {
    ipmitool_as(port, "admin", "password", args).1
}

/// `ipmitool -I lanplus -C 3` as `user`/`pass`: (success, stdout+stderr).
pub fn ipmitool_as(port: u16, user: &str, pass: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", user, "-P", pass, "-C", "3", "-N", "1", "-R", "2"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Starts ipmi_sim and waits until it answers.
pub fn start_sim() -> Sim {
    start_sim_with("password")
}

/// Starts ipmi_sim with administrator `admin` / `admin_pass` and waits until it answers.
pub fn start_sim_with(admin_pass: &str) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path();
    std::fs::create_dir_all(d.join("state")).unwrap();
    let script = d.join("cc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nS=$(dirname \"$0\")/state\nop=$2; shift 2\ncase $op in\n get) for p in \"$@\"; do case $p in power) echo \"power:$(cat $S/power 2>/dev/null || echo 0)\";; boot) echo \"boot:$(cat $S/boot 2>/dev/null || echo default)\";; esac; done;;\n set) while [ -n \"$1\" ]; do case $1 in power) echo $2 > $S/power;; boot) echo $2 > $S/boot;; shutdown) echo 0 > $S/power;; esac; shift 2; done;;\nesac\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.join("lan.conf"),
        format!(
            "name \"clitest\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  user 2 true \"admin\" \"{admin_pass}\" admin 10 none md2 md5 straight\n",
            script.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("sim.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .unwrap();
    let child = Command::new("ipmi_sim")
        .arg("-c")
        .arg(d.join("lan.conf"))
        .arg("-f")
        .arg(d.join("sim.emu"))
        .arg("-s")
        .arg(d.join("state"))
        .arg("-n")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sim = Sim { child, port, dir };
    let start = Instant::now();
    while !ipmitool_as(port, "admin", admin_pass, &["chassis", "power", "status"])
        .1
        .contains("Chassis Power is")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ipmi_sim did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sim
}
