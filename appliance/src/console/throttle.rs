//! Login throttling: per-client-address backoff plus a global brake, as a pure state
//! machine, and which address a login comes from (`client_addr`).
//!
//! Time is an input (`now`), so the policy is unit-tested without sleeping. The HTTP glue
//! calls `begin` before it looks at a secret: the attempt is counted there, as if it will
//! fail, so a burst of concurrent guesses cannot outrun the count while its verifications
//! are still running. It then reports a right secret with `succeeded` (which takes the
//! attempt back), a wrong one with `failed` (which only says whether a lockout is now on),
//! and an attempt it gave up on before verifying with `abandoned`.
//!
//! Policy: each client address gets `FREE_FAILURES` wrong attempts, then every further
//! attempt locks that address out for `BASE_DELAY * 2^(n - FREE_FAILURES - 1)`, capped at
//! `MAX_DELAY` (the attempt that starts a lockout is still looked at; the ones after it are
//! refused until it ends). Independently, more than `GLOBAL_LIMIT` attempts from all
//! clients within `GLOBAL_WINDOW` pause every login for `GLOBAL_LOCK` (a distributed guess
//! attack cannot outrun the per-address limit by rotating addresses) — except the admin
//! token and addresses that logged in successfully before (at most `MAX_KNOWN`, kept for
//! `KNOWN_FOR`), so that a flood of guesses cannot lock the operators out. A success clears
//! the address's record.

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
/// A record with no attempt for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Addresses remembered as having logged in, at most (the least recent is dropped).
pub const MAX_KNOWN: usize = 1000;
/// How long a successful login keeps its address exempt from the global pause.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

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

/// A counted attempt, handed back to `succeeded`, `failed` or `abandoned`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the outcome of the attempt"]
pub struct Attempt {
    ip: IpAddr,
    at: Instant,
    /// Spared the global pause (admin token or known address).
    exempt: bool,
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
    /// Addresses that logged in successfully → when they last did.
    known: HashMap<IpAddr, Instant>,
}

impl LoginThrottle {
    /// Starts a login attempt from `ip` at `now`, counted before its secret is looked at;
    /// refused while `ip` is locked out, or while logins are paused unless `admin_token`
    /// (the secret is the admin token) or `ip` logged in successfully before.
    pub fn begin(
        &mut self,
        ip: IpAddr,
        now: Instant,
        admin_token: bool,
    ) -> Result<Attempt, Refusal> {
        let exempt = admin_token || self.is_known(ip, now);
        if let Some(until) = self.global_locked_until {
            if now >= until {
                self.global_locked_until = None;
            } else if !exempt {
                return Err(Refusal::Global {
                    retry_after: until - now,
                });
            }
        }
        if let Some(rec) = self.clients.get(&ip)
            && let Some(until) = rec.locked_until
            && now < until
        {
            return Err(Refusal::Client {
                retry_after: until - now,
            });
        }
        self.prune(now);
        let rec = self.clients.entry(ip).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        rec.failures = rec.failures.saturating_add(1);
        rec.last_failure = now;
        if rec.failures > FREE_FAILURES {
            let exp = (rec.failures - FREE_FAILURES - 1).min(20);
            rec.locked_until = Some(now + BASE_DELAY.saturating_mul(1u32 << exp).min(MAX_DELAY));
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
        }
        Ok(Attempt {
            ip,
            at: now,
            exempt,
        })
    }

    /// The attempt's secret was wrong (it is already counted). Returns the lockout now on
    /// for its address, if any, so the reply can say so.
    pub fn failed(&mut self, attempt: Attempt, now: Instant) -> Option<Refusal> {
        if !attempt.exempt
            && let Some(until) = self.global_locked_until.filter(|u| now < *u)
        {
            return Some(Refusal::Global {
                retry_after: until - now,
            });
        }
        let until = self.clients.get(&attempt.ip)?.locked_until?;
        (now < until).then(|| Refusal::Client {
            retry_after: until - now,
        })
    }

