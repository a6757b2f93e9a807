//! Caps on discovered-server creation per source address, for the unauthenticated agent
//! API. Pure: no clock, no RNG, no IO — the time (monotonic milliseconds) and the hasher
//! (with its random keys) are inputs, so the rules are unit tested with any clock.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host owns a whole /64). Each source
//! may create new Servers (CreateServer with a UUID the box does not know) at a bounded
//! rate — a token bucket of [`Limits::burst`] creations refilled by one every
//! [`Limits::refill_ms`], kept as one "theoretical arrival time" (GCRA) — and at most
//! [`Limits::max_new`] distinct new UUIDs while the box remembers the source. Registering a
//! known server (a retry, a reboot) is never charged: the caller asks only for new UUIDs.
//!
//! Memory is bounded: at most [`Limits::max_sources`] sources are tracked, each with at
//! most `max_new` UUIDs. When the table is full, sources idle for
//! [`Limits::forget_after_ms`] are dropped, and if that frees nothing the least recently
//! active eighth is (amortised O(1) per new source). A forgotten source starts afresh; the
//! caps are per source, so a boot storm of 10,000 machines, one address each, fits.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};

/// The caps (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New servers one source may create at once.
    pub burst: u32,
    /// One more creation is allowed per this many milliseconds.
    pub refill_ms: u64,
    /// Distinct new UUIDs one source may create while it is remembered.
    pub max_new: u32,
    /// Sources tracked at most.
    pub max_sources: usize,
    /// A source idle this long may be forgotten.
    pub forget_after_ms: u64,
}

impl Limits {
    /// The box's caps: a machine registers one UUID per boot; a few more per address allow
    /// for DHCP address reuse, nothing allows a flood. 16,384 sources cover a 10,000
    /// machine boot storm without forgetting anyone.
    pub const DEFAULT: Limits = Limits {
        burst: 4,
        refill_ms: 60_000,
        max_new: 16,
        max_sources: 16_384,
        forget_after_ms: 24 * 3600 * 1000,
    };
}

/// Where registrations come from: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Why a new server was not admitted; nothing was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "too many new servers from {from}: at most {burst} at once per address, then one every {refill_secs} s (retry in {retry_secs} s)"
    )]
    Rate {
        from: Source,
        burst: u32,
        refill_secs: u64,
        retry_secs: u64,
    },
    #[error("{from} has registered {max_new} new servers already: at most {max_new} per address")]
    Count { from: Source, max_new: u32 },
}

#[derive(Debug)]
struct Entry {
    /// GCRA: the time at which the bucket would be full again.
    tat: u64,
    /// Last admission or refusal (for forgetting and eviction).
    last: u64,
    /// The new UUIDs admitted from this source (at most `max_new`).
    created: Vec<u128>,
}

/// The per-source registration limiter (see the module doc).
#[derive(Debug)]
pub struct RegistrationLimiter<S> {
    limits: Limits,
    table: HashMap<Source, Entry, S>,
}

