//! The plain facts the boot decision needs, read out of the typed stored objects
//! (`spec.environmentRef.name`, `spec.bootFromDiskMethod`, `spec.pxeBootAlways`,
//! `status.conditions[type=PXEBooted]`, binding `spec.serverClassRef.name`).
//!
//! Pure.

use super::BootFromDiskMethod;
use crate::model::{ConditionStatus, ObjectReference, Server, ServerBinding, ServerClass};
/// What the decision knows about a Server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    pub environment_ref: Option<String>,
    /// `None` when unset or not one of the three known methods.
    pub boot_from_disk_method: Option<BootFromDiskMethod>,
    pub pxe_boot_always: bool,
    /// Condition `PXEBooted` with status `True` (set once the OS reported its install).
    pub pxe_booted: bool,
}

/// What the decision knows about the ServerBinding (named like the Server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindingFacts {
    pub server_class: Option<String>,
}

/// What the decision knows about the binding's ServerClass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassFacts {
    pub environment_ref: Option<String>,
    pub boot_from_disk_method: Option<BootFromDiskMethod>,
}

/// Everything `decide` reads, for one server UUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub server: Option<ServerFacts>,
    pub binding: Option<BindingFacts>,
    pub class: Option<ClassFacts>,
}

/// A reference's name, when set and not empty.
fn name(r: Option<&ObjectReference>) -> Option<String> {
    r.and_then(|r| r.name.clone()).filter(|n| !n.is_empty())
}

impl ServerFacts {
    pub fn from_server(server: &Server) -> ServerFacts {
        let pxe_booted = server.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "PXEBooted" && c.status == ConditionStatus::True)
        });
        ServerFacts {
            environment_ref: name(server.spec.environment_ref.as_ref()),
            boot_from_disk_method: server.spec.boot_from_disk_method,
            pxe_boot_always: server.spec.pxe_boot_always,
            pxe_booted,
        }
    }
}

impl BindingFacts {
    pub fn from_binding(binding: &ServerBinding) -> BindingFacts {
        BindingFacts {
            server_class: name(binding.spec.server_class_ref.as_ref()),
        }
    }
}

impl ClassFacts {
    pub fn from_class(class: &ServerClass) -> ClassFacts {
        ClassFacts {
            environment_ref: name(class.spec.environment_ref.as_ref()),
            boot_from_disk_method: class.spec.boot_from_disk_method,
        }
    }
}
