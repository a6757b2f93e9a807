//! Server (`metal.sidero.dev/v1alpha2`): one physical machine, named by its SMBIOS UUID.
//!
//! Field names, types and `omitempty` behaviour follow Sidero's
//! `app/sidero-controller-manager/api/v1alpha2/server_types.go`. Scalars the user did not
//! write stay `None` and are not printed back; `accepted` and the three status booleans are
//! always printed, as Sidero does. Also defines the hardware inventory shape that ServerClass
//! qualifiers reuse, and the config-patch shape shared with ServerClass.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::meta::{Address, Condition, ObjectReference, Resource, empty_as_none};
use super::validate::join;
use super::validate::{Check, FieldError};

pub type Server = Resource<ServerSpec, ServerStatus>;

impl ServerSpec {
    /// The MACs of the server's NICs in its hardware inventory (unparsable ones skipped).
    pub fn nic_macs(&self) -> Vec<super::mac::MacAddr> {
        self.hardware
            .as_ref()
            .and_then(|h| h.network.as_ref())
            .map(|n| {
                n.interfaces
                    .iter()
                    .filter_map(|i| i.mac.as_deref()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSpec {
    /// Environment to boot; falls back to the ServerClass's, then `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<ObjectReference>,
    /// Inventory reported by the agent at first registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Bmc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_api: Option<ManagementApi>,
    /// RFC 6902 patches applied to the generated Talos machine config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<ConfigPatch>,
    /// Talos strategic-merge patch documents (YAML text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategic_patches: Vec<String>,
    /// Always serialised, as Sidero does. Unaccepted servers are never wiped or powered.
    #[serde(default)]
    pub accepted: bool,
    /// Excluded from every ServerClass while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pxe_boot_always: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub boot_from_disk_method: Option<BootFromDiskMethod>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub pxe_mode: Option<PxeMode>,
}

impl Check for ServerSpec {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.hardware.check_field(path, "hardware")?;
        self.bmc.check_field(path, "bmc")?;
        self.management_api.check_field(path, "managementApi")?;
        self.config_patches.check_field(path, "configPatches")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerStatus {
    /// Accepted and in use. Always serialised.
    #[serde(default)]
    pub ready: bool,
    /// Bound to a MetalMachine. Always serialised.
    #[serde(default)]
    pub in_use: bool,
    /// Disks wiped since last use. Always serialised.
    #[serde(default)]
    pub is_clean: bool,
    /// `PowerCycle`, `PXEBooted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub power: Option<PowerState>,
    /// Lifecycle phase (appliance extension, kept consistent with the flags above):
    /// discovered, accepted, wiping, available, allocated, booting, installed, released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl Check for ServerStatus {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.conditions.check_field(path, "conditions")?;
        self.addresses.check_field(path, "addresses")
    }
}

/// How an installed server leaves the PXE path (Sidero `bootFromDiskMethod`; also the
/// config's `[boot] boot_from_disk_method`). The one definition: the iPXE core renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootFromDiskMethod {
    /// `#!ipxe exit`: back to the firmware boot order.
    #[serde(rename = "ipxe-exit")]
    IpxeExit,
    /// HTTP 404: the chain fails and firmware moves to the next device.
    #[serde(rename = "http-404")]
    Http404,
    /// `sanboot --no-describe --drive 0x80`: the first BIOS disk.
    #[serde(rename = "ipxe-sanboot")]
    IpxeSanboot,
}

impl BootFromDiskMethod {
    pub const ALL: [BootFromDiskMethod; 3] = [
        BootFromDiskMethod::IpxeExit,
        BootFromDiskMethod::Http404,
        BootFromDiskMethod::IpxeSanboot,
    ];

    /// Parses `ipxe-exit` | `http-404` | `ipxe-sanboot`; anything else is `None`.
    pub fn parse(s: &str) -> Option<BootFromDiskMethod> {
        BootFromDiskMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// The spelling used in Server/ServerClass specs and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BootFromDiskMethod::IpxeExit => "ipxe-exit",
            BootFromDiskMethod::Http404 => "http-404",
            BootFromDiskMethod::IpxeSanboot => "ipxe-sanboot",
        }
    }
}

impl fmt::Display for BootFromDiskMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which boot device IPMI selects to force a PXE boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PxeMode {
    Uefi,
    Bios,
}

/// `status.power` as Sidero prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
    Unknown,
}

/// How to reach the BMC over IPMI (`ipmitool -I lanplus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bmc {
    /// Host name or IP of the BMC.
    pub endpoint: String,
    /// UDP port; 623 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_from: Option<CredentialSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_from: Option<CredentialSource>,
    /// IPMI interface; `lanplus` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

impl Bmc {
    pub const DEFAULT_PORT: u16 = 623;
    pub const DEFAULT_INTERFACE: &'static str = "lanplus";
}

impl Check for Bmc {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        if self.endpoint.is_empty() {
            return Err(FieldError::new(join(path, "endpoint"), "must not be empty"));
        }
        if let Some(port) = self.port
            && !(1..=65535).contains(&port)
        {
            return Err(FieldError::new(
                join(path, "port"),
                format!("{port} is not a UDP port (1-65535)"),
            ));
        }
        let both = |v: &Option<String>, from: &Option<CredentialSource>| {
            v.as_deref().is_some_and(|s| !s.is_empty()) && from.is_some()
        };
        if both(&self.user, &self.user_from) {
            return Err(FieldError::new(
                join(path, "userFrom"),
                "cannot be used together with `user`",
            ));
        }
        if both(&self.pass, &self.pass_from) {
            return Err(FieldError::new(
                join(path, "passFrom"),
                "cannot be used together with `pass`",
            ));
        }
        Ok(())
    }
}

/// Where a credential comes from instead of being written inline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key within a (Kubernetes) Secret. Sidero's docs omit `namespace` (meaning `default`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub key: String,
}

