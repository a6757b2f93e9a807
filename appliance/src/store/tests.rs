//! Unit tests of the typed `Store` on temporary redb files: apply/get/list/delete, the
//! change feed, rejected updates, reopen, schema versions and corrupt files, a model-based
//! property test, and secrets at rest (sealed BMC passwords, 0600 store and key files).

use super::*;
use crate::model::parse_documents;
use redb::{Database, ReadableDatabase};

fn server_yaml(name: &str, accepted: bool) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  accepted: {accepted}\n"
    )
}

fn objects(yaml: &str) -> Vec<Object> {
    parse_documents(yaml).unwrap()
}

/// Accepts Server `name` through `Store::update` (one committed change).
fn accept(store: &Store, name: &str) {
    store
        .update(Kind::Server, name, |o| {
            if let Object::Server(s) = o {
                s.spec.accepted = true;
            }
            Ok(())
        })
        .unwrap();
}

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    (dir, store)
}

#[test]
fn apply_get_list_delete() {
    let (_dir, store) = open_temp();
    let applied = store
        .apply(objects(&format!(
            "{}---\n{}",
            server_yaml("b", false),
            server_yaml("a", true)
        )))
        .unwrap();
    assert_eq!(applied.len(), 2);
    assert!(applied.iter().all(|a| a.result == ApplyResult::Created));
    assert_eq!(store.revision().unwrap(), 2);

    let names: Vec<_> = store
        .list(Kind::Server)
        .unwrap()
        .into_iter()
        .map(|s| s.object.name().to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(store.list(Kind::ServerClass).unwrap().is_empty());

    let again = store.apply(objects(&server_yaml("a", true))).unwrap();
    assert_eq!(again[0].result, ApplyResult::Unchanged);
    assert_eq!(
        store.revision().unwrap(),
        2,
        "unchanged apply commits nothing"
    );

    let changed = store.apply(objects(&server_yaml("a", false))).unwrap();
    assert_eq!(changed[0].result, ApplyResult::Configured);
    assert_eq!(changed[0].revision, 3);

    assert_eq!(store.delete(Kind::Server, "a").unwrap(), 4);
    assert!(store.get(Kind::Server, "a").unwrap().is_none());
    assert!(matches!(
        store.delete(Kind::Server, "a"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn change_feed_sees_committed_changes_in_order() {
    let (_dir, store) = open_temp();
    let mut rx = store.subscribe();
    store.apply(objects(&server_yaml("a", false))).unwrap();
    accept(&store, "a");
    store.delete(Kind::Server, "a").unwrap();
    let got: Vec<_> = (0..3).map(|_| rx.try_recv().unwrap()).collect();
    assert_eq!(
        got.iter().map(|c| (c.revision, c.op)).collect::<Vec<_>>(),
        [
            (1, ChangeOp::Put),
            (2, ChangeOp::Put),
            (3, ChangeOp::Delete)
        ]
    );
    assert!(rx.try_recv().is_err());
}

#[test]
fn every_write_path_publishes_the_object_it_committed() {
    let (_dir, store) = open_temp();
    let mut rx = store.subscribe();
    store.apply(objects(&server_yaml("a", false))).unwrap();
    accept(&store, "a");
    let spec = crate::model::Bmc {
        endpoint: "10.0.0.5".into(),
        ..Default::default()
    };
    store.set_server_bmc("a", spec, "sidero", "P-1").unwrap();
    let adopted = store
        .apply_with(objects(&server_yaml("b", false)), |o, _| {
            if let Object::Server(s) = o {
                s.spec.hostname = Some("completed".into());
            }
            None
        })
        .unwrap();
    assert_eq!(adopted[0].result, ApplyResult::Created);
    store
        .transact(|t| {
            let mut c = objects(&server_yaml("c", true)).remove(0);
            if let Object::Server(s) = &mut c {
                s.spec.hostname = Some("c1".into());
            }
            t.put(&c).map(|_| ())
        })
        .unwrap();
    store.delete(Kind::Server, "c").unwrap();
    let got: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(got.len(), 6);
    // Each put carries the object exactly as a read right after its commit returns it
    // (with what the write path added: the BMC secret reference, the completion).
    let log = logged(&store, 0);
    for (change, logged) in got.iter().zip(&log).take(5) {
        assert_eq!(
            (change.revision, change.op),
            (logged.revision, ChangeOp::Put)
        );
        assert_eq!(change.object.as_deref(), Some(&logged.object), "{change:?}");
    }
    let Some(Object::Server(a)) = got[2].object.as_deref() else {
        panic!("{:?}", got[2]);
    };
    assert!(a.spec.accepted && a.spec.bmc.as_ref().unwrap().pass_from.is_some());
    let Some(Object::Server(b)) = got[3].object.as_deref() else {
        panic!("{:?}", got[3]);
    };
    assert_eq!(b.spec.hostname.as_deref(), Some("completed"));
    assert_eq!(
        got[3].object.as_deref(),
        Some(&store.get(Kind::Server, "b").unwrap().unwrap().object)
    );
    assert_eq!(
        (got[5].op, got[5].object.as_ref()),
        (ChangeOp::Delete, None)
    );
    // Every receiver saw everything: the feed holds nothing (and no object) any more.
    assert_eq!(store.feed_backlog(), 0);
}

#[test]
fn tables_a_transaction_never_used_read_empty_and_open_on_first_use() {
    // A Txn opens the events, allocations and SideroLink tables only when a job uses them:
    // in a new store that has only applied objects they do not exist yet, and every read
    // answers as for an empty table.
    let (_dir, store) = open_temp();
    store
        .transact(|t| {
            t.put(&objects(&server_yaml("s", true)).remove(0))
                .map(|_| ())
        })
        .unwrap();
    assert!(store.events(None, 0).unwrap().is_empty());
    assert_eq!(store.allocation("s").unwrap(), None);
    assert!(store.siderolink_nodes().unwrap().is_empty());
    assert!(store.talos_event_ids("s").unwrap().is_empty());
    store
        .transact(|t| {
            assert!(t.allocations()?.is_empty());
            assert!(
                t.siderolink_address_holders("fdae:41e4:649b:9303::1".parse().unwrap())?
                    .is_empty()
            );
            t.append_event(NewEvent {
                time_ms: 1,
                server: "s".into(),
                event: "adopt".into(),
                from: String::new(),
                to: "discovered".into(),
                message: String::new(),
            })?;
            t.remember_talos_event("s", "e1", 8)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(store.events(Some("s"), 0).unwrap().len(), 1);
    assert_eq!(store.talos_event_ids("s").unwrap(), ["e1"]);
    // Deleting the Server opens the tables its forgetting touches, in the same commit.
    store
        .transact(|t| t.delete(Kind::Server, "s").map(|_| ()))
        .unwrap();
    assert!(store.talos_event_ids("s").unwrap().is_empty());
    assert!(store.get(Kind::Server, "s").unwrap().is_none());
}

#[test]
fn rejected_update_writes_nothing() {
    let (_dir, store) = open_temp();
    store.apply(objects(&server_yaml("a", false))).unwrap();
    let err = store
        .update(Kind::Server, "a", |o| {
            if let Object::Server(s) = o {
                s.spec.accepted = true;
            }
            Err("not allowed".into())
        })
        .unwrap_err();
    assert!(err.to_string().contains("not allowed"));
    let Object::Server(s) = store.get(Kind::Server, "a").unwrap().unwrap().object else {
        panic!("wrong kind");
    };
    assert!(!s.spec.accepted);
    assert_eq!(store.revision().unwrap(), 1);
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store.apply(objects(&server_yaml("a", true))).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.get(Kind::Server, "a").unwrap().is_some());
    assert_eq!(store.revision().unwrap(), 1);
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store.apply(objects(&server_yaml("a", true))).unwrap();
        store
            .inner
            .db
            .with(|db| migrate::stamp_version(db, SCHEMA_VERSION + 1))
            .unwrap()
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer than this binary"), "{err}");
    // The file still holds the newer version and the data: nothing was migrated or lost.
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version = meta
        .get(tables::META_SCHEMA_VERSION)
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(version, SCHEMA_VERSION + 1);
    assert_eq!(txn.open_table(OBJECTS).unwrap().len().unwrap(), 1);
}

#[test]
fn older_schema_without_step_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store
            .inner
            .db
            .with(|db| migrate::stamp_version(db, 0))
            .unwrap()
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("no migration step from schema version 0"),
        "{chain}"
    );
}

#[test]
fn corrupt_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::write(
        &path,
        b"this is not a redb file at all, just some text bytes",
    )
    .unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("cannot open store"), "{err}");
}

/// Random sequences of applies, updates and deletes against the store and a BTreeMap
/// model, with a reopen in the middle; the two must agree after every step.
#[test]
fn agrees_with_a_btreemap_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut store = Store::open(&path).unwrap();
    let mut model: BTreeMap<String, bool> = BTreeMap::new();
    // Deterministic xorshift so the test is repeatable.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..300 {
        let name = format!("s{}", next() % 12);
        match next() % 4 {
            0 | 1 => {
                let accepted = next() % 2 == 0;
                store.apply(objects(&server_yaml(&name, accepted))).unwrap();
                model.insert(name, accepted);
            }
            2 => {
                let r = store.delete(Kind::Server, &name);
                assert_eq!(r.is_ok(), model.remove(&name).is_some());
            }
            _ => {
                let r = store.update(Kind::Server, &name, |o| {
                    if let Object::Server(s) = o {
                        s.spec.accepted = !s.spec.accepted;
                    }
                    Ok(())
                });
                match model.get_mut(&name) {
                    Some(v) => {
                        r.unwrap();
                        *v = !*v;
                    }
                    None => assert!(r.is_err()),
                }
            }
        }
        if step == 150 {
            drop(store);
            store = Store::open(&path).unwrap();
        }
        let got: BTreeMap<String, bool> = store
            .list(Kind::Server)
            .unwrap()
            .into_iter()
            .map(|s| match s.object {
                Object::Server(s) => (s.metadata.name, s.spec.accepted),
                _ => panic!("wrong kind"),
            })
            .collect();
        assert_eq!(got, model, "after step {step}");
    }
}

