//! Tidy: the invariants ARCHITECTURE.md states, checked on the source tree (as
//! rust-analyzer's `tidy` test does), so they hold by test rather than by care:
//!
//! - protocol cores (`appliance/src/protocol/`) do no IO: no tokio, sockets, files, clocks,
//!   threads, processes, environment or randomness, and no other room of the crate;
//! - only `appliance/src/store/` names redb;
//! - tasks and threads are spawned only from the files of [`SPAWN_ALLOWED`] (each with its
//!   reason); elsewhere a `spawn_blocking` must be awaited in place;
//! - kube-bridge depends on no workspace crate but `appliance-rpc`;
//! - every source file starts with a `//!` doc;
//! - `unsafe` only in `http/boot.rs::map_file`, `main.rs::tune_malloc` and the
//!   `sys` modules of `agent/ipmidev.rs`,
//!   `net/packet.rs`, `net/udp_batch.rs` and the storm generator's `storm/src/packet.rs`, and the counting
//!   allocator of `tests/dhcp_lease_memory.rs`;
//! - clocks are read only in `appliance/src/clock.rs` (the workspace `clippy.toml` forbids
//!   `SystemTime::now`/`Instant::now`; only that file may allow the lint), and the rooms of
//!   [`EXPIRY_ON_LEASE_TIME`] measure expiry on lease time, not wall-clock timestamps;
//! - ARCHITECTURE.md's code map names every file of `appliance/src` except tests;
//! - the x86_64 static musl link goes through `scripts/link-ordered` as an ld.lld-flavoured
//!   linker, and `appliance/link-order.txt` (the functions it places first) is well formed:
//!   demangled names without hashes, each once, and `appliance/build.rs` names it to cargo;
//! - rooms import only downwards: the edges of [`IMPORTS_FORBIDDEN`] (which once made
//!   circles, or a low room lean on a high one) stay absent outside test modules.
//!
//! The checks read code with comments and string literals blanked out. The unit tests at
//! the end feed each check a bad input, so a check that can no longer fail is noticed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Files that may spawn tasks or threads, and why.
const SPAWN_ALLOWED: &[(&str, &str)] = &[
    (
        "appliance/src/app.rs",
        "the wiring: spawns every long-running task and joins it on shutdown",
    ),
    (
        "appliance/src/bmc/setup.rs",
        "one auto BMC setup per UpdateBMCInfo: a short task bounded by the BMC gate's deadline",
    ),
    (
        "appliance/src/agent/mod.rs",
        "the agent (in the PXE-booted initramfs): one blocking wipe per disk in parallel, all joined before the wipe is reported",
    ),
    (
        "appliance/src/net/dhcp.rs",
        "the lease commit thread (blocking redb fsyncs), one receive loop per provisioning \
         interface and the ARP probe loop, all started and joined by DhcpService::run",
    ),
    (
        "appliance/src/store/group.rs",
        "a run of group commits on the blocking pool, started by the call that found the queue \
         idle and ending when the queue is empty; not awaited by that call, which waits only \
         for its own answer (awaiting the run held it back by every later call's commit)",
    ),
    (
        "appliance/src/api/apply_batch.rs",
        "the admin apply commit thread (blocking redb commits and fsyncs), started and \
         joined by ApplyTask::run",
    ),
    (
        "appliance/src/main.rs",
        "the command line parsed on a thread joined at once (clap's deep stack unmapped with \
         it), and with glibc the heap-trim thread (`tune_malloc`)",
    ),
    (
        "appliance/src/clock.rs",
        "debug builds only, with APPLIANCE_FAULT_WALL_OFFSET_FILE set: the thread following \
         the fault hook's wall-clock offset file for the life of the process",
    ),
];

/// Files that measure expiry against a Unix time: they read lease time
/// (`WallClock::steady_secs`/`steady_ms`, immune to wall-clock jumps), never the wall
/// clock's `clock::unix_secs`/`clock::unix_ms`, which are for timestamps.
const EXPIRY_ON_LEASE_TIME: &[&str] = &[
    "appliance/src/net/dhcp.rs",
    "appliance/src/net/dhcpv6.rs",
    "appliance/src/api/first_contact.rs",
    "appliance/src/api/agent.rs",
];

/// The documented places of `unsafe`: (file, the item it must be inside).
const UNSAFE_ALLOWED: &[(&str, &str)] = &[
    ("appliance/src/http/boot.rs", "fn map_file"),
    ("appliance/src/main.rs", "fn tune_malloc"),
    ("appliance/src/agent/ipmidev.rs", "mod sys"),
    ("appliance/src/net/packet.rs", "mod sys"),
    ("appliance/src/net/udp_batch.rs", "mod sys"),
    ("storm/src/packet.rs", "mod sys"),
    ("appliance/tests/dhcp_lease_memory.rs", "mod counting"),
];

/// Imports that must not exist: (files, path prefix they must not name, why). Files are
/// path prefixes separated by spaces; one starting with `!` is exempt (see [`applies`]).
/// Paths are resolved (`super::`, `self::`) to `crate::…` before they are compared.
const IMPORTS_FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "appliance/src/net/",
        "crate::http",
        "net/ lies below the HTTP room (its counters come from crate::metrics)",
    ),
    (
        "appliance/src/model/validate.rs",
        "crate::model::meta",
        "the field-path rules lie below the shared types that use them (meta.rs ↔ validate.rs was a circle)",
    ),
    (
        "appliance/src/metrics.rs",
        "crate",
        "metrics is a leaf every room may use",
    ),
    (
        "appliance/src/ !appliance/src/ctl/ !appliance/src/cli.rs",
        "crate::ctl",
        "the ctl client lies above every serving room (ctl.rs ↔ bmc/ctl.rs ↔ reconcile/ctl.rs was a circle)",
    ),
    (
        "appliance/src/http/",
        "crate::api::console",
        "the console's gRPC service is built on http::console and handed to the router by app.rs (api/console.rs ↔ http/console was a circle)",
    ),
];

