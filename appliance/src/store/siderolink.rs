//! The SideroLink identity in redb (`siderolink` table): the installation id (plain text; the
//! overlay prefix is derived from it and is no secret) and the WireGuard private key, sealed
//! with the box's secrets key (`crate::secrets`, context `siderolink/private-key`). Written
//! once, on first start, in one transaction; read on every start. And the ids of the Talos
//! events applied per server (`siderolink_event_ids`, written by `Txn::remember_talos_event`
//! with the event's effect), so a backlog Talos resends after the box restarted is not
//! applied twice.
//!
//! Also in the `siderolink` table: the talosconfigs an operator gave the box, one per
//! cluster name (sealed, context `siderolink/talosconfig/<cluster>`; never returned by any
//! API, only opened by the reset), and each node's last SideroLink session (`NodeRecord`:
//! overlay address, WireGuard key, cluster), written in the Provision transaction and kept
//! after the ServerBinding goes, so a released node stays reachable for its reset.

use redb::{ReadableTable, TableError};

use super::tables::{
    SIDEROLINK, SIDEROLINK_EVENT_IDS, SIDEROLINK_INSTALLATION_ID, SIDEROLINK_NODE_PREFIX,
    SIDEROLINK_PRIVATE_KEY, SIDEROLINK_TALOSCONFIG_PREFIX,
};
use super::txn::Txn;
use super::{Store, StoreError};

/// A node's last SideroLink session, as Provision bound it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// `"<addr>/64"`, as in `spec.siderolink.address`.
    pub address: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    /// The binding's `cluster.x-k8s.io/cluster-name` label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

fn talosconfig_context(cluster: &str) -> String {
    format!("siderolink/{SIDEROLINK_TALOSCONFIG_PREFIX}{cluster}")
}

impl Txn<'_> {
    /// Records `server`'s SideroLink session (replacing an earlier one).
    pub fn put_siderolink_node(
        &mut self,
        server: &str,
        record: &NodeRecord,
    ) -> Result<(), StoreError> {
        let key = format!("{SIDEROLINK_NODE_PREFIX}{server}");
        let value = serde_json::to_vec(record).expect("node record encodes");
        self.siderolink_table()?
            .insert(key.as_str(), value.as_slice())?;
        self.mark_dirty();
        Ok(())
    }
}

/// Seal context of the WireGuard private key.
const KEY_CONTEXT: &str = "siderolink/private-key";

impl Store {
    /// The stored installation id and private key; if none are stored yet, stores
    /// `fresh` (id, key) first. Returns what is stored after the call.
    pub fn siderolink_identity_or_insert(
        &self,
        fresh: (&str, &[u8]),
    ) -> Result<(String, Vec<u8>), StoreError> {
        let txn = self.inner.db.write()?;
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
                self.inner.db.commit(txn)?;
                Ok((fresh.0.to_string(), fresh.1.to_vec()))
            }
        }
    }

    /// Every node's last SideroLink session, by server name.
    pub fn siderolink_nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(SIDEROLINK) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        let end = format!("{}\u{10FFFF}", SIDEROLINK_NODE_PREFIX);
        for entry in table.range(SIDEROLINK_NODE_PREFIX..end.as_str())? {
            let (k, v) = entry?;
            let Some(name) = k.value().strip_prefix(SIDEROLINK_NODE_PREFIX) else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<NodeRecord>(v.value()) {
                out.push((name.to_string(), r));
            }
        }
        Ok(out)
    }

    /// `server`'s last SideroLink session.
    pub fn siderolink_node(&self, server: &str) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(SIDEROLINK) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let key = format!("{SIDEROLINK_NODE_PREFIX}{server}");
        Ok(table
            .get(key.as_str())?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Stores the talosconfig of `cluster` sealed with the secrets key (replacing one).
    pub fn set_talosconfig(&self, cluster: &str, talosconfig: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal_secret(&talosconfig_context(cluster), talosconfig)?;
        let txn = self.inner.db.write()?;
        {
            let mut table = txn.open_table(SIDEROLINK)?;
            let key = format!("{SIDEROLINK_TALOSCONFIG_PREFIX}{cluster}");
            table.insert(key.as_str(), sealed.as_slice())?;
        }
        self.inner.db.commit(txn)?;
        Ok(())
    }

    /// Removes the talosconfig of `cluster`; false if there was none.
    pub fn delete_talosconfig(&self, cluster: &str) -> Result<bool, StoreError> {
        let txn = self.inner.db.write()?;
        let removed = {
            let mut table = txn.open_table(SIDEROLINK)?;
            let key = format!("{SIDEROLINK_TALOSCONFIG_PREFIX}{cluster}");
            table.remove(key.as_str())?.is_some()
        };
        self.inner.db.commit(txn)?;
        Ok(removed)
    }

    /// The talosconfig of `cluster`, opened.
    pub fn talosconfig(&self, cluster: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sealed = {
            let txn = self.inner.db.read()?;
            let table = match txn.open_table(SIDEROLINK) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let key = format!("{SIDEROLINK_TALOSCONFIG_PREFIX}{cluster}");
            table.get(key.as_str())?.map(|v| v.value().to_vec())
        };
        sealed
            .map(|s| self.open_secret(&talosconfig_context(cluster), &s))
            .transpose()
    }

    /// The cluster names that have a talosconfig.
    pub fn talosconfig_clusters(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(SIDEROLINK) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let end = format!("{}\u{10FFFF}", SIDEROLINK_TALOSCONFIG_PREFIX);
        let mut out = Vec::new();
        for entry in table.range(SIDEROLINK_TALOSCONFIG_PREFIX..end.as_str())? {
            let (k, _) = entry?;
            if let Some(c) = k.value().strip_prefix(SIDEROLINK_TALOSCONFIG_PREFIX) {
                out.push(c.to_string());
            }
        }
        Ok(out)
    }

    /// The remembered Talos event ids of `server`, oldest first.
    pub fn talos_event_ids(&self, server: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.read()?;
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

    #[test]
    fn talosconfig_is_sealed_and_nodes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let secret = b"context: c\nkey: TALOS-SECRET-KEY-MATERIAL\n";
        store.set_talosconfig("prod", secret).unwrap();
        store.set_talosconfig("default", b"other").unwrap();
        assert_eq!(store.talosconfig("prod").unwrap().unwrap(), secret);
        assert_eq!(store.talosconfig("none").unwrap(), None);
        assert_eq!(store.talosconfig_clusters().unwrap(), ["default", "prod"]);
        let record = NodeRecord {
            address: "fd00::5/64".into(),
            public_key: "k".into(),
            cluster: Some("prod".into()),
        };
        store
            .transact(|t| t.put_siderolink_node("srv", &record))
            .unwrap();
        assert_eq!(store.siderolink_node("srv").unwrap(), Some(record.clone()));
        assert_eq!(
            store.siderolink_nodes().unwrap(),
            [("srv".to_string(), record)]
        );
        assert!(store.delete_talosconfig("default").unwrap());
        assert!(!store.delete_talosconfig("default").unwrap());
        drop(store);
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !raw.windows(24)
                .any(|w| w == &b"TALOS-SECRET-KEY-MATERIAL"[..24]),
            "the talosconfig is stored sealed"
        );
    }
}
