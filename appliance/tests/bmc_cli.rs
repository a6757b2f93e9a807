//! BMC commands end to end: the real `appliance serve`, driven by `appliance ctl server bmc |
//! power | bootdev` against a real `ipmi_sim`, cross-checked with `ipmitool`; credentials
//! never appear in `ctl get` output.

mod ipmi_sim;
mod support;

use ipmi_sim::{ipmi_tools_present, ipmitool, start_sim};
use support::Appliance;

#[test]
fn ctl_sets_bmc_and_drives_power_and_boot_device() {
    if !ipmi_tools_present("ctl_sets_bmc_and_drives_power_and_boot_device") {
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
