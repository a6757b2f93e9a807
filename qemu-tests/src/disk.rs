//! A raw disk image whose MBR boot sector prints [`DISK_MARKER`] on COM1 and halts: proof
//! that the firmware booted the local disk (boot-from-disk tests), with no OS to install.
//!
//! The 28 bytes of 16-bit code, hand-assembled (loaded at 0x7c00):
//! ```text
//! fa            cli
//! fc            cld
//! 31 c0         xor ax, ax
//! 8e d8         mov ds, ax
//! 8e d0         mov ss, ax
//! bc 00 7c      mov sp, 0x7c00
//! be 1c 7c      mov si, msg          ; 0x7c00 + 28
//! ba f8 03      mov dx, 0x3f8        ; COM1 data register
//! ac            .loop: lodsb
//! 84 c0         test al, al
//! 74 03         jz .done
//! ee            out dx, al
//! eb f8         jmp .loop
//! f4            .done: hlt
//! eb fd         jmp .done
//! msg:          "APPLIANCE-TEST-DISK-BOOTED\r\n\0"
//! ```

use std::path::Path;

use anyhow::{Context, Result};

/// What the boot sector prints.
pub const DISK_MARKER: &str = "APPLIANCE-TEST-DISK-BOOTED";

const CODE: [u8; 28] = [
    0xfa, 0xfc, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xbe, 0x1c, 0x7c, 0xba, 0xf8,
    0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd,
];

/// The 512-byte boot sector.
pub fn boot_sector() -> [u8; 512] {
    let mut mbr = [0u8; 512];
    mbr[..CODE.len()].copy_from_slice(&CODE);
    let msg = format!("{DISK_MARKER}\r\n\0");
    mbr[CODE.len()..CODE.len() + msg.len()].copy_from_slice(msg.as_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

/// Writes a 1 MiB raw image with that boot sector to `path`.
pub fn write_marker_disk(path: &Path) -> Result<()> {
    let mut image = vec![0u8; 1 << 20];
    image[..512].copy_from_slice(&boot_sector());
    std::fs::write(path, image).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_layout() {
        let mbr = boot_sector();
        // The message starts where `mov si` points.
        let si = u16::from_le_bytes([mbr[12], mbr[13]]);
        let at = usize::from(si - 0x7c00);
        assert_eq!(&mbr[at..at + DISK_MARKER.len()], DISK_MARKER.as_bytes());
        assert_eq!(&mbr[510..], &[0x55, 0xaa]);
        // Jumps land on lodsb (offset 17) and hlt (25).
        assert_eq!(23 + 2 + i32::from(mbr[24] as i8), 17);
        assert_eq!(26 + 2 + i32::from(mbr[27] as i8), 25);
        assert_eq!(20 + 2 + i32::from(mbr[21]), 25);
    }
}
