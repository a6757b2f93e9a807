//! SideroLink with the load generator (`support/loadgen.rs`): simulated Talos nodes, each a
//! boringtun peer with its own key and its own smoltcp stack, provisioned through the
//! box's Provision API served over gRPC, in a child process (this test binary re-executed
//! as `load_child`), against the box's userspace endpoint in this process (`BoxSide`: the
//! endpoint, the peer follower and the log book writing to the store, as `serve` runs
//! them). Loopback UDP only: no root, no namespaces.
//!
//! Proves: `generator_nodes_log_through_the_box`: 20 generated nodes provision, handshake
//! and send 5 lines each through their tunnels; every server's stored lines are exactly
//! its node's lines in order, attributed to the overlay address Provision gave it. So the
//! generator's nodes are real peers of the box, and the bench's counts are the box's.
//!
//! Also the ignored `bench_siderolink_at_scale`, run by `scripts/bench siderolink`: RSS per
//! configured and per handshaked peer, peers held at Talos's idle traffic with no lost log
//! line, the highest log lines/s with 100 peers without loss, CPU per 1,000 lines/s, and
//! handshakes/s under a flood (the `siderolink:` lines it prints).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use appliance::siderolink::endpoint::{EndpointConfig, HANDSHAKE_LIMIT};
use appliance::store::NodeLogQuery;
use appliance_rpc::siderolink::provision_service_server::ProvisionServiceServer;

#[path = "support/loadgen.rs"]
mod loadgen;
#[path = "support/wg.rs"]
mod wg;

use wg::BoxSide;

/// Entry of the generator child (`SL_LOAD_API`, `SL_LOAD_NAMES` = `PREFIX:COUNT`,
/// `SL_LOAD_REPORT`); does nothing on its own.
#[test]
fn load_child() {
    let Ok(api) = std::env::var("SL_LOAD_API") else {
        return;
    };
    let names = std::env::var("SL_LOAD_NAMES").unwrap();
    let (prefix, count) = names.split_once(':').unwrap();
    let names = (0..count.parse::<usize>().unwrap())
        .map(|i| format!("{prefix}{i:05}"))
        .collect();
    let report = std::path::PathBuf::from(std::env::var("SL_LOAD_REPORT").unwrap());
    loadgen::child_main(&api, names, &report);
}

