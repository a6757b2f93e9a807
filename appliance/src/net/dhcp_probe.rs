//! Rogue DHCP detection, the glue around `protocol::dhcp::probe`: at start and every
//! `dhcp.probe_interval_secs` the box broadcasts its own DISCOVER on each provisioning
//! interface (through `net/packet.rs`, as a client sends it: from 0.0.0.0, never looped
//! back to the box's own DHCP service) and listens for [`PROBE_WAIT`] on a packet socket (AF_PACKET, CAP_NET_RAW,
//! with a BPF filter for UDP to port 68), so offers a server unicasts to the offered
//! address at our MAC are seen as well as broadcast ones. Offers from servers other than
//! the box and `dhcp.expected_servers` are rogue: each is logged (warn, with the server's
//! MAC and addresses), counted on `/metrics` (`appliance_rogue_dhcp_servers`) and shown as
//! a banner on the console's overview, until a later round sees it no more.
//!
//! The sockets exist only during a round; a round that cannot open them (no CAP_NET_RAW)
//! logs why and counts a failed probe.
//!
//! May touch: sockets, the clock, the OS random source (the transaction id).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::sync::watch;

use crate::metrics::{Counter, Gauge, Labeled, Registry};
use crate::model::mac::MacAddr;
use crate::net::iface::Interface;
use crate::net::packet::{PacketSocket, hardware_address};
use crate::protocol::dhcp::link::{ETH_P_IP, ipv4_udp};
use crate::protocol::dhcp::probe::{OfferFrom, OfferSeen, Probe};

/// How long a round listens for offers after its DISCOVER.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);

/// A server that offered on the provisioning segment without being the box or expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RogueServer {
    /// Ethernet source of its offer, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub source_ip: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub offered: Ipv4Addr,
    /// Unix seconds of the first round (of an unbroken run of rounds) that saw it.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// What the probe found, shared with `/metrics` and the console.
#[derive(Debug, Default)]
pub struct RogueWatch {
    state: Mutex<WatchState>,
    /// Rogue servers seen by the last round.
    servers: Gauge,
    /// Probe rounds completed.
    probes_ok: Counter,
    /// Rounds that could not probe (socket errors).
    probes_failed: Counter,
}

#[derive(Debug, Default)]
struct WatchState {
    rogues: Vec<RogueServer>,
    last_round: Option<u64>,
}