/// The one module that reads the clocks.
const CLOCK_MODULE: &str = "appliance/src/clock.rs";

/// `std::net` items that are plain values (addresses), not IO.
const NET_VALUES: &[&str] = &[
    "IpAddr",
    "Ipv4Addr",
    "Ipv6Addr",
    "SocketAddr",
    "SocketAddrV4",
    "SocketAddrV6",
    "AddrParseError",
    "Ipv6MulticastScope",
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    rule: &'static str,
    what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.file, self.line, self.rule, self.what
        )
    }
}

fn violation(file: &str, line: usize, rule: &'static str, what: impl Into<String>) -> Violation {
    Violation {
        file: file.to_string(),
        line,
        rule,
        what: what.into(),
    }
}

// ------------------------------------------------------------------------ reading code

/// `src` with comments, string, byte-string and char literals replaced by spaces (newlines
/// kept, so line numbers and columns stay).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            // Raw string: r"…", r#"…"#, br"…".
            let start = i;
            i += if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // the opening quote
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            for &ch in &c[start..i.min(c.len())] {
                blank(&mut out, ch);
            }
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' && !prev_ident {
            // A char literal ('x', '\n', '\u{1F600}'); otherwise a lifetime or label.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for &ch in &c[i..=end] {
                        blank(&mut out, ch);
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c[i]);
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// 1-based line of byte offset `at`.
fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Every path the code names, with its line and the byte offset just after it: the paths
/// of `use` trees (expanded: `use a::{b, c::d}` gives `a::b` and `a::c::d`) and the
/// `a::b::c` paths written in expressions and types. Method calls (`x.spawn()`) are not
/// paths.
fn paths(code: &str) -> Vec<(usize, String, usize)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let ch = code[i..].chars().next().unwrap();
        if !is_ident(ch) || (i > 0 && is_ident(code[..i].chars().next_back().unwrap())) {
            i += ch.len_utf8();
            continue;
        }
        let word_end = i + code[i..]
            .find(|c: char| !is_ident(c))
            .unwrap_or(code.len() - i);
        let word = &code[i..word_end];
        if word == "use" {
            let end = code[i..].find(';').map_or(code.len(), |e| i + e);
            for p in expand_use(&code[word_end..end]) {
                found.push((line_of(code, i), p, end));
            }
            i = end;
            continue;
        }
        let method = code[..i].trim_end().ends_with('.');
        // Extend over `::ident` segments.
        let mut end = word_end;
        loop {
            let rest = &code[end..];
            let trimmed = rest.trim_start();
            if !trimmed.starts_with("::") {
                break;
            }
            let after = trimmed[2..].trim_start();
            let seg_len = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
            if seg_len == 0 {
                break;
            }
            end = code.len() - after.len() + seg_len;
        }
        if !method {
            let path: String = code[i..end].split_whitespace().collect();
            found.push((line_of(code, i), path, end));
        }
        i = end.max(i + 1);
        let _ = bytes;
    }
    found
}

/// The paths a `use` tree imports (without the `use` and `;`); `self` names the module
/// itself, renames (`as x`) are dropped.
fn expand_use(tree: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut s = tree.trim();
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix("::") {
            tokens.push("::".to_string());
            s = rest;
        } else if s.starts_with(['{', '}', ',', '*']) {
            tokens.push(s[..1].to_string());
            s = &s[1..];
        } else if s.starts_with(is_ident) {
            let n = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
            tokens.push(s[..n].to_string());
            s = &s[n..];
        } else {
            s = &s[s.chars().next().unwrap().len_utf8()..];
        }
        s = s.trim_start();
    }
    let mut out = Vec::new();
    let mut at = 0;
    tree_paths(&tokens, &mut at, &[], &mut out);
    out
}

