//! The server's hardware inventory in the agent API's v1alpha2 layout, read from sysfs,
//! procfs and the raw SMBIOS table — no external tools. Every path is taken relative to a
//! root directory, so tests run on fixture trees; in the initramfs the root is `/`.
//!
//! Sources (first that works):
//! - system: `/sys/class/dmi/id/{product_uuid,sys_vendor,product_name,…}` (UUID lower-cased,
//!   as Sidero and iPXE render it; required).
//! - processors: SMBIOS type 4 from `/sys/firmware/dmi/tables/DMI` (populated sockets);
//!   else `/proc/cpuinfo` (distinct `physical id` = sockets, distinct (`physical id`,
//!   `core id`) = cores, processor entries = threads).
//! - memory: SMBIOS type 17 modules (sum of sizes); else online+offline memory blocks
//!   `/sys/devices/system/memory/memory*` × `block_size_bytes`; else `MemTotal` of
//!   `/proc/meminfo` (which is below the installed size: the kernel keeps its reservations).
//! - storage: `/sys/block/*` without loop/ram/zram/optical/floppy/device-mapper/md/nbd
//!   devices: size (`size` × 512), type (nvme* → NVMe, mmcblk* → SD, `queue/rotational` 1 →
//!   HDD, 0 → SSD), model, serial, WWID, read-only flag. The serial is the `serial`
//!   attribute (virtio-blk) or `device/serial` (NVMe), else the SCSI unit serial number,
//!   VPD page 0x80 in `device/vpd_pg80` (SATA disks behind libata, SAS disks); the WWID is
//!   `wwid` (NVMe) or the SCSI `device/wwid` (from VPD page 0x83).
//! - network: `/sys/class/net/*` with a non-zero MAC: index, MTU, MAC, flags (Go `net.Flags`
//!   names), plus the addresses the caller passes in (from getifaddrs).
//! - firmware (extension): UEFI when `/sys/firmware/efi` exists, else BIOS; the Secure Boot
//!   state from the EFI variable [`SECURE_BOOT_VAR`] in efivarfs (the agent initramfs
//!   mounts it), decoded by [`secure_boot_from_efivar`].
//!
//! Reading is best effort beyond the UUID: an unreadable source is skipped and noted in
//! [`Inventory::notes`] for the agent's log.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use appliance_rpc::agent as pb;
use thiserror::Error;

use super::dmi;

#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("cannot read the SMBIOS system UUID from {path}")]
    NoUuid {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SMBIOS system UUID `{0}` in sys/class/dmi/id/product_uuid is not a UUID")]
    BadUuid(String),
}

/// A disk as the agent sees it (reported and, when writable, wiped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    pub size: u64,
    pub kind: pb::StorageType,
    pub model: String,
    pub serial: String,
    pub wwid: String,
    pub read_only: bool,
}

impl Disk {
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// An interface address from getifaddrs: (interface name, address, prefix length).
pub type IfAddr = (String, IpAddr, u8);

/// Everything registered with the box, plus what the agent needs itself.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub hardware: pb::HardwareInformation,
    pub hostname: String,
    pub disks: Vec<Disk>,
    /// Where a source was missing or unreadable, for the log.
    pub notes: Vec<String>,
}

impl Inventory {
    pub fn uuid(&self) -> &str {
        self.hardware
            .system
            .as_ref()
            .map_or("", |s| s.uuid.as_str())
    }
}

/// Reads the inventory below `root` (`/` on a real machine).
pub fn read(root: &Path, addrs: &[IfAddr]) -> Result<Inventory, InventoryError> {
    let mut notes = Vec::new();
    let system = system(root)?;
    let table_path = root.join("sys/firmware/dmi/tables/DMI");
    let table_bytes = match std::fs::read(&table_path) {
        Ok(b) => b,
        Err(e) => {
            notes.push(format!("{}: {e}", table_path.display()));
            Vec::new()
        }
    };
    let table = match dmi::parse_table(&table_bytes) {
        Ok(t) => t,
        Err(e) => {
            notes.push(format!("{}: {e}", table_path.display()));
            Vec::new()
        }
    };
    let compute = compute(root, &table, &mut notes);
    let memory = memory(root, &table, &mut notes);
    let disks = disks(root, &mut notes);
    let storage = pb::StorageInformation {
        total_size: disks.iter().map(|d| d.size).sum(),
        device_count: disks.len() as u32,
        devices: disks
            .iter()
            .map(|d| pb::StorageDevice {
                r#type: d.kind as i32,
                size: d.size,
                model: d.model.clone(),
                serial: d.serial.clone(),
                name: d.name.clone(),
                device_name: d.dev_path(),
                uuid: String::new(),
                wwid: d.wwid.clone(),
            })
            .collect(),
    };
    let interfaces = interfaces(root, addrs, &mut notes);
    let network = pb::NetworkInformation {
        interface_count: interfaces.len() as u32,
        interfaces,
    };
    let firmware = firmware(root, &mut notes);
    let hostname = text(&root.join("proc/sys/kernel/hostname"));
    let hostname = if hostname == "(none)" {
        String::new()
    } else {
        hostname
    };
    Ok(Inventory {
        hardware: pb::HardwareInformation {
            system: Some(system),
            compute: Some(compute),
            memory: Some(memory),
            storage: Some(storage),
            network: Some(network),
            firmware: Some(firmware),
        },
        hostname,
        disks,
        notes,
    })
}

