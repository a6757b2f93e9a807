//! The userspace WireGuard endpoint (UDP 51821 by default): boringtun's noise core, one
//! `Tunn` per peer, one `RateLimiter` for all of them (handshake floods are answered with
//! cookies), in front of the smoltcp overlay (`overlay`). No tun device, no NET_ADMIN.
//!
//! The limiter counts each handshake message once, in the screen: `Tunn::decapsulate`
//! passes every datagram through its own limiter again (boringtun has no public way
//! around it), so the `Tunn`s share a second one that only re-checks MAC1 and is never
//! under load ([`Limiters`]); with one limiter in both places every handshake counted
//! twice and cookies started at half the configured rate.
//!
//! One task owns everything: it receives datagrams, screens them (`screen`: the rate
//! limiter, then the peer: a handshake initiation by the static key it carries, everything
//! else by the receiver index, whose upper 24 bits are the peer's `Tunn` index), decapsulates, and
//! hands inner packets to smoltcp only when their source is the peer's own overlay address
//! (boringtun does not check that). Endpoints are learned from authenticated packets
//! (roaming). The same task drives every `Tunn`'s `update_timers` every 250 ms and resets
//! the limiter's count every second, and encrypts smoltcp's output to the peer owning the
//! destination address. Peers follow the ServerBindings (`peers`).
//!
//! Outbound: a [`Connector`] asks the task for a TCP connection to a node inside the
//! overlay; it is refused at once unless the node is a peer with a live session (a
//! handshake within Talos's peer-down interval, 275 s), since the box never knows where
//! to send to before the node's first handshake.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use x25519_dalek::PublicKey;

use super::identity::Identity;
use super::overlay::{ConnLimits, ConnectReply, Overlay, Received};
use super::peers::PeerSpec;
use super::screen::{Screen, Screened};
use super::stream::OverlayStream;
use crate::metrics::{Counter, Gauge, Labeled, Registry};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// Handshakes per second before the limiter answers with cookies (boringtun's default).
pub const HANDSHAKE_LIMIT: u64 = 100;

/// The endpoint's two boringtun limiters (both keyed with the box's public key for MAC1).
struct Limiters {
    /// The screen's: counts every handshake message with a valid MAC1 once and, over
    /// `limit` a second, answers those without a valid MAC2 with a cookie reply.
    screen: Arc<RateLimiter>,
    /// Given to every `Tunn`, whose `decapsulate` runs a limiter over each datagram the
    /// screen already passed: MAC1 again, never under load, so it never counts against
    /// the screen's limit nor answers a second cookie.
    tunn: Arc<RateLimiter>,
}

impl Limiters {
    fn new(public: &PublicKey, limit: u64) -> Limiters {
        Limiters {
            screen: Arc::new(RateLimiter::new(public, limit)),
            tunn: Arc::new(RateLimiter::new(public, u64::MAX)),
        }
    }
}
const TIMER_TICK: Duration = Duration::from_millis(250);
const MAX_DATAGRAM: usize = 65_535;
/// A peer whose last handshake is older than this has no live session (Talos re-provisions
/// then: `SL:pkg/wireguard` `PeerDownInterval`, 180 + 5 + 90 s).
pub const SESSION_LIVE: Duration = Duration::from_secs(275);

/// A request for an outbound overlay connection.
#[derive(Debug)]
struct ConnectRequest {
    to: Ipv6Addr,
    port: u16,
    reply: ConnectReply,
}

/// Opens TCP connections to nodes through the endpoint (cheap to clone).
#[derive(Debug, Clone)]
pub struct Connector {
    tx: mpsc::Sender<ConnectRequest>,
}

