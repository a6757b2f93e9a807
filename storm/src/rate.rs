//! The DHCP-only rate mode of `scripts/bench dhcp` (`--stages dhcp --dora-once SECS`): machine
//! k sends its DISCOVER at `ramp * k / clients`, its REQUEST as soon as the OFFER comes, and
//! waits `SECS` for each answer, never retransmitting (as perfdhcp counts loss).
//!
//! The same exchange as `client::Client::dhcp` with one timer, the same frames on the wire
//! (`wire::dhcp_request` of the PXE stage, transaction id `Shared::xid(slot, 0)`), but
//! without a task, an inbox and a timer per machine: one loop wakes every millisecond (not
//! per packet), sends the DISCOVERs that are due, reads every reply that arrived in batches
//! (`recvmmsg`), sends the REQUESTs their OFFERs call for (`sendmmsg`) and ends the waits
//! that ran out, so that the generator stays cheap at tens of thousands of DORA/s. A reply
//! waits at most a tick before it is read; no wait is shortened by it.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::v4::MessageType;

use crate::client::{Outcome, mac};
use crate::packet::{Link, RecvBatch};
use crate::storm::Options;
use crate::wire::{self, DhcpClient, Frame, Stage};

/// Frames read per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// How often the loop wakes.
const TICK: Duration = Duration::from_millis(1);

/// Where one machine's exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not powered on yet.
    Off,
    /// DISCOVER sent, waiting for the OFFER.
    Discovering,
    /// REQUEST sent, waiting for the ACK.
    Requesting,
    /// ACKed.
    Done,
    /// The wait for an OFFER ran out.
    NoOffer,
    /// The wait for an ACK ran out.
    NoAck,
    /// NAKed instead of offered.
    NakDiscover,
    /// NAKed instead of ACKed.
    NakRequest,
}

impl Phase {
    /// The failure reason, worded as `client::Client::dhcp` words it.
    fn failure(self) -> Option<&'static str> {
        match self {
            Phase::NoOffer => Some("dhcp Pxe discover: no Offer after 1 tries"),
            Phase::NoAck => Some("dhcp Pxe request: no Ack after 1 tries"),
            Phase::NakDiscover => Some("dhcp Pxe discover: NAK"),
            Phase::NakRequest => Some("dhcp Pxe request: NAK"),
            _ => None,
        }
    }
}

/// One machine of the run.
struct Machine {
    phase: Phase,
    /// Power-on (its DISCOVER).
    t0: Instant,
    /// The address ACKed and the wall clock then (Unix ms).
    ack: Option<(Ipv4Addr, u64)>,
}

/// What a rate run did, for `storm::Report`.
pub struct Tally {
    pub completed: usize,
    pub failed: usize,
    pub reasons: BTreeMap<String, usize>,
    /// Seconds from the first DISCOVER to the last answer or the last wait's end.
    pub last_done: f64,
    /// Every machine's account, when `--outcomes` asked for it.
    pub outcomes: Vec<Outcome>,
}

/// The identity (MAC, UUID) of storm slot `slot`.
fn identity(opts: &Options, slot: usize) -> usize {
    opts.first + opts.macs.map_or(slot, |m| slot % m.max(1))
}

/// The DHCP client of storm slot `slot`.
fn dhcp_client(opts: &Options, xid: u32, slot: usize) -> DhcpClient {
    let i = identity(opts, slot);
    DhcpClient {
        mac: mac(i),
        uuid: crate::client::uuid_bytes(&crate::synthetic_agent::uuid(i)),
        xid,
    }
}

/// A DHCP request of the PXE stage, broadcast in a frame from the machine's MAC.
fn frame(c: &DhcpClient, requested: Option<(Ipv4Addr, Ipv4Addr)>, secs: u16) -> Vec<u8> {
    wire::udp_frame(
        wire::BROADCAST,
        c.mac,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        &wire::dhcp_request(c, Stage::Pxe, requested, secs),
    )
}

/// A DHCP reply in `f` for a machine waiting for one: its slot, the transaction id and
/// the reply.
fn reply_to(f: &[u8], xid0: u32, machines: &[Machine]) -> Option<(usize, u32, wire::DhcpReply)> {
    let Frame::Udp { src, dst, payload } = wire::parse(f) else {
        return None;
    };
    if src.port() != 67 || dst.port() != 68 {
        return None;
    }
    let x = wire::bootreply_xid(payload)?;
    let off = x.wrapping_sub(xid0);
    if off & 3 != 0 {
        return None; // not the PXE round's transaction id
    }
    let k = (off >> 2) as usize;
    let waiting = machines.get(k)?.phase;
    if !matches!(waiting, Phase::Discovering | Phase::Requesting) {
        return None;
    }
    Some((k, x, wire::dhcp_reply(payload)?))
}

