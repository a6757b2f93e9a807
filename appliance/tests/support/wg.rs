//! Shared by the SideroLink netns tests: nodes in network namespaces (names start with
//! `sl`) joined to the root namespace by veths, running Debian's `wireguard-go` configured
//! with `wg` as Talos configures its link, and a TCP sender (python3) inside them, and
//! Talos's install events published through the tunnel (`publish_install_events`, run by a
//! test binary re-executed inside a node's namespace). Root only: [`TOOLS`] and [`NEEDS`]
//! for `prereq::missing_root_or`. Against the real `appliance serve`: a data dir with a
//! server allocated before the box starts ([`data_dir_allocated`]) and a node provisioned
//! through the box's Provision API as Talos does, its tunnel up ([`provision`]).
#![allow(dead_code)]

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use appliance::reconcile::Lifecycle;
use appliance::reconcile::apply::{AllocateInput, NewServer};
use appliance::reconcile::lifecycle::Event;
use appliance::reconcile::power::LoggedPower;
use appliance::store::Store;
use appliance_rpc::events::EventRequest;
use appliance_rpc::events::event_sink_service_client::EventSinkServiceClient;
use appliance_rpc::siderolink::provision_service_client::ProvisionServiceClient;
use appliance_rpc::siderolink::{ProvisionRequest, ProvisionResponse};
use appliance_rpc::{common, machine};
use prost::Message;

pub const PY: &str = "/usr/bin/python3";

/// The tools these tests run, for `prereq::missing_root_or(TOOLS, NEEDS)`.
pub const TOOLS: &[(&str, &[&str])] = &[
    ("wireguard-go", &["--version"]),
    ("wg", &["--version"]),
    ("ip", &["-V"]),
    (PY, &["--version"]),
];
/// What root is needed for.
pub const NEEDS: &str = "network namespaces and wireguard-go";

pub fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run_in(ns: &str, cmd: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(cmd);
    run(&full)
}

/// Namespaces (and the veths inside, whose peers go with them) and wireguard-go
/// processes, removed on drop.
#[derive(Default)]
pub struct Lab {
    namespaces: Vec<String>,
    procs: Vec<Child>,
    sockets: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

pub struct Node {
    pub ns: String,
    /// The root side of the node's veth (where the endpoint listens for it).
    pub outside: std::net::Ipv4Addr,
    pub ifname: String,
    pub private: String,
    pub public: String,
}

impl Lab {
    /// A namespace joined to the root namespace by a veth: `198.18.<net>.2` inside,
    /// `198.18.<net>.1` on the root side (where the endpoint listens).
    pub fn node(&mut self, tag: &str, net: u8) -> Node {
        self.node_in(tag, std::net::Ipv4Addr::new(198, 18, net, 0))
    }

