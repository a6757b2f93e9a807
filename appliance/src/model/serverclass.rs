//! ServerClass (`metal.sidero.dev/v1alpha2`): a group of servers chosen by hardware and labels.

use serde::{Deserialize, Serialize};

use super::meta::Resource;

pub type ServerClass = Resource<ServerClassSpec, ServerClassStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifiers: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerClassStatus {
    #[serde(default)]
    pub servers_available: Vec<String>,
    #[serde(default)]
    pub servers_in_use: Vec<String>,
}
