//! A reader of the plain subset of block YAML that objects are written in (`kubectl get -o
//! yaml`, `Object::to_yaml`, hand-written manifests): block mappings and sequences (also a
//! sequence at its key's indentation, and `- key: value` items), one-line plain and quoted
//! scalars, `---` between documents. It reads them to exactly the `serde_json::Value`s the
//! strict reader (`yaml.rs`: `yaml_serde` through `StrictValue`) reads, without libyaml's
//! event machinery, which took about a fifth of an admin apply's CPU, and declines (`None`)
//! everything else: comments, flow collections, anchors, aliases, tags, block and
//! multi-line scalars, escapes, numbers other than plain decimal integers, tabs, carriage
//! returns, non-ASCII text, duplicate keys, empty documents, deep nesting. Declined text
//! goes to the strict reader, so every refusal and its message comes from there.
//!
//! The fuzz property `model_yaml` (`properties.rs`, replayed on its corpus by `cargo test`)
//! checks that whatever this reads, the strict reader reads the same.

use serde_json::{Map, Number, Value};

/// Nesting this reader follows (Sidero objects nest about 8 levels); deeper text goes to
/// the strict reader, whose bound is `yaml::MAX_DEPTH`.
const MAX_DEPTH: usize = 24;

/// Longest key read here: libyaml refuses an implicit key over 1024 characters.
const MAX_KEY: usize = 256;

/// The documents of `text` as the strict reader reads them (one value per document, in
/// order), or `None` when `text` is not in this reader's subset.
pub fn read(text: &str) -> Option<Vec<Value>> {
    let mut documents = Vec::new();
    let mut lines: Vec<Line<'_>> = Vec::new();
    // Lines before the first `---` that are all blank are no document.
    let mut started = false;
    for raw in text.split('\n') {
        if raw == "---" {
            if started {
                documents.push(document(std::mem::take(&mut lines))?);
            }
            started = true;
            continue;
        }
        if !raw.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return None;
        }
        let mut content = raw.trim_start_matches(' ');
        let indent = raw.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(hash) = content.find('#') {
            // A comment after the text: ` #…`, and no quoted scalar before it (whose text
            // could hold the `#`).
            if content.as_bytes()[hash - 1] != b' ' || content[..hash].contains(['"', '\'']) {
                return None;
            }
            content = content[..hash].trim_end_matches(' ');
        } else if content.ends_with(' ') {
            return None;
        }
        if content.starts_with("---") || content.starts_with("...") {
            return None;
        }
        started = true;
        split_dashes(indent, content, &mut lines)?;
    }
    if started {
        documents.push(document(lines)?);
    }
    (!documents.is_empty()).then_some(documents)
}

/// One line as the parser sees it: a `- ` item marker and what follows it on the same line
/// are two lines, the second at the column where its text starts.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    indent: usize,
    /// `-` alone or `- …`: the text is empty.
    dash: bool,
    /// Text that followed a `- ` on the same line.
    after_dash: bool,
    text: &'a str,
}

fn split_dashes<'a>(indent: usize, content: &'a str, lines: &mut Vec<Line<'a>>) -> Option<()> {
    let rest = if content == "-" {
        ""
    } else if let Some(rest) = content.strip_prefix("- ") {
        rest
    } else {
        lines.push(Line {
            indent,
            dash: false,
            after_dash: false,
            text: content,
        });
        return Some(());
    };
    lines.push(Line {
        indent,
        dash: true,
        after_dash: false,
        text: "",
    });
    let text = rest.trim_start_matches(' ');
    if text.is_empty() {
        return Some(());
    }
    // `- - a`: a sequence in a sequence on one line; left to the strict reader.
    if text == "-" || text.starts_with("- ") {
        return None;
    }
    lines.push(Line {
        indent: indent + 2 + (rest.len() - text.len()),
        dash: false,
        after_dash: true,
        text,
    });
    Some(())
}

