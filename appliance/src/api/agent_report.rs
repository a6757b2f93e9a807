//! The agent's reports read into the model, pure: the protobuf hardware report → the typed
//! Server `spec.hardware`, the MACs it names, the UUID in canonical form, and the string and
//! list bounds every agent field is checked against (errors are gRPC `InvalidArgument`s
//! naming the field path). `api/agent.rs` calls these; the cargo-fuzz target `agent_report`
//! runs [`check_report`] on any bytes, and `cargo test` replays its corpus.

use appliance_rpc::agent::{self as pb, CreateServerRequest};
use prost::Message;
use tonic::Status;

use crate::model::{
    ComputeInformation, FirmwareInformation, FirmwareKind, HardwareInformation, MacAddr,
    MemoryInformation, MemoryModule, NetworkInformation, NetworkInterface, Processor, SecureBoot,
    StorageDevice, StorageInformation, SystemInformation,
};

/// Longest string accepted in any agent field.
pub const MAX_STR: usize = 1024;
/// Most entries accepted in any agent list.
pub const MAX_LIST: usize = 1024;

/// The MACs a hardware report names.
pub fn reported_macs(hw: &pb::HardwareInformation) -> Vec<[u8; 6]> {
    hw.network
        .as_ref()
        .map(|n| {
            n.interfaces
                .iter()
                .filter_map(|i| i.mac.parse::<MacAddr>().ok())
                .map(|m| m.0)
                .collect()
        })
        .unwrap_or_default()
}

/// A UUID in canonical form (8-4-4-4-12 hex, lower-cased), junk or not.
pub fn canonical_uuid(field: &str, s: &str) -> Result<String, Status> {
    let lower = s.trim().to_ascii_lowercase();
    let groups: Vec<&str> = lower.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(Status::invalid_argument(format!(
            "{field} `{}` is not a UUID (expected 8-4-4-4-12 hex digits)",
            s.chars().take(64).collect::<String>()
        )));
    }
    Ok(lower)
}

pub fn check_str(path: &str, s: &str) -> Result<(), Status> {
    if str_ok(s) {
        return Ok(());
    }
    if s.len() > MAX_STR {
        return Err(Status::invalid_argument(format!(
            "{path} is {} bytes, at most {MAX_STR} allowed",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{path} contains control characters"
        )));
    }
    Ok(())
}

/// Whether `s` passes [`check_str`]; the path of its error is made only for a string that
/// fails (a hardware report has ~70 strings, each path a `format!` of its own).
fn str_ok(s: &str) -> bool {
    s.len() <= MAX_STR && !s.chars().any(char::is_control)
}

/// [`check_str`] at `{prefix}.{field}`.
fn check_at(prefix: &str, field: &str, s: &str) -> Result<(), Status> {
    if str_ok(s) {
        return Ok(());
    }
    check_str(&format!("{prefix}.{field}"), s)
}

pub fn check_len(path: &str, n: usize) -> Result<(), Status> {
    if n > MAX_LIST {
        return Err(Status::invalid_argument(format!(
            "{path} has {n} entries, at most {MAX_LIST} allowed"
        )));
    }
    Ok(())
}

/// A reported string for an optional model field: checked (length, control characters) at
/// `{prefix}.{field}`, `None` when empty (Go `omitempty`, as Sidero serialises the hardware).
fn text(prefix: &str, field: &str, v: &str) -> Result<Option<String>, Status> {
    check_at(prefix, field, v)?;
    Ok((!v.is_empty()).then(|| v.to_string()))
}

/// A reported number for an optional model field: `None` when zero (Go `omitempty`).
fn num<T: PartialEq + Default>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

/// `Some` unless the part is empty: an empty part is left out, as Sidero leaves it out.
fn part<T: PartialEq + Default>(v: T) -> Option<T> {
    num(v)
}

fn storage_type(t: i32) -> &'static str {
    match pb::StorageType::try_from(t) {
        Ok(pb::StorageType::Ssd) => "SSD",
        Ok(pb::StorageType::Hdd) => "HDD",
        Ok(pb::StorageType::NvMe) => "NVMe",
        Ok(pb::StorageType::Sd) => "SD",
        _ => "Unknown",
    }
}

