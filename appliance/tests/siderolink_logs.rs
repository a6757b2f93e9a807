//! Root-only: Talos log lines reach `appliance ctl server logs` and the console through
//! the real `appliance serve`. A node in a network namespace (Debian's `wireguard-go` +
//! `wg`, as Talos configures its link) calls the box's Provision API, brings up the tunnel
//! and sends JSON log lines over TCP to `[<prefix>::1]:4001`.
//!
//! Proves: the lines are stored under the node's server and printed by `ctl server logs`
//! (text and `-o json` with Sidero's fields + server); the per-server ring keeps only
//! `log_lines_per_server` lines; `--since` filters; `ctl server logs -f` prints the stored
//! lines and then a line sent afterwards; the console's SSE tail sends it to a session and
//! refuses a request without one (401); `/metrics` counts peers, handshakes, bytes and
//! stored lines; the lines survive a restart of the box.
//!
//! Skips with a printed reason when not root or a tool is missing, unless APPLIANCE_E2E=1
//! (CI), where that is a failure.

mod support;

#[path = "support/prereq.rs"]
mod prereq;
#[path = "support/wg.rs"]
mod wg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wg::Lab;

fn skip_reason() -> Option<String> {
    prereq::missing_root_or(wg::TOOLS, wg::NEEDS)
}

fn log_line(i: usize) -> String {
    format!(
        "{{\"clock\":{i},\"facility\":\"kern\",\"msg\":\"[talos] line {i}\",\"priority\":\"info\",\"seq\":{i},\"talos-level\":\"info\",\"talos-time\":\"2026-12-05T20:00:{i:02}.5Z\"}}\n"
    )
}

/// The messages `ctl server logs NAME [extra]` prints, in order.
fn ctl_messages(app: &support::Appliance, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["server", "logs"];
    args.extend_from_slice(extra);
    args.push(name);
    app.ctl_ok(&args)
        .lines()
        .map(|l| l.split_once("info    ").map_or(l, |(_, m)| m).to_string())
        .collect()
}

/// Polls `ctl server logs` until its last message is `want` (lines are stored in batches).
fn wait_for_stored(app: &support::Appliance, name: &str, want: &str) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..100 {
        got = ctl_messages(app, name, &[]);
        if got.last().is_some_and(|m| m == want) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("`{want}` never stored; ctl shows {got:?}\n{}", app.log());
}