impl RogueWatch {
    /// Adds the rogue DHCP families to `/metrics`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_rogue_dhcp_servers",
            "DHCP servers other than the box and dhcp.expected_servers that answered the last probe",
            self.servers.clone(),
        );
        r.register(
            "appliance_dhcp_probes",
            "Rogue DHCP probe rounds, by result",
            Labeled::new(
                "result",
                [
                    ("ok", self.probes_ok.clone()),
                    ("failed", self.probes_failed.clone()),
                ],
            ),
        );
    }

    /// Rogue servers seen by the last completed round.
    pub fn rogues(&self) -> Vec<RogueServer> {
        self.state.lock().expect("rogue watch").rogues.clone()
    }

    /// Unix seconds of the last completed round, if any.
    pub fn last_round(&self) -> Option<u64> {
        self.state.lock().expect("rogue watch").last_round
    }

    /// Records a completed round's rogue offers (several offers from one server count once).
    fn finish_round(&self, now: u64, offers: &[OfferSeen]) {
        let mut st = self.state.lock().expect("rogue watch");
        let mut next: Vec<RogueServer> = Vec::new();
        for o in offers.iter().filter(|o| o.from == OfferFrom::Rogue) {
            let mac = fmt_mac(&o.server_mac);
            if next
                .iter()
                .any(|r| r.mac == mac && r.source_ip == o.source_ip)
            {
                continue;
            }
            let first_seen = st
                .rogues
                .iter()
                .find(|r| r.mac == mac && r.source_ip == o.source_ip)
                .map_or(now, |r| r.first_seen);
            next.push(RogueServer {
                mac,
                source_ip: o.source_ip,
                server_id: o.server_id,
                offered: o.offered,
                first_seen,
                last_seen: now,
            });
        }
        self.servers.set(next.len() as u64);
        self.probes_ok.inc();
        st.rogues = next;
        st.last_round = Some(now);
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    MacAddr(*m).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0} has no Ethernet hardware address")]
    Mac(String),
    #[error("cannot open the packet socket (needs CAP_NET_RAW)")]
    PacketSocket(#[source] std::io::Error),
    #[error("cannot send the probe DISCOVER on {0}")]
    Send(String, #[source] std::io::Error),
    #[error("cannot read from the packet socket")]
    Receive(#[source] std::io::Error),
}

/// The periodic probe, spawned by `app.rs` when DHCP runs.
#[derive(Debug)]
pub struct ProbeTask {
    /// The provisioning interfaces DHCP serves; each is probed every round.
    pub interfaces: Vec<Interface>,
    pub interval: Duration,
    pub expected: Vec<Ipv4Addr>,
    pub watch: Arc<RogueWatch>,
}

impl ProbeTask {
    /// Probes now and every `interval` until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let own: Vec<Ipv4Addr> = self.interfaces.iter().map(|i| i.addr).collect();
        loop {
            let mut offers = Vec::new();
            let mut failed = false;
            for iface in &self.interfaces {
                let round = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    r = round(iface.name.clone(), own.clone(), self.expected.clone()) => r,
                };
                match round {
                    Ok(seen) => {
                        report(&iface.name, &seen);
                        offers.extend(seen);
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(
                            interface = %iface.name,
                            error = %crate::error_chain(&e),
                            "dhcp probe: rogue DHCP detection could not probe"
                        );
                    }
                }
            }
            if failed {
                self.watch.probes_failed.inc();
            } else {
                self.watch.finish_round(crate::clock::unix_secs(), &offers);
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

/// Logs one interface's offers: each rogue (warn) and expected server (info), then a
/// summary line.
fn report(interface: &str, offers: &[OfferSeen]) {
    for o in offers {
        let server_mac = fmt_mac(&o.server_mac);
        let server_id = o.server_id.map(|s| s.to_string()).unwrap_or_default();
        match o.from {
            OfferFrom::Rogue => tracing::warn!(
                %interface,
                %server_mac,
                source_ip = %o.source_ip,
                %server_id,
                offered = %o.offered,
                unicast = o.unicast,
                "dhcp probe: ROGUE DHCP server offering on the provisioning segment"
            ),
            OfferFrom::Expected => tracing::info!(
                %interface,
                %server_mac,
                source_ip = %o.source_ip,
                %server_id,
                unicast = o.unicast,
                "dhcp probe: expected DHCP server offering (dhcp.expected_servers)"
            ),
            OfferFrom::Own => {}
        }
    }
    let rogue = offers.iter().filter(|o| o.from == OfferFrom::Rogue).count();
    tracing::info!(
        %interface,
        offers = offers.len(),
        rogue,
        "dhcp probe: round done"
    );
}

/// One round on one interface: open the capture, send the DISCOVER, collect offers for
/// [`PROBE_WAIT`] (blocking socket calls on a blocking thread, awaited here).
async fn round(
    name: String,
    own: Vec<Ipv4Addr>,
    expected: Vec<Ipv4Addr>,
) -> Result<Vec<OfferSeen>, ProbeError> {
    let mac = hardware_address(&name).ok_or_else(|| ProbeError::Mac(name.clone()))?;
    let mut xid = [0u8; 4];
    getrandom::fill(&mut xid).expect("the OS random source works");
    let probe = Probe {
        xid: u32::from_be_bytes(xid),
        mac,
    };
    tokio::task::spawn_blocking(move || {
        let capture = capture_socket().map_err(ProbeError::PacketSocket)?;
        send_discover(&name, &probe.discover()).map_err(|e| ProbeError::Send(name, e))?;
        let deadline = crate::clock::now() + PROBE_WAIT;
        let mut offers = Vec::new();
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(crate::clock::now());
            if left.is_zero() {
                return Ok(offers);
            }
            capture
                .set_read_timeout(Some(left))
                .map_err(ProbeError::Receive)?;
            match (&capture).read(&mut buf) {
                Ok(n) => offers.extend(probe.classify(&buf[..n], &own, &expected)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ProbeError::Receive(e)),
            }
        }
    })
    .await
    .expect("probe round thread")
}

/// An AF_PACKET socket on every interface, filtered to unfragmented IPv4 UDP to port 68
/// (frames start at the Ethernet header); the probe's transaction id and MAC pick ours.
fn capture_socket() -> std::io::Result<Socket> {
    let s = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
    )?;
    // ldh [12]; jeq IPv4; ldb [23]; jeq UDP; ldh [20]; jset fragment; ldxb 4*([14]&0xf);
    // ldh [x+16] (UDP destination port); jeq 68; accept; drop.
    let program = [
        SockFilter::new(0x28, 0, 0, 12),
        SockFilter::new(0x15, 0, 8, u32::from(ETH_P_IP)),
        SockFilter::new(0x30, 0, 0, 23),
        SockFilter::new(0x15, 0, 6, 17),
        SockFilter::new(0x28, 0, 0, 20),
        SockFilter::new(0x45, 4, 0, 0x1fff),
        SockFilter::new(0xb1, 0, 0, 14),
        SockFilter::new(0x48, 0, 0, 16),
        SockFilter::new(0x15, 0, 1, 68),
        SockFilter::new(0x06, 0, 0, 0xffff),
        SockFilter::new(0x06, 0, 0, 0),
    ];
    s.attach_filter(&program)?;
    Ok(s)
}

/// Broadcasts the DISCOVER as a client does (0.0.0.0:68 → 255.255.255.255:67, to
/// ff:ff:ff:ff:ff:ff) through the interface's packet socket: not looped back to the box's
/// own DHCP service.
fn send_discover(iface: &str, dhcp: &[u8]) -> std::io::Result<()> {
    let datagram = ipv4_udp(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        dhcp,
    );
    PacketSocket::open(iface)?.send(ETH_P_IP, [0xff; 6], &datagram)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(mac: u8, ip: u8, from: OfferFrom) -> OfferSeen {
        OfferSeen {
            server_mac: [2, 0, 0, 0, 0, mac],
            source_ip: Ipv4Addr::new(10, 0, 0, ip),
            server_id: Some(Ipv4Addr::new(10, 0, 0, ip)),
            offered: Ipv4Addr::new(10, 0, 0, 99),
            unicast: true,
            from,
        }
    }

    #[test]
    fn rounds_keep_rogues_until_a_round_sees_them_no_more() {
        let w = RogueWatch::default();
        assert!(w.rogues().is_empty() && w.last_round().is_none());
        w.finish_round(
            100,
            &[
                offer(1, 2, OfferFrom::Rogue),
                offer(1, 2, OfferFrom::Rogue),
                offer(3, 4, OfferFrom::Expected),
                offer(5, 1, OfferFrom::Own),
            ],
        );
        let r = w.rogues();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].mac, "02:00:00:00:00:01");
        assert_eq!((r[0].first_seen, r[0].last_seen), (100, 100));
        assert_eq!(w.servers.get(), 1);
        w.finish_round(200, &[offer(1, 2, OfferFrom::Rogue)]);
        assert_eq!(
            (w.rogues()[0].first_seen, w.rogues()[0].last_seen),
            (100, 200)
        );
        w.finish_round(300, &[]);
        assert!(w.rogues().is_empty());
        assert_eq!(w.last_round(), Some(300));
        assert_eq!((w.servers.get(), w.probes_ok.get()), (0, 3));
    }
}
