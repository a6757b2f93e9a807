//! Tokio glue for the DHCP core (`protocol::dhcp`): UDP 67 (and 4011 in proxy mode) bound
//! to the provisioning interface, replies sent broadcast / unicast / to the relay as the
//! core decides, and lease changes made durable before the reply that depends on them.
//!
//! [`start`] binds the sockets and loads the leases; `app.rs` spawns [`DhcpService::run`]:
//! - the receive loop owns the `DhcpServer` and both sockets; replies that change no lease
//!   (OFFER, NAK, INFORM ACK, proxy replies) go out at once;
//! - the commit thread (started and joined by `run`) receives (lease changes, reply) pairs,
//!   commits everything queued in ONE redb transaction (group commit: whatever arrived
//!   while the previous commit ran), and only then sends those replies. A failed commit
//!   sends nothing (clients retry). On shutdown the queued changes are committed first.
//!
//! Every datagram, reply and drop is counted in [`DhcpCounters`] (shown on `/metrics`).
//!
//! May touch: sockets, the clock, `Store::{dhcp_leases, commit_lease_changes}`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;

use dhcproto::v4::MessageType;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::{Config, DhcpMode};
use crate::error_chain;
use crate::metrics::{Counter, Labeled, Registry};
use crate::model::MacAddr;
use crate::net::iface::{self, Interface};
use crate::protocol::dhcp::{
    BootConfig, Destination, DhcpServer, DropReason, LeaseChange, Mode, Pool, Port, Reservation,
    ServerConfig, ServerConfigError,
};
use crate::store::{Store, StoreError};

/// Largest batch of requests committed in one transaction.
const MAX_BATCH: usize = 4096;
/// Requests waiting for a commit before new ones are dropped (the client retries).
const QUEUE_DEPTH: usize = 16384;
/// Client port for broadcast and unicast replies.
const CLIENT_PORT: u16 = 68;

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

/// The bound DHCP service, ready to run.
#[derive(Debug)]
pub struct DhcpService {
    pub interface: Interface,
    pub mode: Mode,
    core: DhcpServer,
    dhcp_sock: Arc<UdpSocket>,
    pxe_sock: Option<UdpSocket>,
    relay_port: u16,
    store: Store,
    counters: Arc<DhcpCounters>,
}

impl DhcpService {
    /// Serves until `shutdown` turns true; returns once the commit thread committed what
    /// was queued and ended.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (tx, rx) = mpsc::sync_channel::<Pending>(QUEUE_DEPTH);
        let commit_thread = {
            let store = self.store.clone();
            let sock = self.dhcp_sock.clone();
            let counters = self.counters.clone();
            std::thread::Builder::new()
                .name("dhcp-commit".into())
                .spawn(move || commit_loop(store, sock, rx, counters))
                .expect("spawn dhcp commit thread")
        };
        receive_loop(
            self.core,
            self.dhcp_sock,
            self.pxe_sock,
            tx,
            self.relay_port,
            self.counters,
            shutdown,
        )
        .await;
        // The receive loop dropped the sender: the thread commits what is queued and ends.
        let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
        tracing::info!("dhcp stopped");
    }
}

