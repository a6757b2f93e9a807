//! SMBIOS structure table parsing (the raw table Linux exposes at
//! `/sys/firmware/dmi/tables/DMI`): processors (type 4) and memory devices (type 17), in the
//! shape the agent reports them (Sidero `Processor` / `MemoryModule`).
//!
//! Pure and bounded: works on a byte slice, never panics on malformed input (fuzz-smoked
//! below); a table that is cut short is an error naming the offset.

use thiserror::Error;

/// One SMBIOS structure: its type, the formatted area (header included) and its strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    pub formatted: &'a [u8],
    pub strings: Vec<&'a [u8]>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DmiParseError {
    #[error("SMBIOS structure at offset {offset} is cut short (table is {len} bytes)")]
    Truncated { offset: usize, len: usize },
    #[error("SMBIOS structure at offset {offset} has length {length}, below the 4-byte header")]
    BadLength { offset: usize, length: u8 },
}

/// Splits the table into structures, stopping at the end-of-table structure (type 127) or
/// the end of the data.
pub fn parse_table(data: &[u8]) -> Result<Vec<Structure<'_>>, DmiParseError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= data.len() {
        let kind = data[off];
        let length = data[off + 1];
        if length < 4 {
            return Err(DmiParseError::BadLength {
                offset: off,
                length,
            });
        }
        let end = off + usize::from(length);
        if end > data.len() {
            return Err(DmiParseError::Truncated {
                offset: off,
                len: data.len(),
            });
        }
        let formatted = &data[off..end];
        // String set: NUL-terminated strings, ended by an empty string (so "\0\0" overall;
        // a structure without strings has just the two NULs).
        let mut strings = Vec::new();
        let mut p = end;
        loop {
            let rest = data.get(p..).unwrap_or_default();
            let Some(nul) = rest.iter().position(|b| *b == 0) else {
                return Err(DmiParseError::Truncated {
                    offset: off,
                    len: data.len(),
                });
            };
            if nul == 0 {
                // Empty string: end of the set. With no strings, a second NUL follows.
                p += 1;
                if strings.is_empty() && data.get(p) == Some(&0) {
                    p += 1;
                }
                break;
            }
            strings.push(&rest[..nul]);
            p += nul + 1;
        }
        out.push(Structure {
            kind,
            formatted,
            strings,
        });
        off = p;
        if kind == 127 {
            break;
        }
    }
    Ok(out)
}

impl Structure<'_> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.formatted.get(at).copied()
    }
    fn word(&self, at: usize) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte(at)?, self.byte(at + 1)?]))
    }
    fn dword(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte(at)?,
            self.byte(at + 1)?,
            self.byte(at + 2)?,
            self.byte(at + 3)?,
        ]))
    }
    /// The string a formatted-area byte refers to (1-based; 0 = none), trimmed, lossily
    /// decoded, control characters dropped.
    fn string(&self, at: usize) -> String {
        let Some(n) = self.byte(at).filter(|n| *n > 0) else {
            return String::new();
        };
        self.strings
            .get(usize::from(n) - 1)
            .map(|s| {
                String::from_utf8_lossy(s)
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    }
}

/// A processor socket (SMBIOS type 4) as the agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processor {
    pub manufacturer: String,
    pub product_name: String,
    pub serial_number: String,
    /// Current speed, MHz.
    pub speed: u32,
    pub core_count: u32,
    pub thread_count: u32,
}

/// A memory device (SMBIOS type 17) with a module installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryModule {
    pub manufacturer: String,
    pub product_name: String,
    pub serial_number: String,
    pub kind: String,
    /// MB.
    pub size_mb: u32,
    /// MT/s.
    pub speed: u32,
}

