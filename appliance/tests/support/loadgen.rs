//! The SideroLink load generator of `tests/siderolink_load.rs`: many simulated Talos nodes
//! in one process (so that 10,000 of them fit where 10,000 wireguard-go processes do not).
//!
//! Each simulated node is what a Talos node is to the box on the overlay, no less:
//! - its own WireGuard key (x25519, random) and a boringtun `Tunn` towards the box's key
//!   with Talos's persistent keepalive (25 s), its own sender index, timers driven every
//!   250 ms (handshake retries, rekey, keepalives), cookie replies handled as any peer does;
//! - provisioned through the box's real Provision API (`sidero.link.ProvisionService`
//!   over gRPC), which returns its overlay address, the box's key and WireGuard endpoint:
//!   the node uses those answers, nothing configured beside them;
//! - its own TCP/IPv6 stack (smoltcp, MTU 1280 through the box's `overlay::Queues` device)
//!   on that address, holding one TCP connection to `[<prefix>::1]:4001` as Talos's log
//!   sender does, and writing Talos JSON log lines (`{"clock":…,"msg":"[talos] NAME line
//!   K",…}`) at the rate it is told; a line that does not fit the socket waits (as Talos
//!   buffers), it is never dropped here; a connection the box closes is reconnected and
//!   counted.
//!
//! All nodes share one UDP socket (one source address and port, as nodes behind one NAT).
//! Not simulated: the event sink (gRPC 4002) Talos also holds open.
//!
//! Driven by line commands on stdin, answered by `load: …` lines on stdout (the parent
//! test measures the box between them):
//! `up K` activate nodes 0..K (at most 1,000 new ones a second) and wait until their
//! connections are established; `lines LPM` every active node sends LPM lines a minute;
//! `rate P LPS` nodes 0..P send LPS lines a second in total, the others none; `quiet`;
//! `report` wait until every written line is acknowledged by the box's TCP, then write
//! "name lines" per node to the report file; `flood SECS RATE` every active node sends
//! fresh handshake initiations, RATE a second in total, for SECS (responses are counted,
//! not used: the nodes' sessions are spent after it); `quit`.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, Write};
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use appliance::siderolink::overlay::{LOG_PORT, Queues};
use appliance_rpc::siderolink::ProvisionRequest;
use appliance_rpc::siderolink::provision_service_client::ProvisionServiceClient;
use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

/// Talos's persistent keepalive on the SideroLink peer (seconds).
pub const KEEPALIVE: u16 = 25;
/// New nodes activated per second by `up`.
const ACTIVATE_PER_SEC: u64 = 1000;
/// Each node's TCP send buffer (lines wait in it until acknowledged).
const TX_BUF: usize = 32 * 1024;

/// One log line as Talos's kernel log sender writes it (one JSON object and a newline).
pub fn talos_line(name: &str, k: u64) -> String {
    format!(
        "{{\"clock\":{k},\"facility\":\"kern\",\"msg\":\"[talos] {name} line {k}\",\"priority\":\"info\",\"seq\":{k},\"talos-level\":\"info\",\"talos-time\":\"2026-12-06T03:00:00Z\"}}\n"
    )
}

/// The message of line `k` of `name`, as the box stores it.
pub fn line_msg(name: &str, k: u64) -> String {
    format!("[talos] {name} line {k}")
}

/// What Provision answered a node.
pub struct Provisioned {
    pub name: String,
    pub secret: StaticSecret,
    pub address: Ipv6Addr,
    pub server: Ipv6Addr,
    pub endpoint: SocketAddr,
    pub box_key: PublicKey,
}

