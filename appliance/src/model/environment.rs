//! Environment (`metal.sidero.dev/v1alpha2`): the kernel, initrd and args a server boots.
//!
//! Shape of Sidero's `api/v1alpha2/environment_types.go`.

use serde::{Deserialize, Serialize};

use super::meta::Resource;
use super::validate::Check;

pub type Environment = Resource<EnvironmentSpec, EnvironmentStatus>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Asset>,
}

impl Check for EnvironmentSpec {}

/// The kernel: where to fetch it and its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kernel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Hex SHA-512. Unlike upstream, the appliance verifies downloads and uploads against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// A downloadable boot asset (the initrd).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Asset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<AssetCondition>,
}

impl Check for EnvironmentStatus {}

/// Per-asset download state: `{url, sha512, status: "True"|"False", type: "Ready"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssetCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// `"True"` or `"False"`. Always serialised.
    #[serde(default)]
    pub status: String,
    /// `"Ready"`. Always serialised.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// Why the asset is not ready (`DownloadFailed`, `Sha512Mismatch`, …) or how it got
    /// there (`Downloaded`, `Uploaded`). Appliance addition, absent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail for `reason`. Appliance addition, absent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
