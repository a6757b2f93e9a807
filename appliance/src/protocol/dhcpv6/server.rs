//! The DHCPv6 decision machine (RFC 8415, server side, no relays): `handle(now, bytes)` → a
//! [`Decision`] (reply bytes plus lease records to persist before sending) or a
//! [`DropReason`].
//!
//! - Solicit → Advertise (an address per IA_NA from the pool, held 30 s in memory), or with
//!   Rapid Commit straight to a Reply that binds;
//! - Request → Reply binding the addresses (persisted first); Renew (to us) / Rebind (to
//!   anyone) extend the client's bindings, NoBinding for an IA we do not know;
//! - Release, Decline → Reply Success, the addresses released / held out of use;
//! - Confirm → Success or NotOnLink (addresses outside the configured prefix);
//! - Information-request → DNS and boot options only.
//!
//! Network-boot clients are classified as over IPv4 (option 61 = the v4 option 93, the
//! option 16 vendor class item = the v4 option 60, option 15 `iPXE` = the v4 user class) and
//! get option 59 (boot file URL, [`boot::boot_url_v6`]), option 60 (boot file parameters,
//! when configured) and, for HTTP boot, option 16 `HTTPClient`.
//!
//! Bindings are keyed by (DUID, IAID); an address has at most one holder at a time.
//! Pure: no IO, no clock; time comes in as Unix seconds.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use super::wire::{self, DropReason, Message, Out};
use crate::protocol::dhcp::LeaseState;
use crate::protocol::dhcp::boot::{self, BootConfig, ClientKind};

/// How long an Advertise holds its addresses for the client.
pub const OFFER_HOLD_SECS: u64 = 30;
/// Addresses looked at per allocation (bounds the scan of a huge pool).
const SCAN_LIMIT: u32 = 65_536;
/// IANA enterprise number put in the option 16 answer (Intel's, as EDK2 sends it).
const ENTERPRISE: u32 = 343;

/// A persisted DHCPv6 lease (key: `addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    pub addr: Ipv6Addr,
    pub state: LeaseState,
    /// The client's DUID (option 1).
    pub duid: Vec<u8>,
    pub iaid: u32,
    /// End of the binding (bound) or of the hold (declined), Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The box's DUID (option 2), e.g. DUID-LL of the provisioning interface.
    pub server_duid: Vec<u8>,
    /// The box's address on the segment: boot URLs point here.
    pub server_ip: Ipv6Addr,
    /// The on-link prefix (Confirm), which holds the pool.
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    pub pool_start: Ipv6Addr,
    pub pool_end: Ipv6Addr,
    pub preferred_secs: u32,
    pub valid_secs: u32,
    pub dns: Vec<Ipv6Addr>,
    pub boot: BootConfig,
    /// Option 60 items handed to network-boot clients with the URL (none: no option 60).
    pub boot_file_params: Vec<String>,
    pub decline_hold_secs: u32,
}

impl Config {
    /// The longest a stored record runs: a binding's valid lifetime or a decline hold (an
    /// Advertise's hold is never stored).
    pub fn longest_secs(&self) -> u64 {
        u64::from(self.valid_secs.max(self.decline_hold_secs))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("prefix length {0} is not 1..=128")]
    PrefixLen(u8),
    #[error("pool {0}-{1} is empty or reversed")]
    Pool(Ipv6Addr, Ipv6Addr),
    #[error("pool {0}-{1} is not inside the prefix")]
    PoolOutsidePrefix(Ipv6Addr, Ipv6Addr),
    #[error("valid lifetime must be positive and at least the preferred lifetime")]
    Lifetimes,
    #[error("the server DUID must be 3 to 130 bytes")]
    Duid,
}