// --- secrets at rest (crate::secrets) ---

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn server_with_inline_pass(name: &str, pass: &str) -> String {
    format!(
        "{}  bmc:\n    endpoint: 10.0.0.5\n    user: admin\n    pass: {pass}\n",
        server_yaml(name, true)
    )
}

#[test]
fn bmc_passwords_are_not_in_the_file_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store
            .apply(objects(&format!(
                "{}---\n{}",
                server_yaml("s1", true),
                server_with_inline_pass("s2", "Inline-Pass-42")
            )))
            .unwrap();
        let spec = crate::model::Bmc {
            endpoint: "10.0.0.5".into(),
            ..Default::default()
        };
        store
            .set_server_bmc("s1", spec, "sidero", "Secret-Pass-17")
            .unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !contains(&bytes, "Secret-Pass-17"),
        "bmc_secrets value in clear"
    );
    assert!(
        !contains(&bytes, "Inline-Pass-42"),
        "inline spec.bmc.pass in clear"
    );
    // Both read back through the store (after a reopen, with the key file).
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.server_bmc_secret("s1").unwrap(),
        Some(("sidero".into(), "Secret-Pass-17".into()))
    );
    let Object::Server(s) = store.get(Kind::Server, "s2").unwrap().unwrap().object else {
        panic!()
    };
    assert_eq!(s.spec.bmc.unwrap().pass.as_deref(), Some("Inline-Pass-42"));
    // Writing the same credentials again is not a change.
    let rev = store.revision().unwrap();
    let spec = crate::model::Bmc {
        endpoint: "10.0.0.5".into(),
        ..Default::default()
    };
    store
        .set_server_bmc("s1", spec, "sidero", "Secret-Pass-17")
        .unwrap();
    assert_eq!(store.revision().unwrap(), rev);
}

