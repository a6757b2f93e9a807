//! UEFI PXE to registration: OVMF's own PXE client (arch 7; the NIC's iPXE option ROM
//! removed, IPv6 PXE off) → the box's DHCP → TFTP `ipxe.efi` (Debian's iPXE) → iPXE's DHCP
//! → `/boot.ipxe` → `/ipxe` → the agent Environment → the agent registers. The registered
//! Server's inventory says `firmware: {kind: uefi, secureBoot: disabled}` (plain OVMF
//! enforces no Secure Boot), read by the agent from efivarfs. Prints
//! `time-to-registered: uefi-pxe …`, the UEFI PXE row of issue 17's table.
//!
//! The one VM that boots OVMF's PXE path (`pxe_boot.rs` booted it into the test Environment
//! too, a second VM for the same path): the box's own log shows the whole path — a DHCP ACK
//! from the lab pool, the TFTP transfer of `ipxe.efi`, `/boot.ipxe`, `/ipxe` with the boot
//! decision for this UUID, the Environment's kernel and initrd over HTTP — and the kernel
//! command line the guest printed holds the console, initrd, `sidero.mac` and
//! `sidero.endpoint` arguments the box rendered.

use std::time::Duration;

use qemu_tests::appliance::{ApplianceConfig, POOL};
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab};
use serde_json::json;

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const UUID: &str = "0e71b007-5eb0-4e00-8a11-0000000000e7";
const MAC: &str = "52:54:00:e7:00:01";

#[test]
fn uefi_pxe_ipxe_efi_agent_registers_as_uefi() {
    require_lab!(Needs::Uefi);
    let mut lab = Lab::with_agent(ApplianceConfig::server()).expect("lab with the agent");
    let mut spec = VmSpec::new(Firmware::Uefi)
        .uuid(UUID)
        .memory(1024)
        .no_ipv6_pxe();
    spec.mac = Some(MAC.to_string());
    let mut vm = lab.start_vm(&spec).expect("vm");

    let registered = lab
        .wait_registered(&mut vm, "uefi-pxe", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        registered.line.contains(&format!("uuid={UUID}")),
        "{}",
        registered.line
    );
    // The path: the firmware's PXE client fetched iPXE over TFTP, iPXE ran the box's script,
    // which decided this server boots the agent Environment, served over HTTP.
    let log = lab.appliance().log();
    let decision = format!("boot decision uuid={UUID} ");
    for needles in [
        &["TFTP sent", "file=ipxe.efi"][..],
        &["HTTP GET /boot.ipxe ", "-> 200"],
        &["HTTP GET /ipxe ", "-> 200"],
        &[decision.as_str(), "plan="],
        &["HTTP GET /env/agent-amd64/vmlinuz ", "-> 200"],
        &["HTTP GET /env/agent-amd64/initramfs.xz ", "-> 200"],
    ] {
        assert!(
            log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
            "no appliance log line with {needles:?}\n{}",
            lab.report()
        );
    }
    // Server mode: the box's ACK gave an address from the lab pool.
    let (first, last) = POOL;
    let in_pool = log
        .lines()
        .filter(|l| l.contains("dhcp: reply") && l.contains("Ack"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("yiaddr=")))
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .any(|a| a >= first && a <= last);
    assert!(
        in_pool,
        "no DHCP ACK from the pool {first}-{last}\n{}",
        lab.report()
    );
    // The kernel arguments the box rendered, as the guest kernel printed them.
    let serial = vm.serial();
    let cmdline = serial
        .lines()
        .find_map(|l| l.split_once("Command line: ").map(|(_, c)| c.trim_end()))
        .unwrap_or_else(|| panic!("no kernel command line on the console:\n{serial}"));
    let args: Vec<&str> = cmdline.split_whitespace().collect();
    for want in [
        "console=ttyS0",
        "initrd=initramfs.xz",
        &format!("sidero.mac={MAC}"),
        "sidero.endpoint=10.77.0.1:8081",
    ] {
        assert!(args.contains(&want), "{want} not in kernel args {args:?}");
    }
    assert!(
        serial.contains("AGENT-EFI efivarfs mounted"),
        "efivarfs not mounted in the agent initramfs:\n{serial}"
    );
    let server = lab.get("server", UUID).expect("ctl get server");
    let hw = &server["spec"]["hardware"];
    assert_eq!(
        hw["firmware"],
        json!({"kind": "uefi", "secureBoot": "disabled"}),
        "{server:#}"
    );
    assert!(
        hw["network"]["interfaces"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["mac"] == MAC)),
        "{server:#}"
    );
    lab.appliance().check_alive().expect("appliance still up");
    vm.kill();
}
