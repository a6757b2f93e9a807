//! The box's one clock: every read of the system's clocks goes through here (a workspace
//! `clippy.toml` forbids `SystemTime::now` and `Instant::now` everywhere else, and the tidy
//! test checks that this module is the only one allowed to call them). Pure cores never
//! read it: they take the time as an input.
//!
//! tokio's `tokio::time::Instant::now` stays allowed: it is tokio's own clock, which tests
//! pause and advance (`tokio::time::pause`).
//!
//! The wall clock is a value, [`WallClock`], handed to the services that measure expiry
//! against it; its doc states the rule for wall-clock jumps (monotonic lease time for every
//! expiry, the wall clock only for timestamps, a clamp after a restart).
//!
//! Also the one place for time as text, pure (no clock read): RFC 3339 written
//! ([`rfc3339`]) and read ([`parse_rfc3339`]), and durations such as `90s`, `10m`, `1h30m`
//! or `1d` read ([`parse_duration`]) and written ([`duration_text`]). Hand-written (Howard
//! Hinnant's civil-date algorithms) rather than a date crate: UTC only, Unix milliseconds
//! in and out, no time zones, leap seconds or calendars are needed.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Wall-clock now (the process's [`WallClock`]).
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms())
}

/// Wall clock as milliseconds since the Unix epoch (0 for a clock set before it): the
/// process's [`WallClock`], for timestamps.
pub fn unix_ms() -> u64 {
    WallClock::process().unix_ms()
}

/// Wall clock as seconds since the Unix epoch (0 for a clock set before it): the process's
/// [`WallClock`], for timestamps.
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// The box's wall clock as a value handed to the services that read it at construction
/// ([`WallClock::process`] in the box, [`WallClock::manual`] in tests), with the rule for
/// wall-clock jumps (NTP stepping the clock, an operator setting it):
///
/// - [`WallClock::unix_ms`]/[`WallClock::unix_secs`]: the wall clock as it is, for
///   timestamps people read and store (condition and event times, log lines, certificate
///   validity);
/// - [`WallClock::steady_ms`]/[`WallClock::steady_secs`]: *lease time*, for every duration
///   measured against a Unix time (DHCP lease and offer expiry, the agent API's lease check,
///   boot-token expiry). It is the wall clock read once when the clock was made, plus the
///   monotonic time since: while the process runs a jump of the wall clock moves nothing
///   measured on it (a lease of an hour lasts an hour of real time after a jump of a day
///   either way). Expiry times are stored in it; after a restart the new process's lease
///   time starts again from the wall clock, and the DHCP and DHCPv6 services clamp every
///   loaded expiry to at most one lease time ahead (one rule for both,
///   `protocol::dhcp::clamp_after_restart`; `Dhcpv6Server::restarted`), so a clock
///   set back while the box was down never makes a lease live longer than one lease time,
///   and a clock set forward across a restart expires leases as that much downtime would
///   (a restart cannot tell the two apart).
///
/// Timers kept by tasks (reboot timers, agents' signs of life, retries) run on tokio's
/// monotonic clock ([`timer_now`]) and never read the wall clock.
///
/// The process's clock ([`WallClock::process`]) is the one source behind [`unix_ms`],
/// [`unix_secs`] and [`wall`] too. In a debug build (never the release binary that images
/// ship) `APPLIANCE_FAULT_WALL_OFFSET_FILE=<path>` makes it add the whole seconds written
/// in that file (`86400`, `-86400`; re-read every 100 ms) to the wall clock: the root test
/// `storm/tests/clock_jump.rs` jumps the real box's wall clock with it.
#[derive(Clone)]
pub struct WallClock(std::sync::Arc<WallInner>);

struct WallInner {
    /// Milliseconds added to the source's wall reading (jumps).
    offset_ms: std::sync::atomic::AtomicI64,
    /// The wall reading when the clock was made: lease time's origin.
    origin_ms: u64,
    source: WallSource,
}

enum WallSource {
    System {
        origin: Instant,
    },
    /// A test clock: its monotonic time only moves by [`WallClock::advance`].
    Manual {
        elapsed_ms: std::sync::atomic::AtomicU64,
    },
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WallClock")
            .field("unix_ms", &self.unix_ms())
            .field("steady_ms", &self.steady_ms())
            .finish()
    }
}

fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn add_signed(ms: u64, delta: i64) -> u64 {
    if delta >= 0 {
        ms.saturating_add(delta.unsigned_abs())
    } else {
        ms.saturating_sub(delta.unsigned_abs())
    }
}