#[test]
fn store_file_is_created_0600_with_a_0600_key_beside_it() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _store) = open_temp();
    for name in ["state.redb", "secrets.key"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn missing_or_other_key_is_a_clear_error_and_no_key_is_made_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let key_path = Store::key_path(&path);
    {
        let store = Store::open(&path).unwrap();
        store.apply(objects(&server_yaml("s1", true))).unwrap();
        let spec = crate::model::Bmc {
            endpoint: "10.0.0.5".into(),
            ..Default::default()
        };
        store.set_server_bmc("s1", spec, "u", "p").unwrap();
    }
    let original = std::fs::read(&key_path).unwrap();
    std::fs::remove_file(&key_path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::SecretsKeyMissing { .. }), "{err}");
    assert!(err.to_string().contains("secrets.key"), "{err}");
    assert!(!key_path.exists(), "a missing key is never regenerated");
    // Another key is refused too.
    crate::secrets::keyfile::create(&key_path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SecretsKeyMismatch { .. }),
        "{err}"
    );
    // The right key opens it again.
    std::fs::write(&key_path, original).unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.server_bmc_secret("s1").unwrap(),
        Some(("u".into(), "p".into()))
    );
}

#[test]
fn schema_1_store_with_clear_secrets_is_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    // A store as schema 1 wrote it: secrets and an inline password in clear.
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(tables::META_SCHEMA_VERSION, 1).unwrap();
            meta.insert(tables::META_REVISION, 2).unwrap();
            let mut objects_t = txn.open_table(OBJECTS).unwrap();
            for (rev, yaml) in [
                (1u64, server_with_inline_pass("s1", "Legacy-Inline-1")),
                (2, server_yaml("s2", true)),
            ] {
                let object = objects(&yaml).remove(0);
                let mut record = rev.to_be_bytes().to_vec();
                record.extend_from_slice(object.to_json().as_bytes());
                let key = object_key(Kind::Server, object.name());
                objects_t.insert(key.as_str(), record.as_slice()).unwrap();
            }
            let mut secrets = txn.open_table(tables::BMC_SECRETS).unwrap();
            secrets
                .insert(
                    "default/s2-bmc",
                    br#"{"pass":"Legacy-Secret-2","user":"sidero"}"#.as_slice(),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(contains(&std::fs::read(&path).unwrap(), "Legacy-Secret-2"));
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store
            .bmc_secret_value("default", "s2-bmc", "pass")
            .unwrap()
            .as_deref(),
        Some("Legacy-Secret-2")
    );
    let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
        panic!()
    };
    assert_eq!(s.spec.bmc.unwrap().pass.as_deref(), Some("Legacy-Inline-1"));
    assert_eq!(store.revision().unwrap(), 2, "sealing is not a change");
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !contains(&bytes, "Legacy-Secret-2"),
        "old secret lingers in the file"
    );
    assert!(
        !contains(&bytes, "Legacy-Inline-1"),
        "old inline pass lingers in the file"
    );
    // Reopening finds nothing more to do.
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.server_bmc_secret("s2").unwrap(),
        None,
        "s2's spec has no secret refs"
    );
}

