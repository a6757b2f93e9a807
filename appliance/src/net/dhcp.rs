//! Tokio glue for the DHCP core (`protocol::dhcp`): UDP 67 (and 4011 in proxy mode) bound
//! to each provisioning interface (`dhcp.interfaces`, else `interface`), replies sent
//! broadcast / unicast / to the relay / as a frame to the client's hardware address as the
//! core decides, lease changes made durable before the reply that depends on them, and ARP
//! probes of the addresses handed out next.
//!
//! [`start`] binds the sockets and loads the leases; `app.rs` spawns [`DhcpService::run`],
//! which starts and joins:
//! - one receive loop per interface: its datagrams, read from udp/67 in batches
//!   (`recvmmsg`, `net::udp_batch`), go through the one shared `DhcpServer` (a mutex held
//!   for a batch's `handle_on` calls, never across an await), for that interface's box
//!   address; replies that change no lease (OFFER, NAK, INFORM ACK, proxy replies) go out
//!   at once, a batch's frames in one `sendmmsg`. It also reads the interface's ARP
//!   packets (packet socket) for the core's probe bookkeeping;
//! - the probe loop: every second, ARP probes for the addresses the core will hand out next
//!   (off the reply path: no request waits for a probe); an answered probe holds the
//!   address;
//! - the commit thread: receives (lease changes, reply) pairs, commits everything queued in
//!   ONE redb transaction (group commit: whatever arrived while the previous commit ran),
//!   and only then sends those replies (their frames in `sendmmsg` batches). A failed
//!   commit sends nothing (clients retry). On shutdown the queued changes are committed
//!   first.
//!
//! A reply for a hardware address ([`Destination::Link`]) is an IPv4/UDP datagram sent on
//! the interface's packet socket to the client's MAC, and so is a broadcast reply from port
//! 67 (to ff:ff:ff:ff:ff:ff, the frame the kernel would send: see `Link::send_frame`);
//! without a packet socket (no CAP_NET_RAW, not Ethernet) both go by UDP broadcast instead.
//!
//! Every datagram, reply, drop and probe is counted in [`DhcpCounters`] (shown on
//! `/metrics`).
//!
//! May touch: sockets (UDP, `net::udp_batch` and `net::packet`), the clock,
//! `Store::{dhcp_leases, commit_lease_changes}`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::MessageType;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::clock::WallClock;
use crate::config::{Config, DhcpMode};
use crate::error_chain;
use crate::metrics::{Counter, Labeled, Registry};
use crate::model::MacAddr;
use crate::net::iface::{self, Interface};
use crate::net::packet::PacketSocket;
use crate::net::tftp_root::TftpRoot;
use crate::net::udp_batch::{self, RecvBatch};
use crate::protocol::dhcp::{
    BootConfig, Decision, Destination, DhcpServer, DropReason, LeaseChange, Mode, Pool, Port,
    Reply, Reservation, ServerConfig, ServerConfigError, arch_name, lease, link,
};
use crate::store::{Store, StoreError};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// Largest batch of requests committed in one transaction.
const MAX_BATCH: usize = 4096;
/// Requests waiting for a commit before new ones are dropped (the client retries). A bound,
/// not an allocation: see [`commit_queue`].
const QUEUE_DEPTH: usize = 16384;
/// Frames handed to the packet socket in one `sendmmsg`.
const SEND_BATCH: usize = 64;
/// Batches read from udp/67 in one turn of a receive loop before its other sockets (ARP,
/// 4011, shutdown) get a look.
const RECV_TURN: usize = 8;
/// The receive buffer udp/67 asks for: room for bursts while the receive loop waits for a
/// core (see `udp_batch::set_recv_buffer`).
const RECV_BUFFER: usize = 4 << 20;
/// Client port for broadcast and unicast replies.
const CLIENT_PORT: u16 = 68;
/// How often the addresses handed out next are ARP-probed (see `DhcpServer::probe_targets`).
const PROBE_TICK: Duration = Duration::from_secs(1);

/// What the DHCP service did, for `/metrics`.
#[derive(Debug, Default)]
pub struct DhcpCounters {
    pub received: Counter,
    pub offers: Counter,
    pub acks: Counter,
    pub naks: Counter,
    /// Not a well-formed DHCP request.
    pub dropped_malformed: Counter,
    /// Well-formed, but not ours to answer (other server, not PXE in proxy mode, …).
    pub dropped_ignored: Counter,
    /// No pool for the client's subnet, or its pool is full.
    pub dropped_no_address: Counter,
    /// The commit queue was full (the client retries).
    pub dropped_overload: Counter,
    /// Requests whose lease commit failed (their replies were withheld).
    pub commit_failed: Counter,
    /// ARP probes sent for addresses about to be handed out.
    pub arp_probes: Counter,
    /// Probed addresses a host answered for (held, not handed out).
    pub arp_conflicts: Counter,
}

