//! End-to-end lab for the network boot path: real firmware (SeaBIOS + the iPXE option ROM,
//! OVMF's own UEFI PXE client) boots under QEMU (TCG) on a bridge inside a private network
//! namespace, against the real `appliance serve` bound to that bridge.
//!
//! The room: this crate only drives external processes (`ip`, `qemu-system-x86_64`, the
//! `appliance`, `kube-bridge` and `kube-test-apiserver` binaries, `kubectl`, `dnsmasq`, `busybox httpd`, `curl`) and reads their logs; it never
//! links appliance internals, so what it tests is exactly what an operator runs.
//!
//! - [`netns`]: a uniquely named namespace (`labqt-<pid>-<n>`) with a bridge and taps; on drop
//!   every process inside is killed and the namespace deleted. Stale namespaces of dead test
//!   processes are reaped on the next start.
//! - [`appliance`]: builds/locates the binary, writes a test config, runs `serve` in the
//!   namespace, `ctl` and HTTP helpers.
//! - [`vm`]: QEMU PXE clients (BIOS or UEFI), serial console to a file, waiting for a marker.
//! - [`env`]: the test Environment (Debian kernel + busybox initramfs that prints a marker).
//! - [`peers`]: dnsmasq (address-only DHCP for proxy mode, or a full reference PXE setup) and
//!   a static HTTP server.
//! - [`bmc`]: OpenIPMI `ipmi_sim` in the namespace whose chassis hook powers a real QEMU VM
//!   on and off (a BMC the appliance drives), and a tcpdump DHCPDISCOVER capture.
//! - [`capture`]: `tcpdump` on the lab bridge with any filter, an observer of the wire
//!   independent of the appliance.
//! - [`image`]: the flashable image booted under OVMF (appliance_image, appliance_update).
//! - [`kube`]: a management cluster in the namespace (kube-bridge's in-test API server as a
//!   process, the installed `kubectl`) and the real `kube-bridge run` (the kube_bridge test).
//! - [`lab`]: the [`Lab`] fixture tying these together; drop order tears everything down.
//!
//! Tests call [`require_lab!`] first. Without `APPLIANCE_E2E=1` they return early, printing
//! why; with it (`scripts/test` sets it as root) a missing prerequisite (root, QEMU, iPXE,
//! OVMF, a tool) fails the test, naming it ([`skip`]).

pub mod appliance;
pub mod bmc;
pub mod capture;
pub mod disk;
pub mod env;
pub mod image;
pub mod kube;
pub mod lab;
pub mod netns;
pub mod peers;
mod process;
pub mod vm;

use std::path::{Path, PathBuf};

pub use lab::Lab;
pub use vm::{Firmware, Vm, VmSpec};

/// SeaBIOS' iPXE option ROM for virtio-net (package ipxe-qemu).
pub const IPXE_ROM_DIR: &str = "/usr/lib/ipxe/qemu";
/// Debian's iPXE binaries (package ipxe), served over TFTP.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";
/// OVMF firmware (package ovmf).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF with Secure Boot (SMM build) and a vars store enrolled with Microsoft's keys, which
/// Debian's shim is signed with (package ovmf).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// Debian's signed shim and signed GRUB network image (packages shim-signed,
/// grub-efi-amd64-signed), which the box serves under `[dhcp.boot] secure_boot`.
pub const SHIM_SIGNED: &str = "/usr/lib/shim/shimx64.efi.signed";
pub const GRUB_NET_SIGNED: &str = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";

/// What a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Root, netns/tap, QEMU, the iPXE ROMs and binaries, curl.
    Bios,
    /// All of `Bios` plus OVMF.
    Uefi,
    /// All of `Uefi` plus OVMF's Secure Boot build and Debian's signed shim and GRUB.
    SecureBoot,
}

/// Environment variable that opts in to the lab tests (`scripts/test` sets it). The crate is
/// a workspace member, so `cargo test --workspace` builds it; without the variable its tests
/// skip quickly instead of booting VMs on every developer's test run.
pub const OPT_IN_VAR: &str = "APPLIANCE_E2E";

/// Whether the run opted in to the end-to-end tests (`APPLIANCE_E2E=1`).
pub fn opted_in() -> bool {
    std::env::var_os(OPT_IN_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `test` cannot run because of `reason`: when the run opted in (`APPLIANCE_E2E=1`) that is
/// a failure naming the reason; otherwise a printed skip. Return from the test after it.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !opted_in(),
        "{test}: {OPT_IN_VAR}=1 but it cannot run: {reason}"
    );
    eprintln!("SKIP {test}: {reason}");
}

/// Why this machine cannot run a lab test, or `None` when it can.
pub fn skip_reason(needs: Needs) -> Option<String> {
    if !opted_in() {
        return Some(format!(
            "end-to-end QEMU tests are opt-in: set {OPT_IN_VAR}=1 (scripts/test does)"
        ));
    }
    if !is_root() {
        return Some("not root (needs network namespaces, tap devices, udp/67 and udp/69)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing (no tap devices)".into());
    }
    for tool in ["ip", "qemu-system-x86_64", "curl", "cpio", "xz"] {
        if which(tool).is_none() {
            return Some(format!("{tool} not installed (run scripts/setup)"));
        }
    }
    for file in [
        format!("{IPXE_ROM_DIR}/efi-virtio.rom"),
        format!("{IPXE_DIR}/undionly.kpxe"),
        format!("{IPXE_DIR}/ipxe.efi"),
    ] {
        if !Path::new(&file).exists() {
            return Some(format!("{file} missing (packages ipxe, ipxe-qemu)"));
        }
    }
    if needs != Needs::Bios {
        for file in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(file).exists() {
                return Some(format!("{file} missing (package ovmf)"));
            }
        }
    }
    if needs == Needs::SecureBoot {
        for file in [
            OVMF_CODE_SECBOOT,
            OVMF_VARS_MS,
            SHIM_SIGNED,
            GRUB_NET_SIGNED,
        ] {
            if !Path::new(file).exists() {
                return Some(format!(
                    "{file} missing (packages ovmf, shim-signed, grub-efi-amd64-signed: run scripts/setup)"
                ));
            }
        }
    }
    None
}

/// Returns early from a test when the lab cannot run here: a printed skip, or under
/// `APPLIANCE_E2E=1` a failure naming what is missing (see [`skip`]).
#[macro_export]
macro_rules! require_lab {
    ($needs:expr) => {
        if let Some(reason) = $crate::skip_reason($needs) {
            $crate::skip(module_path!(), &reason);
            return;
        }
    };
}

/// Effective uid 0 (from /proc, no libc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The first executable `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests lives inside the workspace")
        .to_path_buf()
}

/// The last `max` bytes of `text`, cut at a char boundary, for failure messages.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
