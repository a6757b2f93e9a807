//! Login throttling: per-client-IP backoff plus a global brake, as a pure state machine.
//!
//! Time is an input (`now`), so the policy is unit-tested without sleeping. The HTTP glue
//! asks `check` before verifying a secret and reports the outcome with `failed`/`succeeded`.
//!
//! Policy: each client IP gets `FREE_FAILURES` wrong attempts, then every further failure
//! locks that IP out for `BASE_DELAY * 2^(n - FREE_FAILURES)`, capped at `MAX_DELAY`.
//! Independently, more than `GLOBAL_LIMIT` failures from all clients within `GLOBAL_WINDOW`
//! lock every login for `GLOBAL_LOCK` (a distributed guess attack cannot outrun the per-IP
//! limit by rotating addresses). A success clears the IP's record.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const FREE_FAILURES: u32 = 5;
pub const BASE_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
pub const GLOBAL_LIMIT: usize = 100;
pub const GLOBAL_WINDOW: Duration = Duration::from_secs(60);
pub const GLOBAL_LOCK: Duration = Duration::from_secs(30);
/// Records kept at most; the oldest unlocked ones are dropped first.
pub const MAX_TRACKED: usize = 10_000;
/// A record with no failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// Why a login attempt is refused before its secret is even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client failed too often; retry after the given time.
    Client { retry_after: Duration },
    /// Too many failures overall; every client waits.
    Global { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Refusal::Client { retry_after } | Refusal::Global { retry_after } => retry_after,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// The throttle state.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    clients: HashMap<IpAddr, Record>,
    recent: VecDeque<Instant>,
    global_locked_until: Option<Instant>,
}

impl LoginThrottle {
    /// May `ip` try a login at `now`?
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if let Some(until) = self.global_locked_until {
            if now < until {
                return Err(Refusal::Global {
                    retry_after: until - now,
                });
            }
            self.global_locked_until = None;
        }
        if let Some(rec) = self.clients.get(&ip)
            && let Some(until) = rec.locked_until
            && now < until
        {
            return Err(Refusal::Client {
                retry_after: until - now,
            });
        }
        Ok(())
    }

    /// Records a wrong secret from `ip`; returns the lockout it caused, if any.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> Option<Refusal> {
        self.prune(now);
        let rec = self.clients.entry(ip).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        rec.failures = rec.failures.saturating_add(1);
        rec.last_failure = now;
        let mut out = None;
        if rec.failures > FREE_FAILURES {
            let exp = (rec.failures - FREE_FAILURES - 1).min(20);
            let delay = BASE_DELAY.saturating_mul(1u32 << exp).min(MAX_DELAY);
            rec.locked_until = Some(now + delay);
            out = Some(Refusal::Client { retry_after: delay });
        }
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > GLOBAL_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() > GLOBAL_LIMIT {
            self.global_locked_until = Some(now + GLOBAL_LOCK);
            self.recent.clear();
            out = Some(Refusal::Global {
                retry_after: GLOBAL_LOCK,
            });
        }
        out
    }

    /// A correct secret from `ip`: forget its failures.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.clients.remove(&ip);
    }

    /// Number of client records kept (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    fn prune(&mut self, now: Instant) {
        self.clients.retain(|_, r| {
            r.locked_until.is_some_and(|u| u > now)
                || now.duration_since(r.last_failure) < FORGET_AFTER
        });
        if self.clients.len() >= MAX_TRACKED {
            // Drop the unlocked records with the oldest failures until there is room.
            let mut unlocked: Vec<(IpAddr, Instant)> = self
                .clients
                .iter()
                .filter(|(_, r)| r.locked_until.is_none_or(|u| u <= now))
                .map(|(ip, r)| (*ip, r.last_failure))
                .collect();
            unlocked.sort_by_key(|(_, t)| *t);
            let excess = self.clients.len() + 1 - MAX_TRACKED;
            for (ip, _) in unlocked.into_iter().take(excess) {
                self.clients.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn free_failures_then_exponential_backoff() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.check(ip(1), now), Ok(()));
            assert_eq!(t.failed(ip(1), now), None);
        }
        assert_eq!(t.check(ip(1), now), Ok(()));
        assert_eq!(
            t.failed(ip(1), now),
            Some(Refusal::Client {
                retry_after: BASE_DELAY
            })
        );
        assert!(matches!(t.check(ip(1), now), Err(Refusal::Client { .. })));
        // Another client is not affected.
        assert_eq!(t.check(ip(2), now), Ok(()));
        // After the delay the client may try again; the next failure doubles the delay.
        let later = now + BASE_DELAY;
        assert_eq!(t.check(ip(1), later), Ok(()));
        assert_eq!(
            t.failed(ip(1), later),
            Some(Refusal::Client {
                retry_after: BASE_DELAY * 2
            })
        );
    }

    #[test]
    fn delay_is_capped() {
        let mut t = LoginThrottle::default();
        let mut now = Instant::now();
        let mut last = None;
        for _ in 0..40 {
            last = t.failed(ip(1), now);
            now += MAX_DELAY;
        }
        assert_eq!(
            last,
            Some(Refusal::Client {
                retry_after: MAX_DELAY
            })
        );
    }

    #[test]
    fn success_clears_the_record() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.failed(ip(1), now);
        }
        t.succeeded(ip(1));
        assert_eq!(t.failed(ip(1), now), None);
    }

    #[test]
    fn global_brake_locks_everyone() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        let mut refusal = None;
        for i in 0..=GLOBAL_LIMIT {
            // Rotate source addresses so no single client is locked.
            let addr = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            refusal = t.failed(addr, now);
        }
        assert_eq!(
            refusal,
            Some(Refusal::Global {
                retry_after: GLOBAL_LOCK
            })
        );
        assert!(matches!(t.check(ip(200), now), Err(Refusal::Global { .. })));
        assert_eq!(t.check(ip(200), now + GLOBAL_LOCK), Ok(()));
    }

    #[test]
    fn old_failures_leave_the_global_window() {
        let mut t = LoginThrottle::default();
        let mut now = Instant::now();
        for i in 0..(GLOBAL_LIMIT * 3) {
            let addr = IpAddr::from([10, 2, (i / 256) as u8, (i % 256) as u8]);
            assert_eq!(t.failed(addr, now), None, "failure {i}");
            now += Duration::from_secs(1);
        }
    }

    #[test]
    fn records_are_bounded() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED + 50) {
            let addr = IpAddr::from([10, 3, (i / 256) as u8, (i % 256) as u8]);
            t.failed(addr, now + Duration::from_secs(i as u64 * 2));
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }
}