/// Reads an SSE response on `s` until a `line` event whose data contains `needle`.
fn sse_until(s: TcpStream, needle: &str) -> String {
    let mut r = BufReader::new(s);
    let mut seen = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => panic!("SSE stream ended before `{needle}`: {seen}"),
            Ok(_) => {}
            Err(e) => panic!("SSE read failed before `{needle}`: {e}: {seen}"),
        }
        seen.push_str(&line);
        if line.starts_with("data:") && line.contains(needle) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talos_log_lines_reach_ctl_and_the_console() {
    if let Some(why) = skip_reason() {
        prereq::skip("talos_log_lines_reach_ctl_and_the_console", &why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // node-a is allocated before the box starts (the lifecycle on the same store).
    let data = wg::data_dir_allocated(tmp.path(), "node-a").await;
    let tag = format!("{}", std::process::id() % 10000);
    let net = 240 + (std::process::id() % 4) as u8 * 4;
    let mut lab = Lab::default();
    let a = lab.node(&format!("{tag}l"), net);
    let port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[siderolink]\nlisten = \"0.0.0.0:{port}\"\nendpoint = \"198.18.{net}.1:{port}\"\nlog_lines_per_server = 5\n"
    );
    let mut app = support::Appliance::start_custom(&data, &config, "info", &[]);

    // Provision as Talos does, then the tunnel.
    let (server, p) = wg::provision(&mut lab, &a, app.endpoint(), "node-a", tmp.path()).await;

    // 8 lines on one connection: the ring keeps the newest 5.
    wg::send_lines(&a.ns, server, (0..8).map(log_line).collect()).await;
    let stored = wait_for_stored(&app, "node-a", "[talos] line 7");
    assert_eq!(
        stored,
        (3..8)
            .map(|i| format!("[talos] line {i}"))
            .collect::<Vec<_>>(),
        "the ring holds the newest 5"
    );
    let text = app.ctl_ok(&["server", "logs", "--tail", "1", "node-a"]);
    assert_eq!(text.trim(), "2026-12-05T20:00:07.5Z info    [talos] line 7");
    let json = app.ctl_ok(&["server", "logs", "-o", "json", "--tail", "1", "node-a"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["msg"], "[talos] line 7");
    assert_eq!(v["talos-level"], "info");
    assert_eq!(v["talos-time"], "2026-12-05T20:00:07.5Z");
    assert_eq!(v["facility"], "kern");
    assert_eq!(v["server"], "node-a");
    assert_eq!(
        v["address"].as_str().unwrap(),
        p.node_address_prefix.split('/').next().unwrap()
    );
    // --since: all lines are from the last hour, none from the future.
    assert_eq!(ctl_messages(&app, "node-a", &["--since", "1h"]).len(), 5);
    assert!(ctl_messages(&app, "node-a", &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    let bad = app.ctl(&["server", "logs", "--since", "yesterday", "node-a"]);
    assert_eq!(bad.status.code(), Some(1), "bad --since must fail");
    let unknown = app.ctl(&["server", "logs", "no-such-server"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    // -f: the stored lines, then a new one.
    let mut follow = Command::new(support::BIN)
        .args(["ctl", "--endpoint", &app.endpoint(), "--data-dir"])
        .arg(&app.data_dir)
        .args(["server", "logs", "-f", "node-a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    for i in 3..8 {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stored line");
        assert!(l.ends_with(&format!("line {i}")), "{l}");
    }

    // The console: refused without a session; with one, the tail follows too.
    let unauth = support::http_get(app.addr, "/api/v1/servers/node-a/logs").unwrap();
    assert_eq!(unauth.0, 401, "{}", unauth.1);
    let login_body = serde_json::json!({ "secret": app.token() }).to_string();
    let mut s = TcpStream::connect(app.addr).unwrap();
    write!(
        s,
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login_body}",
        app.addr,
        login_body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let cookie = reply
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l[11..].trim().split(';').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no session cookie: {reply}"));
    let sse = TcpStream::connect(app.addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        &sse,
        "GET /api/v1/servers/node-a/logs HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n",
        app.addr
    )
    .unwrap();
    let sse_reader = sse.try_clone().unwrap();
    let backlog = std::thread::spawn(move || {
        let last = sse_until(sse_reader.try_clone().unwrap(), "[talos] line 7");
        let next = sse_until(sse_reader, "[talos] line 8");
        (last, next)
    });
    std::thread::sleep(Duration::from_millis(300));

    wg::send_lines(&a.ns, server, log_line(8)).await;
    let l = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("-f prints the new line");
    assert!(l.ends_with("[talos] line 8"), "{l}");
    let (last, next) = backlog.join().unwrap();
    let event: serde_json::Value =
        serde_json::from_str(next.trim_start_matches("data:").trim()).unwrap();
    assert!(last.contains("\"talos-level\":\"info\""), "{last}");
    assert_eq!(event["server"], "node-a");
    assert_eq!(event["msg"], "[talos] line 8");
    assert_eq!(event["talos-time"], "2026-12-05T20:00:08.5Z");
    let _ = follow.kill();
    let _ = follow.wait();
    drop(sse);

    // Endpoint metrics.
    let (code, metrics) = support::http_get(app.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let value = |sample: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{sample}` in /metrics:\n{metrics}"))
    };
    assert_eq!(value("appliance_siderolink_peers "), 1);
    assert!(value("appliance_siderolink_handshakes_total ") >= 1);
    assert!(value("appliance_siderolink_bytes_total{direction=\"rx\"} ") > 0);
    assert!(value("appliance_siderolink_bytes_total{direction=\"tx\"} ") > 0);
    assert_eq!(
        value("appliance_siderolink_log_lines_total{result=\"stored\"} "),
        9
    );
    assert_eq!(
        value("appliance_siderolink_log_lines_total{result=\"dropped\"} "),
        0
    );

    // The ring survives a restart.
    app.stop();
    let app = support::Appliance::start_custom(&data, &config, "info", &[]);
    assert_eq!(
        ctl_messages(&app, "node-a", &[]),
        (4..9)
            .map(|i| format!("[talos] line {i}"))
            .collect::<Vec<_>>()
    );
    drop(lab);
}
