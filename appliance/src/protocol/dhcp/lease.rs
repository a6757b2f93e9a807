//! Leases: the persisted record ([`Lease`]), the changes the core asks the store to commit
//! ([`LeaseChange`]) and the in-memory table the core decides from ([`LeaseTable`]).
//!
//! The table holds, per address, either a short-lived offer (memory only) or a lease record
//! (bound, released or declined; persisted). Invariant: an address has at most one holder,
//! and an address is held by a client only while its offer or binding has not run out.
//! Time is a Unix timestamp in seconds, passed in by the caller.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The state of a persisted lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Bound to `client_id` until `expires_at`.
    Bound,
    /// Given back by the client; free, but remembered so the client gets it again.
    Released,
    /// A client reported the address in use (DHCPDECLINE): not handed out until `expires_at`.
    Declined,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }
}

/// A lease record as the store keeps it (key: `addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub state: LeaseState,
    /// Option 61, or hardware type + chaddr when the client sent none.
    pub client_id: Vec<u8>,
    /// The client's hardware address (`chaddr[..hlen]`).
    pub chaddr: Vec<u8>,
    /// End of the binding (bound) or of the quarantine (declined), Unix seconds.
    pub expires_at: u64,
    pub hostname: Option<String>,
}

/// The restart rule of lease time, for DHCPv4 and DHCPv6 leases alike (their `expires_at`):
/// expiry times loaded from the store were written by an earlier process on its lease time,
/// which began at its start's wall clock. An expiry more than `longest_secs` (the longest
/// lease or hold this box hands out) after `now` can only come from a wall clock set back
/// since: it is brought back to `now + longest_secs`, so no lease outlives one lease time.
/// An expiry already past stays past (a clock set forward across a restart looks like
/// downtime: those leases ended). Returns how many changed.
pub fn clamp_after_restart<'a>(
    expiries: impl IntoIterator<Item = &'a mut u64>,
    now: u64,
    longest_secs: u64,
) -> usize {
    let limit = now.saturating_add(longest_secs);
    let mut clamped = 0;
    for e in expiries.into_iter().filter(|e| **e > limit) {
        *e = limit;
        clamped += 1;
    }
    clamped
}

/// A durable change the core asks for; the reply that depends on it is sent only after the
/// store committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Put(Lease),
    Remove(Ipv4Addr),
}

/// Bytes of a client identifier or hardware address as the table keeps them: up to
/// [`INLINE`] bytes in place, with no allocation of their own (an Ethernet client's
/// identifier is 7 bytes, its chaddr 6), longer ones on the heap. One form per length, so
/// equal bytes are equal values; hashed as the byte slice, so a table keyed by it is
/// searched with a `&[u8]`.
#[derive(Clone)]
enum Bytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

/// The longest identifier held in place: with the tag and length, 24 bytes, the size of
/// the heap form's pointer and length.
const INLINE: usize = 22;

