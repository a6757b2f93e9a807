//! Sidero's hardware qualifier matching (`PartialEqual`, SCM/api/v1alpha2/serverclass_filter.go)
//! over the JSON form of the v1alpha2 hardware layout, and `labelSelectors` matching. Pure.
//!
//! Partial equality of a qualifier `q` against a server's value `s`:
//! - a zero/empty field in `q` (null, "", 0, false, [], {}) is ignored;
//! - objects: every non-zero field of `q` must partially equal the same field of `s`;
//! - arrays: compared BY INDEX (`q[0]` vs `s[0]`…); a `q` longer than `s` fails;
//! - scalars: exactly equal (strings case-sensitive; numbers by value).

use std::collections::BTreeMap;

use serde_json::Value;

/// Zero values are "not set" in a qualifier (Go's zero value semantics).
pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// Whether qualifier `q` partially equals server value `s`.
pub fn partial_equal(q: &Value, s: &Value) -> bool {
    if is_zero(q) {
        return true;
    }
    match (q, s) {
        // A struct whose set fields all match (or which has none set) passes, whatever `s` is.
        (Value::Object(qm), _) => qm
            .iter()
            .all(|(k, qv)| partial_equal(qv, s.get(k).unwrap_or(&Value::Null))),
        (Value::Array(qa), Value::Array(sa)) => {
            qa.len() <= sa.len() && qa.iter().zip(sa).all(|(qv, sv)| partial_equal(qv, sv))
        }
        (Value::Array(_), _) => false,
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        _ => q == s,
    }
}

/// `qualifiers.hardware`: empty passes; otherwise ANY entry must partially equal the
/// server's hardware (a server without hardware only passes all-zero entries).
pub fn hardware_qualifies(qualifiers: &[Value], hardware: &Value) -> bool {
    qualifiers.is_empty() || qualifiers.iter().any(|q| partial_equal(q, hardware))
}

/// `qualifiers.labelSelectors`: empty passes; otherwise ANY key/value pair of ANY map must
/// equal one of the server's labels (pure OR, as Sidero's code does).
pub fn labels_qualify(
    selectors: &[BTreeMap<String, String>],
    labels: &BTreeMap<String, String>,
) -> bool {
    selectors.is_empty()
        || selectors
            .iter()
            .any(|m| m.iter().any(|(k, v)| labels.get(k) == Some(v)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn server_hw() -> Value {
        json!({
            "system": {"uuid": "4c4c4544-0000-1000-8000-000000000001", "manufacturer": "QEMU", "productName": "Standard PC"},
            "compute": {
                "totalCoreCount": 8, "totalThreadCount": 16, "processorCount": 2,
                "processors": [
                    {"manufacturer": "Intel", "productName": "Xeon E5", "coreCount": 4, "threadCount": 8, "speed": 2400},
                    {"manufacturer": "AMD", "productName": "EPYC", "coreCount": 4, "threadCount": 8, "speed": 2400}
                ]
            },
            "memory": {"totalSize": "8 GB", "moduleCount": 1, "modules": [{"size": 8192, "type": "DDR4"}]},
            "storage": {"totalSize": "20 GB", "deviceCount": 2, "devices": [
                {"type": "HDD", "size": 10737418240u64, "deviceName": "/dev/vda"},
                {"type": "HDD", "size": 10737418240u64, "deviceName": "/dev/vdb"}
            ]}
        })
    }

    #[test]
    fn hardware_qualifier_table() {
        let hw = server_hw();
        let cases: &[(&str, Value, bool)] = &[
            ("empty qualifier matches everything", json!({}), true),
            (
                "zero fields are ignored",
                json!({"compute": {"processorCount": 0, "processors": []}, "system": {"manufacturer": ""}}),
                true,
            ),
            (
                "cpu count equal",
                json!({"compute": {"processorCount": 2}}),
                true,
            ),
            (
                "cpu count differs",
                json!({"compute": {"processorCount": 1}}),
                false,
            ),
            (
                "core count equal",
                json!({"compute": {"totalCoreCount": 8}}),
                true,
            ),
            (
                "memory string exact",
                json!({"memory": {"totalSize": "8 GB"}}),
                true,
            ),
            (
                "memory string case/spacing matters",
                json!({"memory": {"totalSize": "8GB"}}),
                false,
            ),
            (
                "string case-sensitive",
                json!({"system": {"manufacturer": "qemu"}}),
                false,
            ),
            (
                "processors[0] positional match",
                json!({"compute": {"processors": [{"manufacturer": "Intel"}]}}),
                true,
            ),
            (
                "processors[0] vs the second socket's vendor fails",
                json!({"compute": {"processors": [{"manufacturer": "AMD"}]}}),
                false,
            ),
            (
                "zero element skips index 0, checks index 1",
                json!({"compute": {"processors": [{}, {"manufacturer": "AMD"}]}}),
                true,
            ),
            (
                "qualifier slice longer than server's fails",
                json!({"compute": {"processors": [{}, {}, {}]}}),
                false,
            ),
            (
                "AND across fields",
                json!({"compute": {"processorCount": 2}, "memory": {"totalSize": "16 GB"}}),
                false,
            ),
            (
                "nested storage device",
                json!({"storage": {"devices": [{"deviceName": "/dev/vda", "type": "HDD"}]}}),
                true,
            ),
            (
                "field the server lacks",
                json!({"system": {"family": "X"}}),
                false,
            ),
            (
                "number by value",
                json!({"compute": {"processorCount": 2.0}}),
                true,
            ),
        ];
        for (name, q, want) in cases {
            assert_eq!(partial_equal(q, &hw), *want, "{name}");
        }
    }

    #[test]
    fn hardware_entries_are_ored() {
        let hw = server_hw();
        assert!(hardware_qualifies(&[], &hw));
        assert!(hardware_qualifies(
            &[
                json!({"compute": {"processorCount": 4}}),
                json!({"compute": {"processorCount": 2}})
            ],
            &hw
        ));
        assert!(!hardware_qualifies(
            &[json!({"compute": {"processorCount": 4}})],
            &hw
        ));
        // A server that reported no hardware only matches zero qualifiers.
        assert!(!hardware_qualifies(
            &[json!({"compute": {"processorCount": 2}})],
            &Value::Null
        ));
        assert!(hardware_qualifies(&[json!({"compute": {}})], &Value::Null));
    }

    #[test]
    fn label_selectors_are_a_pure_or() {
        let labels: BTreeMap<String, String> = [
            ("rack".to_string(), "r1".to_string()),
            ("zone".to_string(), "a".to_string()),
        ]
        .into();
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_qualify(&[], &labels));
        assert!(labels_qualify(&[m(&[("rack", "r1")])], &labels));
        // Any pair in a map is enough (not AND, despite Sidero's docs).
        assert!(labels_qualify(
            &[m(&[("rack", "r9"), ("zone", "a")])],
            &labels
        ));
        // Any map is enough.
        assert!(labels_qualify(
            &[m(&[("rack", "r9")]), m(&[("zone", "a")])],
            &labels
        ));
        assert!(!labels_qualify(
            &[m(&[("rack", "r9")]), m(&[("zone", "b")])],
            &labels
        ));
        assert!(!labels_qualify(&[m(&[("rack", "r1")])], &BTreeMap::new()));
    }
}
