//! Reading YAML documents into plain JSON values, strictly: a mapping that repeats a key is
//! an error (as `kubectl` / sigs.k8s.io/yaml strict decoding treat it), keys must be strings,
//! and nesting is bounded so hostile input cannot exhaust the stack.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::ParseObjectError;

/// Deepest nesting accepted. Sidero objects nest about 8 levels; config patch values more.
pub const MAX_DEPTH: usize = 64;

/// The documents of a YAML stream, each read by [`StrictValue`], in order; a document that
/// does not read is a [`ParseObjectError::Syntax`] naming it (1-based).
pub fn strict_documents(text: &str) -> impl Iterator<Item = Result<Value, ParseObjectError>> {
    yaml_serde::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, de)| {
            StrictValue::new()
                .deserialize(de)
                .map_err(|e| ParseObjectError::Syntax {
                    document: i + 1,
                    message: e.to_string(),
                })
        })
}

/// Deserialises any self-describing input into a `serde_json::Value`, refusing duplicate
/// keys, non-string keys and nesting deeper than [`MAX_DEPTH`].
pub struct StrictValue {
    depth: usize,
}

impl StrictValue {
    pub fn new() -> Self {
        StrictValue { depth: 0 }
    }
}

impl Default for StrictValue {
    fn default() -> Self {
        Self::new()
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl StrictValue {
    fn nested<E: de::Error>(&self) -> Result<StrictValue, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format_args!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.nested()?)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self.nested()?)? {
            let Value::String(key) = key else {
                return Err(de::Error::custom(format_args!(
                    "mapping key {key} is not a string"
                )));
            };
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{key}` in a mapping"
                )));
            }
            let value = map.next_value_seed(self.nested()?)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Prints a JSON value as block-style YAML the way `kubectl get -o yaml` lays it out (keys
/// sorted, list items at their key's indentation, multi-line text as `|` blocks), quoting
/// every string a YAML 1.1 reader (kubectl's go-yaml) or a YAML 1.2 reader could take for
/// anything but that string: `"on"`, `"yes"`, `"0001"`, `"10.0.0.1"`, `"a: b"`.
pub fn to_yaml_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        scalar => {
            emit_inline(scalar, 0, &mut out);
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn emit_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for (i, k) in keys.into_iter().enumerate() {
        // The first key of a list item continues the `- ` line.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&scalar_string(k));
        out.push(':');
        match &m[k] {
            Value::Object(c) if !c.is_empty() => {
                out.push('\n');
                emit_map(c, indent + 2, out);
            }
            Value::Array(c) if !c.is_empty() => {
                out.push('\n');
                emit_seq(c, indent, out);
            }
            v => {
                out.push(' ');
                emit_inline(v, indent, out);
                out.push('\n');
            }
        }
    }
}

fn emit_seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        if !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str("- ");
        match v {
            Value::Object(c) if !c.is_empty() => emit_map(c, indent + 2, out),
            Value::Array(c) if !c.is_empty() => emit_seq(c, indent + 2, out),
            v => {
                emit_inline(v, indent, out);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or empty collection) after `key: ` or `- `; a `|` block continues on the
/// following lines, indented past `indent`.
fn emit_inline(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        Value::String(s) => {
            if literal_block_ok(s) {
                let body = s.strip_suffix('\n');
                out.push_str(if body.is_some() { "|" } else { "|-" });
                for line in body.unwrap_or(s).split('\n') {
                    out.push('\n');
                    if !line.is_empty() {
                        pad(out, indent + 2);
                        out.push_str(line);
                    }
                }
            } else {
                out.push_str(&scalar_string(s));
            }
        }
    }
}

/// Multi-line text that a `|`/`|-` block reproduces exactly: one optional final newline,
/// no blank-but-spaced lines, first line not indented, only printable characters and tabs.
fn literal_block_ok(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    body.contains('\n')
        && !body.starts_with([' ', '\t', '\n'])
        && !body.ends_with('\n')
        && body
            .split('\n')
            .all(|l| l.is_empty() || !l.trim().is_empty())
        && body.split('\n').all(|l| !l.ends_with([' ', '\t']))
        && body
            .chars()
            .all(|c| c == '\n' || c == '\t' || plain_printable(c))
}

/// Printable in YAML and not a line break in YAML 1.1 (NEL, LS, PS) nor a BOM.
fn plain_printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{A0}'..='\u{2027}' | '\u{202A}'..='\u{D7FF}' | '\u{E000}'..='\u{FEFE}' | '\u{FF00}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A string as a plain scalar when that is unambiguous, else double-quoted.
fn scalar_string(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// Conservative: starts with a letter or `/`, only "boring" characters, not a word YAML 1.1
/// reads as a boolean or null.
fn plain_ok(s: &str) -> bool {
    const RESERVED: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && !s.ends_with(' ')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._/@+=,()-".contains(c))
        && !RESERVED.iter().any(|r| s.eq_ignore_ascii_case(r))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if plain_printable(c) => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}