    /// The attempt's secret was right: forget the address's failures, take the attempt out
    /// of the global count and remember the address as known.
    pub fn succeeded(&mut self, attempt: Attempt, now: Instant) {
        self.clients.remove(&attempt.ip);
        self.uncount(attempt.at);
        if self.known.len() >= MAX_KNOWN
            && !self.known.contains_key(&attempt.ip)
            && let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(ip, _)| *ip)
        {
            self.known.remove(&oldest);
        }
        self.known.insert(attempt.ip, now);
    }

    /// The attempt was given up before its secret was looked at (no verification slot
    /// came free in time): it does not count. A lockout it started stays.
    pub fn abandoned(&mut self, attempt: Attempt) {
        if let Some(rec) = self.clients.get_mut(&attempt.ip) {
            rec.failures = rec.failures.saturating_sub(1);
        }
        self.uncount(attempt.at);
    }

    /// Number of client records kept (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    fn is_known(&self, ip: IpAddr, now: Instant) -> bool {
        self.known
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < KNOWN_FOR)
    }

    /// Takes one attempt made at `at` out of the global window (if it is still there).
    fn uncount(&mut self, at: Instant) {
        if let Some(i) = self.recent.iter().rposition(|t| *t == at) {
            self.recent.remove(i);
        }
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

/// The address a login comes from: the TCP peer, unless the peer is one of the `trusted`
/// proxies (`[console] trusted_proxies`), in which case the last hop of its
/// `X-Forwarded-For` (the address that proxy itself added; earlier entries come from the
/// client and are ignored). `forwarded_for` holds the header's values in order. A trusted
/// proxy that sends no usable address stays the client itself.
pub fn client_addr(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.iter().any(|t| t.to_canonical() == peer) {
        return peer;
    }
    forwarded_for
        .last()
        .and_then(|v| v.rsplit(',').next())
        .and_then(|hop| hop.trim().parse::<IpAddr>().ok())
        .map_or(peer, |a| a.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// One attempt that turns out wrong.
    fn wrong(t: &mut LoginThrottle, ip: IpAddr, now: Instant) -> Result<Option<Refusal>, Refusal> {
        let a = t.begin(ip, now, false)?;
        Ok(t.failed(a, now))
    }

    #[test]
    fn free_failures_then_exponential_backoff() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(wrong(&mut t, ip(1), now), Ok(None));
        }
        // The sixth is still looked at, and starts the lockout.
        assert_eq!(
            wrong(&mut t, ip(1), now),
            Ok(Some(Refusal::Client {
                retry_after: BASE_DELAY
            }))
        );
        assert!(matches!(
            t.begin(ip(1), now, false),
            Err(Refusal::Client { .. })
        ));
        // Another client is not affected.
        assert_eq!(wrong(&mut t, ip(2), now), Ok(None));
        // After the delay the client may try again; the next failure doubles the delay.
        let later = now + BASE_DELAY;
        assert_eq!(
            wrong(&mut t, ip(1), later),
            Ok(Some(Refusal::Client {
                retry_after: BASE_DELAY * 2
            }))
        );
    }

    #[test]
    fn a_concurrent_burst_is_counted_before_any_verification_ends() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        // 50 attempts arrive before any of them is verified.
        let started: Vec<_> = (0..50).map(|_| t.begin(ip(1), now, false)).collect();
        let admitted = started.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, FREE_FAILURES as usize + 1);
        assert!(started[..admitted].iter().all(Result::is_ok));
        assert!(
            started[admitted..]
                .iter()
                .all(|r| matches!(r, Err(Refusal::Client { .. })))
        );
        // The right secret inside the burst is refused before it is looked at.
        assert!(t.begin(ip(1), now, false).is_err());
        // Even the admin token waits out a client lockout (only the global pause spares it).
        assert!(t.begin(ip(1), now, true).is_err());
    }

    #[test]
    fn delay_is_capped() {
        let mut t = LoginThrottle::default();
        let mut now = crate::clock::now();
        let mut last = Ok(None);
        for _ in 0..40 {
            last = wrong(&mut t, ip(1), now);
            now += MAX_DELAY;
        }
        assert_eq!(
            last,
            Ok(Some(Refusal::Client {
                retry_after: MAX_DELAY
            }))
        );
    }

    #[test]
    fn success_clears_the_record() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        for _ in 0..FREE_FAILURES {
            let _ = wrong(&mut t, ip(1), now);
        }
        let a = t.begin(ip(1), now, false).unwrap();
        t.succeeded(a, now);
        assert_eq!(t.tracked(), 0);
        assert_eq!(wrong(&mut t, ip(1), now), Ok(None));
    }

    #[test]
    fn an_abandoned_attempt_does_not_count() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        for _ in 0..20 {
            let a = t.begin(ip(1), now, false).unwrap();
            t.abandoned(a);
        }
        for _ in 0..FREE_FAILURES {
            assert_eq!(wrong(&mut t, ip(1), now), Ok(None));
        }
    }

    /// `n` wrong attempts from rotating addresses (5 each: none locked).
    fn flood(t: &mut LoginThrottle, n: usize, now: Instant) -> Option<Refusal> {
        let mut last = None;
        for i in 0..n {
            let addr = IpAddr::from([10, 1, (i / 5 / 256) as u8, (i / 5 % 256) as u8]);
            last = wrong(t, addr, now).unwrap();
        }
        last
    }

    #[test]
    fn global_brake_locks_everyone() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        assert_eq!(
            flood(&mut t, GLOBAL_LIMIT + 1, now),
            Some(Refusal::Global {
                retry_after: GLOBAL_LOCK
            })
        );
        assert!(matches!(
            t.begin(ip(200), now, false),
            Err(Refusal::Global { .. })
        ));
        assert!(t.begin(ip(200), now + GLOBAL_LOCK, false).is_ok());
    }

    #[test]
    fn the_global_brake_spares_the_admin_token_and_known_addresses() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        let a = t.begin(ip(7), now, false).unwrap();
        t.succeeded(a, now);
        let later = now + Duration::from_secs(5);
        flood(&mut t, GLOBAL_LIMIT + 1, later);
        // A stranger is paused, with the password or anything else...
        assert!(matches!(
            t.begin(ip(8), later, false),
            Err(Refusal::Global { .. })
        ));
        // ...but not with the admin token,
        let a = t.begin(ip(8), later, true).unwrap();
        t.succeeded(a, later);
        // and not from an address that logged in before; its wrong guesses still count
        // toward its own lockout, without reporting the pause.
        let a = t.begin(ip(7), later, false).unwrap();
        assert_eq!(t.failed(a, later), None);
        for _ in 0..FREE_FAILURES {
            let _ = wrong(&mut t, ip(7), later);
        }
        assert!(matches!(
            t.begin(ip(7), later, false),
            Err(Refusal::Client { .. })
        ));
        // Known addresses are forgotten after KNOWN_FOR.
        let much_later = now + KNOWN_FOR;
        flood(&mut t, GLOBAL_LIMIT + 1, much_later);
        assert!(matches!(
            t.begin(ip(7), much_later, false),
            Err(Refusal::Global { .. })
        ));
    }

    #[test]
    fn known_addresses_are_bounded() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        for i in 0..(MAX_KNOWN + 10) {
            let addr = IpAddr::from([10, 4, (i / 256) as u8, (i % 256) as u8]);
            let at = now + Duration::from_millis(i as u64);
            let a = t.begin(addr, at, false).unwrap();
            t.succeeded(a, at);
        }
        assert_eq!(t.known.len(), MAX_KNOWN);
        assert!(!t.known.contains_key(&IpAddr::from([10, 4, 0, 0])));
    }

    #[test]
    fn successes_do_not_count_toward_the_global_brake() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        for i in 0..(GLOBAL_LIMIT * 2) {
            let addr = IpAddr::from([10, 5, (i / 256) as u8, (i % 256) as u8]);
            let a = t.begin(addr, now, false).unwrap();
            t.succeeded(a, now);
        }
        assert!(t.begin(ip(1), now, false).is_ok());
    }

    #[test]
    fn old_failures_leave_the_global_window() {
        let mut t = LoginThrottle::default();
        let mut now = crate::clock::now();
        for i in 0..(GLOBAL_LIMIT * 3) {
            let addr = IpAddr::from([10, 2, (i / 256) as u8, (i % 256) as u8]);
            assert_eq!(wrong(&mut t, addr, now), Ok(None), "failure {i}");
            now += Duration::from_secs(1);
        }
    }

    #[test]
    fn records_are_bounded() {
        let mut t = LoginThrottle::default();
        let now = crate::clock::now();
        for i in 0..(MAX_TRACKED + 50) {
            let addr = IpAddr::from([10, 3, (i / 256) as u8, (i % 256) as u8]);
            let at = now + Duration::from_secs(i as u64 * 2);
            let _ = wrong(&mut t, addr, at);
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }

    #[test]
    fn the_client_address_comes_from_a_trusted_proxy_only() {
        let proxy: IpAddr = "192.0.2.1".parse().unwrap();
        let peer: IpAddr = "192.0.2.50".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let trusted = [proxy];
        // Not the proxy: its own address, whatever it forwards.
        assert_eq!(client_addr(peer, &["198.51.100.7"], &trusted), peer);
        assert_eq!(client_addr(peer, &["198.51.100.7"], &[]), peer);
        // The proxy: the last hop it added.
        assert_eq!(client_addr(proxy, &["198.51.100.7"], &trusted), client);
        assert_eq!(
            client_addr(proxy, &["203.0.113.9, 198.51.100.7"], &trusted),
            client
        );
        assert_eq!(
            client_addr(proxy, &["203.0.113.9", " 198.51.100.7 "], &trusted),
            client
        );
        // A proxy that sends nothing usable is the client itself.
        assert_eq!(client_addr(proxy, &[], &trusted), proxy);
        assert_eq!(client_addr(proxy, &["unknown"], &trusted), proxy);
        assert_eq!(client_addr(proxy, &["198.51.100.7, "], &trusted), proxy);
        // IPv4-mapped IPv6 peers (a box listening on [::]) match an IPv4 entry.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_addr(mapped, &["2001:db8::7"], &trusted),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr("::ffff:192.0.2.50".parse().unwrap(), &[], &trusted),
            peer
        );
    }
}
