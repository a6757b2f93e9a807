//! An ARM64 server end to end: `qemu-system-aarch64 -machine virt -cpu cortex-a57` with
//! AAVMF (TCG) and a 64 MiB data disk PXE boots from the real appliance with the box's
//! defaults — AAVMF's own UEFI PXE client (DHCP arch 11) → TFTP → the ARM64 first stage (GRUB's
//! arm64 network image from `grub-efi-arm64-bin`) → the `grub.cfg` the box renders → the
//! `agent-arm64` Environment (`scripts/build-agent-initramfs --arch arm64`: Debian's arm64
//! kernel + busybox-static + this tree's aarch64 musl `appliance`) → `appliance agent`
//! registers it with its arm64 inventory → `ctl server accept` → the agent wipes the disk
//! (first and last MiB zero, the rest untouched) → clean. Time from power-on to registered
//! printed as `time-to-registered: arm64 …`.
//!
//! Opt-in like every QEMU test; under `APPLIANCE_E2E=1` a missing prerequisite (QEMU for
//! aarch64, AAVMF, the aarch64 release binary) fails.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::env::agent_env_arm64;
use qemu_tests::image::{AAVMF_CODE, AAVMF_VARS};
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab};
use serde_json::Value;

/// TCG emulating arm64 on two shared x86 cores: firmware, GRUB over TFTP, a 32 MiB kernel.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const MIB: usize = 1 << 20;
const DISK: usize = 64 * MIB;
const UUID: &str = "a64a64a6-4a64-4a64-8a64-a64a64a64a64";

fn pattern_byte(offset: usize) -> u8 {
    ((offset / 4096) % 255) as u8 + 1
}

fn get(lab: &mut Lab, kind: &str, name: &str) -> Result<Value> {
    let out = lab.appliance().ctl(&["get", kind, name, "-o", "json"])?;
    serde_json::from_str(&out).with_context(|| format!("ctl get {kind} {name}: {out}"))
}

#[test]
fn arm64_server_pxe_boots_registers_and_is_wiped() {
    require_lab!(Needs::Uefi);
    for need in [AAVMF_CODE, AAVMF_VARS] {
        assert!(
            Path::new(need).is_file(),
            "{need} missing (package qemu-efi-aarch64)"
        );
    }
    assert!(
        qemu_tests::which("qemu-system-aarch64").is_some(),
        "qemu-system-aarch64 missing (package qemu-system-arm)"
    );
    let env = agent_env_arm64().expect("ARM64 agent environment");
    let mut lab = Lab::new().expect("lab");
    // The box's defaults for ARM64 clients: nothing ARM64-specific in this config.
    lab.start_appliance(&ApplianceConfig::server().agent_env_arm64(&env))
        .expect("appliance");
    let disk = lab.path("arm64-disk.img");
    let data: Vec<u8> = (0..DISK).map(pattern_byte).collect();
    std::fs::write(&disk, data).unwrap();
    let spec = VmSpec::new(Firmware::Aavmf)
        .uuid(UUID)
        .memory(1024)
        .data_disk(&disk);
    let mut vm = lab.start_vm(&spec).expect("vm");

    // Registration by the arm64 agent.
    let line = vm
        .wait_for("AGENT-REGISTERED", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    println!(
        "time-to-registered: arm64 {:.1} s (QEMU start → registered, TCG, emulated arm64)",
        vm.elapsed().as_secs_f64()
    );
    assert!(line.contains(&format!("uuid={UUID}")), "{line}");
    let serial = vm.serial();
    // The arm64 agent Environment ran: Debian's arm64 kernel, the box's arm64 agent files.
    let init = serial
        .lines()
        .find(|l| l.contains("AGENT-INITRAMFS kernel="))
        .unwrap_or_else(|| panic!("no agent initramfs line:\n{serial}"));
    assert!(init.contains("-arm64 "), "{init}");
    let log = lab.appliance().log();
    // The first stage: GRUB's arm64 network image, the box's default for arch 11, over TFTP.
    assert!(
        log.lines()
            .any(|l| l.contains("TFTP sent") && l.contains("file=grubaa64.efi")),
        "no grubaa64.efi sent over TFTP:\n{}",
        lab.report()
    );
    assert!(
        log.contains("/env/agent-arm64/vmlinuz") || log.contains("env/agent-arm64/vmlinuz"),
        "the box did not serve agent-arm64's kernel:\n{}",
        lab.report()
    );
    assert!(!log.contains("agent-amd64/vmlinuz"), "{}", lab.report());

    let s = get(&mut lab, "server", UUID).expect("server registered");
    let hw = &s["spec"]["hardware"];
    assert_eq!(hw["system"]["uuid"], UUID, "{s:#}");
    assert_eq!(hw["compute"]["totalCoreCount"], 1, "{s:#}");
    assert_eq!(hw["memory"]["totalSize"], "1 GB", "{s:#}");
    let devices = hw["storage"]["devices"].as_array().expect("storage");
    assert!(
        devices
            .iter()
            .any(|d| d["deviceName"] == "/dev/vda" && d["size"] == DISK as u64),
        "{s:#}"
    );
    let nics = hw["network"]["interfaces"].as_array().expect("interfaces");
    assert!(nics.iter().any(|n| n["mac"] == vm.mac()), "{s:#}");

    // Accept → wipe.
    lab.appliance()
        .ctl(&["server", "accept", UUID])
        .expect("accept");
    let wiped = vm
        .wait_for("AGENT-WIPED", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    assert!(wiped.contains("mode=fast disks=1"), "{wiped}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = get(&mut lab, "server", UUID).unwrap();
        if s["status"]["isClean"] == true {
            assert_eq!(s["spec"]["accepted"], true, "{s:#}");
            break;
        }
        assert!(Instant::now() < deadline, "never clean: {s:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let data = std::fs::read(&disk).unwrap();
    assert_eq!(data.len(), DISK);
    for r in [0..MIB, DISK - MIB..DISK] {
        if let Some(i) = data[r.clone()].iter().position(|b| *b != 0) {
            panic!("byte {} not wiped", r.start + i);
        }
    }
    if let Some(i) = (MIB..DISK - MIB).find(|&i| data[i] != pattern_byte(i)) {
        panic!("byte {i} outside the wiped ranges changed");
    }
    vm.kill();
}
