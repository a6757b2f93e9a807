//! DHCPv6 lease persistence, as `store/leases.rs` does for v4: every record loaded at
//! start, a batch of changes committed in one durable write transaction before the reply
//! that depends on it is sent.
//!
//! Record encoding (value of `tables::LEASES6`, key = address as u128), version 1:
//! `[1][state u8][expires_at u64 BE][iaid u32 BE][duid_len u8][duid]`.

use std::net::Ipv6Addr;

use redb::{ReadableTable, TableError};

use super::tables::LEASES6;
use super::{Store, StoreError};
use crate::protocol::dhcp::LeaseState;
use crate::protocol::dhcpv6::Lease6;

const RECORD_VERSION: u8 = 1;

fn encode(l: &Lease6) -> Vec<u8> {
    let duid = &l.duid[..l.duid.len().min(255)];
    let mut out = Vec::with_capacity(15 + duid.len());
    out.push(RECORD_VERSION);
    out.push(match l.state {
        LeaseState::Bound => 0,
        LeaseState::Released => 1,
        LeaseState::Declined => 2,
    });
    out.extend_from_slice(&l.expires_at.to_be_bytes());
    out.extend_from_slice(&l.iaid.to_be_bytes());
    out.push(duid.len() as u8);
    out.extend_from_slice(duid);
    out
}

fn decode(addr: Ipv6Addr, b: &[u8]) -> Result<Lease6, StoreError> {
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
    let state = match b[1] {
        0 => LeaseState::Bound,
        1 => LeaseState::Released,
        2 => LeaseState::Declined,
        _ => return Err(corrupt("unknown lease state")),
    };
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

impl Store {
    /// Every stored DHCPv6 lease record, ordered by address.
    pub fn dhcpv6_leases(&self) -> Result<Vec<Lease6>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(LEASES6) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(decode(Ipv6Addr::from(k.value()), v.value())?);
        }
        Ok(out)
    }

    /// The DHCPv6 lease record of one address, if any (the agent API checks who holds an
    /// IPv6 caller's address).
    pub fn dhcpv6_lease(&self, addr: Ipv6Addr) -> Result<Option<Lease6>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(LEASES6) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        table
            .get(u128::from(addr))?
            .map(|v| decode(addr, v.value()))
            .transpose()
    }

    /// Writes DHCPv6 lease records in one durable transaction.
    pub fn commit_lease6_changes(&self, changes: &[Lease6]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.inner.db.write()?;
        {
            let mut table = txn.open_table(LEASES6)?;
            for l in changes {
                table.insert(u128::from(l.addr), encode(l).as_slice())?;
            }
        }
        self.inner.db.commit(txn)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_an_error() {
        let l = Lease6 {
            addr: "fd00::100".parse().unwrap(),
            state: LeaseState::Declined,
            duid: vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6],
            iaid: 7,
            expires_at: 1_800_000_000,
        };
        assert_eq!(decode(l.addr, &encode(&l)).unwrap(), l);
        let mut bad = encode(&l);
        bad.truncate(bad.len() - 1);
        assert!(decode(l.addr, &bad).is_err());
        assert!(decode(l.addr, &[2; 20]).is_err());
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
