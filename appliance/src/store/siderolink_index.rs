//! The SideroLink index (`siderolink_index`, a redb multimap): which ServerBinding holds an
//! overlay address and which holds a WireGuard public key, so that Provision's collision
//! check is two key lookups instead of a read of every binding (that read made provisioning
//! quadratic: 10,000 nodes did not finish in 12 minutes).
//!
//! Keys `"address/<ipv6>"` (the address of `spec.siderolink.address` in canonical form,
//! its `/64` dropped) and `"key/<base64>"` (`spec.siderolink.publicKey`), values the
//! binding names. A multimap, so that two bindings an operator wrote with the same address
//! are both indexed and removing one leaves the other. Every path that writes or deletes a
//! ServerBinding (`Txn::put`/`delete`, `Store::apply`/`update`/`delete`) calls [`follow`]
//! in its own transaction, so the index never disagrees with the committed bindings; a
//! store from before the index (schema 3) gets it built by the 3 → 4 migration
//! ([`rebuild`]).

use std::net::Ipv6Addr;

use redb::{MultimapTable, MultimapTableDefinition, ReadableMultimapTable, WriteTransaction};

use super::StoreError;
use super::tables::{self, OBJECTS};
use crate::model::{Kind, Object};

/// The index table (see the module doc).
pub const SIDEROLINK_INDEX: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("siderolink_index");

/// The open index inside a write transaction.
pub type IndexTable<'t> = MultimapTable<'t, &'static str, &'static str>;

/// The index key of an overlay address.
pub fn address_key(addr: Ipv6Addr) -> String {
    format!("address/{addr}")
}

/// The index key of a WireGuard public key (base64 as stored).
pub fn public_key_key(key: &str) -> String {
    format!("key/{key}")
}

/// The index keys of a binding's `spec.siderolink` (none for any other object).
fn keys_of(object: &Object) -> Vec<String> {
    let Object::ServerBinding(b) = object else {
        return Vec::new();
    };
    let Some(link) = &b.spec.siderolink else {
        return Vec::new();
    };
    let host = link
        .address
        .split_once('/')
        .map_or(link.address.as_str(), |(a, _)| a);
    let address = match host.parse::<Ipv6Addr>() {
        Ok(a) => address_key(a),
        // Not an address (written by hand through apply): indexed as written, so the
        // index still mirrors the binding and its removal finds the entry.
        Err(_) => format!("address/{host}"),
    };
    vec![address, public_key_key(&link.public_key)]
}

/// Makes the index follow one ServerBinding's change from `old` to `new` (`None`: absent).
pub fn follow(
    index: &mut IndexTable<'_>,
    name: &str,
    old: Option<&Object>,
    new: Option<&Object>,
) -> Result<(), StoreError> {
    let before = old.map(keys_of).unwrap_or_default();
    let after = new.map(keys_of).unwrap_or_default();
    for k in before.iter().filter(|k| !after.contains(k)) {
        index.remove(k.as_str(), name)?;
    }
    for k in after.iter().filter(|k| !before.contains(k)) {
        index.insert(k.as_str(), name)?;
    }
    Ok(())
}

/// The binding names filed under `key`.
pub fn holders(
    index: &impl ReadableMultimapTable<&'static str, &'static str>,
    key: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for v in index.get(key)? {
        out.push(v?.value().to_string());
    }
    Ok(out)
}