#[test]
fn other_rooms_seal_with_the_store_key() {
    let (_dir, store) = open_temp();
    let sealed = store
        .seal_secret("siderolink/s1/wireguard", b"wg-private")
        .unwrap();
    assert!(!contains(&sealed, "wg-private"));
    assert_eq!(
        store
            .open_secret("siderolink/s1/wireguard", &sealed)
            .unwrap(),
        b"wg-private"
    );
    assert!(
        store
            .open_secret("siderolink/s2/wireguard", &sealed)
            .is_err()
    );
}

// --- the durable change log (changelog.rs) ---

fn logged(store: &Store, after: u64) -> Vec<LoggedChange> {
    match store.changes_since(after, usize::MAX).unwrap() {
        Since::Changes { changes, .. } => changes,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_write_path_logs_its_change_in_revision_order() {
    let (_dir, store) = open_temp();
    store
        .apply(objects(&format!(
            "{}---\n{}",
            server_yaml("a", false),
            server_yaml("b", false)
        )))
        .unwrap();
    accept(&store, "a");
    let spec = crate::model::Bmc {
        endpoint: "10.0.0.5".into(),
        ..Default::default()
    };
    store.set_server_bmc("b", spec, "sidero", "P-1").unwrap();
    store
        .transact(|t| {
            t.delete(Kind::Server, "b")?;
            let mut c = objects(&server_yaml("c", true)).remove(0);
            t.put(&c)?;
            if let Object::Server(s) = &mut c {
                s.spec.hostname = Some("c1".into());
            }
            t.put(&c).map(|_| ())
        })
        .unwrap();
    store.delete(Kind::Server, "a").unwrap();
    let log = logged(&store, 0);
    let got: Vec<_> = log
        .iter()
        .map(|c| (c.revision, c.op, c.name.as_str()))
        .collect();
    use ChangeOp::{Delete, Put};
    assert_eq!(
        got,
        [
            (1, Put, "a"),
            (2, Put, "b"),
            (3, Put, "a"),
            (4, Put, "b"),
            (5, Delete, "b"),
            (6, Put, "c"),
            (7, Put, "c"),
            (8, Delete, "a"),
        ]
    );
    assert_eq!(store.revision().unwrap(), 8);
    // Puts carry the object after the change, deletes the last state.
    let Object::Server(b) = &log[4].object else {
        panic!()
    };
    assert_eq!(b.spec.bmc.as_ref().unwrap().endpoint, "10.0.0.5");
    let Object::Server(a) = &log[7].object else {
        panic!()
    };
    assert!(a.spec.accepted);
    let Object::Server(c) = &log[6].object else {
        panic!()
    };
    assert_eq!(c.spec.hostname.as_deref(), Some("c1"));
    // Each put carries the object as that revision wrote it, also after later writes
    // replaced it (an update, a BMC edit, a delete, a second write in one transaction).
    let server = |i: usize| match &log[i].object {
        Object::Server(s) => s.spec.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!server(0).accepted, "a at revision 1");
    assert!(server(2).accepted, "a at revision 3");
    assert!(server(1).bmc.is_none(), "b at revision 2");
    assert_eq!(server(3).bmc.unwrap().endpoint, "10.0.0.5");
    assert_eq!(server(5).hostname, None, "c at revision 6");
    assert!(log.iter().all(|c| c.committed_ms > 0));
    // Reading after a revision, in batches.
    let tail: Vec<u64> = logged(&store, 5).iter().map(|c| c.revision).collect();
    assert_eq!(tail, [6, 7, 8]);
    match store.changes_since(2, 2).unwrap() {
        Since::Changes { changes, revision } => {
            assert_eq!(changes.len(), 2);
            assert_eq!(changes[0].revision, 3);
            assert_eq!(revision, 8);
        }
        other => panic!("{other:?}"),
    }
    // A failed transaction logs nothing.
    let r: Result<(), StoreError> = store.transact(|t| {
        t.delete(Kind::Server, "c")?;
        Err(StoreError::NotFound {
            kind: Kind::Server,
            name: "x".into(),
        })
    });
    assert!(r.is_err());
    assert!(logged(&store, 8).is_empty());
}

/// The raw change-log entry under `revision`.
fn raw_entry(store: &Store, revision: u64) -> Option<Vec<u8>> {
    let txn = store.inner.db.read().unwrap();
    let log = txn.open_table(CHANGE_LOG).unwrap();
    log.get(revision).unwrap().map(|v| v.value().to_vec())
}

#[test]
fn a_put_refers_to_its_record_until_the_record_is_replaced() {
    let (_dir, store) = open_temp();
    let named = |name: &str| {
        let mut o = objects(&server_yaml(name, false)).remove(0);
        if let Object::Server(s) = &mut o {
            s.spec.hostname = Some(format!("{name}-host"));
        }
        o
    };
    store
        .transact(|t| {
            t.put_changed(named("a"))?;
            t.put_changed(named("b"))?;
            t.put(&named("c")).map(|_| ())
        })
        .unwrap();
    // The header line alone: the object's JSON is only in `objects`.
    for revision in 1..=3 {
        let entry = raw_entry(&store, revision).unwrap();
        assert!(
            entry.ends_with(b"}\n"),
            "{}",
            String::from_utf8_lossy(&entry)
        );
        assert!(!contains(&entry, "-host"));
    }
    accept(&store, "a"); // 4, through Store::update: written whole
    store
        .transact(|t| t.delete(Kind::Server, "b").map(|_| ()))
        .unwrap(); // 5
    store
        .transact(|t| {
            let mut c = named("c");
            if let Object::Server(s) = &mut c {
                s.spec.accepted = true;
            }
            t.put(&c).map(|_| ())
        })
        .unwrap(); // 6
    // Each replaced revision's entry now holds its object; the live one of a Txn still
    // refers.
    for revision in 1..=4 {
        assert!(contains(&raw_entry(&store, revision).unwrap(), "-host"));
    }
    assert!(!contains(&raw_entry(&store, 6).unwrap(), "-host"));
    let log = logged(&store, 0);
    let got: Vec<_> = log
        .iter()
        .map(|c| {
            let Object::Server(s) = &c.object else {
                panic!("{c:?}")
            };
            (c.revision, c.op, c.name.as_str(), s.spec.accepted)
        })
        .collect();
    use ChangeOp::{Delete, Put};
    assert_eq!(
        got,
        [
            (1, Put, "a", false),
            (2, Put, "b", false),
            (3, Put, "c", false),
            (4, Put, "a", true),
            (5, Delete, "b", false),
            (6, Put, "c", true),
        ]
    );
    // A reference whose record moved on without a copy is refused, not read as the newer
    // object.
    {
        let txn = store.inner.db.write().unwrap();
        let mut objects = txn.open_table(OBJECTS).unwrap();
        let key = object_key(Kind::Server, "c");
        let mut record = objects.get(key.as_str()).unwrap().unwrap().value().to_vec();
        record[..8].copy_from_slice(&7u64.to_be_bytes());
        objects.insert(key.as_str(), record.as_slice()).unwrap();
        drop(objects);
        txn.commit().unwrap();
    }
    let err = store.changes_since(5, 10).unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptChange { revision: 6, .. }),
        "{err}"
    );
}

