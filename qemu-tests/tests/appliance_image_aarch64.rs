//! The arm64 image (`scripts/build-image aarch64` → `images/appliance-aarch64.img`, its root
//! extracted from Debian's arm64 packages without running their maintainer scripts) booted
//! under `qemu-system-aarch64` (virt, cortex-a57, TCG: an emulated foreign CPU, so slow)
//! with AAVMF: systemd-boot → slot A → `appliance serve` answers `/healthz` and `/readyz`,
//! the first-boot token banner shows on the serial console (ttyAMA0) and logs in, and
//! `/api/v1/system` says slot A with the image's version. Time to `/healthz` printed as
//! `IMAGE-BOOT-AARCH64`.
//!
//! Opt-in like every QEMU test; under `APPLIANCE_E2E=1` a missing image, QEMU or AAVMF
//! fails.

use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::image::{AAVMF_CODE, Arch, ImageVm, run, tail, token_from_console};
use qemu_tests::{Needs, require_lab, workspace_root};

/// Emulating arm64 on x86 with TCG: /healthz came after 245 s here with the machine at load
/// 22 (two cores shared by several builds); allow a little over three times that.
const BOOT_TIMEOUT: Duration = Duration::from_secs(800);

#[test]
fn aarch64_image_boots_and_serves() {
    require_lab!(Needs::Uefi);
    let image = workspace_root().join("images/appliance-aarch64.img");
    assert!(
        image.is_file(),
        "{} missing: run scripts/build-image aarch64",
        image.display()
    );
    for need in [AAVMF_CODE, Arch::Aarch64.vars_template()] {
        assert!(
            std::path::Path::new(need).is_file(),
            "{need} missing (package qemu-efi-aarch64)"
        );
    }
    assert!(
        qemu_tests::which("qemu-system-aarch64").is_some(),
        "qemu-system-aarch64 missing (package qemu-system-arm)"
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let vars = dir.path().join("vars.fd");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&disk));
    run(Command::new("truncate").arg("--size=2G").arg(&disk));
    std::fs::copy(Arch::Aarch64.vars_template(), &vars).unwrap();

    let mut vm = ImageVm::start_arch(Arch::Aarch64, dir.path(), &disk, &vars, 1);
    let secs = vm.wait_healthy_within(BOOT_TIMEOUT);
    println!("IMAGE-BOOT-AARCH64 first boot: /healthz after {secs:.1} s (TCG, emulated arm64)");
    let deadline = Instant::now() + Duration::from_secs(300);
    while vm.curl(&[&vm.url("/readyz")]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz never 200\n{}",
            tail(&vm.serial())
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let serial = vm.serial();
    let token = token_from_console(&serial)
        .unwrap_or_else(|| panic!("no admin token banner on ttyAMA0\n{}", tail(&serial)));
    let jar = dir.path().join("cookies");
    let (code, body) = vm.curl(&[
        "-c",
        jar.to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data",
        &format!("{{\"secret\":\"{token}\"}}"),
        &vm.url("/api/v1/login"),
    ]);
    assert_eq!(code, 200, "login: {body}");
    let (code, body) = vm.curl(&["-b", jar.to_str().unwrap(), &vm.url("/api/v1/system")]);
    assert_eq!(code, 200, "{body}");
    let sys: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sys["slot"], "A", "{sys}");
    assert_eq!(sys["updates"], true, "{sys}");
    assert!(sys["image_version"].is_string(), "{sys}");
    vm.power_off();
}
