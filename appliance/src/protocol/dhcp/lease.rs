//! Leases: the persisted record ([`Lease`]), the changes the core asks the store to commit
//! ([`LeaseChange`]) and the in-memory table the core decides from ([`LeaseTable`]).
//!
//! The table holds, per address, either a short-lived offer (memory only) or a lease record
//! (bound, released or declined; persisted). Invariant: an address has at most one holder,
//! and an address is held by a client only while its offer or binding has not run out.
//! Time is a Unix timestamp in seconds, passed in by the caller.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;

use hashbrown::HashTable;

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

/// The longest client identifier a record holds in place. An Ethernet client's identifier
/// is 7 bytes (hardware type 1 + MAC), whether it sent option 61 or the core made it up
/// from chaddr; longer ones go to the record's [`Extra`].
const ID: usize = 10;

/// What a slot of the table is: an offer, a lease record in one of its states, or free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Offered,
    Lease(LeaseState),
}

/// One slot of the table, 24 bytes, no allocation of its own in the usual case: the client
/// identifier in place when it fits [`ID`], the hardware address not at all when it is the
/// identifier without its first byte (hardware type + chaddr, as above). Anything else (a
/// longer identifier, another hardware address, a hostname) is kept in [`Extra`].
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// End of the offer (offered), of the binding (bound) or of the quarantine (declined).
    expires_at: u64,
    addr: Ipv4Addr,
    id: [u8; ID],
    /// Length of the identifier in `id`, or [`IN_EXTRA`] when it is in the slot's `Extra`.
    id_len: u8,
    /// [`Kind`] in the low bits, [`CHADDR_IS_ID_TAIL`] and [`HAS_EXTRA`] above.
    flags: u8,
}

const IN_EXTRA: u8 = u8::MAX;
const KIND_MASK: u8 = 0b111;
const CHADDR_IS_ID_TAIL: u8 = 1 << 3;
const HAS_EXTRA: u8 = 1 << 4;

impl Kind {
    fn bits(self) -> u8 {
        match self {
            Kind::Free => 0,
            Kind::Offered => 1,
            Kind::Lease(LeaseState::Bound) => 2,
            Kind::Lease(LeaseState::Released) => 3,
            Kind::Lease(LeaseState::Declined) => 4,
        }
    }

    fn from_bits(b: u8) -> Kind {
        match b & KIND_MASK {
            1 => Kind::Offered,
            2 => Kind::Lease(LeaseState::Bound),
            3 => Kind::Lease(LeaseState::Released),
            4 => Kind::Lease(LeaseState::Declined),
            _ => Kind::Free,
        }
    }
}

/// The parts of a slot that do not fit its [`Rec`]; most slots have none.
#[derive(Debug, Clone, Default)]
struct Extra {
    /// The client identifier when longer than [`ID`].
    client_id: Option<Box<[u8]>>,
    /// The hardware address when it is not the identifier's tail (empty when none).
    chaddr: Box<[u8]>,
    hostname: Option<Box<str>>,
}

/// The core's view of who holds which address: per address one fixed-size [`Rec`] in a
/// vector, found through two indexes that hold slot numbers, not keys, each hashed from the
/// slot itself (by address, and by client identifier): 5 bytes a bucket, where a map from
/// the address took 9 (0.56 instead of 0.31 MiB at the bench's 45,000 leases). 49 bytes per
/// lease with the vector's and the indexes' spare room (`tests/dhcp_lease_memory.rs`): the
/// box keeps every lease of its pools in memory, 45,000 in `scripts/bench dhcp`.
#[derive(Debug, Default)]
pub struct LeaseTable {
    recs: Vec<Rec>,
    /// Slots given back, reused before the vector grows.
    free: Vec<u32>,
    /// Every used slot; hashed by the slot's address.
    by_addr: HashTable<u32>,
    /// A client's most recent slot (offered or leased); hashed by the slot's identifier.
    by_client: HashTable<u32>,
    hasher: RandomState,
    extra: HashMap<u32, Extra>,
}