#[test]
fn a_schema_5_log_of_whole_entries_reads_and_is_kept_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store.apply(objects(&server_yaml("a", false))).unwrap();
        // As schema 5 wrote it: the entry holds the object's JSON.
        let object = store.get(Kind::Server, "a").unwrap().unwrap().object;
        let txn = store.inner.db.write().unwrap();
        {
            let mut log = txn.open_table(CHANGE_LOG).unwrap();
            let change = Change {
                revision: 1,
                kind: Kind::Server,
                name: "a".into(),
                op: ChangeOp::Put,
                object: None,
            };
            let now_ms = crate::clock::unix_ms();
            changelog::append(&mut log, &change, &object, &store.inner.key, now_ms).unwrap();
        }
        txn.commit().unwrap();
        store
            .inner
            .db
            .with(|db| migrate::stamp_version(db, 5))
            .unwrap()
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        Store::schema_version_of(&snapshot::snapshot_path(&path, 5)).unwrap(),
        Some(5)
    );
    let whole = raw_entry(&store, 1).unwrap();
    assert!(!whole.ends_with(b"\n"), "written whole");
    accept(&store, "a");
    assert_eq!(
        raw_entry(&store, 1).unwrap(),
        whole,
        "a whole entry is kept"
    );
    let accepted: Vec<_> = logged(&store, 0)
        .iter()
        .map(|c| match &c.object {
            Object::Server(s) => (c.revision, s.spec.accepted),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(accepted, [(1, false), (2, true)]);
    drop(store);
    assert_eq!(Store::schema_version_of(&path).unwrap(), Some(6));
}

#[test]
fn the_log_keeps_the_newest_changes_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let retention = Retention {
        max_changes: 3,
        max_age_ms: None,
    };
    {
        let store = Store::open_with(&path, retention).unwrap();
        for i in 0..10 {
            store
                .apply(objects(&server_yaml(&format!("s{i}"), true)))
                .unwrap();
        }
        assert_eq!(store.compacted_revision().unwrap(), 7);
    }
    let store = Store::open_with(&path, retention).unwrap();
    assert_eq!(
        store.changes_since(6, 10).unwrap(),
        Since::Compacted {
            compacted: 7,
            revision: 10
        }
    );
    assert_eq!(
        store.changes_since(11, 10).unwrap(),
        Since::Compacted {
            compacted: 7,
            revision: 10
        },
        "a revision the store never had is refused too"
    );
    let kept: Vec<u64> = logged(&store, 7).iter().map(|c| c.revision).collect();
    assert_eq!(kept, [8, 9, 10]);
    // One transaction writing more than the retention keeps only its newest changes.
    let many: String = (0..5)
        .map(|i| server_yaml(&format!("m{i}"), true))
        .collect::<Vec<_>>()
        .join("---\n");
    store.apply(objects(&many)).unwrap();
    assert_eq!(store.compacted_revision().unwrap(), 12);
    assert!(matches!(
        store.changes_since(10, 1).unwrap(),
        Since::Compacted { compacted: 12, .. }
    ));
    let kept: Vec<u64> = logged(&store, 12).iter().map(|c| c.revision).collect();
    assert_eq!(kept, [13, 14, 15]);
}

