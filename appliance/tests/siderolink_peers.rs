//! Root-only: the box's userspace SideroLink endpoint (boringtun + smoltcp, in this test
//! process, with the real log book writing to the store) against many Debian
//! `wireguard-go` + `wg` nodes and a handshake flooder, each in a network namespace this
//! test creates (names start with `sl`, veths in 198.19.<pid % 250>.0/24).
//!
//! Proves:
//! - many peers: 20 nodes, each allocated and provisioned with its own key, handshake at
//!   once and send their log lines concurrently; every server's stored lines are exactly
//!   its own node's lines, attributed to its own overlay address (none lost, none under
//!   another server).
//! - a handshake flood (this test binary re-executed in a namespace as `flood_child`:
//!   WireGuard initiations with a valid MAC1 from keys no server holds, thousands per
//!   second) is answered with cookie replies (boringtun's `RateLimiter`, counted by the
//!   endpoint and received by the flooder) and does not starve an established peer:
//!   every log line it sends during the flood is stored while the flood still runs; a
//!   node that starts its handshake during the flood still gets through.
//! - connections per node: a node holding `max_connections_per_node` (4) connections has
//!   its 5th refused and counted, so with 5 slots in all another node still connects and
//!   logs; the held ones keep working, and closing them frees the node's share.
//!
//! Also the ignored `bench_tunnel_vs_wireguard_go`, run by `scripts/bench siderolink`.
//!
//! Skips with a printed reason when not root or a tool is missing, unless APPLIANCE_E2E=1
//! (CI), where that is a failure.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use appliance::siderolink::endpoint::EndpointConfig;
use appliance::store::NodeLogQuery;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

#[path = "support/prereq.rs"]
mod prereq;
#[path = "support/wg.rs"]
mod wg;

use wg::{BoxSide, Lab, PY, run_in, send_tcp, send_tcp_within};

fn skip_reason() -> Option<String> {
    prereq::missing_root_or(wg::TOOLS, wg::NEEDS)
}

fn config() -> EndpointConfig {
    EndpointConfig {
        max_log_line: 16 * 1024,
        max_log_connections: 256,
        max_connections_per_node: 4,
        discard_port: None,
        handshake_limit: appliance::siderolink::endpoint::HANDSHAKE_LIMIT,
    }
}

/// The /30 of node `i` (0..63) of this process.
fn base(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (std::process::id() % 250) as u8, (i * 4) as u8)
}

fn tag(kind: char, i: usize) -> String {
    format!("{}{kind}{i}", std::process::id() % 10000)
}

fn line(msg: &str) -> String {
    format!(
        "{{\"clock\":1,\"facility\":\"kern\",\"msg\":\"{msg}\",\"priority\":\"info\",\"seq\":1,\"talos-level\":\"info\",\"talos-time\":\"2026-12-05T23:00:00Z\"}}\n"
    )
}