fn tree_paths(t: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<String>) {
    let mut segs = prefix.to_vec();
    while *at < t.len() {
        match t[*at].as_str() {
            "::" => *at += 1,
            "{" => {
                *at += 1;
                while *at < t.len() && t[*at] != "}" {
                    tree_paths(t, at, &segs, out);
                    if *at < t.len() && t[*at] == "," {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            "," | "}" => break,
            "as" => *at += 2,
            seg => {
                if seg != "self" {
                    segs.push(seg.to_string());
                }
                *at += 1;
            }
        }
    }
    if !segs.is_empty() {
        out.push(segs.join("::"));
    }
}

// ------------------------------------------------------------------------ the checks

/// Protocol cores do no IO and use no other room.
fn check_protocol(file: &str, code: &str) -> Vec<Violation> {
    let mut v = Vec::new();
    for (line, path, _) in paths(code) {
        let s: Vec<&str> = path.split("::").collect();
        let bad = match s.as_slice() {
            [
                "tokio" | "rand" | "getrandom" | "socket2" | "mio" | "libc" | "memmap2",
                ..,
            ] => true,
            ["std" | "core", "fs" | "thread" | "process" | "env", ..] => true,
            [
                "std" | "core",
                "time",
                "SystemTime" | "Instant" | "UNIX_EPOCH",
                ..,
            ] => true,
            ["std" | "core", "net"] => true,
            ["std" | "core", "net", item, ..] => !NET_VALUES.contains(item),
            ["crate", room, ..] => !matches!(*room, "protocol" | "model"),
            _ => false,
        };
        if bad {
            v.push(violation(file, line, "protocol-io", format!("`{path}`")));
        }
    }
    v
}

/// The module path of a source file below `appliance/src/` (`net/dhcp.rs` is
/// `crate::net::dhcp`, `net/mod.rs` is `crate::net`).
fn module_of(file: &str) -> Vec<String> {
    let rel = file.strip_prefix("appliance/src/").unwrap_or(file);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut m = vec!["crate".to_string()];
    m.extend(
        rel.split('/')
            .filter(|s| !matches!(*s, "mod" | "lib" | "main"))
            .map(str::to_string),
    );
    m
}

/// `path` as named from `module`, made absolute (`crate::…`); None for other crates'.
fn resolve(module: &[String], path: &str) -> Option<String> {
    let mut segs = path.split("::").peekable();
    let mut out: Vec<String> = match *segs.peek()? {
        "crate" => {
            segs.next();
            vec!["crate".into()]
        }
        "self" => {
            segs.next();
            module.to_vec()
        }
        "super" => module.to_vec(),
        _ => return None,
    };
    while segs.peek() == Some(&"super") {
        segs.next();
        out.pop();
    }
    out.extend(segs.map(str::to_string));
    Some(out.join("::"))
}

/// Whether `file` is one of the files of a rule: it starts with one of the prefixes of
/// `from` and with none of its `!`-prefixes.
fn applies(from: &str, file: &str) -> bool {
    let (except, within): (Vec<&str>, Vec<&str>) =
        from.split_whitespace().partition(|p| p.starts_with('!'));
    within.iter().any(|p| file.starts_with(p)) && !except.iter().any(|p| file.starts_with(&p[1..]))
}

/// The edges of [`IMPORTS_FORBIDDEN`] (or `rules`, for the checker's tests).
fn check_imports(file: &str, code: &str, rules: &[(&str, &str, &str)]) -> Vec<Violation> {
    let module = module_of(file);
    let mut v = Vec::new();
    for (line, path, _) in paths(code) {
        // A bare `self` is the method receiver; the module's own items are not an import.
        let own = module.join("::");
        let Some(abs) = resolve(&module, &path).filter(|_| path != "self") else {
            continue;
        };
        if abs == own || abs.starts_with(&format!("{own}::")) {
            continue;
        }
        for (from, to, why) in rules {
            let names = abs == *to || abs.starts_with(&format!("{to}::"));
            if applies(from, file) && names {
                v.push(violation(file, line, "imports", format!("`{abs}`: {why}")));
            }
        }
    }
    v
}

/// Only the store names redb.
fn check_redb(file: &str, code: &str) -> Vec<Violation> {
    if file.starts_with("appliance/src/store/") {
        return Vec::new();
    }
    paths(code)
        .into_iter()
        .filter(|(_, p, _)| p == "redb" || p.starts_with("redb::"))
        .map(|(line, p, _)| violation(file, line, "redb-outside-store", format!("`{p}`")))
        .collect()
}

/// Tasks and threads only from the allow-listed files; elsewhere `spawn_blocking` must be
/// awaited where it is called (a blocking call on the pool, not a task that lives on).
fn check_spawn(file: &str, code: &str) -> Vec<Violation> {
    if SPAWN_ALLOWED.iter().any(|(f, _)| *f == file) {
        return Vec::new();
    }
    let mut v = Vec::new();
    for (line, path, end) in paths(code) {
        let last = path.rsplit("::").next().unwrap_or("");
        // A thread builder is named with its constructor (`std::thread::Builder::new()`),
        // or bare where it is imported (`use std::thread::Builder`).
        let builder = path.strip_suffix("::new").unwrap_or(&path);
        let spawns = matches!(
            path.as_str(),
            "tokio::spawn"
                | "tokio::task::spawn"
                | "task::spawn"
                | "tokio::task::spawn_local"
                | "task::spawn_local"
                | "std::thread::spawn"
                | "thread::spawn"
                | "std::thread::scope"
                | "thread::scope"
        ) || matches!(builder, "std::thread::Builder" | "thread::Builder");
        if spawns {
            v.push(violation(file, line, "spawn", format!("`{path}`")));
        } else if last == "spawn_blocking" && !awaited_call(code, end) {
            v.push(violation(
                file,
                line,
                "spawn",
                format!("`{path}` not awaited in place"),
            ));
        }
    }
    v
}

/// Whether the call whose callee ends at `end` (`f(…)`) is directly `.await`ed. A path
/// that is imported or not called is not an awaited call.
fn awaited_call(code: &str, end: usize) -> bool {
    let rest = code[end..].trim_start();
    if !rest.starts_with('(') {
        return false;
    }
    let mut depth = 0usize;
    for (k, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return rest[k + 1..].trim_start().starts_with(".await");
                }
            }
            _ => {}
        }
    }
    false
}

/// Every source file starts with a `//!` doc (before any code).
fn check_doc(file: &str, src: &str) -> Vec<Violation> {
    match src.lines().find(|l| !l.trim().is_empty()) {
        Some(l) if l.trim_start().starts_with("//!") => Vec::new(),
        _ => vec![violation(file, 1, "doc", "no `//!` doc at the top")],
    }
}

/// `unsafe` (and `allow(unsafe_code)`) only inside the documented items.
fn check_unsafe(file: &str, code: &str) -> Vec<Violation> {
    let lines: Vec<&str> = code.lines().collect();
    let mut v = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        let hit = l.match_indices("unsafe").any(|(k, _)| {
            let before = l[..k].chars().next_back();
            let after = l[k + "unsafe".len()..].chars().next();
            !before.is_some_and(is_ident)
                && (!after.is_some_and(is_ident) || l[k..].starts_with("unsafe_code"))
        });
        if !hit {
            continue;
        }
        let item = enclosing_item(&lines, n);
        let allowed = UNSAFE_ALLOWED
            .iter()
            .any(|(f, it)| *f == file && item.contains(it));
        if !allowed {
            v.push(violation(
                file,
                n + 1,
                "unsafe",
                format!("`unsafe` in `{}`", item.trim()),
            ));
        }
    }
    v
}

