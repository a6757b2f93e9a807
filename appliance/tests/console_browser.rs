//! The web console in a real browser: headless Debian Chromium driven by playwright-core
//! (`appliance/console-tests/e2e.mjs`) against a real `appliance serve`.
//!
//! The script asks this harness to act as the server's agent: it prints `@agent <cmd>` on
//! stdout and waits for `@ok <value>` / `@err <message>` on stdin. The harness answers with
//! the synthetic agent (`tests/synthetic_agent`, the same gRPC client the agent load
//! benchmark uses): `register` (CreateServer with a hardware inventory,
//! ReconcileServerAddresses, Heartbeat, NextAction → WAIT; replies with the UUID) and
//! `wipe` (NextAction must say WIPE; progress + heartbeats, MarkServerAsWiped).
//!
//! playwright-core is installed with npm at a pinned version into the git-ignored
//! `target/console-node/` the first time (`support/browser.rs`; Playwright's own browser
//! download is not used: it does not work here, and Debian's chromium is the browser under
//! test). Skips with a
//! printed reason when chromium, node or npm is missing (a failure under
//! `APPLIANCE_E2E=1`). Screenshots (laptop and phone
//! widths) and page weights land in `target/console-screenshots/`.

#[path = "support/browser.rs"]
mod browser;
mod console_support;
#[path = "support/prereq.rs"]
mod prereq;
mod synthetic_agent;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use console_support::Appliance;
use synthetic_agent::SyntheticAgent;

/// The synthetic server the browser watches register (2 CPUs × 16 cores in its inventory).
const AGENT_INDEX: usize = 0xe2e1;

/// Answers one `@agent` request from the script.
async fn agent_request(
    agent: &mut Option<SyntheticAgent>,
    endpoint: &str,
    cmd: &str,
) -> Result<String, String> {
    use appliance_rpc::agent::AgentAction;
    let e = |x: tonic::Status| format!("{}: {}", x.code(), x.message());
    match cmd {
        "register" => {
            let mut a = SyntheticAgent::connect(endpoint, AGENT_INDEX)
                .await
                .map_err(|x| x.to_string())?;
            let r = a.register("e2e-node").await.map_err(e)?;
            if r.state != "discovered" {
                return Err(format!("registered as {}, not discovered", r.state));
            }
            a.report_address("10.10.0.150").await.map_err(e)?;
            a.heartbeat().await.map_err(e)?;
            let n = a.next_action().await.map_err(e)?;
            if n.action != AgentAction::Wait as i32 {
                return Err(format!("NextAction of a discovered server: {n:?}"));
            }
            let uuid = a.uuid.clone();
            *agent = Some(a);
            Ok(uuid)
        }
        "wipe" => {
            let a = agent.as_mut().ok_or("register first")?;
            let n = a.wipe_if_told().await.map_err(e)?;
            Ok(n.state)
        }
        other => Err(format!("unknown agent command `{other}`")),
    }
}

#[test]
fn console_end_to_end_in_chromium() {
    const TEST: &str = "console_end_to_end_in_chromium";
    let node_dir = match browser::prepare() {
        Ok(d) => d,
        Err(why) => return prereq::skip(TEST, &why),
    };
    let shots = browser::shots_dir();
    // A pool in the config so the settings page has one to show (DHCP itself stays off).
    let app = Appliance::start_with(
        "[[dhcp.pools]]\nrange_start = \"10.10.0.100\"\nrange_end = \"10.10.0.199\"\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.10.0.1\"\ndns = [\"10.10.0.1\"]\n\
         domain = \"lab.example\"\n",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console-tests/e2e.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .env("BASE_URL", app.base_url())
        .env("DATA_DIR", app.data_dir())
        .env("APPLIANCE_BIN", console_support::BIN)
        .env("SHOTS_DIR", &shots)
        .env("NODE_PATH", node_dir.join("node_modules"))
        .env("CHROMIUM", browser::CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut to_script = child.stdin.take().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = app.base_url();
    let mut agent = None;
    let mut stdout = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("script output");
        println!("{line}");
        stdout.push_str(&line);
        stdout.push('\n');
        if let Some(cmd) = line.strip_prefix("@agent ") {
            let reply = match rt.block_on(agent_request(&mut agent, &endpoint, cmd.trim())) {
                Ok(v) => format!("@ok {v}\n"),
                Err(m) => format!("@err {}\n", m.replace('\n', " ")),
            };
            println!("{}", reply.trim_end());
            // The script may already have failed and exited: a closed pipe is not our error.
            let _ = to_script.write_all(reply.as_bytes());
            let _ = to_script.flush();
        }
    }
    drop(to_script);
    let status = child.wait().expect("node exits");
    let stderr = stderr_reader.join().unwrap();
    eprintln!("{stderr}");
    assert!(
        status.success() && stdout.contains("all checks passed"),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    for name in [
        "login-laptop",
        "login-phone",
        "overview-laptop",
        "overview-phone",
        "servers-laptop",
        "servers-phone",
        "server-detail-laptop",
        "server-detail-phone",
        "server-wipe-confirm-laptop",
        "classes-laptop",
        "classes-phone",
        "class-edit-error-laptop",
        "environment-laptop",
        "environment-phone",
        "settings-laptop",
        "settings-phone",
    ] {
        let p = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "screenshot {} missing or empty", p.display());
    }
}
