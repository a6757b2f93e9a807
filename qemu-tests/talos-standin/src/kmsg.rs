//! The kernel log as Talos streams it to `talos.logging.kernel=tcp://…`: every /dev/kmsg
//! record from the first one on, as one JSON object per line (`msg`, `talos-time`,
//! `talos-level`, `facility`, `seq`, `clock`, `priority`; shared/sidero-facts.md §7.7),
//! over one TCP connection, reconnecting when it breaks.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Error;

/// The message the stand-in logs last; the shipper stops after sending it.
const END: &str = "talos-standin: end of kernel log";

/// Writes a line into the kernel log (it is shipped like every kernel message). With its
/// newline: a record without one stays open for continuation, unseen by /dev/kmsg readers
/// until the next message.
pub fn write(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("{msg}\n").as_bytes());
    }
}

/// One /dev/kmsg record: `pri,seq,usec,flags;message\n[ KEY=value\n…]`.
#[derive(Debug, PartialEq)]
pub struct Record {
    pub facility: u32,
    pub level: u32,
    pub seq: u64,
    pub usec: u64,
    pub msg: String,
}

pub fn parse(raw: &str) -> Option<Record> {
    let (head, rest) = raw.split_once(';')?;
    let mut f = head.split(',');
    let pri: u32 = f.next()?.parse().ok()?;
    let seq = f.next()?.parse().ok()?;
    let usec = f.next()?.parse().ok()?;
    Some(Record {
        facility: pri >> 3,
        level: pri & 7,
        seq,
        usec,
        msg: rest.split('\n').next().unwrap_or("").to_string(),
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339 with nanoseconds, UTC, from Unix time.
pub fn rfc3339_nanos(secs: u64, nanos: u32) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

const FACILITIES: [&str; 12] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp",
];
const PRIORITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The JSON line Talos sends for a kernel record.
pub fn json_line(r: &Record, now: std::time::SystemTime) -> String {
    let t = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let level = match r.level {
        0..=3 => "error",
        4 => "warn",
        7 => "debug",
        _ => "info",
    };
    format!(
        "{{\"clock\":{},\"facility\":\"{}\",\"msg\":\"{}\",\"priority\":\"{}\",\"seq\":{},\"talos-level\":\"{level}\",\"talos-time\":\"{}\"}}\n",
        r.usec,
        FACILITIES.get(r.facility as usize).unwrap_or(&"local"),
        escape(&r.msg),
        PRIORITIES[r.level as usize],
        r.seq,
        rfc3339_nanos(t.as_secs(), t.subsec_nanos())
    )
}

/// The shipping thread.
pub struct Shipper {
    lines: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Shipper {
    pub fn start(addr: SocketAddr) -> Shipper {
        let lines = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (l, e) = (lines.clone(), ended.clone());
        let thread = std::thread::spawn(move || ship(addr, &l, &e));
        Shipper {
            lines,
            ended,
            thread,
        }
    }

    /// Logs the end marker and waits until it was sent and the connection closed.
    /// Returns the number of lines sent.
    pub fn finish(self, timeout: Duration) -> Result<u64, Error> {
        write(END);
        let deadline = std::time::Instant::now() + timeout;
        while !self.thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "kernel log not flushed within {timeout:?} ({} lines sent)",
                    self.lines.load(Ordering::Relaxed)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ended.load(Ordering::Relaxed);
        Ok(self.lines.load(Ordering::Relaxed))
    }
}

fn ship(addr: SocketAddr, lines: &AtomicU64, ended: &AtomicBool) {
    let mut kmsg = match std::fs::File::open("/dev/kmsg") {
        Ok(f) => f,
        Err(e) => {
            crate::say(&format!("FAILED: /dev/kmsg: {e}"));
            return;
        }
    };
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match kmsg.read(&mut buf) {
            Ok(n) => n,
            // EPIPE: records were overwritten before we read them; go on.
            Err(_) => continue,
        };
        let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
        let Some(record) = parse(&raw) else { continue };
        let line = json_line(&record, std::time::SystemTime::now());
        loop {
            if conn.is_none() {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        conn = Some(s);
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                }
            }
            let Some(s) = conn.as_mut() else { continue };
            if s.write_all(line.as_bytes()).is_ok() {
                break;
            }
            conn = None;
        }
        lines.fetch_add(1, Ordering::Relaxed);
        if record.msg.contains(END) {
            if let Some(mut s) = conn.take() {
                // FIN after the last line; wait (bounded) for the box to close its side,
                // so every line was received before the reboot.
                let _ = s.shutdown(Shutdown::Write);
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = s.read(&mut buf);
            }
            ended.store(true, Ordering::Relaxed);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_become_talos_json_lines() {
        let r = parse("6,339,5140900,-;NET: \"Registered\" PF_INET6\n SUBSYSTEM=net\n").unwrap();
        assert_eq!(
            r,
            Record {
                facility: 0,
                level: 6,
                seq: 339,
                usec: 5_140_900,
                msg: "NET: \"Registered\" PF_INET6".into()
            }
        );
        let t = std::time::UNIX_EPOCH + Duration::new(1_796_000_000, 5);
        assert_eq!(
            json_line(&r, t),
            "{\"clock\":5140900,\"facility\":\"kern\",\"msg\":\"NET: \\\"Registered\\\" PF_INET6\",\"priority\":\"info\",\"seq\":339,\"talos-level\":\"info\",\"talos-time\":\"2026-11-30T00:53:20.000000005Z\"}\n"
        );
        assert_eq!(parse("garbage"), None);
    }
}
