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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = app.base_url();
    let mut agent = None;
    let browser::ScriptRun {
        status,
        stdout,
        stderr,
    } = browser::run_script(
        &node_dir,
        "e2e.mjs",
        &app.base_url(),
        app.data_dir(),
        &[("APPLIANCE_BIN", console_support::BIN.to_string())],
        "agent",
        |cmd| match rt.block_on(agent_request(&mut agent, &endpoint, cmd)) {
            Ok(v) => format!("@ok {v}"),
            Err(m) => format!("@err {}", m.replace('\n', " ")),
        },
    );
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
