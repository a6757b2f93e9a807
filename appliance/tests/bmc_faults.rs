//! Fault injection (issue 16 item 5): a BMC that hangs and a BMC that answers garbage, next
//! to a working one (a real `ipmi_sim`), under the real `appliance serve`. The hanging BMC is
//! a UDP socket that reads every datagram and never answers; the garbage one answers every
//! datagram with junk: random bytes, or an RMCP+ header carrying a random session id. While
//! power actions on both are in flight, nothing else waits: the working server's power read,
//! `/healthz`, the console page, the admin API and an agent's CreateServer all answer before
//! the faulty actions end. Those end in bounded time with a clear error naming the BMC, and
//! the servers carry condition `BMCReachable=False` with the reason. (DHCP is not in this
//! test: the fixture runs without it; it shares nothing with the BMC path but the store.)

mod ipmi_sim;
mod support;
mod synthetic_agent;

use std::net::UdpSocket;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipmi_sim::{ipmi_tools_present, start_sim};
use support::{Appliance, http_get};
use synthetic_agent::SyntheticAgent;

/// A fake BMC on a loopback UDP port: `garbage` false = swallow every datagram (hang),
/// true = answer each with junk. Runs until `stop`; counts datagrams received.
struct FakeBmc {
    port: u16,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeBmc {
    fn start(garbage: bool) -> FakeBmc {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(port);
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let count = r.fetch_add(1, Ordering::SeqCst);
                if !garbage || n == 0 {
                    continue;
                }
                let reply: Vec<u8> = if count % 2 == 0 {
                    // Random bytes of a random length.
                    (0..(next() % 96) as usize).map(|_| next() as u8).collect()
                } else {
                    // RMCP (v6, class IPMI) + IPMI 2.0 session header: RMCP+ open session
                    // response payload type, a session id and sequence nobody opened.
                    let mut v = vec![0x06, 0x00, 0xff, 0x07, 0x06, 0x11];
                    v.extend_from_slice(&(next() as u32).to_le_bytes());
                    v.extend_from_slice(&(next() as u32).to_le_bytes());
                    let body: Vec<u8> = (0..36).map(|_| next() as u8).collect();
                    v.extend_from_slice(&(body.len() as u16).to_le_bytes());
                    v.extend_from_slice(&body);
                    v
                };
                let _ = sock.send_to(&reply, from);
            }
        });
        FakeBmc {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_bmc(app: &Appliance, server: &str, port: u16, pw: &str) {
    app.ctl_ok(&[
        "server",
        "bmc",
        server,
        "--endpoint",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--user",
        "admin",
        "--password-file",
        pw,
    ]);
}

/// `ctl server power on NAME` in a thread: (output, when it ended).
fn power_on_in_background(
    app: &Appliance,
    server: &'static str,
) -> std::thread::JoinHandle<(Output, Instant)> {
    let endpoint = app.endpoint();
    let data_dir = app.data_dir.clone();
    std::thread::spawn(move || {
        let out = std::process::Command::new(support::BIN)
            .args(["ctl", "--endpoint", &endpoint, "--data-dir"])
            .arg(&data_dir)
            .args(["server", "power", "on", server])
            .output()
            .unwrap();
        (out, appliance::clock::now())
    })
}

/// The `BMCReachable` condition of `server` as (status, reason, message).
fn bmc_condition(app: &Appliance, server: &str) -> Option<(String, String, String)> {
    let json = app.ctl_ok(&["get", "server", server, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "BMCReachable")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

#[test]
fn hanging_and_garbage_bmcs_hold_up_nothing_else() {
    if !ipmi_tools_present("hanging_and_garbage_bmcs_hold_up_nothing_else") {
        return;
    }
    let sim = start_sim();
    // Each IPMI datagram waits 2 s for its reply (3 tries), so a hanging BMC's action lasts
    // long enough for everything else to be asked meanwhile.
    let app = Appliance::start_config("[bmc]\nipmi_attempt_ms = 2000\n");
    for name in ["good", "hang", "junk"] {
        let yaml = format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  accepted: true\n"
        );
        app.ctl_ok(&["server", "--help"]); // warm the ctl binary's page cache
        let out = app.ctl_stdin(&["apply", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pwfile = sim.dir.path().join("pw");
    std::fs::write(&pwfile, "password\n").unwrap();
    let pw = pwfile.to_str().unwrap();
    let hang = FakeBmc::start(false);
    let junk = FakeBmc::start(true);
    set_bmc(&app, "good", sim.port, pw);
    set_bmc(&app, "hang", hang.port, pw);
    set_bmc(&app, "junk", junk.port, pw);

    let started = appliance::clock::now();
    let hang_action = power_on_in_background(&app, "hang");
    let junk_action = power_on_in_background(&app, "junk");
    // Both faulty BMCs are being talked to before the others are asked.
    while hang.received.load(Ordering::SeqCst) == 0 || junk.received.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the faulty BMCs were never contacted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Meanwhile everything else answers.
    let good = app.ctl_ok(&["server", "power", "status", "good"]);
    assert!(good.contains("power: off"), "{good}");
    app.ctl_ok(&["server", "power", "on", "good"]);
    assert!(ipmi_sim::ipmitool(sim.port, &["chassis", "power", "status"]).contains("is on"));
    assert_eq!(http_get(app.addr, "/healthz").map(|r| r.0), Some(200));
    let console = http_get(app.addr, "/").map(|r| r.0);
    assert!(
        matches!(console, Some(200 | 302 | 303 | 307)),
        "console: {console:?}"
    );
    let listed = app.ctl_ok(&["get", "server"]);
    assert!(listed.contains("junk"), "{listed}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registered = rt.block_on(async {
        let mut agent = SyntheticAgent::connect(&app.endpoint(), 3).await.unwrap();
        agent.register("agent-3").await
    });
    assert!(registered.is_ok(), "CreateServer: {registered:?}");
    let others_done = appliance::clock::now();
    assert!(
        !hang_action.is_finished(),
        "the hanging BMC's power action ended before the other calls were done: nothing was \
         shown to run beside it"
    );

    // The faulty actions end in bounded time, with a clear error naming the BMC.
    let (hang_out, hang_end) = hang_action.join().unwrap();
    let (junk_out, junk_end) = junk_action.join().unwrap();
    let hang_err = String::from_utf8_lossy(&hang_out.stderr).to_string();
    let junk_err = String::from_utf8_lossy(&junk_out.stderr).to_string();
    eprintln!(
        "bmc_faults: others answered after {:.1} s; hang failed after {:.1} s ({} datagrams): \
         {}; junk failed after {:.1} s ({} datagrams): {}",
        (others_done - started).as_secs_f64(),
        (hang_end - started).as_secs_f64(),
        hang.received.load(Ordering::SeqCst),
        hang_err.trim(),
        (junk_end - started).as_secs_f64(),
        junk.received.load(Ordering::SeqCst),
        junk_err.trim()
    );
    assert!(
        !hang_out.status.success(),
        "power on a hanging BMC succeeded"
    );
    assert!(
        !junk_out.status.success(),
        "power on a garbage BMC succeeded"
    );
    for (err, port) in [(&hang_err, hang.port), (&junk_err, junk.port)] {
        assert!(
            err.contains(&format!("127.0.0.1:{port}")) && err.contains("no valid reply"),
            "unclear error: {err}"
        );
    }
    assert!(
        junk_err.contains("dropped invalid replies"),
        "the garbage BMC's error does not say its replies were invalid: {junk_err}"
    );
    assert!(
        hang_end - started < Duration::from_secs(120)
            && junk_end - started < Duration::from_secs(120),
        "a faulty BMC held its power action for more than 120 s"
    );

    // The servers show why.
    for server in ["hang", "junk"] {
        let cond = bmc_condition(&app, server);
        let Some((status, reason, message)) = cond else {
            panic!("{server}: no BMCReachable condition");
        };
        assert_eq!(status, "False", "{server}: {reason} {message}");
        assert_eq!(reason, "Timeout", "{server}: {message}");
    }
    assert_eq!(
        bmc_condition(&app, "good").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(http_get(app.addr, "/healthz").map(|r| r.0), Some(200));
}