/// The top-level item line `n` belongs to: for an attribute line, the item it annotates;
/// else the nearest item header above.
fn enclosing_item(lines: &[&str], n: usize) -> String {
    let top = |l: &str| !l.is_empty() && !l.starts_with(char::is_whitespace);
    if lines[n].starts_with("#[") {
        return lines[n..]
            .iter()
            .find(|l| top(l) && !l.starts_with("#["))
            .map_or(String::new(), |l| l.to_string());
    }
    lines[..=n]
        .iter()
        .rev()
        .find(|l| top(l) && !l.starts_with('}') && !l.starts_with("#[") && !l.starts_with(')'))
        .map_or(String::new(), |l| l.to_string())
}

/// The files of [`EXPIRY_ON_LEASE_TIME`] read no wall-clock timestamps.
fn check_expiry_clock(file: &str, code: &str) -> Vec<Violation> {
    if !EXPIRY_ON_LEASE_TIME.contains(&file) {
        return Vec::new();
    }
    code.lines()
        .enumerate()
        .filter(|(_, l)| l.contains("clock::unix_secs") || l.contains("clock::unix_ms"))
        .map(|(n, _)| {
            violation(
                file,
                n + 1,
                "clock",
                "measures expiry on the wall clock (use WallClock::steady_secs: lease time)",
            )
        })
        .collect()
}

/// Only the clock module may allow `clippy::disallowed_methods`.
fn check_clock_allow(file: &str, code: &str) -> Vec<Violation> {
    if file == CLOCK_MODULE {
        return Vec::new();
    }
    code.lines()
        .enumerate()
        .filter(|(_, l)| l.contains("disallowed_methods"))
        .map(|(n, _)| {
            violation(
                file,
                n + 1,
                "clock",
                "allows clippy::disallowed_methods (read clocks through appliance::clock)",
            )
        })
        .collect()
}

/// The workspace clippy.toml forbids the std clock reads.
fn check_clippy_toml(text: &str) -> Vec<Violation> {
    let value: toml::Value = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![violation("clippy.toml", 1, "clock", e.to_string())],
    };
    let listed: BTreeSet<String> = value
        .get("disallowed-methods")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            toml::Value::String(s) => Some(s.clone()),
            t => t.get("path").and_then(|p| p.as_str()).map(str::to_string),
        })
        .collect();
    ["std::time::SystemTime::now", "std::time::Instant::now"]
        .into_iter()
        .filter(|m| !listed.contains(*m))
        .map(|m| {
            violation(
                "clippy.toml",
                1,
                "clock",
                format!("`{m}` not in disallowed-methods"),
            )
        })
        .collect()
}

/// The x86_64 static musl binary links through `scripts/link-ordered` (the wrapper that applies
/// the function order; rustc must call it as an ld.lld-flavoured linker), and the order file
/// lists demangled names without the legacy `::h<hash>` suffix or v0 `[<hash>]` crate
/// disambiguators (those change with every build), each once, no mangled names, no stray blanks;
/// and `appliance/build.rs` names the list to cargo, so that a new list links the binary again.
fn check_link_order(config: &str, order: &str, build_rs: &str) -> Vec<Violation> {
    let mut v = Vec::new();
    if !build_rs
        .lines()
        .any(|l| l.contains("rerun-if-changed=link-order.txt") && !l.trim_start().starts_with("//"))
    {
        v.push(violation(
            "appliance/build.rs",
            1,
            "link-order",
            "the build script does not name `link-order.txt` (rerun-if-changed): a new list would not link again",
        ));
    }
    let value: toml::Value = match toml::from_str(config) {
        Ok(x) => x,
        Err(e) => {
            return vec![violation(
                ".cargo/config.toml",
                1,
                "link-order",
                e.to_string(),
            )];
        }
    };
    let target = value
        .get("target")
        .and_then(|t| t.get("x86_64-unknown-linux-musl"));
    let linker = target
        .and_then(|t| t.get("linker"))
        .and_then(|l| l.as_str());
    if linker != Some("scripts/link-ordered") {
        v.push(violation(
            ".cargo/config.toml",
            1,
            "link-order",
            "the x86_64 musl linker is not `scripts/link-ordered`",
        ));
    }
    let flags: Vec<&str> = target
        .and_then(|t| t.get("rustflags"))
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str())
        .collect();
    if !flags
        .windows(2)
        .any(|w| w == ["-C", "linker-flavor=ld.lld"])
    {
        v.push(violation(
            ".cargo/config.toml",
            1,
            "link-order",
            "the x86_64 musl rustflags do not set `-C linker-flavor=ld.lld`",
        ));
    }
    let file = "appliance/link-order.txt";
    let hashed = |name: &str| {
        let legacy = name.rfind("::h").is_some_and(|k| {
            let h = &name[k + 3..];
            h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit())
        });
        let disambiguator = name.split('[').skip(1).any(|rest| {
            rest.split_once(']').is_some_and(|(h, _)| {
                (8..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
            })
        });
        legacy || disambiguator
    };
    let mut seen = BTreeSet::new();
    let mut names = 0;
    for (i, line) in order.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let bad = if line.trim() != line || line.is_empty() {
            Some("blank or padded line")
        } else if line.starts_with("_ZN") || line.starts_with("_R") {
            Some("mangled name (list demangled names)")
        } else if hashed(line) {
            Some("name with a hash (`::h…` or `[…]`), which changes with every build")
        } else if !seen.insert(line) {
            Some("listed twice")
        } else {
            None
        };
        match bad {
            Some(what) => v.push(violation(file, n, "link-order", what)),
            None => names += 1,
        }
    }
    if names == 0 {
        v.push(violation(file, 1, "link-order", "no functions listed"));
    }
    v
}

