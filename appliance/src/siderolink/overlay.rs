//! The overlay's TCP/IP stack: smoltcp on a `phy::Device` that is fed the IPv6 packets
//! WireGuard decapsulated (already checked to come from the sending peer's own address)
//! and whose output the endpoint encrypts to the peer owning the destination address.
//! Server address `<prefix>::1/64`, MTU 1280 (as Sidero's link).
//!
//! Inside it, the TCP 4001 log receiver: a pool of smoltcp TCP sockets (one always
//! listening, bounded in total and per node: [`ConnLimits`]), each connection with its own streaming
//! [`LogDecoder`]; every decoded line is attributed by the connection's remote address,
//! i.e. the tunnel address of the peer that sent it. And the TCP 4002 event sink's
//! connections, handed out as [`OverlayStream`]s for tonic (see `stream`).
//!
//! Outbound too: [`Overlay::connect`] opens a TCP connection from `<prefix>::1` to a node
//! (the Talos machine API for a reset without BMC, `reset`); the stream is handed over once
//! the handshake completes, or the connection error when smoltcp gives up.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use tokio::sync::{Notify, oneshot};

use super::stream::{OverlayStream, PIPE_CAP, Pipe};
use crate::metrics::Counter;
use crate::protocol::siderolink::address::Prefix;
use crate::protocol::siderolink::logline::{LogDecoder, LogLine, LogLineError};

/// The overlay link MTU (Sidero's `LinkMTU`).
pub const MTU: usize = 1280;
/// The log receiver's port.
pub const LOG_PORT: u16 = 4001;
/// The event sink's port (gRPC).
pub const EVENTS_PORT: u16 = 4002;
/// Receive window of the bench-only discard port.
const DISCARD_WINDOW: usize = 256 * 1024;
/// Each log connection's receive window. Talos sends a few lines a minute once booted;
/// 100 nodes at 320 lines/s each (`scripts/bench siderolink`) need no more, and every
/// connected node holds it for as long as it is up (16 KiB was most of a node's RSS).
const LOG_WINDOW: usize = 8 * 1024;
/// Each log connection's send buffer: the box sends nothing on it but ACKs and its FIN.
const LOG_TX: usize = 1024;
/// Each event sink connection's TCP buffers, each way. Talos holds one open per node and
/// sends an event of a few hundred bytes now and then; at 64 KiB each way (the size of an
/// outbound connection's) 10,000 idle nodes would hold 1.25 GiB of buffers.
const EVENTS_BUF: usize = 16 * 1024;

/// Packets in and out of smoltcp.
#[derive(Debug, Default)]
pub struct Queues {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}

impl Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

/// One decoded line, or why bytes produced none, from the node at `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: Ipv6Addr,
    pub line: Result<LogLine, LogLineError>,
}

/// The node sent FIN (or the connection is gone). Not `!may_recv()`: that also holds
/// while the handshake is still in SYN-RECEIVED.
fn peer_finished(s: &tcp::Socket) -> bool {
    use tcp::State::*;
    matches!(s.state(), CloseWait | LastAck | Closing | TimeWait | Closed)
}

enum ConnKind {
    Log(LogDecoder),
    /// Over its node's share ([`ConnLimits::per_node`]): aborted, kept until smoltcp sent
    /// its RST.
    Refused,
    /// The bench-only discard port: read and dropped.
    Discard,
    Stream(Arc<Mutex<Pipe>>),
}

struct Conn {
    handle: SocketHandle,
    kind: ConnKind,
    /// The node that opened it (its overlay address); none for the box's own outbound
    /// connections.
    from: Option<Ipv6Addr>,
}

/// Bounds on the connections nodes open into the overlay (logs, events).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// All nodes together (`[siderolink] max_connections`): past it no socket listens, so
    /// a new connection is reset by smoltcp.
    pub total: usize,
    /// Per node, counted by overlay source address, which the endpoint has checked is the
    /// sending peer's own (`[siderolink] max_connections_per_node`): one node cannot hold
    /// every slot. The connection over it is reset at its SYN.
    pub per_node: usize,
    /// Connections refused by `per_node`.
    pub refused_per_node: Counter,
}

