//! `sidero.link.ProvisionService/Provision` on :8081, answering as Sidero does
//! (`SCM/internal/siderolink/server.go`): the node names itself by SMBIOS UUID and sends the
//! WireGuard public key it generated for this boot; only an allocated server (one with a
//! ServerBinding) gets an overlay address (else NOT_FOUND), and a key that is not a
//! WireGuard key is INVALID_ARGUMENT. The binding's `spec.siderolink.{address,publicKey}`
//! is written in one store transaction (with the node's session record, kept after the
//! binding goes for a reset without BMC); the WireGuard endpoint follows bindings through the
//! change feed, so the peer exists once the answer is sent.
//!
//! Differences from Sidero: a reused address must lie in the current overlay prefix, a new
//! one is checked against every other binding's (collision check), and a public key already
//! held by another binding is refused (FAILED_PRECONDITION), so one key never maps to two
//! nodes. Both checks are lookups in the store's SideroLink index (address / key → binding,
//! kept in the binding's transaction), so a call costs the same with 10 or 10,000 bindings.

use std::net::Ipv6Addr;
use std::sync::Arc;

use appliance_rpc::siderolink::provision_service_server::ProvisionService;
use appliance_rpc::siderolink::{ProvisionRequest, ProvisionResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tonic::{Request, Response, Status};

use super::identity::{Identity, parse_public_key};
use crate::model::{Kind, Object, SideroLinkSpec};
use crate::protocol::siderolink::address::{
    self, AllocateError, Prefix, format_node_address, parse_node_address,
};
use crate::store::NodeRecord;
use crate::store::{Store, StoreError};

/// The label CAPI puts on a Machine (copied to the binding) naming its cluster.
pub const CLUSTER_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// Random candidates drawn per Provision (a collision among 2^64 is already unlikely).
const CANDIDATES: usize = 16;

/// Why a Provision call got no address.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("server {0} is not allocated (no ServerBinding), so it gets no SideroLink")]
    NotAllocated(String),
    #[error("node_public_key is not a WireGuard key (32 bytes, standard base64)")]
    BadKey,
    #[error("this WireGuard public key is already used by server {0}")]
    KeyInUse(String),
    #[error("no free overlay address")]
    Allocate(#[from] AllocateError),
    #[error("store access failed")]
    Store(#[from] StoreError),
}

/// Binds `node_key` and an overlay address to the ServerBinding `node_uuid` in one store
/// transaction and returns the address. `candidates` are random 8-byte host parts.
pub fn bind_node(
    store: &Store,
    prefix: Prefix,
    node_uuid: &str,
    node_key: &str,
    candidates: Vec<[u8; 8]>,
) -> Result<Ipv6Addr, ProvisionError> {
    store.transact(|t| {
        let Some(stored) = t.get(Kind::ServerBinding, node_uuid)? else {
            return Err(ProvisionError::NotAllocated(node_uuid.to_string()));
        };
        let Object::ServerBinding(mut binding) = stored.object else {
            return Err(ProvisionError::NotAllocated(node_uuid.to_string()));
        };
        let key = parse_public_key(node_key).map_err(|_| ProvisionError::BadKey)?;
        let key = STANDARD.encode(key.as_bytes());
        if let Some(holder) = t
            .siderolink_key_holders(&key)?
            .into_iter()
            .find(|h| h != node_uuid)
        {
            return Err(ProvisionError::KeyInUse(holder));
        }
        // The collision check: two index lookups per candidate, no binding read
        // (`store/siderolink_index.rs`); the index is written in this transaction with the
        // binding, so concurrent calls (serialised by the store's one writer) see each
        // other's addresses.
        let mut lookup_error = None;
        let mut in_use = |a: Ipv6Addr| match t.siderolink_address_holders(a) {
            Ok(holders) => holders.iter().any(|h| h != node_uuid),
            Err(e) => {
                lookup_error.get_or_insert(e);
                true
            }
        };
        let reuse = binding
            .spec
            .siderolink
            .as_ref()
            .and_then(|l| parse_node_address(&l.address, prefix).ok())
            .filter(|a| !in_use(*a));
        let addr = match reuse {
            Some(a) => Ok(a),
            None => address::allocate(prefix, candidates, &mut in_use),
        };
        if let Some(e) = lookup_error {
            return Err(e.into());
        }
        let addr = addr?;
        let record = NodeRecord {
            address: format_node_address(addr),
            public_key: key.clone(),
            cluster: binding.metadata.labels.get(CLUSTER_LABEL).cloned(),
        };
        binding.spec.siderolink = Some(SideroLinkSpec {
            address: format_node_address(addr),
            public_key: key,
        });
        t.put(&Object::ServerBinding(binding))?;
        t.put_siderolink_node(node_uuid, &record)?;
        Ok(addr)
    })
}

/// The Provision gRPC service.
#[derive(Debug, Clone)]
pub struct ProvisionApi {
    store: Store,
    identity: Arc<Identity>,
    /// What `server_endpoint` says: the box's WireGuard "ip:port" as nodes reach it.
    endpoint: String,
}

impl ProvisionApi {
    pub fn new(store: Store, identity: Arc<Identity>, endpoint: String) -> ProvisionApi {
        ProvisionApi {
            store,
            identity,
            endpoint,
        }
    }
}

#[tonic::async_trait]
impl ProvisionService for ProvisionApi {
    async fn provision(
        &self,
        request: Request<ProvisionRequest>,
    ) -> Result<Response<ProvisionResponse>, Status> {
        let req = request.into_inner();
        let mut random = [0u8; 8 * CANDIDATES];
        getrandom::fill(&mut random).map_err(|e| Status::internal(e.to_string()))?;
        let candidates = random
            .chunks_exact(8)
            .map(|c| c.try_into().unwrap_or([0; 8]))
            .collect();
        let store = self.store.clone();
        let prefix = self.identity.prefix();
        let uuid = req.node_uuid.clone();
        let addr = tokio::task::spawn_blocking(move || {
            bind_node(&store, prefix, &uuid, &req.node_public_key, candidates)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                let msg = crate::error_chain(&e);
                return Err(match e {
                    ProvisionError::NotAllocated(_) => Status::not_found(msg),
                    ProvisionError::BadKey => Status::invalid_argument(msg),
                    ProvisionError::KeyInUse(_) => Status::failed_precondition(msg),
                    ProvisionError::Allocate(_) => Status::resource_exhausted(msg),
                    ProvisionError::Store(_) => {
                        tracing::error!(error = %msg, "SideroLink provision failed");
                        Status::internal(msg)
                    }
                });
            }
        };
        tracing::info!(server = %req.node_uuid, address = %addr, "SideroLink provisioned");
        Ok(Response::new(ProvisionResponse {
            server_endpoint: vec![self.endpoint.clone()],
            server_public_key: self.identity.public_key_base64(),
            node_address_prefix: format_node_address(addr),
            server_address: prefix.server_address().to_string(),
            grpc_peer_addr_port: String::new(),
        }))
    }
}

#[cfg(test)]
mod tests;
