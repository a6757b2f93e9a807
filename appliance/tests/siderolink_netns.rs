//! Root-only: the box's userspace SideroLink endpoint (boringtun + smoltcp, in this test
//! process) against Debian's `wireguard-go` + `wg` as the nodes, each in a network
//! namespace this test creates (names start with `sl`), reached over a veth pair whose
//! other end this test also creates.
//!
//! Proves: a provisioned node handshakes and a Talos log line it sends over TCP to
//! `[<prefix>::1]:4001` arrives attributed to its server; Talos-shaped events it publishes
//! over gRPC to `[<prefix>::1]:4002` (this test binary re-executed inside the node's
//! namespace as the client, `events_child`) set the ServerBinding conditions and install
//! the Server (`PXEBooted=True`); a node whose key was never
//! provisioned (foreign key) is dropped at the handshake and delivers nothing; a packet a
//! node sends with another node's overlay address as its source is dropped and nothing
//! from it is stored under either server.
//!
//! Skips with a printed reason when not root or a tool is missing, unless APPLIANCE_E2E=1
//! (CI), where that is a failure.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use appliance::model::{Kind, Object};
use appliance::reconcile::Lifecycle;
use appliance::reconcile::power::LoggedPower;
use appliance::siderolink::endpoint::{Endpoint, EndpointConfig, NodeLog};
use appliance::siderolink::identity::Identity;
use appliance::siderolink::sink::EventSink;
use appliance::siderolink::{peers, provision};
use appliance::store::Store;
use appliance_rpc::events::event_sink_service_server::EventSinkServiceServer;
use tokio::sync::watch;

#[path = "support/prereq.rs"]
mod prereq;
#[path = "support/wg.rs"]
mod wg;

use wg::{Lab, allocate, run_in, send_tcp};

fn skip_reason() -> Option<String> {
    prereq::missing_root_or(wg::TOOLS, wg::NEEDS)
}

/// Run inside the node's namespace by the main test (`SL_EVENTS_TO=<server addr>`): plays
/// Talos's event sink client over the tunnel. Does nothing when run on its own.
#[tokio::test]
async fn events_child() {
    let Ok(to) = std::env::var("SL_EVENTS_TO") else {
        return;
    };
    wg::publish_install_events(&to, "talos-a", "192.168.7.5").await;
}