#[test]
fn the_log_is_pruned_by_count_once_it_is_over_by_its_slack() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("log.redb")).unwrap();
    let key = crate::secrets::SecretKey::from_bytes(&[7; 32]);
    let object = objects(&server_yaml("s", true)).remove(0);
    let retention = Retention {
        max_changes: 256,
        max_age_ms: None,
    };
    assert_eq!(changelog::count_slack(256), 2);
    assert_eq!(
        changelog::count_slack(127),
        0,
        "a small retention is kept exactly"
    );
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(CHANGE_LOG).unwrap();
        let mut meta = txn.open_table(META).unwrap();
        let compacted = |meta: &redb::Table<'_, &'static str, u64>| {
            meta.get(tables::META_LOG_COMPACTED)
                .unwrap()
                .map_or(0, |v| v.value())
        };
        for revision in 1..=259 {
            let change = Change {
                revision,
                kind: Kind::Server,
                name: "s".into(),
                op: ChangeOp::Put,
                object: None,
            };
            changelog::append(&mut log, &change, &object, &key, 1_000).unwrap();
            changelog::prune(&mut log, &mut meta, revision, retention, 1_000).unwrap();
            // Up to 256 + 2 changes stay; the commit that makes 259 prunes back to 256.
            let expected = if revision <= 258 { 0 } else { 3 };
            assert_eq!(compacted(&meta), expected, "after revision {revision}");
        }
        assert!(log.get(3).unwrap().is_none());
        assert!(log.get(4).unwrap().is_some());
        assert_eq!(log.len().unwrap(), 256);
    }
    txn.commit().unwrap();
}

#[test]
fn the_log_drops_changes_older_than_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("log.redb")).unwrap();
    let key = crate::secrets::SecretKey::from_bytes(&[7; 32]);
    let object = objects(&server_yaml("s", true)).remove(0);
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(CHANGE_LOG).unwrap();
        let mut meta = txn.open_table(META).unwrap();
        for (revision, at_ms) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            let change = Change {
                revision,
                kind: Kind::Server,
                name: "s".into(),
                op: ChangeOp::Put,
                object: None,
            };
            changelog::append(&mut log, &change, &object, &key, at_ms).unwrap();
        }
        let retention = Retention {
            max_changes: 100,
            max_age_ms: Some(1_000),
        };
        changelog::prune(&mut log, &mut meta, 3, retention, 3_500).unwrap();
        assert_eq!(
            meta.get(tables::META_LOG_COMPACTED)
                .unwrap()
                .unwrap()
                .value(),
            2
        );
        assert!(log.get(2).unwrap().is_none());
        assert!(log.get(3).unwrap().is_some());
        // Everything may age out: the compaction point then reaches the revision.
        changelog::prune(&mut log, &mut meta, 3, retention, 10_000).unwrap();
        assert_eq!(
            meta.get(tables::META_LOG_COMPACTED)
                .unwrap()
                .unwrap()
                .value(),
            3
        );
        assert!(log.is_empty().unwrap());
    }
    txn.commit().unwrap();
}

#[test]
fn a_schema_2_store_starts_its_log_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store
            .apply(objects(&format!(
                "{}---\n{}",
                server_yaml("a", true),
                server_yaml("b", true)
            )))
            .unwrap();
        // As schema 2 left it: no change log, no compaction point.
        let txn = store.inner.db.write().unwrap();
        txn.delete_table(CHANGE_LOG).unwrap();
        txn.open_table(META)
            .unwrap()
            .remove(tables::META_LOG_COMPACTED)
            .unwrap();
        txn.commit().unwrap();
        store
            .inner
            .db
            .with(|db| migrate::stamp_version(db, 2))
            .unwrap()
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.compacted_revision().unwrap(), 2);
    assert!(matches!(
        store.changes_since(0, 10).unwrap(),
        Since::Compacted { compacted: 2, .. }
    ));
    assert!(logged(&store, 2).is_empty());
    store.delete(Kind::Server, "a").unwrap();
    assert_eq!(logged(&store, 2)[0].revision, 3);
}