/// Runs `opts.clients` DORAs, each waiting `wait` for each answer, on `link`; the xid of
/// slot k is `xid(k)`.
pub async fn run(
    opts: &Options,
    wait: Duration,
    link: &Link,
    xid: impl Fn(usize) -> u32,
) -> std::io::Result<Tally> {
    let n = opts.clients;
    let xid0 = xid(0);
    let mut machines: Vec<Machine> = Vec::with_capacity(n);
    let start = appliance::clock::now();
    for _ in 0..n {
        machines.push(Machine {
            phase: Phase::Off,
            t0: start,
            ack: None,
        });
    }
    // The waits in the order they end (every wait is `wait` long: the order they began),
    // each with the phase it waits in.
    let mut waits: VecDeque<(Instant, usize, Phase)> = VecDeque::new();
    let mut batch = RecvBatch::new(RECV_BATCH, 2048);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut next = 0usize; // the next machine to power on
    let mut open = 0usize; // machines waiting for an answer
    let mut last_done = start;
    let power_on = |k: usize| start + opts.ramp.mul_f64(k as f64 / n.max(1) as f64);
    while next < n || open > 0 {
        let now = appliance::clock::now();
        // Machines due: their DISCOVER.
        while next < n && power_on(next) <= now {
            let c = dhcp_client(opts, xid(next), next);
            out.push(frame(&c, None, 0));
            machines[next].phase = Phase::Discovering;
            machines[next].t0 = now;
            waits.push_back((now + wait, next, Phase::Discovering));
            next += 1;
            open += 1;
        }
        // Replies: the REQUESTs their OFFERs call for, the ACKs and NAKs that end waits.
        while link.try_recv_batch(&mut batch)?.is_some() {
            let now = appliance::clock::now();
            for f in batch.frames() {
                let Some((k, x, r)) = reply_to(f, xid0, &machines) else {
                    continue;
                };
                let m = &mut machines[k];
                match (m.phase, r.kind) {
                    (Phase::Discovering, MessageType::Offer) => {
                        let server = r.server.unwrap_or(r.siaddr);
                        let secs = now
                            .duration_since(m.t0)
                            .as_secs_f64()
                            .min(f64::from(u16::MAX));
                        let c = dhcp_client(opts, x, k);
                        out.push(frame(&c, Some((r.yiaddr, server)), secs as u16));
                        m.phase = Phase::Requesting;
                        waits.push_back((now + wait, k, Phase::Requesting));
                    }
                    // As `Client::exchange`: a NAK ends the exchange, at DISCOVER too.
                    (Phase::Discovering, MessageType::Nak) => {
                        m.phase = Phase::NakDiscover;
                        open -= 1;
                        last_done = last_done.max(now);
                    }
                    (Phase::Requesting, MessageType::Ack) => {
                        m.phase = Phase::Done;
                        m.ack = Some((r.yiaddr, appliance::clock::unix_ms()));
                        open -= 1;
                        last_done = last_done.max(now);
                    }
                    (Phase::Requesting, MessageType::Nak) => {
                        m.phase = Phase::NakRequest;
                        open -= 1;
                        last_done = last_done.max(now);
                    }
                    _ => {}
                }
            }
        }
        link.send_batch(&out).await?;
        out.clear();
        // Waits that ran out by the start of this tick (a reply that came before was read
        // above).
        while let Some(&(until, k, waiting)) = waits.front() {
            if until > now {
                break;
            }
            waits.pop_front();
            let m = &mut machines[k];
            if m.phase != waiting {
                continue; // answered in time
            }
            m.phase = match waiting {
                Phase::Discovering => Phase::NoOffer,
                _ => Phase::NoAck,
            };
            open -= 1;
            last_done = last_done.max(until);
        }
        tokio::time::sleep(TICK).await;
    }
    let mut reasons = BTreeMap::new();
    let mut failed = 0;
    for m in &machines {
        if let Some(why) = m.phase.failure() {
            failed += 1;
            *reasons.entry(why.to_string()).or_insert(0) += 1;
        }
    }
    let outcomes = if opts.outcomes.is_some() {
        machines
            .iter()
            .enumerate()
            .map(|(k, m)| Outcome {
                failed: m.phase.failure().map(str::to_string),
                i: identity(opts, k),
                acks: m.ack.into_iter().collect(),
                ..Outcome::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Tally {
        completed: n - failed,
        failed,
        reasons,
        last_done: last_done.duration_since(start).as_secs_f64(),
        outcomes,
    })
}