impl DhcpCounters {
    /// Adds the DHCP families to `/metrics`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_dhcp_received",
            "DHCP datagrams received (ports 67 and 4011)",
            self.received.clone(),
        );
        r.register(
            "appliance_dhcp_replies",
            "DHCP replies by message type",
            Labeled::new(
                "type",
                [
                    ("offer", self.offers.clone()),
                    ("ack", self.acks.clone()),
                    ("nak", self.naks.clone()),
                ],
            ),
        );
        r.register(
            "appliance_dhcp_dropped",
            "DHCP requests not answered, by reason",
            Labeled::new(
                "reason",
                [
                    ("malformed", self.dropped_malformed.clone()),
                    ("ignored", self.dropped_ignored.clone()),
                    ("no_address", self.dropped_no_address.clone()),
                    ("overload", self.dropped_overload.clone()),
                    ("commit_failed", self.commit_failed.clone()),
                ],
            ),
        );
        r.register(
            "appliance_dhcp_arp_probes",
            "ARP probes for addresses before they are handed out, by outcome",
            Labeled::new(
                "result",
                [
                    ("sent", self.arp_probes.clone()),
                    ("in_use", self.arp_conflicts.clone()),
                ],
            ),
        );
    }

    fn dropped(&self, reason: &DropReason) {
        match reason {
            DropReason::Malformed(_) | DropReason::NotRequest(_) | DropReason::NoMessageType => {
                &self.dropped_malformed
            }
            DropReason::NoPool(_) | DropReason::PoolExhausted(_) => &self.dropped_no_address,
            _ => &self.dropped_ignored,
        }
        .inc();
    }

    fn replied(&self, msg_type: MessageType) {
        let counter = match msg_type {
            MessageType::Offer => &self.offers,
            MessageType::Ack => &self.acks,
            MessageType::Nak => &self.naks,
            _ => return,
        };
        counter.inc();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpStartError {
    #[error("cannot find the provisioning interface")]
    Interface(#[from] iface::FindInterfaceError),
    #[error("cannot bind udp/{port} on {interface}")]
    Bind {
        port: u16,
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid DHCP settings")]
    Core(#[from] ServerConfigError),
    #[error("cannot load DHCP leases")]
    Store(#[from] StoreError),
}

impl DhcpStartError {
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, DhcpStartError::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

/// What `start` did.
#[derive(Debug)]
pub enum DhcpStatus {
    /// Bound and ready: spawn [`DhcpService::run`].
    Running(Box<DhcpService>),
    /// Deliberately not started (mode off, no pool); the reason is for the operator.
    NotStarted(String),
}

/// One provisioning interface DHCP answers on.
#[derive(Debug)]
struct Link {
    iface: Interface,
    dhcp: UdpSocket,
    /// Port 4011, in proxy mode.
    pxe: Option<UdpSocket>,
    /// For replies to a hardware address and ARP probes; `None` when the interface has no
    /// Ethernet address or the socket could not be opened (then such replies go broadcast
    /// and nothing is probed).
    packet: Option<AsyncFd<PacketSocket>>,
}

impl Link {
    /// Sends `outs` from any thread: those that go as frames in batches (`sendmmsg`), the
    /// others by UDP, a full socket buffer waited out briefly.
    fn send_all_now<'o>(&self, outs: impl Iterator<Item = &'o Outgoing>, ports: Ports) {
        'replies: for out in self.send_frames(outs, ports) {
            let (sock, to) = self.udp_route(out, ports);
            for _ in 0..100 {
                match sock.try_send_to(&out.packet, to) {
                    Ok(_) => continue 'replies,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    Err(e) => {
                        tracing::debug!(%to, error = %e, "dhcp: send failed");
                        continue 'replies;
                    }
                }
            }
            tracing::debug!(%to, "dhcp: send buffer full, reply dropped");
        }
    }

    /// Sends `outs` now from the receive loop: those that go as frames in batches
    /// (`sendmmsg`), the others by UDP.
    async fn send_all(&self, outs: &[Outgoing], ports: Ports) {
        for out in self.send_frames(outs.iter(), ports) {
            let (sock, to) = self.udp_route(out, ports);
            if let Err(e) = sock.send_to(&out.packet, to).await {
                tracing::debug!(%to, error = %e, "dhcp: send failed");
            }
        }
    }

    /// The socket and address a reply goes to by UDP.
    fn udp_route(&self, out: &Outgoing, ports: Ports) -> (&UdpSocket, SocketAddr) {
        let sock = match (out.port, self.pxe.as_ref()) {
            (Port::Pxe, Some(s)) => s,
            _ => &self.dhcp,
        };
        (sock, udp_target(out.to, ports.server))
    }

    /// Sends as frames, in `sendmmsg` batches, the replies of `outs` for a hardware address
    /// and the broadcast ones on port 67, when the packet socket can send them; returns the
    /// rest, to send by UDP (a reply whose frame failed goes broadcast).
    ///
    /// A broadcast reply is the same frame the kernel's UDP broadcast would put on the wire
    /// (IPv4 with DF, id 0, TTL 64, from the interface's address and the server port, to
    /// 255.255.255.255:68 and ff:ff:ff:ff:ff:ff), sent as Kea's raw socket sends it: without
    /// the route lookup, the copy the kernel loops back into the box's own stack for every
    /// broadcast, and the UDP socket's write-space wake-up of the reactor for every datagram
    /// freed. Proxy replies from port 4011 keep the UDP path (their source port).
    fn send_frames<'o>(
        &self,
        outs: impl Iterator<Item = &'o Outgoing>,
        ports: Ports,
    ) -> Vec<&'o Outgoing> {
        let Some(sock) = self.packet.as_ref() else {
            return outs.collect();
        };
        let mut by_udp = Vec::new();
        let mut frames: Vec<([u8; 6], Vec<u8>, &Outgoing)> = Vec::new();
        for out in outs {
            let (ip, mac) = match (out.to, out.port) {
                (Destination::Link { ip, mac }, _) => (ip, mac),
                (Destination::Broadcast, Port::Dhcp) => (Ipv4Addr::BROADCAST, [0xff; 6]),
                _ => {
                    by_udp.push(out);
                    continue;
                }
            };
            let datagram = link::ipv4_udp(
                SocketAddrV4::new(out.from, ports.server),
                SocketAddrV4::new(ip, CLIENT_PORT),
                &out.packet,
            );
            frames.push((mac, datagram, out));
        }
        let mut sent = 0;
        while sent < frames.len() {
            let chunk: Vec<([u8; 6], &[u8])> = frames[sent..]
                .iter()
                .take(SEND_BATCH)
                .map(|(mac, datagram, _)| (*mac, datagram.as_slice()))
                .collect();
            match sock.get_ref().send_many(link::ETH_P_IP, &chunk) {
                Ok(n) if n > 0 => sent += n,
                failed => {
                    let (_, _, out) = frames[sent];
                    let error = failed.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::debug!(
                        to = ?out.to,
                        %error,
                        "dhcp: frame to the client failed; broadcasting"
                    );
                    by_udp.push(out);
                    sent += 1;
                }
            }
        }
        by_udp
    }
}

/// The server's UDP port (67; source of replies, destination at relays).
#[derive(Debug, Clone, Copy)]
struct Ports {
    server: u16,
}

/// The bound DHCP service, ready to run.
#[derive(Debug)]
pub struct DhcpService {
    /// The interfaces served, in configuration order.
    pub interfaces: Vec<Interface>,
    pub mode: Mode,
    core: DhcpServer,
    links: Vec<Link>,
    ports: Ports,
    store: Store,
    counters: Arc<DhcpCounters>,
    timeline: Recorder,
    /// Lease time for every expiry (`WallClock::steady_secs`): a jump of the wall clock
    /// neither expires nor prolongs a lease.
    clock: WallClock,
}

impl DhcpService {
    /// Records offers and acks in the boot timeline (`crate::timeline`).
    pub fn record_to(&mut self, timeline: Recorder) {
        self.timeline = timeline;
    }

    /// Serves until `shutdown` turns true; returns once the commit thread committed what
    /// was queued and ended.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (tx, rx) = commit_queue::<Pending>(QUEUE_DEPTH);
        let links = Arc::new(self.links);
        let core = Arc::new(Mutex::new(self.core));
        let commit_thread = {
            let store = self.store.clone();
            let links = links.clone();
            let counters = self.counters.clone();
            let ports = self.ports;
            std::thread::Builder::new()
                .name("dhcp-commit".into())
                .spawn(move || commit_loop(store, links, ports, rx, counters))
                .expect("spawn dhcp commit thread")
        };
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..links.len() {
            tasks.spawn(receive_loop(Receiver {
                index,
                core: core.clone(),
                links: links.clone(),
                commits: tx.clone(),
                ports: self.ports,
                counters: self.counters.clone(),
                timeline: self.timeline.clone(),
                clock: self.clock.clone(),
                shutdown: shutdown.clone(),
            }));
        }
        tasks.spawn(probe_loop(
            core,
            self.clock.clone(),
            links,
            self.counters.clone(),
            shutdown.clone(),
        ));
        drop(tx);
        while tasks.join_next().await.is_some() {}
        // The receive loops dropped their senders: the thread commits what is queued and ends.
        let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
        tracing::info!("dhcp stopped");
    }
}

