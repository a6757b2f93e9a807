//! Secure Boot end to end through Debian's signed chain: the box runs with `[dhcp.boot]
//! secure_boot = true`, so an OVMF VM's own PXE client (arch 7, NIC option ROM removed,
//! IPv6 PXE off) gets Debian's signed `shimx64.efi`; shim loads `grubx64.efi` (the signed
//! GRUB network image) from beside itself over TFTP; GRUB reads the box's `grub/grub.cfg`,
//! which sources `grub/client/x86_64/<mac>/<uuid>`, rendered by the box from the same
//! decision as `/ipxe` (the agent, its kernel args and one-boot token); GRUB loads the agent
//! Environment's kernel (Debian's signed kernel, `scripts/build-agent-initramfs`) and initrd
//! over TFTP, and the agent registers with the token.
//!
//! Two VMs, one per test: Secure Boot enforced (`OVMF_CODE_4M.secboot.fd`, a copy of
//! `OVMF_VARS_4M.ms.fd`, `-machine q35,smm=on`, secure pflash; the kernel logs "Secure boot
//! enabled") and the same chain on plain OVMF ("Secure boot disabled"). Each proves the chain
//! from the box's side too: the server's boot timeline holds the TFTP fetches of shim, GRUB,
//! `grub/grub.cfg`, the client config, kernel and initrd, and the GRUB decision. The agent
//! reads the firmware's `SecureBoot` EFI variable (efivarfs, mounted by the agent
//! initramfs): the registered Server's inventory says `firmware: {kind: uefi, secureBoot:
//! enabled}` (`disabled` in the off run), and `ctl server list` shows it.

use std::time::Duration;

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::env::agent_env;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab};

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

fn boots_through_shim_and_grub(
    firmware: Firmware,
    uuid: &str,
    mac: &str,
    kernel_says: &str,
    secure_boot: &str,
    kind: &str,
) {
    let env = agent_env().expect("agent environment");
    let mut lab = Lab::new().expect("lab");
    let mut config = ApplianceConfig::server().agent_env(&env);
    config.extra_toml = "[dhcp.boot]\nsecure_boot = true\n".into();
    lab.start_appliance(&config).expect("appliance");

    let mut spec = VmSpec::new(firmware).uuid(uuid).memory(1024).no_ipv6_pxe();
    spec.mac = Some(mac.to_string());
    let mut vm = lab.start_vm(&spec).expect("vm");

    let registered = lab
        .wait_registered(&mut vm, kind, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        registered.line.contains(&format!("uuid={uuid}")),
        "{}",
        registered.line
    );
    let serial = vm.serial();
    assert!(
        serial.contains(kernel_says),
        "the kernel did not log {kernel_says:?}:\n{serial}"
    );
    // The agent's own reading: efivarfs mounted by its /init, the variable decoded.
    assert!(
        serial.contains("AGENT-EFI efivarfs mounted"),
        "efivarfs not mounted in the agent initramfs:\n{serial}"
    );
    assert!(
        serial.contains(&format!("firmware=uefi secure_boot={secure_boot}")),
        "{serial}"
    );
    // The registered server's inventory, as the box stored it and `ctl` shows it.
    let server = lab.get("server", uuid).expect("ctl get server");
    assert_eq!(
        server["spec"]["hardware"]["firmware"],
        serde_json::json!({"kind": "uefi", "secureBoot": secure_boot}),
        "{server:#}"
    );
    let list = lab
        .appliance()
        .ctl(&["server", "list"])
        .expect("ctl server list");
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with(uuid))
        .unwrap_or_else(|| panic!("{uuid} not in\n{list}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[row.len() - 2..], ["uefi", secure_boot], "{list}");
    // GRUB ran the box's chain config (its echo names the MAC and the SMBIOS UUID it read).
    assert!(
        serial.contains(&format!("appliance: GRUB on {mac} (uuid {uuid}, x86_64)")),
        "{serial}"
    );

    let timeline = lab
        .appliance()
        .timeline_with(uuid, "registered", Duration::from_secs(10))
        .expect("ctl server timeline");
    let text = lab
        .appliance()
        .ctl(&["server", "timeline", uuid])
        .unwrap_or_default();
    let events = timeline["events"].as_array().expect("events");
    let fetched = |name: &str| {
        events.iter().any(|e| {
            e["step"] == "tftp"
                && e["outcome"] == "ok"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.trim_start_matches('/') == name)
        })
    };
    for name in [
        "shimx64.efi".to_string(),
        "grubx64.efi".to_string(),
        "grub/grub.cfg".to_string(),
        format!("grub/client/x86_64/{mac}/{uuid}"),
        "env/agent-amd64/vmlinuz".to_string(),
        "env/agent-amd64/initramfs.xz".to_string(),
    ] {
        assert!(fetched(&name), "no TFTP fetch of {name}\n{text}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["step"] == "ipxe" && e["detail"] == "grub: environment agent-amd64"),
        "no GRUB decision in the timeline\n{text}"
    );
    assert!(
        !events.iter().any(|e| e["step"] == "boot-script"),
        "iPXE ran\n{text}"
    );
    eprintln!("{text}");
    lab.appliance().check_alive().expect("appliance still up");
    vm.kill();
}

#[test]
fn secure_boot_on_shim_grub_agent_registers() {
    require_lab!(Needs::SecureBoot);
    boots_through_shim_and_grub(
        Firmware::UefiSecureBoot,
        "5eb0c0de-5ec0-4b00-8a11-0000000000a1",
        "52:54:00:5b:00:01",
        "Secure boot enabled",
        "enabled",
        "uefi-secure-boot",
    );
}

#[test]
fn secure_boot_off_same_chain_registers() {
    require_lab!(Needs::SecureBoot);
    boots_through_shim_and_grub(
        Firmware::Uefi,
        "5eb0c0de-5ec0-4b00-8a11-0000000000a2",
        "52:54:00:5b:00:02",
        "Secure boot disabled",
        "disabled",
        "uefi-shim-grub-secure-boot-off",
    );
}