impl LeaseTable {
    /// Rebuilds the table from stored records.
    pub fn from_leases(leases: impl IntoIterator<Item = Lease>) -> LeaseTable {
        let mut t = LeaseTable::default();
        for l in leases {
            let slot = t.slot_for(l.addr);
            t.forget_owner_of_slot(slot);
            t.fill(
                slot,
                Kind::Lease(l.state),
                &l.client_id,
                &l.chaddr,
                l.expires_at,
                l.hostname.as_deref(),
            );
            if l.state != LeaseState::Declined {
                t.index_client(slot);
            }
        }
        t
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// True when no offer or record exists for `addr` (never used).
    pub fn is_fresh(&self, addr: Ipv4Addr) -> bool {
        self.slot_of(addr).is_none()
    }

    fn rec(&self, slot: u32) -> &Rec {
        &self.recs[slot as usize]
    }

    fn kind(&self, slot: u32) -> Kind {
        Kind::from_bits(self.rec(slot).flags)
    }

    fn client_id_of(&self, slot: u32) -> &[u8] {
        client_id_in(&self.recs, &self.extra, slot)
    }

    fn chaddr_of(&self, slot: u32) -> &[u8] {
        let r = self.rec(slot);
        if r.flags & CHADDR_IS_ID_TAIL != 0 {
            &r.id[1..usize::from(r.id_len)]
        } else {
            self.extra
                .get(&slot)
                .map(|e| &*e.chaddr)
                .unwrap_or_default()
        }
    }

    fn lease_of(&self, slot: u32) -> Option<Lease> {
        let Kind::Lease(state) = self.kind(slot) else {
            return None;
        };
        let r = self.rec(slot);
        Some(Lease {
            addr: r.addr,
            state,
            client_id: self.client_id_of(slot).to_vec(),
            chaddr: self.chaddr_of(slot).to_vec(),
            expires_at: r.expires_at,
            hostname: self
                .extra
                .get(&slot)
                .and_then(|e| e.hostname.as_deref())
                .map(str::to_string),
        })
    }

    fn slot_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let hash = self.hasher.hash_one(addr);
        self.by_addr
            .find(hash, |&s| self.recs[s as usize].addr == addr)
            .copied()
    }

    /// The slot of `addr`, a new one (a free one reused first) when it has none.
    fn slot_for(&mut self, addr: Ipv4Addr) -> u32 {
        if let Some(slot) = self.slot_of(addr) {
            return slot;
        }
        let empty = Rec {
            expires_at: 0,
            addr,
            id: [0; ID],
            id_len: 0,
            flags: Kind::Free.bits(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.recs[slot as usize] = empty;
                slot
            }
            None => {
                let slot = u32::try_from(self.recs.len()).expect("fewer than 2^32 leases");
                self.recs.push(empty);
                slot
            }
        };
        let LeaseTable {
            recs,
            by_addr,
            hasher,
            ..
        } = self;
        by_addr.insert_unique(hasher.hash_one(addr), slot, |&s| {
            hasher.hash_one(recs[s as usize].addr)
        });
        slot
    }

    /// Writes a slot's contents (its address stays). The slot must not be in `by_client`.
    fn fill(
        &mut self,
        slot: u32,
        kind: Kind,
        client_id: &[u8],
        chaddr: &[u8],
        expires_at: u64,
        hostname: Option<&str>,
    ) {
        let mut extra = Extra::default();
        let r = &mut self.recs[slot as usize];
        r.expires_at = expires_at;
        r.flags = kind.bits();
        r.id = [0; ID];
        if client_id.len() <= ID {
            r.id[..client_id.len()].copy_from_slice(client_id);
            r.id_len = client_id.len() as u8;
        } else {
            r.id_len = IN_EXTRA;
            extra.client_id = Some(client_id.into());
        }
        if client_id.len() <= ID && client_id.len() > 1 && client_id[1..] == *chaddr {
            r.flags |= CHADDR_IS_ID_TAIL;
        } else {
            extra.chaddr = chaddr.into();
        }
        extra.hostname = hostname.map(Box::from);
        if extra.client_id.is_some() || !extra.chaddr.is_empty() || extra.hostname.is_some() {
            r.flags |= HAS_EXTRA;
            self.extra.insert(slot, extra);
        } else {
            self.extra.remove(&slot);
        }
    }

