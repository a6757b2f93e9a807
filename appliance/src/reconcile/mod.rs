//! The server lifecycle: the pure state machine (`lifecycle`), ServerClass membership
//! (`classes`), agent boots (`boots`, pure: who may make which agent call), and the
//! effectful side that applies transitions to the store in one
//! transaction each and runs their actions (`apply`, `task`).
//!
//! May touch: the store (typed API), the power hook (`power::PowerActions`). Never sockets.

pub mod apply;
pub mod boots;
pub mod class_status;
pub mod classes;
pub mod edits;
pub mod lifecycle;
pub mod power;
pub mod qualify;
pub mod task;

pub use apply::LifecycleError;
pub use task::{Lifecycle, ReconcileTask};

/// RFC 3339 UTC text of a Unix time in milliseconds (civil-from-days, no clock read).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000_123), "2026-11-18T11:06:40Z");
    }
}