/// Serves the Provision API for `b` on loopback; returns its URL.
async fn serve_provision(b: &BoxSide) -> String {
    let api = appliance::siderolink::provision::ProvisionApi::new(
        b.store.clone(),
        b.identity.clone(),
        format!("127.0.0.1:{}", b.port),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProvisionServiceServer::new(api))
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

/// The generator child and its command pipe; killed on drop.
struct Generator {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    answers: std::sync::mpsc::Receiver<String>,
    report: std::path::PathBuf,
}

impl Generator {
    fn spawn(api: &str, prefix: &str, count: usize, dir: &std::path::Path) -> Generator {
        let report = dir.join("load-report");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "load_child", "--nocapture", "--test-threads=1"])
            .env("SL_LOAD_API", api)
            .env("SL_LOAD_NAMES", format!("{prefix}:{count}"))
            .env("SL_LOAD_REPORT", &report)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness may have begun the line ("test load_child ... ").
                if let Some(at) = line.find("load: ")
                    && tx.send(line[at + 6..].to_string()).is_err()
                {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Generator {
            child,
            stdin,
            answers,
            report,
        }
    }

    /// The next answer (within `within`).
    fn answer(&self, within: Duration) -> String {
        self.answers
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("the load generator did not answer: {e}"))
    }

    /// Sends `cmd`, returns its answer.
    fn ask(&mut self, cmd: &str, within: Duration) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let a = self.answer(within);
        assert!(!a.starts_with("unknown"), "{cmd}: {a}");
        a
    }

    /// (name, lines written, reconnects) of every active node, from the last `report`.
    fn report(&self) -> Vec<(String, u64, u64)> {
        std::fs::read_to_string(&self.report)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let until = appliance::clock::now() + Duration::from_secs(3);
        while appliance::clock::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `key` in a generator answer.
fn field(answer: &str, key: &str) -> f64 {
    let mut w = answer.split_whitespace();
    while let Some(x) = w.next() {
        if x == key {
            return w.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        }
    }
    panic!("no {key} in: {answer}")
}

/// Waits until the box stored `n` lines in total.
async fn wait_stored(b: &BoxSide, n: u64, within: Duration) -> bool {
    let until = appliance::clock::now() + within;
    while b.stats.log_lines_stored.get() < n {
        if appliance::clock::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn wait_peers(b: &BoxSide, n: u64, within: Duration) {
    let until = appliance::clock::now() + within;
    while b.stats.peers.get() < n {
        assert!(
            appliance::clock::now() < until,
            "the endpoint holds {} peers, not {n}",
            b.stats.peers.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Servers whose stored lines are not exactly `line 0 .. written-1` of their node.
async fn mismatched(b: &BoxSide, report: &[(String, u64, u64)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (name, written, _) in report {
        let got: Vec<String> = b
            .logbook
            .read(name, NodeLogQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.msg)
            .collect();
        let want: Vec<String> = (0..*written).map(|k| loadgen::line_msg(name, k)).collect();
        if got != want {
            bad.push(format!("{name}: {} stored of {written}", got.len()));
        }
    }
    bad
}

fn config(connections: usize) -> EndpointConfig {
    EndpointConfig {
        max_log_line: 16 * 1024,
        max_log_connections: connections,
        max_connections_per_node: 4,
        discard_port: None,
        handshake_limit: HANDSHAKE_LIMIT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_nodes_log_through_the_box() {
    const NODES: usize = 20;
    const LINES: u64 = 5;
    let b = BoxSide::start(config(64), 100).await;
    for i in 0..NODES {
        wg::allocate(&b.lc, &format!("gen-{i:05}")).await;
    }
    let api = serve_provision(&b).await;
    let mut g = Generator::spawn(&api, "gen-", NODES, b.dir.path());
    let provisioned = g.answer(Duration::from_secs(60));
    assert!(provisioned.starts_with("provisioned 20"), "{provisioned}");
    wait_peers(&b, NODES as u64, Duration::from_secs(10)).await;
    let up = g.ask("up 20", Duration::from_secs(200));
    assert_eq!(field(&up, "established"), NODES as f64, "{up}");
    // 5 lines in a second from each node.
    g.ask("lines 300", Duration::from_secs(5));
    let until = appliance::clock::now() + Duration::from_secs(30);
    loop {
        let a = g.ask("report", Duration::from_secs(90));
        if g.report().iter().all(|(_, w, _)| *w >= LINES) || appliance::clock::now() > until {
            assert_eq!(field(&a, "pending"), 0.0, "{a}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    g.ask("quiet", Duration::from_secs(5));
    let a = g.ask("report", Duration::from_secs(90));
    assert_eq!(field(&a, "pending"), 0.0, "{a}");
    assert_eq!(field(&a, "resets"), 0.0, "{a}");
    let report = g.report();
    let written: u64 = report.iter().map(|r| r.1).sum();
    assert!(report.iter().all(|r| r.1 >= LINES), "{report:?}");
    assert!(
        wait_stored(&b, written, Duration::from_secs(20)).await,
        "stored {} of {written}",
        b.stats.log_lines_stored.get()
    );
    assert_eq!(mismatched(&b, &report).await, Vec::<String>::new());
    // Attributed to the address Provision gave each node.
    for (name, _, _) in &report {
        let stored = b.logbook.read(name, NodeLogQuery::default()).await.unwrap();
        let binding = b
            .store
            .get(appliance::model::Kind::ServerBinding, name)
            .unwrap()
            .unwrap();
        let appliance::model::Object::ServerBinding(binding) = binding.object else {
            panic!("{name}: no binding");
        };
        let addr = binding.spec.siderolink.unwrap().address;
        let addr = addr.split('/').next().unwrap();
        assert!(stored.iter().all(|r| r.address == addr), "{name}");
    }
    assert_eq!(b.stats.log_lines.get(), written);
    assert_eq!(b.stats.log_lines_dropped.get(), 0);
    assert_eq!(b.stats.spoofed.get(), 0);
    assert!(b.stats.handshakes.get() >= NODES as u64);
}

fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// CPU seconds (user + system) of this process: the box's side.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// Resident set of this process, KiB.
fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `scripts/bench siderolink` (ignored in normal runs). `SL_LOAD_PEERS` (10000) nodes
/// allocated and provisioned; steps of `SL_LOAD_STEPS` (`100,1000,10000`) active nodes held
/// `SL_LOAD_IDLE_SECS` (60) at Talos's idle traffic (keepalive 25 s, 3 lines a minute); at
/// 100 nodes first the line rate steps (5 s each, doubling from 1,000/s) until one loses
/// lines or falls behind; last a handshake flood (`SL_LOAD_FLOOD_RATE`, 20000/s, 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench siderolink"]
async fn bench_siderolink_at_scale() {
    let peers = env_or("SL_LOAD_PEERS", 10_000) as usize;
    let idle = env_or("SL_LOAD_IDLE_SECS", 60);
    let flood_rate = env_or("SL_LOAD_FLOOD_RATE", 20_000);
    let steps: Vec<usize> = std::env::var("SL_LOAD_STEPS")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .filter(|s| *s <= peers)
        .collect();
    // One log connection per node (the generator opens no event connection); sized to the
    // nodes so that a run above the default's 10,240 nodes is not refused.
    let b = BoxSide::start(config(peers + 64), 5000).await;
    let rss_start = rss_kib();
    let t = appliance::clock::now();
    for i in 0..peers {
        wg::allocate(&b.lc, &format!("load-{i:05}")).await;
    }
    println!(
        "siderolink: allocated {peers} servers in {:.1} s (lifecycle, 5 transactions each) [load {}]",
        t.elapsed().as_secs_f64(),
        load()
    );
    let api = serve_provision(&b).await;
    let rss_allocated = rss_kib();
    let mut g = Generator::spawn(&api, "load-", peers, b.dir.path());
    let a = g.answer(Duration::from_secs(3600));
    let secs = field(&a, "secs");
    println!(
        "siderolink: Provision API: {peers} nodes in {secs:.1} s, {:.0}/s (32 calls in flight) [load {}]",
        peers as f64 / secs,
        load()
    );
    wait_peers(&b, peers as u64, Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_configured = rss_kib();
    println!(
        "siderolink: RSS per configured peer (no handshake yet; an upper bound: includes what the Provision calls left, blocking threads and allocator arenas; MALLOC_ARENA_MAX={}) {:.1} KiB ({peers} peers: {:.0} -> {:.0} MiB); a boringtun Tunn, made at a peer's first handshake, is {} bytes [load {}]",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into()),
        (rss_configured - rss_allocated) / peers as f64,
        rss_allocated / 1024.0,
        rss_configured / 1024.0,
        std::mem::size_of::<boringtun::noise::Tunn>(),
        load()
    );
    let _ = rss_start;

    let mut rate_done = false;
    let mut up_before = 0usize;
    let mut rss_before = rss_configured;
    for &k in &steps {
        let a = g.ask(&format!("up {k}"), Duration::from_secs(900));
        let rss_up = rss_kib();
        println!(
            "siderolink: {k} nodes up: {} of them connected, {} handshakes, {} cookie replies, in {:.1} s; RSS per handshaked and connected peer {:.1} KiB ({:.0} MiB total) [load {}]",
            field(&a, "established"),
            field(&a, "handshakes"),
            field(&a, "cookies"),
            field(&a, "secs"),
            (rss_up - rss_before) / (k - up_before) as f64,
            rss_up / 1024.0,
            load()
        );
        up_before = k;
        rss_before = rss_up;
        if k >= 100 && !rate_done {
            rate_done = true;
            rate_steps(&b, &mut g).await;
        }
        // Idle: 3 lines a minute each, keepalives every 25 s.
        let (lines0, stored0, dropped0) = (
            b.stats.log_lines.get(),
            b.stats.log_lines_stored.get(),
            b.stats.log_lines_dropped.get(),
        );
        g.ask("report", Duration::from_secs(120));
        let before: u64 = g.report().iter().map(|r| r.1).sum();
        let (cpu0, t0) = (cpu_secs(), appliance::clock::now());
        g.ask("lines 3", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(idle)).await;
        g.ask("quiet", Duration::from_secs(10));
        let cpu = (cpu_secs() - cpu0) / t0.elapsed().as_secs_f64();
        let a = g.ask("report", Duration::from_secs(120));
        let report = g.report();
        let written: u64 = report.iter().map(|r| r.1).sum::<u64>() - before;
        let all_stored = wait_stored(&b, stored0 + written, Duration::from_secs(60)).await;
        let bad = mismatched(&b, &report[100.min(report.len())..]).await;
        let lost = (written as i64) - (b.stats.log_lines_stored.get() - stored0) as i64;
        println!(
            "siderolink: {k} nodes idle {idle} s (keepalive 25 s, 3 lines/min each): held {} of {k} (session < 180 s, connection up), {written} lines written, {} decoded, lost {lost}, dropped {}, servers with a wrong log {}, reconnects {}, all stored {all_stored}; box CPU {:.3} s/s, RSS {:.0} MiB [load {}]",
            field(&a, "held"),
            b.stats.log_lines.get() - lines0,
            b.stats.log_lines_dropped.get() - dropped0,
            bad.len(),
            field(&a, "resets"),
            cpu,
            rss_kib() / 1024.0,
            load()
        );
        if !bad.is_empty() {
            println!(
                "siderolink: first wrong logs: {:?}",
                &bad[..bad.len().min(5)]
            );
        }
    }

    let h0 = b.stats.handshakes.get();
    let c0 = b.stats.cookies.get();
    let cpu0 = cpu_secs();
    let a = g.ask(&format!("flood 10 {flood_rate}"), Duration::from_secs(120));
    let secs = field(&a, "secs");
    let done = (b.stats.handshakes.get() - h0) as f64;
    let cpu = cpu_secs() - cpu0;
    println!(
        "siderolink: handshake flood from {} provisioned nodes (fresh initiations, cookies honoured): offered {:.0}/s, box completed {:.0} handshakes/s, {:.0} cookie replies/s, generator got {:.0} responses/s; box CPU {:.2} s/s, {:.0} handshakes per box CPU-second [load {}]",
        up_before,
        field(&a, "sent") / secs,
        done / secs,
        (b.stats.cookies.get() - c0) as f64 / secs,
        field(&a, "responses") / secs,
        cpu / secs,
        done / cpu.max(0.01),
        load()
    );
}

/// At 100 active nodes: offered line rates doubling from 1,000/s, 5 s each, until one is
/// not all stored or the box falls behind (the lines then wait in the nodes' sockets: the
/// rate achieved is lines acknowledged over the time until all were).
async fn rate_steps(b: &BoxSide, g: &mut Generator) {
    let mut best = 0.0f64;
    let mut lps = 1000u64;
    loop {
        g.ask("report", Duration::from_secs(120));
        let before: u64 = g.report().iter().map(|r| r.1).sum();
        let (stored0, dropped0, refused0) = (
            b.stats.log_lines_stored.get(),
            b.stats.log_lines_dropped.get(),
            b.stats.log_errors.get(),
        );
        let (cpu0, t0) = (cpu_secs(), appliance::clock::now());
        g.ask(&format!("rate 100 {lps}"), Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(5)).await;
        g.ask("quiet", Duration::from_secs(10));
        g.ask("report", Duration::from_secs(120));
        let written = g.report().iter().map(|r| r.1).sum::<u64>() - before;
        let stored = wait_stored(b, stored0 + written, Duration::from_secs(30)).await;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        let achieved = written as f64 / secs;
        let dropped = b.stats.log_lines_dropped.get() - dropped0;
        let refused = b.stats.log_errors.get() - refused0;
        // Kept up: the offered lines were all written (the generator kept its schedule)
        // and acknowledged and stored within a second of the 5 s window.
        let offered = lps as f64 * 5.0;
        let ok = stored
            && dropped == 0
            && refused == 0
            && written as f64 >= 0.95 * offered
            && secs <= 6.0;
        println!(
            "siderolink: 100 nodes at {lps} lines/s offered: {written} lines in {secs:.1} s ({achieved:.0}/s), all stored {stored}, dropped {dropped}, refused {refused}; box CPU {:.3} s per 1,000 lines/s ({:.2} s/s) [load {}]",
            cpu / secs / (achieved / 1000.0),
            cpu / secs,
            load()
        );
        if !ok {
            break;
        }
        best = lps as f64;
        lps *= 2;
        if lps > 256_000 {
            break;
        }
    }
    println!(
        "siderolink: highest rate with 100 nodes without loss and without falling behind: {best:.0} lines/s [load {}]",
        load()
    );
}
