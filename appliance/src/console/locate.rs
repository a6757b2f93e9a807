//! Finds the line of a YAML document that a validation error's field path points at, so
//! the console can show the error at the field in the editor.
//!
//! Pure and heuristic: block-style YAML as operators write it (and as `to_yaml` prints it)
//! is followed key by key and item by item by indentation; flow style or anything the walk
//! cannot follow yields the deepest line it did reach. Never panics on any input.

use crate::model::ParseObjectError;

/// One step of a field path such as `spec.qualifiers.cpu[0].manufacturer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Splits a serde_path_to_error style path (`a.b[2].c`; `.` alone is the root).
pub fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if part.is_empty() {
            continue;
        }
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(n) = stripped[..end].parse() {
                out.push(Segment::Index(n));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// The field an error message names beyond its path: serde reports an unknown field at
/// the path of the struct that holds it ("unknown field `cpus`, expected …").
pub fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

struct Line<'a> {
    /// Column of the first non-space character.
    raw: usize,
    /// Whether the line starts a sequence item (`- ...`).
    dash: bool,
    /// Column of the content after any `- ` markers.
    content_col: usize,
    /// The mapping key on this line (after any `- `), if any.
    key: Option<&'a str>,
}

fn scan(text: &str) -> Vec<Option<Line<'_>>> {
    text.lines()
        .map(|l| {
            let trimmed = l.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                return None;
            }
            let raw = l.len() - trimmed.len();
            let mut content = trimmed;
            let mut dash = false;
            while let Some(rest) = content
                .strip_prefix("- ")
                .or_else(|| (content == "-").then_some(""))
            {
                dash = true;
                content = rest.trim_start_matches(' ');
            }
            let content_col = l.len() - content.len();
            let key = content.split_once(':').and_then(|(k, v)| {
                let k = k.trim().trim_matches('"').trim_matches('\'');
                let ok = !k.is_empty()
                    && (v.is_empty() || v.starts_with(' '))
                    && !k.contains(['{', '[', ' ']);
                ok.then_some(k)
            });
            Some(Line {
                raw,
                dash,
                content_col,
                key,
            })
        })
        .collect()
}

/// The 1-based line of `path` in `yaml` (the whole path if it could be followed, else the
/// deepest part that could), or None when not even the first key is found.
pub fn locate(yaml: &str, path: &[Segment]) -> Option<usize> {
    let lines = scan(yaml);
    // The block being searched: lines after `start` (and `start` itself for an item whose
    // first key shares the dash line) whose indent is deeper than `parent`.
    let mut start = 0usize;
    let mut parent: Option<usize> = None;
    let mut include_start = true;
    let mut found: Option<usize> = None;
    for seg in path {
        let in_block = |i: usize, l: &Line<'_>, allow_dash_at_parent: bool| -> bool {
            match parent {
                None => true,
                Some(p) => {
                    (include_start && i == start)
                        || l.raw > p
                        || (allow_dash_at_parent && l.dash && l.raw == p)
                }
            }
        };
        let first = if include_start { start } else { start + 1 };
        match seg {
            Segment::Key(k) => {
                let mut child_col = None;
                let mut hit = None;
                for (i, l) in lines.iter().enumerate().skip(first) {
                    let Some(l) = l else { continue };
                    if !in_block(i, l, false) {
                        break;
                    }
                    let col = l.content_col;
                    let child = *child_col.get_or_insert(col);
                    if col == child && l.key == Some(k.as_str()) {
                        hit = Some((i, col));
                        break;
                    }
                }
                let Some((i, col)) = hit else {
                    return found;
                };
                found = Some(i + 1);
                start = i;
                parent = Some(col);
                include_start = false;
            }
            Segment::Index(n) => {
                let mut dash_col = None;
                let mut count = 0usize;
                let mut hit = None;
                for (i, l) in lines.iter().enumerate().skip(first) {
                    let Some(l) = l else { continue };
                    if !in_block(i, l, true) {
                        break;
                    }
                    if !l.dash {
                        continue;
                    }
                    let col = *dash_col.get_or_insert(l.raw);
                    if l.raw != col {
                        continue;
                    }
                    if count == *n {
                        hit = Some((i, l.raw));
                        break;
                    }
                    count += 1;
                }
                let Some((i, col)) = hit else {
                    return found;
                };
                found = Some(i + 1);
                start = i;
                parent = Some(col);
                include_start = true;
            }
        }
    }
    found
}

/// Where a validation error of an edited document is: the field (dotted path, with the
/// unknown field a serde message names appended) and the editor line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAt {
    pub field: Option<String>,
    pub message: String,
    pub line: Option<usize>,
}

