//! The box's one clock: every read of the system's clocks goes through here (a workspace
//! `clippy.toml` forbids `SystemTime::now` and `Instant::now` everywhere else, and the tidy
//! test checks that this module is the only one allowed to call them). Pure cores never
//! read it: they take the time as an input.
//!
//! tokio's `tokio::time::Instant::now` stays allowed: it is tokio's own clock, which tests
//! pause and advance (`tokio::time::pause`).
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now: timers, deadlines, rates, uptime.
pub fn now() -> Instant {
    Instant::now()
}

/// Timer now: tokio's clock, for deadlines and intervals kept by tasks (the reconcile
/// task's reboot timers, class flushes, agents' signs of life). Tests stop and advance it
/// with `tokio::time::pause`; outside a runtime it is the monotonic clock.
pub fn timer_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Wall-clock now.
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Wall clock as milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms() -> u64 {
    wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Wall clock as seconds since the Unix epoch (0 for a clock set before it).
pub fn unix_secs() -> u64 {
    wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_units_agree_and_monotonic_time_does_not_go_back() {
        let (s, ms) = (unix_secs(), unix_ms());
        // Some time after 2024-01-01, and the two units describe the same instant.
        assert!(s > 1_704_067_200, "{s}");
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1, "{s} {ms}");
        let a = now();
        assert!(now() >= a);
    }
}
