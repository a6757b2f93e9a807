//! `appliance ctl server timeline [-o json] NAME`: the client of the observe API's
//! `Timeline`: a server's boot steps in the order they began, each with its time, outcome,
//! detail (bytes and duration of transfers), then the durations read from them.
//!
//! May touch: the admin endpoint (gRPC).

use appliance_rpc::observe::observe_client::ObserveClient;
use appliance_rpc::observe::{TimelineEvent, TimelineReply, TimelineRequest};

use super::{CtlArgs, CtlError, channel, outln};
use crate::cli::LinesFormat;

/// `ctl server timeline NAME`.
pub(super) async fn timeline(
    args: &CtlArgs,
    name: &str,
    output: LinesFormat,
) -> Result<(), CtlError> {
    let (channel, add_token) = channel(args).await?;
    let mut client = ObserveClient::with_interceptor(channel, add_token);
    let reply = client
        .timeline(TimelineRequest {
            server: name.to_string(),
        })
        .await?
        .into_inner();
    match output {
        LinesFormat::Json => outln!("{}", json(&reply)),
        LinesFormat::Text => {
            for line in text(&reply) {
                outln!("{line}")?;
            }
            Ok(())
        }
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `12.3 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The detail column: the room's words, then bytes and duration of a transfer.
fn detail(e: &TimelineEvent) -> String {
    let mut d = e.detail.clone();
    match (e.bytes, e.duration_ms) {
        (Some(b), Some(ms)) => {
            let rate = b
                .saturating_mul(1000)
                .checked_div(ms)
                .map(|r| format!(", {}/s", size(r)))
                .unwrap_or_default();
            d = format!("{d} ({} in {}{rate})", size(b), secs(ms));
        }
        (Some(b), None) => d = format!("{d} ({})", size(b)),
        _ => {}
    }
    let from: Vec<&str> = [e.mac.as_str(), e.ip.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if !from.is_empty() {
        d = format!("{d} [{}]", from.join(" "));
    }
    d.trim().to_string()
}

/// The table and the summary lines.
fn text(r: &TimelineReply) -> Vec<String> {
    let mut out = vec![format!(
        "{:<24}  {:<14}  {:<7}  DETAIL",
        "TIME", "STEP", "OUTCOME"
    )];
    for e in &r.events {
        out.push(format!(
            "{:<24}  {:<14}  {:<7}  {}",
            crate::clock::rfc3339(e.time_unix_ms),
            e.step,
            e.outcome,
            detail(e)
        ));
    }
    if r.events.is_empty() {
        out.push(format!("(no boot steps recorded for {})", r.server));
    }
    if let Some(ms) = r.time_to_registered_ms {
        out.push(format!("time to registered: {}", secs(ms)));
    }
    if let Some(ms) = r.time_to_installed_ms {
        out.push(format!("time to installed: {}", secs(ms)));
    }
    if let Some(t) = r.first_disk_boot_unix_ms {
        out.push(format!(
            "first boot from disk: {}",
            crate::clock::rfc3339(t)
        ));
    }
    out
}

/// One JSON object: the server, its events, the durations.
fn json(r: &TimelineReply) -> String {
    let events: Vec<serde_json::Value> = r
        .events
        .iter()
        .map(|e| {
            let mut o = serde_json::json!({
                "seq": e.seq,
                "time": crate::clock::rfc3339(e.time_unix_ms),
                "timeUnixMs": e.time_unix_ms,
                "step": e.step,
                "outcome": e.outcome,
                "detail": e.detail,
            });
            for (k, v) in [("bytes", e.bytes), ("durationMs", e.duration_ms)] {
                if let Some(v) = v {
                    o[k] = v.into();
                }
            }
            for (k, v) in [("mac", &e.mac), ("ip", &e.ip)] {
                if !v.is_empty() {
                    o[k] = v.clone().into();
                }
            }
            o
        })
        .collect();
    let mut o = serde_json::json!({ "server": r.server, "events": events });
    for (k, v) in [
        ("timeToRegisteredMs", r.time_to_registered_ms),
        ("timeToInstalledMs", r.time_to_installed_ms),
        ("firstDiskBootUnixMs", r.first_disk_boot_unix_ms),
    ] {
        if let Some(v) = v {
            o[k] = v.into();
        }
    }
    o.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_show_every_step_with_its_outcome() {
        let r = TimelineReply {
            server: "s1".into(),
            events: vec![
                TimelineEvent {
                    seq: 1,
                    time_unix_ms: 1_795_000_000_000,
                    step: "kernel".into(),
                    outcome: "ok".into(),
                    detail: "agent-amd64/vmlinuz".into(),
                    bytes: Some(3 << 20),
                    duration_ms: Some(1500),
                    mac: String::new(),
                    ip: "10.0.0.5".into(),
                },
                TimelineEvent {
                    seq: 2,
                    time_unix_ms: 1_795_000_004_000,
                    step: "registered".into(),
                    outcome: "ok".into(),
                    detail: "new server".into(),
                    ..Default::default()
                },
            ],
            time_to_registered_ms: Some(4000),
            time_to_installed_ms: None,
            first_disk_boot_unix_ms: None,
        };
        let t = text(&r);
        assert_eq!(t.len(), 4, "{t:?}");
        assert!(t[1].contains("kernel") && t[1].contains("ok"), "{t:?}");
        assert!(
            t[1].ends_with("agent-amd64/vmlinuz (3.0 MiB in 1.5 s, 2.0 MiB/s) [10.0.0.5]"),
            "{t:?}"
        );
        assert!(
            t[2].contains("registered") && t[2].ends_with("new server"),
            "{t:?}"
        );
        assert_eq!(t[3], "time to registered: 4.0 s");
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["server"], "s1");
        assert_eq!(v["events"][0]["bytes"], 3 << 20);
        assert_eq!(v["events"][1]["step"], "registered");
        assert!(v["events"][1].get("bytes").is_none());
        assert_eq!(v["timeToRegisteredMs"], 4000);
        assert!(v.get("timeToInstalledMs").is_none());
        assert_eq!(size(512), "512 B");
    }
}
