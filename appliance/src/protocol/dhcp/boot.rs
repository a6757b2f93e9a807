//! Which boot file a network-booting client gets, from its architecture (option 93, or the
//! `Arch:NNNNN` field of a `PXEClient:`/`HTTPClient:` vendor class) and whether it already
//! runs iPXE (user class `iPXE`, option 77, or iPXE's encapsulated option 175).
//!
//! | client | gets |
//! |---|---|
//! | BIOS PXE (arch 0) | TFTP `undionly.kpxe` |
//! | UEFI x64 PXE (7, and 9: RFC 4578 had 7 and 9 swapped, firmware sends either) | TFTP `ipxe.efi` (`shimx64.efi` with `[dhcp.boot] secure_boot`) |
//! | UEFI arm64 PXE (11) | TFTP `grubaa64.efi` (GRUB's arm64 network image) |
//! | UEFI x64 HTTP boot (16) | `http://<box>:<port>/tftp/ipxe.efi`, vendor class `HTTPClient` |
//! | UEFI arm64 HTTP boot (19) | `http://<box>:<port>/tftp/grubaa64.efi`, `HTTPClient` |
//! | already iPXE (any arch) | `http://<box>:<port>/boot.ipxe` |
//! | any other IANA architecture ([`arch_name`]), e.g. 32-bit x86 UEFI (6, 15), which cannot run the x64 file | no boot file: the refusal names it |
//!
//! Pure: no IO; the file names and the HTTP port come from [`BootConfig`] (the glue puts the
//! shim in `uefi_x64` under Secure Boot).

use std::net::Ipv4Addr;

/// Boot file names and where the box's HTTP server is. Names are relative to the TFTP root
/// (and to `/tftp/` on the HTTP server); `None` when there is no such file to hand out (the
/// glue leaves out a configured name that is not in the TFTP root), so those clients get a
/// refusal instead of a file that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub http_port: u16,
    pub bios: Option<String>,
    pub uefi_x64: Option<String>,
    pub uefi_arm64: Option<String>,
    /// Path of the iPXE script on the HTTP server, e.g. `/boot.ipxe`.
    pub ipxe_script: String,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            http_port: 8081,
            bios: Some("undionly.kpxe".into()),
            uefi_x64: Some("ipxe.efi".into()),
            uefi_arm64: Some("grubaa64.efi".into()),
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

/// The IANA "Processor Architecture Types" registry (DHCP option 93, RFC 4578/5970), by
/// code: what a client announcing `code` is, for logs and refusals.
pub fn arch_name(code: u16) -> &'static str {
    match code {
        0 => "x86 BIOS",
        1 => "NEC/PC98 (deprecated)",
        2 => "Itanium",
        3 => "DEC Alpha (deprecated)",
        4 => "Arc x86 (deprecated)",
        5 => "Intel Lean Client (deprecated)",
        6 => "x86 UEFI",
        7 => "x64 UEFI",
        8 => "EFI Xscale (deprecated)",
        9 => "EBC (x64 UEFI in RFC 4578's original table)",
        10 => "ARM 32-bit UEFI",
        11 => "ARM 64-bit UEFI",
        12 => "PowerPC Open Firmware",
        13 => "PowerPC ePAPR",
        14 => "POWER OPAL v3",
        15 => "x86 UEFI HTTP boot",
        16 => "x64 UEFI HTTP boot",
        17 => "EBC UEFI HTTP boot",
        18 => "ARM 32-bit UEFI HTTP boot",
        19 => "ARM 64-bit UEFI HTTP boot",
        20 => "PC/AT BIOS HTTP boot",
        21 => "ARM 32-bit U-Boot",
        22 => "ARM 64-bit U-Boot",
        23 => "ARM 32-bit U-Boot HTTP boot",
        24 => "ARM 64-bit U-Boot HTTP boot",
        25 => "RISC-V 32-bit UEFI",
        26 => "RISC-V 32-bit UEFI HTTP boot",
        27 => "RISC-V 64-bit UEFI",
        28 => "RISC-V 64-bit UEFI HTTP boot",
        29 => "RISC-V 128-bit UEFI",
        30 => "RISC-V 128-bit UEFI HTTP boot",
        31 => "s390 Basic",
        32 => "s390 Extended",
        33 => "MIPS 32-bit UEFI",
        34 => "MIPS 64-bit UEFI",
        35 => "Sunway 32-bit UEFI",
        36 => "Sunway 64-bit UEFI",
        37 => "LoongArch 32-bit UEFI",
        38 => "LoongArch 32-bit UEFI HTTP boot",
        39 => "LoongArch 64-bit UEFI",
        40 => "LoongArch 64-bit UEFI HTTP boot",
        41 => "ARM rpiboot",
        _ => "unassigned",
    }
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
        // 9 is EBC in the IANA registry, but RFC 4578's original table gave 9 to x64 UEFI
        // and firmware of that time still sends it: both get the x64 file (as dnsmasq does).
        Some(7 | 9) => ClientKind::Boot(Firmware::UefiX64Pxe),
        Some(11) => ClientKind::Boot(Firmware::UefiArm64Pxe),
        Some(16) => ClientKind::Boot(Firmware::UefiX64Http),
        Some(19) => ClientKind::Boot(Firmware::UefiArm64Http),
        Some(other) => ClientKind::Unsupported(other),
    }
}