/// The EFI global variable `SecureBoot` (vendor GUID EFI_GLOBAL_VARIABLE) as efivarfs shows
/// it, relative to the root.
pub const SECURE_BOOT_VAR: &str =
    "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The Secure Boot state from the contents of the efivarfs file [`SECURE_BOOT_VAR`]: 4
/// bytes of variable attributes (little-endian) and the variable's data, one UINT8 (UEFI
/// 2.10 §3.3: 1 = the firmware enforces Secure Boot, 0 = it does not). Any other length or
/// value is `Unknown`.
pub fn secure_boot_from_efivar(bytes: &[u8]) -> pb::SecureBootState {
    match bytes {
        [_, _, _, _, 1] => pb::SecureBootState::Enabled,
        [_, _, _, _, 0] => pb::SecureBootState::Disabled,
        _ => pb::SecureBootState::Unknown,
    }
}

/// BIOS or UEFI, and under UEFI the Secure Boot state. A UEFI firmware without the
/// `SecureBoot` variable (efivarfs mounted, so it lists other variables) has no Secure Boot:
/// disabled. When efivarfs is not mounted or the variable cannot be read, the state is
/// unknown and a note says why.
fn firmware(root: &Path, notes: &mut Vec<String>) -> pb::FirmwareInformation {
    if !root.join("sys/firmware/efi").is_dir() {
        return pb::FirmwareInformation {
            kind: pb::FirmwareKind::Bios as i32,
            secure_boot: pb::SecureBootState::Disabled as i32,
        };
    }
    let var = root.join(SECURE_BOOT_VAR);
    let state = match std::fs::read(&var) {
        Ok(bytes) => {
            let state = secure_boot_from_efivar(&bytes);
            if state == pb::SecureBootState::Unknown {
                notes.push(format!(
                    "{}: {} bytes, not 4 attribute bytes + 0 or 1",
                    var.display(),
                    bytes.len()
                ));
            }
            state
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let efivars = root.join("sys/firmware/efi/efivars");
            let mounted = std::fs::read_dir(&efivars).is_ok_and(|mut d| d.next().is_some());
            if mounted {
                pb::SecureBootState::Disabled
            } else {
                notes.push(format!(
                    "{} is empty or missing (efivarfs not mounted): Secure Boot unknown",
                    efivars.display()
                ));
                pb::SecureBootState::Unknown
            }
        }
        Err(e) => {
            notes.push(format!("{}: {e}", var.display()));
            pb::SecureBootState::Unknown
        }
    };
    pb::FirmwareInformation {
        kind: pb::FirmwareKind::Uefi as i32,
        secure_boot: state as i32,
    }
}

/// Trimmed file contents; empty when missing or unreadable. Control characters dropped.
fn text(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .chars()
                .filter(|c| !c.is_control() || *c == '\n')
                .collect::<String>()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn number(path: &Path) -> Option<u64> {
    text(path).parse().ok()
}

fn system(root: &Path) -> Result<pb::SystemInformation, InventoryError> {
    let id = root.join("sys/class/dmi/id");
    let uuid_path = id.join("product_uuid");
    let uuid = std::fs::read_to_string(&uuid_path)
        .map_err(|source| InventoryError::NoUuid {
            path: uuid_path,
            source,
        })?
        .trim()
        .to_ascii_lowercase();
    let groups: Vec<&str> = uuid.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(InventoryError::BadUuid(uuid.chars().take(64).collect()));
    }
    Ok(pb::SystemInformation {
        uuid,
        manufacturer: text(&id.join("sys_vendor")),
        product_name: text(&id.join("product_name")),
        version: text(&id.join("product_version")),
        serial_number: text(&id.join("product_serial")),
        sku_number: text(&id.join("product_sku")),
        family: text(&id.join("product_family")),
        baseboard_serial: text(&id.join("board_serial")),
    })
}