/// Builds the core's config from the appliance config and the interfaces served.
pub fn core_config(config: &Config, interfaces: &[Interface]) -> ServerConfig {
    let d = &config.dhcp;
    ServerConfig {
        mode: match d.mode {
            DhcpMode::Proxy => Mode::Proxy,
            _ => Mode::Server,
        },
        server_ips: interfaces.iter().map(|i| i.addr).collect(),
        pools: d
            .pools
            .iter()
            .map(|p| Pool {
                start: p.range_start,
                end: p.range_end,
                netmask: p.netmask,
                router: p.router,
                dns: p.dns.clone(),
                domain: p.domain.clone(),
                lease_time_secs: p.lease_time_secs.unwrap_or(d.lease_time_secs),
            })
            .collect(),
        reservations: d
            .reservations
            .iter()
            .filter_map(|r| {
                Some(Reservation {
                    // Validated at config load; an invalid MAC cannot get here.
                    mac: r.mac.parse::<MacAddr>().ok()?.0,
                    ip: r.ip,
                    hostname: r.hostname.clone(),
                })
            })
            .collect(),
        boot: boot_config(config),
        decline_hold_secs: d.decline_hold_secs,
    }
}

/// The boot files handed out (`[dhcp.boot]`, those missing from the TFTP root left out) and
/// the HTTP port: one source for the DHCPv4 and DHCPv6 cores.
pub fn boot_config(config: &Config) -> BootConfig {
    let d = &config.dhcp;
    BootConfig {
        http_port: config.http.listen.port(),
        bios: in_tftp_root(config, "bios", &d.boot.bios),
        // Secure Boot: every UEFI x86-64 client gets the signed shim instead of iPXE.
        uefi_x64: if d.boot.secure_boot {
            in_tftp_root(config, "uefi_x64_shim", &d.boot.uefi_x64_shim)
        } else {
            in_tftp_root(config, "uefi_x64", &d.boot.uefi_x64)
        },
        uefi_arm64: in_tftp_root(config, "uefi_arm64", &d.boot.uefi_arm64),
        ipxe_script: d.boot.ipxe_script.clone(),
    }
}