impl Connector {
    /// A TCP connection to `[to]:port` inside the overlay. Fails at once when `to` is no
    /// peer with a live session; bounded by smoltcp's connect timeout (10 s) otherwise.
    pub async fn connect(&self, to: Ipv6Addr, port: u16) -> std::io::Result<OverlayStream> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(ConnectRequest { to, port, reply })
            .await
            .map_err(|_| std::io::Error::other("the SideroLink endpoint is stopped"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the SideroLink endpoint is stopped"))?
    }
}

/// Counters of the endpoint (read by tests and `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams received.
    pub datagrams: Counter,
    /// Handshake initiations from a key that is no peer (never provisioned, or foreign).
    pub unknown_key: Counter,
    /// Packets for a receiver index that belongs to no peer.
    pub unknown_index: Counter,
    /// Datagrams that are no WireGuard message or fail its MAC.
    pub invalid: Counter,
    /// Cookie replies sent (the limiter is under load).
    pub cookies: Counter,
    /// Inner packets dropped because their source is not the sending peer's address.
    pub spoofed: Counter,
    /// Inner packets handed to the overlay.
    pub delivered: Counter,
    /// Datagrams of a peer that boringtun refused (decryption, replay, stale session).
    pub rejected: Counter,
    /// Handshake initiations of peers answered.
    pub handshakes: Counter,
    /// UDP bytes received / sent.
    pub rx_bytes: Counter,
    pub tx_bytes: Counter,
    /// Peers configured now (ServerBindings with a SideroLink address and key).
    pub peers: Gauge,
    /// Log lines decoded / log bytes refused (per line).
    pub log_lines: Counter,
    pub log_errors: Counter,
    /// Log lines written to the store / lost (writer behind, store failure); `logbook`.
    pub log_lines_stored: Counter,
    pub log_lines_dropped: Counter,
    /// Overlay connections refused because their node held its share
    /// ([`EndpointConfig::max_connections_per_node`]).
    pub connections_refused_per_node: Counter,
}

impl Stats {
    /// Adds the SideroLink families to `/metrics`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_siderolink_peers",
            "SideroLink WireGuard peers configured (bindings with an overlay address and key)",
            self.peers.clone(),
        );
        r.register(
            "appliance_siderolink_handshakes",
            "SideroLink handshake initiations of peers answered",
            self.handshakes.clone(),
        );
        r.register(
            "appliance_siderolink_bytes",
            "SideroLink WireGuard UDP bytes by direction",
            Labeled::new(
                "direction",
                [("rx", self.rx_bytes.clone()), ("tx", self.tx_bytes.clone())],
            ),
        );
        r.register(
            "appliance_siderolink_dropped_packets",
            "SideroLink datagrams or inner packets dropped, by reason (cookie: answered with a cookie under handshake load)",
            Labeled::new(
                "reason",
                [
                    ("unknown_key", self.unknown_key.clone()),
                    ("unknown_index", self.unknown_index.clone()),
                    ("invalid", self.invalid.clone()),
                    ("rejected", self.rejected.clone()),
                    ("spoofed_source", self.spoofed.clone()),
                    ("cookie", self.cookies.clone()),
                ],
            ),
        );
        r.register(
            "appliance_siderolink_connections_refused",
            "SideroLink overlay connections (logs, events) refused, by reason (node_limit: the node held max_connections_per_node)",
            Labeled::new(
                "reason",
                [("node_limit", self.connections_refused_per_node.clone())],
            ),
        );
        r.register(
            "appliance_siderolink_log_lines",
            "Talos log lines: decoded, refused by the decoder, stored, lost before storage",
            Labeled::new(
                "result",
                [
                    ("decoded", self.log_lines.clone()),
                    ("refused", self.log_errors.clone()),
                    ("stored", self.log_lines_stored.clone()),
                    ("dropped", self.log_lines_dropped.clone()),
                ],
            ),
        );
    }
}