/// The reported firmware (extension, field 6) as `spec.hardware.firmware`: `None` when the
/// agent sent none (a Sidero agent); an unspecified or unknown kind is left out; the Secure
/// Boot state is kept as reported, `unknown` included (enum values this box does not know
/// read as `unknown`).
pub fn firmware(f: &pb::FirmwareInformation) -> FirmwareInformation {
    FirmwareInformation {
        kind: match pb::FirmwareKind::try_from(f.kind) {
            Ok(pb::FirmwareKind::Bios) => Some(FirmwareKind::Bios),
            Ok(pb::FirmwareKind::Uefi) => Some(FirmwareKind::Uefi),
            _ => None,
        },
        secure_boot: Some(match pb::SecureBootState::try_from(f.secure_boot) {
            Ok(pb::SecureBootState::Enabled) => SecureBoot::Enabled,
            Ok(pb::SecureBootState::Disabled) => SecureBoot::Disabled,
            _ => SecureBoot::Unknown,
        }),
    }
}

/// The agent's hardware report as the typed Server `spec.hardware` (v1alpha2 layout, §4.1):
/// memory/storage totals as "<N> GB", storage model/serial as productName/serialNumber,
/// interfaces without a MAC skipped, empty strings, zero numbers and empty parts left out;
/// the firmware extension as [`firmware`] reads it.
/// Every string is checked with its field path. Returns (uuid, hardware).
pub fn hardware(hw: &pb::HardwareInformation) -> Result<(String, HardwareInformation), Status> {
    let sys = hw.system.as_ref().ok_or_else(|| {
        Status::invalid_argument("hardware.system is required (it carries the SMBIOS UUID)")
    })?;
    // Junk too: the caller names such a machine by MAC + baseboard serial.
    let uuid = canonical_uuid("hardware.system.uuid", &sys.uuid)?;
    let p = "hardware.system";
    let system = SystemInformation {
        uuid: text(p, "uuid", &uuid)?,
        manufacturer: text(p, "manufacturer", &sys.manufacturer)?,
        product_name: text(p, "productName", &sys.product_name)?,
        version: text(p, "version", &sys.version)?,
        serial_number: text(p, "serialNumber", &sys.serial_number)?,
        sku_number: text(p, "skuNumber", &sys.sku_number)?,
        family: text(p, "family", &sys.family)?,
    };
    let mut out = HardwareInformation {
        system: part(system),
        ..HardwareInformation::default()
    };
    if let Some(c) = &hw.compute {
        check_len("hardware.compute.processors", c.processors.len())?;
        let p = "hardware.compute.processors[]";
        let processors = c
            .processors
            .iter()
            .map(|x| {
                Ok(Processor {
                    manufacturer: text(p, "manufacturer", &x.manufacturer)?,
                    product_name: text(p, "productName", &x.product_name)?,
                    serial_number: text(p, "serialNumber", &x.serial_number)?,
                    speed: num(x.speed),
                    core_count: num(x.core_count),
                    thread_count: num(x.thread_count),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        out.compute = part(ComputeInformation {
            total_core_count: num(c.total_core_count),
            total_thread_count: num(c.total_thread_count),
            processor_count: num(c.processor_count),
            processors,
        });
    }
    if let Some(m) = &hw.memory {
        check_len("hardware.memory.modules", m.modules.len())?;
        let p = "hardware.memory.modules[]";
        let modules = m
            .modules
            .iter()
            .map(|x| {
                Ok(MemoryModule {
                    manufacturer: text(p, "manufacturer", &x.manufacturer)?,
                    product_name: text(p, "productName", &x.product_name)?,
                    serial_number: text(p, "serialNumber", &x.serial_number)?,
                    type_: text(p, "type", &x.r#type)?,
                    size: num(x.size),
                    speed: num(x.speed),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        out.memory = part(MemoryInformation {
            total_size: num(m.total_size).map(|mb| format!("{} GB", mb / 1024)),
            module_count: num(m.module_count),
            modules,
        });
    }
    if let Some(st) = &hw.storage {
        check_len("hardware.storage.devices", st.devices.len())?;
        let p = "hardware.storage.devices[]";
        let devices = st
            .devices
            .iter()
            .map(|d| {
                Ok(StorageDevice {
                    type_: Some(storage_type(d.r#type).to_string()),
                    size: num(d.size),
                    product_name: text(p, "productName", &d.model)?,
                    serial_number: text(p, "serialNumber", &d.serial)?,
                    name: text(p, "name", &d.name)?,
                    device_name: text(p, "deviceName", &d.device_name)?,
                    uuid: text(p, "uuid", &d.uuid)?,
                    wwid: text(p, "wwid", &d.wwid)?,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        out.storage = part(StorageInformation {
            total_size: num(st.total_size).map(|b| format!("{} GB", b >> 30)),
            device_count: num(st.device_count),
            devices,
        });
    }
    if let Some(n) = &hw.network {
        check_len("hardware.network.interfaces", n.interfaces.len())?;
        let p = "hardware.network.interfaces[]";
        let mut interfaces = Vec::new();
        for i in n.interfaces.iter().filter(|i| !i.mac.is_empty()) {
            if i.addresses.len() > MAX_LIST {
                check_len(&format!("{p}.addresses"), i.addresses.len())?;
            }
            for a in &i.addresses {
                check_at(p, "addresses[]", a)?;
            }
            interfaces.push(NetworkInterface {
                index: num(i.index),
                name: text(p, "name", &i.name)?,
                flags: text(p, "flags", &i.flags)?,
                mtu: num(i.mtu),
                mac: text(p, "mac", &i.mac)?,
                addresses: i.addresses.clone(),
            });
        }
        out.network = part(NetworkInformation {
            interface_count: num(n.interface_count),
            interfaces,
        });
    }
    out.firmware = hw.firmware.as_ref().map(firmware);
    Ok((uuid, out))
}

/// The fuzz property (target `agent_report`): any bytes decoded as a CreateServer request
/// never panic the reading; a report that reads has a canonical UUID, names only MACs that
/// parse, and its typed hardware survives the JSON round trip the store does.
pub fn check_report(data: &[u8]) {
    let Ok(req) = CreateServerRequest::decode(data) else {
        return;
    };
    let Some(hw) = req.hardware.as_ref() else {
        return;
    };
    let _ = reported_macs(hw);
    let Ok((uuid, typed)) = hardware(hw) else {
        return;
    };
    assert_eq!(
        canonical_uuid("uuid", &uuid).ok().as_deref(),
        Some(uuid.as_str())
    );
    let json = serde_json::to_value(&typed).expect("typed hardware serialises");
    let again: HardwareInformation =
        serde_json::from_value(json).expect("stored hardware reads back");
    assert_eq!(again, typed, "hardware changed in the JSON round trip");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(firmware: Option<pb::FirmwareInformation>) -> pb::HardwareInformation {
        pb::HardwareInformation {
            system: Some(pb::SystemInformation {
                uuid: "5EB0C0DE-5EC0-4B00-8A11-0000000000A1".into(),
                ..Default::default()
            }),
            firmware,
            ..Default::default()
        }
    }

    fn fw(kind: pb::FirmwareKind, sb: pb::SecureBootState) -> Option<pb::FirmwareInformation> {
        Some(pb::FirmwareInformation {
            kind: kind as i32,
            secure_boot: sb as i32,
        })
    }

    #[test]
    fn firmware_extension_read_into_the_model() {
        use pb::FirmwareKind as K;
        use pb::SecureBootState as S;
        let cases = [
            (
                fw(K::Uefi, S::Enabled),
                Some((Some(FirmwareKind::Uefi), SecureBoot::Enabled)),
            ),
            (
                fw(K::Uefi, S::Disabled),
                Some((Some(FirmwareKind::Uefi), SecureBoot::Disabled)),
            ),
            (
                fw(K::Uefi, S::Unknown),
                Some((Some(FirmwareKind::Uefi), SecureBoot::Unknown)),
            ),
            (
                fw(K::Bios, S::Disabled),
                Some((Some(FirmwareKind::Bios), SecureBoot::Disabled)),
            ),
            (
                fw(K::Unspecified, S::Unknown),
                Some((None, SecureBoot::Unknown)),
            ),
            // Values from a newer agent this box does not know.
            (
                Some(pb::FirmwareInformation {
                    kind: 9,
                    secure_boot: 7,
                }),
                Some((None, SecureBoot::Unknown)),
            ),
            // A Sidero agent sends no firmware part.
            (None, None),
        ];
        for (sent, want) in cases {
            let (uuid, hw) = hardware(&report(sent)).expect("reads");
            assert_eq!(uuid, "5eb0c0de-5ec0-4b00-8a11-0000000000a1");
            let got = hw
                .firmware
                .as_ref()
                .map(|f| (f.kind, f.secure_boot.unwrap()));
            assert_eq!(got, want, "{sent:?}");
        }
    }

    #[test]
    fn firmware_in_the_stored_json_and_through_the_fuzz_property() {
        let hw = report(fw(pb::FirmwareKind::Uefi, pb::SecureBootState::Enabled));
        let (_, typed) = hardware(&hw).unwrap();
        let json = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            json["firmware"],
            serde_json::json!({"kind": "uefi", "secureBoot": "enabled"})
        );
        let bytes = CreateServerRequest {
            hardware: Some(hw),
            hostname: String::new(),
        }
        .encode_to_vec();
        check_report(&bytes);
        // The fuzz seeds carry the part: a real OVMF / SeaBIOS report with it added.
        for (seed, kind, sb) in [
            (
                &include_bytes!("../../../fuzz/seeds/agent_report/ovmf-secure-boot-enabled")[..],
                FirmwareKind::Uefi,
                SecureBoot::Enabled,
            ),
            (
                &include_bytes!("../../../fuzz/seeds/agent_report/seabios-firmware-bios")[..],
                FirmwareKind::Bios,
                SecureBoot::Disabled,
            ),
        ] {
            check_report(seed);
            let req = CreateServerRequest::decode(seed).unwrap();
            let (_, typed) = hardware(req.hardware.as_ref().unwrap()).unwrap();
            let f = typed.firmware.unwrap();
            assert_eq!((f.kind, f.secure_boot), (Some(kind), Some(sb)));
            assert!(typed.storage.is_some() && typed.network.is_some());
        }
        // A stored value the model does not know is refused, not dropped.
        let bad = serde_json::json!({"firmware": {"kind": "uefi", "secureBoot": "on"}});
        assert!(serde_json::from_value::<HardwareInformation>(bad).is_err());
    }

    /// A refused string is named by its field path (made only on failure, `check_at`).
    #[test]
    fn a_refused_string_names_its_field_path() {
        /// Puts the string into one field of a report.
        type Set = fn(&mut pb::HardwareInformation, &str);
        let long = "x".repeat(MAX_STR + 1);
        let cases: [(Set, &str); 4] = [
            (
                |hw, v| hw.system.as_mut().unwrap().family = v.into(),
                "hardware.system.family",
            ),
            (
                |hw, v| {
                    hw.memory = Some(pb::MemoryInformation {
                        modules: vec![pb::MemoryModule {
                            serial_number: v.into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                },
                "hardware.memory.modules[].serialNumber",
            ),
            (
                |hw, v| {
                    hw.storage = Some(pb::StorageInformation {
                        devices: vec![pb::StorageDevice {
                            model: v.into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                },
                "hardware.storage.devices[].productName",
            ),
            (
                |hw, v| {
                    hw.network = Some(pb::NetworkInformation {
                        interfaces: vec![pb::NetworkInterface {
                            mac: "52:54:00:12:34:56".into(),
                            addresses: vec![v.into()],
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                },
                "hardware.network.interfaces[].addresses[]",
            ),
        ];
        for (set, path) in cases {
            for (v, why) in [
                ("a\nb", format!("{path} contains control characters")),
                (&long, format!("{path} is 1025 bytes, at most 1024 allowed")),
            ] {
                let mut hw = report(None);
                set(&mut hw, v);
                let e = hardware(&hw).unwrap_err();
                assert_eq!(e.code(), tonic::Code::InvalidArgument);
                assert_eq!(e.message(), why);
            }
        }
    }
}
