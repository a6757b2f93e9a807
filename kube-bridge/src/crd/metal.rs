//! `metal.sidero.dev/v1alpha2`: Server, ServerClass and Environment (all cluster-scoped),
//! field for field as Sidero's `app/sidero-controller-manager/api/v1alpha2` types.

// Each `printcolumn(name = …, type_ = …)` repeats the same keys; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::common::{Condition, ConfigPatch, HardwareInformation, LabelSelector, ObjectReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Server: one bare-metal machine, named by its SMBIOS UUID.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal.sidero.dev",
    version = "v1alpha2",
    kind = "Server",
    status = "ServerStatus",
    doc = "Server is the Schema for the servers API.",
    printcolumn(
        name = "Hostname",
        type_ = "string",
        json_path = ".spec.hostname",
        description = "server hostname"
    ),
    printcolumn(
        name = "BMC IP",
        type_ = "string",
        json_path = ".spec.bmc.endpoint",
        description = "BMC IP",
        priority = 1
    ),
    printcolumn(
        name = "Accepted",
        type_ = "boolean",
        json_path = ".spec.accepted",
        description = "indicates if the server is accepted"
    ),
    printcolumn(
        name = "Cordoned",
        type_ = "boolean",
        json_path = ".spec.cordoned",
        description = "indicates if the server is cordoned"
    ),
    printcolumn(
        name = "Allocated",
        type_ = "boolean",
        json_path = ".status.inUse",
        description = "indicates that the server has been allocated"
    ),
    printcolumn(
        name = "Clean",
        type_ = "boolean",
        json_path = ".status.isClean",
        description = "indicates if the server is clean or not"
    ),
    printcolumn(
        name = "Power",
        type_ = "string",
        json_path = ".status.power",
        description = "display the current power status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Sidero always writes it; absent reads as false (the documentation's own examples omit it).
    #[serde(default)]
    pub accepted: bool,
    /// How to reach the BMC (IPMI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Bmc>,
    /// `ipxe-exit`, `http-404` or `ipxe-sanboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_from_disk_method: Option<String>,
    /// RFC 6902 patches applied to the Talos config served for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_patches: Option<Vec<ConfigPatch>>,
    /// Excluded from every ServerClass (never auto-allocated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordoned: Option<bool>,
    /// Environment to boot when allocated (wins over the class's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<ObjectReference>,
    /// Hardware inventory reported by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Simple HTTP power API instead of IPMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_api: Option<ManagementApi>,
    /// PXE boot even when installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxe_boot_always: Option<bool>,
    /// `uefi` or `bios`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxe_mode: Option<String>,
    /// Talos strategic-merge patch documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategic_patches: Option<Vec<String>>,
}

/// `spec.bmc`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bmc {
    /// BMC address.
    pub endpoint: String,
    /// `lanplus` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Inline password (the bridge never mirrors one; it uses `passFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_from: Option<CredentialSource>,
    /// 623 when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Inline user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_from: Option<CredentialSource>,
}

/// Where a BMC credential comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Secret. Sidero's schema requires `namespace`, its documentation omits it
/// (meaning `default`, as the box reads it), so here it is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.managementApi`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ManagementApi {
    pub endpoint: String,
}

/// Server status, written by the box.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
    /// `PowerCycle`, `PXEBooted`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Allocated.
    #[serde(default)]
    pub in_use: bool,
    /// Wiped since its last use.
    #[serde(default)]
    pub is_clean: bool,
    /// `on`, `off` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    #[serde(default)]
    pub ready: bool,
}

/// `corev1.NodeAddress`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    pub address: String,
    /// `Hostname`, `InternalIP`, …
    #[serde(rename = "type")]
    pub type_: String,
}

/// ServerClass: a named set of Servers picked by qualifiers and a label selector.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal.sidero.dev",
    version = "v1alpha2",
    kind = "ServerClass",
    plural = "serverclasses",
    status = "ServerClassStatus",
    doc = "ServerClass is the Schema for the serverclasses API.",
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.serversAvailable",
        description = "the number of available servers"
    ),
    printcolumn(
        name = "In Use",
        type_ = "string",
        json_path = ".status.serversInUse",
        description = "the number of servers in use"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_from_disk_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_patches: Option<Vec<ConfigPatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifiers: Option<Qualifiers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategic_patches: Option<Vec<String>>,
}

/// `spec.qualifiers`: hardware entries (OR) and label maps (any pair matches).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Qualifiers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Vec<HardwareInformation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selectors: Option<Vec<BTreeMap<String, String>>>,
}

/// ServerClass status, written by the box.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerClassStatus {
    pub servers_available: Vec<String>,
    pub servers_in_use: Vec<String>,
}

/// Environment: the kernel and initrd a server boots.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal.sidero.dev",
    version = "v1alpha2",
    kind = "Environment",
    status = "EnvironmentStatus",
    doc = "Environment is the Schema for the environments API.",
    printcolumn(
        name = "Kernel",
        type_ = "string",
        json_path = ".spec.kernel.url",
        description = "the kernel for the environment"
    ),
    printcolumn(
        name = "Initrd",
        type_ = "string",
        json_path = ".spec.initrd.url",
        description = "the initrd for the environment"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "indicates the readiness of the environment"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
pub struct EnvironmentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Asset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
}

/// An asset: where to download it and its digest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Asset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The kernel: an asset plus its command line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Kernel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Environment status, written by the box.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<AssetCondition>>,
}

/// Download state of one asset URL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssetCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// `True` or `False`.
    pub status: String,
    /// `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