/// kube-bridge depends on no workspace crate but `appliance-rpc`; its tests may also use
/// `kube-test-apiserver` (its own in-test API server, `kube-bridge/apiserver/`, which links
/// nothing of the appliance). `members` maps each workspace member's package name to its
/// directory.
fn check_bridge_deps(manifest: &str, members: &[(String, String)]) -> Vec<Violation> {
    let file = "kube-bridge/Cargo.toml";
    let value: toml::Value = match toml::from_str(manifest) {
        Ok(v) => v,
        Err(e) => return vec![violation(file, 1, "bridge-deps", e.to_string())],
    };
    let mut tables = Vec::new();
    for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = value.get(key).and_then(|t| t.as_table()) {
            tables.push((key, t.clone()));
        }
        if let Some(targets) = value.get("target").and_then(|t| t.as_table()) {
            for cfg in targets.values() {
                if let Some(t) = cfg.get(key).and_then(|t| t.as_table()) {
                    tables.push((key, t.clone()));
                }
            }
        }
    }
    let mut v = Vec::new();
    for (key, table) in tables {
        for (name, dep) in table {
            let package = dep
                .get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(&name)
                .to_string();
            let path = dep.get("path").and_then(|p| p.as_str()).map(|p| {
                p.trim_start_matches("../")
                    .trim_end_matches('/')
                    .to_string()
            });
            let member = members
                .iter()
                .find(|(n, dir)| *n == package || path.as_deref() == Some(dir.as_str()));
            let bad = match member {
                Some((n, _)) => {
                    n != "appliance-rpc"
                        && !(key == "dev-dependencies" && n == "kube-test-apiserver")
                }
                // A path dependency outside the workspace members is still not allowed.
                None => path.is_some(),
            };
            if bad {
                v.push(violation(
                    file,
                    1,
                    "bridge-deps",
                    format!("depends on `{name}` (only appliance-rpc is allowed)"),
                ));
            }
        }
    }
    v
}

/// ARCHITECTURE.md's code map names every (non-test) file of `appliance/src`. A file is
/// named by its full path, by its path below `appliance/src/`, or, in a code-map row, by
/// its path below a directory the row's first cell names; a `mod.rs` also by its directory.
fn check_code_map(arch: &str, files: &[String]) -> Vec<Violation> {
    let mut named: BTreeSet<String> = BTreeSet::new();
    for line in arch.lines() {
        let ticks = |s: &str| -> Vec<String> {
            s.split('`')
                .skip(1)
                .step_by(2)
                .map(|t| t.trim_start_matches("appliance/src/").to_string())
                .collect()
        };
        let all = ticks(line);
        named.extend(all.iter().cloned());
        // A table row: `| first cell | description |`.
        let Some(row) = line.strip_prefix('|') else {
            continue;
        };
        let Some((first, rest)) = row.split_once('|') else {
            continue;
        };
        if !first.contains("appliance/src/") {
            continue;
        }
        let bases: Vec<String> = ticks(first)
            .into_iter()
            .map(|t| match t.rfind('/') {
                Some(k) => t[..=k].to_string(),
                None => String::new(),
            })
            .collect();
        for t in ticks(rest) {
            for b in &bases {
                named.insert(format!("{b}{t}"));
            }
        }
    }
    files
        .iter()
        .filter(|f| {
            let rel = f.trim_start_matches("appliance/src/");
            let dir_named = rel
                .strip_suffix("mod.rs")
                .is_some_and(|dir| named.contains(dir));
            !named.contains(rel) && !dir_named
        })
        .map(|f| violation("ARCHITECTURE.md", 1, "code-map", format!("`{f}` not named")))
        .collect()
}

// ------------------------------------------------------------------------ the tree

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file of the repository (relative, `/`-separated), build output (`target*`,
/// `images/`) and dependencies left out.
fn rust_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                // images/: build-image output (root trees, an arm64 chroot mid-build).
                let build_output = ["target", "node_modules", "images"].contains(&name.as_str())
                    || name.starts_with("target-");
                if !name.starts_with('.') && !build_output {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// `code` with its inline `#[cfg(test)] mod … { … }` blocks blanked (lines kept).
fn without_test_modules(code: &str) -> String {
    let mut out: Vec<String> = code.lines().map(str::to_string).collect();
    let mut n = 0;
    while n < out.len() {
        if out[n].trim() != "#[cfg(test)]" {
            n += 1;
            continue;
        }
        let Some(decl) = (n + 1..out.len()).find(|&k| !out[k].trim().starts_with("#[")) else {
            break;
        };
        let d = out[decl].trim().trim_start_matches("pub ");
        if !(d.starts_with("mod ") && d.ends_with('{')) {
            n += 1;
            continue;
        }
        let mut depth = 0i64;
        let mut k = decl;
        while k < out.len() {
            depth += out[k].matches('{').count() as i64 - out[k].matches('}').count() as i64;
            if depth <= 0 {
                break;
            }
            k += 1;
        }
        let last = k.min(out.len() - 1);
        for line in &mut out[n..=last] {
            line.clear();
        }
        n = k + 1;
    }
    out.join("\n")
}

/// Files of `appliance/src` compiled only for tests: the files of `#[cfg(test)]` module
/// declarations (`#[cfg(test)] mod tests;`), and what lies below them.
fn test_only(root: &Path, files: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files.iter().filter(|f| f.starts_with("appliance/src/")) {
        let code = code_only(&std::fs::read_to_string(root.join(f)).unwrap());
        let lines: Vec<&str> = code.lines().map(str::trim).collect();
        for (n, l) in lines.iter().enumerate() {
            if *l != "#[cfg(test)]" {
                continue;
            }
            let Some(decl) = lines[n + 1..].iter().find(|l| !l.starts_with("#[")) else {
                continue;
            };
            let Some(name) = decl
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|r| r.strip_suffix(';'))
            else {
                continue;
            };
            let stem = f.trim_end_matches(".rs");
            let dir = if ["mod", "lib", "main"]
                .iter()
                .any(|s| stem.ends_with(&format!("/{s}")))
            {
                stem.rsplit_once('/').unwrap().0.to_string()
            } else {
                stem.to_string()
            };
            out.insert(format!("{dir}/{name}.rs"));
            out.insert(format!("{dir}/{name}/mod.rs"));
        }
    }
    // Below a test-only module is test-only too.
    let dirs: Vec<String> = out
        .iter()
        .map(|f| {
            f.trim_end_matches(".rs")
                .trim_end_matches("/mod")
                .to_string()
                + "/"
        })
        .collect();
    for f in files {
        if dirs.iter().any(|d| f.starts_with(d.as_str())) {
            out.insert(f.clone());
        }
    }
    out
}

fn workspace_members(root: &Path) -> Vec<(String, String)> {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let dir = m.as_str().unwrap().to_string();
            let pkg: toml::Value = toml::from_str(
                &std::fs::read_to_string(root.join(&dir).join("Cargo.toml")).unwrap(),
            )
            .unwrap();
            (pkg["package"]["name"].as_str().unwrap().to_string(), dir)
        })
        .collect()
}