impl Firmware {
    /// The option 93 code of this kind of client (for a refusal of one that sent none).
    pub fn arch(self) -> u16 {
        match self {
            Firmware::BiosPxe | Firmware::Ipxe => 0,
            Firmware::UefiX64Pxe => 7,
            Firmware::UefiArm64Pxe => 11,
            Firmware::UefiX64Http => 16,
            Firmware::UefiArm64Http => 19,
        }
    }
}

/// The boot information for `firmware` served from `box_ip`, or `None` when its boot file
/// is not there (see [`BootConfig`]). `http_client` is true when the request's vendor class
/// was `HTTPClient` (echoed back even for an iPXE script URL).
pub fn boot_info(
    firmware: Firmware,
    box_ip: Ipv4Addr,
    cfg: &BootConfig,
    http_client: bool,
) -> Option<BootInfo> {
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
    Some(match firmware {
        Firmware::BiosPxe => tftp(cfg.bios.as_deref()?),
        Firmware::UefiX64Pxe => tftp(cfg.uefi_x64.as_deref()?),
        Firmware::UefiArm64Pxe => tftp(cfg.uefi_arm64.as_deref()?),
        Firmware::UefiX64Http => over_http(cfg.uefi_x64.as_deref()?),
        Firmware::UefiArm64Http => over_http(cfg.uefi_arm64.as_deref()?),
        Firmware::Ipxe => BootInfo {
            vendor_class: if http_client {
                "HTTPClient"
            } else {
                "PXEClient"
            },
            tftp_server: None,
            file: http(&cfg.ipxe_script),
        },
    })
}

/// The boot file URL for `firmware` served from the IPv6 address `box_ip` (DHCPv6 option
/// 59, RFC 5970), and the vendor class to answer with (`HTTPClient` for HTTP boot, echoed as
/// option 16), or `None` when its boot file is not there. The same files as over IPv4:
/// `tftp://[box]/<file>` for PXE, `http://[box]:<port>/tftp/<file>` for HTTP boot,
/// `http://[box]:<port>/boot.ipxe` for iPXE.
pub fn boot_url_v6(
    firmware: Firmware,
    box_ip: std::net::Ipv6Addr,
    cfg: &BootConfig,
    http_client: bool,
) -> Option<(&'static str, String)> {
    let http = |path: &str| {
        format!(
            "http://[{box_ip}]:{}/{}",
            cfg.http_port,
            path.trim_start_matches('/')
        )
    };
    let tftp = |file: &str| ("PXEClient", format!("tftp://[{box_ip}]/{file}"));
    let over_http = |file: &str| ("HTTPClient", http(&format!("tftp/{file}")));
    Some(match firmware {
        Firmware::BiosPxe => tftp(cfg.bios.as_deref()?),
        Firmware::UefiX64Pxe => tftp(cfg.uefi_x64.as_deref()?),
        Firmware::UefiArm64Pxe => tftp(cfg.uefi_arm64.as_deref()?),
        Firmware::UefiX64Http => over_http(cfg.uefi_x64.as_deref()?),
        Firmware::UefiArm64Http => over_http(cfg.uefi_arm64.as_deref()?),
        Firmware::Ipxe => (
            if http_client {
                "HTTPClient"
            } else {
                "PXEClient"
            },
            http(&cfg.ipxe_script),
        ),
    })
}

/// True when the request's vendor class announces UEFI HTTP boot.
pub fn is_http_client(vendor_class: Option<&[u8]>) -> bool {
    vendor_class.is_some_and(|v| v.starts_with(b"HTTPClient"))
}
