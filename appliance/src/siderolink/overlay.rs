//! The overlay's TCP/IP stack: smoltcp on a `phy::Device` that is fed the IPv6 packets
//! WireGuard decapsulated (already checked to come from the sending peer's own address)
//! and whose output the endpoint encrypts to the peer owning the destination address.
//! Server address `<prefix>::1/64`, MTU 1280 (as Sidero's link).
//!
//! Inside it, the TCP 4001 log receiver: a pool of smoltcp TCP sockets (one always
//! listening, bounded in total), each connection with its own streaming
//! [`LogDecoder`]; every decoded line is attributed by the connection's remote address,
//! i.e. the tunnel address of the peer that sent it.

use std::collections::VecDeque;
use std::net::Ipv6Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::protocol::siderolink::address::Prefix;
use crate::protocol::siderolink::logline::{LogDecoder, LogLine, LogLineError};

/// The overlay link MTU (Sidero's `LinkMTU`).
pub const MTU: usize = 1280;
/// The log receiver's port.
pub const LOG_PORT: u16 = 4001;

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

struct Conn {
    handle: SocketHandle,
    decoder: LogDecoder,
}

/// smoltcp interface + socket set + the log receiver's connections.
pub struct Overlay {
    pub queues: Queues,
    iface: Interface,
    sockets: SocketSet<'static>,
    listener: Option<SocketHandle>,
    conns: Vec<Conn>,
    max_conns: usize,
    max_line: usize,
    start: std::time::Instant,
}

impl Overlay {
    /// An overlay answering on `<prefix>::1`; `seed` randomises TCP sequence numbers.
    pub fn new(prefix: Prefix, seed: u64, max_conns: usize, max_line: usize) -> Overlay {
        let mut queues = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let start = std::time::Instant::now();
        let mut iface = Interface::new(config, &mut queues, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(prefix.server_address()), 64));
        });
        let mut o = Overlay {
            queues,
            iface,
            sockets: SocketSet::new(Vec::new()),
            listener: None,
            conns: Vec::new(),
            max_conns: max_conns.max(1),
            max_line,
            start,
        };
        o.listen();
        o
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as i64)
    }

    fn listen(&mut self) {
        if self.listener.is_some() || self.conns.len() >= self.max_conns {
            return;
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            tcp::SocketBuffer::new(vec![0; 1024]),
        );
        // A node that vanishes without FIN does not hold a slot forever.
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(300)));
        s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
        if s.listen(LOG_PORT).is_ok() {
            self.listener = Some(self.sockets.add(s));
        }
    }

    /// Open log connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Runs the stack over the queued input, reads the log connections, and returns when
    /// smoltcp next wants to be polled (None: only on input).
    pub fn poll(&mut self, out: &mut Vec<Received>) -> Option<std::time::Duration> {
        let mut buf = [0u8; 4096];
        loop {
            let now = self.now();
            self.iface.poll(now, &mut self.queues, &mut self.sockets);
            if let Some(h) = self.listener
                && self.sockets.get::<tcp::Socket>(h).is_active()
            {
                self.listener = None;
                self.conns.push(Conn {
                    handle: h,
                    decoder: LogDecoder::new(self.max_line),
                });
                self.listen();
            }
            let mut read_any = false;
            let mut i = 0;
            while i < self.conns.len() {
                let c = &mut self.conns[i];
                let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
                let from = match s.remote_endpoint().map(|e| e.addr) {
                    Some(IpAddress::Ipv6(a)) => Some(a),
                    _ => None,
                };
                let mut lines = Vec::new();
                while s.can_recv() {
                    match s.recv_slice(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            read_any = true;
                            c.decoder.push(&buf[..n], &mut lines);
                        }
                    }
                }
                let closed = !s.is_active();
                if !s.may_recv() && s.is_active() {
                    // The node closed its side: decode what is left and close ours.
                    c.decoder.finish(&mut lines);
                    s.close();
                }
                if let Some(from) = from {
                    out.extend(lines.into_iter().map(|line| Received { from, line }));
                }
                if closed {
                    self.sockets.remove(c.handle);
                    self.conns.swap_remove(i);
                    self.listen();
                } else {
                    i += 1;
                }
            }
            // Reading freed receive windows: let smoltcp announce them before sleeping.
            if !read_any {
                break;
            }
        }
        self.iface
            .poll_delay(self.now(), &self.sockets)
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }
}
