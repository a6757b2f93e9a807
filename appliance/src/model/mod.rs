//! The objects the box keeps, in the shape of Sidero's `metal.sidero.dev/v1alpha2` (Server,
//! ServerClass, Environment) and CAPS `infrastructure.cluster.x-k8s.io/v1alpha3`
//! (MetalMachine, ServerBinding), so a Sidero user's YAML applies unchanged and reads back
//! equivalent.
//!
//! Pure data + parsing: no IO. Parsing rejects unknown fields and wrong types with the path
//! of the offending field (`spec.hardware.compute.processorCount`).

pub mod binding;
pub mod environment;
pub mod meta;
pub mod server;
pub mod serverclass;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use binding::{MetalMachine, ServerBinding};
pub use environment::Environment;
pub use meta::{ObjectMeta, Resource};
pub use server::Server;
pub use serverclass::ServerClass;

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

    /// API groups accepted on input for this kind.
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Server(Server),
    ServerClass(ServerClass),
    Environment(Environment),
    MetalMachine(MetalMachine),
    ServerBinding(ServerBinding),
}

/// Why a document could not be read as an object. Names the document (1-based) and the path.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseObjectError {
    #[error("document {document}: not valid YAML: {message}")]
    Syntax { document: usize, message: String },
    #[error("document {document}: missing `{field}`")]
    Missing {
        document: usize,
        field: &'static str,
    },
    #[error(
        "document {document}: unknown kind `{kind}` (expected Server, ServerClass, Environment, MetalMachine or ServerBinding)"
    )]
    UnknownKind { document: usize, kind: String },
    #[error(
        "document {document}: apiVersion `{api_version}` is not served for {kind} (expected group {group})"
    )]
    WrongApiVersion {
        document: usize,
        kind: Kind,
        api_version: String,
        group: &'static str,
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

    /// YAML as `get -o yaml` prints it.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("model types serialise infallibly")
    }

    /// Reads a stored JSON object of a known kind (document 1 in errors).
    pub fn from_json(kind: Kind, json: &str) -> Result<Object, ParseObjectError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ParseObjectError::Syntax {
                document: 1,
                message: e.to_string(),
            })?;
        Object::from_value(kind, value, 1)
    }

    fn from_value(
        kind: Kind,
        value: serde_json::Value,
        document: usize,
    ) -> Result<Object, ParseObjectError> {
        fn typed<T: serde::de::DeserializeOwned>(
            kind: Kind,
            value: serde_json::Value,
            document: usize,
        ) -> Result<T, ParseObjectError> {
            serde_path_to_error::deserialize(value).map_err(|e| ParseObjectError::Field {
                document,
                kind,
                path: e.path().to_string(),
                message: e.into_inner().to_string(),
            })
        }
        let obj = match kind {
            Kind::Server => Object::Server(typed(kind, value, document)?),
            Kind::ServerClass => Object::ServerClass(typed(kind, value, document)?),
            Kind::Environment => Object::Environment(typed(kind, value, document)?),
            Kind::MetalMachine => Object::MetalMachine(typed(kind, value, document)?),
            Kind::ServerBinding => Object::ServerBinding(typed(kind, value, document)?),
        };
        obj.validate(document)?;
        Ok(obj)
    }

    /// Checks that serde cannot express: names are DNS-1123 subdomains.
    fn validate(&self, document: usize) -> Result<(), ParseObjectError> {
        let name = self.name();
        if let Err(message) = meta::validate_name(name) {
            return Err(ParseObjectError::Field {
                document,
                kind: self.kind(),
                path: "metadata.name".into(),
                message,
            });
        }
        Ok(())
    }
}

/// Parses multi-document YAML (JSON is accepted as YAML). Empty documents are skipped.
/// Rejects the whole input on the first bad document, and on two documents with the same
/// kind and name.
pub fn parse_documents(text: &str) -> Result<Vec<Object>, ParseObjectError> {
    let mut out: Vec<(usize, Object)> = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_json::Value::deserialize(de).map_err(|e| ParseObjectError::Syntax {
            document,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let Some(map) = value.as_object() else {
            return Err(ParseObjectError::Syntax {
                document,
                message: "expected a mapping with apiVersion, kind, metadata".into(),
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
        if api_version.split('/').next() != Some(kind.api_group()) {
            return Err(ParseObjectError::WrongApiVersion {
                document,
                kind,
                api_version: api_version.to_string(),
                group: kind.api_group(),
            });
        }
        let obj = Object::from_value(kind, value, document)?;
        if let Some((first, _)) = out
            .iter()
            .find(|(_, o)| o.kind() == obj.kind() && o.name() == obj.name())
        {
            return Err(ParseObjectError::Duplicate {
                first: *first,
                second: document,
                kind,
                name: obj.name().to_string(),
            });
        }
        out.push((document, obj));
    }
    Ok(out.into_iter().map(|(_, o)| o).collect())
}