/// Provisions `names` through the Provision API at `api` (`http://host:port`), 32 calls in
/// flight, each node with a fresh random key.
pub fn provision(api: &str, names: Vec<String>) -> Vec<Provisioned> {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ProvisionServiceClient::connect(api.to_string())
            .await
            .expect("Provision API");
        let calls = names.into_iter().map(|name| {
            let mut client = client.clone();
            async move {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).unwrap();
                let secret = StaticSecret::from(key);
                let public = base64::engine::general_purpose::STANDARD
                    .encode(PublicKey::from(&secret).as_bytes());
                let r = client
                    .provision(ProvisionRequest {
                        node_uuid: name.clone(),
                        node_public_key: public,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("Provision {name}: {e}"))
                    .into_inner();
                let address = r
                    .node_address_prefix
                    .split('/')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("address {}", r.node_address_prefix));
                let box_key =
                    appliance::siderolink::identity::parse_public_key(&r.server_public_key)
                        .expect("server_public_key");
                Provisioned {
                    name,
                    secret,
                    address,
                    server: r.server_address.parse().expect("server_address"),
                    endpoint: r.server_endpoint[0].parse().expect("server_endpoint"),
                    box_key: PublicKey::from(box_key.to_bytes()),
                }
            }
        });
        futures_util::stream::iter(calls)
            .buffer_unordered(32)
            .collect()
            .await
    })
}

struct Node {
    name: String,
    tunn: Tunn,
    iface: Interface,
    queues: Queues,
    sockets: SocketSet<'static>,
    tcp: Option<SocketHandle>,
    /// One line every this long (None: silent).
    interval: Option<Duration>,
    next_line: Instant,
    /// Lines due that did not fit the socket yet.
    owed: u64,
    /// Lines written into the socket (numbered from 0).
    written: u64,
    /// Connections the box closed or reset (each reconnected).
    resets: u64,
    wake_at: Option<Instant>,
    reconnect_at: Option<Instant>,
    local_port: u16,
}

/// The generator; [`Gen::serve`] runs the command loop.
pub struct Gen {
    sock: UdpSocket,
    to: SocketAddr,
    server: Ipv6Addr,
    nodes: Vec<Node>,
    active: usize,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
    epoch: Instant,
    buf: Vec<u8>,
    rx: Vec<u8>,
    next_timers: Instant,
    timer_cursor: usize,
    flooding: bool,
    /// Handshakes completed (responses decapsulated), cookie replies received, handshake
    /// responses counted during a flood.
    pub handshakes: u64,
    pub cookies: u64,
    pub flood_responses: u64,
}

fn smol(epoch: Instant, t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(t.saturating_duration_since(epoch).as_micros() as i64)
}

