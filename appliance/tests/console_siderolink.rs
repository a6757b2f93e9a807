//! Root-only: the console's SideroLink panels in a real browser. Headless Debian Chromium
//! driven by playwright-core (`appliance/console-tests/siderolink.mjs`) opens the server page
//! of an allocated server of a real `appliance serve`, whose Talos node is Debian's
//! `wireguard-go` + `wg` in a network namespace, provisioned through the box's Provision API
//! as Talos does (the same node as `tests/siderolink_logs.rs`).
//!
//! The script asks this harness to act as the node: it prints `@node line K` (this harness
//! sends one Talos JSON log line over TCP through the tunnel to `[<prefix>::1]:4001`) or
//! `@node events` (this test binary re-run inside the node's namespace, `events_child`,
//! publishes Talos's install events over gRPC through the tunnel to `[<prefix>::1]:4002`)
//! and waits for `@ok` / `@err <message>` on stdin.
//!
//! Proves, from what the page renders: the log tail shows the lines the node sent through
//! the tunnel (before the page opened, then one live); the boot timeline shows SideroLink up
//! and, after the install events, Install done, with the server's `installed` state and
//! `PXEBooted=True`, without a reload. The script fails when either panel is missing.
//!
//! Skips with a printed reason when not root or a tool (wireguard-go, wg, ip, python3,
//! chromium, node, npm) is missing, unless APPLIANCE_E2E=1 (CI), where that is a failure.

mod support;

#[path = "support/browser.rs"]
mod browser;
#[path = "support/prereq.rs"]
mod prereq;
#[path = "support/wg.rs"]
mod wg;

use std::net::Ipv4Addr;
use std::process::Command;

use wg::{Lab, send_tcp};

const TEST: &str = "siderolink_panels_in_chromium";
const NODE: &str = "node-c";
/// Lines the node sends before the page opens.
const LINES_BEFORE: usize = 3;

fn log_line(k: usize) -> String {
    format!(
        "{{\"clock\":{k},\"facility\":\"kern\",\"msg\":\"[talos] console line {k}\",\"priority\":\"info\",\"seq\":{k},\"talos-level\":\"info\",\"talos-time\":\"2026-12-06T07:00:{k:02}.5Z\"}}\n"
    )
}

/// Run inside the node's namespace by the main test (`SL_EVENTS_TO=<server addr>`): Talos's
/// install events through the tunnel. Does nothing when run on its own.
#[tokio::test]
async fn events_child() {
    let Ok(to) = std::env::var("SL_EVENTS_TO") else {
        return;
    };
    wg::publish_install_events(&to, "talos-c", "192.168.7.9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siderolink_panels_in_chromium() {
    if let Some(why) = prereq::missing_root_or(wg::TOOLS, wg::NEEDS) {
        return prereq::skip(TEST, &why);
    }
    let node_dir = match browser::prepare() {
        Ok(d) => d,
        Err(why) => return prereq::skip(TEST, &why),
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = wg::data_dir_allocated(tmp.path(), NODE).await;
    // Veths in 198.19.<pid % 250>.240/30 (tests/siderolink_peers.rs uses .0 to .203).
    let tag = format!("{}", std::process::id() % 10000);
    let mut lab = Lab::default();
    let base = Ipv4Addr::new(198, 19, (std::process::id() % 250) as u8, 240);
    let n = lab.node_in(&format!("{tag}c"), base);
    let port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[siderolink]\nlisten = \"0.0.0.0:{port}\"\nendpoint = \"{}:{port}\"\n",
        n.outside
    );
    let app = support::Appliance::start_custom(&data, &config, "info", &[]);

    let (server, _) = wg::provision(&mut lab, &n, app.endpoint(), NODE, tmp.path()).await;
    wg::send_lines(&n.ns, server, (0..LINES_BEFORE).map(log_line).collect()).await;

    let exe = std::env::current_exe().unwrap();
    let ns = n.ns.clone();
    let (base_url, data_dir) = (format!("http://{}", app.addr), app.data_dir.clone());
    let run = tokio::task::spawn_blocking(move || {
        browser::run_script(
            &node_dir,
            "siderolink.mjs",
            &base_url,
            &data_dir,
            &[
                ("NODE_NAME", NODE.to_string()),
                ("LINES_BEFORE", LINES_BEFORE.to_string()),
            ],
            "node",
            |cmd| match cmd.split_once(' ') {
                Some(("line", k)) => match k.parse::<usize>() {
                    Ok(k) if send_tcp(&ns, None, server, &log_line(k)) => "@ok".to_string(),
                    _ => format!("@err cannot send line {k}"),
                },
                None if cmd == "events" => {
                    let out = Command::new("ip")
                        .args(["netns", "exec", &ns])
                        .arg(&exe)
                        .args(["--exact", "events_child", "--nocapture"])
                        .env("SL_EVENTS_TO", server.to_string())
                        .output()
                        .unwrap();
                    if out.status.success() {
                        "@ok".to_string()
                    } else {
                        format!(
                            "@err events child: {}",
                            String::from_utf8_lossy(&out.stderr).replace('\n', " ")
                        )
                    }
                }
                _ => format!("@err unknown node command `{cmd}`"),
            },
        )
    })
    .await
    .unwrap();
    let (status, stdout, stderr) = (run.status, run.stdout, run.stderr);
    assert!(
        status.success() && stdout.contains("console siderolink: all checks passed"),
        "browser test failed:\n{stdout}\n{stderr}\n{}",
        app.log()
    );
    let shot = browser::shots_dir().join("server-siderolink-laptop.png");
    let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        len > 5_000,
        "screenshot {} missing or empty",
        shot.display()
    );
    drop(app);
    drop(lab);
}
