//! On-demand wipe end to end with the real binary: a synthetic agent registers and wipes as a
//! PXE-booted agent does, the operator asks for a wipe with `appliance ctl server wipe`.
//!
//! available → `ctl server wipe` → accepted (dirty) → the agent's NextAction says WIPE →
//! MarkServerAsWiped → available again. A discovered, a dirty/wiping and an allocated server
//! are refused with the reason and nothing changes. With a BMC (a real `ipmi_sim`), the wipe
//! sets PXE boot once and powers the server on into the agent.

mod ipmi_sim;
mod support;
mod synthetic_agent;

use std::time::Duration;

use appliance_rpc::agent::AgentAction;
use serde_json::{Value, json};
use support::Appliance;
use synthetic_agent::SyntheticAgent;

fn server(b: &Appliance, name: &str) -> Value {
    serde_json::from_str(&b.ctl_ok(&["get", "server", name, "-o", "json"])).unwrap()
}

fn events(b: &Appliance, name: &str) -> Vec<String> {
    b.ctl_ok(&["server", "events", name])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect()
}

/// `ctl server wipe` must fail with `want` in its message and change nothing.
fn refused(b: &Appliance, name: &str, want: &str) {
    let (before, log) = (server(b, name), events(b, name));
    let out = b.ctl(&["server", "wipe", name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wipe of {name} should be refused");
    assert!(err.contains(want), "{err} should contain {want}");
    assert_eq!(server(b, name), before, "a refused wipe changed the server");
    assert_eq!(events(b, name), log, "a refused wipe recorded an event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_wipe_sends_an_available_server_back_through_the_agent_wipe() {
    let b = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let mut a = SyntheticAgent::connect(&b.endpoint(), 7).await.unwrap();
    let uuid = a.uuid.clone();
    let u = uuid.as_str();
    assert_eq!(a.register("node-7").await.unwrap().state, "discovered");
    a.report_address("10.5.0.7").await.unwrap();

    // Not accepted: the box never wipes it.
    refused(&b, u, "cannot wipe a server that is discovered");
    refused(&b, u, "never wipes a server that was not accepted");
    assert_eq!(
        a.next_action().await.unwrap().action,
        AgentAction::Wait as i32
    );

    // Accepted (dirty) and then wiping: already on its way to a wipe.
    b.ctl_ok(&["server", "accept", u]);
    refused(&b, u, "already told to wipe");
    let n = a.next_action().await.unwrap();
    assert_eq!(
        (n.action, n.state.as_str()),
        (AgentAction::Wipe as i32, "wiping")
    );
    refused(&b, u, "being wiped already");
    a.wipe_if_told().await.unwrap();
    let s = server(&b, u);
    assert_eq!(s["status"]["state"], json!("available"));
    assert_eq!(s["status"]["isClean"], json!(true));

    // The on-demand wipe: dirty again, the agent is told to wipe, then available again.
    let out = b.ctl_ok(&["server", "wipe", u]);
    assert!(out.contains("wipe requested: now accepted"), "{out}");
    let s = server(&b, u);
    assert_eq!(s["status"]["state"], json!("accepted"));
    assert_eq!(s["status"]["isClean"], json!(false));
    assert_eq!(s["status"]["ready"], json!(false));
    assert_eq!(s["spec"]["accepted"], json!(true));
    refused(&b, u, "already told to wipe");
    let n = a.wipe_if_told().await.unwrap();
    assert_eq!(n.state, "wiping");
    let s = server(&b, u);
    assert_eq!(s["status"]["state"], json!("available"));
    assert_eq!(s["status"]["isClean"], json!(true));
    // No BMC: the agent stays up, waiting for an allocation.
    assert_eq!(
        a.next_action().await.unwrap().action,
        AgentAction::Wait as i32
    );
    let log = events(&b, u);
    assert_eq!(
        log,
        [
            "register",
            "accept",
            "wipe-started",
            "wiped",
            "wipe-requested",
            "wipe-started",
            "wiped"
        ]
    );
    let all = b.ctl_ok(&["server", "events", u]);
    assert!(all.contains("wipe requested by an operator"), "{all}");

    // Allocated: never wiped on demand (release it instead).
    b.ctl_ok(&["allocate", "--server", u, "--owner", "default/m1"]);
    refused(&b, u, "cannot wipe a server that is allocated");
    refused(&b, u, "release it");

    // Unknown and malformed names.
    let out = b.ctl(&["server", "wipe", "4c4c4544-0000-0000-0000-00000000dead"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    let out = b.ctl(&["server", "wipe", "Bad_Name"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server:"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_wipe_of_a_server_with_a_bmc_pxe_boots_and_powers_it_on() {
    if !ipmi_sim::ipmi_tools_present("ctl_wipe_of_a_server_with_a_bmc_pxe_boots_and_powers_it_on") {
        return;
    }
    let sim = tokio::task::spawn_blocking(ipmi_sim::start_sim)
        .await
        .unwrap();
    let b = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let mut a = SyntheticAgent::connect(&b.endpoint(), 8).await.unwrap();
    let uuid = a.uuid.clone();
    let u = uuid.as_str();
    a.register("node-8").await.unwrap();
    let pw = sim.dir.path().join("pw");
    std::fs::write(&pw, "password\n").unwrap();
    let port = sim.port.to_string();
    b.ctl_ok(&[
        "server",
        "bmc",
        u,
        "--endpoint",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "admin",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    b.ctl_ok(&["server", "accept", u]);
    a.wipe_if_told().await.unwrap();
    // Clean with a BMC: the agent is told to power off, and the box powers it off.
    assert_eq!(
        a.next_action().await.unwrap().action,
        AgentAction::Poweroff as i32
    );
    let ipmi = |args: &'static [&'static str]| ipmi_sim::ipmitool(sim.port, args);
    wait_for(
        || ipmi(&["chassis", "power", "status"]).contains("is off"),
        "powered off",
    );
    ipmi(&["chassis", "bootdev", "disk"]);
    assert!(ipmi(&["chassis", "bootparam", "get", "5"]).contains("Hard-Drive"));

    b.ctl_ok(&["server", "wipe", u]);
    // The box set PXE for the next boot and powered it on into the agent …
    wait_for(
        || ipmi(&["chassis", "power", "status"]).contains("is on"),
        "powered on",
    );
    assert!(ipmi(&["chassis", "bootparam", "get", "5"]).contains("Force PXE"));
    // … whose new boot registers, and its NextAction says WIPE.
    a.register("node-8").await.unwrap();
    a.wipe_if_told().await.unwrap();
    assert_eq!(server(&b, u)["status"]["state"], json!("available"));
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = appliance::clock::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            appliance::clock::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
