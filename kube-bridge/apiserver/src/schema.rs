//! A structural-schema checker for CRD objects, doing what kube-apiserver does with a CRD's
//! `openAPIV3Schema` on create/update: drop `null`s of non-nullable fields, apply `default`s,
//! then check types, `int32`/`int64` ranges, `enum`, string lengths, `required`, and report
//! fields the schema does not know and prune them (kept only under
//! `x-kubernetes-preserve-unknown-fields`).
//! `metadata` is checked by the API server itself, not here. Errors carry the field path in
//! the apiserver's spelling (`spec.hardware.compute.processors[0].speed`).

use serde_json::{Map, Value};
use std::fmt;

/// One problem with one field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub kind: Problem,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    Required,
    Type { expected: String, got: &'static str },
    Range { format: String },
    Enum { allowed: Vec<Value> },
    Length { min: Option<u64>, max: Option<u64> },
    Unknown,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match &self.kind {
            Problem::Required => write!(f, "{p}: Required value"),
            Problem::Type { expected, got } => {
                write!(
                    f,
                    "{p}: Invalid value: \"{got}\": {p} in body must be of type {expected}: \"{got}\""
                )
            }
            Problem::Range { format } => write!(
                f,
                "{p}: Invalid value: {p} in body is out of range for {format}"
            ),
            Problem::Enum { allowed } => {
                let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
                write!(
                    f,
                    "{p}: Unsupported value: supported values: {}",
                    allowed.join(", ")
                )
            }
            Problem::Length { min, max } => {
                write!(
                    f,
                    "{p}: Invalid value: length must be within [{}, {}]",
                    min.unwrap_or(0),
                    max.map_or("∞".into(), |m| m.to_string())
                )
            }
            Problem::Unknown => write!(f, "unknown field \"{p}\""),
        }
    }
}

/// Prunes nulls and unknown fields, applies defaults and checks `obj` (a whole object) against
/// `schema` (the CRD version's `openAPIV3Schema`). Returns the errors (pruned unknown fields
/// as [`Problem::Unknown`]), empty when the object is valid.
pub fn admit(schema: &Value, obj: &mut Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check(schema, obj, "", &mut errors, true);
    errors
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check(schema: &Value, v: &mut Value, path: &str, errors: &mut Vec<FieldError>, root: bool) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let Some(expected) = schema.get("type").and_then(Value::as_str) else {
        if !preserve {
            errors.push(FieldError {
                path: path.into(),
                kind: Problem::Type {
                    expected: "<none>".into(),
                    got: json_type(v),
                },
            });
        }
        return;
    };
    let got = json_type(v);
    let type_ok = got == expected || (expected == "number" && got == "integer");
    if !type_ok {
        errors.push(FieldError {
            path: path.into(),
            kind: Problem::Type {
                expected: expected.into(),
                got,
            },
        });
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errors.push(FieldError {
            path: path.into(),
            kind: Problem::Enum {
                allowed: allowed.clone(),
            },
        });
    }
    match v {
        Value::Number(n) => {
            let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
            let in_range = match format {
                "int32" => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "int64" => n.as_i64().is_some(),
                _ => true,
            };
            if !in_range {
                errors.push(FieldError {
                    path: path.into(),
                    kind: Problem::Range {
                        format: format.into(),
                    },
                });
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n.as_f64().is_some_and(|x| x < min)
            {
                errors.push(FieldError {
                    path: path.into(),
                    kind: Problem::Range {
                        format: format!("minimum {min}"),
                    },
                });
            }
        }
        Value::String(s) => {
            let (min, max) = (
                schema.get("minLength").and_then(Value::as_u64),
                schema.get("maxLength").and_then(Value::as_u64),
            );
            let len = s.chars().count() as u64;
            if min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m) {
                errors.push(FieldError {
                    path: path.into(),
                    kind: Problem::Length { min, max },
                });
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors, false);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, errors, root, preserve),
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
    root: bool,
    preserve: bool,
) {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let extra = schema.get("additionalProperties").filter(|a| a.is_object());
    // Nulls of non-nullable fields are pruned before defaulting (as the apiserver does).
    map.retain(|k, v| {
        let nullable =
            props.get(k).or(extra).and_then(|s| s.get("nullable")) == Some(&Value::Bool(true));
        !v.is_null() || nullable
    });
    for (k, s) in props {
        if let Some(d) = s.get("default")
            && !map.contains_key(k)
        {
            map.insert(k.clone(), d.clone());
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errors.push(FieldError {
                    path: join(path, r),
                    kind: Problem::Required,
                });
            }
        }
    }
    for (k, v) in map.iter_mut() {
        let child = join(path, k);
        if root && k == "metadata" {
            if !v.is_object() {
                errors.push(FieldError {
                    path: child,
                    kind: Problem::Type {
                        expected: "object".into(),
                        got: json_type(v),
                    },
                });
            }
            continue;
        }
        match props.get(k).or(extra) {
            Some(s) => check(s, v, &child, errors, false),
            None if preserve => {}
            None => errors.push(FieldError {
                path: child,
                kind: Problem::Unknown,
            }),
        }
    }
    // Unknown fields are pruned (reported above; the caller decides whether that is an error).
    if !preserve {
        map.retain(|k, _| (root && k == "metadata") || props.contains_key(k) || extra.is_some());
    }
}