#[test]
fn the_tree_keeps_the_architecture_invariants() {
    let root = root();
    let files = rust_files(&root);
    assert!(
        files.iter().any(|f| f == "appliance/src/app.rs"),
        "did not find the sources under {}",
        root.display()
    );
    let tests_only = test_only(&root, &files);
    let mut v = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(root.join(f)).unwrap();
        let code = code_only(&src);
        v.extend(check_doc(f, &src));
        v.extend(check_unsafe(f, &code));
        v.extend(check_clock_allow(f, &code));
        v.extend(check_expiry_clock(f, &code));
        if f.starts_with("appliance/src/protocol/") {
            v.extend(check_protocol(f, &code));
        }
        if f.starts_with("appliance/") || f.starts_with("kube-bridge/") {
            v.extend(check_redb(f, &code));
        }
        let product = f.starts_with("appliance/src/") || f.starts_with("kube-bridge/src/");
        if product && !tests_only.contains(f) {
            v.extend(check_spawn(f, &without_test_modules(&code)));
            v.extend(check_imports(
                f,
                &without_test_modules(&code),
                IMPORTS_FORBIDDEN,
            ));
        }
    }
    v.extend(check_clippy_toml(
        &std::fs::read_to_string(root.join("clippy.toml")).unwrap(),
    ));
    v.extend(check_bridge_deps(
        &std::fs::read_to_string(root.join("kube-bridge/Cargo.toml")).unwrap(),
        &workspace_members(&root),
    ));
    v.extend(check_link_order(
        &std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap(),
        &std::fs::read_to_string(root.join("appliance/link-order.txt")).unwrap(),
        &std::fs::read_to_string(root.join("appliance/build.rs")).unwrap_or_default(),
    ));
    let src_files: Vec<String> = files
        .iter()
        .filter(|f| f.starts_with("appliance/src/") && !tests_only.contains(*f))
        .cloned()
        .collect();
    v.extend(check_code_map(
        &std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap(),
        &src_files,
    ));
    v.sort();
    assert!(
        v.is_empty(),
        "{} violation(s) of ARCHITECTURE.md's invariants:\n{}",
        v.len(),
        v.iter().map(|v| format!("  {v}\n")).collect::<String>()
    );
}

// ------------------------------------------------------------------------ the checker's own tests

fn rules(v: &[Violation]) -> Vec<&'static str> {
    v.iter().map(|v| v.rule).collect()
}

#[test]
fn code_only_blanks_comments_and_literals_but_keeps_code_and_lines() {
    let src = "let a = \"tokio::spawn\"; // tokio::spawn\n/* std::fs\n */ let b = r#\"redb\"#;\nlet c = 'x'; fn f<'a>(x: &'a str) {}\n";
    let code = code_only(src);
    assert_eq!(code.lines().count(), src.lines().count());
    assert!(!code.contains("tokio") && !code.contains("std::fs") && !code.contains("redb"));
    assert!(code.contains("let a =") && code.contains("let b =") && code.contains("'a str"));
}

#[test]
fn use_trees_expand_to_full_paths() {
    assert_eq!(
        expand_use(" std::{fs, net::{UdpSocket as U, Ipv4Addr}, time::self}"),
        [
            "std::fs",
            "std::net::UdpSocket",
            "std::net::Ipv4Addr",
            "std::time"
        ]
    );
}

#[test]
fn protocol_check_catches_io_and_allows_addresses() {
    let bad = code_only(
        "//! doc\nuse std::{fs, net::{Ipv4Addr, UdpSocket}};\nuse tokio::net::UdpSocket as T;\nfn f() { let _ = std::time::Instant::now(); let _ = rand::random::<u8>(); }\nuse crate::store::Store;\n",
    );
    let v = check_protocol("appliance/src/protocol/x.rs", &bad);
    let what: Vec<&str> = v.iter().map(|v| v.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "`std::fs`",
            "`std::net::UdpSocket`",
            "`tokio::net::UdpSocket`",
            "`std::time::Instant::now`",
            "`rand::random`",
            "`crate::store::Store`"
        ],
        "{v:?}"
    );
    let good = code_only(
        "//! Pure: no tokio, no std::fs (said in a comment).\nuse std::net::{Ipv4Addr, SocketAddrV4};\nuse crate::protocol::dhcp::Lease;\nconst S: &str = \"tokio::spawn\";\n",
    );
    assert!(check_protocol("appliance/src/protocol/x.rs", &good).is_empty());
}

#[test]
fn redb_check_allows_only_the_store() {
    let code = code_only("use redb::Database;\nfn f() { let _ = \"state.redb\"; }\n");
    assert_eq!(
        rules(&check_redb("appliance/src/api/x.rs", &code)),
        ["redb-outside-store"]
    );
    assert!(check_redb("appliance/src/store/x.rs", &code).is_empty());
}

