//! The DHCP decision machine: `handle(now, port, source, bytes)` → a [`Decision`] (a reply
//! and where to send it, plus lease changes to persist before sending), or a [`DropReason`].
//!
//! Two modes:
//! - **server**: IPAM for the configured pools (RFC 2131: DISCOVER/OFFER, REQUEST/ACK/NAK in
//!   the selecting, init-reboot, renewing and rebinding states, DECLINE, RELEASE, INFORM),
//!   static reservations by MAC, PXE boot information for network-boot clients.
//! - **proxy** (PXE spec proxyDHCP): beside another DHCP server; answers only PXE/HTTP-boot
//!   clients, on port 67 (DISCOVER → OFFER) and 4011 (REQUEST → ACK), with boot information
//!   and no address.
//!
//! One core serves every provisioning interface: a request is handled for the box address
//! of the interface it arrived on (`handle_on`), which is its server identifier, boot
//! server and the subnet that picks its pool.
//!
//! Replies go where RFC 2131 §4.1 says: to the relay, to `ciaddr`, broadcast when the client
//! asked for it (or for a NAK), else to `yiaddr` at the client's hardware address
//! ([`Destination::Link`]: the glue sends that frame itself, as the client has no address
//! to ARP for yet).
//!
//! ARP probing, kept off the reply path: the glue asks [`DhcpServer::probe_targets`] now and
//! then for the next addresses allocation will hand out, probes them, and reports what
//! answered to [`DhcpServer::arp_seen`]; an address some host answers for is held like a
//! DECLINEd one. A request never waits for a probe.
//!
//! Pure: no IO, no clock, no RNG. Time comes in as Unix seconds.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode, UnknownOption};

use super::boot::{self, BootConfig, BootInfo, ClientKind, Firmware};
use super::lease::{Lease, LeaseChange, LeaseState, LeaseTable};
use super::wire::{self, DropReason, Request};

/// How an offer is held for a client before another DISCOVER may get the address.
pub const OFFER_HOLD_SECS: u64 = 30;
/// Addresses per pool probed ahead of allocation.
pub const PROBE_AHEAD: usize = 4;
/// A probe answered by nobody clears its address for this long.
pub const PROBE_REFRESH_SECS: u64 = 300;
/// ARP from a probed address counts as an answer for this long after the probe.
pub const PROBE_ANSWER_SECS: u64 = 3;
/// Addresses looked at per pool per `probe_targets` call (bounds the scan of a full pool).
const PROBE_SCAN_LIMIT: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Server,
    Proxy,
}

/// The socket a datagram arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// UDP 67.
    Dhcp,
    /// UDP 4011 (PXE boot server / proxyDHCP requests).
    Pxe,
}

/// One address pool (server mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time_secs: u32,
}

/// A fixed address for one MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub mode: Mode,
    /// The box's addresses, one per provisioning interface (server identifier, boot server
    /// and local subnet of requests arriving there). The first is the one [`DhcpServer::handle`]
    /// serves for.
    pub server_ips: Vec<Ipv4Addr>,
    pub pools: Vec<Pool>,
    pub reservations: Vec<Reservation>,
    pub boot: BootConfig,
    /// How long a DECLINEd address is kept out of use.
    pub decline_hold_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerConfigError {
    #[error("pool {index}: {message}")]
    Pool { index: usize, message: String },
    #[error("reservation {index}: {message}")]
    Reservation { index: usize, message: String },
    #[error("server mode needs at least one pool")]
    NoPools,
    #[error("no server address (provisioning interface) configured")]
    NoServerAddress,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the provisioning interface.
    Broadcast,
    /// A client that has an address (or the source of a port-4011 request).
    Unicast(SocketAddrV4),
    /// A client without an address that did not ask for broadcast: `ip:68` sent straight to
    /// the hardware address `mac` on the interface the request came in on (no ARP).
    Link { ip: Ipv4Addr, mac: [u8; 6] },
    /// A relay agent (giaddr), port 67.
    Relay(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub packet: Vec<u8>,
    pub to: Destination,
    pub msg_type: MessageType,
    pub yiaddr: Ipv4Addr,
    /// The box address the reply is sent from (the interface the request came in on).
    pub from: Ipv4Addr,
    /// The client's Ethernet address (chaddr), for the boot timeline.
    pub client: Option<[u8; 6]>,
    /// The boot file the reply names, if any.
    pub boot_file: Option<String>,
    /// The request's vendor class (option 60) as text, e.g. `HTTPClient:Arch:00016:UNDI:003001`
    /// for UEFI HTTP boot: which client asked, for the log and the boot timeline.
    pub client_class: Option<String>,
}

/// What to do with one request. Send `reply` only after `changes` are durable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub reply: Option<Reply>,
    pub changes: Vec<LeaseChange>,
    /// A network-boot client whose architecture (option 93 code) has no boot file: it got an
    /// address only. The glue logs the refusal with [`boot::arch_name`].
    pub no_boot_file: Option<u16>,
}

