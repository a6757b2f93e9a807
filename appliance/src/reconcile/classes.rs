//! ServerClass membership (Sidero §5.1): accepted, not cordoned, `spec.selector`, and the
//! qualifiers (hardware PartialEqual OR'ed across entries; labelSelectors pure OR; both must
//! pass when both are given). Pure: works on the objects, no store.
//!
//! Works on the JSON form of the class spec, so it follows the model's field names
//! (`qualifiers.hardware[]`, `qualifiers.labelSelectors[]`, `selector.matchLabels`,
//! `selector.matchExpressions`) without depending on their Rust types.

use std::collections::BTreeMap;

use serde_json::Value;

use super::qualify;
use crate::model::{Server, ServerClass};

/// The built-in class that lists every accepted, uncordoned server.
pub const ANY: &str = "any";

/// A class prepared for matching many servers.
#[derive(Debug, Clone)]
pub struct Matcher {
    hardware: Vec<Value>,
    label_selectors: Vec<BTreeMap<String, String>>,
    selector: Value,
}

impl Matcher {
    pub fn new(class: &ServerClass) -> Matcher {
        let spec = serde_json::to_value(&class.spec).unwrap_or(Value::Null);
        let q = spec.get("qualifiers").cloned().unwrap_or(Value::Null);
        let hardware = q
            .get("hardware")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let label_selectors = q
            .get("labelSelectors")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Matcher {
            hardware,
            label_selectors,
            selector: spec.get("selector").cloned().unwrap_or(Value::Null),
        }
    }

    /// Whether `server` is a member of the class.
    pub fn matches(&self, server: &Server) -> bool {
        if !server.spec.accepted || server.spec.cordoned {
            return false;
        }
        let labels = &server.metadata.labels;
        if !selector_matches(&self.selector, labels) {
            return false;
        }
        if !qualify::labels_qualify(&self.label_selectors, labels) {
            return false;
        }
        if self.hardware.is_empty() {
            return true;
        }
        let hw = serde_json::to_value(&server.spec.hardware).unwrap_or(Value::Null);
        qualify::hardware_qualifies(&self.hardware, &hw)
    }
}

/// Kubernetes LabelSelector semantics (matchLabels AND matchExpressions; empty = all).
/// An expression with an unknown operator matches nothing.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) else {
        return true;
    };
    exprs.iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let value = labels.get(key).map(String::as_str);
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => value.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => !value.is_some_and(|v| values.contains(&v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            _ => false,
        }
    })
}
