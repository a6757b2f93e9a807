//! BMC commands end to end: the real `appliance serve`, driven by `appliance ctl server bmc |
//! power | bootdev` against a real `ipmi_sim`, cross-checked with `ipmitool`; credentials
//! never appear in `ctl get` output.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Appliance;

fn have(p: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {p}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Sim {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ipmitool(port: u16, args: &[&str]) -> String {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U", "admin", "-P", "password", "-C", "3", "-N", "1", "-R", "2",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn start_sim() -> Sim {
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
            "name \"clitest\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  user 2 true \"admin\" \"password\" admin 10 none md2 md5 straight\n",
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
    while !ipmitool(port, &["chassis", "power", "status"]).contains("Chassis Power is") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ipmi_sim did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sim
}

#[test]
fn ctl_sets_bmc_and_drives_power_and_boot_device() {
    if !have("ipmi_sim") || !have("ipmitool") {
        println!("SKIP ctl_sets_bmc_and_drives_power_and_boot_device: ipmi_sim/ipmitool missing");
        return;
    }
    let sim = start_sim();
    let app = Appliance::start();
    let yaml = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: node-1\nspec:\n  accepted: true\n";
    let out = app.ctl_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(out.status.success());
    let pwfile = sim.dir.path().join("pw");
    std::fs::write(&pwfile, "password\n").unwrap();
    let port = sim.port.to_string();
    let pw = pwfile.to_str().unwrap();
    app.ctl_ok(&[
        "server",
        "bmc",
        "node-1",
        "--endpoint",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "admin",
        "--password-file",
        pw,
    ]);
    let shown = app.ctl_ok(&["get", "server", "node-1", "-o", "yaml"]);
    assert!(!shown.contains("password"), "{shown}");
    assert!(shown.contains("node-1-bmc"), "{shown}");

    let out = app.ctl_ok(&["server", "power", "status", "node-1"]);
    assert!(out.contains("power: off"), "{out}");
    app.ctl_ok(&["server", "bootdev", "pxe", "node-1", "--uefi"]);
    assert!(ipmitool(sim.port, &["chassis", "bootparam", "get", "5"]).contains("Force PXE"));
    app.ctl_ok(&["server", "power", "on", "node-1"]);
    assert!(ipmitool(sim.port, &["chassis", "power", "status"]).contains("is on"));
    let out = app.ctl_ok(&["server", "power", "status", "node-1"]);
    assert!(out.contains("power: on"), "{out}");
    // The read was recorded on the Server.
    let shown = app.ctl_ok(&["get", "server", "node-1", "-o", "yaml"]);
    assert!(
        shown.contains("power: \"on\"") || shown.contains("power: on"),
        "{shown}"
    );
    app.ctl_ok(&[
        "server",
        "bootdev",
        "disk",
        "node-1",
        "--bios",
        "--persistent",
    ]);
    assert!(ipmitool(sim.port, &["chassis", "bootparam", "get", "5"]).contains("Hard-Drive"));
    app.ctl_ok(&["server", "power", "off", "node-1"]);
    assert!(ipmitool(sim.port, &["chassis", "power", "status"]).contains("is off"));

    // Errors are clear and change nothing.
    let out = app.ctl(&["server", "power", "on", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = app.ctl_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: bare\nspec:\n  accepted: true\n"),
    );
    assert!(out.status.success());
    let out = app.ctl(&["server", "power", "cycle", "bare"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no BMC"));
}
