//! Inventory read from fixture trees shaped like a QEMU guest's sysfs/procfs.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::agent::dmi::tests::qemu_like_table;

fn put(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

const CPUINFO_2_THREADS_1_SOCKET: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: QEMU Virtual CPU version 2.5+\ncpu MHz\t\t: 2394.454\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: QEMU Virtual CPU version 2.5+\ncpu MHz\t\t: 2394.454\nphysical id\t: 0\ncore id\t\t: 1\n\n";

/// A guest like `qemu -smp 2 -m 1024` with two virtio disks, a CD-ROM, a loop device,
/// virtio-net and lo.
fn qemu_guest(root: &Path, with_dmi_table: bool) {
    put(
        root,
        "sys/class/dmi/id/product_uuid",
        "8D3F0C2A-1B2C-4D5E-8F90-A1B2C3D4E5F6\n",
    );
    put(root, "sys/class/dmi/id/sys_vendor", "QEMU\n");
    put(
        root,
        "sys/class/dmi/id/product_name",
        "Standard PC (i440FX + PIIX, 1996)\n",
    );
    put(root, "sys/class/dmi/id/product_version", "pc-i440fx-7.2\n");
    if with_dmi_table {
        put(root, "sys/firmware/dmi/tables/DMI", qemu_like_table());
    }
    put(root, "proc/cpuinfo", CPUINFO_2_THREADS_1_SOCKET);
    put(
        root,
        "proc/meminfo",
        "MemTotal:         983472 kB\nMemFree:          900000 kB\n",
    );
    put(root, "proc/sys/kernel/hostname", "(none)\n");
    put(
        root,
        "sys/devices/system/memory/block_size_bytes",
        "8000000\n",
    );
    for i in 0..8 {
        put(
            root,
            &format!("sys/devices/system/memory/memory{i}/online"),
            "1\n",
        );
    }
    put(root, "sys/devices/system/memory/probe", "");
    for (name, sectors, rot) in [
        ("vda", 131072u64, "1"),
        ("vdb", 196608, "1"),
        ("sr0", 2097151, "1"),
        ("loop0", 100, "0"),
    ] {
        put(
            root,
            &format!("sys/block/{name}/size"),
            format!("{sectors}\n"),
        );
        put(
            root,
            &format!("sys/block/{name}/queue/rotational"),
            format!("{rot}\n"),
        );
        put(root, &format!("sys/block/{name}/ro"), "0\n");
    }
    put(root, "sys/block/vdb/serial", "data-disk-1\n");
    put(root, "sys/block/nvme0n1/size", "2048\n");
    put(root, "sys/block/nvme0n1/ro", "1\n");
    put(root, "sys/block/nvme0n1/queue/rotational", "0\n");
    put(root, "sys/block/nvme0n1/wwid", "eui.0025388b71b2a4f1\n");
    put(
        root,
        "sys/block/nvme0n1/device/model",
        "Samsung SSD 970  \n",
    );
    put(root, "sys/block/nvme0n1/device/serial", "S4EWNX0N\n");
    put(root, "sys/block/sda/size", "0\n"); // empty card reader
    put(root, "sys/class/net/eth0/address", "52:54:00:AA:BB:01\n");
    put(root, "sys/class/net/eth0/flags", "0x1003\n");
    put(root, "sys/class/net/eth0/mtu", "1500\n");
    put(root, "sys/class/net/eth0/ifindex", "2\n");
    put(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
    put(root, "sys/class/net/lo/flags", "0x9\n");
    put(root, "sys/class/net/lo/ifindex", "1\n");
}

fn addrs() -> Vec<IfAddr> {
    vec![
        ("lo".into(), "127.0.0.1".parse().unwrap(), 8),
        ("eth0".into(), "10.77.0.100".parse().unwrap(), 24),
        (
            "eth0".into(),
            "fe80::5054:ff:feaa:bb01".parse().unwrap(),
            64,
        ),
        ("eth0".into(), "fd00::100".parse().unwrap(), 64),
    ]
}

#[test]
fn qemu_guest_with_smbios_table() {
    let dir = tempfile::tempdir().unwrap();
    qemu_guest(dir.path(), true);
    let inv = read(dir.path(), &addrs()).unwrap();
    assert_eq!(inv.uuid(), "8d3f0c2a-1b2c-4d5e-8f90-a1b2c3d4e5f6");
    let hw = &inv.hardware;
    let sys = hw.system.as_ref().unwrap();
    assert_eq!(sys.manufacturer, "QEMU");
    assert_eq!(sys.version, "pc-i440fx-7.2");
    let c = hw.compute.as_ref().unwrap();
    assert_eq!(
        (c.processor_count, c.total_core_count, c.total_thread_count),
        (1, 2, 2)
    );
    assert_eq!(c.processors[0].manufacturer, "QEMU");
    let m = hw.memory.as_ref().unwrap();
    assert_eq!((m.total_size, m.module_count), (1024, 1));
    assert_eq!(inv.hostname, "");
    assert!(inv.notes.is_empty(), "{:?}", inv.notes);
}

#[test]
fn storage_devices_sizes_types_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    qemu_guest(dir.path(), true);
    let inv = read(dir.path(), &[]).unwrap();
    let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "vda", "vdb"]);
    let s = inv.hardware.storage.as_ref().unwrap();
    assert_eq!(s.device_count, 3);
    assert_eq!(s.total_size, (64 << 20) + (96 << 20) + 1024 * 1024);
    let vda = &s.devices[1];
    assert_eq!(
        (vda.size, vda.r#type, vda.device_name.as_str()),
        (64 << 20, pb::StorageType::Hdd as i32, "/dev/vda")
    );
    assert_eq!(s.devices[2].serial, "data-disk-1");
    let nvme = &inv.disks[0];
    assert_eq!(nvme.kind, pb::StorageType::NvMe);
    assert_eq!(
        (nvme.model.as_str(), nvme.serial.as_str()),
        ("Samsung SSD 970", "S4EWNX0N")
    );
    assert_eq!(nvme.wwid, "eui.0025388b71b2a4f1");
    assert!(nvme.read_only);
    assert!(!inv.disks[1].read_only);
}

