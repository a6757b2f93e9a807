//! The agent API against a hostile PXE segment, end to end: the real `appliance serve`, the
//! synthetic agent as the server's own agent (loopback 127.0.0.1), and forgers on other
//! loopback addresses (127/8: a client socket bound to 127.0.0.2 and so on) using the real
//! gRPC client.
//!
//! - a forged `UpdateBMCInfo` (another address; and the registering agent trying to move an
//!   existing endpoint) is refused, changes nothing, and the next power operation still
//!   reaches the original `ipmi_sim` (asserted on its chassis state), not the decoy;
//! - while a server's agent wipes it, a forger on another address cannot play its agent
//!   (wipe report, addresses, heartbeat, next action, progress: all refused);
//! - a forged `MarkServerAsWiped` after a release, from another address or from the old
//!   agent's own address, is refused: the server stays dirty and is not handed out;
//! - a registration flood from one address is capped (and visible on `/metrics`) while
//!   other addresses still register; a 3 MB hardware report is refused and nothing stored.

mod ipmi_sim;
mod support;
mod synthetic_agent;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb, AgentAction};
use serde_json::{Value, json};
use support::{Appliance, http_get};
use synthetic_agent::{SyntheticAgent, hardware, uuid};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// An agent API client whose TCP socket is bound to `source` (a 127/8 address).
async fn client_from(app: &Appliance, source: Ipv4Addr) -> AgentClient<Channel> {
    let channel = Endpoint::from_shared(app.endpoint())
        .unwrap()
        .local_address(Some(IpAddr::V4(source)))
        .connect()
        .await
        .unwrap();
    AgentClient::new(channel)
}

fn server(app: &Appliance, name: &str) -> Value {
    serde_json::from_str(&app.ctl_ok(&["get", "server", name, "-o", "json"])).unwrap()
}

fn metrics(app: &Appliance) -> String {
    http_get(app.addr, "/metrics").unwrap().1
}

/// The value of one sample line (`name{labels}`) on `/metrics`.
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn refused(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) -> tonic::Status {
    match r {
        Ok(v) => panic!("{what}: a forged call was accepted: {v:?}"),
        Err(e) => {
            assert!(
                matches!(
                    e.code(),
                    Code::PermissionDenied | Code::FailedPrecondition | Code::NotFound
                ),
                "{what}: {e}"
            );
            e
        }
    }
}

fn bmc_report(uuid: &str, ip: &str, port: u16, user: &str, pass: &str) -> pb::UpdateBmcInfoRequest {
    pb::UpdateBmcInfoRequest {
        uuid: uuid.into(),
        bmc_info: Some(pb::BmcInfo {
            ip: ip.into(),
            port: port.into(),
            user: user.into(),
            pass: pass.into(),
        }),
    }
}