#[derive(Debug)]
struct PoolState {
    cfg: Pool,
    start: u32,
    end: u32,
    mask: u32,
    network: u32,
    cursor: u32,
    /// Set once a full scan found no never-used address.
    fresh_exhausted: bool,
}

impl PoolState {
    fn contains_subnet(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.network
    }
    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&u32::from(ip))
    }
    fn broadcast(&self) -> u32 {
        self.network | !self.mask
    }
}

fn prefix_ok(mask: u32) -> bool {
    mask.leading_ones() + mask.trailing_zeros() == 32
}

/// The DHCP core. Owns the in-memory lease table; the glue persists [`Decision::changes`].
#[derive(Debug)]
pub struct DhcpServer {
    cfg: ServerConfig,
    pools: Vec<PoolState>,
    leases: LeaseTable,
    by_mac: HashMap<[u8; 6], usize>,
    reserved_ips: HashMap<Ipv4Addr, usize>,
    /// When each address was last ARP-probed.
    probed: HashMap<Ipv4Addr, u64>,
}

impl DhcpServer {
    /// Builds the core from its config and the lease records loaded from the store.
    pub fn new(
        cfg: ServerConfig,
        leases: impl IntoIterator<Item = Lease>,
    ) -> Result<DhcpServer, ServerConfigError> {
        if cfg.mode == Mode::Server && cfg.pools.is_empty() {
            return Err(ServerConfigError::NoPools);
        }
        if cfg.server_ips.is_empty() {
            return Err(ServerConfigError::NoServerAddress);
        }
        let mut pools = Vec::with_capacity(cfg.pools.len());
        for (index, p) in cfg.pools.iter().enumerate() {
            let err = |message: String| ServerConfigError::Pool { index, message };
            let (start, end, mask) = (u32::from(p.start), u32::from(p.end), u32::from(p.netmask));
            if !prefix_ok(mask) || mask == u32::MAX {
                return Err(err(format!("netmask {} is not a usable prefix", p.netmask)));
            }
            if start > end {
                return Err(err(format!(
                    "range start {} is after end {}",
                    p.start, p.end
                )));
            }
            if start & mask != end & mask {
                return Err(err(format!(
                    "range {}-{} is not inside one {} subnet",
                    p.start, p.end, p.netmask
                )));
            }
            if p.lease_time_secs == 0 {
                return Err(err("lease time must be positive".into()));
            }
            pools.push(PoolState {
                cfg: p.clone(),
                start,
                end,
                mask,
                network: start & mask,
                cursor: start,
                fresh_exhausted: false,
            });
        }
        let mut by_mac = HashMap::new();
        let mut reserved_ips = HashMap::new();
        for (index, r) in cfg.reservations.iter().enumerate() {
            let err = |message: String| ServerConfigError::Reservation { index, message };
            if !pools.iter().any(|p| p.contains_subnet(r.ip)) {
                return Err(err(format!("address {} is in no pool's subnet", r.ip)));
            }
            if by_mac.insert(r.mac, index).is_some() {
                return Err(err("MAC reserved twice".into()));
            }
            if reserved_ips.insert(r.ip, index).is_some() {
                return Err(err(format!("address {} reserved twice", r.ip)));
            }
        }
        Ok(DhcpServer {
            leases: LeaseTable::from_leases(leases),
            cfg,
            pools,
            by_mac,
            reserved_ips,
            probed: HashMap::new(),
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Handles one datagram that arrived on `port` from `src` at time `now`, on the
    /// interface of the first server address.
    pub fn handle(
        &mut self,
        now: u64,
        port: Port,
        src: SocketAddrV4,
        bytes: &[u8],
    ) -> Result<Decision, DropReason> {
        let local = self.cfg.server_ips[0];
        self.handle_on(now, port, local, src, bytes)
    }

    /// Handles one datagram that arrived on the interface whose box address is `local`.
    pub fn handle_on(
        &mut self,
        now: u64,
        port: Port,
        local: Ipv4Addr,
        src: SocketAddrV4,
        bytes: &[u8],
    ) -> Result<Decision, DropReason> {
        let req = wire::parse(bytes)?;
        self.handle_request(now, port, local, src, &req)
    }

    /// Handles an already parsed request (see [`DhcpServer::handle_on`]).
    pub fn handle_request(
        &mut self,
        now: u64,
        port: Port,
        local: Ipv4Addr,
        src: SocketAddrV4,
        req: &Request,
    ) -> Result<Decision, DropReason> {
        if !self.is_ours(local) {
            return Err(DropReason::Ignored(
                "arrived for an address that is not a server address",
            ));
        }
        match self.cfg.mode {
            Mode::Proxy => self.proxy(port, local, src, req),
            Mode::Server => {
                if port == Port::Pxe {
                    return Err(DropReason::Ignored(
                        "port 4011 is served in proxy mode only",
                    ));
                }
                match req.msg_type {
                    MessageType::Discover => self.discover(now, local, req),
                    MessageType::Request => self.request(now, local, req),
                    MessageType::Decline => self.decline(now, req),
                    MessageType::Release => self.release(req),
                    MessageType::Inform => self.inform(local, req),
                    other => Err(DropReason::UnhandledMessageType(format!("{other:?}"))),
                }
            }
        }
    }

    fn is_ours(&self, ip: Ipv4Addr) -> bool {
        self.cfg.server_ips.contains(&ip)
    }

    /// The next addresses to ARP-probe at `now` (see the module doc): per pool, those of the
    /// next [`PROBE_AHEAD`] addresses allocation would hand out that were not probed in the
    /// last [`PROBE_REFRESH_SECS`]. Each returned address counts as probed at `now`. Empty
    /// in proxy mode.
    pub fn probe_targets(&mut self, now: u64) -> Vec<Ipv4Addr> {
        if self.cfg.mode != Mode::Server {
            return Vec::new();
        }
        self.probed
            .retain(|_, at| now.saturating_sub(*at) < PROBE_REFRESH_SECS);
        let mut out = Vec::new();
        for pi in 0..self.pools.len() {
            let p = &self.pools[pi];
            let (start, end) = (p.start, p.end);
            let mut a = p.cursor;
            let mut seen = 0;
            for _ in 0..(end - start).saturating_add(1).min(PROBE_SCAN_LIMIT) {
                if seen == PROBE_AHEAD {
                    break;
                }
                let addr = Ipv4Addr::from(a);
                a = if a >= end { start } else { a + 1 };
                let next_up = !self.excluded(pi, addr)
                    && if self.pools[pi].fresh_exhausted {
                        self.leases.available_for(addr, &[], now)
                    } else {
                        self.leases.is_fresh(addr)
                    };
                if next_up {
                    seen += 1;
                    if !self.probed.contains_key(&addr) {
                        out.push(addr);
                    }
                }
            }
        }
        for addr in &out {
            self.probed.insert(*addr, now);
        }
        out
    }

    /// ARP from `mac` claiming `addr` was seen at `now`. When `addr` was probed in the last
    /// [`PROBE_ANSWER_SECS`] and nobody holds it, a host we did not configure uses it: the
    /// address is held (a declined record under the host's hardware client id) for
    /// `decline_hold_secs`. Returns that record, to persist.
    pub fn arp_seen(&mut self, now: u64, addr: Ipv4Addr, mac: [u8; 6]) -> Option<Lease> {
        let at = *self.probed.get(&addr)?;
        if now.saturating_sub(at) > PROBE_ANSWER_SECS
            || self.leases.holder(addr, now).is_some()
            || self.leases.is_declined(addr, now)
        {
            return None;
        }
        let mut client_id = vec![1];
        client_id.extend_from_slice(&mac);
        let until = now + u64::from(self.cfg.decline_hold_secs);
        Some(self.leases.decline(addr, &client_id, &mac, until))
    }

    fn mac(req: &Request) -> Option<[u8; 6]> {
        req.chaddr.as_slice().try_into().ok()
    }

    fn reservation(&self, req: &Request) -> Option<&Reservation> {
        let i = *self.by_mac.get(&Self::mac(req)?)?;
        self.cfg.reservations.get(i)
    }

    /// The pool for a client: by giaddr when relayed, else by `local` (the box's own subnet
    /// or the client's ciaddr).
    fn pool_for(&self, req: &Request, local: Ipv4Addr) -> Result<usize, DropReason> {
        let key = if req.giaddr().is_unspecified() {
            local
        } else {
            req.giaddr()
        };
        self.pools
            .iter()
            .position(|p| p.contains_subnet(key))
            .ok_or(DropReason::NoPool(key))
    }

    /// True when `addr` must never be handed out dynamically from pool `pi`.
    fn excluded(&self, pi: usize, addr: Ipv4Addr) -> bool {
        let p = &self.pools[pi];
        let a = u32::from(addr);
        self.is_ours(addr)
            || a == p.network
            || a == p.broadcast()
            || p.cfg.router == Some(addr)
            || self.reserved_ips.contains_key(&addr)
    }

    /// Why `client` may not be bound to `addr` in pool `pi`, or `None` when it may.
    fn refuse_bind(
        &self,
        pi: usize,
        req: &Request,
        addr: Ipv4Addr,
        now: u64,
    ) -> Option<&'static str> {
        let p = &self.pools[pi];
        if !p.contains_subnet(addr) {
            return Some("requested address is not on this network");
        }
        let reserved_here = self.reservation(req).map(|r| r.ip);
        match reserved_here {
            Some(ip) if ip != addr => return Some("client has a reservation for another address"),
            Some(_) => {}
            None => {
                if self.excluded(pi, addr) {
                    return Some("address is not available for dynamic use");
                }
                if !p.in_range(addr) {
                    return Some("address is outside the pool");
                }
            }
        }
        if !self.leases.available_for(addr, &req.client_id, now) {
            return Some("address is in use by another client");
        }
        None
    }

    fn allocate(&mut self, pi: usize, client_id: &[u8], now: u64) -> Option<Ipv4Addr> {
        let (start, end, size) = {
            let p = &self.pools[pi];
            (p.start, p.end, u64::from(p.end - p.start) + 1)
        };
        // Pass 1: a never-used address, from the cursor on (amortised O(1)).
        if !self.pools[pi].fresh_exhausted {
            let mut a = self.pools[pi].cursor;
            for _ in 0..size {
                let addr = Ipv4Addr::from(a);
                a = if a >= end { start } else { a + 1 };
                if self.leases.is_fresh(addr) && !self.excluded(pi, addr) {
                    self.pools[pi].cursor = a;
                    return Some(addr);
                }
            }
            self.pools[pi].fresh_exhausted = true;
        }
        // Pass 2: any address nobody holds (expired, released, stale offer).
        let mut a = self.pools[pi].cursor;
        for _ in 0..size {
            let addr = Ipv4Addr::from(a);
            a = if a >= end { start } else { a + 1 };
            if !self.excluded(pi, addr) && self.leases.available_for(addr, client_id, now) {
                self.pools[pi].cursor = a;
                return Some(addr);
            }
        }
        None
    }

    fn discover(
        &mut self,
        now: u64,
        local: Ipv4Addr,
        req: &Request,
    ) -> Result<Decision, DropReason> {
        let pi = self.pool_for(req, local)?;
        let addr = if let Some(r) = self.reservation(req) {
            let ip = r.ip;
            if !self.pools[pi].contains_subnet(ip) {
                return Err(DropReason::Ignored(
                    "client's reservation is on another network",
                ));
            }
            if !self.leases.available_for(ip, &req.client_id, now) {
                return Err(DropReason::Ignored(
                    "reserved address is held by another client",
                ));
            }
            ip
        } else if let Some(a) = self
            .leases
            .address_of(&req.client_id)
            .filter(|a| self.refuse_bind(pi, req, *a, now).is_none())
        {
            a
        } else if let Some(a) = req
            .requested_ip
            .filter(|a| self.refuse_bind(pi, req, *a, now).is_none())
        {
            a
        } else {
            self.allocate(pi, &req.client_id, now)
                .ok_or(DropReason::PoolExhausted(self.pools[pi].cfg.start))?
        };
        self.leases
            .offer(addr, &req.client_id, now + OFFER_HOLD_SECS);
        let (msg, no_boot_file) = self.address_reply(req, local, pi, MessageType::Offer, addr)?;
        Ok(Decision {
            reply: Some(self.finish(req, local, msg, MessageType::Offer, addr)?),
            changes: Vec::new(),
            no_boot_file,
        })
    }

    fn request(
        &mut self,
        now: u64,
        local: Ipv4Addr,
        req: &Request,
    ) -> Result<Decision, DropReason> {
        let ciaddr = req.ciaddr();
        let (addr, pi) = match (req.server_id, req.requested_ip) {
            // SELECTING: the client answers an OFFER.
            (Some(sid), requested) => {
                if !self.is_ours(sid) {
                    self.leases.withdraw_offer(&req.client_id);
                    return Err(DropReason::OtherServer(sid));
                }
                let addr = requested
                    .or((!ciaddr.is_unspecified()).then_some(ciaddr))
                    .ok_or_else(|| {
                        DropReason::Malformed("REQUEST with server id but no address".into())
                    })?;
                (addr, self.pool_for(req, local)?)
            }
            // INIT-REBOOT: the client asks to keep an address it remembers.
            (None, Some(requested)) if ciaddr.is_unspecified() => {
                let Ok(pi) = self.pool_for(req, local) else {
                    return Err(DropReason::NoPool(req.giaddr()));
                };
                if let Some(other) = self.leases.other_binding(&req.client_id, requested, now)
                    && self.pools[pi].contains_subnet(other)
                {
                    return self.nak(req, local, "client holds another address");
                }
                (requested, pi)
            }
            // RENEWING (unicast) or REBINDING (broadcast): extend ciaddr.
            _ if !ciaddr.is_unspecified() => {
                let pi = match self.pool_for(req, ciaddr) {
                    Ok(pi) => pi,
                    Err(_) => {
                        return self.nak(req, local, "address is not on a network served here");
                    }
                };
                (ciaddr, pi)
            }
            _ => {
                return Err(DropReason::Malformed(
                    "REQUEST without server id, requested address or ciaddr".into(),
                ));
            }
        };
        if let Some(why) = self.refuse_bind(pi, req, addr, now) {
            return self.nak(req, local, why);
        }
        let lease_time = self.pools[pi].cfg.lease_time_secs;
        let hostname = self
            .reservation(req)
            .and_then(|r| r.hostname.clone())
            .or_else(|| req.hostname.clone());
        let changes = self.leases.bind(Lease {
            addr,
            state: LeaseState::Bound,
            client_id: req.client_id.clone(),
            chaddr: req.chaddr.clone(),
            expires_at: now + u64::from(lease_time),
            hostname,
        });
        let (msg, no_boot_file) = self.address_reply(req, local, pi, MessageType::Ack, addr)?;
        Ok(Decision {
            reply: Some(self.finish(req, local, msg, MessageType::Ack, addr)?),
            changes,
            no_boot_file,
        })
    }

    fn decline(&mut self, now: u64, req: &Request) -> Result<Decision, DropReason> {
        if let Some(sid) = req.server_id
            && !self.is_ours(sid)
        {
            return Err(DropReason::OtherServer(sid));
        }
        let addr = req
            .requested_ip
            .ok_or_else(|| DropReason::Malformed("DECLINE without requested address".into()))?;
        if self.leases.holder(addr, now) != Some(req.client_id.as_slice()) {
            return Err(DropReason::Ignored(
                "DECLINE for an address the client does not hold",
            ));
        }
        let until = now + u64::from(self.cfg.decline_hold_secs);
        let lease = self
            .leases
            .decline(addr, &req.client_id, &req.chaddr, until);
        Ok(Decision {
            changes: vec![LeaseChange::Put(lease)],
            ..Decision::default()
        })
    }

    fn release(&mut self, req: &Request) -> Result<Decision, DropReason> {
        if let Some(sid) = req.server_id
            && !self.is_ours(sid)
        {
            return Err(DropReason::OtherServer(sid));
        }
        match self.leases.release(req.ciaddr(), &req.client_id) {
            Some(lease) => Ok(Decision {
                changes: vec![LeaseChange::Put(lease)],
                ..Decision::default()
            }),
            None => Err(DropReason::Ignored(
                "RELEASE for an address the client does not hold",
            )),
        }
    }

    fn inform(&mut self, local: Ipv4Addr, req: &Request) -> Result<Decision, DropReason> {
        let ciaddr = req.ciaddr();
        if ciaddr.is_unspecified() {
            return Err(DropReason::Malformed("INFORM without ciaddr".into()));
        }
        let pi = self.pool_for(req, ciaddr)?;
        let mut msg = wire::reply_to(req, MessageType::Ack);
        msg.set_ciaddr(ciaddr);
        self.network_options(&mut msg, local, pi, None);
        let no_boot_file = self.boot_options(req, local, &mut msg);
        Ok(Decision {
            reply: Some(self.finish(req, local, msg, MessageType::Ack, Ipv4Addr::UNSPECIFIED)?),
            changes: Vec::new(),
            no_boot_file,
        })
    }

    fn nak(&self, req: &Request, local: Ipv4Addr, why: &str) -> Result<Decision, DropReason> {
        let mut msg = wire::reply_to(req, MessageType::Nak);
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(local));
        msg.opts_mut().insert(DhcpOption::Message(why.to_string()));
        if !req.giaddr().is_unspecified() {
            // RFC 2131 4.3.2: a NAK through a relay asks it to broadcast.
            msg.set_flags(msg.flags().set_broadcast());
        }
        let packet = wire::encode(&msg, req.relay_info.as_deref())?;
        let to = if req.giaddr().is_unspecified() {
            Destination::Broadcast
        } else {
            Destination::Relay(req.giaddr())
        };
        Ok(Decision {
            reply: Some(Reply {
                packet,
                to,
                msg_type: MessageType::Nak,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                from: local,
                client: ethernet(req),
                boot_file: None,
                client_class: client_class(req),
            }),
            ..Decision::default()
        })
    }

    /// Subnet mask, router, DNS, domain and the server identifier; with `lease` also the
    /// lease time and T1/T2.
    fn network_options(&self, msg: &mut Message, local: Ipv4Addr, pi: usize, lease: Option<u32>) {
        let p = &self.pools[pi].cfg;
        let o = msg.opts_mut();
        o.insert(DhcpOption::ServerIdentifier(local));
        o.insert(DhcpOption::SubnetMask(p.netmask));
        if let Some(r) = p.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !p.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(p.dns.clone()));
        }
        if let Some(d) = &p.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(t) = lease {
            o.insert(DhcpOption::AddressLeaseTime(t));
            o.insert(DhcpOption::Renewal(t / 2));
            o.insert(DhcpOption::Rebinding(((u64::from(t) * 7) / 8) as u32));
        }
    }

    /// The OFFER/ACK for `addr`, and the architecture refused a boot file if any.
    fn address_reply(
        &self,
        req: &Request,
        local: Ipv4Addr,
        pi: usize,
        msg_type: MessageType,
        addr: Ipv4Addr,
    ) -> Result<(Message, Option<u16>), DropReason> {
        let mut msg = wire::reply_to(req, msg_type);
        msg.set_yiaddr(addr);
        if msg_type == MessageType::Ack {
            msg.set_ciaddr(req.ciaddr());
        }
        self.network_options(
            &mut msg,
            local,
            pi,
            Some(self.pools[pi].cfg.lease_time_secs),
        );
        if let Some(h) = self.reservation(req).and_then(|r| r.hostname.clone()) {
            msg.opts_mut().insert(DhcpOption::Hostname(h));
        }
        let no_boot_file = self.boot_options(req, local, &mut msg);
        Ok((msg, no_boot_file))
    }

    /// Boot information for a network-boot client; nothing for an ordinary client or an
    /// architecture without a boot file (whose code is returned, for the log).
    fn boot_options(&self, req: &Request, local: Ipv4Addr, msg: &mut Message) -> Option<u16> {
        let fw = match boot::classify(
            req.arch,
            req.vendor_class.as_deref(),
            req.user_class.as_deref(),
            req.ipxe_encap,
        ) {
            ClientKind::Plain => return None,
            ClientKind::Unsupported(arch) => return Some(arch),
            ClientKind::Boot(fw) => fw,
        };
        let Some(info) = boot::boot_info(
            fw,
            local,
            &self.cfg.boot,
            boot::is_http_client(req.vendor_class.as_deref()),
        ) else {
            return Some(req.arch.unwrap_or(fw.arch()));
        };
        put_boot_info(req, msg, &info);
        if fw == Firmware::Ipxe {
            // This offer carries PXEClient but no next-server, so iPXE would take us for a
            // ProxyDHCP server and send a ProxyDHCPREQUEST to :4011, which server mode does
            // not answer: ~18 s of retries per `dhcp` under QEMU (seen in qemu-tests). iPXE's
            // own switch (option 175.176 "no-pxedhcp" = 1) tells it not to.
            msg.opts_mut()
                .insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::Unknown(wire::IPXE_ENCAP),
                    wire::IPXE_NO_PXEDHCP.to_vec(),
                )));
        }
        None
    }

    /// Sets the reply's destination (RFC 2131 §4.1) and encodes it.
    fn finish(
        &self,
        req: &Request,
        local: Ipv4Addr,
        msg: Message,
        msg_type: MessageType,
        yiaddr: Ipv4Addr,
    ) -> Result<Reply, DropReason> {
        let ethernet_mac = ethernet(req);
        let to = if !req.giaddr().is_unspecified() {
            Destination::Relay(req.giaddr())
        } else if !req.ciaddr().is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.ciaddr(), 68))
        } else if let Some(mac) = ethernet_mac
            && !req.broadcast_flag()
            && !yiaddr.is_unspecified()
        {
            Destination::Link { ip: yiaddr, mac }
        } else {
            // Asked for broadcast, or a hardware address we cannot send a frame to.
            Destination::Broadcast
        };
        Ok(Reply {
            packet: wire::encode(&msg, req.relay_info.as_deref())?,
            to,
            msg_type,
            yiaddr,
            from: local,
            client: ethernet_mac,
            boot_file: boot_file(&msg),
            client_class: client_class(req),
        })
    }

    /// proxyDHCP: boot information for PXE clients only, never an address.
    fn proxy(
        &self,
        port: Port,
        local: Ipv4Addr,
        src: SocketAddrV4,
        req: &Request,
    ) -> Result<Decision, DropReason> {
        let reply_type = match (port, req.msg_type) {
            (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
            (Port::Pxe, MessageType::Request | MessageType::Inform) => MessageType::Ack,
            (Port::Dhcp, _) => {
                return Err(DropReason::Ignored(
                    "proxy mode answers only DISCOVER on port 67",
                ));
            }
            (Port::Pxe, other) => {
                return Err(DropReason::UnhandledMessageType(format!(
                    "{other:?} on port 4011"
                )));
            }
        };
        let fw = match boot::classify(
            req.arch,
            req.vendor_class.as_deref(),
            req.user_class.as_deref(),
            req.ipxe_encap,
        ) {
            ClientKind::Plain => return Err(DropReason::NotPxeClient),
            ClientKind::Unsupported(a) => return Err(DropReason::UnsupportedArch(a)),
            ClientKind::Boot(fw) => fw,
        };
        let info = boot::boot_info(
            fw,
            local,
            &self.cfg.boot,
            boot::is_http_client(req.vendor_class.as_deref()),
        )
        .ok_or(DropReason::UnsupportedArch(req.arch.unwrap_or(fw.arch())))?;
        let mut msg = wire::reply_to(req, reply_type);
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(local));
        put_boot_info(req, &mut msg, &info);
        if info.tftp_server.is_none() {
            msg.set_siaddr(local);
        }
        let to = if port == Port::Pxe && !src.ip().is_unspecified() {
            Destination::Unicast(src)
        } else if !req.giaddr().is_unspecified() {
            Destination::Relay(req.giaddr())
        } else if !req.ciaddr().is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.ciaddr(), 68))
        } else {
            Destination::Broadcast
        };
        Ok(Decision {
            reply: Some(Reply {
                packet: wire::encode(&msg, req.relay_info.as_deref())?,
                to,
                msg_type: reply_type,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                from: local,
                client: ethernet(req),
                boot_file: boot_file(&msg),
                client_class: client_class(req),
            }),
            ..Decision::default()
        })
    }
}

