//! Authenticated first contact (issue 16 item 2), end to end: the real `appliance serve` in
//! its default `[agent] first_contact = "token"` mode, boot tokens fetched from its real
//! `/ipxe` (with placeholder agent files in place), and agents that sign their calls with the
//! real agent's signer (`appliance::agent::signer`), each from its own loopback address;
//! forgers use the plain gRPC client or their own keys.
//!
//! - without a token, with a token for another UUID or NIC, with a used or expired token:
//!   the registration is refused and nothing is stored;
//! - the agent with its pinned key registers again and makes its calls; another key (with or
//!   without a fresh token while the pinned agent runs), an unsigned or replayed call is
//!   refused and changes nothing; an operator's rekey lets a new key in; once the pinned agent
//!   is gone (a reboot), a fresh token brings the new boot's key in without an operator;
//! - junk UUIDs (all zeros; one UUID on a second chassis) are named
//!   `mac-<mac>-<baseboard serial>`, labelled, and go on by that name;
//! - Sidero-compatible mode registers without tokens, the source-address rule still on.

mod support;
mod synthetic_agent;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use appliance::agent::signer::{SignedClient, Signer};
use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb};
use serde_json::Value;
use support::{Appliance, http_get};
use synthetic_agent::{channel_from, hardware, uuid};
use tonic::Code;

const KEY: &str = "appliance.sidero.dev/agent-key";
const JUNK: &str = "appliance.sidero.dev/junk-uuid";

/// A box in token mode with placeholder agent files, so `/ipxe` answers the agent script.
fn start(extra: &str) -> Appliance {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let env = data.join("env/agent-amd64");
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(env.join("vmlinuz"), b"k").unwrap();
    std::fs::write(env.join("initramfs.xz"), b"i").unwrap();
    let config = format!("[agent]\nfirst_contact = \"token\"\n{extra}");
    let app = Appliance::start_custom(&data, &config, "warn", &[]);
    // Keep the directory alive as long as the box (leaked: one per test process).
    std::mem::forget(tmp);
    app
}

/// The boot token `/ipxe` hands a server PXE booting with `uuid` from `mac`.
fn ipxe_token(app: &Appliance, uuid: &str, mac: &str) -> String {
    let (code, body) = http_get(app.addr, &format!("/ipxe?uuid={uuid}&mac={mac}")).unwrap();
    assert_eq!(code, 200, "{body}");
    body.split_whitespace()
        .find_map(|a| a.strip_prefix("appliance.token="))
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// The MAC of synthetic server `i`'s first NIC.
fn mac(i: usize) -> String {
    hardware(i).network.unwrap().interfaces[0].mac.clone()
}

/// 127.0.1.x: an address of its own per agent.
fn src(x: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, x))
}

/// An agent with a fresh key (from `seed`) and `token`, calling from `source`.
async fn agent(app: &Appliance, seed: u8, token: Option<String>, source: IpAddr) -> SignedClient {
    let channel = channel_from(&app.endpoint(), source).await.unwrap();
    SignedClient::new(
        AgentClient::new(channel),
        Arc::new(Signer::new([seed; 32], token)),
    )
}

fn create(hw: pb::HardwareInformation) -> pb::CreateServerRequest {
    pb::CreateServerRequest {
        hardware: Some(hw),
        hostname: String::new(),
    }
}