/// A decoded log line attributed to the server whose tunnel it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLog {
    pub server: String,
    pub address: Ipv6Addr,
    pub line: crate::protocol::siderolink::logline::LogLine,
}

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Longest log object accepted (bytes).
    pub max_log_line: usize,
    /// Log and event connections open at once, all nodes together.
    pub max_log_connections: usize,
    /// Log and event connections one node (overlay source address) may hold at once.
    pub max_connections_per_node: usize,
    /// A TCP port inside the overlay that reads and drops everything (`scripts/bench
    /// siderolink` measures tunnel throughput with it). Never set by `serve`: the
    /// configuration has no key for it.
    pub discard_port: Option<u16>,
    /// Handshake messages a second before cookies ([`HANDSHAKE_LIMIT`] in `serve`).
    pub handshake_limit: u64,
}

struct Peer {
    spec: PeerSpec,
    /// boringtun's state for this peer, made by its first handshake initiation: a `Tunn`
    /// holds its eight session slots inline (several KiB each peer), and most configured
    /// peers (allocated servers not booted into Talos yet) never send one.
    tunn: Option<Box<Tunn>>,
    endpoint: Option<SocketAddr>,
    /// Its first handshake is in the boot timeline.
    up: bool,
}

/// The endpoint; `run` drives it until shutdown.
pub struct Endpoint {
    socket: UdpSocket,
    identity: Arc<Identity>,
    limiters: Limiters,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    by_addr: HashMap<Ipv6Addr, u32>,
    next_index: u32,
    overlay: Overlay,
    stats: Arc<Stats>,
    /// Each line shared, not copied: the channel's 4,096 slots, written at start, are 32
    /// bytes each instead of 160 (512 KiB less resident), and a receiver's copy is a count.
    logs: broadcast::Sender<Arc<NodeLog>>,
    events_tx: mpsc::Sender<std::io::Result<OverlayStream>>,
    events_rx: Option<mpsc::Receiver<std::io::Result<OverlayStream>>>,
    connect_tx: mpsc::Sender<ConnectRequest>,
    connect_rx: mpsc::Receiver<ConnectRequest>,
    buf: Vec<u8>,
    timeline: Recorder,
}

impl Endpoint {
    /// An endpoint on an already bound UDP socket.
    pub fn new(
        socket: UdpSocket,
        identity: Arc<Identity>,
        config: &EndpointConfig,
        seed: u64,
        stats: Arc<Stats>,
    ) -> Endpoint {
        let public = identity.public_key();
        let (events_tx, events_rx) = mpsc::channel(64);
        let (connect_tx, connect_rx) = mpsc::channel(64);
        Endpoint {
            connect_tx,
            connect_rx,
            events_tx,
            events_rx: Some(events_rx),
            socket,
            limiters: Limiters::new(&public, config.handshake_limit),
            overlay: Overlay::new(
                identity.prefix(),
                seed,
                ConnLimits {
                    total: config.max_log_connections,
                    per_node: config.max_connections_per_node,
                    refused_per_node: stats.connections_refused_per_node.clone(),
                },
                config.max_log_line,
                config.discard_port,
            ),
            identity,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            by_addr: HashMap::new(),
            next_index: 1,
            stats,
            logs: broadcast::channel(4096).0,
            buf: vec![0; MAX_DATAGRAM + 32],
            timeline: Recorder::off(),
        }
    }