    /// Gives `addr`'s slot back. The slot must not be in `by_client`.
    fn remove_slot(&mut self, addr: Ipv4Addr) {
        let hash = self.hasher.hash_one(addr);
        let recs = &self.recs;
        if let Ok(e) = self
            .by_addr
            .find_entry(hash, |&s| recs[s as usize].addr == addr)
        {
            let (slot, _) = e.remove();
            self.recs[slot as usize].flags = Kind::Free.bits();
            self.extra.remove(&slot);
            self.free.push(slot);
        }
    }

    fn hash_id(hasher: &RandomState, id: &[u8]) -> u64 {
        hasher.hash_one(id)
    }

    /// The slot `by_client` names for `client_id`.
    fn client_slot(&self, client_id: &[u8]) -> Option<u32> {
        let hash = Self::hash_id(&self.hasher, client_id);
        self.by_client
            .find(hash, |&s| self.client_id_of(s) == client_id)
            .copied()
    }

    /// Makes `slot` its client's most recent one.
    fn index_client(&mut self, slot: u32) {
        let LeaseTable {
            recs,
            by_client,
            hasher,
            extra,
            ..
        } = self;
        let id_of = |s: u32| client_id_in(recs, extra, s);
        let id = id_of(slot);
        let hash = Self::hash_id(hasher, id);
        match by_client.entry(
            hash,
            |&s| id_of(s) == id,
            |&s| Self::hash_id(hasher, id_of(s)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(slot);
            }
        }
    }

    /// Drops `client_id`'s entry in `by_client` if it names `slot`.
    fn unindex_client(&mut self, client_id: &[u8], slot: u32) {
        let hash = Self::hash_id(&self.hasher, client_id);
        let LeaseTable {
            recs,
            by_client,
            extra,
            ..
        } = self;
        let id_of = |s: u32| client_id_in(recs, extra, s);
        if let Ok(e) = by_client.find_entry(hash, |&s| s == slot && id_of(s) == client_id) {
            e.remove();
        }
    }

    /// The client's most recent address, if the table still ties it to the client.
    pub fn address_of(&self, client_id: &[u8]) -> Option<Ipv4Addr> {
        let slot = self.client_slot(client_id)?;
        match self.kind(slot) {
            Kind::Offered | Kind::Lease(LeaseState::Bound | LeaseState::Released) => {
                Some(self.rec(slot).addr)
            }
            _ => None,
        }
    }

    /// The persisted record for `addr`, if any.
    pub fn lease(&self, addr: Ipv4Addr) -> Option<Lease> {
        self.lease_of(self.slot_of(addr)?)
    }

