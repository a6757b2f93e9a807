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

#[derive(Debug, Clone)]
enum Slot {
    Offered { client_id: Vec<u8>, until: u64 },
    Lease(Lease),
}

/// The core's view of who holds which address.
#[derive(Debug, Default)]
pub struct LeaseTable {
    slots: HashMap<Ipv4Addr, Slot>,
    /// A client's most recent address (offered or leased).
    by_client: HashMap<Vec<u8>, Ipv4Addr>,
}

impl LeaseTable {
    /// Rebuilds the table from stored records.
    pub fn from_leases(leases: impl IntoIterator<Item = Lease>) -> LeaseTable {
        let mut t = LeaseTable::default();
        for l in leases {
            if l.state != LeaseState::Declined {
                t.by_client.insert(l.client_id.clone(), l.addr);
            }
            t.slots.insert(l.addr, Slot::Lease(l));
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
            Slot::Offered { client_id: c, .. } if c == client_id => Some(addr),
            Slot::Lease(l) if l.client_id == client_id && l.state != LeaseState::Declined => {
                Some(addr)
            }
            _ => None,
        }
    }

    /// The persisted record for `addr`, if any.
    pub fn lease(&self, addr: Ipv4Addr) -> Option<&Lease> {
        match self.slots.get(&addr)? {
            Slot::Lease(l) => Some(l),
            Slot::Offered { .. } => None,
        }
    }

    /// All persisted records (for inspection and tests).
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.slots.values().filter_map(|s| match s {
            Slot::Lease(l) => Some(l),
            Slot::Offered { .. } => None,
        })
    }

    /// The client currently holding `addr` at `now`, if anyone does.
    pub fn holder(&self, addr: Ipv4Addr, now: u64) -> Option<&[u8]> {
        match self.slots.get(&addr)? {
            Slot::Offered { client_id, until } if *until > now => Some(client_id),
            Slot::Lease(l) if l.state == LeaseState::Bound && l.expires_at > now => {
                Some(&l.client_id)
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
        let owner = match self.slots.get(&addr) {
            Some(Slot::Offered { client_id, .. }) => client_id.clone(),
            Some(Slot::Lease(l)) => l.client_id.clone(),
            None => return,
        };
        if self.by_client.get(&owner) == Some(&addr) {
            self.by_client.remove(&owner);
        }
    }

    /// Holds `addr` for `client_id` until `until` (not persisted). A client's own lease
    /// record on `addr` is kept as it is.
    pub fn offer(&mut self, addr: Ipv4Addr, client_id: &[u8], until: u64) {
        if let Some(Slot::Lease(l)) = self.slots.get(&addr)
            && l.client_id == client_id
            && l.state == LeaseState::Bound
            && l.expires_at >= until
        {
            self.by_client.insert(client_id.to_vec(), addr);
            return;
        }
        self.forget_owner_of(addr);
        self.slots.insert(
            addr,
            Slot::Offered {
                client_id: client_id.to_vec(),
                until,
            },
        );
        self.by_client.insert(client_id.to_vec(), addr);
    }

    /// Drops an offer made to `client_id` (it chose another server).
    pub fn withdraw_offer(&mut self, client_id: &[u8]) -> Option<Ipv4Addr> {
        let addr = *self.by_client.get(client_id)?;
        match self.slots.get(&addr) {
            Some(Slot::Offered { client_id: c, .. }) if c == client_id => {
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
        if let Some(old) = self.by_client.get(&lease.client_id).copied()
            && old != lease.addr
        {
            match self.slots.get(&old) {
                Some(Slot::Lease(l)) if l.client_id == lease.client_id => {
                    self.slots.remove(&old);
                    changes.push(LeaseChange::Remove(old));
                }
                Some(Slot::Offered { client_id, .. }) if *client_id == lease.client_id => {
                    self.slots.remove(&old);
                }
                _ => {}
            }
        }
        self.forget_owner_of(lease.addr);
        self.by_client.insert(lease.client_id.clone(), lease.addr);
        self.slots.insert(lease.addr, Slot::Lease(lease.clone()));
        changes.push(LeaseChange::Put(lease));
        changes
    }

    /// Marks `addr` released by its client; returns the record to persist.
    pub fn release(&mut self, addr: Ipv4Addr, client_id: &[u8]) -> Option<Lease> {
        match self.slots.get_mut(&addr) {
            Some(Slot::Lease(l)) if l.client_id == client_id && l.state == LeaseState::Bound => {
                l.state = LeaseState::Released;
                Some(l.clone())
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
        self.slots.insert(addr, Slot::Lease(lease.clone()));
        lease
    }
}