/// A whole document: a block mapping or sequence starting at column 0 that takes every
/// line.
fn document(lines: Vec<Line<'_>>) -> Option<Value> {
    let first = lines.first()?;
    if first.indent != 0 {
        return None;
    }
    let mut p = Parser { lines, at: 0 };
    let value = p.block(0)?;
    (p.at == p.lines.len()).then_some(value)
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.at).copied()
    }

    /// The block starting at the current line.
    fn block(&mut self, depth: usize) -> Option<Value> {
        let line = self.peek()?;
        let indent = line.indent;
        if line.dash {
            self.sequence(indent, depth)
        } else {
            self.mapping(indent, depth)
        }
    }

    /// The items at `indent`; ends before the first line that is not one (a less indented
    /// line, or a key of the mapping this sequence is a value of).
    fn sequence(&mut self, indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut items = Vec::new();
        while let Some(line) = self.peek()
            && line.dash
            && line.indent == indent
        {
            self.at += 1;
            let item = match self.peek() {
                Some(next) if next.after_dash && entry(next.text).is_some() => {
                    let column = next.indent;
                    self.mapping(column, depth + 1)?
                }
                Some(next) if next.after_dash => {
                    let value = scalar(next.text)?;
                    self.at += 1;
                    value
                }
                Some(next) if next.indent > indent => self.block(depth + 1)?,
                // An empty item.
                _ => return None,
            };
            items.push(item);
        }
        if self.peek().is_some_and(|l| l.indent > indent) {
            return None;
        }
        Some(Value::Array(items))
    }

    /// The entries at `indent`; ends before the first less indented line.
    fn mapping(&mut self, indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut map = Map::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent || line.dash {
                return None;
            }
            let (key, rest) = entry(line.text)?;
            if !plain_key(key) || map.contains_key(key) {
                return None;
            }
            self.at += 1;
            let value = if !rest.is_empty() {
                scalar(rest)?
            } else {
                match self.peek() {
                    Some(next) if next.indent > indent => self.block(depth + 1)?,
                    Some(next) if next.indent == indent && next.dash => {
                        self.sequence(indent, depth + 1)?
                    }
                    _ => Value::Null,
                }
            };
            map.insert(key.to_owned(), value);
        }
        Some(Value::Object(map))
    }
}

