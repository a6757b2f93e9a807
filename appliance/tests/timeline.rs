//! The boot timeline with the real binary: a server's PXE boot (iPXE over TFTP with curl,
//! once refused; `/boot.ipxe`, `/ipxe`, the agent's kernel fetched once cut short and once
//! whole, its initrd), then its
//! agent (the synthetic agent) registers and wipes. `appliance ctl server timeline` shows
//! every step in order with its outcome, bytes and duration, the steps recorded before the
//! server was known (under its address and MAC) attached to it by its registration; another
//! client's steps stay out of it; `/metrics` counts one registration in
//! `appliance_time_to_registered_seconds`; the timeline survives a restart.

#[path = "support/prereq.rs"]
mod prereq;
mod support;
mod synthetic_agent;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use support::{Appliance, http_get};
use synthetic_agent::SyntheticAgent;

const KERNEL_BYTES: usize = 8 << 20;
const INITRD_BYTES: usize = 1 << 20;

fn timeline(b: &Appliance, name: &str) -> Value {
    serde_json::from_str(&b.ctl_ok(&["server", "timeline", name, "-o", "json"])).unwrap()
}

fn steps(t: &Value) -> Vec<(String, String)> {
    t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls the timeline until it holds `n` events (the writer commits every 100 ms).
fn wait_for(b: &Appliance, name: &str, n: usize) -> Value {
    let deadline = appliance::clock::now() + Duration::from_secs(10);
    loop {
        let out = b.ctl(&["server", "timeline", name, "-o", "json"]);
        if out.status.success() {
            let t: Value = serde_json::from_slice(&out.stdout).unwrap();
            if t["events"].as_array().unwrap().len() >= n {
                return t;
            }
        }
        assert!(
            appliance::clock::now() < deadline,
            "timeline of {name} never reached {n} events: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pxe_boot_and_registration_show_in_order_with_outcomes_and_durations() {
    if !prereq::have("curl", &["--version"]) {
        return prereq::skip("timeline", "curl (the TFTP client) is not installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let tftp_root = tmp.path().join("tftp");
    std::fs::create_dir_all(&tftp_root).unwrap();
    std::fs::write(tftp_root.join("ipxe.efi"), vec![7u8; 65_000]).unwrap();
    let tftp_port = support::free_port();
    let data = tmp.path().join("data");
    let agent = data.join("env/agent-amd64");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(agent.join("vmlinuz"), vec![b'k'; KERNEL_BYTES]).unwrap();
    std::fs::write(agent.join("initramfs.xz"), vec![b'i'; INITRD_BYTES]).unwrap();
    let d = data.clone();
    let config = format!(
        "[tftp]\nlisten = \"127.0.0.1:{tftp_port}\"\nroot = \"{}\"\n",
        tftp_root.display()
    );
    let mut b =
        tokio::task::spawn_blocking(move || Appliance::start_custom(&d, &config, "warn", &[]))
            .await
            .unwrap();
    let addr: std::net::SocketAddr = b.endpoint().trim_start_matches("http://").parse().unwrap();
    // Synthetic server 5: its first NIC's MAC is the one iPXE names.
    let uuid = synthetic_agent::uuid(5);
    let mac = "52:54:00:00:05:00";

    // The PXE boot, before the box knows the server: from 127.0.0.1. The firmware's TFTP
    // fetch of iPXE (a wrong name first).
    let out = tmp.path().join("got.efi");
    for (name, ok) in [("missing.efi", false), ("ipxe.efi", true)] {
        let got = tokio::process::Command::new("curl")
            .args(["-s", "-S", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{tftp_port}/{name}"))
            .output()
            .await
            .unwrap();
        assert_eq!(got.status.success(), ok, "curl {name}: {got:?}");
    }
    let script = http_get(addr, "/boot.ipxe").unwrap();
    assert_eq!(script.0, 200);
    let ipxe = http_get(addr, &format!("/ipxe?uuid={uuid}&mac={mac}&arch=x86_64")).unwrap();
    assert_eq!(ipxe.0, 200, "{}", ipxe.1);
    assert!(ipxe.1.contains("/env/agent-amd64/vmlinuz"), "{}", ipxe.1);
    // A kernel download cut short: the client reads a little and goes away.
    {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /env/agent-amd64/vmlinuz HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kernel = http_get(addr, "/env/agent-amd64/vmlinuz").unwrap();
    assert_eq!((kernel.0, kernel.1.len()), (200, KERNEL_BYTES));
    let initrd = http_get(addr, "/env/agent-amd64/initramfs.xz").unwrap();
    assert_eq!((initrd.0, initrd.1.len()), (200, INITRD_BYTES));

    // Nothing of it is a server's yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = b.ctl(&["server", "timeline", &uuid]);
    assert!(!out.status.success(), "no server yet");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The agent registers (its inventory names the MAC), is accepted and wipes.
    let mut a = SyntheticAgent::connect(&b.endpoint(), 5).await.unwrap();
    assert_eq!(a.register("node-5").await.unwrap().state, "discovered");
    b.ctl_ok(&["server", "accept", &uuid]);
    a.next_action().await.unwrap();
    a.wipe_if_told().await.unwrap();

    let t = wait_for(&b, &uuid, 9);
    assert_eq!(
        steps(&t),
        [
            ("tftp", "refused"),
            ("tftp", "ok"),
            ("boot-script", "ok"),
            ("ipxe", "ok"),
            ("kernel", "failed"),
            ("kernel", "ok"),
            ("initrd", "ok"),
            ("registered", "ok"),
            ("wiped", "ok"),
        ]
        .map(|(s, o)| (s.to_string(), o.to_string())),
        "{t:#}"
    );
    let ev = &t["events"];
    assert!(
        ev[0]["detail"].as_str().unwrap().contains("missing.efi"),
        "{t:#}"
    );
    assert_eq!(ev[1]["detail"], "ipxe.efi");
    assert_eq!(ev[1]["bytes"], 65_000);
    let ev = &t["events"].as_array().unwrap()[2..];
    assert_eq!(ev[1]["detail"], "environment agent-amd64");
    assert_eq!(ev[1]["mac"], mac);
    let cut = ev[2]["bytes"].as_u64().unwrap();
    assert!(cut < KERNEL_BYTES as u64, "{cut}");
    assert!(
        ev[2]["detail"]
            .as_str()
            .unwrap()
            .contains("client went away"),
        "{t:#}"
    );
    assert_eq!(ev[3]["bytes"], KERNEL_BYTES as u64);
    assert!(ev[3]["durationMs"].is_u64(), "{t:#}");
    assert_eq!(ev[4]["bytes"], INITRD_BYTES as u64);
    assert!(
        ev[5]["detail"].as_str().unwrap().starts_with("new server"),
        "{t:#}"
    );
    // The time to registered runs from the boot's first step (the refused TFTP fetch).
    let first = t["events"][0]["timeUnixMs"].as_u64().unwrap();
    let registered = ev[5]["timeUnixMs"].as_u64().unwrap();
    assert_eq!(t["timeToRegisteredMs"].as_u64(), Some(registered - first));
    let text = b.ctl_ok(&["server", "timeline", &uuid]);
    eprintln!("{text}");
    assert!(text.starts_with("TIME"), "{text}");
    assert!(text.contains("time to registered: "), "{text}");
    assert!(text.contains("8.0 MiB in"), "{text}");

    // Another client's boot stays its own (pending under its MAC), never this server's.
    let other = http_get(
        addr,
        "/ipxe?uuid=aaaaaaaa-0000-4000-8000-000000000009&mac=52:54:00:99:99:99&arch=x86_64",
    )
    .unwrap();
    assert_eq!(other.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(steps(&timeline(&b, &uuid)).len(), 9);

    // One registration measured; stored events counted.
    let (code, metrics) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("appliance_time_to_registered_seconds_count 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("appliance_time_to_installed_seconds_count 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("appliance_timeline_events_total{result=\"dropped\"} 0\n"),
        "{metrics}"
    );

    // Kept across a restart.
    b.stop();
    let d = data.clone();
    let b = tokio::task::spawn_blocking(move || Appliance::start_in(&d))
        .await
        .unwrap();
    assert_eq!(steps(&timeline(&b, &uuid)), steps(&t));
}