/// Empties the index and files every stored ServerBinding again (schema 3 → 4, and
/// `Store::rebuild_siderolink_index`); returns how many bindings hold a SideroLink.
pub fn rebuild(txn: &WriteTransaction) -> Result<usize, StoreError> {
    txn.delete_multimap_table(SIDEROLINK_INDEX)?;
    let mut index = txn.open_multimap_table(SIDEROLINK_INDEX)?;
    let objects = txn.open_table(OBJECTS)?;
    let prefix = tables::kind_prefix(Kind::ServerBinding);
    let mut filed = 0;
    for entry in redb::ReadableTable::range(&objects, prefix.as_str()..)? {
        let (k, v) = entry?;
        let Some(name) = k.value().strip_prefix(prefix.as_str()) else {
            break;
        };
        let stored = tables::decode_unsealed(Kind::ServerBinding, name, v.value())?;
        let keys = keys_of(&stored.object);
        filed += usize::from(!keys.is_empty());
        for key in keys {
            index.insert(key.as_str(), name)?;
        }
    }
    Ok(filed)
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableMultimapTable};

    use super::*;
    use crate::store::{SCHEMA_VERSION, Store, migrate};

    fn binding(name: &str, link: Option<(&str, &str)>) -> Object {
        let mut doc = serde_json::json!({
            "apiVersion": Kind::ServerBinding.api_version(),
            "kind": "ServerBinding",
            "metadata": { "name": name },
            "spec": { "metalMachineRef": { "name": "m" } },
        });
        if let Some((address, key)) = link {
            doc["spec"]["siderolink"] = serde_json::json!({ "address": address, "publicKey": key });
        }
        Object::from_json(Kind::ServerBinding, &doc.to_string()).unwrap()
    }

    /// Every (key, binding) pair of the committed index.
    fn dump(store: &Store) -> Vec<(String, String)> {
        store
            .inner
            .db
            .with(|db| {
                let txn = db.begin_read().unwrap();
                let index = txn.open_multimap_table(SIDEROLINK_INDEX).unwrap();
                let mut out = Vec::new();
                for entry in index.iter().unwrap() {
                    let (k, vs) = entry.unwrap();
                    for v in vs {
                        out.push((k.value().to_string(), v.unwrap().value().to_string()));
                    }
                }
                out
            })
            .unwrap()
    }

    /// What [`rebuild`] makes of the committed bindings (in a transaction thrown away).
    fn rebuilt(store: &Store) -> Vec<(String, String)> {
        store
            .inner
            .db
            .with(|db| {
                let txn = db.begin_write().unwrap();
                rebuild(&txn).unwrap();
                let mut out = Vec::new();
                {
                    let index = txn.open_multimap_table(SIDEROLINK_INDEX).unwrap();
                    for entry in index.iter().unwrap() {
                        let (k, vs) = entry.unwrap();
                        for v in vs {
                            out.push((k.value().to_string(), v.unwrap().value().to_string()));
                        }
                    }
                }
                txn.abort().unwrap();
                out
            })
            .unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn index_follows_every_binding_write_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        // apply: two bindings (one operator-written with the same address), one without link.
        store
            .apply(vec![
                binding("a", Some(("fd00::5/64", "KA"))),
                binding("b", Some(("fd00:0::0005/64", "KB"))),
                binding("c", None),
            ])
            .unwrap();
        assert_eq!(
            dump(&store),
            pairs(&[
                ("address/fd00::5", "a"),
                ("address/fd00::5", "b"),
                ("key/KA", "a"),
                ("key/KB", "b"),
            ])
        );
        assert_eq!(dump(&store), rebuilt(&store));
        // Txn::put: c gets a link, a moves to another address and key.
        store
            .transact::<_, StoreError>(|t| {
                t.put(&binding("c", Some(("fd00::7/64", "KC"))))?;
                t.put(&binding("a", Some(("fd00::6/64", "KA2"))))
            })
            .unwrap();
        let holders = store
            .transact::<_, StoreError>(|t| {
                Ok((
                    t.siderolink_address_holders("fd00::5".parse().unwrap())?,
                    t.siderolink_address_holders("fd00::6".parse().unwrap())?,
                    t.siderolink_key_holders("KA")?,
                    t.siderolink_key_holders("KC")?,
                ))
            })
            .unwrap();
        assert_eq!(
            holders,
            (vec!["b".into()], vec!["a".into()], vec![], vec!["c".into()])
        );
        assert_eq!(dump(&store), rebuilt(&store));
        // Store::update: b's link removed.
        store
            .update(Kind::ServerBinding, "b", |o| {
                if let Object::ServerBinding(b) = o {
                    b.spec.siderolink = None;
                }
                Ok(())
            })
            .unwrap();
        // Txn::delete and Store::delete.
        store
            .transact::<_, StoreError>(|t| t.delete(Kind::ServerBinding, "c"))
            .unwrap();
        assert_eq!(
            dump(&store),
            pairs(&[("address/fd00::6", "a"), ("key/KA2", "a")])
        );
        store.delete(Kind::ServerBinding, "a").unwrap();
        assert_eq!(dump(&store), Vec::new());
        assert_eq!(dump(&store), rebuilt(&store));
    }

    #[test]
    fn a_schema_3_store_gets_its_index_built() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .apply(vec![
                    binding("a", Some(("fd00::5/64", "KA"))),
                    binding("b", None),
                ])
                .unwrap();
            // As a schema-3 binary left it: no index table.
            store
                .inner
                .db
                .with(|db| {
                    let txn = db.begin_write().unwrap();
                    assert!(txn.delete_multimap_table(SIDEROLINK_INDEX).unwrap());
                    txn.commit().unwrap();
                    migrate::stamp_version(db, 3).unwrap();
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let version = store.inner.db.with(migrate::found_version).unwrap();
        assert_eq!(version.unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(
            dump(&store),
            pairs(&[("address/fd00::5", "a"), ("key/KA", "a")])
        );
    }
}