#[test]
fn spawn_check_needs_the_allow_list_or_an_awaited_blocking_call() {
    let code = code_only(
        "async fn f() {\n    tokio::spawn(async {});\n    std::thread::spawn(|| ());\n    tokio::task::spawn_blocking(|| ());\n    let x = tokio::task::spawn_blocking(move || g(h(1))).await;\n    set.spawn(async {});\n    let t = std::thread::Builder::new().name(n).spawn(|| ());\n}\n",
    );
    let v = check_spawn("appliance/src/api/x.rs", &code);
    assert_eq!(
        v.iter().map(|v| v.line).collect::<Vec<_>>(),
        [2, 3, 4, 7],
        "{v:?}"
    );
    assert!(check_spawn("appliance/src/app.rs", &code).is_empty());
    // Test modules may spawn: they are cut before the check.
    let code = code_only(
        "fn f() {}\n\n#[cfg(test)]\nmod tests {\n    fn g() {\n        tokio::spawn(async {});\n    }\n}\nfn h() { tokio::spawn(async {}); }\n",
    );
    let v = check_spawn("appliance/src/api/x.rs", &without_test_modules(&code));
    assert_eq!(v.iter().map(|v| v.line).collect::<Vec<_>>(), [9], "{v:?}");
    assert!(
        SPAWN_ALLOWED
            .iter()
            .all(|(f, why)| root().join(f).exists() && why.len() > 20),
        "every allow-listed file exists and says why"
    );
}

#[test]
fn doc_check_wants_a_module_doc_first() {
    assert!(check_doc("x.rs", "\n//! A doc.\nuse x;\n").is_empty());
    assert_eq!(
        rules(&check_doc("x.rs", "use super::*;\n//! late\n")),
        ["doc"]
    );
    assert_eq!(
        rules(&check_doc("x.rs", "/// item doc\nfn f() {}\n")),
        ["doc"]
    );
}

#[test]
fn unsafe_check_allows_only_the_documented_items() {
    let code = code_only(
        "//! x\n#[allow(unsafe_code)]\nfn map_file() {\n    let m = unsafe { map() };\n}\n\nfn other() {\n    unsafe { boom() }\n}\n",
    );
    let v = check_unsafe("appliance/src/http/boot.rs", &code);
    assert_eq!(v.iter().map(|v| v.line).collect::<Vec<_>>(), [8], "{v:?}");
    let v = check_unsafe("appliance/src/api/x.rs", &code);
    assert_eq!(
        v.iter().map(|v| v.line).collect::<Vec<_>>(),
        [2, 4, 8],
        "{v:?}"
    );
    // The word in a comment or string is not code.
    assert!(
        check_unsafe(
            "a.rs",
            &code_only("// no unsafe here\nlet s = \"unsafe\";\n")
        )
        .is_empty()
    );
}

#[test]
fn expiry_check_catches_a_wall_clock_read_in_a_room_measuring_expiry() {
    let code = code_only("let now = crate::clock::unix_secs();\n");
    assert_eq!(
        rules(&check_expiry_clock("appliance/src/net/dhcp.rs", &code)),
        ["clock"]
    );
    assert!(check_expiry_clock("appliance/src/reconcile/task.rs", &code).is_empty());
    let ok = code_only("let now = self.clock.steady_secs();\n");
    assert!(check_expiry_clock("appliance/src/net/dhcp.rs", &ok).is_empty());
}

#[test]
fn clock_checks_catch_an_allow_elsewhere_and_a_missing_ban() {
    let code = code_only("#[allow(clippy::disallowed_methods)]\nfn now() {}\n");
    assert_eq!(
        rules(&check_clock_allow("appliance/src/x.rs", &code)),
        ["clock"]
    );
    assert!(check_clock_allow(CLOCK_MODULE, &code).is_empty());
    assert_eq!(
        rules(&check_clippy_toml(
            "disallowed-methods = [{ path = \"std::time::Instant::now\" }]\n"
        )),
        ["clock"]
    );
    assert!(
        check_clippy_toml(
            "disallowed-methods = [\"std::time::SystemTime::now\", { path = \"std::time::Instant::now\", reason = \"x\" }]\n"
        )
        .is_empty()
    );
}

#[test]
fn bridge_check_allows_only_the_rpc_crate() {
    let members = [
        ("appliance".to_string(), "appliance".to_string()),
        ("appliance-rpc".to_string(), "appliance/rpc".to_string()),
        ("kube-bridge".to_string(), "kube-bridge".to_string()),
        (
            "kube-test-apiserver".to_string(),
            "kube-bridge/apiserver".to_string(),
        ),
    ];
    let good = "[dependencies]\nappliance-rpc = { path = \"../appliance/rpc\" }\nserde.workspace = true\n[dev-dependencies]\nkube-test-apiserver = { path = \"apiserver\" }\n";
    assert!(check_bridge_deps(good, &members).is_empty());
    // The in-test API server is for tests only.
    let bad = "[dependencies]\nkube-test-apiserver = { path = \"apiserver\" }\n";
    assert_eq!(rules(&check_bridge_deps(bad, &members)), ["bridge-deps"]);
    let bad = "[dependencies]\nappliance-rpc = { path = \"../appliance/rpc\" }\n[dev-dependencies]\ncore = { package = \"appliance\", path = \"../appliance\" }\n";
    assert_eq!(rules(&check_bridge_deps(bad, &members)), ["bridge-deps"]);
    let bad = "[target.'cfg(unix)'.dependencies]\nappliance.workspace = true\n";
    assert_eq!(rules(&check_bridge_deps(bad, &members)), ["bridge-deps"]);
}