/// `file` when the TFTP root has it (a regular file, links followed by the root's rules);
/// otherwise `None` and a warning naming it: those clients get no boot file rather than
/// the name of one that does not exist.
fn in_tftp_root(config: &Config, key: &str, file: &str) -> Option<String> {
    let root = TftpRoot::from(&config.tftp);
    match root.resolve(std::path::Path::new(file)) {
        Ok(path) if path.is_file() => Some(file.to_string()),
        other => {
            tracing::warn!(
                file,
                root = %root.root().display(),
                reason = %other.err().map(|e| error_chain(&e)).unwrap_or_else(|| "not a regular file".into()),
                "dhcp.boot.{key} = \"{file}\" is not in the TFTP root: clients of that kind get no boot file"
            );
            None
        }
    }
}

fn bind(iface: &Interface, port: u16) -> Result<UdpSocket, DhcpStartError> {
    let err = |source: std::io::Error| DhcpStartError::Bind {
        port,
        interface: iface.name.clone(),
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    s.bind_device(Some(iface.name.as_bytes())).map_err(err)?;
    match udp_batch::set_recv_buffer(&s, RECV_BUFFER) {
        Ok(given) => tracing::debug!(
            interface = %iface.name,
            port,
            asked = RECV_BUFFER,
            given,
            "dhcp: receive buffer"
        ),
        Err(e) => {
            tracing::debug!(
                interface = %iface.name,
                port,
                error = %e,
                "dhcp: receive buffer not set"
            )
        }
    }
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// The UDP address for a reply; a reply for a hardware address that could not be sent as
/// a frame is broadcast.
fn udp_target(to: Destination, relay_port: u16) -> SocketAddr {
    match to {
        Destination::Broadcast | Destination::Link { .. } => {
            SocketAddr::from((Ipv4Addr::BROADCAST, CLIENT_PORT))
        }
        Destination::Unicast(a) => SocketAddr::V4(a),
        Destination::Relay(g) => SocketAddr::from((g, relay_port)),
    }
}

/// A reply and the interface and port it goes out on.
struct Outgoing {
    link: usize,
    port: Port,
    packet: Vec<u8>,
    to: Destination,
    from: Ipv4Addr,
}

struct Pending {
    changes: Vec<LeaseChange>,
    reply: Option<Outgoing>,
}

/// The commit queue: at most `depth` items waiting, in memory that follows its use. std's
/// unbounded channel allocates its slots in blocks of 31 as they fill and frees them as
/// they drain; `sync_channel(depth)` allocated and wrote all `depth` slots at start (1.4
/// MiB resident for 16,384 requests, whether DHCP was busy or not).
fn commit_queue<T>(depth: usize) -> (CommitSender<T>, CommitReceiver<T>) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        CommitSender {
            tx,
            queued: queued.clone(),
            depth,
        },
        CommitReceiver { rx, queued },
    )
}