/// Places `e`, an error from reading `yaml`: its field path and the line it points at (only
/// for the first document; a syntax error's own "at line N" when the walk finds nothing).
pub fn error_at(yaml: &str, e: &ParseObjectError) -> ErrorAt {
    let (path, message, document) = match e {
        ParseObjectError::Field {
            path,
            message,
            document,
            ..
        } => (Some(path.clone()), message.clone(), *document),
        ParseObjectError::Missing { field, document } => {
            (Some(field.to_string()), e.to_string(), *document)
        }
        ParseObjectError::Syntax { document, message } => (None, message.clone(), *document),
        other => (None, other.to_string(), 1),
    };
    let mut segments = path.as_deref().map(parse_path).unwrap_or_default();
    let mut field = path.clone();
    let already_there = |u: &str| segments.last() == Some(&Segment::Key(u.to_string()));
    if let Some(unknown) = unknown_field(&message).filter(|u| !already_there(u)) {
        segments.push(Segment::Key(unknown.to_string()));
        field = Some(match &path {
            Some(p) if p != "." && !p.is_empty() => format!("{p}.{unknown}"),
            _ => unknown.to_string(),
        });
    }
    let line = if document == 1 {
        locate(yaml, &segments).or_else(|| syntax_line(&message))
    } else {
        None
    };
    ErrorAt {
        field,
        message,
        line,
    }
}

/// yaml_serde syntax errors say "at line N column M".
pub fn syntax_line(message: &str) -> Option<usize> {
    let rest = &message[message.find("at line ")? + 8..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASS: &str = "\
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: big
  labels:
    rack: a1
spec:
  qualifiers:
    cpu:
      - manufacturer: Intel
        version: Xeon
      - manufacturer: AMD
        version: EPYC
    systemInformation:
    - manufacturer: Dell
      productName: R630
  selector:
    matchLabels:
      rack: a1
";

    fn check(path: &str, expect: Option<usize>) {
        assert_eq!(locate(CLASS, &parse_path(path)), expect, "path {path}");
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("spec.qualifiers.cpu[1].version"),
            vec![
                Segment::Key("spec".into()),
                Segment::Key("qualifiers".into()),
                Segment::Key("cpu".into()),
                Segment::Index(1),
                Segment::Key("version".into()),
            ]
        );
        assert_eq!(parse_path("."), vec![]);
        assert_eq!(
            parse_path("a[0][2]"),
            vec![
                Segment::Key("a".into()),
                Segment::Index(0),
                Segment::Index(2)
            ]
        );
    }

    #[test]
    fn follows_keys_and_items() {
        check("kind", Some(2));
        check("metadata.name", Some(4));
        check("metadata.labels.rack", Some(6));
        check("spec", Some(7));
        check("spec.qualifiers.cpu", Some(9));
        check("spec.qualifiers.cpu[0]", Some(10));
        check("spec.qualifiers.cpu[0].manufacturer", Some(10));
        check("spec.qualifiers.cpu[1].version", Some(13));
        check("spec.qualifiers.systemInformation[0].productName", Some(16));
        check("spec.selector.matchLabels.rack", Some(19));
        // A key that is not there: the deepest found line.
        check("spec.selector.nope", Some(17));
        check("spec.qualifiers.cpu[7]", Some(9));
        // The same key name deeper down must not match at the wrong level.
        check("rack", None);
    }

    #[test]
    fn unknown_field_names() {
        assert_eq!(
            unknown_field("unknown field `cpus`, expected `qualifiers`"),
            Some("cpus")
        );
        assert_eq!(unknown_field("invalid type"), None);
    }

    #[test]
    fn never_panics_on_odd_text() {
        for text in [
            "",
            "-",
            "- -",
            ":",
            "a: {b: 1}",
            "  - : x\n-",
            "\t\tweird: [",
            "a:\n- \n- b",
        ] {
            for path in ["a", "a[0]", "a[1].b", ".", "x.y.z"] {
                let _ = locate(text, &parse_path(path));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any text and any path: no panic, and a found line exists in the text.
        #[test]
        fn any_input_is_safe(
            yaml in "([ a-z:\\-\\[\\]{},#'\"\n]|\\PC){0,200}",
            path in "[a-z.\\[\\]0-9]{0,30}",
        ) {
            if let Some(line) = locate(&yaml, &parse_path(&path)) {
                proptest::prop_assert!(line >= 1 && line <= yaml.lines().count());
            }
            let _ = unknown_field(&yaml);
        }
    }

    #[test]
    fn syntax_lines() {
        assert_eq!(
            syntax_line("mapping values are not allowed at line 3 column 7"),
            Some(3)
        );
        assert_eq!(syntax_line("nothing"), None);
    }
}
