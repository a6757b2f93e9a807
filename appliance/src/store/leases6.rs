//! DHCPv6 lease persistence, as `store/leases.rs` does for v4 and through the same
//! [`LeaseRecord`] path: every record loaded at start, a batch of changes committed in one
//! durable write transaction before the reply that depends on it is sent. This file holds
//! the v6 record encoding.
//!
//! Record encoding (value of `tables::LEASES6`, key = address as u128), version 1:
//! `[1][state u8][expires_at u64 BE][iaid u32 BE][duid_len u8][duid]`.

use std::net::Ipv6Addr;

use redb::TableDefinition;

use super::leases::{LeaseRecord, state_byte, state_from_byte};
use super::tables::LEASES6;
use super::{Store, StoreError};
use crate::protocol::dhcpv6::Lease6;

const RECORD_VERSION: u8 = 1;

impl LeaseRecord for Lease6 {
    type Addr = Ipv6Addr;
    type Key = u128;
    const TABLE: TableDefinition<'static, u128, &'static [u8]> = LEASES6;
    fn key(addr: Ipv6Addr) -> u128 {
        u128::from(addr)
    }
    fn addr(key: u128) -> Ipv6Addr {
        Ipv6Addr::from(key)
    }
    fn encode(&self) -> Vec<u8> {
        let duid = &self.duid[..self.duid.len().min(255)];
        let mut out = Vec::with_capacity(15 + duid.len());
        out.push(RECORD_VERSION);
        out.push(state_byte(self.state));
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.iaid.to_be_bytes());
        out.push(duid.len() as u8);
        out.extend_from_slice(duid);
        out
    }
    fn decode(addr: Ipv6Addr, b: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |message: &str| StoreError::CorruptLease6 {
            addr,
            message: message.to_string(),
        };
        if b.len() < 15 {
            return Err(corrupt("record truncated"));
        }
        if b[0] != RECORD_VERSION {
            return Err(corrupt("unknown record version"));
        }
        let state = state_from_byte(b[1]).ok_or_else(|| corrupt("unknown lease state"))?;
        let expires_at = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
        let iaid = u32::from_be_bytes(b[10..14].try_into().expect("4 bytes"));
        let n = usize::from(b[14]);
        let duid = b
            .get(15..15 + n)
            .ok_or_else(|| corrupt("record truncated"))?;
        Ok(Lease6 {
            addr,
            state,
            duid: duid.to_vec(),
            iaid,
            expires_at,
        })
    }
}

impl Store {
    /// Every stored DHCPv6 lease record, ordered by address.
    pub fn dhcpv6_leases(&self) -> Result<Vec<Lease6>, StoreError> {
        self.lease_records()
    }

    /// The DHCPv6 lease record of one address, if any (the agent API checks who holds an
    /// IPv6 caller's address).
    pub fn dhcpv6_lease(&self, addr: Ipv6Addr) -> Result<Option<Lease6>, StoreError> {
        self.lease_record(addr)
    }

    /// Writes DHCPv6 lease records in one durable transaction.
    pub fn commit_lease6_changes(&self, changes: &[Lease6]) -> Result<(), StoreError> {
        self.commit_lease_records(changes.iter().map(|l| (l.addr, Some(l))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::dhcp::LeaseState;

    #[test]
    fn records_round_trip_and_corruption_is_an_error() {
        let l = Lease6 {
            addr: "fd00::100".parse().unwrap(),
            state: LeaseState::Declined,
            duid: vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6],
            iaid: 7,
            expires_at: 1_800_000_000,
        };
        assert_eq!(Lease6::decode(l.addr, &l.encode()).unwrap(), l);
        let mut bad = l.encode();
        bad.truncate(bad.len() - 1);
        assert!(Lease6::decode(l.addr, &bad).is_err());
        assert!(Lease6::decode(l.addr, &[2; 20]).is_err());
    }

    #[test]
    fn leases_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let l = Lease6 {
            addr: "fd00::101".parse().unwrap(),
            state: LeaseState::Bound,
            duid: vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6],
            iaid: 1,
            expires_at: 1_800_000_000,
        };
        {
            let s = Store::open(&dir.path().join("state.redb")).unwrap();
            assert!(s.dhcpv6_leases().unwrap().is_empty());
            assert_eq!(s.dhcpv6_lease(l.addr).unwrap(), None);
            s.commit_lease6_changes(std::slice::from_ref(&l)).unwrap();
        }
        let s = Store::open(&dir.path().join("state.redb")).unwrap();
        assert_eq!(s.dhcpv6_leases().unwrap(), std::slice::from_ref(&l));
        assert_eq!(s.dhcpv6_lease(l.addr).unwrap(), Some(l));
        assert_eq!(s.dhcpv6_lease("fd00::102".parse().unwrap()).unwrap(), None);
    }
}
