//! The agent gRPC service (`api.Agent`, Sidero-compatible): registration, wipe reports,
//! addresses, heartbeats, BMC info, and (extension) the agent's next action and wipe
//! progress. NOT behind the admin token. In `[agent] first_contact = "token"` mode (the
//! default) CreateServer needs the one-boot token `/ipxe` put on the agent's kernel command
//! line, bound to its UUID and one of its NICs, and pins the agent's key by the pinning rule
//! (`protocol::first_contact::key_rule`); every later call is signed with the pinned key
//! (`api::first_contact`). In "sidero-compatible" mode agents are unauthenticated, as in
//! Sidero. Every call concerns only the server it names: its SMBIOS UUID, or for a machine
//! whose UUID is junk (all zeros, all F, a placeholder, a UUID another chassis registered)
//! the `mac-<mac>-<baseboard serial>` name CreateServer answered.
//!
//! Every request is validated before anything is written; bad input is INVALID_ARGUMENT
//! with the reason, and a request over [`MAX_REQUEST`] (64 KiB encoded) is refused whole.
//! Writes go through the lifecycle (`reconcile::Lifecycle`), one store transaction each.
//! Heartbeats and wipe progress are kept in memory only (a heartbeat per wiping server every
//! few minutes must not cost an fsync).
//!
//! A hostile PXE segment must not change another server's identity, BMC or wipe state, so
//! in every mode (`reconcile::boots` holds the rules):
//! - CreateServer begins an agent boot bound to the caller's source address; every other
//!   call about that server must come from it (PERMISSION_DENIED), and a server with no
//!   boot known answers NOT_FOUND (the agent registers again);
//! - `UpdateBMCInfo` only while the box has asked that boot for its BMC (`setup_bmc`), never
//!   moving an existing `spec.bmc` endpoint (PERMISSION_DENIED: an operator does that), and
//!   credentials only while the server needs them; `MarkServerAsWiped` only after the box
//!   told that boot to wipe (FAILED_PRECONDITION otherwise);
//! - with DHCP in server mode both must also come from an address this box leased to one of
//!   the server's NICs (its stored hardware); and a registration of a known server is
//!   refused while the address its agent last registered from still holds this box's
//!   current lease for one of its NICs ([`displacement_check`]: a DUID-LL/LLT or a
//!   `chaddr` is the client's own claim, which a host on the segment can copy under another
//!   client identifier or IAID and so hold a second address "of" the same NIC);
//! - new servers are capped per source address (`agent_limit`: rate and count,
//!   RESOURCE_EXHAUSTED); every refusal is counted in [`AgentCounters`] (`/metrics`).

use std::collections::hash_map::RandomState;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use appliance_rpc::agent::{
    self as pb, AgentAction, CreateServerRequest, CreateServerResponse, HeartbeatRequest,
    HeartbeatResponse, MarkServerAsWipedRequest, MarkServerAsWipedResponse, NextActionRequest,
    NextActionResponse, ReconcileServerAddressesRequest, ReconcileServerAddressesResponse,
    ReportWipeProgressRequest, ReportWipeProgressResponse, UpdateBmcInfoRequest,
    UpdateBmcInfoResponse, agent_server::Agent,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::agent_limit::{Limits, RegistrationLimiter};
pub use super::agent_report::hardware;
use super::agent_report::{canonical_uuid, check_len, check_str, reported_macs};
use super::first_contact::FirstContact;
use crate::bmc::Credentials;
use crate::clock;
use crate::config::WipeMode;
use crate::metrics::{Counter, Gauge, Labeled, Registry};
use crate::model::{Kind, MacAddr, Object, Server};
use crate::protocol::dhcp::{Lease, LeaseState};
use crate::protocol::dhcpv6::Lease6;
use crate::protocol::first_contact::{
    self as fc, AgentKey, Junk, KeyClaim, KeyDecision, KeyRefusal, verify_call,
};
use crate::reconcile::apply::{self, NewServer};
use crate::reconcile::boots::{Boot, BootRefusal, Need};
use crate::reconcile::lifecycle::{self, Event, Instruction, Phase};
use crate::reconcile::task::DiskProgress;
use crate::reconcile::{Lifecycle, LifecycleError};
use crate::store::StoreError;
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// Largest agent request accepted, encoded (a large server's hardware report is a few KiB).
pub const MAX_REQUEST: usize = 64 * 1024;

/// What the agent API refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// New servers refused by the per-address rate cap.
    pub registrations_rate: Counter,
    /// New servers refused by the per-address count cap.
    pub registrations_count: Counter,
    pub too_large: Counter,
    /// No agent boot of the server known (NOT_FOUND).
    pub no_boot: Counter,
    /// From another address than the boot's CreateServer.
    pub wrong_source: Counter,
    /// From a boot closed by an allocation.
    pub closed: Counter,
    pub bmc_not_asked: Counter,
    /// An attempt to move an existing BMC endpoint, or to replace working credentials.
    pub bmc_replace: Counter,
    pub wipe_not_told: Counter,
    /// DHCP server mode: the caller holds no lease for one of the server's NICs.
    pub lease: Counter,
    /// Token mode: a call without a signature (or CreateServer without its key).
    pub unsigned: Counter,
    /// Token mode: a signature that does not verify, or a replayed sequence number.
    pub forged: Counter,
    /// Token mode: a registration whose boot token was refused.
    pub token: Counter,
    /// Token mode: a key the pinning rule refused (or a server without a pin).
    pub key: Counter,
    /// Source addresses the registration limiter tracks.
    pub sources_tracked: Gauge,
}

impl AgentCounters {
    /// Adds the agent API's families to `/metrics`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_agent_registrations_refused",
            "New servers the agent API refused, by per-address cap",
            Labeled::new(
                "reason",
                [
                    ("rate", self.registrations_rate.clone()),
                    ("count", self.registrations_count.clone()),
                ],
            ),
        );
        r.register(
            "appliance_agent_registration_sources",
            "Source addresses the agent API's registration caps track",
            self.sources_tracked.clone(),
        );
        r.register(
            "appliance_agent_calls_refused",
            "Agent API calls refused by the boot, BMC, wipe, lease, size and first-contact rules",
            Labeled::new(
                "reason",
                [
                    ("too_large", self.too_large.clone()),
                    ("no_boot", self.no_boot.clone()),
                    ("wrong_source", self.wrong_source.clone()),
                    ("closed", self.closed.clone()),
                    ("bmc_not_asked", self.bmc_not_asked.clone()),
                    ("bmc_replace", self.bmc_replace.clone()),
                    ("wipe_not_told", self.wipe_not_told.clone()),
                    ("lease", self.lease.clone()),
                    ("unsigned", self.unsigned.clone()),
                    ("forged", self.forged.clone()),
                    ("token", self.token.clone()),
                    ("key", self.key.clone()),
                ],
            ),
        );
    }
}

/// The agent API's rules that depend on the box's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPolicy {
    /// DHCP runs in server mode: wipe and BMC reports must also come from an address this box
    /// leased to one of the server's NICs.
    pub lease_check: bool,
    /// The DHCPv6 server runs: the same for IPv6 callers, against its leases (IPv4 callers
    /// are then checked only when `lease_check` is on too: their addresses may come from
    /// the site's DHCP server).
    pub lease_check_v6: bool,
    /// Caps on new servers per source address.
    pub limits: Limits,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        AgentPolicy {
            lease_check: false,
            lease_check_v6: false,
            limits: Limits::DEFAULT,
        }
    }
}

/// The agent service.
#[derive(Debug, Clone)]
pub struct AgentService {
    lc: Lifecycle,
    counters: Arc<AgentCounters>,
    policy: AgentPolicy,
    /// Boot tokens and call signatures (`[agent] first_contact`).
    fc: Arc<FirstContact>,
    limiter: Arc<Mutex<RegistrationLimiter<RandomState>>>,
    /// The limiter's clock starts here (monotonic).
    epoch: Instant,
    /// The boot timeline: registrations and wipes.
    timeline: Recorder,
    /// The lease check's clock: lease time, as the DHCP service writes expiry in.
    clock: clock::WallClock,
}

/// The caller's address: tonic's own transport sets `TcpConnectInfo`, the shared :8081
/// listener (axum) sets `ConnectInfo`. IPv4-mapped IPv6 is the IPv4 address.
fn caller<T>(req: &Request<T>) -> Result<IpAddr, Status> {
    let addr = req.remote_addr().or_else(|| {
        req.extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    });
    match addr.map(|a| a.ip()) {
        Some(IpAddr::V6(v6)) => Ok(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        Some(ip) => Ok(ip),
        None => Err(Status::permission_denied(
            "the caller's address is unknown: the agent API answers only calls whose source address it sees",
        )),
    }
}

impl AgentPolicy {
    /// Whether any caller's lease is checked.
    pub fn checks_leases(&self) -> bool {
        self.lease_check || self.lease_check_v6
    }
}

/// Who holds an address by this box's DHCP (v4 or v6): what the lease check compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub state: LeaseState,
    pub expires_at: u64,
    /// The NIC: a v4 lease's `chaddr`; a v6 lease's DUID-LL/LLT MAC (none for other DUIDs).
    pub mac: Option<[u8; 6]>,
}