    /// Records each peer's first handshake ("SideroLink up") in the boot timeline.
    pub fn record_to(&mut self, timeline: Recorder) {
        self.timeline = timeline;
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Decoded log lines, as they arrive.
    pub fn subscribe_logs(&self) -> broadcast::Receiver<Arc<NodeLog>> {
        self.logs.subscribe()
    }

    /// The sender of decoded log lines (subscribe to it after `run` took the endpoint).
    pub fn log_sender(&self) -> broadcast::Sender<Arc<NodeLog>> {
        self.logs.clone()
    }

    /// Opens outbound connections into the overlay while `run` drives the endpoint.
    pub fn connector(&self) -> Connector {
        Connector {
            tx: self.connect_tx.clone(),
        }
    }

    /// The event sink's connections (TCP 4002 inside the overlay), for
    /// `tonic::transport::Server::serve_with_incoming`; each carries an
    /// [`super::stream::OverlayPeer`]. Without a taker they are closed.
    pub fn take_event_connections(
        &mut self,
    ) -> Option<tokio_stream::wrappers::ReceiverStream<std::io::Result<OverlayStream>>> {
        self.events_rx
            .take()
            .map(tokio_stream::wrappers::ReceiverStream::new)
    }

    /// Makes the peer table match `specs`: new peers get a fresh `Tunn`, changed ones
    /// (new key or address) are replaced, missing ones removed.
    fn set_peers(&mut self, specs: &[PeerSpec]) {
        let wanted: HashMap<[u8; 32], &PeerSpec> = specs.iter().map(|s| (s.key, s)).collect();
        let stale: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| wanted.get(&p.spec.key).is_none_or(|s| **s != p.spec))
            .map(|(i, _)| *i)
            .collect();
        for i in stale {
            if let Some(p) = self.peers.remove(&i) {
                self.by_key.remove(&p.spec.key);
                self.by_addr.remove(&p.spec.address);
                tracing::info!(server = %p.spec.name, "SideroLink peer removed");
            }
        }
        for spec in specs {
            if self.by_key.contains_key(&spec.key) {
                continue;
            }
            let index = self.next_index;
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if self.next_index == 0 {
                self.next_index = 1;
            }
            self.by_key.insert(spec.key, index);
            self.by_addr.insert(spec.address, index);
            self.peers.insert(
                index,
                Peer {
                    spec: spec.clone(),
                    tunn: None,
                    endpoint: None,
                    up: false,
                },
            );
            tracing::info!(server = %spec.name, address = %spec.address, "SideroLink peer added");
        }
        self.stats.peers.set(self.peers.len() as u64);
    }