/// A VPD page 0x80 as the kernel shows it in `vpd_pg80`: header, then the serial.
fn vpd_pg80(serial: &[u8]) -> Vec<u8> {
    let mut page = vec![0x00, 0x80, 0x00, u8::try_from(serial.len()).unwrap()];
    page.extend_from_slice(serial);
    page
}

/// A SATA disk behind AHCI (libata: `sda`, SCSI `device/` with VPD pages, no `serial`
/// attribute) and a SAS disk, as on a real server.
fn sata_and_sas_disks(root: &Path) {
    for (name, sectors, rot) in [("sda", 262144u64, "0"), ("sdb", 1048576, "1")] {
        put(
            root,
            &format!("sys/block/{name}/size"),
            format!("{sectors}\n"),
        );
        put(
            root,
            &format!("sys/block/{name}/queue/rotational"),
            format!("{rot}\n"),
        );
        put(root, &format!("sys/block/{name}/ro"), "0\n");
    }
    // libata: the ATA IDENTIFY serial (20 bytes, space padded) as VPD page 0x80.
    put(root, "sys/block/sda/device/model", "Samsung SSD 860\n");
    put(
        root,
        "sys/block/sda/device/vpd_pg80",
        vpd_pg80(b"S3Z9NB0K123456A     "),
    );
    put(root, "sys/block/sda/device/wwid", "naa.5002538e40a1b2c3\n");
    // A SAS disk: right-aligned serial; the page as read may run past the page length.
    put(root, "sys/block/sdb/device/model", "ST4000NM0025    \n");
    let mut page = vpd_pg80(b"    ZC1A2B3C");
    page.extend_from_slice(b"\0\0junk");
    put(root, "sys/block/sdb/device/vpd_pg80", page);
    put(root, "sys/block/sdb/device/wwid", "naa.5000c500a1b2c3d4\n");
}

#[test]
fn sata_and_sas_serials_come_from_vpd_page_0x80() {
    let dir = tempfile::tempdir().unwrap();
    qemu_guest(dir.path(), true);
    sata_and_sas_disks(dir.path());
    let inv = read(dir.path(), &[]).unwrap();
    let s = inv.hardware.storage.as_ref().unwrap();
    let got: Vec<(&str, &str, &str, &str)> = s
        .devices
        .iter()
        .map(|d| {
            (
                d.device_name.as_str(),
                d.model.as_str(),
                d.serial.as_str(),
                d.wwid.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "/dev/nvme0n1",
                "Samsung SSD 970",
                "S4EWNX0N",
                "eui.0025388b71b2a4f1"
            ),
            (
                "/dev/sda",
                "Samsung SSD 860",
                "S3Z9NB0K123456A",
                "naa.5002538e40a1b2c3"
            ),
            (
                "/dev/sdb",
                "ST4000NM0025",
                "ZC1A2B3C",
                "naa.5000c500a1b2c3d4"
            ),
            ("/dev/vda", "", "", ""),
            ("/dev/vdb", "", "data-disk-1", ""),
        ]
    );
    // A `serial` attribute, where the kernel has one, is used before the VPD page.
    put(dir.path(), "sys/block/sda/serial", "from-attribute\n");
    let inv = read(dir.path(), &[]).unwrap();
    assert_eq!(inv.disks[1].serial, "from-attribute");
}