impl<S: BuildHasher> RegistrationLimiter<S> {
    /// `hasher` carries the randomness (pass `RandomState::new()`), so table layout cannot
    /// be predicted by callers choosing addresses.
    pub fn with_hasher(limits: Limits, hasher: S) -> Self {
        RegistrationLimiter {
            limits,
            table: HashMap::with_hasher(hasher),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    /// A server with the new (not stored) `uuid` registers from `ip` at `now_ms`:
    /// admitted and charged, or refused (nothing charged). A UUID already admitted from
    /// this source is admitted again free (a retried creation).
    pub fn admit(&mut self, ip: IpAddr, uuid: u128, now_ms: u64) -> Result<(), Refusal> {
        let source = Source::of(ip);
        if !self.table.contains_key(&source) && self.table.len() >= self.limits.max_sources {
            self.make_room(now_ms);
        }
        let l = self.limits;
        let e = self.table.entry(source).or_insert(Entry {
            tat: now_ms,
            last: now_ms,
            created: Vec::new(),
        });
        e.last = e.last.max(now_ms);
        if e.created.contains(&uuid) {
            return Ok(());
        }
        if e.created.len() >= l.max_new as usize {
            return Err(Refusal::Count {
                from: source,
                max_new: l.max_new,
            });
        }
        let tat = e.tat.max(now_ms).saturating_add(l.refill_ms);
        let allowance = u64::from(l.burst).saturating_mul(l.refill_ms);
        if tat - now_ms > allowance {
            let wait = tat - now_ms - allowance;
            return Err(Refusal::Rate {
                from: source,
                burst: l.burst,
                refill_secs: l.refill_ms.div_ceil(1000),
                retry_secs: wait.div_ceil(1000),
            });
        }
        e.tat = tat;
        e.created.push(uuid);
        Ok(())
    }

    /// Frees at least one slot: idle sources first, else the least recently active eighth.
    fn make_room(&mut self, now_ms: u64) {
        let forget = self.limits.forget_after_ms;
        self.table
            .retain(|_, e| now_ms.saturating_sub(e.last) < forget);
        if self.table.len() < self.limits.max_sources {
            return;
        }
        let mut by_age: Vec<(u64, Source)> = self.table.iter().map(|(k, e)| (e.last, *k)).collect();
        let n = (by_age.len() / 8).max(1);
        by_age.select_nth_unstable_by_key(n - 1, |(last, _)| *last);
        for (_, source) in &by_age[..n] {
            self.table.remove(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasherDefault;
    use std::net::Ipv4Addr;

    use super::*;

    type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

    fn limiter(limits: Limits) -> RegistrationLimiter<Fixed> {
        RegistrationLimiter::with_hasher(limits, Fixed::default())
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    const L: Limits = Limits {
        burst: 3,
        refill_ms: 10_000,
        max_new: 5,
        max_sources: 64,
        forget_after_ms: 3_600_000,
    };

    #[test]
    fn a_burst_then_one_per_refill_interval() {
        let mut l = limiter(L);
        let ip = v4(10, 0, 0, 5);
        for u in 0..3 {
            l.admit(ip, u, 1_000).unwrap();
        }
        let e = l.admit(ip, 3, 1_000).unwrap_err();
        assert_eq!(
            e,
            Refusal::Rate {
                from: Source::of(ip),
                burst: 3,
                refill_secs: 10,
                retry_secs: 10
            }
        );
        assert!(e.to_string().contains("10.0.0.5"), "{e}");
        assert!(e.to_string().contains("per address"), "{e}");
        // Refused calls are not charged: after one interval exactly one more passes.
        assert!(l.admit(ip, 3, 10_999).is_err());
        l.admit(ip, 3, 11_000).unwrap();
        assert!(l.admit(ip, 4, 11_000).is_err());
        // A long pause refills the bucket up to the burst, not beyond.
        l.admit(ip, 4, 1_000_000).unwrap();
    }

    #[test]
    fn distinct_new_uuids_are_capped_and_a_retry_is_free() {
        let mut l = limiter(L);
        let ip = v4(10, 0, 0, 6);
        let mut t = 0;
        for u in 0..5 {
            t += 10_000;
            l.admit(ip, u, t).unwrap();
            // The same UUID again (a retried creation) costs nothing.
            l.admit(ip, u, t).unwrap();
        }
        t += 1_000_000;
        let e = l.admit(ip, 99, t).unwrap_err();
        assert_eq!(
            e,
            Refusal::Count {
                from: Source::of(ip),
                max_new: 5
            }
        );
        assert!(e.to_string().contains("at most 5 per address"), "{e}");
        l.admit(ip, 4, t).unwrap();
    }

    #[test]
    fn sources_are_independent_and_a_boot_storm_of_10000_fits() {
        let mut l = limiter(Limits::DEFAULT);
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.admit(ip, u128::from(i), u64::from(i)).unwrap();
        }
        assert_eq!(l.tracked(), 10_000);
        // Every one of them could still register a second server (within the burst).
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.admit(ip, u128::from(i) + (1 << 64), 20_000).unwrap();
        }
        assert_eq!(l.tracked(), 10_000);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_recently_active() {
        let slow = Limits {
            refill_ms: 1_000_000,
            ..L
        };
        let mut l = limiter(slow);
        let flooder = v4(10, 9, 9, 9);
        for u in 0..3 {
            l.admit(flooder, u, 0).unwrap();
        }
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            l.admit(ip, 7, u64::from(i) + 1).unwrap();
            assert!(l.tracked() <= L.max_sources);
            // The flooder keeps trying (and is refused), so it stays remembered.
            if i % 4 == 0 {
                assert!(
                    l.admit(flooder, 100 + u128::from(i), u64::from(i) + 1)
                        .is_err()
                );
            }
        }
        assert!(
            l.admit(flooder, 5000, 10_001).is_err(),
            "the active flooder was forgotten"
        );
    }

    #[test]
    fn idle_sources_are_forgotten_when_room_is_needed() {
        let limits = Limits {
            max_sources: 2,
            ..L
        };
        let mut l = limiter(limits);
        let (a, b, c) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2), v4(10, 0, 0, 3));
        for u in 0..3 {
            l.admit(a, u, 0).unwrap();
        }
        l.admit(b, 1, 0).unwrap();
        l.admit(c, 1, limits.forget_after_ms + 1).unwrap();
        assert_eq!(l.tracked(), 1, "both idle sources were dropped");
        l.admit(a, 3, limits.forget_after_ms + 1).unwrap();
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(v4(10, 0, 0, 7)));
        let mut l = limiter(L);
        for u in 0..3 {
            l.admit(a, u, 0).unwrap();
        }
        assert!(l.admit(b, 9, 0).is_err(), "same /64, same bucket");
        l.admit(c, 9, 0).unwrap();
    }
}
