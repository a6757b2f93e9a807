//! Kubernetes-style envelope and the shared Kubernetes / Cluster API value types every object
//! uses: `ObjectMeta`, `ObjectReference`, `LabelSelector`, CAPI `Condition`, addresses.
//!
//! Pure data; field names and optionality follow the upstream Go types (`k8s.io/api/core/v1`,
//! `k8s.io/apimachinery/pkg/apis/meta/v1`, `sigs.k8s.io/cluster-api/api/v1beta1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::validate::{Check, FieldError, join};

/// `apiVersion` + `kind` + `metadata` + `spec` + `status`, as every Sidero object is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<Spec, Status> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl<Spec: Check, Status: Check> Check for Resource<Spec, Status> {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.metadata.check_field(path, "metadata")?;
        self.spec.check_field(path, "spec")?;
        self.status.check_field(path, "status")
    }
}

/// The part of Kubernetes `ObjectMeta` that users write and `kubectl get -o yaml` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Deprecated upstream (removed in Kubernetes 1.20) but still present in old dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Server-side-apply bookkeeping; kept verbatim, never interpreted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<serde_json::Value>,
}

impl Check for ObjectMeta {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        validate_name(&self.name).map_err(|m| FieldError::new(join(path, "name"), m))?;
        check_labels(&self.labels, path, "labels")
    }
}

/// `metadata.ownerReferences[]` entry (`k8s.io/apimachinery` `OwnerReference`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// `corev1.ObjectReference`: how Sidero points at an Environment, ServerClass, Server or
/// MetalMachine. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

impl Check for ObjectReference {}

/// `metav1.LabelSelector`: `matchLabels` AND `matchExpressions`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy this selector (Kubernetes semantics; empty selects all).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

