//! The objects the box keeps, in the shape of Sidero's `metal.sidero.dev/v1alpha2` (Server,
//! ServerClass, Environment) and CAPS `infrastructure.cluster.x-k8s.io/v1alpha3`
//! (MetalMachine, ServerBinding), so a Sidero user's YAML applies unchanged and reads back
//! equivalent.
//!
//! Pure data + parsing: no IO. Parsing rejects unknown fields, wrong types, unknown enum
//! values and broken rules (`validate::Check`) with the path of the offending field
//! (`spec.hardware.compute.processors[0].coreCount`). Only the storage versions are accepted:
//! `metal.sidero.dev/v1alpha2` and `infrastructure.cluster.x-k8s.io/v1alpha3` (v1alpha1
//! shapes differ and are refused with a clear error rather than misread).

pub mod binding;
pub mod environment;
pub mod mac;
pub mod meta;
pub mod properties;
pub mod server;
pub mod serverclass;
pub mod validate;
pub mod yaml;
pub mod yaml_block;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::Serialize;

pub use binding::{
    MetalMachine, MetalMachineSpec, MetalMachineStatus, ServerBinding, ServerBindingSpec,
    ServerBindingStatus, SideroLinkSpec,
};
pub use environment::{
    Asset, AssetCondition, Environment, EnvironmentSpec, EnvironmentStatus, Kernel,
};
pub use mac::{BadMac, MacAddr};
pub use meta::{
    Address, AddressType, Condition, ConditionSeverity, ConditionStatus, LabelSelector,
    LabelSelectorRequirement, ObjectMeta, ObjectReference, OwnerReference, Resource,
    SelectorOperator,
};
pub use server::{
    Bmc, BootFromDiskMethod, ComputeInformation, ConfigPatch, CredentialSource,
    FirmwareInformation, FirmwareKind, HardwareInformation, ManagementApi, MemoryInformation,
    MemoryModule, NetworkInformation, NetworkInterface, PatchOp, PowerState, Processor, PxeMode,
    SecretKeyRef, SecureBoot, Server, ServerSpec, ServerStatus, StorageDevice, StorageInformation,
    SystemInformation,
};
pub use serverclass::{Qualifiers, ServerClass, ServerClassSpec, ServerClassStatus};

use validate::Check;

/// The kinds of object the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Server,
    ServerClass,
    Environment,
    MetalMachine,
    ServerBinding,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Server,
        Kind::ServerClass,
        Kind::Environment,
        Kind::MetalMachine,
        Kind::ServerBinding,
    ];

    /// The `kind:` string as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "Server",
            Kind::ServerClass => "ServerClass",
            Kind::Environment => "Environment",
            Kind::MetalMachine => "MetalMachine",
            Kind::ServerBinding => "ServerBinding",
        }
    }

    /// The `apiVersion:` the box writes for this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Server | Kind::ServerClass | Kind::Environment => "metal.sidero.dev/v1alpha2",
            Kind::MetalMachine | Kind::ServerBinding => "infrastructure.cluster.x-k8s.io/v1alpha3",
        }
    }

    /// The API group of this kind (the part of `apiVersion` before `/`).
    pub fn api_group(self) -> &'static str {
        match self {
            Kind::Server | Kind::ServerClass | Kind::Environment => "metal.sidero.dev",
            Kind::MetalMachine | Kind::ServerBinding => "infrastructure.cluster.x-k8s.io",
        }
    }

    /// Parses a kind as an operator types it: `Server`, `servers`, `serverclass`, `env`…
    pub fn parse_cli(s: &str) -> Option<Kind> {
        let lower = s.to_ascii_lowercase();
        let k = match lower.as_str() {
            "server" | "servers" => Kind::Server,
            "serverclass" | "serverclasses" | "class" | "classes" => Kind::ServerClass,
            "environment" | "environments" | "env" | "envs" => Kind::Environment,
            "metalmachine" | "metalmachines" => Kind::MetalMachine,
            "serverbinding" | "serverbindings" | "binding" | "bindings" => Kind::ServerBinding,
            _ => return None,
        };
        Some(k)
    }

    /// Parses the exact `kind:` string.
    pub fn from_kind_str(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any stored object.
// Unboxed on purpose: objects are few and short-lived, and other rooms construct and match
// `Object::Server(server)` directly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Server(Server),
    ServerClass(ServerClass),
    Environment(Environment),
    MetalMachine(MetalMachine),
    ServerBinding(ServerBinding),
}

/// The most YAML one apply takes (admin gRPC `Apply`, console editors, `ctl apply`): every
/// apply path reads through [`parse_documents`], which refuses more.
pub const MAX_APPLY_BYTES: usize = 1 << 20;

