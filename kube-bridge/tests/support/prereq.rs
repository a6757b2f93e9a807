//! What a test does when a tool it needs is missing: with `APPLIANCE_E2E=1` (set by
//! `scripts/test` as root, i.e. in CI) a failure naming it; without, a printed skip. The
//! same rule as the appliance's `tests/support/prereq.rs`; kube-bridge keeps its own copy
//! because it shares no code with the appliance but `appliance-rpc`.

/// Call when `test` cannot run because of `why`, then return from the test.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("APPLIANCE_E2E").is_none_or(|v| v != "1"),
        "{test}: APPLIANCE_E2E=1 but a prerequisite is missing: {why}"
    );
    eprintln!("SKIP {test}: {why}");
}