/// `key: value` or `key:` split at the first `:`, which must end the text or be followed by
/// a space; the value without its leading spaces.
fn entry(text: &str) -> Option<(&str, &str)> {
    let colon = text.find(':')?;
    let rest = &text[colon + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((&text[..colon], rest.trim_start_matches(' ')))
}

/// A plain key that reads as a string: a letter or `_` first, then letters, digits and
/// `_.-/`, and not a word YAML reads as null or a boolean.
fn plain_key(key: &str) -> bool {
    let b = key.as_bytes();
    key.len() <= MAX_KEY
        && b.first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/'))
        && word(key).is_none()
}

/// `null` and the booleans as `yaml_serde` spells them.
fn word(s: &str) -> Option<Value> {
    match s {
        "null" | "Null" | "NULL" => Some(Value::Null),
        "true" | "True" | "TRUE" => Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => Some(Value::Bool(false)),
        _ => None,
    }
}

/// A one-line scalar as the strict reader resolves it: quoted text as it is (no escapes);
/// [`plain`] text starting with a letter, `_` or `/` as a string, null or a boolean;
/// digits alone (no leading zero) as an integer; other plain text starting with a digit
/// as a string unless it could be a number.
fn scalar(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    match b[0] {
        q @ (b'"' | b'\'') => {
            let inner = text.strip_prefix(q as char)?.strip_suffix(q as char)?;
            let plain = inner.bytes().all(|c| c != q && (q == b'\'' || c != b'\\'));
            plain.then(|| Value::String(inner.to_owned()))
        }
        b'0'..=b'9' => {
            if !plain(text) {
                return None;
            }
            if b.iter().all(u8::is_ascii_digit) {
                if b.len() > 1 && b[0] == b'0' {
                    return None;
                }
                return text
                    .parse::<u64>()
                    .ok()
                    .map(|n| Value::Number(Number::from(n)));
            }
            // Not an integer (`0x…`, `0o…`, `0b…` are left to the strict reader) nor a
            // float as Rust reads one (`yaml_serde`'s rule): a string, as a UUID, an
            // address, a date.
            let radix = b.len() > 1 && matches!(b[1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B');
            (!radix && text.parse::<f64>().is_err()).then(|| Value::String(text.to_owned()))
        }
        c if c.is_ascii_alphabetic() || c == b'_' || c == b'/' => {
            if !plain(text) {
                return None;
            }
            Some(word(text).unwrap_or_else(|| Value::String(text.to_owned())))
        }
        _ => None,
    }
}

/// Plain text as a block context reads it: any printable ASCII (`read` checked the
/// line) but `#` (a comment was cut off before), with no `: ` inside and no `:` at the end
/// (where YAML would read a mapping).
fn plain(text: &str) -> bool {
    !text.contains('#') && !text.contains(": ") && !text.ends_with(':')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The strict reader's documents (`yaml.rs`), or its error.
    fn strict(text: &str) -> Result<Vec<Value>, String> {
        super::super::yaml::strict_documents(text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    /// `text` is read here, to what the strict reader reads.
    fn same(text: &str) {
        let fast = read(text).unwrap_or_else(|| panic!("declined:\n{text}"));
        assert_eq!(Ok(fast), strict(text), "{text}");
    }

    /// `text` is left to the strict reader.
    fn declined(text: &str) {
        assert_eq!(read(text), None, "read:\n{text}");
    }

    #[test]
    fn reads_what_the_strict_reader_reads() {
        for text in [
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\n  labels:\n    rack: r1\nspec:\n  hostname: s1.rack\n  accepted: true\n",
            "a: 1\nb: 0\nc: 18446744073709551615\nd: 10.0.0.1\ne: ''\nf: \"\"\ng:\nh: null\ni: NULL\nj: False\nk: TRUE\n",
            "a: yes\nb: no\nc: on\nd: off\ne: y\nf: n\ng: inf\nh: nan\ni: Infinity\nj: e5\n",
            "a: \"true\"\nb: '1'\nc: 'x\\y'\nd: \"a: b, c\"\ne: 'say \"hi\"'\n",
            "a: http://x:80/y?z=1&w\nb: a b  c\nc: /path/to\nd: _x\ne: x-y_z.w@v=u+t,s\n",
            "a: b\\ # c\nb: 'x'\nc: \"y\"\n",
            "a: Standard PC (Q35 + ICH9, 2009)\nb: up|broadcast\nc: fe80::1/64\nd: it's \"x\" [y] {z} *w &v !u %t `s ~r >q <p\ne: a - b -c\n",
            "list:\n- a\n- 1\n- b: 2\n  c: 3\n- d:\n  - e\n- f:\n    g: h\nafter: x\n",
            "list:\n  - a\n  -   b: 1\n      c: 2\n  -\n    d: e\n  -\n    - f\n",
            "a:\n\n  b: c\n\n\nd: e\n",
            "---\na: 1\n---\nb: 2\n",
            "\n  \n---\na: 1\n",
            "a: 1",
            "- a\n- b\n",
            "a:\n  b:\n    c:\n      d: x\n  e: f\n",
            "k.io/name: v\nk-2: v\n_k: v\nK/x: v\n",
            "# comment\n---\n# c\na: 1 # c\nb:   # c\n  # c\n  c: d   # c\n  e: f g #c\nh:\n- # c\n  i: j\n",
            "name: 8d1b2f2a-5b1a-4c1e-9a53-0c1d2e3f4a5b\nat: 2024-03-01\nsize: 8Gi\nn: 1_000\no: 1e\np: 10.0.0.1\nq: 0.5.1\nr: 1-2\n",
        ] {
            same(text);
        }
    }

    #[test]
    fn leaves_the_rest_to_the_strict_reader() {
        for text in [
            // Not in the subset.
            "a: b#c\n",
            "a: 'b' # c\n",
            "--- # c\na: 1\n",
            "a: 1e3\nb: 1.5\n",
            "a: 0x1F\n",
            "a: 0b1\n",
            "a: 0o7\n",
            "a: 0X1F\n",
            "a: [1, 2]\n",
            "a: {b: c}\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: |\n  text\n",
            "a: >\n  text\n",
            "a: \"esc\\n\"\n",
            "a: 'it''s'\n",
            "a: 1.5\nb: 1e3\n",
            "a: -1\n",
            "a: 0x1F\n",
            "a: 0123\n",
            "a: 99999999999999999999\n",
            "a: .inf\n",
            "a: ~\n",
            "a:\tb\n",
            "a: b\r\n",
            "a: é\n",
            "a: b \n",
            "\"a\": b\n",
            "1: b\n",
            "true: b\n",
            "a b: c\n",
            "? a\n: b\n",
            "- - a\n",
            "-\n- a\n",
            "a: 1\n...\n",
            "%YAML 1.2\n---\na: 1\n",
            "--- a: 1\n",
            "a: 1\n---\n",
            "---\n---\na: 1\n",
            "",
            "\n\n",
            "just text\n",
            "  a: 1\n",
            // Not YAML, or not the strict reader's: its error is the answer.
            "a: 1\na: 2\n",
            "a: b: c\n",
            "a:b\n",
            "a: 1\n  b: 2\n",
            "a:\n    b: 1\n  c: 2\n",
            "a: 1\n- b\n",
            "- a\nb: 1\n",
            "a:\n  - b\n  c: d\n",
            "a: x\n  continued\n",
            "- a\n  continued\n",
            "- a: 1\n   b: 2\n",
            "a: b:\n",
        ] {
            declined(text);
        }
        let deep = (0..30).fold(String::new(), |mut s, i| {
            s.push_str(&" ".repeat(2 * i));
            s.push_str("a:\n");
            s
        });
        declined(&deep);
        declined(&format!("{}: b\n", "k".repeat(MAX_KEY + 1)));
    }

    /// Keys and scalars in the subset (most) and out of it, drawn for generated text.
    const KEYS: &[&str] = &["a", "b", "c", "a.b/c", "_k", "k-2", "K", "on", "y"];
    const ODD_KEYS: &[&str] = &["true", "Null", "1", "\"q\"", "a b", "? a", "a:b", "-a"];
    const SCALARS: &[&str] = &[
        "",
        "x",
        "x y",
        "1",
        "0",
        "18446744073709551615",
        "10.0.0.1",
        "8d1b-2f",
        "2024-01-01",
        "1_0",
        "1e",
        "inf",
        "NaN",
        "Infinity",
        "true",
        "False",
        "TRUE",
        "null",
        "Null",
        "'s'",
        "''",
        "\"d\"",
        "'a: b'",
        "\"#\"",
        "a:b",
        "y",
        "on",
        "http://h:1/p?q=1",
        "(x) [y]",
        "\\",
        "a - b",
        "it's",
    ];
    const ODD_SCALARS: &[&str] = &[
        "01",
        "007",
        "18446744073709551616",
        "1.5",
        "1e3",
        "0x1f",
        "0b1",
        "0o7",
        "-1",
        "+1",
        ".5",
        "~",
        "\"a\\\\n\"",
        "'it''s'",
        "a: b",
        "a:",
        "[1]",
        "{}",
        ".inf",
        "b#c",
        "|",
        ">-",
        "&a x",
        "*a",
        "!t x",
        "%x",
        "@x",
        "`x",
        "x ",
        "\u{e9}",
        "a\tb",
        "- x",
        "-x",
        "---",
        "...",
        "? x",
    ];

    fn key() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            12 => prop::sample::select(KEYS),
            1 => prop::sample::select(ODD_KEYS),
        ]
    }

    fn scalar_text() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            12 => prop::sample::select(SCALARS),
            1 => prop::sample::select(ODD_SCALARS),
        ]
    }

    #[derive(Debug, Clone)]
    enum Node {
        Scalar(&'static str),
        Map(Vec<(&'static str, Node)>),
        Seq(Vec<Node>),
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = scalar_text().prop_map(Node::Scalar);
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec((key(), inner.clone()), 1..4).prop_map(Node::Map),
                prop::collection::vec(inner, 1..4).prop_map(Node::Seq),
            ]
        })
    }

    /// Block YAML of `node` laid out in one of the ways YAML allows, chosen by `seed`
    /// (sequences at their key's indentation or deeper, `- key:` items or `-` alone,
    /// extra spaces, comments, blank lines).
    struct Printer {
        seed: u64,
        out: String,
    }

    impl Printer {
        fn pick(&mut self, n: u64) -> u64 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.seed % n
        }

        fn end_line(&mut self, indent: usize) {
            match self.pick(12) {
                0 => self.out.push_str(" # c"),
                1 => self.out.push_str("   #c #d"),
                _ => {}
            }
            self.out.push('\n');
            match self.pick(12) {
                0 => self.out.push('\n'),
                1 => {
                    self.out.push_str(&" ".repeat(indent.saturating_sub(2)));
                    self.out.push_str("# c\n");
                }
                _ => {}
            }
        }

        fn value(&mut self, node: &Node, indent: usize) {
            match node {
                Node::Scalar(v) => {
                    if !v.is_empty() {
                        let gap = 1 + (self.pick(4) == 0) as usize;
                        self.out.push_str(&" ".repeat(gap));
                        self.out.push_str(v);
                    }
                    self.end_line(indent);
                }
                Node::Map(entries) => {
                    self.end_line(indent);
                    let step = [2, 2, 4, 1][self.pick(4) as usize];
                    self.map(entries, indent + step);
                }
                Node::Seq(items) => {
                    self.end_line(indent);
                    let step = [0, 0, 2, 4][self.pick(4) as usize];
                    self.seq(items, indent + step);
                }
            }
        }

        fn map(&mut self, entries: &[(&str, Node)], indent: usize) {
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(&" ".repeat(indent));
                }
                self.out.push_str(k);
                self.out.push(':');
                self.value(v, indent);
            }
        }

        fn seq(&mut self, items: &[Node], indent: usize) {
            for item in items {
                self.out.push_str(&" ".repeat(indent));
                self.out.push('-');
                let gap = 1 + (self.pick(4) == 0) as usize * 2;
                match item {
                    Node::Scalar(v) if !v.is_empty() => {
                        self.out.push_str(&" ".repeat(gap));
                        self.out.push_str(v);
                        self.end_line(indent);
                    }
                    Node::Map(entries) if self.pick(3) > 0 => {
                        self.out.push_str(&" ".repeat(gap));
                        self.map(entries, indent + 1 + gap);
                    }
                    other => self.value(other, indent),
                }
            }
        }

        fn document(&mut self, node: &Node) {
            match node {
                Node::Map(entries) => self.map(entries, 0),
                Node::Seq(items) => self.seq(items, 0),
                Node::Scalar(v) => {
                    self.out.push_str(v);
                    self.out.push('\n');
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Whatever this reader reads from generated text, the strict reader reads the same.
        #[test]
        fn agrees_with_the_strict_reader_on_generated_text(
            documents in prop::collection::vec(node(), 1..3),
            seed in 1..u64::MAX,
            leading in any::<bool>(),
        ) {
            let mut p = Printer { seed, out: String::new() };
            if leading {
                p.out.push_str("---\n");
            }
            for (i, d) in documents.iter().enumerate() {
                if i > 0 {
                    p.out.push_str("---\n");
                }
                p.document(d);
            }
            if let Some(fast) = read(&p.out) {
                prop_assert_eq!(Ok(fast), strict(&p.out), "{}", p.out);
            }
        }
    }

    #[test]
    fn an_objects_printed_yaml_is_read_here() {
        let text = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n  accepted: true\n  hardware:\n    network:\n      interfaces:\n      - mac: \"00:11:22:33:44:55\"\n        name: eth0\n";
        let objects = crate::model::parse_documents(text).unwrap();
        let printed = objects[0].to_yaml();
        same(&printed);
    }
}
