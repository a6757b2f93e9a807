//! UEFI PXE to registration: OVMF's own PXE client (arch 7; the NIC's iPXE option ROM
//! removed, IPv6 PXE off) → the box's DHCP → TFTP `ipxe.efi` (Debian's iPXE) → iPXE's DHCP
//! → `/boot.ipxe` → `/ipxe` → the agent Environment → the agent registers. The registered
//! Server's inventory says `firmware: {kind: uefi, secureBoot: disabled}` (plain OVMF
//! enforces no Secure Boot), read by the agent from efivarfs. Prints
//! `time-to-registered: uefi-pxe …`, the UEFI PXE row of issue 17's table (`pxe_boot.rs`
//! boots the same path into the test Environment, which never registers).

use std::time::Duration;

use qemu_tests::appliance::ApplianceConfig;
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
    // The path: the firmware's PXE client fetched iPXE over TFTP, iPXE ran the box's script.
    let log = lab.appliance().log();
    for needles in [
        &["TFTP sent", "file=ipxe.efi"][..],
        &["HTTP GET /boot.ipxe ", "-> 200"],
        &["HTTP GET /ipxe ", "-> 200"],
    ] {
        assert!(
            log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
            "no appliance log line with {needles:?}\n{}",
            lab.report()
        );
    }
    let serial = vm.serial();
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