impl Bytes {
    fn new(b: &[u8]) -> Bytes {
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Bytes::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Bytes::Heap(b.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, buf } => &buf[..usize::from(*len)],
            Bytes::Heap(b) => b,
        }
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl std::hash::Hash for Bytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A lease record as the table holds it: the [`Lease`] without its address (the table's
/// key) and without allocations for the usual identifiers.
#[derive(Debug, Clone)]
struct Held {
    state: LeaseState,
    client_id: Bytes,
    chaddr: Bytes,
    expires_at: u64,
    hostname: Option<Box<str>>,
}

impl Held {
    fn new(l: &Lease) -> Held {
        Held {
            state: l.state,
            client_id: Bytes::new(&l.client_id),
            chaddr: Bytes::new(&l.chaddr),
            expires_at: l.expires_at,
            hostname: l.hostname.as_deref().map(Box::from),
        }
    }

    fn lease(&self, addr: Ipv4Addr) -> Lease {
        Lease {
            addr,
            state: self.state,
            client_id: self.client_id.as_slice().to_vec(),
            chaddr: self.chaddr.as_slice().to_vec(),
            expires_at: self.expires_at,
            hostname: self.hostname.as_deref().map(str::to_string),
        }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Offered { client_id: Bytes, until: u64 },
    Lease(Held),
}

impl Slot {
    fn client_id(&self) -> &Bytes {
        match self {
            Slot::Offered { client_id, .. } => client_id,
            Slot::Lease(l) => &l.client_id,
        }
    }
}

/// The core's view of who holds which address. Per address about 180 bytes with the
/// tables' spare room and no allocation of its own (`Held`, `Bytes`): the box keeps every
/// lease of its pools in memory, 45,000 in `scripts/bench dhcp`.
#[derive(Debug, Default)]
pub struct LeaseTable {
    slots: HashMap<Ipv4Addr, Slot>,
    /// A client's most recent address (offered or leased).
    by_client: HashMap<Bytes, Ipv4Addr>,
}

impl LeaseTable {
    /// Rebuilds the table from stored records.
    pub fn from_leases(leases: impl IntoIterator<Item = Lease>) -> LeaseTable {
        let mut t = LeaseTable::default();
        for l in leases {
            let held = Held::new(&l);
            if l.state != LeaseState::Declined {
                t.by_client.insert(held.client_id.clone(), l.addr);
            }
            t.slots.insert(l.addr, Slot::Lease(held));
        }
        t
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when no offer or record exists for `addr` (never used).
    pub fn is_fresh(&self, addr: Ipv4Addr) -> bool {
        !self.slots.contains_key(&addr)
    }

    /// The client's most recent address, if the table still ties it to the client.
    pub fn address_of(&self, client_id: &[u8]) -> Option<Ipv4Addr> {
        let addr = *self.by_client.get(client_id)?;
        match self.slots.get(&addr)? {
            Slot::Offered { client_id: c, .. } if c.as_slice() == client_id => Some(addr),
            Slot::Lease(l)
                if l.client_id.as_slice() == client_id && l.state != LeaseState::Declined =>
            {
                Some(addr)
            }
            _ => None,
        }
    }

    /// The persisted record for `addr`, if any.
    pub fn lease(&self, addr: Ipv4Addr) -> Option<Lease> {
        match self.slots.get(&addr)? {
            Slot::Lease(l) => Some(l.lease(addr)),
            Slot::Offered { .. } => None,
        }
    }

    /// All persisted records (for inspection and tests).
    pub fn leases(&self) -> impl Iterator<Item = Lease> + '_ {
        self.slots.iter().filter_map(|(addr, s)| match s {
            Slot::Lease(l) => Some(l.lease(*addr)),
            Slot::Offered { .. } => None,
        })
    }

    /// The client currently holding `addr` at `now`, if anyone does.
    pub fn holder(&self, addr: Ipv4Addr, now: u64) -> Option<&[u8]> {
        match self.slots.get(&addr)? {
            Slot::Offered { client_id, until } if *until > now => Some(client_id.as_slice()),
            Slot::Lease(l) if l.state == LeaseState::Bound && l.expires_at > now => {
                Some(l.client_id.as_slice())
            }
            _ => None,
        }
    }

    /// True when `addr` is quarantined by a DECLINE at `now`.
    pub fn is_declined(&self, addr: Ipv4Addr, now: u64) -> bool {
        matches!(self.slots.get(&addr), Some(Slot::Lease(l))
            if l.state == LeaseState::Declined && l.expires_at > now)
    }

    /// True when `client_id` may be given `addr` at `now`: nobody else holds it and it is
    /// not quarantined.
    pub fn available_for(&self, addr: Ipv4Addr, client_id: &[u8], now: u64) -> bool {
        if self.is_declined(addr, now) {
            return false;
        }
        match self.holder(addr, now) {
            None => true,
            Some(h) => h == client_id,
        }
    }

    /// Unexpired binding of `client_id` other than `except`, if any.
    pub fn other_binding(&self, client_id: &[u8], except: Ipv4Addr, now: u64) -> Option<Ipv4Addr> {
        let addr = self.address_of(client_id)?;
        (addr != except && self.holder(addr, now) == Some(client_id)).then_some(addr)
    }

    fn forget_owner_of(&mut self, addr: Ipv4Addr) {
        let Some(slot) = self.slots.get(&addr) else {
            return;
        };
        let owner = slot.client_id().as_slice();
        if self.by_client.get(owner) == Some(&addr) {
            self.by_client.remove(owner);
        }
    }

    /// Holds `addr` for `client_id` until `until` (not persisted). A client's own lease
    /// record on `addr` is kept as it is.
    pub fn offer(&mut self, addr: Ipv4Addr, client_id: &[u8], until: u64) {
        let id = Bytes::new(client_id);
        if let Some(Slot::Lease(l)) = self.slots.get(&addr)
            && l.client_id == id
            && l.state == LeaseState::Bound
            && l.expires_at >= until
        {
            self.by_client.insert(id, addr);
            return;
        }
        self.forget_owner_of(addr);
        self.slots.insert(
            addr,
            Slot::Offered {
                client_id: id.clone(),
                until,
            },
        );
        self.by_client.insert(id, addr);
    }

    /// Drops an offer made to `client_id` (it chose another server).
    pub fn withdraw_offer(&mut self, client_id: &[u8]) -> Option<Ipv4Addr> {
        let addr = *self.by_client.get(client_id)?;
        match self.slots.get(&addr) {
            Some(Slot::Offered { client_id: c, .. }) if c.as_slice() == client_id => {
                self.slots.remove(&addr);
                self.by_client.remove(client_id);
                Some(addr)
            }
            _ => None,
        }
    }

    /// Binds `lease` (state bound). Returns the changes to persist: the new record, and the
    /// removal of another record the same client held.
    pub fn bind(&mut self, lease: Lease) -> Vec<LeaseChange> {
        let mut changes = Vec::with_capacity(2);
        let held = Held::new(&lease);
        if let Some(old) = self.by_client.get(&held.client_id).copied()
            && old != lease.addr
        {
            match self.slots.get(&old) {
                Some(Slot::Lease(l)) if l.client_id == held.client_id => {
                    self.slots.remove(&old);
                    changes.push(LeaseChange::Remove(old));
                }
                Some(Slot::Offered { client_id, .. }) if *client_id == held.client_id => {
                    self.slots.remove(&old);
                }
                _ => {}
            }
        }
        self.forget_owner_of(lease.addr);
        self.by_client.insert(held.client_id.clone(), lease.addr);
        self.slots.insert(lease.addr, Slot::Lease(held));
        changes.push(LeaseChange::Put(lease));
        changes
    }

    /// Marks `addr` released by its client; returns the record to persist.
    pub fn release(&mut self, addr: Ipv4Addr, client_id: &[u8]) -> Option<Lease> {
        match self.slots.get_mut(&addr) {
            Some(Slot::Lease(l))
                if l.client_id.as_slice() == client_id && l.state == LeaseState::Bound =>
            {
                l.state = LeaseState::Released;
                Some(l.lease(addr))
            }
            _ => None,
        }
    }

    /// Quarantines `addr` until `until` after a DECLINE; returns the record to persist.
    pub fn decline(
        &mut self,
        addr: Ipv4Addr,
        client_id: &[u8],
        chaddr: &[u8],
        until: u64,
    ) -> Lease {
        self.forget_owner_of(addr);
        if self.by_client.get(client_id) == Some(&addr) {
            self.by_client.remove(client_id);
        }
        let lease = Lease {
            addr,
            state: LeaseState::Declined,
            client_id: client_id.to_vec(),
            chaddr: chaddr.to_vec(),
            expires_at: until,
            hostname: None,
        };
        self.slots.insert(addr, Slot::Lease(Held::new(&lease)));
        lease
    }
}
