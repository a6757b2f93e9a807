//! Talos strategic-merge patches (`strategicPatches` on Server and ServerClass) over a
//! machine config held as a list of JSON documents. Pure: a patch is applied to a copy, and
//! on any error the config is left as it was and the error names the document and the path.
//!
//! The rules are Talos's (its `configpatcher`, documented under "Configuration Patches"),
//! restated for untyped documents:
//! - a patch document with no `kind` patches the `version: v1alpha1` document; one with
//!   `apiVersion` + `kind` patches the document of that kind (and `name`), or is appended;
//! - maps merge key by key; a scalar replaces, except that `""` and `0` change nothing
//!   (Talos skips zero values; `false` is applied); `null` changes nothing;
//! - lists are appended to, except `cluster.network.podSubnets|serviceSubnets` (replaced),
//!   `machine.network.interfaces` (merged on `interface` or `deviceSelector`),
//!   `….interfaces[].vlans` (merged on `vlanId`) and `ExtensionServiceConfig.configFiles`
//!   (merged on `mountPath`); `cluster.apiServer.auditPolicy` is replaced whole;
//! - `$patch: delete` in a map removes that map, in a keyed list removes the matching
//!   element, and at the top of a typed document removes that document.

use serde::Deserialize as _;
use serde_json::{Map, Value};

/// Why a strategic patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicPatchError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("patch document {doc}: a patch document must be a YAML mapping")]
    NotAMapping { doc: usize },
    #[error("patch document {doc}: the config has no `version: v1alpha1` document to patch")]
    NoV1alpha1 { doc: usize },
    #[error("patch document {doc}: at {path}: cannot merge a {patch} into a {config}")]
    TypeMismatch {
        doc: usize,
        path: String,
        config: &'static str,
        patch: &'static str,
    },
    #[error(
        "patch document {doc}: at {path}: unsupported directive `$patch: {value}` (only `delete`)"
    )]
    Directive {
        doc: usize,
        path: String,
        value: String,
    },
    #[error(
        "patch document {doc}: at {path}: `$patch: delete` in a list that is not merged by key"
    )]
    DeleteInPlainList { doc: usize, path: String },
    #[error("patch document {doc}: `$patch: delete` of the whole v1alpha1 document")]
    DeleteMachineConfig { doc: usize },
}

/// How the list or map at a path merges (paths are map keys only, list indices skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Default,
    Replace,
    KeyedBy(&'static [&'static str]),
}

fn rule_for(kind: Option<&str>, keys: &[&str]) -> Rule {
    match (kind, keys) {
        (None, ["cluster", "network", "podSubnets" | "serviceSubnets"]) => Rule::Replace,
        (None, ["cluster", "apiServer", "auditPolicy"]) => Rule::Replace,
        (None, ["machine", "network", "interfaces"]) => {
            Rule::KeyedBy(&["interface", "deviceSelector"])
        }
        (None, ["machine", "network", "interfaces", "vlans"]) => Rule::KeyedBy(&["vlanId"]),
        (Some("ExtensionServiceConfig"), ["configFiles"]) => Rule::KeyedBy(&["mountPath"]),
        _ => Rule::Default,
    }
}

/// Applies one strategic patch (multi-document YAML text) to `docs`, all or nothing.
pub fn apply(docs: &[Value], patch_yaml: &str) -> Result<Vec<Value>, StrategicPatchError> {
    let mut out = docs.to_vec();
    for (i, de) in yaml_serde::Deserializer::from_str(patch_yaml).enumerate() {
        let doc = i + 1;
        let patch = Value::deserialize(de).map_err(|e| StrategicPatchError::Yaml(e.to_string()))?;
        if patch.is_null() {
            continue;
        }
        let Value::Object(patch) = patch else {
            return Err(StrategicPatchError::NotAMapping { doc });
        };
        let kind = patch.get("kind").and_then(Value::as_str).map(str::to_owned);
        let mut ctx = Ctx {
            doc,
            kind: kind.clone(),
            path: Vec::new(),
        };
        match kind {
            None => {
                if is_delete(&patch, &ctx)? {
                    return Err(StrategicPatchError::DeleteMachineConfig { doc });
                }
                let target = out
                    .iter_mut()
                    .find(|d| d.get("version").and_then(Value::as_str) == Some("v1alpha1"))
                    .ok_or(StrategicPatchError::NoV1alpha1 { doc })?;
                merge_map(target, &patch, &mut ctx)?;
            }
            Some(_) => {
                let same = |d: &Value| {
                    ["apiVersion", "kind", "name"]
                        .iter()
                        .all(|k| d.get(*k) == patch.get(*k))
                };
                let found = out.iter().position(same);
                if is_delete(&patch, &ctx)? {
                    if let Some(at) = found {
                        out.remove(at);
                    }
                    continue;
                }
                match found {
                    Some(at) => merge_map(&mut out[at], &patch, &mut ctx)?,
                    None => {
                        let mut fresh = Value::Object(Map::new());
                        merge_map(&mut fresh, &patch, &mut ctx)?;
                        out.push(fresh);
                    }
                }
            }
        }
    }
    Ok(out)
}

struct Ctx {
    doc: usize,
    /// `kind` of the typed document being patched; `None` for the v1alpha1 document.
    kind: Option<String>,
    /// Where we are, for rules (keys) and errors (keys and `[index]`).
    path: Vec<String>,
}