    /// All persisted records (for inspection and tests).
    pub fn leases(&self) -> impl Iterator<Item = Lease> + '_ {
        self.by_addr.iter().filter_map(|&slot| self.lease_of(slot))
    }

    /// The client currently holding `addr` at `now`, if anyone does.
    pub fn holder(&self, addr: Ipv4Addr, now: u64) -> Option<&[u8]> {
        let slot = self.slot_of(addr)?;
        let live = self.rec(slot).expires_at > now;
        match self.kind(slot) {
            Kind::Offered | Kind::Lease(LeaseState::Bound) if live => Some(self.client_id_of(slot)),
            _ => None,
        }
    }

    /// True when `addr` is quarantined by a DECLINE at `now`.
    pub fn is_declined(&self, addr: Ipv4Addr, now: u64) -> bool {
        self.slot_of(addr).is_some_and(|slot| {
            self.kind(slot) == Kind::Lease(LeaseState::Declined) && self.rec(slot).expires_at > now
        })
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

    /// Drops `by_client`'s entry for the owner of `slot` if it names `slot`.
    fn forget_owner_of_slot(&mut self, slot: u32) {
        if self.kind(slot) == Kind::Free {
            return;
        }
        let owner: Box<[u8]> = self.client_id_of(slot).into();
        self.unindex_client(&owner, slot);
    }

    fn forget_owner_of(&mut self, addr: Ipv4Addr) {
        if let Some(slot) = self.slot_of(addr) {
            self.forget_owner_of_slot(slot);
        }
    }

    /// Holds `addr` for `client_id` until `until` (not persisted). A client's own lease
    /// record on `addr` is kept as it is.
    pub fn offer(&mut self, addr: Ipv4Addr, client_id: &[u8], until: u64) {
        if let Some(slot) = self.slot_of(addr)
            && self.kind(slot) == Kind::Lease(LeaseState::Bound)
            && self.client_id_of(slot) == client_id
            && self.rec(slot).expires_at >= until
        {
            self.index_client(slot);
            return;
        }
        let slot = self.slot_for(addr);
        self.forget_owner_of_slot(slot);
        self.fill(slot, Kind::Offered, client_id, &[], until, None);
        self.index_client(slot);
    }

    /// Drops an offer made to `client_id` (it chose another server).
    pub fn withdraw_offer(&mut self, client_id: &[u8]) -> Option<Ipv4Addr> {
        let slot = self.client_slot(client_id)?;
        if self.kind(slot) != Kind::Offered {
            return None;
        }
        let addr = self.rec(slot).addr;
        self.unindex_client(client_id, slot);
        self.remove_slot(addr);
        Some(addr)
    }

    /// Binds `lease` (state bound). Returns the changes to persist: the new record, and the
    /// removal of another record the same client held.
    pub fn bind(&mut self, lease: Lease) -> Vec<LeaseChange> {
        let mut changes = Vec::with_capacity(2);
        if let Some(old) = self.client_slot(&lease.client_id)
            && self.rec(old).addr != lease.addr
        {
            let old_addr = self.rec(old).addr;
            match self.kind(old) {
                Kind::Lease(_) => {
                    self.unindex_client(&lease.client_id, old);
                    self.remove_slot(old_addr);
                    changes.push(LeaseChange::Remove(old_addr));
                }
                Kind::Offered => {
                    self.unindex_client(&lease.client_id, old);
                    self.remove_slot(old_addr);
                }
                Kind::Free => {}
            }
        }
        let slot = self.slot_for(lease.addr);
        self.forget_owner_of_slot(slot);
        // The client's entry may still name another slot (a declined one keeps no entry,
        // but one of the client's records may): this slot becomes its most recent.
        self.fill(
            slot,
            Kind::Lease(LeaseState::Bound),
            &lease.client_id,
            &lease.chaddr,
            lease.expires_at,
            lease.hostname.as_deref(),
        );
        self.index_client(slot);
        changes.push(LeaseChange::Put(lease));
        changes
    }

    /// Marks `addr` released by its client; returns the record to persist.
    pub fn release(&mut self, addr: Ipv4Addr, client_id: &[u8]) -> Option<Lease> {
        let slot = self.slot_of(addr)?;
        if self.kind(slot) != Kind::Lease(LeaseState::Bound) || self.client_id_of(slot) != client_id
        {
            return None;
        }
        let r = &mut self.recs[slot as usize];
        r.flags = (r.flags & !KIND_MASK) | Kind::Lease(LeaseState::Released).bits();
        self.lease_of(slot)
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
        let lease = Lease {
            addr,
            state: LeaseState::Declined,
            client_id: client_id.to_vec(),
            chaddr: chaddr.to_vec(),
            expires_at: until,
            hostname: None,
        };
        let slot = self.slot_for(addr);
        self.fill(
            slot,
            Kind::Lease(LeaseState::Declined),
            client_id,
            chaddr,
            until,
            None,
        );
        lease
    }
}

