//! Provision against a real store and through the real tonic service: Sidero's answers
//! (NotFound, InvalidArgument), address reuse, the collision check, key uniqueness.

use std::sync::Arc;

use appliance_rpc::siderolink::ProvisionRequest;
use appliance_rpc::siderolink::provision_service_server::ProvisionService;
use serde_json::json;
use tonic::Code;

use super::*;
use crate::model::{Kind, Object};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    (dir, store)
}

fn bind(store: &Store, name: &str) {
    let doc = json!({
        "apiVersion": Kind::ServerBinding.api_version(),
        "kind": "ServerBinding",
        "metadata": { "name": name },
        "spec": { "metalMachineRef": { "name": "m" } },
    });
    let b = Object::from_json(Kind::ServerBinding, &doc.to_string()).unwrap();
    store.transact::<_, StoreError>(|t| t.put(&b)).unwrap();
}

fn link(store: &Store, name: &str) -> Option<SideroLinkSpec> {
    match store.get(Kind::ServerBinding, name).unwrap()?.object {
        Object::ServerBinding(b) => b.spec.siderolink,
        _ => None,
    }
}

fn key(n: u8) -> String {
    Identity::generate([n; 64]).public_key_base64()
}

#[test]
fn unallocated_is_not_found_and_writes_nothing() {
    let (_d, s) = store();
    let before = s.revision().unwrap();
    let prefix = Prefix::derive("x");
    assert!(matches!(
        bind_node(&s, prefix, "nope", &key(1), vec![[5; 8]]),
        Err(ProvisionError::NotAllocated(_))
    ));
    // Sidero looks the binding up first: an unallocated node with a bad key is NotFound.
    assert!(matches!(
        bind_node(&s, prefix, "nope", "bad", vec![[5; 8]]),
        Err(ProvisionError::NotAllocated(_))
    ));
    assert_eq!(s.revision().unwrap(), before);
}

#[test]
fn allocates_reuses_and_checks_collisions() {
    let (_d, s) = store();
    let prefix = Prefix::derive("x");
    bind(&s, "a");
    bind(&s, "b");
    let a = bind_node(&s, prefix, "a", &key(1), vec![[5; 8]]).unwrap();
    assert_eq!(a, prefix.with_host(u64::from_be_bytes([5; 8])));
    assert_eq!(
        link(&s, "a"),
        Some(SideroLinkSpec {
            address: format!("{a}/64"),
            public_key: key(1)
        })
    );
    // Same random bytes for b: the collision check moves it to the next candidate.
    let b = bind_node(&s, prefix, "b", &key(2), vec![[5; 8], [6; 8]]).unwrap();
    assert_eq!(b, prefix.with_host(u64::from_be_bytes([6; 8])));
    // A re-provision (new boot, new key) keeps the address.
    let a2 = bind_node(&s, prefix, "a", &key(3), vec![[9; 8]]).unwrap();
    assert_eq!(a2, a);
    assert_eq!(link(&s, "a").unwrap().public_key, key(3));
    // Only colliding candidates: refused, nothing written.
    bind(&s, "c");
    let rev = s.revision().unwrap();
    assert!(matches!(
        bind_node(&s, prefix, "c", &key(4), vec![[5; 8], [6; 8]]),
        Err(ProvisionError::Allocate(_))
    ));
    assert_eq!(s.revision().unwrap(), rev);
}

#[test]
fn address_from_another_prefix_is_replaced() {
    let (_d, s) = store();
    bind(&s, "a");
    let old = bind_node(&s, Prefix::derive("old"), "a", &key(1), vec![[5; 8]]).unwrap();
    let new_prefix = Prefix::derive("new");
    let new = bind_node(&s, new_prefix, "a", &key(1), vec![[7; 8]]).unwrap();
    assert_ne!(old, new);
    assert!(new_prefix.contains(new));
}

#[test]
fn bad_and_duplicate_keys_are_refused() {
    let (_d, s) = store();
    let prefix = Prefix::derive("x");
    bind(&s, "a");
    bind(&s, "b");
    assert!(matches!(
        bind_node(&s, prefix, "a", "not-a-key", vec![[5; 8]]),
        Err(ProvisionError::BadKey)
    ));
    assert_eq!(link(&s, "a"), None);
    bind_node(&s, prefix, "a", &key(1), vec![[5; 8]]).unwrap();
    let taken = bind_node(&s, prefix, "b", &key(1), vec![[6; 8]]);
    assert!(
        matches!(taken, Err(ProvisionError::KeyInUse(ref n)) if n == "a"),
        "{taken:?}"
    );
    assert_eq!(link(&s, "b"), None);
}