/// Builds the core's config from the appliance config and the interface.
pub fn core_config(config: &Config, iface: &Interface) -> ServerConfig {
    let d = &config.dhcp;
    ServerConfig {
        mode: match d.mode {
            DhcpMode::Proxy => Mode::Proxy,
            _ => Mode::Server,
        },
        server_ip: iface.addr,
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
        boot: BootConfig {
            http_port: config.http.listen.port(),
            bios: d.boot.bios.clone(),
            uefi_x64: d.boot.uefi_x64.clone(),
            uefi_arm64: d.boot.uefi_arm64.clone(),
            ipxe_script: d.boot.ipxe_script.clone(),
        },
        decline_hold_secs: d.decline_hold_secs,
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
    // Room for bursts while the commit thread syncs; the kernel caps it at rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

fn target(to: Destination, relay_port: u16) -> SocketAddr {
    match to {
        Destination::Broadcast => SocketAddr::from((Ipv4Addr::BROADCAST, CLIENT_PORT)),
        Destination::Unicast(a) => SocketAddr::V4(a),
        Destination::Relay(g) => SocketAddr::from((g, relay_port)),
    }
}

/// Sends from any thread; a full socket buffer is waited out briefly.
fn send_now(sock: &UdpSocket, packet: &[u8], to: SocketAddr) {
    for _ in 0..100 {
        match sock.try_send_to(packet, to) {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            Err(e) => {
                tracing::debug!(%to, error = %e, "dhcp: send failed");
                return;
            }
        }
    }
    tracing::debug!(%to, "dhcp: send buffer full, reply dropped");
}

struct Pending {
    changes: Vec<LeaseChange>,
    reply: Option<(Vec<u8>, SocketAddr)>,
}

/// The commit thread: group commit, then the replies that waited for it.
fn commit_loop(
    store: Store,
    sock: Arc<UdpSocket>,
    rx: mpsc::Receiver<Pending>,
    counters: Arc<DhcpCounters>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut changes: Vec<LeaseChange> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        changes.clear();
        for p in &mut batch {
            changes.append(&mut p.changes);
        }
        match store.commit_lease_changes(&changes) {
            Ok(()) => {
                for p in batch.drain(..) {
                    if let Some((packet, to)) = p.reply {
                        send_now(&sock, &packet, to);
                    }
                }
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

/// Starts the DHCP service described by `config` (or says why it is not started).
pub async fn start(
    config: &Config,
    store: Store,
    counters: Arc<DhcpCounters>,
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
    let iface = iface::find(&config.interface)?;
    let core_cfg = core_config(config, &iface);
    let leases = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.dhcp_leases())
            .await
            .expect("lease load task")?
    };
    let lease_count = leases.len();
    let core = DhcpServer::new(core_cfg, leases)?;
    let mode = core.config().mode;
    let dhcp_sock = Arc::new(bind(&iface, d.listen_port)?);
    let pxe_sock = match mode {
        Mode::Proxy => Some(bind(&iface, d.proxy_port)?),
        Mode::Server => None,
    };
    if mode == Mode::Server
        && !core.config().pools.iter().any(|p| {
            u32::from(p.start) & u32::from(p.netmask)
                == u32::from(iface.addr) & u32::from(p.netmask)
        })
    {
        tracing::warn!(
            interface = %iface.name,
            addr = %iface.addr,
            "dhcp: no pool covers the interface's own subnet; only relayed clients will get addresses"
        );
    }
    tracing::info!(
        interface = %iface.name,
        addr = %iface.addr,
        mode = ?mode,
        port = d.listen_port,
        leases = lease_count,
        "dhcp serving"
    );
    Ok(DhcpStatus::Running(Box::new(DhcpService {
        interface: iface,
        mode,
        core,
        dhcp_sock,
        pxe_sock,
        relay_port: d.listen_port,
        store,
        counters,
    })))
}

async fn receive_loop(
    mut core: DhcpServer,
    dhcp_sock: Arc<UdpSocket>,
    pxe_sock: Option<UdpSocket>,
    commits: mpsc::SyncSender<Pending>,
    relay_port: u16,
    counters: Arc<DhcpCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf_dhcp = vec![0u8; 4096];
    let mut buf_pxe = vec![0u8; 4096];
    loop {
        let (port, n, src) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = dhcp_sock.recv_from(&mut buf_dhcp) => match r {
                Ok((n, src)) => (Port::Dhcp, n, src),
                Err(e) => { tracing::debug!(error = %e, "dhcp: recv failed"); continue; }
            },
            r = recv_on(pxe_sock.as_ref(), &mut buf_pxe) => match r {
                Ok((n, src)) => (Port::Pxe, n, src),
                Err(e) => { tracing::debug!(error = %e, "dhcp: recv on 4011 failed"); continue; }
            },
        };
        let SocketAddr::V4(src) = src else { continue };
        let bytes = match port {
            Port::Dhcp => &buf_dhcp[..n],
            Port::Pxe => &buf_pxe[..n],
        };
        counters.received.inc();
        let decision = match core.handle(crate::clock::unix_secs(), port, src, bytes) {
            Ok(d) => d,
            Err(reason) => {
                counters.dropped(&reason);
                tracing::debug!(%src, ?port, %reason, "dhcp: dropped");
                continue;
            }
        };
        let reply = decision.reply.map(|r| {
            counters.replied(r.msg_type);
            tracing::debug!(%src, msg = ?r.msg_type, yiaddr = %r.yiaddr, to = ?r.to, "dhcp: reply");
            (r.packet, target(r.to, relay_port))
        });
        if decision.changes.is_empty() {
            if let Some((packet, to)) = reply {
                let sock = match (port, pxe_sock.as_ref()) {
                    (Port::Pxe, Some(s)) => s,
                    _ => &*dhcp_sock,
                };
                if let Err(e) = sock.send_to(&packet, to).await {
                    tracing::debug!(%to, error = %e, "dhcp: send failed");
                }
            }
            continue;
        }
        let pending = Pending {
            changes: decision.changes,
            reply,
        };
        if let Err(mpsc::TrySendError::Full(_)) = commits.try_send(pending) {
            counters.dropped_overload.inc();
            tracing::debug!(%src, "dhcp: commit queue full, request dropped");
        }
    }
}