async fn next_log(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<NodeLog>>,
    within: Duration,
) -> Option<Arc<NodeLog>> {
    tokio::time::timeout(within, rx.recv()).await.ok()?.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wireguard_go_nodes_through_the_userspace_endpoint() {
    if let Some(why) = skip_reason() {
        prereq::skip("wireguard_go_nodes_through_the_userspace_endpoint", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let (lc, _reconcile) = Lifecycle::new(
        store.clone(),
        appliance::config::Config::default().lifecycle,
        Arc::new(LoggedPower),
        None,
    );
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).unwrap();
    let identity = Arc::new(Identity::generate(random));
    let prefix = identity.prefix();
    let server = prefix.server_address();

    let tag = format!("{}", std::process::id() % 10000);
    let net = (std::process::id() % 60) as u8 * 4;
    let mut lab = Lab::default();
    let a = lab.node(&format!("{tag}a"), net);
    let f = lab.node(&format!("{tag}f"), net + 1);
    // Both nodes' veths end on the root side in different /30s; the endpoint listens on
    // the unspecified address so both reach it.
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let config = EndpointConfig {
        max_log_line: 16 * 1024,
        max_log_connections: 64,
        max_connections_per_node: 4,
        discard_port: None,
        handshake_limit: appliance::siderolink::endpoint::HANDSHAKE_LIMIT,
    };
    let mut endpoint = Endpoint::new(
        socket,
        identity.clone(),
        &config,
        7,
        Arc::new(Default::default()),
    );
    let event_conns = endpoint.take_event_connections().unwrap();
    let stats = endpoint.stats();
    let mut logs = endpoint.subscribe_logs();
    let (stop, shutdown) = watch::channel(false);
    let (peers_tx, peers_rx) = watch::channel(Arc::new(Vec::new()));
    tokio::spawn(peers::follow(
        store.clone(),
        prefix,
        peers_tx,
        shutdown.clone(),
    ));
    let sink = EventSink::new(lc.clone(), peers_rx.clone(), vec![]);
    let mut grpc_stop = shutdown.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventSinkServiceServer::new(sink))
            .serve_with_incoming_shutdown(event_conns, async move {
                let _ = grpc_stop.changed().await;
            }),
    );
    let task = tokio::spawn(endpoint.run(peers_rx, shutdown));

    // node-a and node-b are allocated; node-a provisions with its wireguard-go key, node-b
    // with a key no process here holds. The foreign node f never provisions.
    allocate(&lc, "node-a").await;
    allocate(&lc, "node-b").await;
    let addr_a =
        provision::bind_node(&store, prefix, "node-a", &a.public, vec![[0x11; 8]]).unwrap();
    let other_key = Identity::generate([9; 64]).public_key_base64();
    let addr_b =
        provision::bind_node(&store, prefix, "node-b", &other_key, vec![[0x22; 8]]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ep_a: SocketAddr = format!("198.18.{net}.1:{port}").parse().unwrap();
    let ep_f: SocketAddr = format!("198.18.{}.1:{port}", net + 1).parse().unwrap();
    let server_key = identity.public_key_base64();
    lab.wireguard(
        &a,
        dir.path(),
        &server_key,
        ep_a,
        &format!("{addr_a}/64"),
        server,
    );
    lab.wireguard(
        &f,
        dir.path(),
        &server_key,
        ep_f,
        &format!("{}/64", prefix.with_host(0x33)),
        server,
    );

    // 1. The provisioned node: handshake, then a Talos kernel log line over TCP.
    let line = r#"{"clock":1,"facility":"kern","msg":"[talos] hello from node-a","priority":"info","seq":7,"talos-level":"info","talos-time":"2026-12-02T10:11:12.123456789Z"}"#;
    let ns = a.ns.clone();
    let payload = format!("{line}\n");
    let sent = tokio::task::spawn_blocking(move || send_tcp(&ns, None, server, &payload))
        .await
        .unwrap();
    assert!(
        sent,
        "TCP connect through the tunnel to [{server}]:4001 failed"
    );
    let got = next_log(&mut logs, Duration::from_secs(5))
        .await
        .expect("log line arrives");
    assert_eq!(got.server, "node-a");
    assert_eq!(got.address, addr_a);
    assert_eq!(got.line.msg, "[talos] hello from node-a");
    assert_eq!(got.line.level.as_deref(), Some("info"));
    let hs = run_in(&a.ns, &["wg", "show", &a.ifname, "latest-handshakes"]);
    assert!(!hs.trim().ends_with("\t0"), "no handshake recorded: {hs}");
    assert_eq!(stats.spoofed.get(), 0);

    // 1b. Talos's events over gRPC through the tunnel (the child plays Talos).
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &a.ns])
        .arg(&exe)
        .args(["--exact", "events_child", "--nocapture"])
        .env("SL_EVENTS_TO", server.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "events child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let Some(Object::ServerBinding(b)) = store
        .get(Kind::ServerBinding, "node-a")
        .unwrap()
        .map(|s| s.object)
    else {
        panic!("binding gone")
    };
    assert_eq!(b.spec.hostname.as_deref(), Some("talos-a"));
    assert_eq!(b.spec.addresses, vec!["192.168.7.5".to_string()]);
    let conds = b.status.unwrap_or_default().conditions;
    for t in [
        "TalosConfigLoaded",
        "TalosConfigValidated",
        "TalosInstalled",
    ] {
        assert!(
            conds
                .iter()
                .any(|c| c.type_ == t && c.status == appliance::model::ConditionStatus::True),
            "{t}: {conds:?}"
        );
    }
    let Some(Object::Server(srv)) = store.get(Kind::Server, "node-a").unwrap().map(|s| s.object)
    else {
        panic!("server gone")
    };
    assert!(
        appliance::boot::facts::ServerFacts::from_server(&srv).pxe_booted,
        "server not PXEBooted: {:?}",
        srv.status
    );

    // 2. Spoofed inner source: node-a sends with node-b's overlay address.
    run_in(
        &a.ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{addr_b}/128"),
            "dev",
            &a.ifname,
            "nodad",
        ],
    );
    let ns = a.ns.clone();
    let spoof_line = "{\"msg\":\"spoofed\"}\n".to_string();
    let connected =
        tokio::task::spawn_blocking(move || send_tcp(&ns, Some(addr_b), server, &spoof_line))
            .await
            .unwrap();
    assert!(
        !connected,
        "a connection with a spoofed source must not be accepted"
    );
    assert!(
        stats.spoofed.get() > 0,
        "spoofed packets were not seen as such"
    );

    // 3. Foreign key: f's handshakes are dropped, it delivers nothing.
    let ns = f.ns.clone();
    let connected =
        tokio::task::spawn_blocking(move || send_tcp(&ns, None, server, "{\"msg\":\"foreign\"}\n"))
            .await
            .unwrap();
    assert!(
        !connected,
        "a node with a foreign key must not reach the overlay"
    );
    assert!(
        stats.unknown_key.get() > 0,
        "foreign handshakes not counted"
    );
    let hs = run_in(&f.ns, &["wg", "show", &f.ifname, "latest-handshakes"]);
    assert!(
        hs.trim().ends_with("\t0"),
        "foreign node got a handshake: {hs}"
    );

    // Nothing from 2. or 3. arrived under any server.
    assert!(
        next_log(&mut logs, Duration::from_millis(500))
            .await
            .is_none()
    );
    assert_eq!(stats.log_lines.get(), 1);

    let _ = stop.send(true);
    let _ = task.await;
    drop(lab);
}