/// The client identifier `slot` holds: in place, or in the side map when it is longer (the
/// one reader, for methods and for closures that borrow the table's fields apart).
fn client_id_in<'a>(recs: &'a [Rec], extra: &'a HashMap<u32, Extra>, slot: u32) -> &'a [u8] {
    let r = &recs[slot as usize];
    if r.id_len == IN_EXTRA {
        extra
            .get(&slot)
            .and_then(|e| e.client_id.as_deref())
            .unwrap_or_default()
    } else {
        &r.id[..usize::from(r.id_len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(addr: [u8; 4], client_id: &[u8], chaddr: &[u8], hostname: Option<&str>) -> Lease {
        Lease {
            addr: Ipv4Addr::from(addr),
            state: LeaseState::Bound,
            client_id: client_id.to_vec(),
            chaddr: chaddr.to_vec(),
            expires_at: 5_000,
            hostname: hostname.map(str::to_string),
        }
    }

    /// Every form a record can take comes back as it went in: the usual one held in place
    /// (identifier = hardware type + chaddr), and the ones that need the record's extra
    /// part (a long identifier, a chaddr of its own, a hostname, no chaddr).
    #[test]
    fn every_record_form_reads_back_as_it_was_stored() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let long_id: Vec<u8> = (0u8..40).collect();
        let stored = vec![
            lease([10, 0, 0, 1], &[1, 0x52, 0x54, 0, 1, 2, 3], &mac, None),
            lease([10, 0, 0, 2], &long_id, &mac, None),
            lease([10, 0, 0, 3], b"\x00uuid-ish", &[0xaa; 6], None),
            lease(
                [10, 0, 0, 4],
                &[1, 9, 9, 9, 9, 9, 9],
                &[9; 6],
                Some("node-4"),
            ),
            lease([10, 0, 0, 5], &[7], &[], None),
            lease(
                [10, 0, 0, 6],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                &[2, 3, 4, 5, 6, 7, 8, 9, 10],
                None,
            ),
            lease(
                [10, 0, 0, 7],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                &[2, 3],
                None,
            ),
        ];
        let t = LeaseTable::from_leases(stored.clone());
        assert_eq!(t.len(), stored.len());
        for l in &stored {
            assert_eq!(t.lease(l.addr).as_ref(), Some(l));
            assert_eq!(t.address_of(&l.client_id), Some(l.addr));
            assert_eq!(t.holder(l.addr, 4_999), Some(&l.client_id[..]));
        }
        let mut all: Vec<Lease> = t.leases().collect();
        all.sort_by_key(|l| l.addr);
        assert_eq!(all, stored);
    }

    /// Slots given back are reused, and an identifier's index entry follows its client
    /// from offer to binding to a move elsewhere; a withdrawn offer leaves no trace.
    #[test]
    fn slots_are_reused_and_the_client_index_follows_the_client() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let id: &[u8] = &[1, 0x52, 0x54, 0, 0, 0, 1];
        let mut t = LeaseTable::default();
        t.offer(a, id, 100);
        assert_eq!(t.address_of(id), Some(a));
        assert_eq!(t.withdraw_offer(id), Some(a));
        assert!(t.is_fresh(a) && t.is_empty());
        assert_eq!(t.address_of(id), None);

        t.offer(b, id, 100);
        assert_eq!(t.recs.len(), 1, "the withdrawn offer's slot is reused");
        let changes = t.bind(lease([10, 0, 0, 2], id, &id[1..], None));
        assert_eq!(changes.len(), 1);
        // The client moves to `a`: its record on `b` is removed, and `b`'s slot serves `a`.
        let changes = t.bind(lease([10, 0, 0, 1], id, &id[1..], Some("n1")));
        assert_eq!(changes[0], LeaseChange::Remove(b));
        assert!(t.is_fresh(b));
        assert_eq!(t.recs.len(), 1);
        assert_eq!(t.address_of(id), Some(a));
        assert_eq!(t.lease(a).unwrap().hostname.as_deref(), Some("n1"));

        // Another client takes the address over after a DECLINE: the first client's index
        // entry goes, the hostname with it.
        let other: &[u8] = &[1, 0x52, 0x54, 0, 0, 0, 2];
        let d = t.decline(a, other, &other[1..], 700);
        assert_eq!(t.lease(a), Some(d));
        assert_eq!(t.address_of(id), None);
        assert_eq!(
            t.address_of(other),
            None,
            "a declined record is nobody's address"
        );
        assert!(t.is_declined(a, 699) && !t.is_declined(a, 700));
        assert!(t.extra.is_empty(), "no extra part left behind");
    }
}
