//! The SideroLink identity in redb (`siderolink` table): the installation id (plain text; the
//! overlay prefix is derived from it and is no secret) and the WireGuard private key, sealed
//! with the box's secrets key (`crate::secrets`, context `siderolink/private-key`). Written
//! once, on first start, in one transaction; read on every start. And the ids of the Talos
//! events applied per server (`siderolink_event_ids`, written by `Txn::remember_talos_event`
//! with the event's effect), so a backlog Talos resends after the box restarted is not
//! applied twice.

use redb::{ReadableDatabase, ReadableTable, TableError};

use super::tables::{
    SIDEROLINK, SIDEROLINK_EVENT_IDS, SIDEROLINK_INSTALLATION_ID, SIDEROLINK_PRIVATE_KEY,
};
use super::{Store, StoreError};

/// Seal context of the WireGuard private key.
const KEY_CONTEXT: &str = "siderolink/private-key";

impl Store {
    /// The stored installation id and private key; if none are stored yet, stores
    /// `fresh` (id, key) first. Returns what is stored after the call.
    pub fn siderolink_identity_or_insert(
        &self,
        fresh: (&str, &[u8]),
    ) -> Result<(String, Vec<u8>), StoreError> {
        let txn = self.inner.db.begin_write()?;
        let stored = {
            let mut table = txn.open_table(SIDEROLINK)?;
            let id = table
                .get(SIDEROLINK_INSTALLATION_ID)?
                .map(|v| v.value().to_vec());
            let key = table
                .get(SIDEROLINK_PRIVATE_KEY)?
                .map(|v| v.value().to_vec());
            match (id, key) {
                (Some(id), Some(key)) => Some((id, key)),
                _ => {
                    let sealed = self.seal_secret(KEY_CONTEXT, fresh.1)?;
                    table.insert(SIDEROLINK_INSTALLATION_ID, fresh.0.as_bytes())?;
                    table.insert(SIDEROLINK_PRIVATE_KEY, sealed.as_slice())?;
                    None
                }
            }
        };
        match stored {
            Some((id, sealed)) => {
                drop(txn);
                let key = self.open_secret(KEY_CONTEXT, &sealed)?;
                Ok((String::from_utf8_lossy(&id).into_owned(), key))
            }
            None => {
                txn.commit()?;
                Ok((fresh.0.to_string(), fresh.1.to_vec()))
            }
        }
    }

    /// The remembered Talos event ids of `server`, oldest first.
    pub fn talos_event_ids(&self, server: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = match txn.open_table(SIDEROLINK_EVENT_IDS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range((server, 0)..=(server, u64::MAX))? {
            out.push(entry?.1.value().to_string());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talos_event_ids_are_kept_bounded_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        for (server, id) in [("a", "1"), ("b", "x"), ("a", "2"), ("a", "3"), ("a", "4")] {
            store
                .transact(|t| t.remember_talos_event(server, id, 2))
                .unwrap();
        }
        assert_eq!(store.talos_event_ids("a").unwrap(), ["3", "4"]);
        assert_eq!(store.talos_event_ids("b").unwrap(), ["x"]);
        assert!(store.talos_event_ids("c").unwrap().is_empty());
    }
}
