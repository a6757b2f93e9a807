//! MetalMachine and ServerBinding (`infrastructure.cluster.x-k8s.io/v1alpha3`): the shapes
//! kube-bridge mirrors for Cluster API.

use serde::{Deserialize, Serialize};

use super::meta::Resource;

pub type MetalMachine = Resource<MetalMachineSpec, serde_json::Value>;
pub type ServerBinding = Resource<ServerBindingSpec, serde_json::Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetalMachineSpec {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "providerID"
    )]
    pub provider_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerBindingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}
