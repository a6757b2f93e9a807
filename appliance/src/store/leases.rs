//! DHCP lease persistence: load every lease record at start, commit a batch of lease changes
//! in one write transaction (group commit from `net/dhcp.rs`); read one address's record
//! (the agent API's lease check in server mode).
//!
//! Record encoding (value of `tables::LEASES`, key = address as u32), version 1:
//! `[1][state u8][expires_at u64 BE][chaddr_len u8][chaddr][client_id_len u16 BE][client_id]
//! [hostname_len u8][hostname utf-8]`. Leases are not objects of the model and do not go
//! out on the change feed.

use std::net::Ipv4Addr;

use redb::{ReadableTable, TableError};

use super::tables::LEASES;
use super::{Store, StoreError};
use crate::protocol::dhcp::{Lease, LeaseChange, LeaseState};

const RECORD_VERSION: u8 = 1;

fn encode(lease: &Lease) -> Vec<u8> {
    let chaddr = &lease.chaddr[..lease.chaddr.len().min(255)];
    let cid = &lease.client_id[..lease.client_id.len().min(u16::MAX as usize)];
    let host = lease.hostname.as_deref().unwrap_or("");
    let host = &host.as_bytes()[..floor_char_boundary(host, 255)];
    let mut out = Vec::with_capacity(16 + chaddr.len() + cid.len() + host.len());
    out.push(RECORD_VERSION);
    out.push(match lease.state {
        LeaseState::Bound => 0,
        LeaseState::Released => 1,
        LeaseState::Declined => 2,
    });
    out.extend_from_slice(&lease.expires_at.to_be_bytes());
    out.push(chaddr.len() as u8);
    out.extend_from_slice(chaddr);
    out.extend_from_slice(&(cid.len() as u16).to_be_bytes());
    out.extend_from_slice(cid);
    out.push(host.len() as u8);
    out.extend_from_slice(host);
    out
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

fn decode(addr: Ipv4Addr, bytes: &[u8]) -> Result<Lease, StoreError> {
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
    let state = match take(1)?[0] {
        0 => LeaseState::Bound,
        1 => LeaseState::Released,
        2 => LeaseState::Declined,
        _ => return Err(corrupt("unknown lease state")),
    };
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

impl Store {
    /// Every stored DHCP lease record, ordered by address.
    pub fn dhcp_leases(&self) -> Result<Vec<Lease>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(LEASES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(decode(Ipv4Addr::from(k.value()), v.value())?);
        }
        Ok(out)
    }

    /// The lease record of one address, if any (the agent API checks who holds an address).
    pub fn dhcp_lease(&self, addr: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(LEASES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        table
            .get(u32::from(addr))?
            .map(|v| decode(addr, v.value()))
            .transpose()
    }

    /// Applies lease changes (possibly from many requests) in one durable transaction.
    pub fn commit_lease_changes(&self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.inner.db.write()?;
        {
            let mut table = txn.open_table(LEASES)?;
            for change in changes {
                match change {
                    LeaseChange::Put(lease) => {
                        table.insert(u32::from(lease.addr), encode(lease).as_slice())?;
                    }
                    LeaseChange::Remove(addr) => {
                        table.remove(u32::from(*addr))?;
                    }
                }
            }
        }
        self.inner.db.commit(txn)?;
        Ok(())
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
            assert_eq!(decode(l.addr, &encode(&l)).unwrap(), l);
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let good = encode(&lease([10, 0, 0, 5], 1, LeaseState::Bound, Some("h")));
        for cut in 0..good.len() {
            assert!(
                decode(Ipv4Addr::LOCALHOST, &good[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = good.clone();
        bad[1] = 9;
        let err = decode(Ipv4Addr::new(10, 0, 0, 5), &bad)
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