impl From<&Lease> for Holder {
    fn from(l: &Lease) -> Holder {
        Holder {
            state: l.state,
            expires_at: l.expires_at,
            mac: l.chaddr.as_slice().try_into().ok(),
        }
    }
}

impl From<&Lease6> for Holder {
    fn from(l: &Lease6) -> Holder {
        Holder {
            state: l.state,
            expires_at: l.expires_at,
            mac: crate::protocol::dhcpv6::duid_mac(&l.duid),
        }
    }
}

/// What the lease check knows of the caller's address (the one resolver, `resolve_holder`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No lease check for this caller (its family's addresses are not this box's to give).
    Unchecked,
    /// The box's lease of the address, if it has one.
    Lease(Option<Holder>),
    /// An IPv6 caller while the box runs no DHCPv6 server.
    NoDhcpv6,
}

/// Looks the caller's address up in the lease table of its family, as `policy` says.
pub fn resolve_holder(
    store: &crate::store::Store,
    policy: &AgentPolicy,
    caller: IpAddr,
) -> Result<Lookup, crate::store::StoreError> {
    Ok(match caller {
        IpAddr::V4(_) if !policy.lease_check => Lookup::Unchecked,
        IpAddr::V4(v4) => Lookup::Lease(store.dhcp_lease(v4)?.as_ref().map(Holder::from)),
        _ if !policy.checks_leases() => Lookup::Unchecked,
        IpAddr::V6(_) if !policy.lease_check_v6 => Lookup::NoDhcpv6,
        IpAddr::V6(v6) => Lookup::Lease(store.dhcpv6_lease(v6)?.as_ref().map(Holder::from)),
    })
}

/// With the lease check on, whether `caller` holds this box's bound, unexpired lease (v4 or
/// v6, `lookup`) for one of the server's NIC `macs`; the reason when not.
pub fn lease_check(
    server: &str,
    caller: IpAddr,
    lookup: &Lookup,
    macs: &[[u8; 6]],
    now_secs: u64,
) -> Result<(), String> {
    let why = |what: String| {
        Err(format!(
            "this box hands out the addresses (DHCP server mode or DHCPv6), so server {server}'s agent must call from an address this box leased to one of its NICs; {caller} {what}"
        ))
    };
    let l = match lookup {
        Lookup::Unchecked => return Ok(()),
        Lookup::NoDhcpv6 => {
            return why("is an IPv6 address and this box runs no DHCPv6 server".into());
        }
        Lookup::Lease(None) => return why("holds no lease".into()),
        Lookup::Lease(Some(l)) => l,
    };
    if !l.current(now_secs) {
        return why("holds no current lease".into());
    }
    if !l.names_one_of(macs) {
        return why("is leased to another NIC".into());
    }
    Ok(())
}

impl Holder {
    /// Bound and not expired at `now_secs` (lease time).
    fn current(&self, now_secs: u64) -> bool {
        self.state == LeaseState::Bound && self.expires_at > now_secs
    }

    /// The lease names one of `macs` (a v4 `chaddr`, a v6 DUID-LL/LLT MAC).
    fn names_one_of(&self, macs: &[[u8; 6]]) -> bool {
        self.mac.is_some_and(|mac| macs.contains(&mac))
    }
}

/// The displacement rule, with the lease check on: a lease proves a NIC only by the MAC the
/// client itself put in its request (a v4 `chaddr`, a v6 DUID-LL/LLT), which any host on
/// the segment can copy under its own client identifier or IAID and so hold a second
/// address "of" that NIC. So a CreateServer for a known server from `caller` is refused
/// while `prior`, the address the server's agent last registered from, still holds this
/// box's current lease for one of the server's NIC `macs` (`prior_lookup`): a NIC has one
/// agent address at a time, and the registered one keeps it. The real agent registers again
/// from its own lease (the same client gets the same address) or after that lease ended
/// (released, expired). The reason when refused; it never names `prior`.
pub fn displacement_check(
    server: &str,
    caller: IpAddr,
    prior: IpAddr,
    prior_lookup: &Lookup,
    macs: &[[u8; 6]],
    now_secs: u64,
) -> Result<(), String> {
    if prior == caller {
        return Ok(());
    }
    match prior_lookup {
        Lookup::Lease(Some(l)) if l.current(now_secs) && l.names_one_of(macs) => Err(format!(
            "server {server}'s agent registered from another address, which still holds this box's current lease for one of its NICs; a registration from {caller} is refused: another lease naming the same NIC (a copied DUID or chaddr) is no proof of being that server (its agent registers from its own lease, or once that lease ended)"
        )),
        _ => Ok(()),
    }
}

/// The MACs of a server's NICs in its stored hardware.
fn server_macs(server: &Server) -> Vec<[u8; 6]> {
    server.spec.nic_macs().into_iter().map(|m| m.0).collect()
}

/// Whether two BMC endpoints name the same host (IP addresses compared as addresses).
fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

impl AgentService {
    pub fn new(
        lc: Lifecycle,
        counters: Arc<AgentCounters>,
        policy: AgentPolicy,
        fc: Arc<FirstContact>,
    ) -> Self {
        AgentService {
            lc,
            counters,
            policy,
            fc,
            limiter: Arc::new(Mutex::new(RegistrationLimiter::with_hasher(
                policy.limits,
                RandomState::new(),
            ))),
            epoch: clock::now(),
            timeline: Recorder::off(),
            clock: clock::WallClock::process(),
        }
    }

    /// Records registrations and wipes in the boot timeline (`crate::timeline`).
    pub fn recording(mut self, timeline: Recorder) -> Self {
        self.timeline = timeline;
        self
    }

    /// The stored Server `name`, read in place on the runtime thread that polls the call, not
    /// on the blocking pool: one key of one redb read transaction, which waits for no commit
    /// (redb holds its header and reader-tracker locks for a commit's header writes only,
    /// never across its flush) and takes each page from redb's cache or with a lock-free
    /// `pread` of the store file, whose writes the kernel's page cache holds (`store/wal.rs`):
    /// microseconds, where the hop to the pool and back cost two context switches of every
    /// agent call. Only the first transaction after a failed commit blocks longer: it reopens
    /// the store (`store/db.rs`), as it would on the pool.
    fn find(&self, name: &str) -> Result<Option<Server>, Status> {
        let found = self
            .lc
            .store()
            .get(Kind::Server, name)
            .map_err(|e| lifecycle_status(LifecycleError::Store(e)))?;
        Ok(match found.map(|s| s.object) {
            Some(Object::Server(s)) => Some(s),
            _ => None,
        })
    }

    fn server(&self, name: &str) -> Result<Server, Status> {
        self.find(name)?.ok_or_else(|| {
            Status::not_found(format!(
                "server {name} is not registered (call CreateServer first)"
            ))
        })
    }

    fn check_size(&self, what: &str, len: usize) -> Result<(), Status> {
        if len > MAX_REQUEST {
            self.counters.too_large.inc();
            return Err(Status::invalid_argument(format!(
                "{what} is {len} bytes encoded; at most {MAX_REQUEST} (64 KiB) are accepted"
            )));
        }
        Ok(())
    }

    /// The boot check of `reconcile::boots`, as a gRPC status (counted, and logged for the
    /// calls that change BMC or wipe state).
    fn check_boot(&self, uuid: &str, caller: IpAddr, need: Need) -> Result<Boot, Status> {
        self.lc
            .check_boot(uuid, caller, need)
            .map_err(|e| self.refused(uuid, caller, need, e))
    }

    fn refused(&self, uuid: &str, caller: IpAddr, need: Need, e: BootRefusal) -> Status {
        let c = &self.counters;
        let msg = e.to_string();
        let registered = self.lc.boot(uuid).map(|b| b.source.to_string());
        let registered = registered.as_deref().unwrap_or("-");
        if matches!(need, Need::Bmc | Need::Wipe) {
            tracing::warn!(server = %uuid, %caller, %registered, "agent call refused: {msg}");
        } else {
            tracing::debug!(server = %uuid, %caller, %registered, "agent call refused: {msg}");
        }
        match e {
            BootRefusal::NoBoot { .. } => {
                c.no_boot.inc();
                Status::not_found(msg)
            }
            BootRefusal::WrongSource { .. } => {
                c.wrong_source.inc();
                Status::permission_denied(msg)
            }
            BootRefusal::Closed { .. } => {
                c.closed.inc();
                Status::failed_precondition(msg)
            }
            BootRefusal::BmcNotAsked { .. } => {
                c.bmc_not_asked.inc();
                Status::failed_precondition(msg)
            }
            BootRefusal::WipeNotTold { .. } => {
                c.wipe_not_told.inc();
                Status::failed_precondition(msg)
            }
        }
    }

