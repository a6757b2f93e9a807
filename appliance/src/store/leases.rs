//! DHCP lease persistence: load every lease record at start, commit a batch of lease changes
//! in one write transaction (group commit from `net/dhcp.rs`); read one address's record
//! (the agent API's lease check in server mode).
//!
//! Record encoding (value of `tables::LEASES`, key = address as u32), version 1:
//! `[1][state u8][expires_at u64 BE][chaddr_len u8][chaddr][client_id_len u16 BE][client_id]
//! [hostname_len u8][hostname utf-8]`. Leases are not objects of the model and do not go
//! out on the change feed.
//!
//! Also the path the v4 and v6 lease tables share ([`LeaseRecord`]): one redb table a family,
//! keyed by the address, read whole at start, read by one address, written in batches. Only
//! the record encodings differ (this file's and `store/leases6.rs`'s).

use std::net::Ipv4Addr;

use redb::{ReadableTable, TableDefinition, TableError, Value};

use super::tables::LEASES;
use super::{Store, StoreError};
use crate::protocol::dhcp::{Lease, LeaseChange, LeaseState};

const RECORD_VERSION: u8 = 1;

/// A lease record of one address family, as the store keeps it: its table, its key and its
/// encoding. The store's reading and writing of lease tables is written once, over this.
pub(super) trait LeaseRecord: Sized {
    type Addr: Copy;
    type Key: redb::Key + 'static;
    const TABLE: TableDefinition<'static, Self::Key, &'static [u8]>;
    fn key(addr: Self::Addr) -> <Self::Key as Value>::SelfType<'static>;
    fn addr(key: <Self::Key as Value>::SelfType<'_>) -> Self::Addr;
    fn encode(&self) -> Vec<u8>;
    fn decode(addr: Self::Addr, bytes: &[u8]) -> Result<Self, StoreError>;
}

/// The stored byte of a lease's state (both families' records).
pub(super) fn state_byte(state: LeaseState) -> u8 {
    match state {
        LeaseState::Bound => 0,
        LeaseState::Released => 1,
        LeaseState::Declined => 2,
    }
}

/// The state a stored byte names, `None` for an unknown byte.
pub(super) fn state_from_byte(b: u8) -> Option<LeaseState> {
    match b {
        0 => Some(LeaseState::Bound),
        1 => Some(LeaseState::Released),
        2 => Some(LeaseState::Declined),
        _ => None,
    }
}

impl LeaseRecord for Lease {
    type Addr = Ipv4Addr;
    type Key = u32;
    const TABLE: TableDefinition<'static, u32, &'static [u8]> = LEASES;
    fn key(addr: Ipv4Addr) -> u32 {
        u32::from(addr)
    }
    fn addr(key: u32) -> Ipv4Addr {
        Ipv4Addr::from(key)
    }
    fn encode(&self) -> Vec<u8> {
        let chaddr = &self.chaddr[..self.chaddr.len().min(255)];
        let cid = &self.client_id[..self.client_id.len().min(u16::MAX as usize)];
        let host = self.hostname.as_deref().unwrap_or("");
        let host = &host.as_bytes()[..floor_char_boundary(host, 255)];
        let mut out = Vec::with_capacity(16 + chaddr.len() + cid.len() + host.len());
        out.push(RECORD_VERSION);
        out.push(state_byte(self.state));
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.push(chaddr.len() as u8);
        out.extend_from_slice(chaddr);
        out.extend_from_slice(&(cid.len() as u16).to_be_bytes());
        out.extend_from_slice(cid);
        out.push(host.len() as u8);
        out.extend_from_slice(host);
        out
    }
    fn decode(addr: Ipv4Addr, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |message: &str| StoreError::CorruptLease {
            addr,
            message: message.to_string(),
        };
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], StoreError> {
            if r.len() < n {
                return Err(corrupt("record truncated"));
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        if take(1)?[0] != RECORD_VERSION {
            return Err(corrupt("unknown record version"));
        }
        let state = state_from_byte(take(1)?[0]).ok_or_else(|| corrupt("unknown lease state"))?;
        let expires_at = u64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
        let n = take(1)?[0] as usize;
        let chaddr = take(n)?.to_vec();
        let n = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let client_id = take(n)?.to_vec();
        let n = take(1)?[0] as usize;
        let host = std::str::from_utf8(take(n)?).map_err(|_| corrupt("hostname is not UTF-8"))?;
        Ok(Lease {
            addr,
            state,
            client_id,
            chaddr,
            expires_at,
            hostname: (!host.is_empty()).then(|| host.to_string()),
        })
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

impl Store {
    /// Every stored record of one lease table, ordered by address.
    pub(super) fn lease_records<R: LeaseRecord>(&self) -> Result<Vec<R>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(R::TABLE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(R::decode(R::addr(k.value()), v.value())?);
        }
        Ok(out)
    }

    /// The record of one address in one lease table, if any.
    pub(super) fn lease_record<R: LeaseRecord>(
        &self,
        addr: R::Addr,
    ) -> Result<Option<R>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(R::TABLE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        table
            .get(R::key(addr))?
            .map(|v| R::decode(addr, v.value()))
            .transpose()
    }

    /// Writes (`Some`) or removes (`None`) records of one lease table in one durable
    /// transaction; nothing is written for no changes.
    pub(super) fn commit_lease_records<'a, R: LeaseRecord + 'a>(
        &self,
        changes: impl IntoIterator<Item = (R::Addr, Option<&'a R>)>,
    ) -> Result<(), StoreError> {
        let mut changes = changes.into_iter().peekable();
        if changes.peek().is_none() {
            return Ok(());
        }
        let txn = self.inner.db.write()?;
        {
            let mut table = txn.open_table(R::TABLE)?;
            for (addr, record) in changes {
                match record {
                    Some(r) => {
                        table.insert(R::key(addr), r.encode().as_slice())?;
                    }
                    None => {
                        table.remove(R::key(addr))?;
                    }
                }
            }
        }
        self.inner.db.commit(txn)?;
        Ok(())
    }

    /// Every stored DHCP lease record, ordered by address.
    pub fn dhcp_leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.lease_records()
    }

    /// The lease record of one address, if any (the agent API checks who holds an address).
    pub fn dhcp_lease(&self, addr: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        self.lease_record(addr)
    }

    /// Applies lease changes (possibly from many requests) in one durable transaction.
    pub fn commit_lease_changes(&self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        self.commit_lease_records(changes.iter().map(|change| match change {
            LeaseChange::Put(lease) => (lease.addr, Some(lease)),
            LeaseChange::Remove(addr) => (*addr, None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(addr: [u8; 4], mac: u8, state: LeaseState, host: Option<&str>) -> Lease {
        Lease {
            addr: Ipv4Addr::from(addr),
            state,
            client_id: vec![1, 0x52, 0x54, 0, 0, 0, mac],
            chaddr: vec![0x52, 0x54, 0, 0, 0, mac],
            expires_at: 1_800_000_000 + u64::from(mac),
            hostname: host.map(str::to_string),
        }
    }

    #[test]
    fn record_round_trips() {
        for l in [
            lease([10, 0, 0, 5], 1, LeaseState::Bound, Some("node-1")),
            lease([10, 0, 0, 6], 2, LeaseState::Released, None),
            lease([10, 0, 0, 7], 3, LeaseState::Declined, Some("ünïcode")),
        ] {
            assert_eq!(Lease::decode(l.addr, &l.encode()).unwrap(), l);
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let good = lease([10, 0, 0, 5], 1, LeaseState::Bound, Some("h")).encode();
        for cut in 0..good.len() {
            assert!(
                Lease::decode(Ipv4Addr::LOCALHOST, &good[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = good.clone();
        bad[1] = 9;
        let err = Lease::decode(Ipv4Addr::new(10, 0, 0, 5), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.5") && err.contains("state"), "{err}");
    }

    #[test]
    fn leases_survive_reopen_and_changes_apply_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let a = lease([10, 0, 0, 5], 1, LeaseState::Bound, Some("a"));
        let b = lease([10, 0, 0, 6], 2, LeaseState::Bound, None);
        {
            let store = Store::open(&path).unwrap();
            assert!(store.dhcp_leases().unwrap().is_empty(), "no table yet");
            assert_eq!(store.dhcp_lease(a.addr).unwrap(), None);
            store
                .commit_lease_changes(&[LeaseChange::Put(a.clone()), LeaseChange::Put(b.clone())])
                .unwrap();
            let mut released = b.clone();
            released.state = LeaseState::Released;
            store
                .commit_lease_changes(&[LeaseChange::Remove(a.addr), LeaseChange::Put(released)])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let got = store.dhcp_leases().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(store.dhcp_lease(b.addr).unwrap(), Some(got[0].clone()));
        assert_eq!(store.dhcp_lease(a.addr).unwrap(), None);
        assert_eq!(got[0].addr, b.addr);
        assert_eq!(got[0].state, LeaseState::Released);
    }
}
