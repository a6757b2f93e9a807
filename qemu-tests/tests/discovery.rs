//! Discovery end to end: a VM (`-smp 2 -m 1024`, two virtio disks and a SATA disk on AHCI
//! with a serial number and WWN, all filled with a known pattern) PXE-boots from the real appliance (SeaBIOS + iPXE ROM → the appliance's DHCP →
//! /boot.ipxe → /ipxe → the agent environment built by `scripts/build-agent-initramfs` with
//! the `appliance` binary of this tree) → `appliance agent` registers it over gRPC →
//! `appliance ctl get server` shows its hardware and the agent's pinned key (the agent used
//! the boot token from /ipxe; every later call is signed) → `ctl server accept` → the agent is told to
//! wipe (fast) → the disk images have their first and last MiB zeroed and the middle
//! untouched → the server is clean and available in class `any` and in a class qualifying
//! on its core count (and not in one asking for 64 cores), and in one qualifying on its
//! reported firmware (`firmware: {kind: bios}`; not in one asking for Secure Boot).
//! Prints `time-to-registered: bios …` (SeaBIOS + the iPXE ROM).

use std::path::Path;
use std::time::Duration;

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab};
use serde_json::Value;

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;
const UUID: &str = "4d1c0a3e-7b52-4f6e-9a10-5e6f7a8b9c0d";
/// The SATA disk's ATA serial number and WWN (the agent reads them from SCSI VPD pages
/// 0x80 and 0x83 in sysfs).
const SATA_SERIAL: &str = "SATA-SN-0042";
const SATA_WWN: u64 = 0x5000_c500_a1b2_c3d4;

/// The byte the pattern has at `offset` (never zero; changes every 4 KiB).
fn pattern_byte(offset: usize) -> u8 {
    ((offset / 4096) % 255) as u8 + 1
}

fn write_pattern_disk(path: &Path, size: usize) {
    let data: Vec<u8> = (0..size).map(pattern_byte).collect();
    std::fs::write(path, data).unwrap();
}