    /// Token mode: `req` must be signed with the key pinned for the server it names.
    async fn authenticate<T: Message>(
        &self,
        req: &Request<T>,
        method: &str,
        name: &str,
    ) -> Result<(), Status> {
        if !self.fc.tokens_on() {
            return Ok(());
        }
        let caller = caller(req)?;
        let name = parse_name("uuid", name)?;
        let signed = FirstContact::signed(req.metadata(), req.get_ref())
            .map_err(|e| self.auth_refused(&self.counters.unsigned, caller, &name, &e))?;
        let server = self.server(&name)?;
        let Some(key) = pinned_key(&server) else {
            self.counters.key.inc();
            return Err(Status::not_found(format!(
                "server {name} has no agent key pinned (an operator's rekey removed it): its agent registers again, with a boot token"
            )));
        };
        self.fc
            .accept(&name, &key, method, &signed)
            .map_err(|e| self.auth_refused(&self.counters.forged, caller, &name, &e))
    }

    /// A first-contact refusal: counted, logged (never the token), UNAUTHENTICATED for
    /// signature failures, PERMISSION_DENIED for token and key refusals.
    fn auth_refused(
        &self,
        counter: &Counter,
        caller: IpAddr,
        server: &str,
        e: &dyn std::fmt::Display,
    ) -> Status {
        counter.inc();
        let msg = e.to_string();
        let c = &self.counters;
        if std::ptr::eq(counter, &c.unsigned) || std::ptr::eq(counter, &c.forged) {
            tracing::debug!(%server, %caller, "agent call refused: {msg}");
            Status::unauthenticated(msg)
        } else {
            tracing::warn!(%server, %caller, "agent registration refused: {msg}");
            Status::permission_denied(msg)
        }
    }

    /// What this box's DHCP (v4 or v6, as the policy says) knows of `ip`'s lease.
    async fn lookup(&self, ip: IpAddr) -> Result<Lookup, Status> {
        let (store, policy) = (self.lc.store().clone(), self.policy);
        tokio::task::spawn_blocking(move || resolve_holder(&store, &policy, ip))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| lifecycle_status(LifecycleError::Store(e)))
    }

    /// In DHCP server mode: the caller must hold this box's lease for one of the server's NICs.
    async fn check_lease(&self, server: &Server, caller: IpAddr) -> Result<(), Status> {
        if !self.policy.checks_leases() {
            return Ok(());
        }
        let lookup = self.lookup(caller).await?;
        let now_secs = self.clock.steady_secs();
        let name = &server.metadata.name;
        lease_check(name, caller, &lookup, &server_macs(server), now_secs)
            .map_err(|msg| self.lease_refused(name, caller, msg))
    }

    /// With the lease check on, a registration of a known server must not displace its
    /// agent's address while that address still holds the NIC's lease
    /// ([`displacement_check`]).
    async fn check_displacement(&self, server: &Server, caller: IpAddr) -> Result<(), Status> {
        let name = &server.metadata.name;
        if !self.policy.checks_leases() {
            return Ok(());
        }
        let Some(prior) = self.lc.last_agent_source(name).filter(|p| *p != caller) else {
            return Ok(());
        };
        let lookup = self.lookup(prior).await?;
        let now_secs = self.clock.steady_secs();
        displacement_check(name, caller, prior, &lookup, &server_macs(server), now_secs)
            .map_err(|msg| self.lease_refused(name, caller, msg))
    }

    fn lease_refused(&self, server: &str, caller: IpAddr, msg: String) -> Status {
        self.counters.lease.inc();
        tracing::warn!(%server, %caller, "agent call refused: {msg}");
        Status::permission_denied(msg)
    }

    /// Charges a new server to the caller's address (see `agent_limit`).
    fn admit_new(&self, caller: IpAddr, uuid: &str) -> Result<(), Status> {
        let key = u128::from_str_radix(&uuid.replace('-', ""), 16).unwrap_or_default();
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut limiter = self.limiter.lock().expect("limiter lock");
        let r = limiter.admit(caller, key, now_ms);
        self.counters.sources_tracked.set(limiter.tracked() as u64);
        drop(limiter);
        r.map_err(|e| {
            match e {
                super::agent_limit::Refusal::Rate { .. } => &self.counters.registrations_rate,
                super::agent_limit::Refusal::Count { .. } => &self.counters.registrations_count,
            }
            .inc();
            tracing::debug!(server = %uuid, %caller, "registration refused: {e}");
            Status::resource_exhausted(e.to_string())
        })
    }
}

/// Maps lifecycle errors to gRPC codes; the message is the reason.
pub fn lifecycle_status(e: LifecycleError) -> Status {
    let msg = crate::error_chain(&e);
    match e {
        LifecycleError::UnknownServer(_)
        | LifecycleError::UnknownClass(_)
        | LifecycleError::NothingToRelease(_) => Status::not_found(msg),
        LifecycleError::Illegal(_) => Status::failed_precondition(msg),
        LifecycleError::Invalid(_) => Status::invalid_argument(msg),
        LifecycleError::NoneAvailable { .. } => Status::resource_exhausted(msg),
        LifecycleError::OwnerTaken { .. } => Status::already_exists(msg),
        LifecycleError::Denied(_) => Status::permission_denied(msg),
        LifecycleError::Store(_) | LifecycleError::Internal(_) => {
            tracing::error!(error = %msg, "lifecycle failure");
            Status::internal(msg)
        }
    }
}

/// A server UUID as the name of its Server: canonical 8-4-4-4-12 hex, lower-cased. The
/// junk UUIDs some firmware reports (all zeros, all F, placeholders) are refused: they are
/// not unique, and a machine with one goes by the `mac-` name CreateServer answered.
pub fn parse_uuid(field: &str, s: &str) -> Result<String, Status> {
    let lower = canonical_uuid(field, s)?;
    if let Some(j) = fc::junk_uuid(&lower) {
        return Err(Status::invalid_argument(format!(
            "{field} `{lower}` is a placeholder UUID ({}), not unique to this server: call with the name CreateServer answered (mac-…), and fix the SMBIOS UUID in the firmware",
            j.as_str()
        )));
    }
    Ok(lower)
}

/// A server in a later agent call: its UUID, or the `mac-` name a machine with a junk UUID
/// was registered under.
pub fn parse_name(field: &str, s: &str) -> Result<String, Status> {
    if s.starts_with("mac-") {
        crate::model::meta::validate_name(s).map_err(|e| {
            Status::invalid_argument(format!(
                "{field} `{}` is not a server name: {e}",
                s.chars().take(64).collect::<String>()
            ))
        })?;
        return Ok(s.to_string());
    }
    parse_uuid(field, s)
}

/// A server's pinned agent key (its annotation), if any.
fn pinned_key(server: &Server) -> Option<AgentKey> {
    server
        .metadata
        .annotations
        .get(fc::KEY_ANNOTATION)?
        .parse()
        .ok()
}

fn has_bmc(server: &Server) -> bool {
    serde_json::to_value(&server.spec)
        .ok()
        .and_then(|v| v.get("bmc").cloned())
        .is_some_and(|b| !b.is_null())
}

/// Whether to ask the agent for its BMC: no BMC credentials yet, or the last auto setup
/// failed (the agent's next report retries it).
fn needs_bmc_setup(server: &Server) -> bool {
    let has_creds =
        server.spec.bmc.as_ref().is_some_and(|b| {
            b.user.as_deref().is_some_and(|u| !u.is_empty()) || b.user_from.is_some()
        });
    let failed = server.status.as_ref().is_some_and(|st| {
        st.conditions.iter().any(|c| {
            c.type_ == crate::bmc::setup::CONDITION_SETUP
                && c.status == crate::model::meta::ConditionStatus::False
        })
    });
    !has_creds || failed
}

