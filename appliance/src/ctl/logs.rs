//! `appliance ctl server logs [-f] [--since] [--tail] [-o json] NAME`: the client of the
//! observe API's `Logs`. `--since` is read here (pure: [`parse_since`]) into a Unix time in
//! ms.
//!
//! May touch: the admin endpoint (gRPC).

use appliance_rpc::observe::observe_client::ObserveClient;
use appliance_rpc::observe::{LogLine, LogsRequest};

use super::{CtlArgs, CtlError, channel, outln};
use crate::cli::LinesFormat;

/// `ctl server logs NAME`: prints the lines as they arrive (until the stream ends).
pub(super) async fn logs(
    args: &CtlArgs,
    name: &str,
    follow: bool,
    since: Option<&str>,
    tail: u32,
    output: LinesFormat,
) -> Result<(), CtlError> {
    let since_unix_ms = match since {
        Some(s) => {
            parse_since(s, crate::clock::unix_ms()).ok_or_else(|| CtlError::Since(s.to_string()))?
        }
        None => 0,
    };
    let (channel, add_token) = channel(args).await?;
    let mut client = ObserveClient::with_interceptor(channel, add_token);
    let mut lines = client
        .logs(LogsRequest {
            server: name.to_string(),
            follow,
            since_unix_ms,
            tail,
        })
        .await?
        .into_inner();
    while let Some(line) = lines.message().await? {
        match output {
            LinesFormat::Text => outln!("{}", text_line(&line))?,
            LinesFormat::Json => outln!("{}", json_line(&line))?,
        }
    }
    Ok(())
}

/// `TIME LEVEL MESSAGE`: Talos's time when it sent one, else the box's receive time.
fn text_line(l: &LogLine) -> String {
    let time = if l.talos_time.is_empty() {
        crate::reconcile::rfc3339(l.received_unix_ms)
    } else {
        l.talos_time.clone()
    };
    let level = if l.talos_level.is_empty() {
        "-"
    } else {
        &l.talos_level
    };
    format!("{time} {level:<7} {}", l.msg)
}

/// Sidero's log receiver output: the node's JSON object plus who sent it (`server`).
fn json_line(l: &LogLine) -> String {
    let mut o = serde_json::Map::new();
    let mut fields: Vec<_> = l.fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        o.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    o.insert("msg".into(), l.msg.clone().into());
    if !l.talos_time.is_empty() {
        o.insert("talos-time".into(), l.talos_time.clone().into());
    }
    if !l.talos_level.is_empty() {
        o.insert("talos-level".into(), l.talos_level.clone().into());
    }
    o.insert("server".into(), l.server.clone().into());
    o.insert("address".into(), l.address.clone().into());
    o.insert("received".into(), l.received_unix_ms.into());
    serde_json::Value::Object(o).to_string()
}

/// `--since`: a duration before `now_ms` (`90s`, `10m`, `2h`, `1d`, `1h30m`) or an RFC 3339
/// time (`2026-12-05T20:00:00Z`, fractional seconds and `±hh:mm` offsets allowed) → Unix ms.
pub fn parse_since(s: &str, now_ms: u64) -> Option<u64> {
    let s = s.trim();
    if s.contains('T') || s.contains('t') {
        return parse_rfc3339(s);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
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
    Some(now_ms.saturating_sub(total.checked_mul(1000)?))
}

/// RFC 3339 → Unix ms (days from civil, Howard Hinnant's algorithm).
fn parse_rfc3339(s: &str) -> Option<u64> {
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
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_rfc3339() {
        let now = 1_795_000_000_123;
        assert_eq!(parse_since("90s", now), Some(now - 90_000));
        assert_eq!(parse_since("10m", now), Some(now - 600_000));
        assert_eq!(parse_since("1h30m", now), Some(now - 5_400_000));
        assert_eq!(parse_since("1d", now), Some(now - 86_400_000));
        assert_eq!(
            parse_since("2026-11-18T11:06:40Z", now),
            Some(1_795_000_000_000)
        );
        assert_eq!(
            parse_since("2026-11-18T11:06:40.123456789Z", now),
            Some(1_795_000_000_123)
        );
        assert_eq!(
            parse_since("2026-11-18T12:06:40+01:00", now),
            Some(1_795_000_000_000)
        );
        assert_eq!(
            parse_since("2000-02-29T00:00:00Z", now),
            Some(951_782_400_000)
        );
        // The formatter and the parser agree.
        assert_eq!(
            parse_since(&crate::reconcile::rfc3339(now), now),
            Some(now / 1000 * 1000)
        );
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "-5m",
            "2026-13-01T00:00:00Z",
            "2026-11-18T11:06:40",
            "yesterday",
        ] {
            assert_eq!(parse_since(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn lines_print_with_sideros_fields() {
        let l = LogLine {
            seq: 3,
            received_unix_ms: 1_795_000_000_000,
            server: "node-a".into(),
            address: "fdae::2".into(),
            msg: "hello".into(),
            talos_time: "2026-12-02T10:11:12.1Z".into(),
            talos_level: "info".into(),
            fields: [("facility".to_string(), "kern".to_string())].into(),
        };
        assert_eq!(text_line(&l), "2026-12-02T10:11:12.1Z info    hello");
        let v: serde_json::Value = serde_json::from_str(&json_line(&l)).unwrap();
        assert_eq!(v["msg"], "hello");
        assert_eq!(v["talos-level"], "info");
        assert_eq!(v["talos-time"], "2026-12-02T10:11:12.1Z");
        assert_eq!(v["facility"], "kern");
        assert_eq!(v["server"], "node-a");
    }
}