fn server(app: &Appliance, name: &str) -> Option<Value> {
    let out = app.ctl(&["get", "server", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn pinned(app: &Appliance, name: &str) -> Option<String> {
    server(app, name)?
        .pointer(&format!("/metadata/annotations/{}", KEY.replace('/', "~1")))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, want: &str) {
    match r {
        Ok(v) => panic!("accepted, expected {code:?} ({want}): {v:?}"),
        Err(e) => {
            assert_eq!(e.code(), code, "{e}");
            assert!(e.message().contains(want), "want `{want}`: {e}");
        }
    }
}

/// The operator's approval of a new key, through `appliance ctl`.
fn rekey(app: &Appliance, name: &str) {
    let out = app.ctl_ok(&["server", "rekey", name]);
    assert_eq!(
        out,
        format!("server/{name} may pin a new agent key at its next boot\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_needs_a_fresh_token_for_its_own_uuid_and_nic() {
    let app = start("");
    let (a, b) = (uuid(1), uuid(2));

    // Unsigned (Sidero's agent, or a forger with the plain client): refused.
    let mut plain = AgentClient::new(channel_from(&app.endpoint(), src(1)).await.unwrap());
    refused(
        plain.create_server(create(hardware(1))).await,
        Code::Unauthenticated,
        "appliance-seq",
    );
    // Signed, no token: refused.
    let mut no_token = agent(&app, 1, None, src(1)).await;
    refused(
        no_token.create_server(create(hardware(1))).await,
        Code::PermissionDenied,
        "boot token",
    );
    // A token for A, used for B: refused.
    let for_a = ipxe_token(&app, &a, &mac(1));
    let mut wrong_uuid = agent(&app, 2, Some(for_a.clone()), src(2)).await;
    refused(
        wrong_uuid.create_server(create(hardware(2))).await,
        Code::PermissionDenied,
        &format!("handed out for UUID {a}, not {b}"),
    );
    // A token for A handed to another NIC than A reports: refused.
    let other_nic = ipxe_token(&app, &a, "02:00:00:00:00:99");
    let mut wrong_nic = agent(&app, 3, Some(other_nic), src(3)).await;
    refused(
        wrong_nic.create_server(create(hardware(1))).await,
        Code::PermissionDenied,
        "NIC 02:00:00:00:00:99",
    );
    assert!(server(&app, &a).is_none() && server(&app, &b).is_none());

    // A's own token (still unused: the refusals above did not spend it): registered, key pinned.
    let mut real = agent(&app, 4, Some(for_a.clone()), src(4)).await;
    let key = Signer::new([4; 32], None).public_key();
    let r = real
        .create_server(create(hardware(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "discovered");
    assert_eq!(r.name, "", "a unique UUID is the name");
    assert_eq!(pinned(&app, &a).as_deref(), Some(key.as_str()));
    // The same token again, with another key: used up.
    let mut replay = agent(&app, 5, Some(for_a), src(5)).await;
    refused(
        replay.create_server(create(hardware(1))).await,
        Code::PermissionDenied,
        "unknown or already used",
    );
    assert_eq!(pinned(&app, &a).as_deref(), Some(key.as_str()));
    let m = http_get(app.addr, "/metrics").unwrap().1;
    for reason in ["unsigned", "token", "key"] {
        let line = format!("appliance_agent_calls_refused_total{{reason=\"{reason}\"}} 0");
        assert!(!m.contains(&line), "{reason} not counted: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let app = start("token_ttl = \"1s\"\n");
    let t = ipxe_token(&app, &uuid(1), &mac(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut late = agent(&app, 1, Some(t), src(1)).await;
    refused(
        late.create_server(create(hardware(1))).await,
        Code::PermissionDenied,
        "expired",
    );
    assert!(server(&app, &uuid(1)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinned_key_signs_every_call_and_a_new_key_needs_an_operator_or_a_new_boot() {
    // A 1 s poll: the pinned agent counts as running for 3 s after its last call.
    let app = start("[lifecycle]\nagent_poll_seconds = 1\n");
    let a = uuid(1);
    let t = ipxe_token(&app, &a, &mac(1));
    let mut real = agent(&app, 1, Some(t), src(1)).await;
    real.create_server(create(hardware(1))).await.unwrap();
    let k1 = pinned(&app, &a).unwrap();
    // Its calls, and a registration again without a token (the box restarted, say).
    real.heartbeat(pb::HeartbeatRequest { uuid: a.clone() })
        .await
        .unwrap();
    real.create_server(create(hardware(1))).await.unwrap();
    real.reconcile_server_addresses(pb::ReconcileServerAddressesRequest {
        uuid: a.clone(),
        address: vec![pb::Address {
            r#type: "InternalIP".into(),
            address: "10.0.0.1".into(),
        }],
    })
    .await
    .unwrap();

    // A forger on the same address as the agent (the boot's source rule passes) with its own
    // key: every call refused, nothing changed.
    let mut forger = agent(&app, 9, None, src(1)).await;
    refused(
        forger
            .reconcile_server_addresses(pb::ReconcileServerAddressesRequest {
                uuid: a.clone(),
                address: vec![pb::Address {
                    r#type: "InternalIP".into(),
                    address: "10.6.6.6".into(),
                }],
            })
            .await,
        Code::Unauthenticated,
        "pinned agent key",
    );
    refused(
        forger
            .mark_server_as_wiped(pb::MarkServerAsWipedRequest {
                uuid: a.clone(),
                wipe_mode: 0,
            })
            .await,
        Code::Unauthenticated,
        "pinned agent key",
    );
    refused(
        forger
            .update_bmc_info(pb::UpdateBmcInfoRequest {
                uuid: a.clone(),
                bmc_info: Some(pb::BmcInfo {
                    ip: "10.6.6.7".into(),
                    ..Default::default()
                }),
            })
            .await,
        Code::Unauthenticated,
        "pinned agent key",
    );
    // Unsigned: refused.
    let mut plain = AgentClient::new(channel_from(&app.endpoint(), src(1)).await.unwrap());
    refused(
        plain
            .heartbeat(pb::HeartbeatRequest { uuid: a.clone() })
            .await,
        Code::Unauthenticated,
        "appliance-seq",
    );
    // A replayed signed call: a copy of the agent's key signs a new number (accepted), then
    // the very same request (number and signature) is sent again: refused.
    let signer = Signer::new([1; 32], None);
    for _ in 0..10 {
        let _ = signer.request("Heartbeat", pb::HeartbeatRequest::default());
    }
    let msg = pb::HeartbeatRequest { uuid: a.clone() };
    let once = signer.request("Heartbeat", msg.clone());
    let metadata = once.metadata().clone();
    plain.heartbeat(once).await.unwrap();
    let mut again = tonic::Request::new(msg);
    *again.metadata_mut() = metadata;
    refused(
        plain.heartbeat(again).await,
        Code::Unauthenticated,
        "already used",
    );
    // Another key without a token: refused; with a fresh token while the pinned agent runs:
    // refused too.
    let mut other = agent(&app, 2, None, src(2)).await;
    refused(
        other.create_server(create(hardware(1))).await,
        Code::PermissionDenied,
        "another agent key pinned",
    );
    real.heartbeat(pb::HeartbeatRequest { uuid: a.clone() })
        .await
        .unwrap();
    let fresh = ipxe_token(&app, &a, &mac(1));
    let mut second = agent(&app, 3, Some(fresh.clone()), src(3)).await;
    refused(
        second.create_server(create(hardware(1))).await,
        Code::PermissionDenied,
        "is running",
    );
    let s = server(&app, &a).unwrap();
    assert_eq!(pinned(&app, &a).as_deref(), Some(k1.as_str()));
    assert_eq!(
        s.pointer("/status/addresses").unwrap().to_string(),
        r#"[{"address":"10.0.0.1","type":"InternalIP"}]"#
    );
    assert!(s.pointer("/spec/bmc").is_none(), "{s}");

    // The operator approves a new key: the next boot with a fresh token pins its key; the old
    // key is refused from then on.
    rekey(&app, &a);
    assert_eq!(pinned(&app, &a), None);
    second.create_server(create(hardware(1))).await.unwrap();
    let k3 = pinned(&app, &a).unwrap();
    assert_ne!(k3, k1);
    refused(
        real.heartbeat(pb::HeartbeatRequest { uuid: a.clone() })
            .await,
        Code::Unauthenticated,
        "pinned agent key",
    );
    let events = app.ctl_ok(&["server", "events", &a]);
    assert!(events.contains("agent-key-released"), "{events}");

    // A reboot: the agent with the pinned key is gone (no call for 3 poll intervals), a new
    // boot with a fresh token brings its own key in without an operator.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let t = ipxe_token(&app, &a, &mac(1));
    let mut rebooted = agent(&app, 4, Some(t), src(4)).await;
    rebooted.create_server(create(hardware(1))).await.unwrap();
    let k4 = pinned(&app, &a).unwrap();
    assert!(k4 != k3 && k4 != k1);
    rebooted
        .next_action(pb::NextActionRequest { uuid: a.clone() })
        .await
        .unwrap();
    let events = app.ctl_ok(&["server", "events", &a]);
    assert!(events.contains("agent-key-replaced"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_uuids_are_named_by_mac_and_baseboard_serial_and_flagged() {
    let app = start("");
    // All zeros.
    let zero = "00000000-0000-0000-0000-000000000000";
    let mut hw = hardware(7);
    let sys = hw.system.as_mut().unwrap();
    sys.uuid = zero.into();
    sys.baseboard_serial = "BB-07 X".into();
    let t = ipxe_token(&app, zero, &mac(7));
    let mut junk = agent(&app, 7, Some(t), src(7)).await;
    let r = junk.create_server(create(hw)).await.unwrap().into_inner();
    let name = "mac-525400000700-bb-07-x";
    assert_eq!(r.name, name);
    let s = server(&app, name).expect("registered under its MAC + serial");
    assert_eq!(
        s.pointer(&format!("/metadata/labels/{}", JUNK.replace('/', "~1"))),
        Some(&Value::from("all-zero"))
    );
    // It goes on by that name; the placeholder UUID itself names nothing.
    junk.next_action(pb::NextActionRequest { uuid: name.into() })
        .await
        .unwrap();
    refused(
        junk.next_action(pb::NextActionRequest { uuid: zero.into() })
            .await,
        Code::InvalidArgument,
        "placeholder UUID",
    );

    // One UUID on two chassis: the second (no NIC in common) gets its own name and flag,
    // the first is untouched.
    let a = uuid(1);
    let t = ipxe_token(&app, &a, &mac(1));
    let mut first = agent(&app, 1, Some(t), src(1)).await;
    first.create_server(create(hardware(1))).await.unwrap();
    let before = server(&app, &a).unwrap();
    let mut hw = hardware(8);
    let sys = hw.system.as_mut().unwrap();
    sys.uuid = a.clone();
    sys.baseboard_serial = "SECOND".into();
    let t = ipxe_token(&app, &a, &mac(8));
    let mut twin = agent(&app, 8, Some(t), src(8)).await;
    let r = twin.create_server(create(hw)).await.unwrap().into_inner();
    assert_eq!(r.name, "mac-525400000800-second");
    let s = server(&app, &r.name).unwrap();
    assert_eq!(
        s.pointer(&format!("/metadata/labels/{}", JUNK.replace('/', "~1"))),
        Some(&Value::from("duplicate"))
    );
    let after = server(&app, &a).unwrap();
    assert_eq!(before.pointer("/spec"), after.pointer("/spec"));
    assert_eq!(
        before.pointer("/metadata/annotations"),
        after.pointer("/metadata/annotations")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidero_compatible_mode_registers_without_tokens_and_keeps_the_source_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let app = Appliance::start_custom(
        &tmp.path().join("data"),
        "[agent]\nfirst_contact = \"sidero-compatible\"\n",
        "warn",
        &[],
    );
    let a = uuid(1);
    let mut plain = AgentClient::new(channel_from(&app.endpoint(), src(1)).await.unwrap());
    plain.create_server(create(hardware(1))).await.unwrap();
    plain
        .heartbeat(pb::HeartbeatRequest { uuid: a.clone() })
        .await
        .unwrap();
    assert!(server(&app, &a).is_some());
    assert_eq!(pinned(&app, &a), None, "no key is pinned");
    // The security issue's rule: another address cannot play the agent.
    let mut other = AgentClient::new(channel_from(&app.endpoint(), src(2)).await.unwrap());
    refused(
        other
            .heartbeat(pb::HeartbeatRequest { uuid: a.clone() })
            .await,
        Code::PermissionDenied,
        "registered from another address",
    );
}