#[tokio::test]
async fn grpc_answers_as_sidero() {
    let (_d, s) = store();
    bind(&s, "node-1");
    let identity = Arc::new(Identity::generate([3; 64]));
    let api = ProvisionApi::new(s.clone(), identity.clone(), "10.0.0.1:51821".into());
    let req = |uuid: &str, key: &str| {
        tonic::Request::new(ProvisionRequest {
            node_uuid: uuid.into(),
            node_public_key: key.into(),
            ..Default::default()
        })
    };
    let e = api.provision(req("other", &key(1))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = api.provision(req("node-1", "AAAA")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let r = api
        .provision(req("node-1", &key(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.server_endpoint, vec!["10.0.0.1:51821".to_string()]);
    assert_eq!(r.server_public_key, identity.public_key_base64());
    assert_eq!(
        r.server_address,
        identity.prefix().server_address().to_string()
    );
    let addr = parse_node_address(&r.node_address_prefix, identity.prefix()).unwrap();
    assert_eq!(link(&s, "node-1").unwrap().address, r.node_address_prefix);
    assert_ne!(addr, identity.prefix().server_address());
    assert!(r.grpc_peer_addr_port.is_empty());
}

#[test]
fn the_index_follows_binding_removal_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let prefix = Prefix::derive("x");
    let a;
    {
        let s = Store::open(&path).unwrap();
        bind(&s, "a");
        bind(&s, "b");
        a = bind_node(&s, prefix, "a", &key(1), vec![[5; 8]]).unwrap();
    }
    // After a restart the collision check still sees a's address and key.
    let s = Store::open(&path).unwrap();
    assert!(matches!(
        bind_node(&s, prefix, "b", &key(2), vec![[5; 8]]),
        Err(ProvisionError::Allocate(_))
    ));
    assert!(matches!(
        bind_node(&s, prefix, "b", &key(1), vec![[6; 8]]),
        Err(ProvisionError::KeyInUse(ref n)) if n == "a"
    ));
    // a's binding goes (released): its address and key are free for b.
    s.delete(Kind::ServerBinding, "a").unwrap();
    assert_eq!(
        bind_node(&s, prefix, "b", &key(1), vec![[5; 8]]).unwrap(),
        a
    );
    // A binding written by an operator through apply is seen as well.
    bind(&s, "c");
    let mut held = match s.get(Kind::ServerBinding, "c").unwrap().unwrap().object {
        Object::ServerBinding(b) => b,
        _ => unreachable!(),
    };
    let taken = prefix.with_host(u64::from_be_bytes([8; 8]));
    held.spec.siderolink = Some(SideroLinkSpec {
        address: format_node_address(taken),
        public_key: key(9),
    });
    s.apply(vec![Object::ServerBinding(held)]).unwrap();
    bind(&s, "d");
    let d = bind_node(&s, prefix, "d", &key(4), vec![[8; 8], [7; 8]]).unwrap();
    assert_eq!(d, prefix.with_host(u64::from_be_bytes([7; 8])));
}

#[test]
fn concurrent_provisions_never_share_an_address() {
    let (_d, s) = store();
    let prefix = Prefix::derive("x");
    const NODES: u8 = 12;
    for n in 0..NODES {
        bind(&s, &format!("n{n}"));
    }
    // Every caller draws the same candidates: only the store's one writer, with the index
    // written in the binding's transaction, keeps them apart.
    let candidates: Vec<[u8; 8]> = (0..NODES).map(|i| [i + 10; 8]).collect();
    let barrier = Arc::new(std::sync::Barrier::new(usize::from(NODES)));
    let threads: Vec<_> = (0..NODES)
        .map(|n| {
            let (s, c, barrier) = (s.clone(), candidates.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                bind_node(&s, prefix, &format!("n{n}"), &key(n + 1), c).unwrap()
            })
        })
        .collect();
    let mut got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), usize::from(NODES), "{got:?}");
    for n in 0..NODES {
        let stored = link(&s, &format!("n{n}")).unwrap();
        let addr = parse_node_address(&stored.address, prefix).unwrap();
        assert!(got.contains(&addr));
    }
}