    /// A namespace joined to the root namespace by a veth in the /30 starting at `base`:
    /// `base+2` inside, `base+1` on the root side. `tag` names the namespace (`sl<tag>`),
    /// the veths (`slo<tag>`, `sli<tag>`) and the WireGuard link (`wg<tag>`): at most 12
    /// characters.
    pub fn node_in(&mut self, tag: &str, base: std::net::Ipv4Addr) -> Node {
        let [a, b, c, d] = base.octets();
        let (outside_ip, inside_ip) = (
            std::net::Ipv4Addr::new(a, b, c, d + 1),
            std::net::Ipv4Addr::new(a, b, c, d + 2),
        );
        let ns = format!("sl{tag}");
        let (outside, inside) = (format!("slo{tag}"), format!("sli{tag}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run_in(&ns, &["ip", "link", "set", "lo", "up"]);
        run(&[
            "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        run(&["ip", "link", "set", &inside, "netns", &ns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{outside_ip}/30"),
            "dev",
            &outside,
        ]);
        run(&["ip", "link", "set", &outside, "up"]);
        run_in(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{inside_ip}/30"),
                "dev",
                &inside,
            ],
        );
        run_in(&ns, &["ip", "link", "set", &inside, "up"]);
        let private = run(&["wg", "genkey"]).trim().to_string();
        let public = {
            use std::io::Write;
            let mut c = Command::new("wg")
                .arg("pubkey")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin
                .take()
                .unwrap()
                .write_all(private.as_bytes())
                .unwrap();
            String::from_utf8(c.wait_with_output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_string()
        };
        Node {
            ns,
            outside: outside_ip,
            ifname: format!("wg{tag}"),
            private,
            public,
        }
    }

    /// Starts wireguard-go in the node's namespace as Talos configures its link: peer =
    /// the box, AllowedIPs = the server address /128, keepalive 25 s, MTU 1280.
    pub fn wireguard(
        &mut self,
        n: &Node,
        dir: &Path,
        server_key: &str,
        endpoint: SocketAddr,
        addr: &str,
        server: Ipv6Addr,
    ) {
        let log = std::fs::File::create(dir.join(format!("{}.log", n.ifname))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns, "wireguard-go", "-f", &n.ifname])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push(child);
        self.sockets
            .push(format!("/var/run/wireguard/{}.sock", n.ifname));
        let sock = format!("/var/run/wireguard/{}.sock", n.ifname);
        for _ in 0..100 {
            if Path::new(&sock).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_file = dir.join(format!("{}.key", n.ifname));
        std::fs::write(&key_file, &n.private).unwrap();
        run_in(
            &n.ns,
            &[
                "wg",
                "set",
                &n.ifname,
                "private-key",
                key_file.to_str().unwrap(),
                "peer",
                server_key,
                "endpoint",
                &endpoint.to_string(),
                "allowed-ips",
                &format!("{server}/128"),
                "persistent-keepalive",
                "25",
            ],
        );
        run_in(
            &n.ns,
            &["ip", "addr", "add", addr, "dev", &n.ifname, "nodad"],
        );
        run_in(
            &n.ns,
            &["ip", "link", "set", &n.ifname, "mtu", "1280", "up"],
        );
    }
}

impl Lab {
    /// Keeps `child` until the lab goes (killed on drop).
    pub fn adopt(&mut self, child: Child) {
        self.procs.push(child);
    }

    /// wireguard-go in the root namespace (benchmark peer): link `ifname` with `private`,
    /// one peer `peer` allowed `allowed`, address `addr`; returns its UDP port.
    pub fn root_wireguard(
        &mut self,
        ifname: &str,
        dir: &Path,
        private: &str,
        peer: &str,
        allowed: &str,
        addr: &str,
    ) -> u16 {
        let log = std::fs::File::create(dir.join(format!("{ifname}.log"))).unwrap();
        let child = Command::new("wireguard-go")
            .args(["-f", ifname])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push(child);
        let sock = format!("/var/run/wireguard/{ifname}.sock");
        self.sockets.push(sock.clone());
        for _ in 0..100 {
            if Path::new(&sock).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_file = dir.join(format!("{ifname}.key"));
        std::fs::write(&key_file, private).unwrap();
        let port = std::net::UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        run(&[
            "wg",
            "set",
            ifname,
            "private-key",
            key_file.to_str().unwrap(),
            "listen-port",
            &port.to_string(),
            "peer",
            peer,
            "allowed-ips",
            allowed,
        ]);
        run(&["ip", "addr", "add", addr, "dev", ifname, "nodad"]);
        run(&["ip", "link", "set", ifname, "mtu", "1280", "up"]);
        port
    }
}

/// Sends `payload` over TCP to `[to]:4001` from inside `ns` (source address `from` when
/// given); true if the connection was made.
pub fn send_tcp(ns: &str, from: Option<Ipv6Addr>, to: Ipv6Addr, payload: &str) -> bool {
    send_tcp_within(ns, from, to, payload, 4)
}

/// [`send_tcp`] giving the connection `secs` seconds (a handshake answered by a cookie
/// completes on wireguard-go's next attempt, 5 s later).
pub fn send_tcp_within(
    ns: &str,
    from: Option<Ipv6Addr>,
    to: Ipv6Addr,
    payload: &str,
    secs: u32,
) -> bool {
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_INET6)\ns.settimeout({secs})\n{}\ntry:\n    s.connect(('{to}',4001))\nexcept OSError:\n    sys.exit(3)\ns.sendall(sys.argv[1].encode())\ns.close()\n",
        from.map(|a| format!("s.bind(('{a}',0))"))
            .unwrap_or_default()
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, PY, "-c", &script, payload])
        .output()
        .unwrap();
    out.status.success()
}

