//! MetalMachine and ServerBinding (`infrastructure.cluster.x-k8s.io/v1alpha3`): the shapes
//! kube-bridge mirrors for Cluster API.
//!
//! Shape of CAPS `api/v1alpha3/metalmachine_types.go` and `serverbinding_types.go`.

use serde::{Deserialize, Serialize};

use super::meta::{Address, Condition, ObjectReference, Resource};
use super::validate::{Check, FieldError};

pub type MetalMachine = Resource<MetalMachineSpec, MetalMachineStatus>;
pub type ServerBinding = Resource<ServerBindingSpec, ServerBindingStatus>;

/// The `sidero://` scheme of `MetalMachine.spec.providerID`.
pub const PROVIDER_ID_PREFIX: &str = "sidero://";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetalMachineSpec {
    /// `sidero://<server-uuid>`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "providerID"
    )]
    pub provider_id: Option<String>,
    /// The chosen (or explicitly requested) Server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ObjectReference>,
    /// The class to pick a Server from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class_ref: Option<ObjectReference>,
}

impl Check for MetalMachineSpec {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetalMachineStatus {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Check for MetalMachineStatus {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.conditions.check_field(path, "conditions")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerBindingSpec {
    /// Nil when bound through an explicit `serverRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class_ref: Option<ObjectReference>,
    /// Always serialised (upstream field is not optional).
    #[serde(default)]
    pub metal_machine_ref: ObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siderolink: Option<SideroLinkSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl Check for ServerBindingSpec {}

/// The node's end of the SideroLink tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SideroLinkSpec {
    /// `<ipv6>/64` inside the installation's ULA prefix.
    pub address: String,
    /// WireGuard public key, base64.
    pub public_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerBindingStatus {
    /// True iff the Server exists. Always serialised.
    #[serde(default)]
    pub ready: bool,
    /// `TalosConfigLoaded`, `TalosConfigValidated`, `TalosInstalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Check for ServerBindingStatus {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.conditions.check_field(path, "conditions")
    }
}
