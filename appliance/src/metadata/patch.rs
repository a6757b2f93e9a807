//! RFC 6902 JSON Patch (add, remove, replace, move, copy, test) over `serde_json::Value`,
//! with RFC 6901 JSON pointers. Pure. A patch is applied to a copy: on any failing
//! operation the document is left as it was and the error names the operation and why.

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
    for (index, op) in ops.iter().enumerate() {
        apply_one(&mut out, index, op)?;
    }
    Ok(out)
}

fn field<'a>(op: &'a Value, index: usize, name: &str) -> Result<&'a str, ApplyPatchError> {
    op.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApplyPatchError::Malformed {
            index,
            message: format!("missing string member `{name}`"),
        })
}

fn apply_one(doc: &mut Value, index: usize, op: &Value) -> Result<(), ApplyPatchError> {
    if !op.is_object() {
        return Err(ApplyPatchError::Malformed {
            index,
            message: "an operation must be a JSON object".into(),
        });
    }
    let name = field(op, index, "op")?;
    let path = field(op, index, "path")?;
    let fail = |message: String| ApplyPatchError::Failed {
        index,
        op: name.to_string(),
        path: path.to_string(),
        message,
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| ApplyPatchError::Malformed {
                index,
                message: format!("`{name}` needs a `value`"),
            })
    };
    let tokens = parse_pointer(path).map_err(fail)?;
    match name {
        "add" => add(doc, &tokens, value()?).map_err(fail),
        "remove" => remove(doc, &tokens).map(|_| ()).map_err(fail),
        "replace" => {
            let v = value()?;
            let target = get_mut(doc, &tokens).map_err(fail)?;
            *target = v;
            Ok(())
        }
        "test" => {
            let v = value()?;
            let target = get_mut(doc, &tokens).map_err(fail)?;
            if !json_eq(target, &v) {
                return Err(fail(format!("value is {target}, expected {v}")));
            }
            Ok(())
        }
        "move" | "copy" => {
            let from = field(op, index, "from")?;
            let from_tokens = parse_pointer(from).map_err(fail)?;
            if name == "move" {
                if from_tokens.len() < tokens.len() && tokens.starts_with(&from_tokens) {
                    return Err(fail(format!("cannot move `{from}` into its own child")));
                }
                let v = remove(doc, &from_tokens).map_err(fail)?;
                add(doc, &tokens, v).map_err(fail)
            } else {
                let v = get_mut(doc, &from_tokens).map_err(fail)?.clone();
                add(doc, &tokens, v).map_err(fail)
            }
        }
        other => Err(ApplyPatchError::Malformed {
            index,
            message: format!(
                "unknown op `{other}` (expected add, remove, replace, move, copy or test)"
            ),
        }),
    }
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

/// RFC 6901: "" is the whole document; "/a/b" → ["a", "b"]; "~1" → "/", "~0" → "~".
pub fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!(
            "JSON pointer `{p}` must be empty or start with '/'"
        ));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "JSON pointer `{p}`: `~` must be followed by 0 or 1"
                            ));
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let ok = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let i: usize = if ok {
        token
            .parse()
            .map_err(|_| format!("array index `{token}` is too large"))?
    } else {
        return Err(format!("`{token}` is not an array index"));
    };
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

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for (depth, t) in tokens.iter().enumerate() {
        let here = || format!("/{}", tokens[..depth].join("/"));
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("`{t}` does not exist under `{}`", here()))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("`{}` is not an object or array", here())),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], v: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = v;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), v);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!(
            "parent `/{}` is not an object or array",
            parent.join("/")
        )),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("`{last}` does not exist")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!(
            "parent `/{}` is not an object or array",
            parent.join("/")
        )),
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