/// `dir/data`, whose store holds `name` allocated by the real lifecycle (on the same store,
/// closed again before a box starts on it).
pub async fn data_dir_allocated(dir: &Path, name: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("state.redb")).unwrap();
    let (lc, _reconcile) = Lifecycle::new(
        store,
        appliance::config::Config::default().lifecycle,
        Arc::new(LoggedPower),
        None,
    );
    allocate(&lc, name).await;
    data
}

/// `node` calls the box's Provision API at `endpoint` as Talos does (as `uuid`, with its
/// key) and brings its tunnel up with the answer (files in `dir`). The box's overlay
/// address and the answer.
pub async fn provision(
    lab: &mut Lab,
    node: &Node,
    endpoint: String,
    uuid: &str,
    dir: &Path,
) -> (Ipv6Addr, ProvisionResponse) {
    let mut client = ProvisionServiceClient::connect(endpoint).await.unwrap();
    let p = client
        .provision(ProvisionRequest {
            node_uuid: uuid.into(),
            node_public_key: node.public.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let server: Ipv6Addr = p.server_address.parse().unwrap();
    let ep: SocketAddr = p.server_endpoint[0].parse().unwrap();
    lab.wireguard(
        node,
        dir,
        &p.server_public_key,
        ep,
        &p.node_address_prefix,
        server,
    );
    (server, p)
}

/// [`send_tcp`] from `ns` to `[server]:4001` off the async runtime; panics when it fails.
pub async fn send_lines(ns: &str, server: Ipv6Addr, payload: String) {
    let ns = ns.to_string();
    let sent = tokio::task::spawn_blocking(move || send_tcp(&ns, None, server, &payload))
        .await
        .unwrap();
    assert!(sent, "TCP through the tunnel to [{server}]:4001 failed");
}

/// Registers, accepts, wipes and allocates `name` through the real lifecycle.
pub async fn allocate(lc: &Lifecycle, name: &str) {
    lc.register(NewServer {
        name: name.into(),
        hostname: None,
        hardware: Default::default(),
        key: None,
        junk: None,
    })
    .await
    .unwrap();
    for e in [Event::Accept, Event::WipeStarted, Event::Wiped] {
        lc.fire(name, e, "test").await.unwrap();
    }
    lc.allocate(AllocateInput {
        server_class: None,
        server: Some(name.into()),
        owner: format!("default/{name}"),
        bootstrap_data: String::new(),
        config_patches: vec![],
        environment: None,
    })
    .await
    .unwrap();
}

/// The box's side of these tests, in this test process: a store with the real lifecycle,
/// a fresh SideroLink identity, the userspace endpoint on `0.0.0.0:<port>` following the
/// ServerBindings (`peers::follow`, as `serve` runs it) and its decoded lines written to
/// the store by the real log book. Stops on drop.
pub struct BoxSide {
    pub dir: tempfile::TempDir,
    pub store: appliance::store::Store,
    pub lc: Lifecycle,
    pub identity: std::sync::Arc<appliance::siderolink::identity::Identity>,
    pub prefix: appliance::protocol::siderolink::address::Prefix,
    pub port: u16,
    pub stats: std::sync::Arc<appliance::siderolink::endpoint::Stats>,
    pub logbook: appliance::siderolink::logbook::LogBook,
    pub logs:
        tokio::sync::broadcast::Receiver<std::sync::Arc<appliance::siderolink::endpoint::NodeLog>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for BoxSide {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl BoxSide {
    /// Starts the endpoint with `config` (ring of `per_server` lines per server).
    pub async fn start(
        config: appliance::siderolink::endpoint::EndpointConfig,
        per_server: usize,
    ) -> BoxSide {
        use appliance::siderolink::{endpoint, identity, logbook, peers};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let store = appliance::store::Store::open(&dir.path().join("state.redb")).unwrap();
        let (lc, _reconcile) = Lifecycle::new(
            store.clone(),
            appliance::config::Config::default().lifecycle,
            Arc::new(appliance::reconcile::power::LoggedPower),
            None,
        );
        let mut random = [0u8; 64];
        getrandom::fill(&mut random).unwrap();
        let identity = Arc::new(identity::Identity::generate(random));
        let prefix = identity.prefix();
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let stats: Arc<endpoint::Stats> = Arc::default();
        let endpoint =
            endpoint::Endpoint::new(socket, identity.clone(), &config, 11, stats.clone());
        let logs = endpoint.subscribe_logs();
        let book = logbook::LogBook::new(store.clone(), per_server, stats.clone());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (peers_tx, peers_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
        tokio::spawn(peers::follow(
            store.clone(),
            prefix,
            peers_tx,
            shutdown.clone(),
        ));
        tokio::spawn(
            book.clone()
                .record(endpoint.subscribe_logs(), shutdown.clone()),
        );
        tokio::spawn(endpoint.run(peers_rx, shutdown));
        BoxSide {
            dir,
            store,
            lc,
            identity,
            prefix,
            port,
            stats,
            logbook: book,
            logs,
            stop,
        }
    }

    /// Allocates `name`, binds `node`'s key to it (Provision) and returns its overlay
    /// address.
    pub async fn provision(&self, name: &str, node: &Node, host: u8) -> Ipv6Addr {
        allocate(&self.lc, name).await;
        appliance::siderolink::provision::bind_node(
            &self.store,
            self.prefix,
            name,
            &node.public,
            vec![[host; 8]],
        )
        .unwrap()
    }

    /// Waits (up to 10 s) until the endpoint holds `n` peers.
    pub async fn wait_peers(&self, n: u64) {
        for _ in 0..100 {
            if self.stats.peers.get() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("endpoint holds {} peers, not {n}", self.stats.peers.get());
    }

    /// Starts wireguard-go in `node`'s namespace towards this endpoint with `addr`.
    pub fn connect(&self, lab: &mut Lab, node: &Node, addr: Ipv6Addr) {
        lab.wireguard(
            node,
            self.dir.path(),
            &self.identity.public_key_base64(),
            SocketAddr::new(node.outside.into(), self.port),
            &format!("{addr}/64"),
            self.prefix.server_address(),
        );
    }
}

fn any<M: Message>(id: &str, name: &str, m: &M) -> EventRequest {
    EventRequest {
        data: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/machine.{name}"),
            value: m.encode_to_vec(),
        }),
        id: id.into(),
        actor_id: String::new(),
    }
}

/// Plays Talos's event sink client through the tunnel to `[to]:4002` (run inside the node's
/// namespace): config saved, install phase, the node's `hostname` and `address`, the install
/// sequence done (Talos's reboot error), then the install phase again as Talos resends its
/// backlog after a reconnect (which must not undo TalosInstalled). Panics on a refusal.
pub async fn publish_install_events(to: &str, hostname: &str, address: &str) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://[{to}]:4002"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the event sink through the tunnel");
    let mut client = EventSinkServiceClient::new(channel);
    let phase = |p: &str| machine::PhaseEvent {
        phase: p.into(),
        action: 0,
    };
    let done = machine::SequenceEvent {
        sequence: "install".into(),
        action: 0,
        error: Some(common::Error {
            code: 0,
            message: "unix.Reboot(0x1234567)".into(),
            details: vec![],
        }),
    };
    let addresses = machine::AddressEvent {
        hostname: hostname.into(),
        addresses: vec![address.into()],
    };
    for req in [
        any("e1", "PhaseEvent", &phase("saveConfig")),
        any("e2", "PhaseEvent", &phase("install")),
        any("e3", "AddressEvent", &addresses),
        any("e4", "SequenceEvent", &done),
        any("e2", "PhaseEvent", &phase("install")),
    ] {
        client.publish(req).await.expect("event accepted");
    }
}