#[test]
fn vpd_pg80_pages() {
    assert_eq!(
        vpd_pg80_serial(&vpd_pg80(b"ABC123")).as_deref(),
        Some("ABC123")
    );
    assert_eq!(
        vpd_pg80_serial(&vpd_pg80(b"\0 WD-WCC4E1234567 \0")).as_deref(),
        Some("WD-WCC4E1234567")
    );
    // Page length beyond the bytes read: what is there.
    assert_eq!(
        vpd_pg80_serial(&[0x00, 0x80, 0x00, 0x40, b'X', b'Y']).as_deref(),
        Some("XY")
    );
    // Another page, a blank serial, a short header, nothing.
    assert_eq!(vpd_pg80_serial(&[0x00, 0x83, 0x00, 0x02, b'X', b'Y']), None);
    assert_eq!(vpd_pg80_serial(&vpd_pg80(b"        ")), None);
    assert_eq!(vpd_pg80_serial(&[0x00, 0x80, 0x00]), None);
    assert_eq!(vpd_pg80_serial(&[]), None);
}

#[test]
fn network_interfaces_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    qemu_guest(dir.path(), true);
    let inv = read(dir.path(), &addrs()).unwrap();
    let n = inv.hardware.network.as_ref().unwrap();
    assert_eq!(n.interface_count, 1, "lo has no MAC: {:?}", n.interfaces);
    let eth0 = &n.interfaces[0];
    assert_eq!(
        (eth0.index, eth0.name.as_str(), eth0.mtu),
        (2, "eth0", 1500)
    );
    assert_eq!(eth0.mac, "52:54:00:aa:bb:01");
    assert_eq!(eth0.flags, "up|broadcast|multicast");
    assert_eq!(
        eth0.addresses,
        [
            "10.77.0.100/24",
            "fe80::5054:ff:feaa:bb01/64",
            "fd00::100/64"
        ]
    );
    assert_eq!(internal_ips(&addrs()), ["10.77.0.100", "fd00::100"]);
}

#[test]
fn without_smbios_table_falls_back_to_procfs_and_memory_blocks() {
    let dir = tempfile::tempdir().unwrap();
    qemu_guest(dir.path(), false);
    let inv = read(dir.path(), &[]).unwrap();
    let c = inv.hardware.compute.as_ref().unwrap();
    assert_eq!(
        (c.processor_count, c.total_core_count, c.total_thread_count),
        (1, 2, 2)
    );
    assert_eq!(
        c.processors[0].product_name,
        "QEMU Virtual CPU version 2.5+"
    );
    assert_eq!(c.processors[0].speed, 2394);
    // 8 blocks of 128 MiB.
    assert_eq!(inv.hardware.memory.as_ref().unwrap().total_size, 1024);
    assert!(!inv.notes.is_empty());
    // No memory blocks either: MemTotal.
    std::fs::remove_dir_all(dir.path().join("sys/devices/system/memory")).unwrap();
    let inv = read(dir.path(), &[]).unwrap();
    assert_eq!(inv.hardware.memory.as_ref().unwrap().total_size, 960);
}

#[test]
fn cpuinfo_topologies() {
    // Two sockets, 2 cores each, hyper-threaded.
    let mut s = String::new();
    let mut n = 0;
    for socket in 0..2 {
        for core in 0..2 {
            for _ht in 0..2 {
                s += &format!(
                    "processor\t: {n}\nvendor_id\t: GenuineIntel\nphysical id\t: {socket}\ncore id\t\t: {core}\n\n"
                );
                n += 1;
            }
        }
    }
    let p = cpuinfo_processors(&s);
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|p| p.core_count == 2 && p.thread_count == 4));
    // No topology lines at all (some non-x86 kernels): one socket, one core per CPU.
    let p = cpuinfo_processors("processor : 0\n\nprocessor : 1\n\nprocessor : 2\n");
    assert_eq!((p.len(), p[0].core_count, p[0].thread_count), (1, 3, 3));
    assert!(cpuinfo_processors("").is_empty());
}

