//! `kubectl get` output: the `Table` the apiserver returns when asked (`Accept: …;as=Table`),
//! with a CRD's printer columns evaluated by a JSONPath subset (`.a.b`, escaped dots
//! `.a\.b/c`, `[?(@.k=="v")]` filters, `[n]`), as the apiserver's printer formats cells.

use super::types::ResourceType;
use serde_json::{Value, json};

/// The values `path` selects in `obj` (a filter can select several).
pub fn select(obj: &Value, path: &str) -> Result<Vec<Value>, String> {
    let mut cur = vec![obj.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[?(@.") {
            let end = r
                .find(")]")
                .ok_or(format!("unterminated filter in {path}"))?;
            let (cond, after) = (&r[..end], &r[end + 2..]);
            let (key, want) = cond
                .split_once("==")
                .ok_or(format!("unsupported filter {cond}"))?;
            let want: Value = serde_json::from_str(want.trim())
                .map_err(|_| format!("bad filter value in {cond}"))?;
            cur = cur
                .iter()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .filter(|item| item.get(key.trim()) == Some(&want))
                .collect();
            rest = after;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or(format!("unterminated index in {path}"))?;
            let i: usize = r[..end]
                .parse()
                .map_err(|_| format!("unsupported index in {path}"))?;
            cur = cur.iter().filter_map(|v| v.get(i).cloned()).collect();
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let mut key = String::new();
            let mut chars = r.char_indices().peekable();
            let mut consumed = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            key.push(n);
                        }
                    }
                    '.' | '[' => {
                        consumed = i;
                        break;
                    }
                    _ => key.push(c),
                }
            }
            cur = cur.iter().filter_map(|v| v.get(&key).cloned()).collect();
            rest = &r[consumed..];
        } else {
            return Err(format!("unsupported JSONPath {path}"));
        }
    }
    Ok(cur)
}

/// One cell as the apiserver's printer renders a column value.
fn cell(values: &[Value], type_: &str) -> Value {
    match values {
        [] => Value::Null,
        [v] if type_ == "date" || !v.is_object() && !v.is_array() => match (type_, v) {
            ("string", Value::Bool(b)) => json!(b.to_string()),
            ("string", Value::Number(n)) => json!(n.to_string()),
            _ => v.clone(),
        },
        many => {
            let parts: Vec<String> = many
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => format!(
                        "[{}]",
                        a.iter()
                            .map(|x| x.as_str().map_or(x.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    other => other.to_string(),
                })
                .collect();
            json!(parts.join(","))
        }
    }
}

/// The `Table` for `objects` of type `t`.
pub fn table(t: &ResourceType, objects: &[Value], resource_version: &str) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let columns: Vec<Value> = if t.columns.is_empty() {
        vec![
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "CreationTimestamp"}),
        ]
    } else {
        t.columns.clone()
    };
    for c in &columns {
        defs.push(json!({
            "name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")), "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &columns {
                let values = select(o, c["jsonPath"].as_str().unwrap_or("")).unwrap_or_default();
                cells.push(cell(&values, c["type"].as_str().unwrap_or("string")));
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version}, "columnDefinitions": defs, "rows": rows})
}
