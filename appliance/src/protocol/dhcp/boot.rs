//! Which boot file a network-booting client gets, from its architecture (option 93, or the
//! `Arch:NNNNN` field of a `PXEClient:`/`HTTPClient:` vendor class) and whether it already
//! runs iPXE (user class `iPXE`, option 77, or iPXE's encapsulated option 175).
//!
//! | client | gets |
//! |---|---|
//! | BIOS PXE (arch 0) | TFTP `undionly.kpxe` |
//! | UEFI x86 PXE (6, 7, 9) | TFTP `ipxe.efi` |
//! | UEFI arm64 PXE (11) | TFTP `ipxe-arm64.efi` |
//! | UEFI x86 HTTP boot (15, 16) | `http://<box>:<port>/tftp/ipxe.efi`, vendor class `HTTPClient` |
//! | UEFI arm64 HTTP boot (19) | `http://<box>:<port>/tftp/ipxe-arm64.efi`, `HTTPClient` |
//! | already iPXE (any arch) | `http://<box>:<port>/boot.ipxe` |
//!
//! Pure: no IO; the file names and the HTTP port come from [`BootConfig`].

use std::net::Ipv4Addr;

/// Boot file names and where the box's HTTP server is. Names are relative to the TFTP root
/// (and to `/tftp/` on the HTTP server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub http_port: u16,
    pub bios: String,
    pub uefi_x64: String,
    pub uefi_arm64: String,
    /// Path of the iPXE script on the HTTP server, e.g. `/boot.ipxe`.
    pub ipxe_script: String,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            http_port: 8081,
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
            ipxe_script: "/boot.ipxe".into(),
        }
    }
}

/// What kind of network-boot client sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    BiosPxe,
    UefiX64Pxe,
    UefiArm64Pxe,
    UefiX64Http,
    UefiArm64Http,
    /// Already running iPXE: gets the HTTP script.
    Ipxe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Not a network-boot client (ordinary DHCP client).
    Plain,
    /// Network-boot client with an architecture we have no boot file for.
    Unsupported(u16),
    Boot(Firmware),
}

/// The boot information put into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// Option 60 in the reply: `PXEClient` or `HTTPClient`.
    pub vendor_class: &'static str,
    /// `siaddr` and option 66 (TFTP server) when the file is fetched over TFTP.
    pub tftp_server: Option<Ipv4Addr>,
    /// Option 67 and the `file` header field.
    pub file: String,
}

/// The arch field of a `PXEClient:Arch:00007:UNDI:003010` style vendor class.
fn arch_from_vendor_class(vc: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(vc).ok()?;
    let rest = s.split_once(":Arch:")?.1;
    rest.get(..5)?.parse().ok()
}

fn is_boot_vendor_class(vc: &[u8]) -> bool {
    vc.starts_with(b"PXEClient") || vc.starts_with(b"HTTPClient")
}

/// True when option 77 says "iPXE": either the raw string iPXE sends, or any RFC 3004
/// length-prefixed item equal to it.
fn user_class_is_ipxe(uc: &[u8]) -> bool {
    if uc == b"iPXE" {
        return true;
    }
    let mut rest = uc;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Classifies a client from the options it sent.
pub fn classify(
    arch: Option<u16>,
    vendor_class: Option<&[u8]>,
    user_class: Option<&[u8]>,
    ipxe_encap: bool,
) -> ClientKind {
    let boot_vc = vendor_class.is_some_and(is_boot_vendor_class);
    let arch = arch.or_else(|| vendor_class.and_then(arch_from_vendor_class));
    let is_ipxe = ipxe_encap || user_class.is_some_and(user_class_is_ipxe);
    if arch.is_none() && !boot_vc && !is_ipxe {
        return ClientKind::Plain;
    }
    if is_ipxe {
        return ClientKind::Boot(Firmware::Ipxe);
    }
    match arch {
        // A PXEClient without an architecture is a legacy BIOS ROM.
        None | Some(0) => ClientKind::Boot(Firmware::BiosPxe),
        Some(6 | 7 | 9) => ClientKind::Boot(Firmware::UefiX64Pxe),
        Some(11) => ClientKind::Boot(Firmware::UefiArm64Pxe),
        Some(15 | 16) => ClientKind::Boot(Firmware::UefiX64Http),
        Some(19) => ClientKind::Boot(Firmware::UefiArm64Http),
        Some(other) => ClientKind::Unsupported(other),
    }
}

/// The boot information for `firmware` served from `box_ip`. `http_client` is true when the
/// request's vendor class was `HTTPClient` (echoed back even for an iPXE script URL).
pub fn boot_info(
    firmware: Firmware,
    box_ip: Ipv4Addr,
    cfg: &BootConfig,
    http_client: bool,
) -> BootInfo {
    let http = |path: &str| {
        format!(
            "http://{box_ip}:{}/{}",
            cfg.http_port,
            path.trim_start_matches('/')
        )
    };
    let tftp = |file: &str| BootInfo {
        vendor_class: "PXEClient",
        tftp_server: Some(box_ip),
        file: file.to_string(),
    };
    let over_http = |file: &str| BootInfo {
        vendor_class: "HTTPClient",
        tftp_server: None,
        file: http(&format!("tftp/{file}")),
    };
    match firmware {
        Firmware::BiosPxe => tftp(&cfg.bios),
        Firmware::UefiX64Pxe => tftp(&cfg.uefi_x64),
        Firmware::UefiArm64Pxe => tftp(&cfg.uefi_arm64),
        Firmware::UefiX64Http => over_http(&cfg.uefi_x64),
        Firmware::UefiArm64Http => over_http(&cfg.uefi_arm64),
        Firmware::Ipxe => BootInfo {
            vendor_class: if http_client {
                "HTTPClient"
            } else {
                "PXEClient"
            },
            tftp_server: None,
            file: http(&cfg.ipxe_script),
        },
    }
}

/// True when the request's vendor class announces UEFI HTTP boot.
pub fn is_http_client(vendor_class: Option<&[u8]>) -> bool {
    vendor_class.is_some_and(|v| v.starts_with(b"HTTPClient"))
}