/// The queue held `depth` items: the new one was dropped.
#[derive(Debug, PartialEq, Eq)]
struct QueueFull;

/// The sending side of [`commit_queue`]; cheap to clone.
struct CommitSender<T> {
    tx: mpsc::Sender<T>,
    queued: Arc<AtomicUsize>,
    depth: usize,
}

impl<T> Clone for CommitSender<T> {
    fn clone(&self) -> Self {
        CommitSender {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            depth: self.depth,
        }
    }
}

impl<T> CommitSender<T> {
    /// Queues `item` unless `depth` items wait already. With the receiver gone (the
    /// service stopping) the item is dropped quietly, as a closed `sync_channel` did.
    fn try_send(&self, item: T) -> Result<(), QueueFull> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.depth {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueFull);
        }
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// The receiving side of [`commit_queue`].
struct CommitReceiver<T> {
    rx: mpsc::Receiver<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> CommitReceiver<T> {
    /// The next item; `None` once every sender is gone and the queue is empty.
    fn recv(&self) -> Option<T> {
        let item = self.rx.recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }

    /// The next item if one waits.
    fn try_recv(&self) -> Option<T> {
        let item = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }
}

/// The commit thread: group commit, then the replies that waited for it.
fn commit_loop(
    store: Store,
    links: Arc<Vec<Link>>,
    ports: Ports,
    rx: CommitReceiver<Pending>,
    counters: Arc<DhcpCounters>,
) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut changes: Vec<LeaseChange> = Vec::new();
    while let Some(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Some(p) => batch.push(p),
                None => break,
            }
        }
        changes.clear();
        for p in &mut batch {
            changes.append(&mut p.changes);
        }
        match store.commit_lease_changes(&changes) {
            Ok(()) => {
                for (index, link) in links.iter().enumerate() {
                    let replies = batch.iter().filter_map(|p| p.reply.as_ref());
                    link.send_all_now(replies.filter(|out| out.link == index), ports);
                }
                batch.clear();
            }
            Err(e) => {
                tracing::error!(
                    error = %error_chain(&e),
                    requests = batch.len(),
                    "dhcp: lease commit failed; replies withheld (clients will retry)"
                );
                for _ in batch.drain(..) {
                    counters.commit_failed.inc();
                }
            }
        }
    }
}