/// The answer to an outbound connect: the stream once established, or why not.
pub type ConnectReply = oneshot::Sender<std::io::Result<OverlayStream>>;

/// An outbound connection still in its handshake.
struct Pending {
    handle: SocketHandle,
    pipe: Arc<Mutex<Pipe>>,
    remote: Ipv6Addr,
    reply: ConnectReply,
}

/// Local ports of outbound connections: the IANA dynamic range.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;
/// An outbound connect that is not established within this time fails.
const CONNECT_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(10);

impl Drop for Overlay {
    /// The endpoint stopped: every stream ends (reads see EOF, writes fail), so the gRPC
    /// server holding them can finish its shutdown.
    fn drop(&mut self) {
        for c in &self.conns {
            if let ConnKind::Stream(pipe) = &c.kind {
                let mut p = pipe.lock().unwrap_or_else(|e| e.into_inner());
                p.peer_closed = true;
                p.reset = true;
                p.wake_reader();
                p.wake_writer();
            }
        }
    }
}

/// smoltcp interface + socket set + the log receiver's and event sink's connections.
pub struct Overlay {
    pub queues: Queues,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// Listening sockets: (port, handle).
    listeners: Vec<(u16, Option<SocketHandle>)>,
    conns: Vec<Conn>,
    pending: Vec<Pending>,
    next_port: u16,
    limits: ConnLimits,
    max_line: usize,
    start: std::time::Instant,
    wake: Arc<Notify>,
}