#[test]
fn replaying_the_log_gives_the_stored_objects() {
    let (_dir, store) = open_temp();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let name = format!("s{}", x % 9);
        if x.is_multiple_of(3) {
            let _ = store.delete(Kind::Server, &name);
        } else {
            store
                .apply(objects(&server_yaml(&name, x.is_multiple_of(2))))
                .unwrap();
        }
    }
    let mut replayed: BTreeMap<String, Object> = BTreeMap::new();
    for c in logged(&store, 0) {
        match c.op {
            ChangeOp::Put => {
                replayed.insert(c.name, c.object);
            }
            ChangeOp::Delete => {
                assert!(
                    replayed.remove(&c.name).is_some(),
                    "delete of a live object"
                );
            }
        }
    }
    let stored: BTreeMap<String, Object> = store
        .list(Kind::Server)
        .unwrap()
        .into_iter()
        .map(|s| (s.object.name().to_string(), s.object))
        .collect();
    assert_eq!(replayed, stored);
}

#[test]
fn an_emptied_store_with_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    drop(Store::open(&path).unwrap());
    std::fs::File::create(&path).unwrap(); // truncated to nothing
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Truncated { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "file left as found"
    );
}

/// Gives server `name` a log line, an applied Talos event id, a node record and a timeline
/// event, as SideroLink and the timeline writer store them.
fn give_records(store: &Store, name: &str) {
    store
        .append_node_logs(
            vec![NodeLogRecord {
                seq: 0,
                time_ms: 1,
                server: name.into(),
                address: "fdae::2".into(),
                msg: format!("{name} booted"),
                talos_time: None,
                talos_level: None,
                fields: vec![],
            }],
            10,
        )
        .unwrap();
    store
        .transact(|t| {
            t.remember_talos_event(name, &format!("{name}-ev"), 8)?;
            t.put_siderolink_node(
                name,
                &NodeRecord {
                    address: "fdae::2/64".into(),
                    public_key: "k".into(),
                    cluster: None,
                },
            )
        })
        .unwrap();
    let record = TimelineRecord {
        seq: 0,
        time_ms: 1,
        step: "dhcp_offer".into(),
        outcome: "ok".into(),
        detail: String::new(),
        bytes: None,
        duration_ms: None,
        mac: None,
        ip: None,
    };
    let limits = TimelineLimits {
        per_server: 16,
        per_pending: 4,
        pending_keys: 4,
    };
    store
        .apply_timeline(
            vec![TimelineOp::Append {
                key: name.into(),
                record,
            }],
            limits,
            |_, _| true,
        )
        .unwrap();
}

/// (log lines, event ids, node record, timeline events) held for `name`.
fn held(store: &Store, name: &str) -> (u64, usize, bool, usize) {
    (
        store.node_log_count(name).unwrap()
            + store
                .node_logs(name, &NodeLogQuery::default())
                .unwrap()
                .len() as u64,
        store.talos_event_ids(name).unwrap().len(),
        store.siderolink_node(name).unwrap().is_some(),
        store.timeline(name).unwrap().len(),
    )
}

#[test]
fn deleting_a_server_forgets_its_logs_event_ids_node_record_and_timeline() {
    let (_dir, store) = open_temp();
    store
        .apply(objects(&format!(
            "{}---\n{}---\n{}",
            server_yaml("a", true),
            server_yaml("b", true),
            server_yaml("c", true)
        )))
        .unwrap();
    for name in ["a", "b", "c"] {
        give_records(&store, name);
        assert_eq!(held(&store, name), (2, 1, true, 1), "{name}");
    }
    // The admin delete path.
    store.delete(Kind::Server, "a").unwrap();
    assert_eq!(held(&store, "a"), (0, 0, false, 0));
    // The transaction path (the lifecycle's deletes), in one transaction with the delete.
    let deleted = store.transact(|t| t.delete(Kind::Server, "b")).unwrap();
    assert!(deleted);
    assert_eq!(held(&store, "b"), (0, 0, false, 0));
    // Another server's records are untouched; deleting a ServerClass named like a server
    // forgets nothing.
    assert_eq!(held(&store, "c"), (2, 1, true, 1));
    store
        .apply(objects(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: c\nspec: {}\n",
        ))
        .unwrap();
    store.delete(Kind::ServerClass, "c").unwrap();
    assert_eq!(held(&store, "c"), (2, 1, true, 1));
    // A failed transaction that deleted a server forgets nothing either.
    let failed: Result<(), StoreError> = store.transact(|t| {
        t.delete(Kind::Server, "c")?;
        Err(StoreError::NotFound {
            kind: Kind::Server,
            name: "x".into(),
        })
    });
    assert!(failed.is_err());
    assert_eq!(held(&store, "c"), (2, 1, true, 1));
    assert!(store.get(Kind::Server, "c").unwrap().is_some());
    // The ids counter and the rings still work for a server of the same name later.
    give_records(&store, "a");
    assert_eq!(held(&store, "a"), (2, 1, true, 1));
}

