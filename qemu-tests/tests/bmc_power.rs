//! Power through a real BMC end to end: OpenIPMI `ipmi_sim` in the lab namespace fronts a
//! real QEMU VM (its chassis hook starts and stops the process), and the real appliance
//! powers that VM over IPMI (RMCP+), after which the VM PXE boots from the appliance.
//!
//! 1. A Server (named by the VM's SMBIOS UUID, not accepted, `pxeMode: bios`) gets its BMC
//!    with `appliance ctl server bmc` (credentials into the box's secret store).
//! 2. `appliance ctl server accept` → the lifecycle's "set PXE boot once + power cycle (on
//!    when off)" over IPMI → the hook starts QEMU → SeaBIOS + iPXE ROM → DHCPDISCOVER (seen
//!    by tcpdump on the bridge) → the appliance's DHCP → /boot.ipxe → /ipxe (this MAC, the
//!    accepted-but-free server gets the agent environment, here the test Environment) → its
//!    marker on the serial console. `ctl server power status` reads `on` while it runs, and
//!    `off` once the test Environment powered the VM off.
//! 3. `ctl server bootdev pxe --bios` + `ctl server power on` → QEMU again → a new
//!    DHCPDISCOVER; `ctl server power cycle` → a new QEMU process that PXE boots again;
//!    `ctl server power off` → the QEMU process is gone and status reads off.
//!
//! A second test shortens the reboot timeout: the test Environment is not the agent, so the
//! accepted server never shows a sign of life; the lifecycle retries "PXE + power cycle"
//! through the BMC (a second QEMU process that PXE boots) and then raises condition
//! `PowerCycle=False` (reason `RebootTimeout`) on the Server.
//!
//! ipmitool cross-checks the BMC's view at each step.

use std::time::{Duration, Instant};

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::bmc::{BMC_ADDR, BMC_PASSWORD, BMC_PORT, BMC_USER, DhcpCapture, SimBmc, epoch_now};
use qemu_tests::env::{MARKER, test_env};
use qemu_tests::{Firmware, Lab, Needs, VmSpec, which};

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const UUID: &str = "6b1f3c2a-0000-4000-8000-0000000b3c01";
const MAC: &str = "52:54:00:77:b3:01";

fn power_status(lab: &mut Lab) -> String {
    lab.appliance()
        .ctl(&["server", "power", "status", UUID])
        .unwrap_or_else(|e| panic!("ctl server power status: {e:#}\n{}", lab.report()))
}

#[track_caller]
fn ctl(lab: &mut Lab, args: &[&str]) -> String {
    lab.appliance()
        .ctl(args)
        .unwrap_or_else(|e| panic!("ctl {args:?}: {e:#}\n{}", lab.report()))
}

#[track_caller]
fn assert_logged(lab: &Lab, bmc: &SimBmc, log: &str, needles: &[&str]) {
    assert!(
        log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
        "no appliance log line with {needles:?}\n{}{}",
        lab.report(),
        bmc.report()
    );
}

/// The lab with the appliance, the BMC-powered VM (off) and a DHCP capture of its MAC, and
/// the Server registered with its BMC. Fields drop in order: VM and ipmi_sim, tcpdump, then
/// the lab (appliance, namespace).
struct Rig {
    bmc: SimBmc,
    capture: DhcpCapture,
    lab: Lab,
}