impl Check for LabelSelector {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        check_labels(&self.match_labels, path, "matchLabels")?;
        self.match_expressions.check_field(path, "matchExpressions")
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => !value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl Check for LabelSelectorRequirement {
    /// As the Kubernetes API server validates: `In`/`NotIn` need values, `Exists`/
    /// `DoesNotExist` must have none.
    fn check(&self, path: &str) -> Result<(), FieldError> {
        validate_label_key(&self.key).map_err(|m| FieldError::new(join(path, "key"), m))?;
        let needs_values = matches!(
            self.operator,
            SelectorOperator::In | SelectorOperator::NotIn
        );
        if needs_values && self.values.is_empty() {
            return Err(FieldError::new(
                join(path, "values"),
                format!(
                    "must be non-empty when operator is {}",
                    self.operator.as_str()
                ),
            ));
        }
        if !needs_values && !self.values.is_empty() {
            return Err(FieldError::new(
                join(path, "values"),
                format!("must be empty when operator is {}", self.operator.as_str()),
            ));
        }
        self.values.iter().enumerate().try_for_each(|(i, v)| {
            validate_label_value(v)
                .map_err(|m| FieldError::new(format!("{}[{i}]", join(path, "values")), m))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl SelectorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorOperator::In => "In",
            SelectorOperator::NotIn => "NotIn",
            SelectorOperator::Exists => "Exists",
            SelectorOperator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// Cluster API v1beta1 `Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// `PowerCycle`, `PXEBooted`, `TalosInstalled`, `ProviderSet`, `Ready`…
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// Only set when `status` is `False`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub severity: Option<ConditionSeverity>,
    /// RFC 3339 time, e.g. `2024-01-02T03:04:05Z`.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Condition {
    /// Sets `new` among `conditions` as CAPI's `conditions.Set` does: replaces the condition
    /// of its type (or appends it), keeping the old transition time when the status did not
    /// change. Returns whether anything changed. The one way the box sets a condition.
    pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
        match conditions.iter_mut().find(|c| c.type_ == new.type_) {
            Some(c) => {
                if c.status == new.status {
                    new.last_transition_time = c.last_transition_time.clone();
                }
                if *c == new {
                    false
                } else {
                    *c = new;
                    true
                }
            }
            None => {
                conditions.push(new);
                true
            }
        }
    }
}

impl Check for Condition {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        if self.type_.is_empty() {
            return Err(FieldError::new(join(path, "type"), "must not be empty"));
        }
        if !looks_like_rfc3339(&self.last_transition_time) {
            return Err(FieldError::new(
                join(path, "lastTransitionTime"),
                format!(
                    "`{}` is not an RFC 3339 time such as 2024-01-02T03:04:05Z",
                    self.last_transition_time
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionSeverity {
    Error,
    Warning,
    Info,
}

/// `corev1.NodeAddress` / CAPI `MachineAddress`: `{type, address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Address {
    /// `InternalIP`, `ExternalIP`, `Hostname`, `InternalDNS`, `ExternalDNS`.
    #[serde(rename = "type")]
    pub type_: AddressType,
    pub address: String,
}

impl Check for Address {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressType {
    Hostname,
    ExternalIP,
    InternalIP,
    ExternalDNS,
    InternalDNS,
}

/// Reads `""` (and null) as `None`: Go's `omitempty` string enums treat empty as unset.
pub(crate) fn empty_as_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let raw: Option<serde_json::Value> = Option::deserialize(de)?;
    match raw {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Reads null as the type's default (Go prints nil slices as `null`).
pub(crate) fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// `YYYY-MM-DDTHH:MM:SS` followed by optional fraction and `Z` or `±HH:MM`.
fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// Object names are DNS-1123 subdomains (as Kubernetes requires): at most 253 characters,
/// dot-separated labels of lower-case alphanumerics and '-', each starting and ending
/// alphanumeric (so `a..b`, `a.-b` and `-a` are refused).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    dns1123_subdomain(name).map_err(|why| format!("name `{name}` {why}"))
}

/// The DNS-1123 subdomain rule; the reason names no value (callers add it).
fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!("is {} characters, at most 253 allowed", s.len()));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if let Some(c) = s.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "contains `{c}`: only lower-case letters, digits, '-' and '.' are allowed"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    for label in s.split('.') {
        if !alnum(label.chars().next()) || !alnum(label.chars().last()) {
            return Err(
                "must be dot-separated parts that each start and end with a letter or digit".into(),
            );
        }
    }
    Ok(())
}

/// The "name" part of a qualified name and a label value: at most 63 characters of
/// `[A-Za-z0-9-_.]`, starting and ending alphanumeric. `allow_empty` for values.
fn qualified_part(s: &str, allow_empty: bool) -> Result<(), String> {
    if s.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err("must not be empty".into())
        };
    }
    if s.len() > 63 {
        return Err(format!("is {} characters, at most 63 allowed", s.len()));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(c) = s.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "contains `{c}`: only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A label key, as Kubernetes validates it: an optional DNS-1123 subdomain prefix and `/`,
/// then a name of at most 63 characters (`app.kubernetes.io/name`, `rack`).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(format!(
                "label key `{key}`: prefix before '/' must not be empty"
            ));
        }
        dns1123_subdomain(prefix).map_err(|why| format!("label key `{key}`: prefix {why}"))?;
    }
    qualified_part(name, false).map_err(|why| format!("label key `{key}`: name {why}"))
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9-_.]` starting and ending
/// alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    qualified_part(value, true).map_err(|why| format!("label value `{value}` {why}"))
}

/// Checks every key and value of a label map; the error names the key's path.
/// `labels` at `path`.`field`: the path is written out only for an error.
fn check_labels(
    labels: &BTreeMap<String, String>,
    path: &str,
    field: &str,
) -> Result<(), FieldError> {
    labels.iter().try_for_each(|(k, v)| {
        validate_label_key(k)
            .and_then(|()| validate_label_value(v))
            .map_err(|m| FieldError::new(join(&join(path, field), k), m))
    })
}
