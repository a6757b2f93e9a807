//! Real PXE boots against the real appliance in a lab namespace: firmware → the appliance's
//! DHCP (server or proxy mode) → TFTP (UEFI) → HTTP `/boot.ipxe` → `/ipxe?uuid=…` → the test
//! Environment (installed as the agent environment `agent-amd64`, which is what unknown
//! servers boot) → its marker on the serial console. Plus boot-from-disk for an installed
//! server, over HTTP and in a VM.
//!
//! Every test checks the path in the appliance's own log (DHCP reply, TFTP transfer, HTTP
//! requests with their status), not only the marker, so a boot that took another path fails.
//!
//! OVMF's own UEFI PXE client (TFTP `ipxe.efi` → iPXE → the same HTTP path) is booted once,
//! by `uefi_pxe_agent.rs`, into the real agent, with this file's path and kernel-argument
//! checks: one VM instead of one here and one there.

use std::time::Duration;

use qemu_tests::appliance::{ApplianceConfig, POOL};
use qemu_tests::disk::{DISK_MARKER, write_marker_disk};
use qemu_tests::env::{MARKER, test_env};
use qemu_tests::peers::DnsmasqRole;
use qemu_tests::{Firmware, Lab, Needs, Vm, VmSpec, require_lab};

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Lines of the appliance log that contain every one of `needles`.
fn log_lines<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[track_caller]
fn assert_logged(lab: &Lab, log: &str, needles: &[&str]) {
    assert!(
        !log_lines(log, needles).is_empty(),
        "no appliance log line with {needles:?}\n{}",
        lab.report()
    );
}

/// Waits for the test Environment's marker; returns its kernel command line.
fn wait_env_booted(lab: &Lab, vm: &mut Vm) -> String {
    let line = vm
        .wait_for(MARKER, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    eprintln!(
        "{}: test Environment booted after {:.1}s",
        vm.name(),
        vm.elapsed().as_secs_f64()
    );
    line.split_once("cmdline=")
        .map(|(_, c)| c.to_string())
        .unwrap_or_default()
}

/// The agent-environment part of the path, as the appliance logged it, and the kernel
/// arguments it passed.
fn assert_agent_env_path(lab: &mut Lab, vm: &Vm, uuid: &str, cmdline: &str) {
    let log = lab.appliance().log();
    assert_logged(lab, &log, &["HTTP GET /boot.ipxe ", "-> 200"]);
    // The request log names the path only (never the query); the decision line names the
    // server.
    assert_logged(lab, &log, &["HTTP GET /ipxe ", "-> 200"]);
    assert_logged(
        lab,
        &log,
        &[&format!("boot decision uuid={uuid} "), "plan="],
    );
    assert_logged(lab, &log, &["HTTP GET /env/agent-amd64/vmlinuz ", "-> 200"]);
    assert_logged(
        lab,
        &log,
        &["HTTP GET /env/agent-amd64/initramfs.xz ", "-> 200"],
    );
    let args: Vec<&str> = cmdline.split_whitespace().collect();
    for want in [
        "console=ttyS0",
        "initrd=initramfs.xz",
        &format!("sidero.mac={}", vm.mac()),
        "sidero.endpoint=10.77.0.1:8081",
    ] {
        assert!(args.contains(&want), "{want} not in kernel args {args:?}");
    }
    lab.appliance().check_alive().expect("appliance still up");
}

/// The DHCP ACK the appliance sent in server mode, with an address from the pool.
fn assert_server_mode_lease(lab: &mut Lab) {
    let log = lab.appliance().log();
    let acks = log_lines(&log, &["dhcp: reply", "Ack", "yiaddr=10.77.0."]);
    let (first, last) = POOL;
    let in_pool = acks.iter().any(|l| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("yiaddr="))
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|a| a >= first && a <= last)
    });
    assert!(
        in_pool,
        "no DHCP ACK from the pool {first}-{last} in the appliance log\n{}",
        lab.report()
    );
}

#[test]
fn appliance_serves_in_the_lab() {
    require_lab!(Needs::Bios);
    let mut lab = Lab::new().expect("lab");
    lab.start_appliance(&ApplianceConfig::dhcp_off())
        .expect("appliance starts");
    let (code, body) = lab.http_get("/healthz").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"), "{}", lab.report());
    let status = lab.appliance().ctl(&["status"]).expect("ctl status");
    assert!(status.to_lowercase().contains("version"), "{status}");
}

/// SeaBIOS + the iPXE option ROM → appliance DHCP (server mode: address from the pool;
/// the client already runs iPXE, so the boot file is http://…/boot.ipxe) → /ipxe → the
/// agent environment → marker.
#[test]
fn bios_ipxe_rom_dhcp_server_mode_boots_test_environment() {
    require_lab!(Needs::Bios);
    let env = test_env().expect("test env");
    let mut lab = Lab::new().expect("lab");
    lab.start_appliance(&ApplianceConfig::server().agent_env(&env.dir))
        .expect("appliance");
    let uuid = "6b1f3c2a-0000-4000-8000-00000000b105";
    let mut vm = lab
        .start_vm(&VmSpec::new(Firmware::Bios).uuid(uuid))
        .expect("vm");
    let cmdline = wait_env_booted(&lab, &mut vm);
    assert_server_mode_lease(&mut lab);
    assert_agent_env_path(&mut lab, &vm, uuid, &cmdline);
}

