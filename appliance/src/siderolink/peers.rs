//! Which WireGuard peers exist: one per ServerBinding whose `spec.siderolink` holds a key
//! and an address inside the overlay prefix (Sidero's `peers.go` informer). A task follows
//! the store's change feed and publishes the whole set on a watch channel (one reload for
//! all the changes queued while the last one ran); the endpoint
//! adds, replaces and removes peers to match it (added on Provision, removed when the
//! binding goes).
//!
//! One exception keeps a node whose binding went: while its Server is `released` (the box
//! waits for it to come back through PXE), the node's last session (`NodeRecord`, kept by
//! Provision) stays a peer, so that the reset without BMC (`reset`) can reach its machine
//! API through the session the node keeps alive. It goes once the server moves on (its
//! agent wipes it) or is allocated again.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::identity::parse_public_key;
use crate::model::{Kind, Object};
use crate::protocol::siderolink::address::{Prefix, parse_node_address};
use crate::reconcile::apply::server_state;
use crate::reconcile::lifecycle::Phase;
use crate::store::{Store, StoreError};

/// One node allowed into the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The Server / ServerBinding name (SMBIOS UUID).
    pub name: String,
    pub key: [u8; 32],
    /// Its only allowed inner source address.
    pub address: Ipv6Addr,
}

/// The peer set from the store's ServerBindings; unusable entries (bad key, address
/// outside `prefix`, a key or address already taken by an earlier binding) are skipped
/// with a warning.
pub fn load(store: &Store, prefix: Prefix) -> Result<Vec<PeerSpec>, StoreError> {
    load_with_records(store, prefix).map(|(peers, _)| peers)
}

/// [`load`], and the names of the servers with a kept session record (their Server
/// changes can change the set).
fn load_with_records(
    store: &Store,
    prefix: Prefix,
) -> Result<(Vec<PeerSpec>, HashSet<String>), StoreError> {
    let mut out = Vec::new();
    let mut bound = HashSet::new();
    let (mut keys, mut addrs) = (HashSet::new(), HashSet::new());
    for stored in store.list(Kind::ServerBinding)? {
        let Object::ServerBinding(b) = stored.object else {
            continue;
        };
        let Some(link) = &b.spec.siderolink else {
            continue;
        };
        let name = b.metadata.name.clone();
        bound.insert(name.clone());
        let (Ok(key), Ok(address)) = (
            parse_public_key(&link.public_key),
            parse_node_address(&link.address, prefix),
        ) else {
            tracing::warn!(server = %name, "ServerBinding spec.siderolink unusable; no SideroLink peer");
            continue;
        };
        let key = *key.as_bytes();
        if !keys.insert(key) || !addrs.insert(address) {
            tracing::warn!(server = %name, "SideroLink key or address also bound to another server; no peer");
            continue;
        }
        out.push(PeerSpec { name, key, address });
    }
    let mut recorded = HashSet::new();
    for (name, record) in store.siderolink_nodes()? {
        recorded.insert(name.clone());
        if bound.contains(&name) {
            continue;
        }
        let released = match store.get(Kind::Server, &name)? {
            Some(s) => match s.object {
                Object::Server(server) => server_state(&server).phase == Phase::Released,
                _ => false,
            },
            None => false,
        };
        if !released {
            continue;
        }
        let (Ok(key), Ok(address)) = (
            parse_public_key(&record.public_key),
            parse_node_address(&record.address, prefix),
        ) else {
            continue;
        };
        let key = *key.as_bytes();
        if keys.insert(key) && addrs.insert(address) {
            out.push(PeerSpec { name, key, address });
        }
    }
    Ok((out, recorded))
}

/// Follows the change feed and republishes the peer set after every ServerBinding change,
/// every change of a Server with a kept session (and after a lag), until `shutdown`.
pub async fn follow(
    store: Store,
    prefix: Prefix,
    tx: watch::Sender<Arc<Vec<PeerSpec>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = store.subscribe();
    let mut reload = true;
    let mut recorded = HashSet::new();
    loop {
        if reload {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || load_with_records(&s, prefix)).await {
                Ok(Ok((peers, names))) => {
                    recorded = names;
                    tx.send_if_modified(|cur| {
                        let changed = **cur != peers;
                        if changed {
                            *cur = Arc::new(peers);
                        }
                        changed
                    });
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %crate::error_chain(&e), "cannot read SideroLink peers")
                }
                Err(e) => tracing::error!(error = %e, "SideroLink peer load task failed"),
            }
        }
        let relevant = |c: &crate::store::Change| {
            c.kind == Kind::ServerBinding || (c.kind == Kind::Server && recorded.contains(&c.name))
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            c = changes.recv() => reload = match c {
                Ok(c) => relevant(&c),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        // One reload for every change already queued (a run of allocations or Provision
        // calls), not one each: each reload reads every binding.
        loop {
            match changes.try_recv() {
                Ok(c) => reload |= relevant(&c),
                Err(broadcast::error::TryRecvError::Lagged(_)) => reload = true,
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
    }
}