#[test]
fn migration_snapshot_and_rollback_restore() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store.apply(objects(&server_yaml("before", true))).unwrap();
    }
    // An older schema: the file is copied (0600) before it migrates.
    Store::stamp_schema_version(&path, SCHEMA_VERSION - 1).unwrap();
    let store = Store::open(&path).unwrap();
    let snap = snapshot::snapshot_path(&path, SCHEMA_VERSION - 1);
    assert_eq!(
        snap,
        dir.path()
            .join(format!("state.v{}.redb", SCHEMA_VERSION - 1))
    );
    assert_eq!(
        std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        Store::schema_version_of(&snap).unwrap(),
        Some(SCHEMA_VERSION - 1)
    );
    store.apply(objects(&server_yaml("after", true))).unwrap();
    drop(store);
    // A newer schema without this schema's snapshot: refused, nothing moved.
    Store::stamp_schema_version(&path, SCHEMA_VERSION + 1).unwrap();
    let Err(e) = Store::open(&path) else {
        panic!("a newer store without a snapshot was opened")
    };
    assert!(matches!(e, StoreError::NewerSchema { .. }), "{e}");
    assert!(e.to_string().contains("no snapshot"), "{e}");
    assert_eq!(
        Store::schema_version_of(&path).unwrap(),
        Some(SCHEMA_VERSION + 1)
    );
    // With one (as the newer binary wrote before it migrated): restored, the newer file
    // kept aside.
    let mine = snapshot::snapshot_path(&path, SCHEMA_VERSION);
    std::fs::copy(&snap, &mine).unwrap();
    Store::stamp_schema_version(&mine, SCHEMA_VERSION).unwrap();
    let store = Store::open(&path).unwrap();
    assert!(store.get(Kind::Server, "before").unwrap().is_some());
    assert!(store.get(Kind::Server, "after").unwrap().is_none());
    assert!(!mine.exists());
    let aside = snapshot::rolled_back_path(&path, SCHEMA_VERSION + 1);
    drop(store);
    assert_eq!(
        Store::schema_version_of(&aside).unwrap(),
        Some(SCHEMA_VERSION + 1)
    );
}

#[test]
fn a_follower_without_objects_pins_none_and_still_sees_every_change() {
    let (_dir, store) = open_temp();
    let mut names = store.subscribe_without_objects();
    for i in 0..10 {
        store
            .apply(objects(&server_yaml(&format!("s{i}"), false)))
            .unwrap();
    }
    store.delete(Kind::Server, "s0").unwrap();
    // Unread, it keeps no committed object alive in the object-carrying feed.
    assert_eq!(store.feed_backlog(), 0);
    let got: Vec<Change> = std::iter::from_fn(|| names.try_recv().ok()).collect();
    let seen: Vec<_> = got.iter().map(|c| (c.revision, c.op)).collect();
    let mut want: Vec<_> = (1..=10).map(|r| (r, ChangeOp::Put)).collect();
    want.push((11, ChangeOp::Delete));
    assert_eq!(seen, want);
    assert!(got.iter().all(|c| c.object.is_none()));
    assert_eq!(got[3].name, "s3");
}

/// The feed carries changes in revision order even when a writer commits while another's
/// changes wait to be published: here a second writer starts inside the first's `answer`
/// (after its commit, before its publish) and is given time to commit and publish first.
#[test]
fn the_feed_keeps_revision_order_across_writers() {
    let (_dir, store) = open_temp();
    let mut feed = store.subscribe();
    let mut other = None;
    store.apply_answered(
        objects(&server_yaml("a", false)),
        |_, _| None,
        |result| {
            assert_eq!(result.unwrap()[0].revision, 1);
            let s = store.clone();
            other = Some(std::thread::spawn(move || {
                s.apply(objects(&server_yaml("b", false))).unwrap();
            }));
            // Without the order lock the other writer's change (revision 2) went out here,
            // ahead of this one's; with it, the other waits for this publish.
            std::thread::sleep(std::time::Duration::from_millis(100));
        },
    );
    other.unwrap().join().unwrap();
    let first = feed.try_recv().unwrap();
    let second = feed.try_recv().unwrap();
    assert_eq!(
        [(first.revision, first.name), (second.revision, second.name)],
        [(1, "a".to_string()), (2, "b".to_string())]
    );
    assert_eq!(*store.committed().borrow(), 2);
}

/// A view kept from the feed can read its own writes: a reader that waits for the feed
/// (`wait_published`) after an apply was answered finds that apply's change on its receiver,
/// although the answer came before the publish.
#[test]
fn an_answered_change_is_on_the_feed_once_waited_for() {
    let (_dir, store) = open_temp();
    let (tx, seen) = std::sync::mpsc::channel();
    let mut reader = None;
    store.apply_answered(
        objects(&server_yaml("a", false)),
        |_, _| None,
        |result| {
            assert_eq!(result.unwrap()[0].revision, 1);
            let s = store.clone();
            let mut rx = s.subscribe();
            reader = Some(std::thread::spawn(move || {
                s.wait_published();
                tx.send(rx.try_recv().map(|c| c.revision).ok()).unwrap();
            }));
            // Without the wait the reader looked here and found nothing.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(seen.try_recv().is_err(), "the reader waits for the publish");
        },
    );
    assert_eq!(seen.recv().unwrap(), Some(1));
    reader.unwrap().join().unwrap();
}