/// Polls until `stored` lines are in the store (the log book commits in batches).
async fn wait_stored(b: &BoxSide, stored: u64, within: Duration) {
    let until = appliance::clock::now() + within;
    while b.stats.log_lines_stored.get() < stored {
        assert!(
            appliance::clock::now() < until,
            "only {} of {stored} log lines stored (decoded {}, dropped {})",
            b.stats.log_lines_stored.get(),
            b.stats.log_lines.get(),
            b.stats.log_lines_dropped.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stored_msgs(b: &BoxSide, server: &str) -> Vec<(String, String)> {
    b.logbook
        .read(server, NodeLogQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.msg, r.address))
        .collect()
}

const NODES: usize = 20;
const LINES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_wireguard_go_nodes_each_log_under_their_own_server() {
    if let Some(why) = skip_reason() {
        prereq::skip(
            "many_wireguard_go_nodes_each_log_under_their_own_server",
            &why,
        );
        return;
    }
    let b = BoxSide::start(config(), 100).await;
    let server = b.prefix.server_address();
    let mut lab = Lab::default();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let n = lab.node_in(&tag('p', i), base(i));
        let name = format!("node-{i:02}");
        let addr = b.provision(&name, &n, i as u8 + 1).await;
        nodes.push((name, n, addr));
    }
    let addrs: std::collections::HashSet<Ipv6Addr> = nodes.iter().map(|n| n.2).collect();
    assert_eq!(addrs.len(), NODES, "overlay addresses not distinct");
    b.wait_peers(NODES as u64).await;
    for (_, n, addr) in &nodes {
        b.connect(&mut lab, n, *addr);
    }

    // All nodes at once: handshake, connect to 4001, send their lines.
    let sends: Vec<_> = nodes
        .iter()
        .map(|(name, n, _)| {
            let ns = n.ns.clone();
            let payload: String = (0..LINES)
                .map(|k| line(&format!("[talos] {name} line {k}")))
                .collect();
            tokio::task::spawn_blocking(move || send_tcp_within(&ns, None, server, &payload, 15))
        })
        .collect();
    for (s, (name, _, _)) in sends.into_iter().zip(&nodes) {
        assert!(s.await.unwrap(), "{name}: no connection through the tunnel");
    }
    wait_stored(&b, (NODES * LINES) as u64, Duration::from_secs(20)).await;

    for (name, n, addr) in &nodes {
        let want: Vec<(String, String)> = (0..LINES)
            .map(|k| (format!("[talos] {name} line {k}"), addr.to_string()))
            .collect();
        assert_eq!(stored_msgs(&b, name).await, want, "{name}");
        let hs = run_in(&n.ns, &["wg", "show", &n.ifname, "latest-handshakes"]);
        assert!(!hs.trim().ends_with("\t0"), "{name}: no handshake: {hs}");
    }
    assert_eq!(b.stats.log_lines.get(), (NODES * LINES) as u64);
    assert!(b.stats.handshakes.get() >= NODES as u64);
    assert_eq!(b.stats.spoofed.get(), 0);
    assert_eq!(b.stats.unknown_key.get(), 0);
    assert_eq!(b.stats.log_lines_dropped.get(), 0);
    drop(lab);
}

/// Inside `ns`: opens `tries` connections to `[to]:4001` one after another and holds the
/// ones that connect; prints one line `ok`/`refused`/`err:<why>` per try, then sends one log
/// line `<tag> <k>` on each held connection, prints `sent`, and holds them until its stdin
/// closes.
fn holder(ns: &str, to: Ipv6Addr, tag: &str, tries: usize) -> std::process::Child {
    let l = line(&format!("{tag} %d"));
    let script = format!(
        "import socket,sys\nheld=[]\nres=[]\nfor i in range({tries}):\n    s=socket.socket(socket.AF_INET6)\n    s.settimeout(15)\n    try:\n        s.connect(('{to}',4001))\n        held.append(s)\n        res.append('ok')\n    except ConnectionRefusedError:\n        res.append('refused')\n    except OSError as e:\n        res.append('err:'+type(e).__name__)\nprint(' '.join(res),flush=True)\nfor k,s in enumerate(held):\n    s.sendall(({l:?} % k).encode())\nprint('sent',flush=True)\nsys.stdin.read()\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns, PY, "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `[siderolink] max_connections_per_node` (4 here, the default) under a total of 5: a
/// node holding 4 connections has its 5th refused (reset at its SYN, counted as
/// `node_limit`), so the last slot is left and another node still connects and logs
/// (without the per-node limit the first node takes all 5 and the other is refused); the
/// 4 held connections keep working, and once the first node lets them go it connects
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holding_its_share_of_connections_is_refused_a_fifth_and_others_still_connect() {
    if let Some(why) = skip_reason() {
        prereq::skip(
            "a_node_holding_its_share_of_connections_is_refused_a_fifth_and_others_still_connect",
            &why,
        );
        return;
    }
    use std::io::BufRead;
    let config = EndpointConfig {
        max_log_connections: 5,
        ..config()
    };
    let b = BoxSide::start(config, 1000).await;
    let server = b.prefix.server_address();
    let mut lab = Lab::default();
    // Nodes 50.. of this process's /24 (the other tests use 0..20 and 40..42).
    let greedy = lab.node_in(&tag('c', 0), base(50));
    let other = lab.node_in(&tag('c', 1), base(51));
    let addr_greedy = b.provision("node-greedy", &greedy, 0xc).await;
    let addr_other = b.provision("node-other", &other, 0xd).await;
    b.wait_peers(2).await;
    b.connect(&mut lab, &greedy, addr_greedy);
    b.connect(&mut lab, &other, addr_other);

    let mut hold = holder(&greedy.ns, server, "greedy", 5);
    let mut out = std::io::BufReader::new(hold.stdout.take().unwrap());
    let read_line = |out: &mut std::io::BufReader<std::process::ChildStdout>| {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    let results = tokio::task::block_in_place(|| read_line(&mut out));
    assert_eq!(results, "ok ok ok ok refused", "the greedy node's connects");
    assert_eq!(b.stats.connections_refused_per_node.get(), 1);
    // The other node connects and logs while the greedy one holds its four.
    let ns = other.ns.clone();
    let sent = tokio::task::spawn_blocking(move || {
        send_tcp_within(&ns, None, server, &line("other 0"), 15)
    })
    .await
    .unwrap();
    assert!(sent, "the other node could not connect");
    // The four held connections work: a line on each.
    assert_eq!(tokio::task::block_in_place(|| read_line(&mut out)), "sent");
    wait_stored(&b, 5, Duration::from_secs(20)).await;
    let mut greedy_lines = stored_msgs(&b, "node-greedy").await;
    greedy_lines.sort();
    let want: Vec<(String, String)> = (0..4)
        .map(|k| (format!("greedy {k}"), addr_greedy.to_string()))
        .collect();
    assert_eq!(greedy_lines, want);
    assert_eq!(
        stored_msgs(&b, "node-other").await,
        [("other 0".to_string(), addr_other.to_string())]
    );
    assert_eq!(b.stats.connections_refused_per_node.get(), 1);
    // Let go of the four: the node connects again.
    drop(hold.stdin.take());
    tokio::task::block_in_place(|| hold.wait().unwrap());
    let ns = greedy.ns.clone();
    let mut again = false;
    for _ in 0..50 {
        let ns = ns.clone();
        let l = line("greedy again");
        if tokio::task::spawn_blocking(move || send_tcp_within(&ns, None, server, &l, 5))
            .await
            .unwrap()
        {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        again,
        "the greedy node never connected again after closing its four"
    );
    wait_stored(&b, 6, Duration::from_secs(20)).await;
    drop(lab);
}

/// Handshake initiations per second the flooder aims at (50× the limiter's 100/s).
const FLOOD_RATE: u64 = 5000;

/// Run inside the flooder's namespace by the flood test (`SL_FLOOD_TO=<ip:port>`,
/// `SL_FLOOD_KEY=<server key>`, `SL_FLOOD_STOP=<file>`): sends handshake initiations from
/// 64 keys no server holds (valid MAC1, as anyone who knows the box's public key can
/// make), FLOOD_RATE a second, until the stop file exists (at most 120 s); then prints
/// `flood: sent N cookies M` (M = cookie replies received). Does nothing on its own.
#[test]
fn flood_child() {
    let Ok(to) = std::env::var("SL_FLOOD_TO") else {
        return;
    };
    let to: SocketAddr = to.parse().unwrap();
    let key =
        appliance::siderolink::identity::parse_public_key(&std::env::var("SL_FLOOD_KEY").unwrap())
            .unwrap();
    let stop = std::path::PathBuf::from(std::env::var("SL_FLOOD_STOP").unwrap());
    let mut buf = vec![0u8; 2048];
    let inits: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).unwrap();
            let mut t = Tunn::new(
                StaticSecret::from(secret),
                PublicKey::from(key.to_bytes()),
                None,
                None,
                i,
                None,
            );
            match t.format_handshake_initiation(&mut buf, true) {
                TunnResult::WriteToNetwork(p) => p.to_vec(),
                _ => panic!("no initiation"),
            }
        })
        .collect();
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let (mut sent, mut cookies) = (0u64, 0u64);
    let start = appliance::clock::now();
    let per_tick = FLOOD_RATE / 100;
    while !stop.exists() && start.elapsed() < Duration::from_secs(120) {
        for _ in 0..per_tick {
            if sock.send_to(&inits[(sent % 64) as usize], to).is_ok() {
                sent += 1;
            }
        }
        while let Ok(n) = sock.recv(&mut buf) {
            // Cookie reply: type 3, 64 bytes.
            if n == 64 && buf[0] == 3 {
                cookies += 1;
            }
        }
        let due = start + Duration::from_millis(10 * (sent / per_tick.max(1)));
        if let Some(wait) = due.checked_duration_since(appliance::clock::now()) {
            std::thread::sleep(wait);
        }
    }
    println!("flood: sent {sent} cookies {cookies}");
}

/// The python sender: one TCP connection to `[to]:4001`, `n` lines `<tag> k` 100 ms
/// apart; exits 0 when all were sent.
fn paced_sender(ns: &str, to: Ipv6Addr, tag: &str, n: usize) -> std::process::Child {
    let l = line(&format!("{tag} %d"));
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET6)\ns.settimeout(10)\ns.connect(('{to}',4001))\nfor k in range({n}):\n    s.sendall(({l:?} % k).encode())\n    time.sleep(0.1)\ns.close()\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns, PY, "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_gets_cookies_and_does_not_starve_an_established_peer() {
    if let Some(why) = skip_reason() {
        prereq::skip(
            "handshake_flood_gets_cookies_and_does_not_starve_an_established_peer",
            &why,
        );
        return;
    }
    let b = BoxSide::start(config(), 1000).await;
    let server = b.prefix.server_address();
    let mut lab = Lab::default();
    // Nodes 40.. of this process's /24 (the many-peers test uses 0..20).
    let a = lab.node_in(&tag('f', 0), base(40));
    let late = lab.node_in(&tag('f', 1), base(41));
    let flooder = lab.node_in(&tag('f', 2), base(42));
    let addr_a = b.provision("node-a", &a, 0xa).await;
    let addr_late = b.provision("node-late", &late, 0xb).await;
    b.wait_peers(2).await;

    // node-a is established before the flood.
    b.connect(&mut lab, &a, addr_a);
    let ns = a.ns.clone();
    let first = line("[talos] before the flood");
    assert!(
        tokio::task::spawn_blocking(move || send_tcp(&ns, None, server, &first))
            .await
            .unwrap()
    );
    wait_stored(&b, 1, Duration::from_secs(10)).await;

    // The flood.
    let stop_file = b.dir.path().join("stop-flood");
    let exe = std::env::current_exe().unwrap();
    let flood = Command::new("ip")
        .args(["netns", "exec", &flooder.ns])
        .arg(&exe)
        .args(["--exact", "flood_child", "--nocapture"])
        .env(
            "SL_FLOOD_TO",
            SocketAddr::new(flooder.outside.into(), b.port).to_string(),
        )
        .env("SL_FLOOD_KEY", b.identity.public_key_base64())
        .env("SL_FLOOD_STOP", &stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut flood = Flood {
        child: Some(flood),
        stop: stop_file.clone(),
    };
    let until = appliance::clock::now() + Duration::from_secs(20);
    while b.stats.cookies.get() < 100 {
        assert!(
            appliance::clock::now() < until,
            "no cookie replies under the flood (cookies {}, unknown keys {}, invalid {})",
            b.stats.cookies.get(),
            b.stats.unknown_key.get(),
            b.stats.invalid.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // During it: node-a streams 30 lines, node-late handshakes for the first time.
    const DURING: usize = 30;
    let mut sender = paced_sender(&a.ns, server, "[talos] during the flood", DURING);
    b.connect(&mut lab, &late, addr_late);
    let ns = late.ns.clone();
    let late_line = line("[talos] late node");
    let late_sent =
        tokio::task::spawn_blocking(move || send_tcp_within(&ns, None, server, &late_line, 30));
    let status = tokio::task::spawn_blocking(move || sender.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "node-a's sender failed during the flood");
    assert!(
        late_sent.await.unwrap(),
        "a node starting its handshake during the flood never got through"
    );
    wait_stored(&b, (1 + DURING + 1) as u64, Duration::from_secs(20)).await;
    assert!(
        flood.running(),
        "the flood ended before the lines were stored"
    );
    let cookies_during = b.stats.cookies.get();

    std::fs::write(&stop_file, b"").unwrap();
    let out = flood.finish();
    let report = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = report
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("flood: sent ")?;
            let (s, c) = rest.split_once(" cookies ")?;
            Some((s.parse::<u64>().ok()?, c.trim().parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| {
            panic!(
                "flooder report missing: {report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!(
        "flood: {sent} initiations sent, {} cookie replies by the endpoint, {received} received by the flooder, {} dropped as unknown key",
        b.stats.cookies.get(),
        b.stats.unknown_key.get()
    );
    assert!(received > 0, "the flooder received no cookie reply");
    assert!(received <= b.stats.cookies.get());
    assert!(cookies_during >= 100);
    assert!(
        b.stats.unknown_key.get() > 0,
        "no initiation reached the key lookup"
    );
    assert!(b.stats.handshakes.get() >= 2);

    let mut want: Vec<(String, String)> =
        vec![("[talos] before the flood".into(), addr_a.to_string())];
    want.extend((0..DURING).map(|k| (format!("[talos] during the flood {k}"), addr_a.to_string())));
    assert_eq!(stored_msgs(&b, "node-a").await, want);
    assert_eq!(
        stored_msgs(&b, "node-late").await,
        vec![("[talos] late node".to_string(), addr_late.to_string())]
    );
    assert_eq!(b.stats.log_lines_dropped.get(), 0);
    drop(lab);
}

/// The flooder child, stopped (stop file, then kill) however the test ends.
struct Flood {
    child: Option<std::process::Child>,
    stop: std::path::PathBuf,
}

impl Flood {
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the flood and returns the flooder's output.
    fn finish(mut self) -> std::process::Output {
        let _ = std::fs::write(&self.stop, b"");
        let child = self.child.take().expect("flooder");
        child.wait_with_output().unwrap()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        if let Some(mut c) = self.child.take() {
            std::thread::sleep(Duration::from_millis(300));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Python in a namespace: `bulk` sends `mib` MiB to `[to]:port`, half-closes, waits for
/// the server's close and prints the seconds; `echo` sends `n` ICMPv6 echo requests to
/// `to` one after the other and prints the median round trip in µs.
const BENCH_PY: &str = r#"
import socket, sys, time, struct, statistics
mode, to = sys.argv[1], sys.argv[2]
if mode == "bulk":
    port, mib = int(sys.argv[3]), int(sys.argv[4])
    s = socket.socket(socket.AF_INET6); s.settimeout(60); s.connect((to, port))
    chunk = b"x" * 65536; t0 = time.monotonic()
    for _ in range(mib * 16): s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536): pass
    print("%.6f" % (time.monotonic() - t0))
else:
    n = int(sys.argv[3]); r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); r.settimeout(2)
    rtts = []
    for i in range(n):
        t0 = time.monotonic(); r.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x5a5a, i) + b"bench", (to, 0))
        while True:
            d, _ = r.recvfrom(2048)
            if d[0] == 129 and struct.unpack("!H", d[6:8])[0] == i: break
        rtts.append((time.monotonic() - t0) * 1e6)
    print("%.0f" % statistics.median(rtts))
"#;

fn bench_py(ns: &str, args: &[&str]) -> f64 {
    let mut cmd = vec!["ip", "netns", "exec", ns, PY, "-c", BENCH_PY];
    cmd.extend_from_slice(args);
    wg::run(&cmd).trim().parse().unwrap()
}

/// `scripts/bench siderolink` (ignored in normal runs): tunnel throughput and echo latency
/// from a wireguard-go node through the box's userspace endpoint to its bench-only discard
/// port, against the same node's second wireguard-go link to a wireguard-go link in the
/// root namespace with a kernel discard server, same namespaces, same client. Prints
/// `siderolink:` lines. `SL_BENCH_MIB` (default 64) MiB per transfer, `SL_BENCH_ROUNDS` (3)
/// alternating rounds, medians compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench siderolink"]
async fn bench_tunnel_vs_wireguard_go() {
    if let Some(why) = skip_reason() {
        prereq::skip("bench_tunnel_vs_wireguard_go", &why);
        return;
    }
    let mib: u32 = std::env::var("SL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut cfg = config();
    cfg.discard_port = Some(9);
    let b = BoxSide::start(cfg, 100).await;
    let server = b.prefix.server_address();
    let mut lab = Lab::default();
    let n = lab.node_in(&tag('b', 0), base(50));
    let addr = b.provision("node-bench", &n, 0x42).await;
    b.wait_peers(1).await;
    b.connect(&mut lab, &n, addr);

    // The peer: wireguard-go in the root namespace (fd99::1) and a second wireguard-go
    // link in the node's namespace (fd99::2), a kernel discard server on [fd99::1]:9.
    let root_if = format!("wgr{}", tag('b', 0));
    let root_key = wg::run(&["wg", "genkey"]).trim().to_string();
    let node2 = wg::Node {
        ns: n.ns.clone(),
        outside: n.outside,
        ifname: format!("wgn{}", tag('b', 0)),
        private: wg::run(&["wg", "genkey"]).trim().to_string(),
        public: String::new(),
    };
    let pubkey = |k: &str| {
        use std::io::Write;
        let mut c = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(k.as_bytes()).unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let node2 = wg::Node {
        public: pubkey(&node2.private),
        ..node2
    };
    let root = lab.root_wireguard(
        &root_if,
        b.dir.path(),
        &root_key,
        &node2.public,
        "fd99::2/128",
        "fd99::1/64",
    );
    lab.wireguard(
        &node2,
        b.dir.path(),
        &pubkey(&root_key),
        SocketAddr::new(n.outside.into(), root),
        "fd99::2/64",
        "fd99::1".parse().unwrap(),
    );
    let discard = Command::new(PY)
        .args([
            "-c",
            "import socket\ns=socket.socket(socket.AF_INET6)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('fd99::1',9))\ns.listen(8)\nwhile True:\n    c,_=s.accept()\n    while c.recv(65536): pass\n    c.close()\n",
        ])
        .spawn()
        .unwrap();
    lab.adopt(discard);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ns = n.ns.clone();
    let to = server.to_string();
    // The machine is shared: rounds alternate the two paths, and the median of each is
    // compared (every round's ratio is printed too).
    let rounds: usize = std::env::var("SL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (box_s, box_rtt, wg_s, wg_rtt) = tokio::task::spawn_blocking(move || {
        let m = mib.to_string();
        // Warm both paths (handshakes), then measure.
        bench_py(&ns, &["echo", &to, "5"]);
        bench_py(&ns, &["echo", "fd99::1", "5"]);
        let (mut box_s, mut wg_s, mut box_rtt, mut wg_rtt) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds.max(1) {
            box_s.push(bench_py(&ns, &["bulk", &to, "9", &m]));
            wg_s.push(bench_py(&ns, &["bulk", "fd99::1", "9", &m]));
            box_rtt.push(bench_py(&ns, &["echo", &to, "200"]));
            wg_rtt.push(bench_py(&ns, &["echo", "fd99::1", "200"]));
        }
        (box_s, box_rtt, wg_s, wg_rtt)
    })
    .await
    .unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mbit = |s: f64| f64::from(mib) * 8.0 * 1.048_576 / s;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<String> = box_s
        .iter()
        .zip(&wg_s)
        .map(|(b, w)| format!("{:.2}", w / b))
        .collect();
    println!(
        "siderolink: throughput box {:.0} Mbit/s, wireguard-go {:.0} Mbit/s (medians of {rounds} alternating rounds), ratio {:.2} (goal >= 0.5; per round {}) [{mib} MiB each; load {}]",
        mbit(median(&box_s)),
        mbit(median(&wg_s)),
        median(&wg_s) / median(&box_s),
        ratios.join(" "),
        load.trim()
    );
    println!(
        "siderolink: echo rtt median box {:.0} us, wireguard-go {:.0} us [200 echoes x {rounds}; load {}]",
        median(&box_rtt),
        median(&wg_rtt),
        load.trim()
    );
    drop(lab);
}