/// What to do with one message. Send `reply` only after `changes` are durable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub reply: Option<Vec<u8>>,
    /// The reply's message type (ADVERTISE or REPLY).
    pub reply_type: u8,
    pub changes: Vec<Lease6>,
    /// Addresses the reply offers or binds, for the log.
    pub addrs: Vec<Ipv6Addr>,
    /// The boot file URL the reply names.
    pub boot_url: Option<String>,
    /// A network-boot client whose architecture has no boot file (logged by the glue).
    pub no_boot_file: Option<u16>,
}

#[derive(Debug, Clone)]
struct Offer {
    duid: Vec<u8>,
    iaid: u32,
    until: u64,
}

/// The DHCPv6 core; owns the in-memory lease table, the glue persists [`Decision::changes`].
#[derive(Debug)]
pub struct Dhcpv6Server {
    cfg: Config,
    start: u128,
    end: u128,
    mask: u128,
    cursor: u128,
    leases: HashMap<Ipv6Addr, Lease6>,
    offers: HashMap<Ipv6Addr, Offer>,
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Dhcpv6Server {
    pub fn new(cfg: Config, leases: impl IntoIterator<Item = Lease6>) -> Result<Self, ConfigError> {
        if cfg.prefix_len == 0 || cfg.prefix_len > 128 {
            return Err(ConfigError::PrefixLen(cfg.prefix_len));
        }
        let (start, end) = (u128::from(cfg.pool_start), u128::from(cfg.pool_end));
        if start > end {
            return Err(ConfigError::Pool(cfg.pool_start, cfg.pool_end));
        }
        let m = mask(cfg.prefix_len);
        let net = u128::from(cfg.prefix) & m;
        if start & m != net || end & m != net {
            return Err(ConfigError::PoolOutsidePrefix(cfg.pool_start, cfg.pool_end));
        }
        if cfg.valid_secs == 0 || cfg.valid_secs < cfg.preferred_secs {
            return Err(ConfigError::Lifetimes);
        }
        if !(3..=wire::MAX_DUID).contains(&cfg.server_duid.len()) {
            return Err(ConfigError::Duid);
        }
        let leases = leases.into_iter().map(|l| (l.addr, l)).collect();
        Ok(Dhcpv6Server {
            cfg,
            start,
            end,
            mask: m,
            cursor: start,
            leases,
            offers: HashMap::new(),
        })
    }

    /// The core after a restart: `leases` as loaded from the store, under the restart rule
    /// of lease time shared with DHCPv4 (`dhcp::clamp_after_restart`): no stored binding or
    /// decline hold ends more than [`Config::longest_secs`] after `now`, so a wall clock set
    /// back while the box was down never keeps an address for longer. Returns how many were
    /// cut back too.
    pub fn restarted(
        cfg: Config,
        mut leases: Vec<Lease6>,
        now: u64,
    ) -> Result<(Self, usize), ConfigError> {
        let clamped = crate::protocol::dhcp::clamp_after_restart(
            leases.iter_mut().map(|l| &mut l.expires_at),
            now,
            cfg.longest_secs(),
        );
        Ok((Dhcpv6Server::new(cfg, leases)?, clamped))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease6> {
        self.leases.values()
    }

    /// Handles one datagram from a client at time `now`.
    pub fn handle(&mut self, now: u64, bytes: &[u8]) -> Result<Decision, DropReason> {
        let m = wire::parse(bytes)?;
        self.handle_message(now, &m)
    }

    /// Handles an already parsed message.
    pub fn handle_message(&mut self, now: u64, m: &Message) -> Result<Decision, DropReason> {
        let client = m
            .client_id
            .clone()
            .ok_or_else(|| DropReason::Malformed("no client identifier".into()));
        let ours = m.server_id.as_deref() == Some(self.cfg.server_duid.as_slice());
        match m.msg_type {
            wire::SOLICIT => {
                if m.server_id.is_some() {
                    return Err(DropReason::Malformed(
                        "Solicit with a server identifier".into(),
                    ));
                }
                let client = client?;
                if m.rapid_commit {
                    self.bind(now, m, &client, true)
                } else {
                    Ok(self.advertise(now, m, &client))
                }
            }
            wire::REQUEST => {
                let client = client?;
                if !ours {
                    return Err(DropReason::OtherServer);
                }
                self.bind(now, m, &client, false)
            }
            wire::RENEW | wire::REBIND => {
                let client = client?;
                if m.msg_type == wire::RENEW && !ours {
                    return Err(DropReason::OtherServer);
                }
                if m.msg_type == wire::REBIND && m.server_id.is_some() {
                    return Err(DropReason::Malformed(
                        "Rebind with a server identifier".into(),
                    ));
                }
                self.extend(now, m, &client)
            }
            wire::RELEASE | wire::DECLINE => {
                let client = client?;
                if !ours {
                    return Err(DropReason::OtherServer);
                }
                Ok(self.give_back(now, m, &client))
            }
            wire::CONFIRM => {
                let client = client?;
                self.confirm(m, &client)
            }
            wire::INFORMATION_REQUEST => {
                if m.server_id.is_some() && !ours {
                    return Err(DropReason::OtherServer);
                }
                if !m.ia_na.is_empty() {
                    return Err(DropReason::Malformed(
                        "Information-request with an IA_NA".into(),
                    ));
                }
                let r = Reply::new(wire::REPLY, m.xid);
                Ok(self.finish(r, m, m.client_id.as_deref()))
            }
            other => Err(DropReason::Unhandled(other)),
        }
    }

    fn in_pool(&self, a: Ipv6Addr) -> bool {
        (self.start..=self.end).contains(&u128::from(a))
    }

    fn on_link(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & self.mask == u128::from(self.cfg.prefix) & self.mask
    }

    /// True when `addr` may go to (duid, iaid) at `now`.
    fn free_for(&self, addr: Ipv6Addr, duid: &[u8], iaid: u32, now: u64) -> bool {
        if addr == self.cfg.server_ip || !self.in_pool(addr) {
            return false;
        }
        if let Some(o) = self.offers.get(&addr)
            && o.until > now
            && (o.duid != duid || o.iaid != iaid)
        {
            return false;
        }
        match self.leases.get(&addr) {
            None => true,
            Some(l) => match l.state {
                LeaseState::Declined => l.expires_at <= now,
                LeaseState::Bound => (l.duid == duid && l.iaid == iaid) || l.expires_at <= now,
                LeaseState::Released => true,
            },
        }
    }

    /// The client's current (unexpired, bound or released) address for this IA.
    fn binding(&self, duid: &[u8], iaid: u32, now: u64) -> Option<Ipv6Addr> {
        self.leases
            .values()
            .find(|l| {
                l.duid == duid
                    && l.iaid == iaid
                    && l.state == LeaseState::Bound
                    && l.expires_at > now
            })
            .map(|l| l.addr)
    }

    /// Picks an address for (duid, iaid): its binding, its offer, the address it asked for,
    /// then its last released one, then the next free one after the cursor.
    fn pick(&mut self, duid: &[u8], iaid: u32, hint: &[Ipv6Addr], now: u64) -> Option<Ipv6Addr> {
        if let Some(a) = self.binding(duid, iaid, now) {
            return Some(a);
        }
        if let Some((a, _)) = self
            .offers
            .iter()
            .find(|(_, o)| o.duid == duid && o.iaid == iaid && o.until > now)
        {
            return Some(*a);
        }
        if let Some(a) = hint.iter().find(|a| self.free_for(**a, duid, iaid, now)) {
            return Some(*a);
        }
        if let Some(l) = self
            .leases
            .values()
            .find(|l| l.duid == duid && l.iaid == iaid && l.state == LeaseState::Released)
            && self.free_for(l.addr, duid, iaid, now)
        {
            return Some(l.addr);
        }
        let size = self.end - self.start + 1;
        let mut a = self.cursor;
        for _ in 0..u128::from(SCAN_LIMIT).min(size) {
            let addr = Ipv6Addr::from(a);
            a = if a >= self.end { self.start } else { a + 1 };
            // Never-used addresses first: a released one stays its client's while others
            // are free.
            let unused = !self.leases.contains_key(&addr)
                || self
                    .leases
                    .get(&addr)
                    .is_some_and(|l| l.state != LeaseState::Released && l.expires_at <= now);
            if unused && self.free_for(addr, duid, iaid, now) {
                self.cursor = a;
                return Some(addr);
            }
        }
        // Full of fresh addresses: take any free one (released by others included).
        (self.start..self.start + u128::from(SCAN_LIMIT).min(size))
            .map(Ipv6Addr::from)
            .find(|addr| self.free_for(*addr, duid, iaid, now))
    }

    fn t1_t2(&self) -> (u32, u32) {
        let p = self.cfg.preferred_secs;
        (p / 2, ((u64::from(p) * 4) / 5) as u32)
    }

    fn advertise(&mut self, now: u64, m: &Message, client: &[u8]) -> Decision {
        self.offers.retain(|_, o| o.until > now);
        let mut r = Reply::new(wire::ADVERTISE, m.xid);
        let (t1, t2) = self.t1_t2();
        for ia in &m.ia_na {
            match self.pick(client, ia.iaid, &ia.addrs, now) {
                Some(addr) => {
                    self.offers.insert(
                        addr,
                        Offer {
                            duid: client.to_vec(),
                            iaid: ia.iaid,
                            until: now + OFFER_HOLD_SECS,
                        },
                    );
                    r.ia_granted(ia.iaid, (t1, t2), addr, self.lifetimes(addr));
                }
                None => r.ia_refused(ia.iaid, wire::STATUS_NO_ADDRS_AVAIL, NO_ADDRS),
            }
        }
        if m.ia_na.is_empty() || r.d.addrs.is_empty() {
            r.status(wire::STATUS_NO_ADDRS_AVAIL, NO_ADDRS);
        }
        self.finish(r, m, Some(client))
    }

    fn bind(
        &mut self,
        now: u64,
        m: &Message,
        client: &[u8],
        rapid: bool,
    ) -> Result<Decision, DropReason> {
        self.offers.retain(|_, o| o.until > now);
        let mut r = Reply::new(wire::REPLY, m.xid);
        if rapid {
            r.out.opt(wire::OPT_RAPID_COMMIT, &[]);
        }
        let (t1, t2) = self.t1_t2();
        for ia in &m.ia_na {
            // A Request names the advertised addresses; take one only when it is free for
            // this client, else whatever `pick` finds.
            match self.pick(client, ia.iaid, &ia.addrs, now) {
                Some(addr) => {
                    // Any other address this IA held goes back (one address per IA).
                    let old: Vec<Ipv6Addr> = self
                        .leases
                        .values()
                        .filter(|l| {
                            l.duid == client
                                && l.iaid == ia.iaid
                                && l.addr != addr
                                && l.state == LeaseState::Bound
                        })
                        .map(|l| l.addr)
                        .collect();
                    for a in old {
                        if let Some(l) = self.leases.get_mut(&a) {
                            l.state = LeaseState::Released;
                            r.d.changes.push(l.clone());
                        }
                    }
                    let lease = Lease6 {
                        addr,
                        state: LeaseState::Bound,
                        duid: client.to_vec(),
                        iaid: ia.iaid,
                        expires_at: now + u64::from(self.cfg.valid_secs),
                    };
                    self.offers.remove(&addr);
                    self.leases.insert(addr, lease.clone());
                    r.d.changes.push(lease);
                    r.ia_granted(ia.iaid, (t1, t2), addr, self.lifetimes(addr));
                }
                None => r.ia_refused(ia.iaid, wire::STATUS_NO_ADDRS_AVAIL, NO_ADDRS),
            }
        }
        if m.ia_na.is_empty() {
            r.status(wire::STATUS_NO_ADDRS_AVAIL, "no IA_NA in the request");
        }
        Ok(self.finish(r, m, Some(client)))
    }

    fn extend(&mut self, now: u64, m: &Message, client: &[u8]) -> Result<Decision, DropReason> {
        let mut r = Reply::new(wire::REPLY, m.xid);
        let (t1, t2) = self.t1_t2();
        let mut known = false;
        for ia in &m.ia_na {
            match self.binding(client, ia.iaid, now) {
                Some(addr) => {
                    known = true;
                    let l = self.leases.get_mut(&addr).expect("binding is a lease");
                    l.expires_at = now + u64::from(self.cfg.valid_secs);
                    r.d.changes.push(l.clone());
                    let mut inner = self.lifetimes(addr);
                    // Addresses the client named that are no longer its own: lifetimes 0.
                    for other in ia.addrs.iter().filter(|a| **a != addr) {
                        inner.extend(wire::iaaddr(*other, 0, 0));
                    }
                    r.ia_granted(ia.iaid, (t1, t2), addr, inner);
                }
                None => r.ia_refused(ia.iaid, wire::STATUS_NO_BINDING, "no binding for this IA"),
            }
        }
        if m.msg_type == wire::REBIND && !known {
            return Err(DropReason::Ignored(
                "Rebind for bindings this server does not hold",
            ));
        }
        Ok(self.finish(r, m, Some(client)))
    }

    fn give_back(&mut self, now: u64, m: &Message, client: &[u8]) -> Decision {
        let mut r = Reply::new(wire::REPLY, m.xid);
        for ia in &m.ia_na {
            for a in &ia.addrs {
                let Some(l) = self.leases.get_mut(a) else {
                    continue;
                };
                if l.duid != client || l.iaid != ia.iaid || l.state != LeaseState::Bound {
                    continue;
                }
                if m.msg_type == wire::RELEASE {
                    l.state = LeaseState::Released;
                    l.expires_at = now;
                } else {
                    l.state = LeaseState::Declined;
                    l.expires_at = now + u64::from(self.cfg.decline_hold_secs);
                }
                r.d.changes.push(l.clone());
                r.d.addrs.push(*a);
            }
        }
        r.status(wire::STATUS_SUCCESS, "done");
        r.ids(&self.cfg.server_duid, Some(client));
        r.into_decision()
    }

    fn confirm(&mut self, m: &Message, client: &[u8]) -> Result<Decision, DropReason> {
        let addrs: Vec<Ipv6Addr> = m.ia_na.iter().flat_map(|ia| ia.addrs.clone()).collect();
        if addrs.is_empty() {
            return Err(DropReason::Ignored("Confirm without addresses"));
        }
        let ok = addrs.iter().all(|a| self.on_link(*a));
        let mut r = Reply::new(wire::REPLY, m.xid);
        let (code, text) = if ok {
            (wire::STATUS_SUCCESS, "addresses are on link")
        } else {
            (wire::STATUS_NOT_ON_LINK, "an address is not on this link")
        };
        r.status(code, text);
        r.ids(&self.cfg.server_duid, Some(client));
        Ok(r.into_decision())
    }

    /// The IA Address option of `addr` with the configured lifetimes.
    fn lifetimes(&self, addr: Ipv6Addr) -> Vec<u8> {
        wire::iaaddr(addr, self.cfg.preferred_secs, self.cfg.valid_secs)
    }

    /// Ends a reply that carries the common options ([`Self::common`]).
    fn finish(&self, mut r: Reply, m: &Message, client: Option<&[u8]>) -> Decision {
        self.common(&mut r, m, client);
        r.into_decision()
    }

    /// Server and client ids, DNS, boot options.
    fn common(&self, r: &mut Reply, m: &Message, client: Option<&[u8]>) {
        r.ids(&self.cfg.server_duid, client);
        let (out, d) = (&mut r.out, &mut r.d);
        if !self.cfg.dns.is_empty() {
            let v: Vec<u8> = self.cfg.dns.iter().flat_map(|a| a.octets()).collect();
            out.opt(wire::OPT_DNS_SERVERS, &v);
        }
        let fw = match boot::classify(
            m.arch,
            m.vendor_class.as_deref(),
            m.user_class.as_deref(),
            false,
        ) {
            ClientKind::Plain => return,
            ClientKind::Unsupported(arch) => {
                d.no_boot_file = Some(arch);
                return;
            }
            ClientKind::Boot(fw) => fw,
        };
        let http_client = boot::is_http_client(m.vendor_class.as_deref());
        let Some((class, url)) =
            boot::boot_url_v6(fw, self.cfg.server_ip, &self.cfg.boot, http_client)
        else {
            d.no_boot_file = Some(m.arch.unwrap_or(fw.arch()));
            return;
        };
        out.opt(wire::OPT_BOOTFILE_URL, url.as_bytes());
        if !self.cfg.boot_file_params.is_empty() {
            out.opt(
                wire::OPT_BOOTFILE_PARAM,
                &wire::items(self.cfg.boot_file_params.iter().map(|p| p.as_bytes())),
            );
        }
        if class == "HTTPClient" {
            let mut v = ENTERPRISE.to_be_bytes().to_vec();
            v.extend(wire::items([class.as_bytes()]));
            out.opt(wire::OPT_VENDOR_CLASS, &v);
        }
        d.boot_url = Some(url);
    }
}

/// The status text of an IA (or a reply) given no address.
const NO_ADDRS: &str = "no addresses available";

/// A reply being written: its bytes and the [`Decision`] it goes out in. Every reply the
/// server sends is built here, so an IA's answer and a status look the same in each.
struct Reply {
    out: Out,
    d: Decision,
}

impl Reply {
    fn new(msg_type: u8, xid: [u8; 3]) -> Reply {
        Reply {
            out: Out::new(msg_type, xid),
            d: Decision {
                reply_type: msg_type,
                ..Decision::default()
            },
        }
    }

    /// An IA_NA with T1/T2 holding `inner` (the IA Address options), `addr` its address.
    fn ia_granted(&mut self, iaid: u32, (t1, t2): (u32, u32), addr: Ipv6Addr, inner: Vec<u8>) {
        self.out
            .opt(wire::OPT_IA_NA, &wire::ia_na(iaid, t1, t2, &inner));
        self.d.addrs.push(addr);
    }

    /// An IA_NA given no address: T1/T2 0 and a status.
    fn ia_refused(&mut self, iaid: u32, code: u16, text: &str) {
        let inner = wire::tlv(wire::OPT_STATUS_CODE, &wire::status(code, text));
        self.out
            .opt(wire::OPT_IA_NA, &wire::ia_na(iaid, 0, 0, &inner));
    }

    /// The message's own status option.
    fn status(&mut self, code: u16, text: &str) {
        self.out
            .opt(wire::OPT_STATUS_CODE, &wire::status(code, text));
    }

    /// Server identifier, then the client's when known.
    fn ids(&mut self, server_duid: &[u8], client: Option<&[u8]>) {
        self.out.opt(wire::OPT_SERVERID, server_duid);
        if let Some(c) = client {
            self.out.opt(wire::OPT_CLIENTID, c);
        }
    }

    fn into_decision(self) -> Decision {
        Decision {
            reply: Some(self.out.into_bytes()),
            ..self.d
        }
    }
}

/// The Ethernet address inside a DUID-LLT (type 1) or DUID-LL (type 3) of hardware type 1,
/// for logs and the boot timeline.
pub fn duid_mac(duid: &[u8]) -> Option<[u8; 6]> {
    let (ty, rest) = duid.split_first_chunk::<2>()?;
    let (hw, rest) = rest.split_first_chunk::<2>()?;
    if *hw != [0, 1] {
        return None;
    }
    let mac = match *ty {
        [0, 1] => rest.get(4..)?,
        [0, 3] => rest,
        _ => return None,
    };
    mac.try_into().ok()
}
