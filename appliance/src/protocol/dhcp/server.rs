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
//! Pure: no IO, no clock, no RNG. Time comes in as Unix seconds.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode, UnknownOption};

use super::boot::{self, BootConfig, BootInfo, ClientKind, Firmware};
use super::lease::{Lease, LeaseChange, LeaseState, LeaseTable};
use super::wire::{self, DropReason, Request};

/// How an offer is held for a client before another DISCOVER may get the address.
pub const OFFER_HOLD_SECS: u64 = 30;

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
    /// The box's address on the provisioning network (server identifier, boot server).
    pub server_ip: Ipv4Addr,
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
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the provisioning interface.
    Broadcast,
    /// A client that has an address (or the source of a port-4011 request).
    Unicast(SocketAddrV4),
    /// A relay agent (giaddr), port 67.
    Relay(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub packet: Vec<u8>,
    pub to: Destination,
    pub msg_type: MessageType,
    pub yiaddr: Ipv4Addr,
}

/// What to do with one request. Send `reply` only after `changes` are durable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub reply: Option<Reply>,
    pub changes: Vec<LeaseChange>,
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
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Handles one datagram that arrived on `port` from `src` at time `now`.
    pub fn handle(
        &mut self,
        now: u64,
        port: Port,
        src: SocketAddrV4,
        bytes: &[u8],
    ) -> Result<Decision, DropReason> {
        let req = wire::parse(bytes)?;
        self.handle_request(now, port, src, &req)
    }

    /// Handles an already parsed request.
    pub fn handle_request(
        &mut self,
        now: u64,
        port: Port,
        src: SocketAddrV4,
        req: &Request,
    ) -> Result<Decision, DropReason> {
        match self.cfg.mode {
            Mode::Proxy => self.proxy(port, src, req),
            Mode::Server => {
                if port == Port::Pxe {
                    return Err(DropReason::Ignored(
                        "port 4011 is served in proxy mode only",
                    ));
                }
                match req.msg_type {
                    MessageType::Discover => self.discover(now, req),
                    MessageType::Request => self.request(now, req),
                    MessageType::Decline => self.decline(now, req),
                    MessageType::Release => self.release(req),
                    MessageType::Inform => self.inform(req),
                    other => Err(DropReason::UnhandledMessageType(format!("{other:?}"))),
                }
            }
        }
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
        addr == self.cfg.server_ip
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

    fn discover(&mut self, now: u64, req: &Request) -> Result<Decision, DropReason> {
        let pi = self.pool_for(req, self.cfg.server_ip)?;
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
                .ok_or(DropReason::PoolExhausted(self.cfg.server_ip))?
        };
        self.leases
            .offer(addr, &req.client_id, now + OFFER_HOLD_SECS);
        let msg = self.address_reply(req, pi, MessageType::Offer, addr)?;
        Ok(Decision {
            reply: Some(self.finish(req, msg, MessageType::Offer, addr)?),
            changes: Vec::new(),
        })
    }

    fn request(&mut self, now: u64, req: &Request) -> Result<Decision, DropReason> {
        let ciaddr = req.ciaddr();
        let (addr, pi) = match (req.server_id, req.requested_ip) {
            // SELECTING: the client answers an OFFER.
            (Some(sid), requested) => {
                if sid != self.cfg.server_ip {
                    self.leases.withdraw_offer(&req.client_id);
                    return Err(DropReason::OtherServer(sid));
                }
                let addr = requested
                    .or((!ciaddr.is_unspecified()).then_some(ciaddr))
                    .ok_or_else(|| {
                        DropReason::Malformed("REQUEST with server id but no address".into())
                    })?;
                (addr, self.pool_for(req, self.cfg.server_ip)?)
            }
            // INIT-REBOOT: the client asks to keep an address it remembers.
            (None, Some(requested)) if ciaddr.is_unspecified() => {
                let Ok(pi) = self.pool_for(req, self.cfg.server_ip) else {
                    return Err(DropReason::NoPool(req.giaddr()));
                };
                if let Some(other) = self.leases.other_binding(&req.client_id, requested, now)
                    && self.pools[pi].contains_subnet(other)
                {
                    return self.nak(req, "client holds another address");
                }
                (requested, pi)
            }
            // RENEWING (unicast) or REBINDING (broadcast): extend ciaddr.
            _ if !ciaddr.is_unspecified() => {
                let pi = match self.pool_for(req, ciaddr) {
                    Ok(pi) => pi,
                    Err(_) => return self.nak(req, "address is not on a network served here"),
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
            return self.nak(req, why);
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
        let msg = self.address_reply(req, pi, MessageType::Ack, addr)?;
        Ok(Decision {
            reply: Some(self.finish(req, msg, MessageType::Ack, addr)?),
            changes,
        })
    }

    fn decline(&mut self, now: u64, req: &Request) -> Result<Decision, DropReason> {
        if let Some(sid) = req.server_id
            && sid != self.cfg.server_ip
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
            reply: None,
            changes: vec![LeaseChange::Put(lease)],
        })
    }

    fn release(&mut self, req: &Request) -> Result<Decision, DropReason> {
        if let Some(sid) = req.server_id
            && sid != self.cfg.server_ip
        {
            return Err(DropReason::OtherServer(sid));
        }
        match self.leases.release(req.ciaddr(), &req.client_id) {
            Some(lease) => Ok(Decision {
                reply: None,
                changes: vec![LeaseChange::Put(lease)],
            }),
            None => Err(DropReason::Ignored(
                "RELEASE for an address the client does not hold",
            )),
        }
    }

    fn inform(&mut self, req: &Request) -> Result<Decision, DropReason> {
        let ciaddr = req.ciaddr();
        if ciaddr.is_unspecified() {
            return Err(DropReason::Malformed("INFORM without ciaddr".into()));
        }
        let pi = self.pool_for(req, ciaddr)?;
        let mut msg = wire::reply_to(req, MessageType::Ack);
        msg.set_ciaddr(ciaddr);
        self.network_options(&mut msg, pi, None);
        self.boot_options(req, &mut msg);
        Ok(Decision {
            reply: Some(self.finish(req, msg, MessageType::Ack, Ipv4Addr::UNSPECIFIED)?),
            changes: Vec::new(),
        })
    }

    fn nak(&self, req: &Request, why: &str) -> Result<Decision, DropReason> {
        let mut msg = wire::reply_to(req, MessageType::Nak);
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
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
            }),
            changes: Vec::new(),
        })
    }

    /// Subnet mask, router, DNS, domain and the server identifier; with `lease` also the
    /// lease time and T1/T2.
    fn network_options(&self, msg: &mut Message, pi: usize, lease: Option<u32>) {
        let p = &self.pools[pi].cfg;
        let o = msg.opts_mut();
        o.insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
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

    fn address_reply(
        &self,
        req: &Request,
        pi: usize,
        msg_type: MessageType,
        addr: Ipv4Addr,
    ) -> Result<Message, DropReason> {
        let mut msg = wire::reply_to(req, msg_type);
        msg.set_yiaddr(addr);
        if msg_type == MessageType::Ack {
            msg.set_ciaddr(req.ciaddr());
        }
        self.network_options(&mut msg, pi, Some(self.pools[pi].cfg.lease_time_secs));
        if let Some(h) = self.reservation(req).and_then(|r| r.hostname.clone()) {
            msg.opts_mut().insert(DhcpOption::Hostname(h));
        }
        self.boot_options(req, &mut msg);
        Ok(msg)
    }

    /// Boot information for a network-boot client; nothing for an ordinary client or an
    /// architecture without a boot file. Returns what was added.
    fn boot_options(&self, req: &Request, msg: &mut Message) -> Option<BootInfo> {
        let ClientKind::Boot(fw) = boot::classify(
            req.arch,
            req.vendor_class.as_deref(),
            req.user_class.as_deref(),
            req.ipxe_encap,
        ) else {
            return None;
        };
        let info = boot::boot_info(
            fw,
            self.cfg.server_ip,
            &self.cfg.boot,
            boot::is_http_client(req.vendor_class.as_deref()),
        );
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
        Some(info)
    }

    /// Sets the reply's destination (RFC 2131 4.1) and encodes it.
    fn finish(
        &self,
        req: &Request,
        msg: Message,
        msg_type: MessageType,
        yiaddr: Ipv4Addr,
    ) -> Result<Reply, DropReason> {
        let to = if !req.giaddr().is_unspecified() {
            Destination::Relay(req.giaddr())
        } else if !req.ciaddr().is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.ciaddr(), 68))
        } else {
            // No address yet: broadcast (unicast to yiaddr would need an ARP entry).
            Destination::Broadcast
        };
        Ok(Reply {
            packet: wire::encode(&msg, req.relay_info.as_deref())?,
            to,
            msg_type,
            yiaddr,
        })
    }

    /// proxyDHCP: boot information for PXE clients only, never an address.
    fn proxy(&self, port: Port, src: SocketAddrV4, req: &Request) -> Result<Decision, DropReason> {
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
            self.cfg.server_ip,
            &self.cfg.boot,
            boot::is_http_client(req.vendor_class.as_deref()),
        );
        let mut msg = wire::reply_to(req, reply_type);
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
        put_boot_info(req, &mut msg, &info);
        if info.tftp_server.is_none() {
            msg.set_siaddr(self.cfg.server_ip);
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
            }),
            changes: Vec::new(),
        })
    }
}

/// Writes boot information into a reply: siaddr/file header fields, options 60, 66, 67,
/// the PXE vendor options (43) for `PXEClient`, and option 97 echoed when well formed.
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
