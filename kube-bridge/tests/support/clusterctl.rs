//! clusterctl's variable handling for provider manifests, as its documentation describes it
//! (drone/envsubst syntax): `${VAR}` must be set, `${VAR:=default}` / `${VAR=default}` /
//! `${VAR:-default}` / `${VAR-default}` fall back to the default; names are
//! `[A-Za-z_][A-Za-z0-9_]*`. A bare `$VAR` would be substituted too, so the manifests must not
//! hold one (checked by [`bare_dollars`]).

use std::collections::{BTreeMap, BTreeSet};

/// One `${…}` occurrence: the name and its default, if it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    pub name: String,
    pub default: Option<String>,
}

/// Every `${…}` in `text`, in order. Panics on a malformed one (an unclosed brace or a bad
/// name), which would be a bug in the manifest.
pub fn variables(text: &str) -> Vec<Variable> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {:?}", &rest[start..]));
        let inner = &after[..end];
        let name_end = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let name = &inner[..name_end];
        assert!(
            !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad variable name in ${{{inner}}}"
        );
        let op = &inner[name_end..];
        let default = [":=", ":-", "=", "-"]
            .iter()
            .find_map(|p| op.strip_prefix(p))
            .map(str::to_owned);
        assert!(
            op.is_empty() || default.is_some(),
            "unsupported form ${{{inner}}}"
        );
        out.push(Variable {
            name: name.to_owned(),
            default,
        });
        rest = &after[end + 1..];
    }
    out
}

/// Names used without a default somewhere (clusterctl asks for them).
pub fn required(text: &str) -> BTreeSet<String> {
    variables(text)
        .into_iter()
        .filter(|v| v.default.is_none())
        .map(|v| v.name)
        .collect()
}

/// Names with a default.
pub fn with_default(text: &str) -> BTreeSet<String> {
    variables(text)
        .into_iter()
        .filter(|v| v.default.is_some())
        .map(|v| v.name)
        .collect()
}

/// `text` with every variable replaced: the value from `values`, else its default; `Err`
/// names the required variables that have no value.
pub fn substitute(text: &str, values: &BTreeMap<&str, &str>) -> Result<String, Vec<String>> {
    let mut out = String::new();
    let mut missing = Vec::new();
    let mut rest = text;
    let mut vars = variables(text).into_iter();
    while let Some(start) = rest.find("${") {
        let v = vars.next().unwrap();
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        match values
            .get(v.name.as_str())
            .copied()
            .or(v.default.as_deref())
        {
            Some(value) => out.push_str(value),
            None => missing.push(v.name),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// Lines holding a `$` that does not start `${` (envsubst would substitute `$NAME`).
pub fn bare_dollars(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.match_indices('$').any(|(i, _)| !l[i..].starts_with("${")))
        .collect()
}

/// Values for every required variable (what a user exports before `clusterctl init` /
/// `clusterctl generate cluster`).
pub fn sample_values() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("KUBE_BRIDGE_IMAGE", "registry.example/kube-bridge:v0.1.0"),
        ("KUBE_BRIDGE_BOX_ENDPOINT", "https://10.5.0.1:8443"),
        ("KUBE_BRIDGE_BOX_ID", "rack-12"),
        ("CLUSTER_NAME", "management-cluster"),
        ("CONTROL_PLANE_ENDPOINT", "10.5.0.10"),
        ("KUBERNETES_VERSION", "v1.33.1"),
    ])
}
