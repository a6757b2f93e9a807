//! The box's one clock: every read of the system's clocks goes through here (a workspace
//! `clippy.toml` forbids `SystemTime::now` and `Instant::now` everywhere else, and the tidy
//! test checks that this module is the only one allowed to call them). Pure cores never
//! read it: they take the time as an input.
//!
//! tokio's `tokio::time::Instant::now` stays allowed: it is tokio's own clock, which tests
//! pause and advance (`tokio::time::pause`).
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
    fn wall_clock_units_agree_and_monotonic_time_does_not_go_back() {
        let (s, ms) = (unix_secs(), unix_ms());
        // Some time after 2024-01-01, and the two units describe the same instant.
        assert!(s > 1_704_067_200, "{s}");
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1, "{s} {ms}");
        let a = now();
        assert!(now() >= a);
    }
}
