//! RFC 6902 JSON Patch over `serde_json::Value`, applied by the `json-patch` crate (the one
//! kube-rs uses). Pure. A patch is applied to a copy: on any failing operation the document
//! is left as it was and the error names the operation and why.
//!
//! Hand-written here, because the crate lacks them:
//! - reading the operations: the crate's serde reader answers "unknown variant" or
//!   "missing field"; we say which operation and which member (`op`, `path`, `value`,
//!   `from`) is wrong, and what a JSON pointer needs;
//! - `test`: the crate compares with `Value`'s `==`, so `1` does not equal `1.0`; RFC 6902
//!   §4.6 compares numbers by value, as we do;
//! - explaining a failure: the crate says only "path is invalid"; [`explain`] walks the
//!   pointer over the document the operation saw and says which token is missing, out of
//!   bounds, not an array index, or under a scalar.

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{
    AddOperation, CopyOperation, MoveOperation, PatchErrorKind, PatchOperation, RemoveOperation,
    ReplaceOperation,
};
use serde_json::Value;

/// Why a patch could not be applied or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyPatchError {
    #[error("patch is not a JSON array of operations")]
    NotAnArray,
    #[error("operation {index}: {message}")]
    Malformed { index: usize, message: String },
    #[error("operation {index} ({op} {path}): {message}")]
    Failed {
        index: usize,
        op: String,
        path: String,
        message: String,
    },
}

/// Applies every operation of `patch` (a JSON array) to `doc`, all or nothing.
pub fn apply(doc: &Value, patch: &Value) -> Result<Value, ApplyPatchError> {
    let ops = patch.as_array().ok_or(ApplyPatchError::NotAnArray)?;
    let mut out = doc.clone();
    for (index, raw) in ops.iter().enumerate() {
        let op = read_op(index, raw)?;
        let fail = |message: String| ApplyPatchError::Failed {
            index,
            op: raw["op"].as_str().unwrap_or_default().to_string(),
            path: op.path().to_string(),
            message,
        };
        if let PatchOperation::Test(t) = &op {
            let target = resolve(&out, &t.path).map_err(fail)?;
            if !json_eq(target, &t.value) {
                return Err(fail(format!("value is {target}, expected {}", t.value)));
            }
            continue;
        }
        // One operation at a time: on failure the crate has undone it, so `out` is the
        // document the operation saw, which `explain` needs.
        json_patch::patch(&mut out, std::slice::from_ref(&op))
            .map_err(|e| fail(explain(&out, &op, &e.kind)))?;
    }
    Ok(out)
}

/// One operation, typed for the crate, with our errors for what is malformed.
fn read_op(index: usize, op: &Value) -> Result<PatchOperation, ApplyPatchError> {
    let malformed = |message: String| ApplyPatchError::Malformed { index, message };
    if !op.is_object() {
        return Err(malformed("an operation must be a JSON object".into()));
    }
    let field = |name: &str| {
        op.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("missing string member `{name}`")))
    };
    let name = field("op")?;
    let path_str = field("path")?;
    let failed = |message: String| ApplyPatchError::Failed {
        index,
        op: name.to_string(),
        path: path_str.to_string(),
        message,
    };
    let pointer = |p: &str| parse_pointer(p).map_err(failed);
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| malformed(format!("`{name}` needs a `value`")))
    };
    let path = pointer(path_str)?;
    Ok(match name {
        "add" => PatchOperation::Add(AddOperation {
            path,
            value: value()?,
        }),
        "remove" => PatchOperation::Remove(RemoveOperation { path }),
        "replace" => PatchOperation::Replace(ReplaceOperation {
            path,
            value: value()?,
        }),
        "test" => PatchOperation::Test(json_patch::TestOperation {
            path,
            value: value()?,
        }),
        "move" => PatchOperation::Move(MoveOperation {
            from: pointer(field("from")?)?,
            path,
        }),
        "copy" => PatchOperation::Copy(CopyOperation {
            from: pointer(field("from")?)?,
            path,
        }),
        other => {
            return Err(malformed(format!(
                "unknown op `{other}` (expected add, remove, replace, move, copy or test)"
            )));
        }
    })
}

/// RFC 6901 pointer, with our wording for the two ways one can be wrong.
fn parse_pointer(p: &str) -> Result<PointerBuf, String> {
    use json_patch::jsonptr::ParseError;
    PointerBuf::parse(p).map_err(|e| match e.original() {
        ParseError::NoLeadingSlash => {
            format!("JSON pointer `{p}` must be empty or start with '/'")
        }
        ParseError::InvalidEncoding { .. } => {
            format!("JSON pointer `{p}`: `~` must be followed by 0 or 1")
        }
    })
}