impl WallClock {
    /// The process's clock: the system's wall and monotonic clocks (and, in a debug build,
    /// the fault hook's offset). Made on first use; every call returns the same clock.
    pub fn process() -> WallClock {
        static PROCESS: std::sync::OnceLock<WallClock> = std::sync::OnceLock::new();
        PROCESS
            .get_or_init(|| {
                let offset_ms = fault::initial_offset_ms();
                let clock = WallClock(std::sync::Arc::new(WallInner {
                    offset_ms: offset_ms.into(),
                    origin_ms: add_signed(system_unix_ms(), offset_ms),
                    source: WallSource::System {
                        origin: Instant::now(),
                    },
                }));
                fault::follow_offset_file(&clock);
                clock
            })
            .clone()
    }

    /// A clock on the system's clocks, its lease time starting now.
    pub fn system() -> WallClock {
        WallClock(std::sync::Arc::new(WallInner {
            offset_ms: 0.into(),
            origin_ms: system_unix_ms(),
            source: WallSource::System {
                origin: Instant::now(),
            },
        }))
    }

    /// A test clock whose wall clock reads `unix_ms` now and which moves only when told:
    /// [`WallClock::advance`] (time passes) and [`WallClock::jump`] (the wall clock is set).
    pub fn manual(unix_ms: u64) -> WallClock {
        WallClock(std::sync::Arc::new(WallInner {
            offset_ms: 0.into(),
            origin_ms: unix_ms,
            source: WallSource::Manual {
                elapsed_ms: 0.into(),
            },
        }))
    }