fn pb_wipe_mode(m: WipeMode) -> pb::WipeMode {
    match m {
        WipeMode::Fast => pb::WipeMode::Fast,
        WipeMode::Full => pb::WipeMode::Full,
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn create_server(
        &self,
        req: Request<CreateServerRequest>,
    ) -> Result<Response<CreateServerResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the hardware report", req.get_ref().encoded_len())?;
        // Token mode: the key, the signature and the boot token, read before anything else.
        let presented = if self.fc.tokens_on() {
            let p = FirstContact::presented(req.metadata(), req.get_ref())
                .map_err(|e| self.auth_refused(&self.counters.unsigned, caller, "-", &e))?;
            Some(p)
        } else {
            None
        };
        let req = req.into_inner();
        let hw = req
            .hardware
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("hardware is required"))?;
        let (uuid, hardware) = hardware(hw)?;
        check_str("hostname", &req.hostname)?;
        if req.hostname.len() > 253 {
            return Err(Status::invalid_argument(
                "hostname is longer than 253 bytes",
            ));
        }
        let macs = reported_macs(hw);
        let baseboard = hw
            .system
            .as_ref()
            .map(|s| s.baseboard_serial.as_str())
            .unwrap_or_default();
        check_str("hardware.system.baseboard_serial", baseboard)?;
        // The Server's name: its UUID, unless the UUID is junk (by its form, or a second
        // chassis under a registered UUID: no NIC in common): then mac-<mac>-<serial>.
        let mut junk = fc::junk_uuid(&uuid);
        let mut stored = match junk {
            None => self.find(&uuid)?,
            Some(_) => None,
        };
        if let Some(s) = &stored
            && !fc::same_chassis(&server_macs(s), &macs)
        {
            junk = Some(Junk::Duplicate);
        }
        let name = match junk {
            None => uuid.clone(),
            Some(j) => {
                let n = fc::fallback_name(&macs, baseboard).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "SMBIOS UUID {uuid} is a placeholder UUID, not unique to this machine ({}), and the report names no NIC with a MAC to name the machine by",
                        j.as_str()
                    ))
                })?;
                stored = self.find(&n)?;
                n
            }
        };
        // A known server's agent address is not moved by a copied NIC identity; the pinned
        // key itself (its signature is checked below) is the same agent.
        if let Some(s) = &stored
            && !presented
                .as_ref()
                .is_some_and(|p| pinned_key(s) == Some(p.key))
        {
            self.check_displacement(s, caller).await?;
        }
        let mut claim = None;
        let mut spend = None;
        if let Some(p) = &presented {
            verify_call(
                &p.key,
                fc::method::CREATE_SERVER,
                p.signed.seq,
                &p.signed.body,
                &p.signed.sig,
            )
            .map_err(|e| self.auth_refused(&self.counters.forged, caller, &name, &e))?;
            let pinned = stored.as_ref().and_then(pinned_key);
            // The token must be bound to this UUID and a reported NIC, and for a known server
            // to one of its stored NICs.
            let token = p.token.as_deref().map(|t| {
                let mac = self.fc.check_token(t, &uuid, &macs)?;
                let known = stored.as_ref().map(server_macs).unwrap_or_default();
                if !known.is_empty() && !known.contains(&mac) {
                    return Err(fc::TokenError::WrongMac {
                        minted: MacAddr(mac).to_string(),
                    });
                }
                Ok(t)
            });
            let fresh = matches!(token, Some(Ok(_)));
            let live =
                self.lc.boot(&name).is_some_and(|b| !b.closed) && self.lc.agent_connected(&name);
            let c = KeyClaim {
                pinned,
                presented: p.key,
                fresh_token: fresh,
                live,
            };
            match fc::key_rule(c) {
                KeyDecision::Refuse(why) => {
                    let e = match (why, &token) {
                        (KeyRefusal::NeedToken | KeyRefusal::OtherKey, Some(Err(t))) => {
                            format!("{why}; the token it brought was refused: {t}")
                        }
                        _ => why.to_string(),
                    };
                    let counter = match token {
                        Some(Err(_)) => &self.counters.token,
                        _ => &self.counters.key,
                    };
                    return Err(self.auth_refused(counter, caller, &name, &e));
                }
                KeyDecision::Keep => {
                    // The same boot registering again: its sequence number must be new.
                    self.fc
                        .accept(&name, &p.key, fc::method::CREATE_SERVER, &p.signed)
                        .map_err(|e| self.auth_refused(&self.counters.forged, caller, &name, &e))?;
                }
                KeyDecision::Pin | KeyDecision::Replace => {
                    spend = token.and_then(Result::ok).map(str::to_string);
                }
            }
            claim = Some(c);
        }
        // A new server is charged to the caller's address; a known one re-registers freely.
        if stored.is_none() {
            self.admit_new(caller, &name)?;
        }
        if let Some(t) = &spend
            && !self.fc.consume(t)
        {
            let e = fc::TokenError::Unknown;
            return Err(self.auth_refused(&self.counters.token, caller, &name, &e));
        }
        let new = NewServer {
            name: name.clone(),
            hostname: (!req.hostname.is_empty()).then(|| req.hostname.clone()),
            hardware,
            key: claim,
            junk,
        };
        let r = self.lc.register(new).await.map_err(lifecycle_status)?;
        if let (Some(p), Some(_)) = (&presented, &spend) {
            // A new key: its window starts with this call.
            let _ = self
                .fc
                .accept(&name, &p.key, fc::method::CREATE_SERVER, &p.signed);
        }
        let state = apply::server_state(r.server());
        let cfg = self.lc.config();
        let mut resp = CreateServerResponse {
            state: state.phase.as_str().to_string(),
            name: if name == uuid {
                String::new()
            } else {
                name.clone()
            },
            ..Default::default()
        };
        if state.phase != Phase::Discovered {
            resp.setup_bmc = self.lc.auto_bmc_setup() && needs_bmc_setup(r.server());
            if r.wipe {
                resp.wipe = true;
                resp.insecure_wipe = cfg.wipe == WipeMode::Fast;
                resp.reboot_timeout = cfg.reboot_timeout.as_secs_f64();
            }
        }
        let name = &r.server().metadata.name;
        self.lc.begin_boot(name, caller, resp.setup_bmc, resp.wipe);
        if r.created {
            tracing::info!(server = %name, state = %state.phase, %caller, "server registered");
        }
        if let Some(j) = junk {
            tracing::warn!(server = %name, %uuid, reason = j.as_str(), "SMBIOS UUID not unique to this machine: registered under its MAC and baseboard serial");
        }
        self.timeline.record(
            Who {
                server: Some(name.clone()),
                ip: Some(caller),
                nics: Some(r.server().spec.nic_macs()),
                ..Default::default()
            },
            Step::Registered,
            Outcome::Ok,
            format!(
                "{} server, {}{}",
                if r.created { "new" } else { "known" },
                state.phase,
                if resp.wipe { "; told to wipe" } else { "" }
            ),
        );
        Ok(Response::new(resp))
    }

    async fn mark_server_as_wiped(
        &self,
        req: Request<MarkServerAsWipedRequest>,
    ) -> Result<Response<MarkServerAsWipedResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the request", req.get_ref().encoded_len())?;
        self.authenticate(&req, fc::method::MARK_SERVER_AS_WIPED, &req.get_ref().uuid)
            .await?;
        let req = req.into_inner();
        let uuid = parse_name("uuid", &req.uuid)?;
        self.check_boot(&uuid, caller, Need::Wipe)?;
        if self.policy.checks_leases() {
            let server = self.server(&uuid)?;
            self.check_lease(&server, caller).await?;
        }
        self.lc.touch(&uuid);
        let mode = match pb::WipeMode::try_from(req.wipe_mode) {
            Ok(pb::WipeMode::Full) => "full wipe",
            Ok(pb::WipeMode::Fast) => "fast wipe",
            _ => "wipe",
        };
        let fired = self
            .lc
            .fire(&uuid, Event::Wiped, &format!("agent reported {mode} done"))
            .await;
        self.timeline.record(
            Who {
                server: Some(uuid.clone()),
                ip: Some(caller),
                ..Default::default()
            },
            Step::Wiped,
            if fired.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            mode,
        );
        fired.map_err(lifecycle_status)?;
        Ok(Response::new(MarkServerAsWipedResponse {}))
    }

    async fn reconcile_server_addresses(
        &self,
        req: Request<ReconcileServerAddressesRequest>,
    ) -> Result<Response<ReconcileServerAddressesResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the request", req.get_ref().encoded_len())?;
        self.authenticate(
            &req,
            fc::method::RECONCILE_SERVER_ADDRESSES,
            &req.get_ref().uuid,
        )
        .await?;
        let req = req.into_inner();
        let uuid = parse_name("uuid", &req.uuid)?;
        check_len("address", req.address.len())?;
        let mut sent: Vec<(String, String)> = Vec::new();
        for a in &req.address {
            if a.r#type.is_empty()
                || a.r#type.len() > 64
                || !a.r#type.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(Status::invalid_argument(format!(
                    "address type `{}` must be 1-64 letters/digits (e.g. InternalIP)",
                    a.r#type.chars().take(64).collect::<String>()
                )));
            }
            if a.r#type.ends_with("IP") && a.address.parse::<IpAddr>().is_err() {
                return Err(Status::invalid_argument(format!(
                    "address `{}` of type {} is not an IP address",
                    a.address.chars().take(64).collect::<String>(),
                    a.r#type
                )));
            }
            check_str("address[].address", &a.address)?;
            if a.address.is_empty() {
                return Err(Status::invalid_argument("address[].address is empty"));
            }
            sent.push((a.r#type.clone(), a.address.clone()));
        }
        self.check_boot(&uuid, caller, Need::Report)?;
        self.lc.touch(&uuid);
        // Group-committed with the other agents' reports: a boot storm's reports share
        // fsyncs instead of each holding a blocking thread while it waits for its own.
        self.lc
            .report_addresses(uuid, sent)
            .await
            .map_err(lifecycle_status)?;
        Ok(Response::new(ReconcileServerAddressesResponse {}))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the request", req.get_ref().encoded_len())?;
        self.authenticate(&req, fc::method::HEARTBEAT, &req.get_ref().uuid)
            .await?;
        let uuid = parse_name("uuid", &req.into_inner().uuid)?;
        self.check_boot(&uuid, caller, Need::Poll)?;
        self.server(&uuid)?;
        self.lc.touch(&uuid);
        Ok(Response::new(HeartbeatResponse {}))
    }

    async fn update_bmc_info(
        &self,
        req: Request<UpdateBmcInfoRequest>,
    ) -> Result<Response<UpdateBmcInfoResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the request", req.get_ref().encoded_len())?;
        self.authenticate(&req, fc::method::UPDATE_BMC_INFO, &req.get_ref().uuid)
            .await?;
        let req = req.into_inner();
        let uuid = parse_name("uuid", &req.uuid)?;
        let info = req
            .bmc_info
            .ok_or_else(|| Status::invalid_argument("bmc_info is required"))?;
        if !info.ip.is_empty() && info.ip.parse::<IpAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "bmc_info.ip `{}` is not an IP address",
                info.ip.chars().take(64).collect::<String>()
            )));
        }
        if info.port > 65535 {
            return Err(Status::invalid_argument(format!(
                "bmc_info.port {} is not a UDP port",
                info.port
            )));
        }
        check_str("bmc_info.user", &info.user)?;
        check_str("bmc_info.pass", &info.pass)?;
        if info.user.is_empty() != info.pass.is_empty() {
            return Err(Status::invalid_argument(
                "bmc_info.user and bmc_info.pass go together",
            ));
        }
        // Only the boot the box asked for its BMC, from its own address (and lease).
        self.check_boot(&uuid, caller, Need::Bmc)?;
        let server = self.server(&uuid)?;
        self.check_lease(&server, caller).await?;
        let reported = (!info.user.is_empty()).then(|| Credentials {
            username: info.user.clone(),
            password: info.pass.clone(),
        });
        if reported.is_some() && !needs_bmc_setup(&server) {
            self.counters.bmc_replace.inc();
            return Err(Status::failed_precondition(format!(
                "server {uuid} has working BMC credentials: an agent never replaces them; an operator does (appliance ctl server bmc)"
            )));
        }
        self.lc.touch(&uuid);
        // The box asks for the BMC only with auto setup on: the reported (administrator)
        // credentials are used only to create the dedicated user, on a task, and are not
        // kept; that task stores the new user's in the secrets table.
        let setup = self.lc.bmc_setup().cloned();
        let store = self.lc.store().clone();
        let name = uuid.clone();
        let port = if info.port == 0 { 623 } else { info.port };
        let (result, moved) = tokio::task::spawn_blocking(move || {
            let mut moved = false;
            let r = store.edit_server_bmc(
                &name,
                |bmc| {
                    if bmc.endpoint.is_empty() {
                        if info.ip.is_empty() {
                            return Err(
                                "the BMC address is not known yet: send bmc_info.ip first".into()
                            );
                        }
                        bmc.endpoint = info.ip.clone();
                        bmc.port = Some(port);
                        return Ok(());
                    }
                    // An existing endpoint stays: only an operator moves it.
                    let known_port = bmc.port.unwrap_or(623);
                    let same = (info.ip.is_empty() || same_host(&bmc.endpoint, &info.ip))
                        && (info.port == 0 || info.port == known_port);
                    if !same {
                        moved = true;
                        let ip = if info.ip.is_empty() { &bmc.endpoint } else { &info.ip };
                        let reported = if info.port == 0 { known_port } else { info.port };
                        return Err(format!(
                            "its BMC is {}:{known_port} and an agent reported {ip}:{reported}; an agent never moves an existing BMC endpoint: an operator does (appliance ctl server bmc)",
                            bmc.endpoint,
                        ));
                    }
                    Ok(())
                },
                None,
            );
            (r, moved)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let bmc = result.map_err(|e| match e {
            StoreError::NotFound { .. } => Status::not_found(format!(
                "server {uuid} is not registered (call CreateServer first)"
            )),
            StoreError::Rejected { .. } if moved => {
                self.counters.bmc_replace.inc();
                let msg = crate::error_chain(&e);
                tracing::warn!(server = %uuid, %caller, "agent call refused: {msg}");
                Status::permission_denied(msg)
            }
            StoreError::Rejected { .. } => Status::invalid_argument(crate::error_chain(&e)),
            e => lifecycle_status(LifecycleError::Store(e)),
        })?;
        if reported.is_some() {
            // The box's question is answered; a failed setup asks again (NextAction).
            self.lc.boot_bmc_answered(&uuid);
        }
        if let (Some(setup), Some(admin)) = (setup, reported)
            && let Object::Server(s) = bmc.object
            && let Some(b) = s.spec.bmc
        {
            tracing::info!(server = %uuid, endpoint = %b.endpoint, "agent reported BMC credentials: starting auto BMC setup");
            let port = b.port.unwrap_or(port) as u16;
            setup.spawn(uuid, b.endpoint, port, admin);
        }
        Ok(Response::new(UpdateBmcInfoResponse {}))
    }

    async fn next_action(
        &self,
        req: Request<NextActionRequest>,
    ) -> Result<Response<NextActionResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the request", req.get_ref().encoded_len())?;
        self.authenticate(&req, fc::method::NEXT_ACTION, &req.get_ref().uuid)
            .await?;
        let uuid = parse_name("uuid", &req.into_inner().uuid)?;
        let boot = self.check_boot(&uuid, caller, Need::Poll)?;
        let server = self.server(&uuid)?;
        let state = apply::server_state(&server);
        let (instruction, reason) = lifecycle::agent_instruction(state.phase, has_bmc(&server));
        let leaves = matches!(instruction, Instruction::Reboot | Instruction::PowerOff);
        if boot.closed && !leaves {
            // Allocated since this boot registered, and free again: whatever it is told now
            // (a wipe) belongs to a fresh boot, which begins with CreateServer.
            self.lc.end_boot(&uuid);
            let e = BootRefusal::NoBoot {
                server: uuid.clone(),
            };
            return Err(self.refused(&uuid, caller, Need::Poll, e));
        }
        self.lc.touch(&uuid);
        let mut phase = state.phase;
        if instruction == Instruction::Wipe && phase != Phase::Wiping {
            let o = self
                .lc
                .fire(&uuid, Event::WipeStarted, "agent told to wipe")
                .await
                .map_err(lifecycle_status)?;
            phase = o.step.next.phase;
        }
        let cfg = self.lc.config();
        let action = match instruction {
            Instruction::Wait => AgentAction::Wait,
            Instruction::Wipe => AgentAction::Wipe,
            Instruction::Reboot => AgentAction::Reboot,
            Instruction::PowerOff => AgentAction::Poweroff,
        };
        let setup_bmc =
            phase != Phase::Discovered && self.lc.auto_bmc_setup() && needs_bmc_setup(&server);
        if instruction == Instruction::Wipe {
            self.lc.boot_told_wipe(&uuid);
        }
        if setup_bmc {
            self.lc.boot_asked_bmc(&uuid);
        }
        if leaves {
            self.lc.end_boot(&uuid);
        }
        Ok(Response::new(NextActionResponse {
            action: action as i32,
            wipe_mode: pb_wipe_mode(cfg.wipe) as i32,
            poll_seconds: cfg.agent_poll_seconds.max(1),
            reboot_timeout: cfg.reboot_timeout.as_secs_f64(),
            state: phase.as_str().to_string(),
            reason: reason.to_string(),
            setup_bmc,
        }))
    }

    async fn report_wipe_progress(
        &self,
        req: Request<ReportWipeProgressRequest>,
    ) -> Result<Response<ReportWipeProgressResponse>, Status> {
        let caller = caller(&req)?;
        self.check_size("the request", req.get_ref().encoded_len())?;
        self.authenticate(&req, fc::method::REPORT_WIPE_PROGRESS, &req.get_ref().uuid)
            .await?;
        let req = req.into_inner();
        let uuid = parse_name("uuid", &req.uuid)?;
        check_len("disks", req.disks.len())?;
        let mut disks = Vec::with_capacity(req.disks.len());
        for d in req.disks {
            check_str("disks[].device_name", &d.device_name)?;
            check_str("disks[].method", &d.method)?;
            if d.device_name.is_empty() {
                return Err(Status::invalid_argument("disks[].device_name is empty"));
            }
            if d.bytes_done > d.bytes_total {
                return Err(Status::invalid_argument(format!(
                    "disk {}: bytes_done {} exceeds bytes_total {}",
                    d.device_name, d.bytes_done, d.bytes_total
                )));
            }
            disks.push(DiskProgress {
                device: d.device_name,
                bytes_done: d.bytes_done,
                bytes_total: d.bytes_total,
                method: d.method,
                done: d.done,
            });
        }
        self.check_boot(&uuid, caller, Need::Report)?;
        let server = self.server(&uuid)?;
        if apply::server_state(&server).phase != Phase::Wiping {
            return Err(Status::failed_precondition(format!(
                "server {uuid} is {}, not wiping",
                apply::server_state(&server).phase
            )));
        }
        self.lc.touch(&uuid);
        self.lc.set_progress(&uuid, disks);
        Ok(Response::new(ReportWipeProgressResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent_report::MAX_STR;
    use serde_json::json;

    #[test]
    fn uuids() {
        assert_eq!(
            parse_uuid("u", "4C4C4544-0042-3510-8052-B4C04F4E3132").unwrap(),
            "4c4c4544-0042-3510-8052-b4c04f4e3132"
        );
        for bad in [
            "",
            "x",
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "4c4c4544-0042-3510-8052-b4c04f4e313",
            "4c4c4544-0042-3510-8052-b4c04f4e313g",
            "4c4c45440042-3510-8052-b4c04f4e3132-",
        ] {
            let e = parse_uuid("hardware.system.uuid", bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(
                e.message().contains("hardware.system.uuid"),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn hardware_maps_to_the_v1alpha2_layout() {
        let hw = pb::HardwareInformation {
            system: Some(pb::SystemInformation {
                uuid: "4C4C4544-0042-3510-8052-B4C04F4E3132".into(),
                manufacturer: "QEMU".into(),
                ..Default::default()
            }),
            compute: Some(pb::ComputeInformation {
                total_core_count: 2,
                total_thread_count: 2,
                processor_count: 2,
                processors: vec![pb::Processor {
                    manufacturer: "Intel".into(),
                    core_count: 1,
                    ..Default::default()
                }],
            }),
            memory: Some(pb::MemoryInformation {
                total_size: 1024,
                module_count: 1,
                modules: vec![],
            }),
            storage: Some(pb::StorageInformation {
                total_size: 2 << 30,
                device_count: 1,
                devices: vec![pb::StorageDevice {
                    r#type: pb::StorageType::Hdd as i32,
                    size: 1 << 30,
                    model: "QEMU HARDDISK".into(),
                    device_name: "/dev/vda".into(),
                    ..Default::default()
                }],
            }),
            network: Some(pb::NetworkInformation {
                interface_count: 2,
                interfaces: vec![
                    pb::NetworkInterface {
                        name: "lo".into(),
                        ..Default::default()
                    },
                    pb::NetworkInterface {
                        index: 2,
                        name: "eth0".into(),
                        mac: "52:54:00:12:34:56".into(),
                        mtu: 1500,
                        addresses: vec!["10.0.0.5/24".into()],
                        ..Default::default()
                    },
                ],
            }),
            firmware: Some(pb::FirmwareInformation {
                kind: pb::FirmwareKind::Uefi as i32,
                secure_boot: pb::SecureBootState::Enabled as i32,
            }),
        };
        let (uuid, typed) = hardware(&hw).unwrap();
        let v = serde_json::to_value(&typed).unwrap();
        assert_eq!(uuid, "4c4c4544-0042-3510-8052-b4c04f4e3132");
        assert_eq!(
            v,
            json!({
                "system": {"uuid": uuid, "manufacturer": "QEMU"},
                "compute": {"totalCoreCount": 2, "totalThreadCount": 2, "processorCount": 2,
                            "processors": [{"manufacturer": "Intel", "coreCount": 1}]},
                "memory": {"totalSize": "1 GB", "moduleCount": 1},
                "storage": {"totalSize": "2 GB", "deviceCount": 1,
                            "devices": [{"type": "HDD", "size": 1u64 << 30, "productName": "QEMU HARDDISK", "deviceName": "/dev/vda"}]},
                "network": {"interfaceCount": 2,
                            "interfaces": [{"index": 2, "name": "eth0", "mtu": 1500, "mac": "52:54:00:12:34:56", "addresses": ["10.0.0.5/24"]}]},
                "firmware": {"kind": "uefi", "secureBoot": "enabled"}
            })
        );
        // The Server model accepts it.
        let doc = json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
                         "metadata": {"name": uuid}, "spec": {"hardware": v}});
        let Object::Server(s) = Object::from_json(Kind::Server, &doc.to_string()).unwrap() else {
            panic!()
        };
        assert_eq!(s.spec.hardware, Some(typed));
        // An all-empty part is left out, not stored as `{}`.
        let bare = pb::HardwareInformation {
            system: hw.system.clone(),
            compute: Some(pb::ComputeInformation::default()),
            memory: Some(pb::MemoryInformation::default()),
            ..Default::default()
        };
        let (_, h) = hardware(&bare).unwrap();
        assert_eq!((h.compute, h.memory), (None, None));
        assert!(h.system.is_some());
    }

    #[test]
    fn the_lease_check_wants_a_current_lease_of_one_of_the_servers_nics() {
        let mac = [0x52, 0x54, 0, 0, 0, 7];
        let other = [0x52, 0x54, 0, 0, 0, 8];
        let lease = |state, chaddr: [u8; 6], expires_at| Lease {
            addr: "10.0.0.7".parse().unwrap(),
            state,
            client_id: vec![],
            chaddr: chaddr.to_vec(),
            expires_at,
            hostname: None,
        };
        let caller: IpAddr = "10.0.0.7".parse().unwrap();
        let found = |l: Option<Lease>| Lookup::Lease(l.as_ref().map(Holder::from));
        let ok = found(Some(lease(LeaseState::Bound, mac, 2000)));
        lease_check("s", caller, &ok, &[other, mac], 1000).unwrap();
        for (l, want) in [
            (None, "holds no lease"),
            (
                Some(lease(LeaseState::Bound, mac, 1000)),
                "no current lease",
            ),
            (
                Some(lease(LeaseState::Released, mac, 2000)),
                "no current lease",
            ),
            (
                Some(lease(LeaseState::Declined, mac, 2000)),
                "no current lease",
            ),
            (Some(lease(LeaseState::Bound, other, 2000)), "another NIC"),
        ] {
            let e = lease_check("s", caller, &found(l), &[mac], 1000).unwrap_err();
            assert!(e.contains(want) && e.contains("10.0.0.7"), "{e}");
        }
        let v6: IpAddr = "fd00::7".parse().unwrap();
        let e = lease_check("s", v6, &Lookup::NoDhcpv6, &[mac], 1000).unwrap_err();
        assert!(e.contains("runs no DHCPv6 server"), "{e}");
        let e = lease_check("s", caller, &ok, &[], 1000).unwrap_err();
        assert!(e.contains("another NIC"), "{e}");
        lease_check("s", caller, &Lookup::Unchecked, &[], 1000).unwrap();
        // A DHCPv6 lease names the NIC by its DUID: DUID-LL and DUID-LLT carry the MAC;
        // another DUID type (DUID-UUID) names no NIC, so it never passes.
        let lease6 = |duid: Vec<u8>| Lease6 {
            addr: "fd00::7".parse().unwrap(),
            state: LeaseState::Bound,
            duid,
            iaid: 1,
            expires_at: 2000,
        };
        let v6_found = |l: Lease6| Lookup::Lease(Some(Holder::from(&l)));
        let ll = [vec![0, 3, 0, 1], mac.to_vec()].concat();
        let llt = [vec![0, 1, 0, 1, 1, 2, 3, 4], mac.to_vec()].concat();
        lease_check("s", v6, &v6_found(lease6(ll.clone())), &[mac], 1000).unwrap();
        lease_check("s", v6, &v6_found(lease6(llt)), &[mac], 1000).unwrap();
        let e = lease_check("s", v6, &v6_found(lease6(ll)), &[other], 1000).unwrap_err();
        assert!(e.contains("another NIC") && e.contains("fd00::7"), "{e}");
        let uuid_duid = [vec![0, 4], vec![7; 16]].concat();
        let e = lease_check("s", v6, &v6_found(lease6(uuid_duid)), &[mac], 1000).unwrap_err();
        assert!(e.contains("another NIC"), "{e}");
        let e = lease_check("s", v6, &Lookup::Lease(None), &[mac], 1000).unwrap_err();
        assert!(e.contains("fd00::7 holds no lease"), "{e}");
    }

    #[test]
    fn one_resolver_looks_each_family_up_in_its_own_lease_table_as_the_policy_says() {
        use crate::protocol::dhcp::LeaseChange;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("state.redb")).unwrap();
        let mac = [0x52, 0x54, 0, 0, 0, 7];
        store
            .commit_lease_changes(&[LeaseChange::Put(Lease {
                addr: "10.0.0.7".parse().unwrap(),
                state: LeaseState::Bound,
                client_id: vec![],
                chaddr: mac.to_vec(),
                expires_at: 2000,
                hostname: None,
            })])
            .unwrap();
        store
            .commit_lease6_changes(&[Lease6 {
                addr: "fd00::7".parse().unwrap(),
                state: LeaseState::Bound,
                duid: [vec![0, 3, 0, 1], mac.to_vec()].concat(),
                iaid: 1,
                expires_at: 2000,
            }])
            .unwrap();
        let held = Lookup::Lease(Some(Holder {
            state: LeaseState::Bound,
            expires_at: 2000,
            mac: Some(mac),
        }));
        let policy = |v4, v6| AgentPolicy {
            lease_check: v4,
            lease_check_v6: v6,
            ..Default::default()
        };
        let r = |p: AgentPolicy, ip: &str| resolve_holder(&store, &p, ip.parse().unwrap()).unwrap();
        // Off: nobody is checked.
        assert_eq!(r(policy(false, false), "10.0.0.7"), Lookup::Unchecked);
        assert_eq!(r(policy(false, false), "fd00::7"), Lookup::Unchecked);
        // v4 server mode only: IPv6 callers as before (refused: no DHCPv6 here).
        assert_eq!(r(policy(true, false), "10.0.0.7"), held);
        assert_eq!(r(policy(true, false), "10.0.0.8"), Lookup::Lease(None));
        assert_eq!(r(policy(true, false), "fd00::7"), Lookup::NoDhcpv6);
        // DHCPv6 only (the site's DHCP or none for v4): v6 callers checked, v4 not.
        assert_eq!(r(policy(false, true), "fd00::7"), held);
        assert_eq!(r(policy(false, true), "fd00::8"), Lookup::Lease(None));
        assert_eq!(r(policy(false, true), "10.0.0.8"), Lookup::Unchecked);
        // Both.
        assert_eq!(r(policy(true, true), "fd00::7"), held);
        assert_eq!(r(policy(true, true), "10.0.0.8"), Lookup::Lease(None));
    }

    /// The agent service on the production path (axum listener with the peer address), with
    /// DHCP server mode's lease check on; clients bind their sockets to 127/8 addresses.
    /// An agent service in sidero-compatible mode over `store` (auto-accept on, the BMC
    /// set-up of a default box), with `policy`; its lifecycle task is returned, not run
    /// (kept by the test until its end, as its channel's receiver).
    fn sidero_compatible(
        store: crate::store::Store,
        policy: AgentPolicy,
    ) -> (
        Lifecycle,
        crate::reconcile::task::ReconcileTask,
        Arc<AgentCounters>,
        AgentService,
    ) {
        let mut cfg = crate::config::Config::default().lifecycle;
        cfg.auto_accept = true;
        let bmc_cfg = crate::config::Config::default().bmc;
        let power = crate::bmc::power::PowerControl::new(store.clone(), &bmc_cfg);
        let setup =
            crate::bmc::setup::AutoSetup::new(store.clone(), power.gate().clone(), &bmc_cfg);
        let (lc, task) = Lifecycle::new(
            store,
            cfg,
            Arc::new(crate::reconcile::power::LoggedPower),
            Some(setup),
        );
        let counters = Arc::new(AgentCounters::default());
        let mut agent_cfg = crate::config::Config::default().agent;
        agent_cfg.first_contact = crate::config::FirstContactMode::SideroCompatible;
        let svc = AgentService::new(
            lc.clone(),
            counters.clone(),
            policy,
            Arc::new(FirstContact::new(&agent_cfg)),
        );
        (lc, task, counters, svc)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_dhcp_server_mode_wipe_and_bmc_reports_need_this_boxs_lease() {
        use appliance_rpc::agent::agent_client::AgentClient;
        use appliance_rpc::agent::agent_server::AgentServer;
        use tonic::transport::Endpoint;

        use crate::protocol::dhcp::LeaseChange;
        use crate::store::Store;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let mac = [0x52, 0x54, 0, 0, 0, 7];
        let now = crate::clock::WallClock::process().steady_secs();
        let lease = |ip: [u8; 4], chaddr: [u8; 6]| {
            LeaseChange::Put(Lease {
                addr: ip.into(),
                state: LeaseState::Bound,
                client_id: vec![],
                chaddr: chaddr.to_vec(),
                expires_at: now + 3600,
                hostname: None,
            })
        };
        store
            .commit_lease_changes(&[
                lease([127, 0, 0, 7], mac),
                lease([127, 0, 0, 9], [0x52, 0x54, 0, 0, 0, 9]),
            ])
            .unwrap();
        let (lc, _task, counters, svc) = sidero_compatible(
            store,
            AgentPolicy {
                lease_check: true,
                ..Default::default()
            },
        );
        let router = tonic::service::Routes::new(AgentServer::new(svc)).into_axum_router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::listener::serve(
            listener,
            router,
            async {
                let _ = stopped.await;
            },
            crate::http::listener::ListenerSettings::from_config(
                &crate::config::Config::default().http,
            ),
            Default::default(),
        ));
        let client = |src: [u8; 4]| async move {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .local_address(Some(IpAddr::from(src)))
                .connect()
                .await
                .unwrap();
            AgentClient::new(channel)
        };
        let uuid = "4c4c4544-0042-3510-8052-b4c04f4e3131";
        let create = pb::CreateServerRequest {
            hardware: Some(pb::HardwareInformation {
                system: Some(pb::SystemInformation {
                    uuid: uuid.into(),
                    ..Default::default()
                }),
                network: Some(pb::NetworkInformation {
                    interface_count: 1,
                    interfaces: vec![pb::NetworkInterface {
                        name: "eth0".into(),
                        mac: "52:54:00:00:00:07".into(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            hostname: String::new(),
        };
        let wiped = pb::MarkServerAsWipedRequest {
            uuid: uuid.into(),
            wipe_mode: 0,
        };
        let phase = || {
            let Some(Object::Server(s)) = lc
                .store()
                .get(Kind::Server, uuid)
                .unwrap()
                .map(|s| s.object)
            else {
                panic!("no server")
            };
            apply::server_state(&s).phase
        };

        // Registered and told to wipe from an address without a lease: its reports are
        // refused (a wipe report, a BMC report), the server stays wiping.
        let mut unleased = client([127, 0, 0, 8]).await;
        let r = unleased
            .create_server(create.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(r.setup_bmc, "{r:?}");
        let n = unleased
            .next_action(pb::NextActionRequest { uuid: uuid.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(n.action, AgentAction::Wipe as i32);
        let e = unleased
            .mark_server_as_wiped(wiped.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.message().contains("127.0.0.8 holds no lease"), "{e}");
        let e = unleased
            .update_bmc_info(pb::UpdateBmcInfoRequest {
                uuid: uuid.into(),
                bmc_info: Some(pb::BmcInfo {
                    ip: "10.9.9.9".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert_eq!(phase(), Phase::Wiping);
        // An address leased to another machine's NIC: refused too.
        let mut other = client([127, 0, 0, 9]).await;
        assert!(
            other
                .create_server(create.clone())
                .await
                .unwrap()
                .into_inner()
                .wipe
        );
        let e = other.mark_server_as_wiped(wiped.clone()).await.unwrap_err();
        assert!(e.message().contains("leased to another NIC"), "{e}");
        assert_eq!(phase(), Phase::Wiping);
        assert_eq!(counters.lease.get(), 3);
        // The address leased to the server's own NIC: its wipe report counts.
        let mut own = client([127, 0, 0, 7]).await;
        assert!(
            own.create_server(create.clone())
                .await
                .unwrap()
                .into_inner()
                .wipe
        );
        own.mark_server_as_wiped(wiped).await.unwrap();
        assert_eq!(phase(), Phase::Available);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    /// The displacement rule at the lease-check level: a second DHCPv6 lease whose DUID
    /// (DUID-LL under another IAID, or a DUID-LLT) names server A's MAC passes the plain
    /// lease check — the DUID is the client's own claim — but never displaces A's agent
    /// while the address A's agent registered from still holds its current lease.
    #[test]
    fn a_copied_duid_never_displaces_the_registered_agent() {
        let a_mac = [0x52, 0x54, 0, 0, 0, 0xa];
        let other = [0x52, 0x54, 0, 0, 0, 0xb];
        let (a_ip, forger): (IpAddr, IpAddr) =
            ("fd00::a".parse().unwrap(), "fd00::f".parse().unwrap());
        let lease6 = |addr: IpAddr, duid: Vec<u8>, iaid, state, expires_at| Lease6 {
            addr: match addr {
                IpAddr::V6(a) => a,
                IpAddr::V4(_) => unreachable!(),
            },
            state,
            duid,
            iaid,
            expires_at,
        };
        let found = |l: Lease6| Lookup::Lease(Some(Holder::from(&l)));
        let ll = [vec![0, 3, 0, 1], a_mac.to_vec()].concat();
        let llt = [vec![0, 1, 0, 1, 9, 9, 9, 9], a_mac.to_vec()].concat();
        let a_lease = |state, expires_at| found(lease6(a_ip, ll.clone(), 1, state, expires_at));
        for forged in [
            lease6(forger, ll.clone(), 2, LeaseState::Bound, 2000),
            lease6(forger, llt.clone(), 1, LeaseState::Bound, 2000),
        ] {
            // The DUID alone passes the lease check: it is no proof.
            lease_check("a", forger, &found(forged), &[a_mac], 1000).unwrap();
            // While A's own address holds its lease, the forger cannot displace it.
            let e = displacement_check(
                "a",
                forger,
                a_ip,
                &a_lease(LeaseState::Bound, 2000),
                &[a_mac],
                1000,
            )
            .unwrap_err();
            assert!(
                e.contains("copied DUID") && e.contains("fd00::f") && !e.contains("fd00::a"),
                "{e}"
            );
        }
        // A's agent registering again from its own address: no displacement.
        displacement_check(
            "a",
            a_ip,
            a_ip,
            &a_lease(LeaseState::Bound, 2000),
            &[a_mac],
            1000,
        )
        .unwrap();
        // Once that lease ended (expired, released, declined), the NIC has no agent
        // address: a new one may register (the documented limit of a non-cryptographic
        // check; token mode's pinned key is what binds later calls).
        for (state, expires_at) in [
            (LeaseState::Bound, 1000),
            (LeaseState::Released, 2000),
            (LeaseState::Declined, 2000),
        ] {
            displacement_check(
                "a",
                forger,
                a_ip,
                &a_lease(state, expires_at),
                &[a_mac],
                1000,
            )
            .unwrap();
        }
        // The prior address leased to another NIC, or to none, or not checked: no claim.
        for l in [
            found(lease6(
                a_ip,
                [vec![0, 3, 0, 1], other.to_vec()].concat(),
                1,
                LeaseState::Bound,
                2000,
            )),
            Lookup::Lease(None),
            Lookup::Unchecked,
            Lookup::NoDhcpv6,
        ] {
            displacement_check("a", forger, a_ip, &l, &[a_mac], 1000).unwrap();
        }
        // The same rule for IPv4: a chaddr copied under another client identifier.
        let v4 = |ip: [u8; 4]| Lease {
            addr: ip.into(),
            state: LeaseState::Bound,
            client_id: vec![ip[3]],
            chaddr: a_mac.to_vec(),
            expires_at: 2000,
            hostname: None,
        };
        let (a4, f4) = (IpAddr::from([10, 0, 0, 10]), IpAddr::from([10, 0, 0, 15]));
        lease_check(
            "a",
            f4,
            &Lookup::Lease(Some(Holder::from(&v4([10, 0, 0, 15])))),
            &[a_mac],
            1000,
        )
        .unwrap();
        let e = displacement_check(
            "a",
            f4,
            a4,
            &Lookup::Lease(Some(Holder::from(&v4([10, 0, 0, 10])))),
            &[a_mac],
            1000,
        )
        .unwrap_err();
        assert!(e.contains("10.0.0.15"), "{e}");
    }

    /// The attack end to end at the agent service (its handlers called with the caller's
    /// address as the :8081 listener sets it), in Sidero-compatible mode where no key binds
    /// the calls and the lease check is the guard: the box's real DHCPv6 core leases server
    /// A's agent an address under A's DUID-LL, and two more to a host on the segment under
    /// DUIDs naming A's MAC (A's DUID-LL with another IAID; a DUID-LLT). From those
    /// addresses the forger's registration of A (with a changed report), its BMC report
    /// and its wipe report are all refused, and nothing of A changes: its stored object,
    /// its agent boot's address, its phase; A's own agent then reports its wipe.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_with_a_dhcpv6_lease_under_a_copied_duid_changes_nothing_of_the_server() {
        use crate::protocol::dhcpv6::{self, Dhcpv6Server, wire};
        use crate::store::Store;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let now = crate::clock::WallClock::process().steady_secs();
        let a_mac = [0x52, 0x54, 0, 0, 0, 0xa];
        let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        let mut core = Dhcpv6Server::new(
            dhcpv6::Config {
                server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1],
                server_ip: ip("fd00:77::1"),
                prefix: ip("fd00:77::"),
                prefix_len: 64,
                pool_start: ip("fd00:77::100"),
                pool_end: ip("fd00:77::1ff"),
                preferred_secs: 1800,
                valid_secs: 3600,
                dns: vec![],
                boot: Default::default(),
                boot_file_params: vec![],
                decline_hold_secs: 600,
            },
            [],
        )
        .unwrap();
        // A Solicit with Rapid Commit: the core binds at once; the lease is stored as the
        // DHCPv6 service stores it.
        let mut lease = |duid: &[u8], iaid: u32| -> IpAddr {
            let mut out = wire::Out::new(wire::SOLICIT, [1, 2, 3]);
            out.opt(wire::OPT_CLIENTID, duid);
            out.opt(wire::OPT_RAPID_COMMIT, &[]);
            out.opt(wire::OPT_IA_NA, &wire::ia_na(iaid, 0, 0, &[]));
            let d = core.handle(now, &out.into_bytes()).unwrap();
            assert_eq!(d.changes.len(), 1, "{d:?}");
            store.commit_lease6_changes(&d.changes).unwrap();
            IpAddr::V6(d.changes[0].addr)
        };
        let ll = [vec![0, 3, 0, 1], a_mac.to_vec()].concat();
        let llt = [vec![0, 1, 0, 1, 0x2f, 0, 0, 1], a_mac.to_vec()].concat();
        let a_ip = lease(&ll, 1);
        let forgers = [lease(&ll, 2), lease(&llt, 1)];
        assert!(forgers.iter().all(|f| *f != a_ip), "{a_ip} {forgers:?}");

        let (lc, _task, counters, svc) = sidero_compatible(
            store,
            AgentPolicy {
                lease_check_v6: true,
                ..Default::default()
            },
        );
        fn from<T>(ip: IpAddr, msg: T) -> Request<T> {
            let mut r = Request::new(msg);
            r.extensions_mut()
                .insert(axum::extract::ConnectInfo(SocketAddr::new(ip, 40000)));
            r
        }
        let uuid = "4c4c4544-0042-3510-8052-b4c04f4e3141";
        let create = |hostname: &str, disk: u64| pb::CreateServerRequest {
            hardware: Some(pb::HardwareInformation {
                system: Some(pb::SystemInformation {
                    uuid: uuid.into(),
                    ..Default::default()
                }),
                storage: Some(pb::StorageInformation {
                    total_size: disk,
                    device_count: 1,
                    devices: vec![pb::StorageDevice {
                        size: disk,
                        device_name: "/dev/vda".into(),
                        ..Default::default()
                    }],
                }),
                network: Some(pb::NetworkInformation {
                    interface_count: 1,
                    interfaces: vec![pb::NetworkInterface {
                        name: "eth0".into(),
                        mac: "52:54:00:00:00:0a".into(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            hostname: hostname.into(),
        };
        let stored = || {
            let Some(Object::Server(s)) = lc
                .store()
                .get(Kind::Server, uuid)
                .unwrap()
                .map(|s| s.object)
            else {
                panic!("no server")
            };
            s
        };

        // A's agent registers from its own lease: asked for its BMC, then told to wipe.
        let r = svc
            .create_server(from(a_ip, create("a", 1 << 30)))
            .await
            .unwrap()
            .into_inner();
        assert!(r.setup_bmc, "{r:?}");
        let n = svc
            .next_action(from(a_ip, pb::NextActionRequest { uuid: uuid.into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(n.action, AgentAction::Wipe as i32);
        let before = serde_json::to_value(stored()).unwrap();
        assert_eq!(apply::server_state(&stored()).phase, Phase::Wiping);

        for (k, f) in forgers.iter().enumerate() {
            // The forger's address passes the plain lease check for A's NIC…
            let lookup = resolve_holder(lc.store(), &svc.policy, *f).unwrap();
            lease_check(uuid, *f, &lookup, &[a_mac], now).unwrap();
            // …but its registration of A (another hostname, another disk) is refused,
            let e = svc
                .create_server(from(*f, create("forged", 2 << 30)))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
            assert!(e.message().contains("copied DUID"), "{e}");
            // and so are its BMC and wipe reports for A.
            let e = svc
                .update_bmc_info(from(
                    *f,
                    pb::UpdateBmcInfoRequest {
                        uuid: uuid.into(),
                        bmc_info: Some(pb::BmcInfo {
                            ip: "10.9.9.9".into(),
                            user: "root".into(),
                            pass: "forged".into(),
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
            let e = svc
                .mark_server_as_wiped(from(
                    *f,
                    pb::MarkServerAsWipedRequest {
                        uuid: uuid.into(),
                        wipe_mode: 0,
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
            // Nothing of A changed: its object, its agent boot's address, its phase.
            assert_eq!(
                serde_json::to_value(stored()).unwrap(),
                before,
                "forger {k}"
            );
            assert_eq!(lc.boot(uuid).map(|b| b.source), Some(a_ip));
            assert_eq!(apply::server_state(&stored()).phase, Phase::Wiping);
        }
        assert_eq!(counters.lease.get(), 2);
        assert_eq!(counters.wrong_source.get(), 4);
        // A's own agent goes on: its wipe report from its lease counts.
        svc.mark_server_as_wiped(from(
            a_ip,
            pb::MarkServerAsWipedRequest {
                uuid: uuid.into(),
                wipe_mode: 0,
            },
        ))
        .await
        .unwrap();
        assert_eq!(apply::server_state(&stored()).phase, Phase::Available);
    }

    #[test]
    fn bad_hardware_is_rejected_with_the_field() {
        let mut hw = pb::HardwareInformation::default();
        assert!(
            hardware(&hw)
                .unwrap_err()
                .message()
                .contains("hardware.system")
        );
        hw.system = Some(pb::SystemInformation {
            uuid: "4c4c4544-0042-3510-8052-b4c04f4e3132".into(),
            manufacturer: "x\u{0}y".into(),
            ..Default::default()
        });
        let e = hardware(&hw).unwrap_err();
        assert!(
            e.message().contains("hardware.system.manufacturer"),
            "{}",
            e.message()
        );
        hw.system.as_mut().unwrap().manufacturer = "a".repeat(MAX_STR + 1);
        assert!(hardware(&hw).unwrap_err().message().contains("at most"));
    }
}