/// Why the crate refused `op` on `doc` (the document before the operation).
fn explain(doc: &Value, op: &PatchOperation, kind: &PatchErrorKind) -> String {
    let parent_then_last = |path: &Pointer, allow_end: bool| -> String {
        let Some((parent, last)) = path.split_back() else {
            return "cannot remove the whole document".into();
        };
        match resolve(doc, parent) {
            Err(e) => e,
            Ok(Value::Object(m)) if m.contains_key(last.decoded().as_ref()) || allow_end => {
                kind.to_string()
            }
            Ok(Value::Object(_)) => format!("`{}` does not exist", last.decoded()),
            Ok(Value::Array(a)) => array_index(&last.decoded(), a.len(), allow_end)
                .err()
                .unwrap_or_else(|| kind.to_string()),
            Ok(_) => format!("parent `{parent}` is not an object or array"),
        }
    };
    match (kind, op) {
        (PatchErrorKind::CannotMoveInsideItself, PatchOperation::Move(m)) => {
            format!("cannot move `{}` into its own child", m.from)
        }
        (PatchErrorKind::InvalidFromPointer, PatchOperation::Move(m)) => {
            parent_then_last(&m.from, false)
        }
        (PatchErrorKind::InvalidFromPointer, PatchOperation::Copy(c)) => resolve(doc, &c.from)
            .err()
            .unwrap_or_else(|| kind.to_string()),
        (_, PatchOperation::Add(_) | PatchOperation::Move(_) | PatchOperation::Copy(_)) => {
            parent_then_last(op.path(), true)
        }
        (_, PatchOperation::Remove(_)) => parent_then_last(op.path(), false),
        _ => resolve(doc, op.path())
            .err()
            .unwrap_or_else(|| kind.to_string()),
    }
}

/// The value at `path`, or which token of it fails and why.
fn resolve<'a>(doc: &'a Value, path: &Pointer) -> Result<&'a Value, String> {
    let mut cur = doc;
    let mut here = String::new();
    for t in path.tokens() {
        let t = t.decoded();
        let shown = if here.is_empty() { "/" } else { &here };
        cur = match cur {
            Value::Object(m) => m
                .get(t.as_ref())
                .ok_or_else(|| format!("`{t}` does not exist under `{shown}`"))?,
            Value::Array(a) => &a[array_index(&t, a.len(), false)?],
            _ => return Err(format!("`{shown}` is not an object or array")),
        };
        here.push('/');
        here.push_str(&t);
    }
    Ok(cur)
}

/// RFC 6901 array index: digits without a leading zero, `-` (one past the end) only where
/// an element may be added.
fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let digits = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !digits {
        return Err(format!("`{token}` is not an array index"));
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("array index `{token}` is too large"))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} is out of bounds (length {len})"));
    }
    Ok(i)
}