fn compute(
    root: &Path,
    table: &[dmi::Structure<'_>],
    notes: &mut Vec<String>,
) -> pb::ComputeInformation {
    let mut procs: Vec<pb::Processor> = dmi::processors(table)
        .into_iter()
        .map(|p| pb::Processor {
            manufacturer: p.manufacturer,
            product_name: p.product_name,
            serial_number: p.serial_number,
            speed: p.speed,
            core_count: p.core_count,
            thread_count: p.thread_count,
        })
        .collect();
    if procs.is_empty() || procs.iter().all(|p| p.core_count == 0) {
        notes.push("no SMBIOS processors: counting from /proc/cpuinfo".into());
        procs = cpuinfo_processors(&text(&root.join("proc/cpuinfo")));
    }
    pb::ComputeInformation {
        total_core_count: procs.iter().map(|p| p.core_count).sum(),
        total_thread_count: procs.iter().map(|p| p.thread_count).sum(),
        processor_count: procs.len() as u32,
        processors: procs,
    }
}

/// Sockets from /proc/cpuinfo (x86 layout: blank-line separated `key\t: value` blocks).
pub fn cpuinfo_processors(cpuinfo: &str) -> Vec<pb::Processor> {
    struct Entry {
        socket: String,
        core: String,
        vendor: String,
        model: String,
        mhz: u32,
    }
    let mut entries = Vec::new();
    for block in cpuinfo.split("\n\n") {
        let mut e = Entry {
            socket: "0".into(),
            core: String::new(),
            vendor: String::new(),
            model: String::new(),
            mhz: 0,
        };
        let mut is_cpu = false;
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "processor" => is_cpu = true,
                "physical id" => e.socket = v.to_string(),
                "core id" => e.core = v.to_string(),
                "vendor_id" => e.vendor = v.to_string(),
                "model name" => e.model = v.to_string(),
                "cpu MHz" => e.mhz = v.parse::<f64>().map_or(0, |m| m as u32),
                _ => {}
            }
        }
        if is_cpu {
            if e.core.is_empty() {
                // No topology: every logical CPU is its own core.
                e.core = format!("t{}", entries.len());
            }
            entries.push(e);
        }
    }
    let sockets: BTreeSet<&str> = entries.iter().map(|e| e.socket.as_str()).collect();
    sockets
        .into_iter()
        .map(|s| {
            let mine: Vec<&Entry> = entries.iter().filter(|e| e.socket == s).collect();
            let cores: BTreeSet<&str> = mine.iter().map(|e| e.core.as_str()).collect();
            pb::Processor {
                manufacturer: mine[0].vendor.clone(),
                product_name: mine[0].model.clone(),
                serial_number: String::new(),
                speed: mine[0].mhz,
                core_count: cores.len() as u32,
                thread_count: mine.len() as u32,
            }
        })
        .collect()
}

fn memory(
    root: &Path,
    table: &[dmi::Structure<'_>],
    notes: &mut Vec<String>,
) -> pb::MemoryInformation {
    let modules: Vec<pb::MemoryModule> = dmi::memory_modules(table)
        .into_iter()
        .map(|m| pb::MemoryModule {
            manufacturer: m.manufacturer,
            product_name: m.product_name,
            serial_number: m.serial_number,
            r#type: m.kind,
            size: m.size_mb,
            speed: m.speed,
        })
        .collect();
    let mut total: u32 = modules.iter().map(|m| m.size).fold(0, u32::saturating_add);
    if total == 0 {
        total = memory_blocks_mb(root).unwrap_or_else(|| {
            notes.push("no SMBIOS memory modules or memory blocks: using MemTotal".into());
            meminfo_total_mb(&text(&root.join("proc/meminfo"))).unwrap_or(0)
        });
    }
    pb::MemoryInformation {
        total_size: total,
        module_count: modules.len() as u32,
        modules,
    }
}

/// Installed memory from the memory-block devices (hot-plug granularity), MB.
fn memory_blocks_mb(root: &Path) -> Option<u32> {
    let dir = root.join("sys/devices/system/memory");
    let block = u64::from_str_radix(
        text(&dir.join("block_size_bytes")).trim_start_matches("0x"),
        16,
    )
    .ok()?;
    let n = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("memory")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u64;
    let mb = (block * n) >> 20;
    (mb > 0).then(|| u32::try_from(mb).unwrap_or(u32::MAX))
}

/// `MemTotal` of /proc/meminfo in MB.
pub fn meminfo_total_mb(meminfo: &str) -> Option<u32> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    u32::try_from(kb / 1024).ok()
}

