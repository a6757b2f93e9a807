//! Checks serde cannot express (value ranges, cross-field rules, formats), reported with the
//! JSON path of the offending field, e.g. `spec.configPatches[1].path`.

/// A rule broken at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Validation after deserialisation. `path` is where `self` sits (`spec.bmc`); the default
/// accepts everything serde accepted.
pub trait Check {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        let _ = path;
        Ok(())
    }

    /// [`Check::check`] of the field `field` of what sits at `path`. The field's path is
    /// written out only where there is something to check (an absent `Option`, an empty
    /// list: none), since every apply checks every field of its objects.
    fn check_field(&self, path: &str, field: &str) -> Result<(), FieldError> {
        self.check(&join(path, field))
    }
}

impl<T: Check> Check for Option<T> {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        match self {
            Some(v) => v.check(path),
            None => Ok(()),
        }
    }

    fn check_field(&self, path: &str, field: &str) -> Result<(), FieldError> {
        match self {
            Some(v) => v.check_field(path, field),
            None => Ok(()),
        }
    }
}

impl<T: Check> Check for Vec<T> {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        self.iter()
            .enumerate()
            .try_for_each(|(i, v)| v.check(&format!("{path}[{i}]")))
    }

    fn check_field(&self, path: &str, field: &str) -> Result<(), FieldError> {
        if self.is_empty() {
            return Ok(());
        }
        self.check(&join(path, field))
    }
}

impl<T: Check + ?Sized> Check for Box<T> {
    fn check(&self, path: &str) -> Result<(), FieldError> {
        (**self).check(path)
    }
}

/// Serde lets a struct be written as a list of its field values (`bmc: [10.0.0.1]`);
/// Kubernetes does not. Comparing what was written with what the typed object prints finds
/// the first place a list was read as a mapping.
pub fn find_list_read_as_mapping(
    written: &serde_json::Value,
    printed: &serde_json::Value,
    path: &str,
) -> Option<FieldError> {
    use serde_json::Value;
    match (written, printed) {
        (Value::Array(_), Value::Object(_)) => Some(FieldError::new(
            path,
            "invalid type: sequence, expected a mapping",
        )),
        (Value::Object(w), Value::Object(p)) => p.iter().find_map(|(k, pv)| {
            let wv = w.get(k)?;
            find_list_read_as_mapping(wv, pv, &join(path, k))
        }),
        (Value::Array(w), Value::Array(p)) => {
            w.iter().zip(p).enumerate().find_map(|(i, (wv, pv))| {
                find_list_read_as_mapping(wv, pv, &format!("{path}[{i}]"))
            })
        }
        _ => None,
    }
}

/// Whether `written` holds a list anywhere: [`find_list_read_as_mapping`] finds nothing in
/// a document without one.
pub fn holds_a_list(written: &serde_json::Value) -> bool {
    use serde_json::Value;
    match written {
        Value::Array(_) => true,
        Value::Object(m) => m.values().any(holds_a_list),
        _ => false,
    }
}

/// The path of `field` below `path` (`spec` + `hostname` = `spec.hostname`), as field
/// errors name it.
pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}