/// RFC 6902 `test` equality: numbers compare by value (1 == 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(doc: Value, patch: Value, want: Value) {
        assert_eq!(apply(&doc, &patch).unwrap(), want, "patch {patch}");
    }

    fn err(doc: Value, patch: Value, contains: &str) {
        let e = apply(&doc, &patch).unwrap_err().to_string();
        assert!(e.contains(contains), "{e} should contain {contains}");
    }

    #[test]
    fn rfc6902_appendix_a_examples() {
        // A.1 add an object member
        ok(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz","value":"qux"}]),
            json!({"baz":"qux","foo":"bar"}),
        );
        // A.2 add an array element
        ok(
            json!({"foo":["bar","baz"]}),
            json!([{"op":"add","path":"/foo/1","value":"qux"}]),
            json!({"foo":["bar","qux","baz"]}),
        );
        // A.3 remove an object member
        ok(
            json!({"baz":"qux","foo":"bar"}),
            json!([{"op":"remove","path":"/baz"}]),
            json!({"foo":"bar"}),
        );
        // A.4 remove an array element
        ok(
            json!({"foo":["bar","qux","baz"]}),
            json!([{"op":"remove","path":"/foo/1"}]),
            json!({"foo":["bar","baz"]}),
        );
        // A.5 replace a value
        ok(
            json!({"baz":"qux","foo":"bar"}),
            json!([{"op":"replace","path":"/baz","value":"boo"}]),
            json!({"baz":"boo","foo":"bar"}),
        );
        // A.6 move a value
        ok(
            json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
            json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
            json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
        );
        // A.7 move an array element
        ok(
            json!({"foo":["all","grass","cows","eat"]}),
            json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
            json!({"foo":["all","cows","eat","grass"]}),
        );
        // A.8 test success
        ok(
            json!({"baz":"qux","foo":["a",2,"c"]}),
            json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]),
            json!({"baz":"qux","foo":["a",2,"c"]}),
        );
        // A.9 test failure
        err(
            json!({"baz":"qux"}),
            json!([{"op":"test","path":"/baz","value":"bar"}]),
            "expected \"bar\"",
        );
        // A.10 add a nested member object
        ok(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
            json!({"foo":"bar","child":{"grandchild":{}}}),
        );
        // A.12 add to a nonexistent target
        err(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
            "does not exist",
        );
        // A.14 ~ escape ordering
        ok(
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":10}]),
            json!({"/":9,"~1":10}),
        );
        // A.15 comparing strings and numbers
        err(
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":"10"}]),
            "expected",
        );
        // A.16 add an array value
        ok(
            json!({"foo":["bar"]}),
            json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
            json!({"foo":["bar",["abc","def"]]}),
        );
    }

    #[test]
    fn copy_replace_root_and_number_equality() {
        ok(
            json!({"a":{"b":1}}),
            json!([{"op":"copy","from":"/a","path":"/c"}]),
            json!({"a":{"b":1},"c":{"b":1}}),
        );
        ok(
            json!({"a":1}),
            json!([{"op":"replace","path":"","value":[1]}]),
            json!([1]),
        );
        ok(
            json!({"a":1}),
            json!([{"op":"test","path":"/a","value":1.0}]),
            json!({"a":1}),
        );
    }

    #[test]
    fn failures_leave_the_document_untouched_and_say_why() {
        let doc = json!({"machine":{"install":{"disk":"/dev/sda"}}});
        // Second op fails: the first is not applied either (apply returns an error only).
        err(
            doc.clone(),
            json!([{"op":"replace","path":"/machine/install/disk","value":"/dev/vda"},{"op":"replace","path":"/machine/network","value":1}]),
            "operation 1 (replace /machine/network)",
        );
        err(doc.clone(), json!({"op":"add"}), "not a JSON array");
        err(
            doc.clone(),
            json!([{"op":"frob","path":"/a"}]),
            "unknown op `frob`",
        );
        err(
            doc.clone(),
            json!([{"path":"/a"}]),
            "missing string member `op`",
        );
        err(
            doc.clone(),
            json!([{"op":"add","path":"/a"}]),
            "needs a `value`",
        );
        err(
            doc.clone(),
            json!([{"op":"add","path":"a","value":1}]),
            "must be empty or start with '/'",
        );
        err(
            doc.clone(),
            json!([{"op":"remove","path":""}]),
            "whole document",
        );
        err(
            doc.clone(),
            json!([{"op":"move","from":"/machine","path":"/machine/x"}]),
            "own child",
        );
        err(
            json!({"a":[1]}),
            json!([{"op":"add","path":"/a/2","value":1}]),
            "out of bounds",
        );
        err(
            json!({"a":[1]}),
            json!([{"op":"add","path":"/a/01","value":1}]),
            "not an array index",
        );
        err(
            json!({"a":[]}),
            json!([{"op":"remove","path":"/a/0"}]),
            "out of bounds",
        );
        err(
            json!({"a":"s"}),
            json!([{"op":"add","path":"/a/b","value":1}]),
            "not an object or array",
        );
        err(
            json!({}),
            json!([{"op":"add","path":"/~2","value":1}]),
            "`~` must be followed",
        );
        err(json!({}), json!([7]), "must be a JSON object");
    }

    /// Bounded fuzz smoke: random pointers/ops never panic.
    #[test]
    fn random_patches_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let parts = [
            "a",
            "0",
            "-",
            "1",
            "b",
            "~0",
            "~1",
            "",
            "00",
            "99999999999999999999999",
        ];
        let ops = ["add", "remove", "replace", "move", "copy", "test", "x"];
        let doc = json!({"a":[1,{"b":[2,3]}],"b":{"0":null}});
        for _ in 0..5000 {
            let mut ptr = || {
                let n = (next() % 4) as usize;
                (0..n)
                    .map(|_| format!("/{}", parts[(next() % parts.len() as u64) as usize]))
                    .collect::<String>()
            };
            let p = ptr();
            let f = ptr();
            let op = ops[(next() % ops.len() as u64) as usize];
            let patch = json!([{"op": op, "path": p, "from": f, "value": {"v": 1}}]);
            let _ = apply(&doc, &patch);
        }
    }
}