#[test]
fn link_order_check_wants_the_wrapper_and_hashless_names() {
    let config = "[target.x86_64-unknown-linux-musl]\nlinker = \"scripts/link-ordered\"\nrustflags = [\"-C\", \"linker-flavor=ld.lld\"]\n";
    let order = "# comment\nmemcpy\n<alloc::raw_vec::RawVecInner>::reserve::do_reserve_and_handle::<alloc::alloc::Global>\nhashbrown::raw::RawTable<T,A>::reserve_rehash\n<[u8]>::to_vec\n<[f32]>::sort\n";
    let build = "fn main() {\n    println!(\"cargo::rerun-if-changed=link-order.txt\");\n}\n";
    assert!(check_link_order(config, order, build).is_empty());
    let cc = "[target.x86_64-unknown-linux-musl]\nrustflags = [\"-C\", \"linker-flavor=ld.lld\"]\n";
    assert_eq!(rules(&check_link_order(cc, order, build)), ["link-order"]);
    let gcc = "[target.x86_64-unknown-linux-musl]\nlinker = \"scripts/link-ordered\"\n";
    assert_eq!(rules(&check_link_order(gcc, order, build)), ["link-order"]);
    for untracked in [
        "",
        "fn main() {\n    // println!(\"cargo::rerun-if-changed=link-order.txt\");\n}\n",
    ] {
        assert_eq!(
            rules(&check_link_order(config, order, untracked)),
            ["link-order"]
        );
    }
    for bad in [
        "hashbrown::raw::RawTable<T,A>::reserve_rehash::h44312cfc4d9c081d\n",
        "<alloc[2088bb033b66609e]::raw_vec::RawVecInner<_>>::grow_one\n",
        "_ZN9hashbrown3raw8RawTable14reserve_rehash17h44312cfc4d9c081dE\n",
        "memcpy\nmemcpy\n",
        "memcpy\n\nmemset\n",
        "# only a comment\n",
    ] {
        assert!(
            rules(&check_link_order(config, bad, build)).contains(&"link-order"),
            "{bad:?} passed"
        );
    }
}

#[test]
fn code_map_check_finds_an_unnamed_file() {
    let arch = "| path | what |\n|---|---|\n| `appliance/src/net/dhcp.rs`, `net/iface.rs` | glue |\n| `appliance/src/protocol/dhcp/` | core: `wire.rs`, `server.rs` |\n| `appliance/src/app.rs` | wiring |\n";
    let files: Vec<String> = [
        "app.rs",
        "net/dhcp.rs",
        "net/iface.rs",
        "protocol/dhcp/mod.rs",
        "protocol/dhcp/wire.rs",
        "protocol/dhcp/server.rs",
        "protocol/dhcp/lease.rs",
        "protocol/tftp/wire.rs",
    ]
    .iter()
    .map(|f| format!("appliance/src/{f}"))
    .collect();
    let v = check_code_map(arch, &files);
    let what: Vec<&str> = v.iter().map(|v| v.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "`appliance/src/protocol/dhcp/lease.rs` not named",
            "`appliance/src/protocol/tftp/wire.rs` not named"
        ]
    );
}

#[test]
fn import_check_resolves_relative_paths_and_catches_a_forbidden_edge() {
    assert_eq!(
        resolve(
            &module_of("appliance/src/net/dhcp.rs"),
            "super::super::http::x"
        ),
        Some("crate::http::x".into())
    );
    assert_eq!(
        resolve(&module_of("appliance/src/http/mod.rs"), "self::metrics"),
        Some("crate::http::metrics".into())
    );
    assert_eq!(resolve(&module_of("appliance/src/a.rs"), "std::fs"), None);
    let below = [("appliance/src/net/", "crate::http", "below")];
    let code = code_only(
        "use crate::metrics::Counter;\nuse super::super::http::metrics::Gauge;\nfn f() { crate::http::x(); }\nuse crate::https::Y;\n",
    );
    let v = check_imports("appliance/src/net/tftp.rs", &code, &below);
    assert_eq!(
        v.iter().map(|v| v.line).collect::<Vec<_>>(),
        [2, 3],
        "{v:?}"
    );
    assert!(check_imports("appliance/src/api/x.rs", &code, &below).is_empty());
    // The leaf rule: any path into this crate.
    let v = check_imports(
        "appliance/src/metrics.rs",
        &code_only(
            "use prometheus_client::registry::Registry;\nuse crate::clock;\nfn f(&self) { self.x; crate::metrics::g(); }\n",
        ),
        IMPORTS_FORBIDDEN,
    );
    assert_eq!(rules(&v), ["imports"], "{v:?}");
    // An exempted file: the ctl rule holds for a serving room, not for ctl/ and cli.rs.
    let code = code_only("use crate::ctl::CtlError;\nfn f() { super::super::ctl::run(); }\n");
    let v = check_imports("appliance/src/bmc/power.rs", &code, IMPORTS_FORBIDDEN);
    assert_eq!(
        v.iter().map(|v| v.line).collect::<Vec<_>>(),
        [1, 2],
        "{v:?}"
    );
    assert!(check_imports("appliance/src/ctl/power.rs", &code, IMPORTS_FORBIDDEN).is_empty());
    assert!(check_imports("appliance/src/cli.rs", &code, IMPORTS_FORBIDDEN).is_empty());
    // The console circle: http/ must not name api::console (app.rs builds the service).
    let code = code_only(
        "use crate::api::console::ConsoleAdminService;\nfn f() { let _ = super::super::api::console::x(); crate::api::admin::y(); }\n",
    );
    let v = check_imports(
        "appliance/src/http/console/mod.rs",
        &code,
        IMPORTS_FORBIDDEN,
    );
    assert_eq!(
        v.iter().map(|v| v.line).collect::<Vec<_>>(),
        [1, 2],
        "{v:?}"
    );
    assert!(check_imports("appliance/src/app.rs", &code, IMPORTS_FORBIDDEN).is_empty());
}