    /// Runs until `shutdown`, following the peer set on `peers`.
    pub async fn run(
        mut self,
        mut peers: watch::Receiver<Arc<Vec<PeerSpec>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let specs = peers.borrow_and_update().clone();
        self.set_peers(&specs);
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        let mut rx = vec![0u8; MAX_DATAGRAM];
        let mut delay = None;
        let wake = self.overlay.wake();
        self.events_rx = None;
        loop {
            let sleep = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(3600)));
            tokio::select! {
                _ = shutdown.changed() => return,
                r = peers.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let specs = peers.borrow_and_update().clone();
                    self.set_peers(&specs);
                }
                r = self.socket.recv_from(&mut rx) => match r {
                    Ok((n, src)) => {
                        self.datagram(&rx[..n], src).await;
                        // Take what else is queued before running the stack once.
                        for _ in 0..64 {
                            match self.socket.try_recv_from(&mut rx) {
                                Ok((n, src)) => self.datagram(&rx[..n], src).await,
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "SideroLink UDP receive failed"),
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(4) {
                        self.limiters.screen.reset_count();
                    }
                    self.timers().await;
                }
                Some(req) = self.connect_rx.recv() => self.connect(req),
                _ = sleep => {}
                _ = wake.notified() => {}
            }
            delay = self.run_overlay().await;
        }
    }

    /// Starts an outbound connection if `req.to` is a peer with a live session.
    fn connect(&mut self, req: ConnectRequest) {
        let live = self
            .by_addr
            .get(&req.to)
            .and_then(|i| self.peers.get(i))
            .filter(|p| p.endpoint.is_some())
            .and_then(|p| p.tunn.as_ref()?.time_since_last_handshake())
            .is_some_and(|t| t < SESSION_LIVE);
        if !live {
            let _ = req.reply.send(Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no live SideroLink session with {}", req.to),
            )));
            return;
        }
        self.overlay.connect(req.to, req.port, req.reply);
    }

    async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.stats.tx_bytes.inc_by(bytes.len() as u64);
        if let Err(e) = self.socket.send_to(bytes, to).await {
            tracing::debug!(error = %e, %to, "SideroLink UDP send failed");
        }
    }

    async fn datagram(&mut self, datagram: &[u8], src: SocketAddr) {
        self.stats.datagrams.inc();
        self.stats.rx_bytes.inc_by(datagram.len() as u64);
        let public = self.identity.public_key();
        let screen = Screen {
            secret: self.identity.secret(),
            public: &public,
            limiter: &self.limiters.screen,
        };
        let by_key = &self.by_key;
        let (index, initiation) = match screen.screen(src.ip(), datagram, &mut self.buf, |k| {
            by_key.get(k).copied()
        }) {
            Screened::Cookie(cookie) => {
                let cookie = cookie.to_vec();
                self.stats.cookies.inc();
                self.send(src, &cookie).await;
                return;
            }
            Screened::Invalid => {
                self.stats.invalid.inc();
                return;
            }
            Screened::UnknownKey => {
                self.stats.unknown_key.inc();
                return;
            }
            Screened::Peer { index, initiation } => (index, initiation),
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            self.stats.unknown_index.inc();
            return;
        };
        if peer.tunn.is_none() && initiation {
            peer.tunn = Some(Box::new(Tunn::new(
                self.identity.secret().clone(),
                PublicKey::from(peer.spec.key),
                None,
                None,
                index,
                Some(self.limiters.tunn.clone()),
            )));
        }
        let Some(tunn) = peer.tunn.as_mut() else {
            // A response, cookie or data message for a peer that never initiated: no
            // session of it can exist.
            self.stats.rejected.inc();
            return;
        };
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut authentic = false;
        match tunn.decapsulate(Some(src.ip()), datagram, &mut self.buf) {
            TunnResult::Done => authentic = true,
            TunnResult::Err(_) => {
                self.stats.rejected.inc();
            }
            TunnResult::WriteToNetwork(p) => {
                authentic = true;
                if initiation {
                    self.stats.handshakes.inc();
                    if !peer.up {
                        peer.up = true;
                        self.timeline.record(
                            Who {
                                server: Some(peer.spec.name.clone()),
                                ..Default::default()
                            },
                            Step::SiderolinkUp,
                            Outcome::Ok,
                            format!(
                                "handshake from {src}, overlay address {}",
                                peer.spec.address
                            ),
                        );
                    }
                }
                replies.push(p.to_vec());
                // Flush packets queued while the handshake was pending.
                while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], &mut self.buf)
                {
                    replies.push(p.to_vec());
                }
            }
            TunnResult::WriteToTunnelV6(p, source) => {
                authentic = true;
                if source == peer.spec.address {
                    self.overlay.queues.rx.push_back(p.to_vec());
                    self.stats.delivered.inc();
                } else {
                    self.stats.spoofed.inc();
                    tracing::debug!(server = %peer.spec.name, %source, "SideroLink packet with a foreign source dropped");
                }
            }
            TunnResult::WriteToTunnelV4(..) => {
                authentic = true;
                self.stats.spoofed.inc();
            }
        }
        if authentic && peer.endpoint != Some(src) {
            // Roaming: the last authenticated source is where replies go.
            peer.endpoint = Some(src);
        }
        for r in replies {
            self.send(src, &r).await;
        }
    }

    async fn timers(&mut self) {
        let mut out = Vec::new();
        for peer in self.peers.values_mut() {
            let Some(tunn) = peer.tunn.as_mut() else {
                continue;
            };
            if let TunnResult::WriteToNetwork(p) = tunn.update_timers(&mut self.buf)
                && let Some(to) = peer.endpoint
            {
                out.push((to, p.to_vec()));
            }
        }
        for (to, p) in out {
            self.send(to, &p).await;
        }
    }

    /// Polls smoltcp, publishes decoded log lines, encrypts its output to the peers.
    async fn run_overlay(&mut self) -> Option<Duration> {
        let mut received = Vec::new();
        let mut streams = Vec::new();
        let delay = self.overlay.poll(&mut received, &mut streams);
        for s in streams {
            // A stream from an address that is no peer cannot exist (inner sources are
            // checked); a full queue drops the connection (the node reconnects).
            let _ = self.events_tx.try_send(Ok(s));
        }
        for Received { from, line } in received {
            let Some(peer) = self.by_addr.get(&from).and_then(|i| self.peers.get(i)) else {
                continue;
            };
            match line {
                Ok(line) => {
                    self.stats.log_lines.inc();
                    tracing::debug!(target: "siderolink::log", server = %peer.spec.name, msg = %line.msg);
                    let _ = self.logs.send(Arc::new(NodeLog {
                        server: peer.spec.name.clone(),
                        address: from,
                        line,
                    }));
                }
                Err(e) => {
                    self.stats.log_errors.inc();
                    tracing::debug!(server = %peer.spec.name, error = %e, "SideroLink log bytes dropped");
                }
            }
        }
        let mut out = Vec::new();
        while let Some(packet) = self.overlay.queues.tx.pop_front() {
            let Some(dst) = ipv6_destination(&packet) else {
                continue;
            };
            let Some(peer) = self.by_addr.get(&dst).and_then(|i| self.peers.get_mut(i)) else {
                continue;
            };
            let Some(tunn) = peer.tunn.as_mut() else {
                continue;
            };
            if let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&packet, &mut self.buf)
                && let Some(to) = peer.endpoint
            {
                out.push((to, p.to_vec()));
            }
        }
        for (to, p) in out {
            self.send(to, &p).await;
        }
        delay
    }
}