impl Overlay {
    /// An overlay answering on `<prefix>::1`; `seed` randomises TCP sequence numbers.
    /// `discard`: a port whose connections are read and dropped (benchmarks only).
    pub fn new(
        prefix: Prefix,
        seed: u64,
        limits: ConnLimits,
        max_line: usize,
        discard: Option<u16>,
    ) -> Overlay {
        let mut queues = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let start = crate::clock::now();
        let mut iface = Interface::new(config, &mut queues, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(prefix.server_address()), 64));
        });
        let mut o = Overlay {
            queues,
            iface,
            sockets: SocketSet::new(Vec::new()),
            listeners: [LOG_PORT, EVENTS_PORT]
                .into_iter()
                .chain(discard)
                .map(|p| (p, None))
                .collect(),
            conns: Vec::new(),
            pending: Vec::new(),
            next_port: *EPHEMERAL.start() + (seed % 16_384) as u16,
            limits: ConnLimits {
                total: limits.total.max(1),
                per_node: limits.per_node.max(1),
                ..limits
            },
            max_line,
            start,
            wake: Arc::new(Notify::new()),
        };
        o.listen();
        o
    }

    /// Notified when a stream has bytes to send or room to receive: poll again.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as i64)
    }

    /// Keeps one listening socket per port while there is room for connections.
    fn listen(&mut self) {
        for i in 0..self.listeners.len() {
            let (port, handle) = self.listeners[i];
            if handle.is_some() || self.conns.len() >= self.limits.total {
                continue;
            }
            let (rx, tx) = match port {
                LOG_PORT => (LOG_WINDOW, LOG_TX),
                EVENTS_PORT => (EVENTS_BUF, EVENTS_BUF),
                _ => (DISCARD_WINDOW, 1024),
            };
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; rx]),
                tcp::SocketBuffer::new(vec![0; tx]),
            );
            // A node that vanishes without FIN does not hold a slot forever.
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(300)));
            s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
            if s.listen(port).is_ok() {
                self.listeners[i].1 = Some(self.sockets.add(s));
            }
        }
    }

    /// Moves every listener that got a connection into `conns` (event connections also
    /// into `streams`) and listens again.
    fn accept(&mut self, streams: &mut Vec<OverlayStream>) {
        let mut accepted = false;
        for i in 0..self.listeners.len() {
            let (port, Some(h)) = self.listeners[i] else {
                continue;
            };
            let s = self.sockets.get::<tcp::Socket>(h);
            if !s.is_active() {
                continue;
            }
            let remote = match s.remote_endpoint().map(|e| e.addr) {
                Some(IpAddress::Ipv6(a)) => a,
                _ => Ipv6Addr::UNSPECIFIED,
            };
            self.listeners[i].1 = None;
            accepted = true;
            let held = self.conns.iter().filter(|c| c.from == Some(remote)).count();
            if held >= self.limits.per_node {
                // Reset at its SYN: the node's connect fails at once.
                self.sockets.get_mut::<tcp::Socket>(h).abort();
                self.limits.refused_per_node.inc();
                tracing::debug!(node = %remote, port, held, "SideroLink connection refused: the node holds its share of connections");
                self.conns.push(Conn {
                    handle: h,
                    kind: ConnKind::Refused,
                    from: None,
                });
                continue;
            }
            let kind = match port {
                LOG_PORT => ConnKind::Log(LogDecoder::new(self.max_line)),
                EVENTS_PORT => {
                    let pipe = Arc::new(Mutex::new(Pipe::default()));
                    streams.push(OverlayStream::new(pipe.clone(), remote, self.wake.clone()));
                    ConnKind::Stream(pipe)
                }
                _ => ConnKind::Discard,
            };
            self.conns.push(Conn {
                handle: h,
                kind,
                from: Some(remote),
            });
        }
        if accepted {
            self.listen();
        }
    }

    /// Open connections (logs and events).
    pub fn connections(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| !matches!(c.kind, ConnKind::Refused))
            .count()
    }

    /// Starts a TCP connection from the server address to `[to]:port` inside the overlay;
    /// `reply` gets the stream once it is established (or the error). The caller checks
    /// that `to` belongs to a peer with a session; packets go out on the next `poll`.
    pub fn connect(&mut self, to: Ipv6Addr, port: u16, reply: ConnectReply) {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; PIPE_CAP]),
            tcp::SocketBuffer::new(vec![0; PIPE_CAP]),
        );
        s.set_timeout(Some(CONNECT_TIMEOUT));
        s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
        let local = self.next_port;
        self.next_port = if local == *EPHEMERAL.end() {
            *EPHEMERAL.start()
        } else {
            local + 1
        };
        if let Err(e) = s.connect(self.iface.context(), (IpAddress::Ipv6(to), port), local) {
            let _ = reply.send(Err(std::io::Error::other(format!(
                "overlay connect to [{to}]:{port}: {e}"
            ))));
            return;
        }
        let handle = self.sockets.add(s);
        self.pending.push(Pending {
            handle,
            pipe: Arc::new(Mutex::new(Pipe::default())),
            remote: to,
            reply,
        });
        self.wake.notify_one();
    }

    /// Hands established outbound connections to their callers (they become streams) and
    /// fails the ones smoltcp gave up on (refused, timed out) or whose caller left.
    fn settle_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let s = self.sockets.get_mut::<tcp::Socket>(p.handle);
            let state = s.state();
            let gone = p.reply.is_closed();
            if !gone && state != tcp::State::Established && state != tcp::State::Closed {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            if state == tcp::State::Closed {
                self.sockets.remove(p.handle);
                let _ = p.reply.send(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("overlay connection to [{}] refused or timed out", p.remote),
                )));
                continue;
            }
            // Established (or its caller left): from now on an ordinary stream connection,
            // which the poll loop closes once its stream is dropped.
            let s = self.sockets.get_mut::<tcp::Socket>(p.handle);
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(300)));
            let stream = OverlayStream::new(p.pipe.clone(), p.remote, self.wake.clone());
            if gone || p.reply.send(Ok(stream)).is_err() {
                // The stream was dropped with the reply: its Drop marked the pipe closed.
                s.abort();
            }
            self.conns.push(Conn {
                handle: p.handle,
                kind: ConnKind::Stream(p.pipe),
                from: None,
            });
        }
    }

    /// Runs the stack over the queued input, reads the log connections, moves bytes of
    /// the event connections, and returns when smoltcp next wants to be polled (None: only
    /// on input). New event connections are appended to `streams`.
    pub fn poll(
        &mut self,
        out: &mut Vec<Received>,
        streams: &mut Vec<OverlayStream>,
    ) -> Option<std::time::Duration> {
        let mut buf = [0u8; 4096];
        loop {
            let now = self.now();
            // One packet at a time, taking each new connection off its listener before the
            // next packet: a second SYN in the same batch (many nodes connecting at once)
            // then finds a fresh listener instead of smoltcp's RST.
            while self
                .iface
                .poll_ingress_single(now, &mut self.queues, &mut self.sockets)
                != PollIngressSingleResult::None
            {
                self.accept(streams);
            }
            self.iface
                .poll_egress(now, &mut self.queues, &mut self.sockets);
            self.accept(streams);
            self.settle_pending();
            let mut moved = false;
            let mut i = 0;
            while i < self.conns.len() {
                let c = &mut self.conns[i];
                let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
                // A refused connection goes once its RST is out (smoltcp then forgets the
                // remote end).
                let closed = match c.kind {
                    ConnKind::Refused => s.remote_endpoint().is_none(),
                    _ => !s.is_active(),
                };
                match &mut c.kind {
                    ConnKind::Refused => {}
                    ConnKind::Log(decoder) => {
                        let from = match s.remote_endpoint().map(|e| e.addr) {
                            Some(IpAddress::Ipv6(a)) => Some(a),
                            _ => None,
                        };
                        let mut lines = Vec::new();
                        while s.can_recv() {
                            match s.recv_slice(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    moved = true;
                                    decoder.push(&buf[..n], &mut lines);
                                }
                            }
                        }
                        if s.state() == tcp::State::CloseWait {
                            // The node closed its side: decode what is left, close ours.
                            decoder.finish(&mut lines);
                            s.close();
                        }
                        if let Some(from) = from {
                            out.extend(lines.into_iter().map(|line| Received { from, line }));
                        }
                    }
                    ConnKind::Discard => {
                        while s.can_recv() {
                            match s.recv(|b| (b.len(), b.len())) {
                                Ok(0) | Err(_) => break,
                                Ok(_) => moved = true,
                            }
                        }
                        if s.state() == tcp::State::CloseWait {
                            s.close();
                        }
                    }
                    ConnKind::Stream(pipe) => {
                        let mut p = pipe.lock().unwrap_or_else(|e| e.into_inner());
                        let mut woke_reader = false;
                        while s.can_recv() && p.inbound.len() < PIPE_CAP {
                            let room = (PIPE_CAP - p.inbound.len()).min(buf.len());
                            match s.recv_slice(&mut buf[..room]) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    moved = true;
                                    woke_reader = true;
                                    p.inbound.extend(&buf[..n]);
                                }
                            }
                        }
                        if peer_finished(s) && !p.peer_closed {
                            p.peer_closed = true;
                            woke_reader = true;
                        }
                        let mut woke_writer = false;
                        while !p.outbound.is_empty() && s.can_send() {
                            let (a, _) = p.outbound.as_slices();
                            match s.send_slice(a) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    moved = true;
                                    woke_writer = true;
                                    p.outbound.drain(..n);
                                }
                            }
                        }
                        if p.app_closed && p.outbound.is_empty() && s.is_open() {
                            s.close();
                        }
                        if closed {
                            p.peer_closed = true;
                            p.reset = true;
                            woke_reader = true;
                            woke_writer = true;
                        }
                        if woke_reader {
                            p.wake_reader();
                        }
                        if woke_writer {
                            p.wake_writer();
                        }
                    }
                }
                if closed {
                    self.sockets.remove(c.handle);
                    self.conns.swap_remove(i);
                    self.listen();
                } else {
                    i += 1;
                }
            }
            // Moved bytes free windows or queue output: let smoltcp act before sleeping.
            if !moved {
                break;
            }
        }
        self.iface
            .poll_delay(self.now(), &self.sockets)
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }
}