/// `None` (after printing why) when this machine cannot run the test; a failure instead
/// under `APPLIANCE_E2E=1`.
fn rig(extra_toml: &str) -> Option<Rig> {
    if let Some(reason) = qemu_tests::skip_reason(Needs::Bios) {
        qemu_tests::skip("bmc_power", &reason);
        return None;
    }
    for tool in ["ipmi_sim", "ipmitool", "tcpdump"] {
        if which(tool).is_none() {
            let reason = format!("{tool} not installed (run scripts/setup)");
            qemu_tests::skip("bmc_power", &reason);
            return None;
        }
    }
    let env = test_env().expect("test env");
    let mut lab = Lab::new().expect("lab");
    let mut config = ApplianceConfig::server().agent_env(&env.dir);
    config.extra_toml = extra_toml.to_string();
    lab.start_appliance(&config).expect("appliance");
    let spec = VmSpec::new(Firmware::Bios)
        .uuid(UUID)
        .memory(512)
        .reboot_keeps_running();
    let bmc = SimBmc::start(&lab, "bmcvm", MAC, &spec).expect("ipmi_sim");
    let capture = DhcpCapture::start(&lab, MAC).expect("tcpdump");
    assert_eq!(bmc.qemu_pid(), None, "VM runs before anything powered it");

    // The Server as an operator registers it ahead of discovery, and its BMC.
    let dir = lab.dir().to_path_buf();
    lab.appliance()
        .apply(
            &dir,
            &format!(
                "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {UUID}\nspec:\n  accepted: false\n  pxeMode: bios\n"
            ),
        )
        .expect("apply server");
    let pw = dir.join("bmc-password");
    std::fs::write(&pw, format!("{BMC_PASSWORD}\n")).unwrap();
    ctl(
        &mut lab,
        &[
            "server",
            "bmc",
            UUID,
            "--endpoint",
            &BMC_ADDR.to_string(),
            "--port",
            &BMC_PORT.to_string(),
            "--user",
            BMC_USER,
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    let shown = ctl(&mut lab, &["get", "server", UUID, "-o", "yaml"]);
    assert!(!shown.contains(BMC_PASSWORD), "password shown: {shown}");
    let status = power_status(&mut lab);
    assert!(status.contains("power: off"), "{status}");
    Some(Rig { bmc, capture, lab })
}

#[test]
fn appliance_powers_a_vm_through_ipmi_sim_and_it_pxe_boots() {
    let started = Instant::now();
    let Some(Rig {
        bmc,
        capture,
        mut lab,
    }) = rig("")
    else {
        return;
    };

    // Accept: the lifecycle sets PXE once and powers the server on through the BMC.
    let t_on = epoch_now();
    let t0 = Instant::now();
    ctl(&mut lab, &["server", "accept", UUID]);
    let pid = bmc
        .wait_power(true, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()))
        .expect("running");
    let t_running = t0.elapsed();
    let calls = bmc.calls();
    let boot_at = calls.find("set boot pxe");
    let power_at = calls.find("set power 1");
    assert!(
        boot_at.is_some() && power_at.is_some() && boot_at < power_at,
        "expected `set boot pxe` then `set power 1` from the appliance:\n{}",
        bmc.report()
    );
    assert!(bmc.vm_log().contains("start boot=pxe"), "{}", bmc.report());
    let status = power_status(&mut lab);
    assert!(status.contains("power: on"), "{status}");
    let seen_by_ipmitool = bmc.ipmitool(&["chassis", "power", "status"]).unwrap();
    assert!(seen_by_ipmitool.contains("is on"), "{seen_by_ipmitool}");

    // The VM PXE boots from the appliance.
    let t_discover = capture
        .wait_discover(0, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", lab.report(), bmc.report()));
    let line = bmc
        .wait_serial(MARKER, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    let t_marker = t0.elapsed();
    assert!(
        line.contains(&format!("sidero.mac={MAC}")),
        "marker without this VM's MAC: {line}"
    );
    let log = lab.appliance().log();
    assert_logged(&lab, &bmc, &log, &["dhcp: reply", "Ack", "yiaddr=10.77.0."]);
    assert_logged(&lab, &bmc, &log, &["HTTP GET /boot.ipxe ", "-> 200"]);
    // The request log names the path only (never the query); the decision line names the
    // server and the NIC it booted from.
    assert_logged(&lab, &bmc, &log, &["HTTP GET /ipxe ", "-> 200"]);
    assert_logged(
        &lab,
        &bmc,
        &log,
        &[&format!("boot decision uuid={UUID} mac=\"{MAC}\"")],
    );
    assert_logged(
        &lab,
        &bmc,
        &log,
        &["HTTP GET /env/agent-amd64/initramfs.xz ", "-> 200"],
    );
    eprintln!(
        "bmc_power: accept → QEMU running {:.2}s, → first DHCPDISCOVER {:.2}s, → marker {:.1}s (pid {pid})",
        t_running.as_secs_f64(),
        t_discover - t_on,
        t_marker.as_secs_f64()
    );

    // The test Environment powers off: the BMC and then the appliance read off.
    bmc.wait_power(false, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = power_status(&mut lab);
    assert!(status.contains("power: off"), "{status}");

    // Explicit power through ctl: boot device PXE, on, then off.
    let discovers_before = capture.discovers().len();
    ctl(&mut lab, &["server", "bootdev", "pxe", UUID, "--bios"]);
    let boot = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(boot.contains("Force PXE"), "{boot}");
    let t_on2 = epoch_now();
    ctl(&mut lab, &["server", "power", "on", UUID]);
    let pid2 = bmc
        .wait_power(true, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"))
        .expect("running");
    assert_ne!(pid2, pid, "a new QEMU process");
    let status = power_status(&mut lab);
    assert!(status.contains("power: on"), "{status}");
    let t_discover2 = capture
        .wait_discover(discovers_before, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", lab.report(), bmc.report()));
    eprintln!(
        "bmc_power: ctl power on → first DHCPDISCOVER {:.2}s",
        t_discover2 - t_on2
    );
    // Cycle while on: ipmi_sim stops it and starts it again a second later.
    let discovers_before = capture.discovers().len();
    ctl(&mut lab, &["server", "power", "cycle", UUID]);
    let pid3 = bmc
        .wait_new_vm(pid2, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        bmc.vm_log().contains(&format!("stop pid={pid2}")),
        "{}",
        bmc.report()
    );
    capture
        .wait_discover(discovers_before, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", lab.report(), bmc.report()));

    ctl(&mut lab, &["server", "power", "off", UUID]);
    // Gone, or a zombie waiting to be reaped: no longer running either way.
    bmc.wait_power(false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = power_status(&mut lab);
    assert!(status.contains("power: off"), "{status}");
    let seen_by_ipmitool = bmc.ipmitool(&["chassis", "power", "status"]).unwrap();
    assert!(seen_by_ipmitool.contains("is off"), "{seen_by_ipmitool}");
    assert!(
        bmc.vm_log().contains(&format!("stop pid={pid3}")),
        "{}",
        bmc.report()
    );
    lab.appliance().check_alive().expect("appliance still up");
    eprintln!(
        "bmc_power: whole test {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The reboot timeout through a real BMC: accepted, powered on by the lifecycle, but no
/// agent ever reports (the test Environment is not the agent) → after `reboot_timeout` the
/// lifecycle sets PXE and power cycles again (a new QEMU process that PXE boots again) →
/// after `reboot_retries` retries condition `PowerCycle=False` (reason `RebootTimeout`).
#[test]
fn reboot_timeout_retries_the_power_cycle_through_the_bmc_then_raises_a_condition() {
    let started = Instant::now();
    let Some(Rig {
        bmc,
        capture,
        mut lab,
    }) = rig("[lifecycle]\nreboot_timeout = \"15s\"\nreboot_retries = 1\n")
    else {
        return;
    };
    let t0 = Instant::now();
    ctl(&mut lab, &["server", "accept", UUID]);
    let pid1 = bmc
        .wait_power(true, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()))
        .expect("running");
    capture
        .wait_discover(0, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", lab.report(), bmc.report()));
    // The retry: a second process, started by the hook (pid1 was stopped by the cycle, or
    // had powered itself off after its boot).
    let deadline = Instant::now() + Duration::from_secs(120);
    let pid2 = loop {
        if let Some(p) = bmc.started_pids().get(1) {
            break *p;
        }
        assert!(
            Instant::now() < deadline,
            "no retry within 120 s\n{}\n{}",
            lab.report(),
            bmc.report()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let t_retry = t0.elapsed();
    assert_ne!(pid1, pid2);
    assert!(
        t_retry >= Duration::from_secs(14),
        "retried after {t_retry:?}, before the 15 s reboot timeout\n{}",
        bmc.report()
    );
    assert!(
        bmc.calls().matches("set boot pxe").count() >= 2,
        "PXE is set on every attempt\n{}",
        bmc.report()
    );
    // The retried VM PXE boots again.
    capture
        .wait_discover(1, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", lab.report(), bmc.report()));

    // Retries exhausted (backoff 30 s after the first retry): the condition.
    let deadline = Instant::now() + Duration::from_secs(120);
    let condition = loop {
        let out = ctl(&mut lab, &["get", "server", UUID, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("server json");
        let found = v["status"]["conditions"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["type"] == "PowerCycle").cloned());
        if let Some(c) = found {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no PowerCycle condition within 120 s: {v:#}\n{}",
            lab.report()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let t_condition = t0.elapsed();
    assert_eq!(condition["status"], "False", "{condition:#}");
    assert_eq!(condition["reason"], "RebootTimeout", "{condition:#}");
    // No further power action once the retries are exhausted.
    let starts = bmc.started_pids().len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bmc.started_pids().len(), starts, "{}", bmc.report());
    lab.appliance().check_alive().expect("appliance still up");
    eprintln!(
        "bmc_power: accept → retry (new QEMU) {:.1}s, → PowerCycle=False {:.1}s; whole test {:.1}s",
        t_retry.as_secs_f64(),
        t_condition.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
