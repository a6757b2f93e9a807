//! What a test does when something it needs is missing (root, a tool): with
//! `APPLIANCE_E2E=1` (set by `scripts/test` as root, i.e. in CI) that is a failure naming
//! the missing piece; without it, a printed skip. Included with `#[path]` where needed.
#![allow(dead_code)]

/// Whether the run asked for every end-to-end test to run (`APPLIANCE_E2E=1`).
pub fn e2e_required() -> bool {
    std::env::var_os("APPLIANCE_E2E").is_some_and(|v| v == "1")
}

/// Call when `test` cannot run because of `why`, then return from the test: panics under
/// `APPLIANCE_E2E=1`, else prints `SKIP <test>: <why>`.
pub fn skip(test: &str, why: &str) {
    assert!(
        !e2e_required(),
        "{test}: APPLIANCE_E2E=1 but a prerequisite is missing: {why}"
    );
    eprintln!("SKIP {test}: {why}");
}

/// Whether this process runs as root (network namespaces, privileged ports).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether `tool` can be started (`tool args…` ran, whatever its exit status).
pub fn have(tool: &str, args: &[&str]) -> bool {
    std::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Why a root-only test needing `tools` cannot run here, if it cannot.
pub fn missing_root_or(tools: &[(&str, &[&str])], root_for: &str) -> Option<String> {
    if !is_root() {
        return Some(format!("not root: {root_for} need root"));
    }
    tools
        .iter()
        .find(|(tool, args)| !have(tool, args))
        .map(|(tool, _)| format!("`{tool}` is not installed (scripts/setup installs it)"))
}
