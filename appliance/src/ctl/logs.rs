//! `appliance ctl server logs [-f] [--since] [--tail] [-o json] NAME`: the client of the
//! observe API's `Logs`. `--since` is read here (pure: [`parse_since`], on `crate::clock`'s
//! readers) into a Unix time in ms.
//!
//! May touch: the admin endpoint (gRPC).

use appliance_rpc::observe::observe_client::ObserveClient;
use appliance_rpc::observe::{LogLine, LogsRequest};

use super::{CtlArgs, CtlError, channel, outln};
use crate::cli::LinesFormat;
use crate::clock;

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
            parse_since(s, clock::unix_ms()).ok_or_else(|| CtlError::Since(s.to_string()))?
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
        clock::rfc3339(l.received_unix_ms)
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
/// Both forms are read by `crate::clock`.
pub fn parse_since(s: &str, now_ms: u64) -> Option<u64> {
    let s = s.trim();
    if s.contains('T') || s.contains('t') {
        return clock::parse_rfc3339(s);
    }
    let ago = u64::try_from(clock::parse_duration(s)?.as_millis()).ok()?;
    Some(now_ms.saturating_sub(ago))
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
            parse_since(&clock::rfc3339(now), now),
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