/// Polls until the server's BMCSetup condition has `reason` (≤ 30 s).
async fn wait_setup(app: &Appliance, name: &str, reason: &str) {
    let start = appliance::clock::now();
    loop {
        let s = server(app, name);
        let found = s["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "BMCSetup" && c["reason"] == reason);
        if found {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no BMCSetup={reason} on {name}: {}",
            s["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bmc_reports_are_refused_and_power_still_reaches_the_real_bmc() {
    if !ipmi_sim::ipmi_tools_present(
        "forged_bmc_reports_are_refused_and_power_still_reaches_the_real_bmc",
    ) {
        return;
    }
    let real = ipmi_sim::start_sim();
    let decoy = ipmi_sim::start_sim();
    let app = tokio::task::spawn_blocking(Appliance::start).await.unwrap();

    // The server's own agent: registers, is accepted, is asked for its BMC and reports the
    // real one; auto setup creates the `sidero` user on it.
    let mut agent = SyntheticAgent::connect(&app.endpoint(), 1).await.unwrap();
    let u = agent.uuid.clone();
    agent.register("node-1").await.unwrap();
    app.ctl_ok(&["server", "accept", &u]);
    assert!(agent.register("node-1").await.unwrap().setup_bmc);
    let own = |ip: &str, port: u16, user: &str, pass: &str| bmc_report(&u, ip, port, user, pass);
    agent
        .client
        .update_bmc_info(own("127.0.0.1", real.port, "", ""))
        .await
        .unwrap();
    agent
        .client
        .update_bmc_info(own("", 0, "admin", "password"))
        .await
        .unwrap();
    wait_setup(&app, &u, "UserCreated").await;
    let before = server(&app, &u);
    assert_eq!(before["spec"]["bmc"]["port"], json!(real.port));

    // A forger on another address points the server at its own BMC, with credentials it
    // knows: refused, nothing changes.
    let mut forger = client_from(&app, Ipv4Addr::new(127, 0, 0, 2)).await;
    for req in [
        own("127.0.0.1", decoy.port, "admin", "password"),
        own("127.0.0.1", decoy.port, "", ""),
        own("", 0, "admin", "password"),
    ] {
        let e = refused(forger.update_bmc_info(req).await, "UpdateBMCInfo");
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.message().contains("127.0.0.2"), "{e}");
    }
    // The registering agent itself, no longer asked for its BMC, cannot move it either.
    let e = refused(
        agent
            .client
            .update_bmc_info(own("127.0.0.1", decoy.port, "admin", "password"))
            .await,
        "UpdateBMCInfo not asked for",
    );
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("setup_bmc"), "{e}");
    // Give a (wrongly) started auto setup time to reach the decoy, then compare.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server(&app, &u)["spec"], before["spec"], "spec.bmc changed");

    // The next power operation reaches the real BMC, and only it.
    let out = app.ctl(&["server", "power", "on", &u]);
    assert!(
        out.status.success(),
        "power on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        real.state("power").as_deref(),
        Some("1"),
        "the real BMC was not powered on; calls: {}",
        real.calls()
    );
    assert_ne!(
        decoy.state("power").as_deref(),
        Some("1"),
        "the decoy got the power call"
    );
    assert!(
        !decoy
            .ipmitool("admin", "password", 3, &["user", "list", "1"])
            .1
            .contains("sidero"),
        "the box set up a user on the decoy"
    );

    // Asked for its BMC again (a failed setup), the registering agent still cannot move an
    // existing endpoint: that takes an operator.
    let mut second = SyntheticAgent::connect(&app.endpoint(), 2).await.unwrap();
    let u2 = second.uuid.clone();
    second.register("node-2").await.unwrap();
    app.ctl_ok(&["server", "accept", &u2]);
    assert!(second.register("node-2").await.unwrap().setup_bmc);
    let own2 = |ip: &str, port: u16, user: &str, pass: &str| bmc_report(&u2, ip, port, user, pass);
    second
        .client
        .update_bmc_info(own2("127.0.0.1", real.port, "", ""))
        .await
        .unwrap();
    second
        .client
        .update_bmc_info(own2("", 0, "admin", "wrong-password"))
        .await
        .unwrap();
    wait_setup(&app, &u2, "AdminLoginFailed").await;
    assert!(second.next_action().await.unwrap().setup_bmc, "asked again");
    let before = server(&app, &u2);
    let e = refused(
        second
            .client
            .update_bmc_info(own2("127.0.0.1", decoy.port, "", ""))
            .await,
        "endpoint replacement",
    );
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("operator"), "{e}");
    assert_eq!(server(&app, &u2)["spec"], before["spec"]);
    // The same endpoint again is fine (a retried report after a failed setup).
    second
        .client
        .update_bmc_info(own2("127.0.0.1", real.port, "", ""))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forger_on_another_address_cannot_play_a_wiping_servers_agent() {
    let app = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let mut agent = SyntheticAgent::connect(&app.endpoint(), 3).await.unwrap();
    let u = agent.uuid.clone();
    agent.register("node-3").await.unwrap();
    agent.report_address("10.5.0.3").await.unwrap();
    app.ctl_ok(&["server", "accept", &u]);
    let n = agent.next_action().await.unwrap();
    assert_eq!(n.action, AgentAction::Wipe as i32);

    // While the real agent wipes, a forger on another address plays its agent: every call
    // is refused and nothing changes.
    let mut forger = client_from(&app, Ipv4Addr::new(127, 0, 0, 2)).await;
    let before = server(&app, &u);
    let e = refused(
        forger
            .mark_server_as_wiped(pb::MarkServerAsWipedRequest {
                uuid: u.clone(),
                wipe_mode: 0,
            })
            .await,
        "MarkServerAsWiped during the wipe",
    );
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = refused(
        forger
            .reconcile_server_addresses(pb::ReconcileServerAddressesRequest {
                uuid: u.clone(),
                address: vec![pb::Address {
                    r#type: "InternalIP".into(),
                    address: "10.66.6.6".into(),
                }],
            })
            .await,
        "ReconcileServerAddresses",
    );
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    refused(
        forger
            .heartbeat(pb::HeartbeatRequest { uuid: u.clone() })
            .await,
        "Heartbeat",
    );
    refused(
        forger
            .next_action(pb::NextActionRequest { uuid: u.clone() })
            .await,
        "NextAction",
    );
    refused(
        forger
            .report_wipe_progress(pb::ReportWipeProgressRequest {
                uuid: u.clone(),
                disks: vec![],
            })
            .await,
        "ReportWipeProgress",
    );
    assert_eq!(server(&app, &u), before, "a forged call changed the server");
    // The real agent's own wipe report still counts.
    let n = agent.wipe_if_told().await.unwrap();
    assert_eq!(n.state, "wiping");
    assert_eq!(server(&app, &u)["status"]["state"], json!("available"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_wipe_report_after_release_leaves_the_server_dirty() {
    let app = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let mut agent = SyntheticAgent::connect(&app.endpoint(), 4).await.unwrap();
    let u = agent.uuid.clone();
    agent.register("node-4").await.unwrap();
    app.ctl_ok(&["server", "accept", &u]);

    // The real agent finishes its wipe; the server is allocated (its agent is gone: it
    // does not poll again) and released: dirty, waiting for its next agent boot.
    agent.wipe_if_told().await.unwrap();
    assert_eq!(server(&app, &u)["status"]["state"], json!("available"));
    app.ctl_ok(&["allocate", "--server", &u, "--owner", "default/m1"]);
    app.ctl_ok(&["release", "--owner", "default/m1"]);
    let released = server(&app, &u);
    assert_eq!(released["status"]["state"], json!("released"));
    assert_eq!(released["status"]["isClean"], json!(false));

    // A forger on another address, and whatever now runs at the old agent's address (the
    // tenant's OS), play the agent of the old boot: refused; the server stays dirty.
    for (src, what) in [
        (Ipv4Addr::new(127, 0, 0, 2), "from another address"),
        (Ipv4Addr::new(127, 0, 0, 1), "from the old agent's address"),
    ] {
        let mut c = client_from(&app, src).await;
        refused(
            c.next_action(pb::NextActionRequest { uuid: u.clone() })
                .await,
            &format!("NextAction after release {what}"),
        );
        for mode in [pb::WipeMode::Fast, pb::WipeMode::Full] {
            refused(
                c.mark_server_as_wiped(pb::MarkServerAsWipedRequest {
                    uuid: u.clone(),
                    wipe_mode: mode as i32,
                })
                .await,
                &format!("MarkServerAsWiped after release {what}"),
            );
        }
    }
    let after = server(&app, &u);
    assert_eq!(after["status"]["state"], json!("released"), "{after}");
    assert_eq!(after["status"]["isClean"], json!(false), "{after}");
    let out = app.ctl(&["allocate", "--class", "any", "--owner", "default/m2"]);
    assert!(
        !out.status.success(),
        "the released, unwiped server was handed out again"
    );

    // The server's next agent boot (it registers again) wipes it as it should.
    let r = agent.register("node-4").await.unwrap();
    assert!(r.wipe, "{r:?}");
    agent.wipe_if_told().await.unwrap();
    assert_eq!(server(&app, &u)["status"]["isClean"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_from_one_address_is_capped_and_counted() {
    let app = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let flood_src = Ipv4Addr::new(127, 0, 0, 5);
    let mut flood = client_from(&app, flood_src).await;
    let mut admitted = Vec::new();
    let mut refused_count = 0u64;
    for i in 0..100 {
        let r = flood
            .create_server(pb::CreateServerRequest {
                hardware: Some(hardware(1000 + i)),
                hostname: String::new(),
            })
            .await;
        match r {
            Ok(_) => admitted.push(uuid(1000 + i)),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
                assert!(e.message().contains("127.0.0.5"), "{e}");
                assert!(e.message().contains("per address"), "{e}");
                refused_count += 1;
            }
        }
    }
    assert!(
        !admitted.is_empty() && admitted.len() <= 16,
        "{} of 100 new servers from one address were admitted",
        admitted.len()
    );
    assert_eq!(refused_count, 100 - admitted.len() as u64);
    let listed = app.ctl_ok(&["get", "servers"]);
    assert_eq!(
        listed.lines().skip(1).count(),
        admitted.len(),
        "stored servers: {listed}"
    );
    let m = metrics(&app);
    assert_eq!(
        sample(
            &m,
            "appliance_agent_registrations_refused_total{reason=\"rate\"}"
        ),
        Some(refused_count),
        "{m}"
    );
    // An admitted server re-registering (a retry, a reboot) is not a new server.
    flood
        .create_server(pb::CreateServerRequest {
            hardware: Some(hardware(1000)),
            hostname: String::new(),
        })
        .await
        .unwrap();
    // Other addresses are not affected: each registers its own server.
    for i in 0..20u8 {
        let mut c = client_from(&app, Ipv4Addr::new(127, 0, 2, 1 + i)).await;
        c.create_server(pb::CreateServerRequest {
            hardware: Some(hardware(2000 + usize::from(i))),
            hostname: String::new(),
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mb_hardware_report_is_refused_and_nothing_stored() {
    let app = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    // Every field within the per-field limits; 3 MB in all.
    let mut hw = hardware(3000);
    let long = "x".repeat(1000);
    hw.storage.as_mut().unwrap().devices = (0..1024)
        .map(|_| pb::StorageDevice {
            r#type: pb::StorageType::Ssd as i32,
            size: 1 << 30,
            model: long.clone(),
            serial: long.clone(),
            wwid: long.clone(),
            ..Default::default()
        })
        .collect();
    let req = pb::CreateServerRequest {
        hardware: Some(hw),
        hostname: String::new(),
    };
    assert!(prost::Message::encoded_len(&req) > 3_000_000);
    let before = app.ctl_ok(&["get", "servers"]);
    let mut c = client_from(&app, Ipv4Addr::new(127, 0, 3, 1)).await;
    let e = c.create_server(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::InvalidArgument | Code::ResourceExhausted),
        "{e}"
    );
    assert!(e.message().contains("64 KiB"), "{e}");
    assert_eq!(app.ctl_ok(&["get", "servers"]), before);
    assert!(
        !app.ctl(&["get", "server", &uuid(3000)]).status.success(),
        "the huge report was stored"
    );
}
