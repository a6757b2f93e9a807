//! Server (`metal.sidero.dev/v1alpha2`): one physical machine, named by its SMBIOS UUID.

use serde::{Deserialize, Serialize};

use super::meta::Resource;

pub type Server = Resource<ServerSpec, ServerStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<serde_json::Value>,
    /// Always serialised, as Sidero does.
    #[serde(default)]
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerStatus {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub in_use: bool,
    #[serde(default)]
    pub is_clean: bool,
}