/// Why a document could not be read as an object. Names the document (1-based) and the path.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseObjectError {
    #[error(
        "documents are {bytes} bytes, more than the {} bytes (1 MiB) one apply takes; split them",
        MAX_APPLY_BYTES
    )]
    TooLarge { bytes: usize },
    #[error("document {document}: not valid YAML: {message}")]
    Syntax { document: usize, message: String },
    #[error(
        "document {document}: expected a mapping with apiVersion, kind and metadata, found {found}"
    )]
    NotAMapping {
        document: usize,
        found: &'static str,
    },
    #[error("document {document}: missing `{field}` (a string)")]
    Missing {
        document: usize,
        field: &'static str,
    },
    #[error(
        "document {document}: unknown kind `{kind}` (expected Server, ServerClass, Environment, MetalMachine or ServerBinding)"
    )]
    UnknownKind { document: usize, kind: String },
    #[error(
        "document {document}: apiVersion `{api_version}` is not served for {kind} (expected {expected})"
    )]
    WrongApiVersion {
        document: usize,
        kind: Kind,
        api_version: String,
        expected: &'static str,
    },
    #[error("document {document} ({kind}): at `{path}`: {message}")]
    Field {
        document: usize,
        kind: Kind,
        path: String,
        message: String,
    },
    #[error("document {document} ({kind}): {message}")]
    Invalid {
        document: usize,
        kind: Kind,
        message: String,
    },
    #[error("documents {first} and {second} both define {kind} `{name}`")]
    Duplicate {
        first: usize,
        second: usize,
        kind: Kind,
        name: String,
    },
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Server(_) => Kind::Server,
            Object::ServerClass(_) => Kind::ServerClass,
            Object::Environment(_) => Kind::Environment,
            Object::MetalMachine(_) => Kind::MetalMachine,
            Object::ServerBinding(_) => Kind::ServerBinding,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Server(o) => &o.metadata,
            Object::ServerClass(o) => &o.metadata,
            Object::Environment(o) => &o.metadata,
            Object::MetalMachine(o) => &o.metadata,
            Object::ServerBinding(o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Server(o) => &mut o.metadata,
            Object::ServerClass(o) => &mut o.metadata,
            Object::Environment(o) => &mut o.metadata,
            Object::MetalMachine(o) => &mut o.metadata,
            Object::ServerBinding(o) => &mut o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Canonical JSON, as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("model types serialise infallibly")
    }

    /// [`Object::to_json`] appended to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("model types serialise infallibly");
    }

    /// YAML as `kubectl get -o yaml` prints it (keys sorted; strings quoted wherever a YAML
    /// 1.1 or 1.2 reader could misread them).
    pub fn to_yaml(&self) -> String {
        let value = serde_json::to_value(self).expect("model types serialise infallibly");
        yaml::to_yaml_string(&value)
    }

    /// Reads a stored JSON object of a known kind (document 1 in errors).
    pub fn from_json(kind: Kind, json: &str) -> Result<Object, ParseObjectError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ParseObjectError::Syntax {
                document: 1,
                message: e.to_string(),
            })?;
        let obj = Object::from_value(value, 1)?;
        if obj.kind() != kind {
            return Err(ParseObjectError::Invalid {
                document: 1,
                kind,
                message: format!("stored object is a {}", obj.kind()),
            });
        }
        Ok(obj)
    }

    /// Reads JSON the store wrote ([`Object::to_json`] of an object that passed
    /// [`Object::from_value`] when it was written): deserialised straight into the typed
    /// shape of `kind`, without the JSON value, field-path tracking and `Check` rules that
    /// [`Object::from_json`] spends on input it has not seen. JSON that does not read that way
    /// (or names another kind) goes through [`Object::from_json`], so errors are the same.
    pub fn from_stored_json(kind: Kind, json: &str) -> Result<Object, ParseObjectError> {
        fn typed<S, T>(kind: Kind, json: &str) -> Option<Resource<S, T>>
        where
            Resource<S, T>: serde::de::DeserializeOwned,
        {
            serde_json::from_str::<Resource<S, T>>(json)
                .ok()
                .filter(|r| r.kind == kind.as_str() && r.api_version == kind.api_version())
        }
        let fast = match kind {
            Kind::Server => typed(kind, json).map(Object::Server),
            Kind::ServerClass => typed(kind, json).map(Object::ServerClass),
            Kind::Environment => typed(kind, json).map(Object::Environment),
            Kind::MetalMachine => typed(kind, json).map(Object::MetalMachine),
            Kind::ServerBinding => typed(kind, json).map(Object::ServerBinding),
        };
        match fast {
            Some(object) => Ok(object),
            None => Object::from_json(kind, json),
        }
    }

    /// Reads one document: checks `kind` and `apiVersion`, deserialises the typed shape
    /// (unknown fields and wrong types fail with their path), then runs the `Check` rules.
    pub fn from_value(
        value: serde_json::Value,
        document: usize,
    ) -> Result<Object, ParseObjectError> {
        let Some(map) = value.as_object() else {
            return Err(ParseObjectError::NotAMapping {
                document,
                found: json_type(&value),
            });
        };
        let kind_str =
            map.get("kind")
                .and_then(|k| k.as_str())
                .ok_or(ParseObjectError::Missing {
                    document,
                    field: "kind",
                })?;
        let kind = Kind::from_kind_str(kind_str).ok_or_else(|| ParseObjectError::UnknownKind {
            document,
            kind: kind_str.to_string(),
        })?;
        let api_version =
            map.get("apiVersion")
                .and_then(|k| k.as_str())
                .ok_or(ParseObjectError::Missing {
                    document,
                    field: "apiVersion",
                })?;
        if api_version != kind.api_version() {
            return Err(ParseObjectError::WrongApiVersion {
                document,
                kind,
                api_version: api_version.to_string(),
                expected: kind.api_version(),
            });
        }
        fn typed<T: serde::de::DeserializeOwned + Serialize + Check>(
            kind: Kind,
            value: serde_json::Value,
            document: usize,
        ) -> Result<T, ParseObjectError> {
            let field = |path: String, message: String| ParseObjectError::Field {
                document,
                kind,
                path,
                message,
            };
            // Read without tracking the field path first: the tracking (a key recorded for
            // every field) was a third of the read, and only an error needs it. A document
            // that fails is read again with it, for the path and message of that error.
            let typed: T = match T::deserialize(&value) {
                Ok(typed) => typed,
                Err(_) => serde_path_to_error::deserialize(&value)
                    .map_err(|e| field(e.path().to_string(), e.into_inner().to_string()))?,
            };
            // Only a list can have been read as a mapping: without one, nothing to compare
            // (and the typed object is not printed for it).
            if validate::holds_a_list(&value) {
                let printed =
                    serde_json::to_value(&typed).expect("model types serialise infallibly");
                if let Some(e) = validate::find_list_read_as_mapping(&value, &printed, "") {
                    return Err(field(e.path, e.message));
                }
            }
            typed.check("").map_err(|e| field(e.path, e.message))?;
            Ok(typed)
        }
        Ok(match kind {
            Kind::Server => Object::Server(typed(kind, value, document)?),
            Kind::ServerClass => Object::ServerClass(typed(kind, value, document)?),
            Kind::Environment => Object::Environment(typed(kind, value, document)?),
            Kind::MetalMachine => Object::MetalMachine(typed(kind, value, document)?),
            Kind::ServerBinding => Object::ServerBinding(typed(kind, value, document)?),
        })
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// Parses multi-document YAML (JSON is accepted as YAML). Empty documents are skipped.
/// Rejects the whole input on the first bad document, on two documents with the same
/// kind and name, and when it is larger than [`MAX_APPLY_BYTES`]. Text in the plain block
/// subset `yaml_block` reads is read there (the same values, at a fraction of the cost);
/// the rest, and every refusal, comes from the strict reader.
pub fn parse_documents(text: &str) -> Result<Vec<Object>, ParseObjectError> {
    if text.len() > MAX_APPLY_BYTES {
        return Err(ParseObjectError::TooLarge { bytes: text.len() });
    }
    match yaml_block::read(text) {
        Some(values) => objects(values.into_iter().map(Ok)),
        None => objects(yaml::strict_documents(text)),
    }
}

/// The objects of a stream of documents read in order (an error ends it).
fn objects(
    documents: impl Iterator<Item = Result<serde_json::Value, ParseObjectError>>,
) -> Result<Vec<Object>, ParseObjectError> {
    let mut out: Vec<(usize, Object)> = Vec::new();
    for (i, value) in documents.enumerate() {
        let document = i + 1;
        let value = value?;
        if value.is_null() {
            continue;
        }
        let obj = Object::from_value(value, document)?;
        if let Some((first, _)) = out
            .iter()
            .find(|(_, o)| o.kind() == obj.kind() && o.name() == obj.name())
        {
            return Err(ParseObjectError::Duplicate {
                first: *first,
                second: document,
                kind: obj.kind(),
                name: obj.name().to_string(),
            });
        }
        out.push((document, obj));
    }
    Ok(out.into_iter().map(|(_, o)| o).collect())
}