    /// Lets `d` of real time pass on a manual clock (both readings move); nothing on a
    /// system clock, whose time passes by itself.
    pub fn advance(&self, d: Duration) {
        if let WallSource::Manual { elapsed_ms } = &self.0.source {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            elapsed_ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Sets the wall clock `delta_ms` forwards (positive) or backwards (negative), as NTP
    /// stepping it would: lease time does not move.
    pub fn jump(&self, delta_ms: i64) {
        self.0
            .offset_ms
            .fetch_add(delta_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Only the debug builds' fault hook sets the offset outright.
    #[cfg(debug_assertions)]
    fn set_offset(&self, offset_ms: i64) {
        self.0
            .offset_ms
            .store(offset_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Monotonic milliseconds since the clock was made.
    fn elapsed_ms(&self) -> u64 {
        match &self.0.source {
            WallSource::System { origin } => {
                u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
            WallSource::Manual { elapsed_ms } => {
                elapsed_ms.load(std::sync::atomic::Ordering::SeqCst)
            }
        }
    }

    /// The wall clock, Unix milliseconds (0 for a clock set before 1970): timestamps.
    pub fn unix_ms(&self) -> u64 {
        let base = match &self.0.source {
            WallSource::System { .. } => system_unix_ms(),
            WallSource::Manual { .. } => self.0.origin_ms.saturating_add(self.elapsed_ms()),
        };
        add_signed(
            base,
            self.0.offset_ms.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// The wall clock, Unix seconds.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// Lease time, Unix milliseconds: the wall clock when this clock was made plus the
    /// monotonic time since (see the type's doc). For every expiry.
    pub fn steady_ms(&self) -> u64 {
        self.0.origin_ms.saturating_add(self.elapsed_ms())
    }

    /// Lease time, Unix seconds.
    pub fn steady_secs(&self) -> u64 {
        self.steady_ms() / 1000
    }
}

/// The debug-build wall-clock fault hook (see [`WallClock`]).
mod fault {
    use super::WallClock;

    #[cfg(debug_assertions)]
    const VAR: &str = "APPLIANCE_FAULT_WALL_OFFSET_FILE";

    /// The offset in the file, milliseconds (0 when unset or unreadable).
    #[cfg(debug_assertions)]
    fn read_ms(path: &std::path::Path) -> i64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(0)
            .saturating_mul(1000)
    }

    #[cfg(debug_assertions)]
    pub(super) fn initial_offset_ms() -> i64 {
        std::env::var_os(VAR).map_or(0, |p| read_ms(std::path::Path::new(&p)))
    }

    /// Follows the file: every change of its offset is a jump of the wall clock (logged).
    #[cfg(debug_assertions)]
    pub(super) fn follow_offset_file(clock: &WallClock) {
        let Some(path) = std::env::var_os(VAR).map(std::path::PathBuf::from) else {
            return;
        };
        let clock = clock.clone();
        let mut last = read_ms(&path);
        let _ = std::thread::Builder::new()
            .name("fault-wall-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let now = read_ms(&path);
                    if now != last {
                        clock.set_offset(now);
                        last = now;
                        tracing::warn!(
                            file = %path.display(),
                            "fault injection (debug build): wall clock offset {:+} s",
                            now / 1000
                        );
                    }
                }
            });
    }

    #[cfg(not(debug_assertions))]
    pub(super) fn initial_offset_ms() -> i64 {
        0
    }

    #[cfg(not(debug_assertions))]
    pub(super) fn follow_offset_file(_clock: &WallClock) {}
}

const DAY_SECS: i64 = 86_400;

/// Days since 1970-01-01 of a civil (proleptic Gregorian) date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 UTC text, whole seconds (`2026-11-18T11:06:40Z`), of a Unix time in
/// milliseconds: the form of Kubernetes' `metav1.Time` (condition transition times).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(DAY_SECS), secs.rem_euclid(DAY_SECS));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// An RFC 3339 time (`2026-12-05T20:00:00Z`; a fraction of a second, `t`/`z` and `±hh:mm`
/// offsets allowed) → Unix milliseconds (digits past the millisecond dropped). None for
/// anything else, out-of-range fields, or a time before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        ms = format!("{:0<3}", &f[..f.len().min(3)]).parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * DAY_SECS + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs * 1000 + ms).ok()
}

/// A duration as text: one or more `<number><unit>` with unit `s`, `m`, `h` or `d`
/// (`90s`, `10m`, `1h30m`, `1d`). None for anything else (a bare number, an unknown unit,
/// a sign, overflow).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// A duration as text in its largest whole unit of `h`, `m` and `s` (`20m`, `90s`, `2h`),
/// read back by [`parse_duration`] (sub-second parts are dropped).
pub fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs != 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_writes_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(1_767_225_599_999), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn rfc3339_reads_fractions_offsets_and_refuses_the_rest() {
        assert_eq!(
            parse_rfc3339("2026-11-18T11:06:40Z"),
            Some(1_795_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-18T11:06:40.123456789Z"),
            Some(1_795_000_000_123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-18t11:06:40.5z"),
            Some(1_795_000_000_500)
        );
        assert_eq!(
            parse_rfc3339("2026-11-18T12:06:40+01:00"),
            Some(1_795_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-18T10:36:40-00:30"),
            Some(1_795_000_000_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-11-32T00:00:00Z",
            "2026-11-18T24:00:00Z",
            "2026-11-18T11:60:40Z",
            "2026-11-18T11:06:40",
            "2026-11-18 11:06:40Z",
            "2026-11-18T11:06:40.Z",
            "2026-11-18T11:06:40+0100",
            "2026-11-18T11:06:40*01:00",
            "+026-11-18T11:06:40Z",
            "1969-12-31T23:59:59Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_writer_and_reader_agree() {
        // Every 13th day over four and a half centuries (leap years, 2000, 2100), odd times.
        for days in (0u64..146_097 + 20_000).step_by(13) {
            let ms = (days * 86_400 + days % 86_400) * 1000;
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        // The writer keeps whole seconds.
        assert_eq!(
            parse_rfc3339(&rfc3339(1_795_000_000_999)),
            Some(1_795_000_000_000)
        );
    }

    #[test]
    fn durations_read_and_write() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Some(90));
        assert_eq!(secs("10m"), Some(600));
        assert_eq!(secs(" 2h "), Some(7200));
        assert_eq!(secs("1h30m"), Some(5400));
        assert_eq!(secs("1d"), Some(86_400));
        assert_eq!(secs("0m"), Some(0));
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "-5m",
            "1.5h",
            "1h30",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        for (d, text) in [
            (1200, "20m"),
            (90, "90s"),
            (7200, "2h"),
            (0, "0s"),
            (86_400, "24h"),
        ] {
            assert_eq!(duration_text(Duration::from_secs(d)), text);
            assert_eq!(secs(text), Some(d), "{text}");
        }
    }

    #[test]
    fn lease_time_ignores_wall_clock_jumps_and_counts_real_time() {
        let c = WallClock::manual(1_800_000_000_000);
        assert_eq!(
            (c.unix_ms(), c.steady_ms()),
            (1_800_000_000_000, 1_800_000_000_000)
        );
        c.jump(86_400_000);
        assert_eq!(
            c.unix_ms(),
            1_800_086_400_000,
            "the wall clock jumped a day"
        );
        assert_eq!(c.steady_ms(), 1_800_000_000_000, "lease time did not");
        c.advance(Duration::from_secs(10));
        assert_eq!(c.steady_secs(), 1_800_000_010);
        c.jump(-2 * 86_400_000);
        assert_eq!(c.unix_secs(), 1_800_000_010 - 86_400);
        assert_eq!(c.steady_secs(), 1_800_000_010);
        // A clock set before 1970 reads 0, never wraps.
        c.jump(-4_000_000_000_000);
        assert_eq!(c.unix_ms(), 0);
        // The system clock: lease time starts at the wall clock and only moves forwards.
        let s = WallClock::system();
        let (a, w) = (s.steady_ms(), s.unix_ms());
        assert!(a.abs_diff(w) < 1000, "{a} {w}");
        s.jump(-86_400_000);
        assert!(s.steady_ms() >= a);
        assert!(s.unix_ms() < a - 86_000_000);
    }

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