/// Simple HTTP power API (Sidero's `managementApi`): `POST {endpoint}/poweron` etc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementApi {
    pub endpoint: String,
}

impl Check for ManagementApi {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        if self.endpoint.is_empty() {
            return Err(FieldError::new(join(path, "endpoint"), "must not be empty"));
        }
        Ok(())
    }
}

/// One RFC 6902 operation on the Talos machine config. Sidero's type has no `from`, so
/// `copy`/`move` are accepted but cannot name a source (as upstream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigPatch {
    pub op: PatchOp,
    /// JSON pointer, e.g. `/machine/install/disk`.
    pub path: String,
    /// Any JSON; absent for `remove`. (`value: null` reads as absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl Check for ConfigPatch {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        if !self.path.starts_with('/') {
            return Err(FieldError::new(
                join(path, "path"),
                format!(
                    "`{}` is not a JSON pointer: it must start with '/'",
                    self.path
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
    Copy,
    Move,
    Test,
}

impl PatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            PatchOp::Add => "add",
            PatchOp::Remove => "remove",
            PatchOp::Replace => "replace",
            PatchOp::Copy => "copy",
            PatchOp::Move => "move",
            PatchOp::Test => "test",
        }
    }
}

/// Hardware inventory (`spec.hardware`, and each ServerClass `qualifiers.hardware[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HardwareInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInformation>,
    /// Appliance extension (Sidero's inventory has no such part): the firmware the agent
    /// booted under. Absent when the agent did not report it (a Sidero agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareInformation>,
}

impl Check for HardwareInformation {}

/// `spec.hardware.firmware` (appliance extension): `kind: uefi`, `secureBoot: enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirmwareInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FirmwareKind>,
    /// Whether the firmware enforced Secure Boot when the agent booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBoot>,
}

/// Legacy BIOS or UEFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    Bios,
    Uefi,
}

impl FirmwareKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareKind::Bios => "bios",
            FirmwareKind::Uefi => "uefi",
        }
    }
}

/// The Secure Boot state: `enabled` (the EFI `SecureBoot` variable is 1), `disabled` (0,
/// no such variable, or BIOS), `unknown` (the agent could not read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureBoot {
    Enabled,
    Disabled,
    Unknown,
}

impl SecureBoot {
    pub fn as_str(self) -> &'static str {
        match self {
            SecureBoot::Enabled => "enabled",
            SecureBoot::Disabled => "disabled",
            SecureBoot::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_core_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_thread_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_count: Option<u32>,
    /// Populated sockets only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processors: Vec<Processor>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Processor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// SMBIOS processor version string, e.g. `Intel(R) Xeon(R) CPU E5-2630 v3 @ 2.40GHz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Current speed in MHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_count: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryInformation {
    /// Text, `"<N> GB"` (total MB / 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<MemoryModule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryModule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Part number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// SMBIOS memory type name (`DDR4`, `LPDDR3`, …).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Size in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Speed in MT/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageInformation {
    /// Text, `"<N> GB"` (bytes / 2^30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<StorageDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageDevice {
    /// `SSD`, `HDD`, `NVMe`, `SD` or `Unknown` as the agent reports it; kept as text.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Model (JSON `productName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// Serial (JSON `serialNumber`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Kernel name, `sda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `/dev/sda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<NetworkInterface>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `up|broadcast|multicast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// CIDR strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}