fn ipv6_destination(packet: &[u8]) -> Option<Ipv6Addr> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let b: [u8; 16] = packet[24..40].try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::x25519::StaticSecret;

    /// An endpoint on a loopback socket whose identity comes from `seed`, with one
    /// provisioned peer `node-{i}` (overlay host `i + 2`) for each secret, and the socket
    /// the tests' nodes send from.
    struct Fixture {
        endpoint: Endpoint,
        identity: Arc<Identity>,
        stats: Arc<Stats>,
        specs: Vec<PeerSpec>,
        client: UdpSocket,
        src: SocketAddr,
    }

    async fn fixture(seed: u8, handshake_limit: u64, secrets: &[StaticSecret]) -> Fixture {
        let identity = Arc::new(Identity::generate([seed; 64]));
        let stats: Arc<Stats> = Arc::default();
        let mut endpoint = Endpoint::new(
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            identity.clone(),
            &EndpointConfig {
                max_log_line: 1024,
                max_log_connections: 4,
                max_connections_per_node: 4,
                discard_port: None,
                handshake_limit,
            },
            1,
            stats.clone(),
        );
        let specs: Vec<PeerSpec> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| PeerSpec {
                name: format!("node-{i}"),
                key: PublicKey::from(s).to_bytes(),
                address: identity.prefix().with_host(i as u64 + 2),
            })
            .collect();
        endpoint.set_peers(&specs);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let src = client.local_addr().unwrap();
        Fixture {
            endpoint,
            identity,
            stats,
            specs,
            client,
            src,
        }
    }

    impl Fixture {
        /// `node` sends a handshake initiation; the endpoint's answer, written into `reply`,
        /// and its length.
        async fn initiate(&mut self, node: &mut Tunn, reply: &mut [u8]) -> usize {
            let mut buf = vec![0u8; 2048];
            let TunnResult::WriteToNetwork(init) = node.format_handshake_initiation(&mut buf, true)
            else {
                panic!("no initiation");
            };
            let init = init.to_vec();
            self.endpoint.datagram(&init, self.src).await;
            tokio::time::timeout(Duration::from_secs(5), self.client.recv(reply))
                .await
                .expect("no answer to an initiation")
                .unwrap()
        }
    }

    /// `LIMIT` provisioned peers each send one handshake initiation, all within one
    /// limiter second (`datagram` is driven directly, so the count is never reset): each
    /// is answered with a handshake response that completes the peer's session; only the
    /// next peer's initiation gets a cookie reply. With the screen and the `Tunn`s sharing
    /// one limiter, every initiation counted twice and peer LIMIT/2 + 1 got the cookie.
    #[tokio::test]
    async fn the_limiter_counts_each_handshake_once() {
        const LIMIT: u64 = 10;
        let secrets: Vec<StaticSecret> = (0..=LIMIT)
            .map(|i| StaticSecret::from([i as u8 + 1; 32]))
            .collect();
        let mut f = fixture(5, LIMIT, &secrets).await;
        let mut buf = vec![0u8; 2048];
        let mut reply = vec![0u8; 2048];
        for (i, secret) in secrets.iter().enumerate() {
            let mut node = Tunn::new(
                secret.clone(),
                f.identity.public_key(),
                None,
                None,
                i as u32,
                None,
            );
            let n = f.initiate(&mut node, &mut reply).await;
            if (i as u64) < LIMIT {
                assert_eq!(
                    (reply[0], n),
                    (2, 92),
                    "initiation {i} of {LIMIT} not answered with a handshake response"
                );
                assert!(
                    matches!(
                        node.decapsulate(None, &reply[..n], &mut buf),
                        TunnResult::WriteToNetwork(_)
                    ),
                    "node {i}: the response does not complete its handshake"
                );
                assert!(node.time_since_last_handshake().is_some());
            } else {
                assert_eq!(
                    (reply[0], n),
                    (3, 64),
                    "initiation over the limit: no cookie"
                );
            }
        }
        assert_eq!(f.stats.handshakes.get(), LIMIT);
        assert_eq!(f.stats.cookies.get(), 1);
    }

    /// A configured peer holds no `Tunn` (the bulk of a peer's memory) until it initiates
    /// a handshake; a data message naming a peer that never initiated is rejected without
    /// one being made; the initiating peer gets one and its handshake completes.
    #[tokio::test]
    async fn a_peer_gets_its_tunn_with_its_first_initiation() {
        let secrets: Vec<StaticSecret> =
            (0..3u8).map(|i| StaticSecret::from([i + 40; 32])).collect();
        let mut f = fixture(6, 100, &secrets).await;
        assert!(f.endpoint.peers.values().all(|p| p.tunn.is_none()));
        let index_of = |e: &Endpoint, i: usize| e.by_key[&f.specs[i].key];
        // A data message (type 4) to peer 1's index: rejected, no Tunn made.
        let mut data = vec![0u8; 32];
        data[0] = 4;
        data[4..8].copy_from_slice(&(index_of(&f.endpoint, 1) << 8).to_le_bytes());
        f.endpoint.datagram(&data, f.src).await;
        assert_eq!(f.stats.rejected.get(), 1);
        assert!(f.endpoint.peers.values().all(|p| p.tunn.is_none()));
        // Peer 0 initiates: it alone gets a Tunn, and the handshake completes.
        let mut node = Tunn::new(
            secrets[0].clone(),
            f.identity.public_key(),
            None,
            None,
            9,
            None,
        );
        let (mut buf, mut reply) = (vec![0u8; 2048], vec![0u8; 2048]);
        let n = f.initiate(&mut node, &mut reply).await;
        assert!(matches!(
            node.decapsulate(None, &reply[..n], &mut buf),
            TunnResult::WriteToNetwork(_)
        ));
        let with_tunn: Vec<&str> = f
            .endpoint
            .peers
            .values()
            .filter(|p| p.tunn.is_some())
            .map(|p| p.spec.name.as_str())
            .collect();
        assert_eq!(with_tunn, ["node-0"]);
        assert_eq!(f.stats.handshakes.get(), 1);
    }
}