async fn recv_on(sock: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Waits until the packet socket (if any) has something to read.
async fn packet_readable(
    sock: Option<&AsyncFd<PacketSocket>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, PacketSocket>> {
    match sock {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// The interfaces DHCP answers on: `dhcp.interfaces`, or the provisioning interface.
fn find_interfaces(config: &Config) -> Result<Vec<Interface>, DhcpStartError> {
    if config.dhcp.interfaces.is_empty() {
        return Ok(vec![iface::find(&config.interface)?]);
    }
    config
        .dhcp
        .interfaces
        .iter()
        .map(|name| iface::find(name).map_err(DhcpStartError::from))
        .collect()
}

/// Opens the packet socket of `iface`, or says why replies there go broadcast.
fn open_packet(iface: &Interface) -> Option<AsyncFd<PacketSocket>> {
    match PacketSocket::open(&iface.name).and_then(PacketSocket::into_async) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                interface = %iface.name,
                error = %e,
                "dhcp: no packet socket: replies to clients without an address go broadcast \
                 and addresses are not ARP-probed before they are handed out"
            );
            None
        }
    }
}

/// Starts the DHCP service described by `config` (or says why it is not started), with
/// every lease expiry on `clock`'s lease time. Loaded leases follow the restart rule
/// (`lease::clamp_after_restart`, see `crate::clock::WallClock`).
pub async fn start(
    config: &Config,
    store: Store,
    counters: Arc<DhcpCounters>,
    clock: WallClock,
) -> Result<DhcpStatus, DhcpStartError> {
    let d = &config.dhcp;
    match d.mode {
        DhcpMode::Off => return Ok(DhcpStatus::NotStarted("DHCP is off (dhcp.mode)".into())),
        DhcpMode::Server if d.pools.is_empty() => {
            return Ok(DhcpStatus::NotStarted(
                "DHCP server not started: dhcp.mode = \"server\" but no [[dhcp.pools]] is \
                 configured (set a pool, or mode = \"proxy\" beside another DHCP server)"
                    .into(),
            ));
        }
        _ => {}
    }
    let interfaces = find_interfaces(config)?;
    let core_cfg = core_config(config, &interfaces);
    let leases = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.dhcp_leases())
            .await
            .expect("lease load task")?
    };
    let mut leases = leases;
    let lease_count = leases.len();
    let longest = core_cfg
        .pools
        .iter()
        .map(|p| u64::from(p.lease_time_secs))
        .chain([u64::from(core_cfg.decline_hold_secs)])
        .max()
        .unwrap_or(0);
    let clamped = lease::clamp_after_restart(
        leases.iter_mut().map(|l| &mut l.expires_at),
        clock.steady_secs(),
        longest,
    );
    if clamped > 0 {
        tracing::warn!(
            clamped,
            "dhcp: leases ending more than {longest} s from now (the wall clock was set back \
             since they were written) end {longest} s from now"
        );
    }
    let core = DhcpServer::new(core_cfg, leases)?;
    let mode = core.config().mode;
    let mut links = Vec::with_capacity(interfaces.len());
    for iface in &interfaces {
        links.push(Link {
            iface: iface.clone(),
            dhcp: bind(iface, d.listen_port)?,
            pxe: match mode {
                Mode::Proxy => Some(bind(iface, d.proxy_port)?),
                Mode::Server => None,
            },
            packet: open_packet(iface),
        });
    }
    if mode == Mode::Server {
        let covers = |p: &crate::protocol::dhcp::Pool, addr: Ipv4Addr| {
            u32::from(p.start) & u32::from(p.netmask) == u32::from(addr) & u32::from(p.netmask)
        };
        for iface in &interfaces {
            if !core.config().pools.iter().any(|p| covers(p, iface.addr)) {
                tracing::warn!(
                    interface = %iface.name,
                    addr = %iface.addr,
                    "dhcp: no pool covers this interface's subnet; only relayed clients get \
                     addresses through it"
                );
            }
        }
    }
    for iface in &interfaces {
        tracing::info!(
            interface = %iface.name,
            addr = %iface.addr,
            mode = ?mode,
            port = d.listen_port,
            leases = lease_count,
            "dhcp serving"
        );
    }
    Ok(DhcpStatus::Running(Box::new(DhcpService {
        interfaces,
        mode,
        core,
        links,
        ports: Ports {
            server: d.listen_port,
        },
        store,
        counters,
        timeline: Recorder::off(),
        clock,
    })))
}

/// What one interface's receive loop works with.
struct Receiver {
    index: usize,
    core: Arc<Mutex<DhcpServer>>,
    links: Arc<Vec<Link>>,
    commits: CommitSender<Pending>,
    ports: Ports,
    counters: Arc<DhcpCounters>,
    timeline: Recorder,
    clock: WallClock,
    shutdown: watch::Receiver<bool>,
}