/// Writes boot information into a reply: siaddr/file header fields, options 60, 66, 67,
/// the PXE vendor options (43) for `PXEClient`, and option 97 echoed when well formed.
/// The request's hardware address when it is an Ethernet one.
fn ethernet(req: &Request) -> Option<[u8; 6]> {
    (req.msg.htype() == dhcproto::v4::HType::Eth)
        .then(|| <[u8; 6]>::try_from(req.chaddr.as_slice()).ok())
        .flatten()
}

/// The request's option 60 as printable text (other bytes escaped), at most 64 characters.
fn client_class(req: &Request) -> Option<String> {
    let vc = req.vendor_class.as_deref()?;
    Some(vc.escape_ascii().to_string().chars().take(64).collect())
}

/// The boot file a reply names (option 67).
fn boot_file(msg: &Message) -> Option<String> {
    match msg.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
        _ => None,
    }
}

fn put_boot_info(req: &Request, msg: &mut Message, info: &BootInfo) {
    if let Some(ip) = info.tftp_server {
        msg.set_siaddr(ip);
        msg.opts_mut()
            .insert(DhcpOption::TFTPServerName(ip.to_string().into_bytes()));
    }
    if info.file.len() < 128 {
        msg.set_fname_str(&info.file);
    }
    let o = msg.opts_mut();
    o.insert(DhcpOption::BootfileName(info.file.clone().into_bytes()));
    o.insert(DhcpOption::ClassIdentifier(
        info.vendor_class.as_bytes().to_vec(),
    ));
    if info.vendor_class == "PXEClient" {
        o.insert(DhcpOption::VendorExtensions(
            wire::PXE_VENDOR_OPTIONS.to_vec(),
        ));
    }
    if let Some(id) = &req.machine_id
        && id.len() == 17
        && id[0] == 0
    {
        o.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
    }
}