/// dnsmasq on another host of the segment hands out addresses only (no boot file, no
/// next-server); the appliance in proxy mode adds the PXE boot information.
#[test]
fn bios_proxy_mode_beside_address_only_dhcp_boots_test_environment() {
    require_lab!(Needs::Bios);
    let env = test_env().expect("test env");
    let mut lab = Lab::new().expect("lab");
    lab.start_dnsmasq_peer(&DnsmasqRole::AddressesOnly)
        .expect("dnsmasq");
    lab.start_appliance(&ApplianceConfig::proxy().agent_env(&env.dir))
        .expect("appliance");
    let uuid = "6b1f3c2a-0000-4000-8000-0000000000a1";
    let mut vm = lab
        .start_vm(&VmSpec::new(Firmware::Bios).uuid(uuid))
        .expect("vm");
    let cmdline = wait_env_booted(&lab, &mut vm);
    // The address came from dnsmasq, which sent no boot file.
    let dnsmasq = lab.dnsmasq().expect("dnsmasq").log();
    assert!(
        dnsmasq.contains("DHCPACK(eth0) 10.77.0.1") && dnsmasq.contains(&format!(" {}", vm.mac())),
        "dnsmasq did not lease an address to {}\n{}",
        vm.mac(),
        lab.report()
    );
    let sent_boot = dnsmasq
        .lines()
        .filter(|l| l.contains(" sent size:"))
        .filter(|l| {
            l.contains("option: 67 ") || l.contains("option: 66 ") || l.contains("option: 43 ")
        })
        .collect::<Vec<_>>();
    assert!(
        sent_boot.is_empty(),
        "dnsmasq sent boot information: {sent_boot:?}"
    );
    // The appliance answered as a proxy: no address of its own.
    let log = lab.appliance().log();
    assert!(
        log_lines(&log, &["dhcp: reply", "yiaddr=10.77.0."]).is_empty(),
        "the appliance handed out an address in proxy mode\n{}",
        lab.report()
    );
    assert_logged(&lab, &log, &["dhcp: reply"]);
    assert_agent_env_path(&mut lab, &vm, uuid, &cmdline);
}

const INSTALLED_UUID: &str = "6b1f3c2a-0000-4000-8000-00000000d15c";

/// An installed server: Server (accepted, PXEBooted=True, the given method) + ServerBinding.
fn installed_server_yaml(method: Option<&str>) -> String {
    let method = method
        .map(|m| format!("  bootFromDiskMethod: {m}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: {INSTALLED_UUID}
spec:
  accepted: true
{method}status:
  conditions:
  - {{type: PXEBooted, status: 'True', lastTransitionTime: '2026-11-26T07:00:00Z'}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: ServerBinding
metadata:
  name: {INSTALLED_UUID}
spec:
  metalMachineRef: {{name: m0, namespace: default}}
"
    )
}

/// Boot-from-disk, each method, over HTTP against the appliance in the lab (objects applied
/// with `appliance ctl apply`); then VMs that really leave iPXE: `ipxe-exit` returns to
/// SeaBIOS, which boots the next device, and `ipxe-sanboot` boots BIOS drive 0x80; either
/// way the disk's boot sector prints its marker. No Environment is fetched.
#[test]
fn installed_server_boots_from_disk() {
    require_lab!(Needs::Bios);
    let env = test_env().expect("test env");
    let mut lab = Lab::new().expect("lab");
    lab.start_appliance(
        &ApplianceConfig::server()
            .agent_env(&env.dir)
            .boot_from_disk_method("http-404"),
    )
    .expect("appliance");
    let url = format!("/ipxe?uuid={INSTALLED_UUID}&mac=52-54-00-77-00-00&arch=x86_64");
    // Unknown: the agent.
    let (status, body) = lab.http_get(&url).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("kernel /env/agent-amd64/vmlinuz "), "{body}");

    let dir = lab.dir().to_path_buf();
    let cases: [(Option<&str>, u16, &str); 4] = [
        // No method on the Server: the config default (http-404 here).
        (None, 404, ""),
        (Some("ipxe-exit"), 200, "#!ipxe\nexit\n"),
        (Some("http-404"), 404, ""),
        (
            Some("ipxe-sanboot"),
            200,
            "#!ipxe\nsanboot --no-describe --drive 0x80\n",
        ),
    ];
    for (method, want_status, want_body) in cases {
        lab.appliance()
            .apply(&dir, &installed_server_yaml(method))
            .expect("ctl apply");
        let (status, body) = lab.http_get(&url).unwrap();
        assert_eq!(
            (status, body.as_str()),
            (want_status, want_body),
            "method {method:?}"
        );
    }

    let disk = lab.path("disk.img");
    for method in ["ipxe-exit", "ipxe-sanboot"] {
        lab.appliance()
            .apply(&dir, &installed_server_yaml(Some(method)))
            .expect("ctl apply");
        write_marker_disk(&disk).expect("disk");
        let mut vm = lab
            .start_vm(
                &VmSpec::new(Firmware::Bios)
                    .uuid(INSTALLED_UUID)
                    .disk(&disk)
                    .memory(256),
            )
            .expect("vm");
        vm.wait_for(DISK_MARKER, BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method}: {e:#}\n{}", lab.report()));
        eprintln!(
            "{method}: disk booted after {:.1}s",
            vm.elapsed().as_secs_f64()
        );
        vm.kill();
        let log = lab.appliance().log();
        assert_logged(&lab, &log, &["HTTP GET /ipxe ", "-> 200"]);
        assert_logged(
            &lab,
            &log,
            &[&format!("boot decision uuid={INSTALLED_UUID} "), "plan="],
        );
    }
    let log = lab.appliance().log();
    assert!(
        log_lines(&log, &["HTTP GET /env/"]).is_empty(),
        "an installed server fetched an Environment\n{}",
        lab.report()
    );
}