/// Locks the core; a panic elsewhere while holding it leaves the state as it was, usable.
fn lock(core: &Mutex<DhcpServer>) -> std::sync::MutexGuard<'_, DhcpServer> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// One interface: its DHCP (and 4011) datagrams into the core, replies out, lease changes to
/// the commit thread; its ARP packets to the core's probe bookkeeping.
///
/// udp/67 is read in batches ([`udp_batch::recv_batch`]: every datagram waiting, up to
/// `RecvBatch::SLOTS`, in one call), each batch handled under one lock of the core.
async fn receive_loop(r: Receiver) {
    let mut shutdown = r.shutdown.clone();
    let link = &r.links[r.index];
    let mut batch = RecvBatch::default();
    let mut buf_pxe = vec![0u8; 4096];
    let mut buf_arp = vec![0u8; 256];
    loop {
        let wake = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            ready = packet_readable(link.packet.as_ref()) => {
                match ready {
                    Ok(mut guard) => {
                        while let Ok(got) = guard.try_io(|s| s.get_ref().recv(&mut buf_arp)) {
                            match got {
                                Ok(Some(n)) => arp_in(&r, &buf_arp[..n]),
                                Ok(None) => {}
                                Err(e) => {
                                    tracing::debug!(error = %e, "dhcp: packet socket recv failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "dhcp: packet socket failed"),
                }
                continue;
            }
            ready = link.dhcp.readable() => match ready {
                Ok(()) => Wake::Dhcp,
                Err(e) => { tracing::debug!(error = %e, "dhcp: recv failed"); continue; }
            },
            got = recv_on(link.pxe.as_ref(), &mut buf_pxe) => match got {
                Ok((n, SocketAddr::V4(src))) => Wake::Pxe(n, src),
                Ok(_) => continue,
                Err(e) => { tracing::debug!(error = %e, "dhcp: recv on 4011 failed"); continue; }
            },
        };
        match wake {
            Wake::Dhcp => {
                for _ in 0..RECV_TURN {
                    let read = link.dhcp.try_io(tokio::io::Interest::READABLE, || {
                        udp_batch::recv_batch(&link.dhcp, &mut batch)
                    });
                    match read {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "dhcp: recv failed");
                            break;
                        }
                    }
                    handle_batch(&r, Port::Dhcp, batch.datagrams()).await;
                    if !batch.is_full() {
                        break;
                    }
                }
            }
            Wake::Pxe(n, src) => {
                handle_batch(&r, Port::Pxe, std::iter::once((src, &buf_pxe[..n]))).await;
            }
        }
    }
}

/// What woke a receive loop with work to do.
enum Wake {
    /// udp/67 is readable.
    Dhcp,
    /// A datagram of this length from this source on 4011.
    Pxe(usize, SocketAddrV4),
}

/// The requests that arrived together on `port`: through the core under one lock, then
/// the replies that change no lease (OFFER, NAK, INFORM ACK, proxy replies) sent at once,
/// together, and the others queued for the commit thread.
async fn handle_batch<'b>(
    r: &Receiver,
    port: Port,
    datagrams: impl Iterator<Item = (SocketAddrV4, &'b [u8])>,
) {
    let link = &r.links[r.index];
    let local = link.iface.addr;
    let decisions: Vec<(SocketAddrV4, Result<Decision, DropReason>)> = {
        let now = r.clock.steady_secs();
        let mut core = lock(&r.core);
        datagrams
            .map(|(src, bytes)| (src, core.handle_on(now, port, local, src, bytes)))
            .collect()
    };
    let mut now = Vec::new();
    for (src, decision) in decisions {
        r.counters.received.inc();
        let decision = match decision {
            Ok(d) => d,
            Err(reason) => {
                r.counters.dropped(&reason);
                if let DropReason::UnsupportedArch(arch) = reason {
                    tracing::info!(%src, arch, name = arch_name(arch), "dhcp: {reason}");
                } else {
                    tracing::debug!(%src, ?port, %reason, "dhcp: dropped");
                }
                continue;
            }
        };
        if let Some(arch) = decision.no_boot_file {
            tracing::info!(
                %src,
                arch,
                name = arch_name(arch),
                "dhcp: no boot file for client architecture {arch} ({}): address only",
                arch_name(arch)
            );
        }
        if let Some(rep) = &decision.reply {
            timeline_reply(&r.timeline, rep, src, decision.no_boot_file);
        }
        let reply = decision.reply.map(|rep| {
            r.counters.replied(rep.msg_type);
            tracing::debug!(
                %src,
                msg = ?rep.msg_type,
                yiaddr = %rep.yiaddr,
                to = ?rep.to,
                client_class = rep.client_class.as_deref().unwrap_or("-"),
                boot_file = rep.boot_file.as_deref().unwrap_or("-"),
                "dhcp: reply"
            );
            Outgoing {
                link: r.index,
                port,
                packet: rep.packet,
                to: rep.to,
                from: rep.from,
            }
        });
        if decision.changes.is_empty() {
            now.extend(reply);
            continue;
        }
        let pending = Pending {
            changes: decision.changes,
            reply,
        };
        if let Err(QueueFull) = r.commits.try_send(pending) {
            r.counters.dropped_overload.inc();
            tracing::debug!(%src, "dhcp: commit queue full, request dropped");
        }
    }
    link.send_all(&now, r.ports).await;
}

/// An OFFER or ACK in the boot timeline, under the client's MAC (and, for an ACK, the
/// address it now holds, which attributes its TFTP and HTTP requests).
fn timeline_reply(t: &Recorder, rep: &Reply, src: SocketAddrV4, no_boot_file: Option<u16>) {
    let step = match rep.msg_type {
        MessageType::Offer => Step::DhcpOffer,
        MessageType::Ack => Step::DhcpAck,
        _ => return,
    };
    let ip = if !rep.yiaddr.is_unspecified() {
        Some(rep.yiaddr)
    } else if !src.ip().is_unspecified() {
        Some(*src.ip())
    } else {
        None
    };
    let who = Who {
        mac: rep.client.map(MacAddr),
        ip: (step == Step::DhcpAck)
            .then_some(ip)
            .flatten()
            .map(IpAddr::V4),
        // A server-mode ACK: this box leased the address to this MAC.
        leased: step == Step::DhcpAck && !rep.yiaddr.is_unspecified(),
        ..Default::default()
    };
    let addr = ip
        .map(|a| a.to_string())
        .unwrap_or_else(|| "boot info".into());
    let (outcome, detail) = match (no_boot_file, &rep.boot_file) {
        (Some(arch), _) => (
            Outcome::Refused,
            format!(
                "{addr}; no boot file for architecture {arch} ({})",
                arch_name(arch)
            ),
        ),
        (None, Some(f)) => (Outcome::Ok, format!("{addr}, boot file {f}")),
        (None, None) => (Outcome::Ok, addr),
    };
    // Which client asked (option 60), e.g. `HTTPClient:Arch:00016:UNDI:003001`: UEFI HTTP
    // boot and PXE look alike otherwise.
    let detail = match &rep.client_class {
        Some(class) => format!("{detail}; client {class}"),
        None => detail,
    };
    t.record(who, step, outcome, detail);
}

/// An ARP packet from the segment: an answer to a probe holds the address.
fn arp_in(r: &Receiver, bytes: &[u8]) {
    let Some(sender) = link::probe_answer(bytes) else {
        return;
    };
    let held = lock(&r.core).arp_seen(r.clock.steady_secs(), sender.ip, sender.mac);
    let Some(lease) = held else { return };
    r.counters.arp_conflicts.inc();
    tracing::warn!(
        addr = %lease.addr,
        mac = %hex::encode(sender.mac),
        until = lease.expires_at,
        "dhcp: address in use by a host the box did not configure (it answered an ARP \
         probe); not handed out until the hold ends"
    );
    if let Err(QueueFull) = r.commits.try_send(Pending {
        changes: vec![LeaseChange::Put(lease)],
        reply: None,
    }) {
        r.counters.dropped_overload.inc();
    }
}

/// Every [`PROBE_TICK`]: ARP-probes the addresses the core will hand out next, on the
/// interface whose subnet holds each (addresses of relayed pools are not on a local link
/// and are not probed).
async fn probe_loop(
    core: Arc<Mutex<DhcpServer>>,
    clock: WallClock,
    links: Arc<Vec<Link>>,
    counters: Arc<DhcpCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    if links.iter().all(|l| l.packet.is_none()) {
        return;
    }
    let mut tick = tokio::time::interval(PROBE_TICK);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let targets = lock(&core).probe_targets(clock.steady_secs());
        for addr in targets {
            let on_link = links.iter().find(|l| {
                let mask = u32::from(l.iface.netmask);
                u32::from(l.iface.addr) & mask == u32::from(addr) & mask
            });
            let Some((l, sock)) = on_link.and_then(|l| Some((l, l.packet.as_ref()?))) else {
                continue;
            };
            let probe = link::arp_probe(sock.get_ref().mac, addr);
            match sock.get_ref().send(link::ETH_P_ARP, [0xff; 6], &probe) {
                Ok(()) => {
                    counters.arp_probes.inc();
                }
                Err(e) => {
                    tracing::debug!(interface = %l.iface.name, %addr, error = %e, "dhcp: ARP probe failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue holds at most `depth` items and refuses the next until one is taken; items
    /// come out in order; once the receiver is gone a send drops its item quietly.
    #[test]
    fn the_commit_queue_holds_depth_items_in_order_and_refuses_more() {
        let (tx, rx) = commit_queue::<u32>(3);
        let tx2 = tx.clone();
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx2.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Ok(()));
        assert_eq!(tx2.try_send(4), Err(QueueFull));
        assert_eq!(rx.recv(), Some(1));
        assert_eq!(tx.try_send(5), Ok(()));
        assert_eq!(tx.try_send(6), Err(QueueFull));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), Some(5));
        assert_eq!(rx.try_recv(), None);
        for i in 0..3 {
            assert_eq!(tx.try_send(10 + i), Ok(()), "drained: room for 3 again");
        }
        drop((tx, tx2));
        let rest: Vec<u32> = std::iter::from_fn(|| rx.recv()).collect();
        assert_eq!(rest, [10, 11, 12], "queued items outlive the senders");

        let (tx, rx) = commit_queue::<u32>(1);
        drop(rx);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(
            tx.try_send(2),
            Ok(()),
            "a closed queue counts nothing as waiting"
        );
    }
}
