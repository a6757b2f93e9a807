//! ServerClass (`metal.sidero.dev/v1alpha2`): a group of servers chosen by hardware and labels.
//!
//! Shape of Sidero's `api/v1alpha2/serverclass_types.go`. Sidero always prints `qualifiers`
//! and `selector` (as `{}` when empty); here they are printed only when non-empty, which
//! means the same thing. `status.serversAvailable` / `serversInUse` are always printed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::meta::{LabelSelector, ObjectReference, Resource, empty_as_none, null_as_default};
use super::server::{BootFromDiskMethod, ConfigPatch, HardwareInformation};
use super::validate::{Check, FieldError};

pub type ServerClass = Resource<ServerClassSpec, ServerClassStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerClassSpec {
    /// Environment for servers provisioned through this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<ObjectReference>,
    /// Hardware and label qualifiers; empty matches every server.
    #[serde(
        default,
        skip_serializing_if = "Qualifiers::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub qualifiers: Qualifiers,
    /// Label selector over Server labels; empty matches every server.
    #[serde(
        default,
        skip_serializing_if = "LabelSelector::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<ConfigPatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategic_patches: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub boot_from_disk_method: Option<BootFromDiskMethod>,
}

impl Check for ServerClassSpec {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.qualifiers.check_field(path, "qualifiers")?;
        self.selector.check_field(path, "selector")?;
        self.config_patches.check_field(path, "configPatches")
    }
}

/// `hardware[]` entries are ORed; inside an entry every set field must match.
/// `labelSelectors[]` pass if any key/value pair of any map is on the Server (Sidero's rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Qualifiers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware: Vec<HardwareInformation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_selectors: Vec<BTreeMap<String, String>>,
}

impl Qualifiers {
    pub fn is_empty(&self) -> bool {
        self.hardware.is_empty() && self.label_selectors.is_empty()
    }
}

impl Check for Qualifiers {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.hardware.check_field(path, "hardware")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerClassStatus {
    /// Members not in use (sorted by name). Always serialised; `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub servers_available: Vec<String>,
    /// Members in use (sorted by name). Always serialised; `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub servers_in_use: Vec<String>,
}

impl Check for ServerClassStatus {}