#[test]
fn missing_or_bad_uuid_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read(dir.path(), &[]),
        Err(InventoryError::NoUuid { .. })
    ));
    put(dir.path(), "sys/class/dmi/id/product_uuid", "not-a-uuid\n");
    assert!(matches!(
        read(dir.path(), &[]),
        Err(InventoryError::BadUuid(_))
    ));
}

#[test]
fn type_and_flag_mapping() {
    assert_eq!(storage_type("nvme1n1", Some(1)), pb::StorageType::NvMe);
    assert_eq!(storage_type("mmcblk0", None), pb::StorageType::Sd);
    assert_eq!(storage_type("sda", Some(0)), pb::StorageType::Ssd);
    assert_eq!(storage_type("sdb", Some(1)), pb::StorageType::Hdd);
    assert_eq!(storage_type("sdc", None), pb::StorageType::Unknown);
    assert_eq!(flag_names(0x1043), "up|broadcast|multicast|running");
    assert_eq!(flag_names(0x9), "up|loopback");
    assert_eq!(flag_names(0), "");
    assert_eq!(meminfo_total_mb("MemTotal:  2048000 kB\n"), Some(2000));
    assert_eq!(meminfo_total_mb("garbage"), None);
    let _: IpAddr = "::1".parse().unwrap();
}

#[test]
fn secure_boot_efivar_decoding() {
    use pb::SecureBootState as S;
    // What efivarfs shows under OVMF: attributes BOOTSERVICE_ACCESS | RUNTIME_ACCESS (0x06,
    // little-endian), then the UINT8.
    assert_eq!(secure_boot_from_efivar(&[6, 0, 0, 0, 1]), S::Enabled);
    assert_eq!(secure_boot_from_efivar(&[6, 0, 0, 0, 0]), S::Disabled);
    // The attributes are not judged; the data byte is.
    assert_eq!(secure_boot_from_efivar(&[7, 0, 0, 0, 1]), S::Enabled);
    for bad in [
        &[][..],
        &[6, 0, 0, 0],
        &[1],
        &[6, 0, 0, 0, 2],
        &[6, 0, 0, 0, 0xff],
        &[6, 0, 0, 0, 1, 0],
    ] {
        assert_eq!(secure_boot_from_efivar(bad), S::Unknown, "{bad:?}");
    }
}

fn firmware_of(root: &Path) -> (pb::FirmwareKind, pb::SecureBootState, Vec<String>) {
    let inv = read(root, &[]).unwrap();
    let f = inv.hardware.firmware.expect("firmware always reported");
    (f.kind(), f.secure_boot(), inv.notes)
}

#[test]
fn firmware_kind_and_secure_boot_from_sysfs() {
    use pb::FirmwareKind as K;
    use pb::SecureBootState as S;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    qemu_guest(root, true);
    // No /sys/firmware/efi: BIOS, which has no Secure Boot.
    let (kind, sb, notes) = firmware_of(root);
    assert_eq!((kind, sb), (K::Bios, S::Disabled));
    assert!(notes.is_empty(), "{notes:?}");

    // UEFI, efivarfs not mounted (the empty mount point sysfs shows): unknown, with a note.
    std::fs::create_dir_all(root.join("sys/firmware/efi/efivars")).unwrap();
    let (kind, sb, notes) = firmware_of(root);
    assert_eq!((kind, sb), (K::Uefi, S::Unknown));
    assert!(
        notes.iter().any(|n| n.contains("efivarfs not mounted")),
        "{notes:?}"
    );

    // efivarfs mounted, but the firmware has no SecureBoot variable: disabled.
    put(
        root,
        "sys/firmware/efi/efivars/BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c",
        [7, 0, 0, 0, 1, 0],
    );
    let (kind, sb, notes) = firmware_of(root);
    assert_eq!((kind, sb), (K::Uefi, S::Disabled));
    assert!(notes.is_empty(), "{notes:?}");

    put(root, SECURE_BOOT_VAR, [6, 0, 0, 0, 1]);
    assert_eq!(firmware_of(root).1, S::Enabled);
    put(root, SECURE_BOOT_VAR, [6, 0, 0, 0, 0]);
    assert_eq!(firmware_of(root).1, S::Disabled);
    // Malformed: unknown, and the note names the variable.
    put(root, SECURE_BOOT_VAR, [6, 0, 0]);
    let (_, sb, notes) = firmware_of(root);
    assert_eq!(sb, S::Unknown);
    assert!(
        notes.iter().any(|n| n.contains("SecureBoot-8be4df61")),
        "{notes:?}"
    );
}