/// Kernel block devices that are not disks of the server.
fn ignored_block_device(name: &str) -> bool {
    ["loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Storage type from the kernel name and `queue/rotational`.
pub fn storage_type(name: &str, rotational: Option<u64>) -> pb::StorageType {
    if name.starts_with("nvme") {
        pb::StorageType::NvMe
    } else if name.starts_with("mmcblk") {
        pb::StorageType::Sd
    } else {
        match rotational {
            Some(1) => pb::StorageType::Hdd,
            Some(0) => pb::StorageType::Ssd,
            _ => pb::StorageType::Unknown,
        }
    }
}

fn disks(root: &Path, notes: &mut Vec<String>) -> Vec<Disk> {
    let dir = root.join("sys/block");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !ignored_block_device(n))
            .collect(),
        Err(e) => {
            notes.push(format!("{}: {e}", dir.display()));
            Vec::new()
        }
    };
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let d = dir.join(&name);
            let size = number(&d.join("size"))? * 512;
            if size == 0 {
                return None;
            }
            let first = |files: &[&str]| {
                files
                    .iter()
                    .map(|f| text(&d.join(f)))
                    .find(|s| !s.is_empty())
                    .unwrap_or_default()
            };
            let mut serial = first(&["serial", "device/serial"]);
            if serial.is_empty() {
                serial = std::fs::read(d.join("device/vpd_pg80"))
                    .ok()
                    .and_then(|page| vpd_pg80_serial(&page))
                    .unwrap_or_default();
            }
            Some(Disk {
                kind: storage_type(&name, number(&d.join("queue/rotational"))),
                size,
                model: first(&["device/model"]),
                serial,
                wwid: first(&["wwid", "device/wwid"]),
                read_only: number(&d.join("ro")) == Some(1),
                name,
            })
        })
        .collect()
}

/// The unit serial number in a SCSI VPD page 0x80 as sysfs exposes it (`vpd_pg80`, the page
/// as the device returned it): a 4-byte header (peripheral byte, page code 0x80, page
/// length big-endian) and the serial, which libata (from the ATA IDENTIFY serial) and
/// many SAS disks pad with spaces. Spaces, NULs and other non-printable bytes around or
/// inside it are dropped; `None` for another page or an empty serial.
pub fn vpd_pg80_serial(page: &[u8]) -> Option<String> {
    let (head, rest) = page.split_first_chunk::<4>()?;
    if head[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]])).min(rest.len());
    let serial: String = rest[..len]
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| char::from(b))
        .collect();
    let serial = serial.trim();
    (!serial.is_empty()).then(|| serial.to_string())
}

/// Go `net.Flags` names for the IFF_* bits of /sys/class/net/<if>/flags.
pub fn flag_names(flags: u32) -> String {
    const NAMES: [(u32, &str); 5] = [
        (0x1, "up"),
        (0x2, "broadcast"),
        (0x8, "loopback"),
        (0x10, "pointtopoint"),
        (0x1000, "multicast"),
    ];
    let mut out: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if flags & 0x40 != 0 {
        out.push("running");
    }
    out.join("|")
}

fn interfaces(root: &Path, addrs: &[IfAddr], notes: &mut Vec<String>) -> Vec<pb::NetworkInterface> {
    let dir = root.join("sys/class/net");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            notes.push(format!("{}: {e}", dir.display()));
            Vec::new()
        }
    };
    names.sort();
    let mut out: Vec<pb::NetworkInterface> = names
        .into_iter()
        .filter_map(|name| {
            let d = dir.join(&name);
            let mac = text(&d.join("address")).to_ascii_lowercase();
            if mac.is_empty() || mac.bytes().all(|b| b == b'0' || b == b':') {
                return None;
            }
            let flags = u32::from_str_radix(text(&d.join("flags")).trim_start_matches("0x"), 16)
                .unwrap_or(0);
            Some(pb::NetworkInterface {
                index: number(&d.join("ifindex")).unwrap_or(0) as u32,
                flags: flag_names(flags),
                mtu: number(&d.join("mtu")).unwrap_or(0) as u32,
                mac,
                addresses: addrs
                    .iter()
                    .filter(|(n, _, _)| *n == name)
                    .map(|(_, ip, prefix)| format!("{ip}/{prefix}"))
                    .collect(),
                name,
            })
        })
        .collect();
    out.sort_by_key(|i| i.index);
    out
}

/// Addresses to report to ReconcileServerAddresses: global unicast, not link-local, not
/// loopback (as Sidero's agent does), as type `InternalIP`.
pub fn internal_ips(addrs: &[IfAddr]) -> Vec<String> {
    let mut out: Vec<String> = addrs
        .iter()
        .filter(|(_, ip, _)| match ip {
            IpAddr::V4(v4) => {
                !(v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast())
            }
            IpAddr::V6(v6) => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80)
            }
        })
        .map(|(_, ip, _)| ip.to_string())
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