fn available(class: &Value) -> Vec<String> {
    class["status"]["serversAvailable"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pxe_agent_registers_is_accepted_wiped_and_available() {
    require_lab!(Needs::Bios);
    let mut lab = Lab::with_agent(ApplianceConfig::server()).expect("lab with the agent");

    let disks = [
        (lab.path("disk0.img"), 64 * MIB),
        (lab.path("disk1.img"), 96 * MIB),
        (lab.path("sata0.img"), 32 * MIB),
    ];
    for (p, size) in &disks {
        write_pattern_disk(p, *size);
    }
    let mut spec = VmSpec::new(Firmware::Bios).uuid(UUID).memory(1024).smp(2);
    for (p, _) in &disks[..2] {
        spec = spec.data_disk(p);
    }
    spec = spec.sata_disk(&disks[2].0, SATA_SERIAL, SATA_WWN);
    let mut vm = lab.start_vm(&spec).expect("vm");

    // Registration.
    let line = lab
        .wait_registered(&mut vm, "bios", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .line;
    assert!(line.contains(&format!("uuid={UUID}")), "{line}");
    let s = lab.get("server", UUID).expect("server registered");
    // Authenticated first contact (the box's default): the agent came with the boot token
    // /ipxe put on its command line, and the box pinned the key this boot's agent made.
    let key = s["metadata"]["annotations"]["appliance.sidero.dev/agent-key"]
        .as_str()
        .unwrap_or_else(|| panic!("no agent key pinned: {s:#}"))
        .to_string();
    assert!(
        vm.serial().contains(&format!(
            "agent key {key} generated for this boot; boot token present"
        )),
        "{}",
        vm.serial()
    );
    let hw = &s["spec"]["hardware"];
    assert_eq!(hw["system"]["uuid"], UUID, "{s:#}");
    assert_eq!(hw["compute"]["totalCoreCount"], 2, "{s:#}");
    assert_eq!(hw["compute"]["totalThreadCount"], 2, "{s:#}");
    assert_eq!(hw["memory"]["totalSize"], "1 GB", "{s:#}");
    let devices = hw["storage"]["devices"]
        .as_array()
        .expect("storage devices");
    let sizes: Vec<(String, u64)> = devices
        .iter()
        .map(|d| {
            (
                d["deviceName"].as_str().unwrap_or_default().to_string(),
                d["size"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("/dev/sda".to_string(), (32 * MIB) as u64),
            ("/dev/vda".to_string(), (64 * MIB) as u64),
            ("/dev/vdb".to_string(), (96 * MIB) as u64)
        ],
        "{s:#}"
    );
    assert_eq!(devices[2]["serialNumber"], "data1", "{s:#}");
    // The SATA disk: serial from VPD page 0x80, WWID from page 0x83 (the NAA WWN).
    assert_eq!(devices[0]["serialNumber"], SATA_SERIAL, "{s:#}");
    assert_eq!(devices[0]["productName"], "QEMU HARDDISK", "{s:#}");
    assert_eq!(devices[0]["wwid"], format!("naa.{SATA_WWN:x}"), "{s:#}");
    // SeaBIOS: no /sys/firmware/efi, so BIOS, which has no Secure Boot.
    assert_eq!(
        hw["firmware"],
        serde_json::json!({"kind": "bios", "secureBoot": "disabled"}),
        "{s:#}"
    );
    let nics = hw["network"]["interfaces"].as_array().expect("interfaces");
    assert!(
        nics.iter().any(|n| n["mac"] == vm.mac()),
        "PXE NIC {} not in {nics:?}",
        vm.mac()
    );
    assert_ne!(s["spec"]["accepted"], true, "not accepted yet: {s:#}");
    // Not accepted: nothing is wiped.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !vm.serial().contains("AGENT-WIPE-START"),
        "wiped before accept"
    );

    // Classes: `any` plus one qualifying on the core count and one on the firmware, and
    // two that do not match.
    let dir = lab.dir().to_path_buf();
    lab.appliance()
        .apply(
            &dir,
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: two-cores\nspec:\n  qualifiers:\n    hardware:\n    - compute:\n        totalCoreCount: 2\n---\napiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: many-cores\nspec:\n  qualifiers:\n    hardware:\n    - compute:\n        totalCoreCount: 64\n---\napiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: bios\nspec:\n  qualifiers:\n    hardware:\n    - firmware:\n        kind: bios\n---\napiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: secure-boot\nspec:\n  qualifiers:\n    hardware:\n    - firmware:\n        secureBoot: enabled\n",
        )
        .expect("apply classes");

    // Accept → wipe.
    lab.appliance()
        .ctl(&["server", "accept", UUID])
        .expect("accept");
    let wiped = vm
        .wait_for("AGENT-WIPED", Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    eprintln!("{wiped}");
    assert!(wiped.contains("mode=fast disks=3"), "{wiped}");

    let s = lab
        .wait_until("server", UUID, Duration::from_secs(30), "clean", |s| {
            s["status"]["isClean"] == true
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(s["spec"]["accepted"], true, "{s:#}");

    // The disk images: first and last MiB zero, everything between untouched.
    for (p, size) in &disks {
        let data = std::fs::read(p).unwrap();
        assert_eq!(data.len(), *size, "{} changed size", p.display());
        let zero_ranges = [0..MIB, size - MIB..*size];
        for r in zero_ranges {
            if let Some(i) = data[r.clone()].iter().position(|b| *b != 0) {
                panic!("{}: byte {} not wiped", p.display(), r.start + i);
            }
        }
        if let Some(i) = (MIB..size - MIB).find(|&i| data[i] != pattern_byte(i)) {
            panic!("{}: byte {i} outside the wiped ranges changed", p.display());
        }
    }

    // Available: in `any`, `two-cores` and `bios`, not in `many-cores` or `secure-boot`.
    for class in ["any", "two-cores", "bios"] {
        lab.wait_until(
            "serverclass",
            class,
            Duration::from_secs(30),
            "server available",
            |c| available(c).contains(&UUID.to_string()),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    for class in ["many-cores", "secure-boot"] {
        let c = lab.get("serverclass", class).unwrap();
        assert!(available(&c).is_empty(), "{c:#}");
    }
    // Auto BMC setup is on (the default), so the accepted server's agent is asked for its
    // BMC; this VM has none: one log line, no report, no condition, the agent carries on.
    assert!(
        vm.serial().contains("AGENT-IPMI none"),
        "ipmi_si should find no BMC here:\n{}",
        vm.serial()
    );
    vm.wait_for(
        "no in-band BMC (/dev/ipmi0 absent): skipped",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    assert!(!vm.serial().contains("AGENT-BMC-"), "{}", vm.serial());
    let s = lab.get("server", UUID).unwrap();
    assert!(s["spec"]["bmc"].is_null(), "{s:#}");
    // The agent stays up waiting for an allocation (no BMC to power it on again).
    assert!(
        !vm.serial().contains("AGENT-EXIT"),
        "agent stopped:\n{}",
        vm.serial()
    );
    lab.appliance().check_alive().expect("appliance still up");
    vm.kill();
}
