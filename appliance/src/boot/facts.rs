//! The plain facts the boot decision needs, read out of stored objects.
//!
//! Pure. Fields are read from the objects' canonical JSON by their Sidero names
//! (`spec.environmentRef.name`, `spec.bootFromDiskMethod`, `spec.pxeBootAlways`,
//! `status.conditions[type=PXEBooted]`, binding `spec.serverClassRef.name`), so the decision
//! does not depend on how far the typed model structs have grown: a field the model does not
//! carry yet reads as absent.

use serde_json::Value;

use super::BootFromDiskMethod;
use crate::model::{Server, ServerBinding, ServerClass};

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

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn non_empty_str(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn method(v: &Value) -> Option<BootFromDiskMethod> {
    v.pointer("/spec/bootFromDiskMethod")
        .and_then(Value::as_str)
        .and_then(BootFromDiskMethod::parse)
}

impl ServerFacts {
    pub fn from_server(server: &Server) -> ServerFacts {
        ServerFacts::from_json(&to_value(server))
    }

    /// Reads the facts from a Server's JSON.
    pub fn from_json(v: &Value) -> ServerFacts {
        let pxe_booted = v
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("PXEBooted")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            });
        ServerFacts {
            environment_ref: non_empty_str(v, "/spec/environmentRef/name"),
            boot_from_disk_method: method(v),
            pxe_boot_always: v
                .pointer("/spec/pxeBootAlways")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            pxe_booted,
        }
    }
}

impl BindingFacts {
    pub fn from_binding(binding: &ServerBinding) -> BindingFacts {
        BindingFacts::from_json(&to_value(binding))
    }

    pub fn from_json(v: &Value) -> BindingFacts {
        BindingFacts {
            server_class: non_empty_str(v, "/spec/serverClassRef/name"),
        }
    }
}

impl ClassFacts {
    pub fn from_class(class: &ServerClass) -> ClassFacts {
        ClassFacts::from_json(&to_value(class))
    }

    pub fn from_json(v: &Value) -> ClassFacts {
        ClassFacts {
            environment_ref: non_empty_str(v, "/spec/environmentRef/name"),
            boot_from_disk_method: method(v),
        }
    }
}