impl Gen {
    /// A generator for the provisioned nodes (all towards the same box).
    pub fn new(nodes: Vec<Provisioned>) -> Gen {
        let first = nodes.first().expect("at least one node");
        let (to, server) = (first.endpoint, first.server);
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let s2 = socket2::SockRef::from(&sock);
        let _ = s2.set_recv_buffer_size(8 << 20);
        let _ = s2.set_send_buffer_size(8 << 20);
        let epoch = appliance::clock::now();
        let nodes = nodes
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut queues = Queues::default();
                let mut config = Config::new(HardwareAddress::Ip);
                config.random_seed = i as u64 + 1;
                let mut iface = Interface::new(config, &mut queues, smol(epoch, epoch));
                iface.update_ip_addrs(|a| {
                    let _ = a.push(IpCidr::new(IpAddress::Ipv6(p.address), 64));
                });
                Node {
                    name: p.name,
                    tunn: Tunn::new(p.secret, p.box_key, None, Some(KEEPALIVE), i as u32, None),
                    iface,
                    queues,
                    sockets: SocketSet::new(Vec::new()),
                    tcp: None,
                    interval: None,
                    next_line: epoch,
                    owed: 0,
                    written: 0,
                    resets: 0,
                    wake_at: None,
                    reconnect_at: None,
                    local_port: 40000 + (i % 20000) as u16,
                }
            })
            .collect();
        Gen {
            sock,
            to,
            server,
            nodes,
            active: 0,
            heap: BinaryHeap::new(),
            dirty: Vec::new(),
            epoch,
            buf: vec![0; 65_600],
            rx: vec![0; 65_600],
            next_timers: epoch,
            timer_cursor: 0,
            flooding: false,
            handshakes: 0,
            cookies: 0,
            flood_responses: 0,
        }
    }

    fn connect(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(h) = n.tcp.take() {
            n.sockets.remove(h);
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1024]),
            tcp::SocketBuffer::new(vec![0; TX_BUF]),
        );
        n.local_port = if n.local_port >= 60000 {
            40000
        } else {
            n.local_port + 1
        };
        s.connect(
            n.iface.context(),
            (IpAddress::Ipv6(self.server), LOG_PORT),
            n.local_port,
        )
        .expect("connect");
        n.tcp = Some(n.sockets.add(s));
        self.dirty.push(i);
    }

    fn send(sock: &UdpSocket, to: SocketAddr, d: &[u8]) {
        // A full socket buffer drops the datagram, as a network would.
        let _ = sock.send_to(d, to);
    }

    /// Writes due lines, runs the node's stack, encrypts its output, schedules its wake.
    fn service(&mut self, i: usize, now: Instant) {
        let Gen {
            nodes,
            sock,
            to,
            buf,
            heap,
            epoch,
            ..
        } = self;
        let n = &mut nodes[i];
        if let Some(iv) = n.interval {
            while n.next_line <= now {
                n.owed += 1;
                n.next_line += iv;
            }
        }
        let t = smol(*epoch, now);
        let mut reconnect = false;
        for round in 0..2 {
            if let Some(h) = n.tcp {
                let s = n.sockets.get_mut::<tcp::Socket>(h);
                if s.may_send() {
                    while n.owed > 0 {
                        let line = talos_line(&n.name, n.written);
                        if s.send_capacity() - s.send_queue() < line.len() {
                            break;
                        }
                        let _ = s.send_slice(line.as_bytes());
                        n.owed -= 1;
                        n.written += 1;
                    }
                } else if matches!(
                    s.state(),
                    tcp::State::Closed | tcp::State::CloseWait | tcp::State::TimeWait
                ) && round == 0
                {
                    reconnect = true;
                }
            }
            n.iface.poll(t, &mut n.queues, &mut n.sockets);
        }
        while let Some(p) = n.queues.tx.pop_front() {
            if let TunnResult::WriteToNetwork(d) = n.tunn.encapsulate(&p, buf) {
                Self::send(sock, *to, d);
            }
        }
        let mut next = n
            .iface
            .poll_delay(t, &n.sockets)
            .map(|d| now + Duration::from_micros(d.total_micros()).max(Duration::from_millis(1)));
        if n.interval.is_some() {
            next = Some(next.map_or(n.next_line, |x| x.min(n.next_line)));
        }
        if reconnect {
            // As Talos's sender: count it, reconnect a second later.
            n.resets += 1;
            if let Some(h) = n.tcp.take() {
                n.sockets.remove(h);
            }
            n.reconnect_at = Some(now + Duration::from_secs(1));
            next = Some(now + Duration::from_secs(1));
        }
        if let Some(r) = n.reconnect_at
            && r <= now
        {
            n.reconnect_at = None;
            n.wake_at = None;
            self.connect(i);
            return;
        }
        if let Some(at) = next
            && n.wake_at.is_none_or(|w| w > at || w <= now)
        {
            n.wake_at = Some(at);
            heap.push(Reverse((at, i)));
        }
    }

    fn receive(&mut self) {
        while let Ok((len, _)) = self.sock.recv_from(&mut self.rx) {
            let Gen {
                nodes,
                sock,
                to,
                buf,
                rx,
                dirty,
                ..
            } = self;
            let d = &rx[..len];
            let idx = match d.first() {
                Some(2) => d.get(8..12),
                Some(3 | 4) => d.get(4..8),
                _ => None,
            };
            let Some(i) = idx.map(|b| (u32::from_le_bytes(b.try_into().unwrap()) >> 8) as usize)
            else {
                continue;
            };
            let Some(n) = nodes.get_mut(i) else {
                continue;
            };
            match d[0] {
                2 if self.flooding => {
                    self.flood_responses += 1;
                    continue;
                }
                3 => self.cookies += 1,
                _ => {}
            }
            let response = d[0] == 2;
            match n.tunn.decapsulate(Some(to.ip()), d, buf) {
                TunnResult::WriteToNetwork(p) => {
                    if response {
                        self.handshakes += 1;
                    }
                    Self::send(sock, *to, p);
                    while let TunnResult::WriteToNetwork(p) = n.tunn.decapsulate(None, &[], buf) {
                        Self::send(sock, *to, p);
                    }
                }
                TunnResult::WriteToTunnelV6(p, _) => {
                    n.queues.rx.push_back(p.to_vec());
                    dirty.push(i);
                }
                _ => {}
            }
        }
    }

    /// `update_timers` of a quarter of the active nodes (each node every second).
    fn timers(&mut self) {
        let quarter = self.active.div_ceil(4);
        for _ in 0..quarter {
            if self.active == 0 {
                break;
            }
            let i = self.timer_cursor % self.active;
            self.timer_cursor = (i + 1) % self.active;
            let n = &mut self.nodes[i];
            if let TunnResult::WriteToNetwork(d) = n.tunn.update_timers(&mut self.buf) {
                Self::send(&self.sock, self.to, d);
            }
        }
    }

    /// One turn of the loop: timers, datagrams, nodes to service; waits at most `max`.
    fn turn(&mut self, max: Duration) {
        let now = appliance::clock::now();
        if now >= self.next_timers {
            self.timers();
            self.next_timers = now + Duration::from_millis(250);
        }
        let _ = self.sock.set_nonblocking(true);
        self.receive();
        let now = appliance::clock::now();
        while let Some(i) = self.dirty.pop() {
            self.service(i, now);
        }
        while let Some(Reverse((at, i))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.nodes[i].wake_at == Some(at) {
                self.nodes[i].wake_at = None;
                self.service(i, now);
            }
        }
        if !self.dirty.is_empty() {
            return;
        }
        let mut until = (now + max).min(self.next_timers);
        if let Some(Reverse((at, _))) = self.heap.peek() {
            until = until.min(*at);
        }
        let wait = until.saturating_duration_since(appliance::clock::now());
        if wait > Duration::ZERO {
            let _ = self.sock.set_nonblocking(false);
            let _ = self.sock.set_read_timeout(Some(wait));
            if let Ok((len, src)) = self.sock.peek_from(&mut self.rx) {
                let _ = (len, src);
            }
        }
    }

    fn established(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.tcp
            .is_some_and(|h| n.sockets.get::<tcp::Socket>(h).state() == tcp::State::Established)
    }

    fn acked(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.owed == 0
            && n.tcp
                .is_some_and(|h| n.sockets.get::<tcp::Socket>(h).send_queue() == 0)
    }

    fn set_lines(&mut self, nodes: std::ops::Range<usize>, interval: Option<Duration>) {
        let now = appliance::clock::now();
        for i in nodes {
            let n = &mut self.nodes[i];
            n.interval = interval;
            // Spread the nodes' phases over one interval.
            n.next_line =
                now + interval.map_or(Duration::ZERO, |iv| iv.mul_f64((i % 997) as f64 / 997.0));
            self.dirty.push(i);
        }
    }

    fn cpu_secs() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    /// Runs commands from `commands` until `quit`, answering on stdout.
    pub fn serve(mut self, commands: std::sync::mpsc::Receiver<String>, report: &std::path::Path) {
        let say = |s: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "load: {s}");
            let _ = out.flush();
        };
        loop {
            let Ok(cmd) = commands.try_recv() else {
                self.turn(Duration::from_millis(20));
                continue;
            };
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let num = |k: usize| -> u64 { words.get(k).and_then(|w| w.parse().ok()).unwrap_or(0) };
            match words.first().copied() {
                Some("up") => {
                    let target = (num(1) as usize).min(self.nodes.len());
                    let start = appliance::clock::now();
                    let from = self.active;
                    let (c0, h0) = (self.cookies, self.handshakes);
                    while self.active < target {
                        let allowed = from
                            + (start.elapsed().as_millis() as u64 * ACTIVATE_PER_SEC / 1000)
                                as usize
                            + 1;
                        while self.active < target.min(allowed) {
                            let i = self.active;
                            self.active += 1;
                            self.connect(i);
                        }
                        self.turn(Duration::from_millis(5));
                    }
                    let deadline = start + Duration::from_secs(180);
                    while appliance::clock::now() < deadline
                        && !(0..target).all(|i| self.established(i))
                    {
                        for _ in 0..20 {
                            self.turn(Duration::from_millis(10));
                        }
                    }
                    let est = (0..target).filter(|&i| self.established(i)).count();
                    say(format!(
                        "up {target} established {est} handshakes {} cookies {} secs {:.1} gen_cpu {:.1}",
                        self.handshakes - h0,
                        self.cookies - c0,
                        start.elapsed().as_secs_f64(),
                        Self::cpu_secs()
                    ));
                }
                Some("lines") => {
                    let lpm = num(1);
                    let iv = (lpm > 0).then(|| Duration::from_secs(60).div_f64(lpm as f64));
                    self.set_lines(0..self.active, iv);
                    say("ok".into());
                }
                Some("rate") => {
                    let (p, lps) = ((num(1) as usize).min(self.active), num(2));
                    self.set_lines(0..self.active, None);
                    let iv = (lps > 0).then(|| Duration::from_secs(p as u64).div_f64(lps as f64));
                    self.set_lines(0..p, iv);
                    say("ok".into());
                }
                Some("quiet") => {
                    self.set_lines(0..self.active, None);
                    say("ok".into());
                }
                Some("report") => {
                    let start = appliance::clock::now();
                    while start.elapsed() < Duration::from_secs(60)
                        && !(0..self.active).all(|i| self.acked(i))
                    {
                        for _ in 0..20 {
                            self.turn(Duration::from_millis(10));
                        }
                    }
                    let pending = (0..self.active).filter(|&i| !self.acked(i)).count();
                    let held = (0..self.active)
                        .filter(|&i| {
                            self.established(i)
                                && self.nodes[i]
                                    .tunn
                                    .time_since_last_handshake()
                                    .is_some_and(|t| t < Duration::from_secs(180))
                        })
                        .count();
                    let mut text = String::new();
                    for n in &self.nodes[..self.active] {
                        text.push_str(&format!("{} {} {}\n", n.name, n.written, n.resets));
                    }
                    std::fs::write(report, text).unwrap();
                    let written: u64 = self.nodes.iter().map(|n| n.written).sum();
                    let resets: u64 = self.nodes.iter().map(|n| n.resets).sum();
                    say(format!(
                        "report written {written} pending {pending} held {held} of {} resets {resets} handshakes {} cookies {} gen_cpu {:.1}",
                        self.active,
                        self.handshakes,
                        self.cookies,
                        Self::cpu_secs()
                    ));
                }
                Some("flood") => {
                    let (secs, rate) = (num(1), num(2).max(1));
                    self.flooding = true;
                    let (c0, r0) = (self.cookies, self.flood_responses);
                    let start = appliance::clock::now();
                    let mut sent = 0u64;
                    let mut k = 0usize;
                    while start.elapsed() < Duration::from_secs(secs) && self.active > 0 {
                        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                        // At most 64 before the next turn (answers are read there).
                        for _ in 0..64 {
                            if sent >= due {
                                break;
                            }
                            let i = k % self.active;
                            k += 1;
                            let n = &mut self.nodes[i];
                            if let TunnResult::WriteToNetwork(d) =
                                n.tunn.format_handshake_initiation(&mut self.buf, true)
                            {
                                Self::send(&self.sock, self.to, d);
                            }
                            sent += 1;
                        }
                        self.turn(Duration::ZERO);
                    }
                    let secs = start.elapsed().as_secs_f64();
                    // Answers still in flight.
                    let settle = appliance::clock::now();
                    while settle.elapsed() < Duration::from_millis(500) {
                        self.turn(Duration::from_millis(10));
                    }
                    self.flooding = false;
                    say(format!(
                        "flood sent {sent} responses {} cookies {} secs {secs:.2} gen_cpu {:.1}",
                        self.flood_responses - r0,
                        self.cookies - c0,
                        Self::cpu_secs()
                    ));
                }
                Some("quit") | None => {
                    say("bye".into());
                    return;
                }
                Some(other) => say(format!("unknown command {other}")),
            }
        }
    }
}

/// The child's side: provisions `names` at `api`, reports, then serves stdin's commands.
pub fn child_main(api: &str, names: Vec<String>, report: &std::path::Path) {
    let start = appliance::clock::now();
    let count = names.len();
    let nodes = provision(api, names);
    println!(
        "load: provisioned {count} secs {:.1}",
        start.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        let _ = tx.send("quit".into());
    });
    Gen::new(nodes).serve(rx, report);
}