impl Ctx {
    fn display(&self) -> String {
        if self.path.is_empty() {
            return "the document root".into();
        }
        let mut s = String::new();
        for p in &self.path {
            if !p.starts_with('[') && !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
        s
    }

    fn rule(&self) -> Rule {
        let keys: Vec<&str> = self
            .path
            .iter()
            .filter(|p| !p.starts_with('['))
            .map(String::as_str)
            .collect();
        rule_for(self.kind.as_deref(), &keys)
    }

    fn mismatch(&self, config: &Value, patch: &Value) -> StrategicPatchError {
        StrategicPatchError::TypeMismatch {
            doc: self.doc,
            path: self.display(),
            config: type_name(config),
            patch: type_name(patch),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

const DIRECTIVE: &str = "$patch";

/// Whether a patch mapping carries `$patch: delete` (any other directive is an error).
fn is_delete(patch: &Map<String, Value>, ctx: &Ctx) -> Result<bool, StrategicPatchError> {
    match patch.get(DIRECTIVE) {
        None => Ok(false),
        Some(Value::String(s)) if s == "delete" => Ok(true),
        Some(other) => Err(StrategicPatchError::Directive {
            doc: ctx.doc,
            path: ctx.display(),
            value: match other {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            },
        }),
    }
}

fn merge_map(
    config: &mut Value,
    patch: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Result<(), StrategicPatchError> {
    if config.is_null() {
        *config = Value::Object(Map::new());
    }
    let Value::Object(config_map) = config else {
        return Err(ctx.mismatch(config, &Value::Object(Map::new())));
    };
    for (key, value) in patch {
        if key == DIRECTIVE {
            continue;
        }
        ctx.path.push(key.clone());
        if let Value::Object(inner) = value
            && is_delete(inner, ctx)?
        {
            config_map.remove(key);
            ctx.path.pop();
            continue;
        }
        let existed = config_map.contains_key(key);
        let slot = config_map.entry(key.clone()).or_insert(Value::Null);
        merge_value(slot, value, ctx)?;
        // A key the patch only mentioned with zero values leaves no trace.
        if !existed && slot.is_null() {
            config_map.remove(key);
        }
        ctx.path.pop();
    }
    Ok(())
}

fn merge_value(
    config: &mut Value,
    patch: &Value,
    ctx: &mut Ctx,
) -> Result<(), StrategicPatchError> {
    match patch {
        Value::Null => Ok(()),
        Value::Object(p) => {
            if ctx.rule() == Rule::Replace {
                *config = Value::Null;
            }
            merge_map(config, p, ctx)
        }
        Value::Array(items) => merge_list(config, items, ctx),
        Value::String(s) if s.is_empty() => Ok(()),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(()),
        scalar => {
            let same_kind = std::mem::discriminant(config) == std::mem::discriminant(scalar);
            if !config.is_null() && !same_kind {
                return Err(ctx.mismatch(config, patch));
            }
            *config = scalar.clone();
            Ok(())
        }
    }
}

fn merge_list(
    config: &mut Value,
    items: &[Value],
    ctx: &mut Ctx,
) -> Result<(), StrategicPatchError> {
    if items.is_empty() {
        return Ok(());
    }
    let rule = ctx.rule();
    if config.is_null() || rule == Rule::Replace {
        *config = Value::Array(Vec::new());
    }
    let Value::Array(list) = config else {
        return Err(ctx.mismatch(config, &Value::Array(items.to_vec())));
    };
    for item in items {
        ctx.path.push(format!("[{}]", list.len()));
        let delete = match item {
            Value::Object(m) => is_delete(m, ctx)?,
            _ => false,
        };
        let matched = match rule {
            Rule::KeyedBy(keys) => position_by_key(list, item, keys),
            _ if delete => {
                ctx.path.pop();
                return Err(StrategicPatchError::DeleteInPlainList {
                    doc: ctx.doc,
                    path: ctx.display(),
                });
            }
            _ => None,
        };
        match (matched, delete) {
            (Some(at), true) => {
                list.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => {
                *ctx.path.last_mut().expect("pushed") = format!("[{at}]");
                merge_value(&mut list[at], item, ctx)?;
            }
            (None, false) => {
                let mut fresh = Value::Null;
                merge_value(&mut fresh, item, ctx)?;
                if !fresh.is_null() {
                    list.push(fresh);
                }
            }
        }
        ctx.path.pop();
    }
    Ok(())
}

/// The element of `list` that has the same value as `item` under the first of `keys` that
/// `item` sets.
fn position_by_key(list: &[Value], item: &Value, keys: &[&str]) -> Option<usize> {
    let (key, want) = keys
        .iter()
        .find_map(|k| item.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))?;
    list.iter().position(|e| e.get(key) == Some(want))
}

/// The fuzz property (cargo-fuzz target `strategic_patch`, corpus replay in `cargo test`):
/// any bytes as a strategic patch against a fixed Talos config and a SideroLink document
/// never panic, and a patch that applies once applies again to its own result.
pub fn check_apply(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = vec![
        serde_json::json!({"version": "v1alpha1", "machine": {"network": {"interfaces": [
            {"interface": "eth0", "vlans": [{"vlanId": 10}]}]}, "certSANs": ["a"]},
            "cluster": {"network": {"podSubnets": ["10.244.0.0/16"]}}}),
        serde_json::json!({"apiVersion": "v1alpha1", "kind": "SideroLinkConfig", "apiUrl": "grpc://x"}),
    ];
    if let Ok(once) = apply(&config, text) {
        let _ = apply(&once, text);
    }
}

#[cfg(test)]
mod tests;