/// Populated processor sockets (status bit 6 set; structures too short to carry the status
/// are taken as populated).
pub fn processors(table: &[Structure<'_>]) -> Vec<Processor> {
    table
        .iter()
        .filter(|s| s.kind == 4)
        .filter(|s| s.byte(0x18).is_none_or(|st| st & 0x40 != 0))
        .map(|s| {
            // Counts of 0xFF mean "see the 16-bit field" (SMBIOS 3.0+).
            let count = |short: usize, long: usize| match s.byte(short) {
                Some(0xFF) => s.word(long).map_or(0xFF, u32::from),
                Some(n) => u32::from(n),
                None => 0,
            };
            Processor {
                manufacturer: s.string(0x07),
                product_name: s.string(0x10),
                serial_number: s.string(0x20),
                speed: s.word(0x16).map_or(0, u32::from),
                core_count: count(0x23, 0x2A),
                thread_count: count(0x25, 0x2E),
            }
        })
        .collect()
}

/// Installed memory modules (size field not 0 = empty slot, not 0xFFFF = unknown).
pub fn memory_modules(table: &[Structure<'_>]) -> Vec<MemoryModule> {
    table
        .iter()
        .filter(|s| s.kind == 17)
        .filter_map(|s| {
            let size = s.word(0x0C)?;
            let size_mb = match size {
                0 | 0xFFFF => return None,
                0x7FFF => s.dword(0x1C)? & 0x7FFF_FFFF,
                n if n & 0x8000 != 0 => u32::from(n & 0x7FFF) / 1024,
                n => u32::from(n),
            };
            Some(MemoryModule {
                manufacturer: s.string(0x17),
                product_name: s.string(0x1A),
                serial_number: s.string(0x18),
                kind: memory_type(s.byte(0x12).unwrap_or(2)).to_string(),
                size_mb,
                speed: s.word(0x15).map_or(0, u32::from),
            })
        })
        .collect()
}

/// SMBIOS memory type names (DSP0134 7.18.2).
fn memory_type(t: u8) -> &'static str {
    match t {
        0x01 => "Other",
        0x03 => "DRAM",
        0x04 => "EDRAM",
        0x05 => "VRAM",
        0x06 => "SRAM",
        0x07 => "RAM",
        0x08 => "ROM",
        0x09 => "Flash",
        0x0A => "EEPROM",
        0x0B => "FEPROM",
        0x0C => "EPROM",
        0x0D => "CDRAM",
        0x0E => "3DRAM",
        0x0F => "SDRAM",
        0x10 => "SGRAM",
        0x11 => "RDRAM",
        0x12 => "DDR",
        0x13 => "DDR2",
        0x14 => "DDR2 FB-DIMM",
        0x18 => "DDR3",
        0x19 => "FBD2",
        0x1A => "DDR4",
        0x1B => "LPDDR",
        0x1C => "LPDDR2",
        0x1D => "LPDDR3",
        0x1E => "LPDDR4",
        0x1F => "Logical non-volatile device",
        0x20 => "HBM",
        0x21 => "HBM2",
        0x22 => "DDR5",
        0x23 => "LPDDR5",
        _ => "Unknown",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a structure: formatted area (header filled in) + strings.
    pub(crate) fn structure(kind: u8, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut v = vec![kind, (body.len() + 4) as u8, 0x00, 0x01];
        v.extend_from_slice(body);
        if strings.is_empty() {
            v.extend_from_slice(&[0, 0]);
        } else {
            for s in strings {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            v.push(0);
        }
        v
    }

    /// A type 4 body (offsets 0x04..0x30) as QEMU writes it: 1 socket, `cores` cores.
    pub(crate) fn processor(cores: u8, threads: u8, populated: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x30 - 4];
        let at = |o: usize| o - 4;
        b[at(0x04)] = 1; // socket designation "CPU 0"
        b[at(0x07)] = 2; // manufacturer "QEMU"
        b[at(0x10)] = 3; // version
        b[at(0x16)..at(0x18)].copy_from_slice(&2000u16.to_le_bytes());
        b[at(0x18)] = if populated { 0x41 } else { 0x00 };
        b[at(0x23)] = cores;
        b[at(0x25)] = threads;
        structure(4, &b, &["CPU 0", "QEMU", "pc-i440fx-7.2"])
    }

    pub(crate) fn memory(size: u16, ext: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x28 - 4];
        let at = |o: usize| o - 4;
        b[at(0x0C)..at(0x0E)].copy_from_slice(&size.to_le_bytes());
        b[at(0x10)] = 1;
        b[at(0x12)] = 0x07;
        b[at(0x17)] = 2;
        b[at(0x1C)..at(0x20)].copy_from_slice(&ext.to_le_bytes());
        structure(17, &b, &["DIMM 0", "QEMU"])
    }

    pub(crate) fn qemu_like_table() -> Vec<u8> {
        let mut t = structure(0, &[1, 2, 0, 0], &["SeaBIOS", "1.16"]);
        t.extend(processor(2, 2, true));
        t.extend(processor(2, 2, false));
        t.extend(memory(1024, 0));
        t.extend(memory(0, 0)); // empty slot
        t.extend(structure(127, &[], &[]));
        t.extend([0xde, 0xad]); // garbage after the end marker is ignored
        t
    }

    #[test]
    fn parses_processors_and_memory_of_a_qemu_like_table() {
        let data = qemu_like_table();
        let table = parse_table(&data).unwrap();
        assert_eq!(table.len(), 6);
        assert_eq!(table.last().unwrap().kind, 127);
        let procs = processors(&table);
        assert_eq!(
            procs,
            vec![Processor {
                manufacturer: "QEMU".into(),
                product_name: "pc-i440fx-7.2".into(),
                serial_number: String::new(),
                speed: 2000,
                core_count: 2,
                thread_count: 2,
            }]
        );
        let mem = memory_modules(&table);
        assert_eq!(mem.len(), 1);
        assert_eq!(mem[0].size_mb, 1024);
        assert_eq!(mem[0].kind, "RAM");
        assert_eq!(mem[0].manufacturer, "QEMU");
    }

    #[test]
    fn memory_size_encodings() {
        let t = [
            memory(0x7FFF, 65536),
            memory(0x8000 | 2048, 0),
            memory(0xFFFF, 0),
        ]
        .concat();
        let table = parse_table(&t).unwrap();
        let sizes: Vec<u32> = memory_modules(&table).iter().map(|m| m.size_mb).collect();
        assert_eq!(sizes, vec![65536, 2]);
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert_eq!(
            parse_table(&[4, 2, 0, 0]),
            Err(DmiParseError::BadLength {
                offset: 0,
                length: 2
            })
        );
        assert_eq!(
            parse_table(&[4, 40, 0, 0, 1]),
            Err(DmiParseError::Truncated { offset: 0, len: 5 })
        );
        // No terminating NUL for the string set.
        assert!(matches!(
            parse_table(&[1, 4, 0, 0, b'a']),
            Err(DmiParseError::Truncated { .. })
        ));
        assert_eq!(parse_table(&[]), Ok(vec![]));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Bounded fuzz smoke: arbitrary bytes (and mutations of a valid table) never panic.
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512),
                        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
            if let Ok(t) = parse_table(&data) {
                let _ = (processors(&t), memory_modules(&t));
            }
            let mut valid = qemu_like_table();
            for (i, b) in flips {
                let n = valid.len();
                valid[i % n] = b;
            }
            if let Ok(t) = parse_table(&valid) {
                let _ = (processors(&t), memory_modules(&t));
            }
        }
    }
}
