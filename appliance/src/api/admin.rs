//! The admin gRPC service: status, apply/get/delete of objects, server actions, and the
//! `Watch` stream of committed changes (`watch.rs`). Get answers with the store revision it
//! read at, so a client can list and then watch from there.
//!
//! Parses and validates documents itself (so the CLI, console and bridge get the same
//! errors) and writes through `Store` on the blocking pool (redb commits fsync).

use std::collections::HashMap;
use std::time::Instant;

use appliance_rpc::admin::{
    self as pb, ApplyReply, ApplyRequest, DeleteReply, DeleteRequest, GetReply, GetRequest,
    ServerActionKind, ServerActionReply, ServerActionRequest, StatusReply, StatusRequest,
    admin_server::Admin,
};
use tonic::{Request, Response, Status};

use super::apply_batch::ApplyBatcher;
use super::watch::{WatchStream, Watches};
use crate::clock;
use crate::model::{self, Kind};
use crate::store::{Store, StoreError, Stored};

/// State of the admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    store: Store,
    applies: ApplyBatcher,
    started: Instant,
    data_dir: String,
    /// Server actions (accept/cordon/uncordon) go through the lifecycle state machine: one
    /// transaction with its event; illegal actions are refused with the reason.
    lifecycle: crate::reconcile::Lifecycle,
    /// `Watch` streams over the store's change log.
    watches: Watches,
}

impl AdminService {
    /// `applies` is the group-commit handle whose task `app.rs` runs.
    pub fn new(
        store: Store,
        data_dir: String,
        lifecycle: crate::reconcile::Lifecycle,
        applies: ApplyBatcher,
        watches: Watches,
    ) -> Self {
        AdminService {
            applies,
            watches,
            store,
            started: clock::now(),
            data_dir,
            lifecycle,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        crate::store::blocking(move || f(store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(store_status)
    }

    /// Checks a talosconfig (the context and its CA, client certificate and key) and stores
    /// it sealed for `cluster` (empty = `default`); returns (cluster, context). Shared by
    /// `ctl talosconfig set` and the console. The content is never logged nor returned.
    pub async fn set_talosconfig(
        &self,
        cluster: &str,
        talosconfig: Vec<u8>,
    ) -> Result<(String, String), Status> {
        let cluster = talosconfig_cluster(cluster)?;
        let parsed = crate::siderolink::talosconfig::Talosconfig::parse(&talosconfig)
            .map_err(|e| Status::invalid_argument(crate::error_chain(&e)))?;
        let c = cluster.clone();
        self.blocking(move |s| s.set_talosconfig(&c, &talosconfig))
            .await?;
        tracing::info!(cluster = %cluster, context = %parsed.context, "talosconfig stored");
        Ok((cluster, parsed.context))
    }

    /// The clusters with a talosconfig.
    pub async fn talosconfig_clusters(&self) -> Result<Vec<String>, Status> {
        self.blocking(|s| s.talosconfig_clusters()).await
    }
}

/// A talosconfig's cluster name: a Kubernetes label value (empty = `default`).
fn talosconfig_cluster(cluster: &str) -> Result<String, Status> {
    let cluster = if cluster.is_empty() {
        crate::siderolink::reset::DEFAULT_CLUSTER
    } else {
        cluster
    };
    let ok = cluster.len() <= 63
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && cluster.as_bytes()[0].is_ascii_alphanumeric()
        && cluster.as_bytes()[cluster.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(Status::invalid_argument(format!(
            "cluster name {cluster:?} is not a Kubernetes label value (letters, digits, '-', '_', '.'; at most 63)"
        )));
    }
    Ok(cluster.to_string())
}

pub(super) fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::Rejected { .. } => Status::failed_precondition(e.to_string()),
        _ => {
            tracing::error!(error = %crate::error_chain(&e), "store failure");
            Status::internal(crate::error_chain(&e))
        }
    }
}

pub(super) fn parse_kind(s: &str) -> Result<Kind, Status> {
    Kind::parse_cli(s).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown kind `{s}` (expected server, serverclass, environment, metalmachine or serverbinding)"
        ))
    })
}

fn to_pb(s: Stored) -> pb::Object {
    // Inline BMC passwords never leave the box (bmc room).
    let mut object = s.object;
    crate::store::redact_secrets(&mut object);
    pb::Object {
        kind: object.kind().to_string(),
        name: object.name().to_string(),
        json: object.to_json(),
        revision: s.revision,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let (counts, revision) = self.blocking(|s| Ok((s.counts()?, s.revision()?))).await?;
        Ok(Response::new(StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            objects: counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<HashMap<_, _>>(),
            store_revision: revision,
            data_dir: self.data_dir.clone(),
        }))
    }

    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        let req = req.into_inner();
        let objects = model::parse_documents(&req.documents)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if objects.is_empty() {
            return Err(Status::invalid_argument(
                "no objects in the given documents",
            ));
        }
        if req.dry_run {
            let applied = objects
                .iter()
                .map(|o| pb::AppliedObject {
                    kind: o.kind().to_string(),
                    name: o.name().to_string(),
                    result: "valid (dry run)".into(),
                    revision: 0,
                })
                .collect();
            return Ok(Response::new(ApplyReply { applied }));
        }
        let applied = self.applies.apply(objects).await?;
        Ok(Response::new(ApplyReply {
            applied: applied
                .into_iter()
                .map(|a| pb::AppliedObject {
                    kind: a.kind.to_string(),
                    name: a.name,
                    result: a.result.as_str().into(),
                    revision: a.revision,
                })
                .collect(),
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let req = req.into_inner();
        let kind = parse_kind(&req.kind)?;
        let (objects, revision) = if req.name.is_empty() {
            self.blocking(move |s| s.list_at(kind)).await?
        } else {
            let name = req.name.clone();
            let (found, revision) = self.blocking(move |s| s.get_at(kind, &name)).await?;
            let found = found
                .ok_or_else(|| Status::not_found(format!("{kind} `{}` not found", req.name)))?;
            (vec![found], revision)
        };
        Ok(Response::new(GetReply {
            objects: objects.into_iter().map(to_pb).collect(),
            revision,
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteReply>, Status> {
        let req = req.into_inner();
        let kind = parse_kind(&req.kind)?;
        let revision = self.blocking(move |s| s.delete(kind, &req.name)).await?;
        Ok(Response::new(DeleteReply { revision }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(self.watches.open(req.into_inner()).await?))
    }

    async fn set_talosconfig(
        &self,
        req: Request<pb::SetTalosconfigRequest>,
    ) -> Result<Response<pb::SetTalosconfigReply>, Status> {
        let req = req.into_inner();
        let (cluster, context) =
            AdminService::set_talosconfig(self, &req.cluster, req.talosconfig).await?;
        Ok(Response::new(pb::SetTalosconfigReply { cluster, context }))
    }

    async fn list_talosconfigs(
        &self,
        _: Request<pb::ListTalosconfigsRequest>,
    ) -> Result<Response<pb::ListTalosconfigsReply>, Status> {
        Ok(Response::new(pb::ListTalosconfigsReply {
            clusters: self.talosconfig_clusters().await?,
        }))
    }

    async fn delete_talosconfig(
        &self,
        req: Request<pb::DeleteTalosconfigRequest>,
    ) -> Result<Response<pb::DeleteTalosconfigReply>, Status> {
        let cluster = talosconfig_cluster(&req.into_inner().cluster)?;
        let c = cluster.clone();
        if !self.blocking(move |s| s.delete_talosconfig(&c)).await? {
            return Err(Status::not_found(format!(
                "cluster `{cluster}` has no talosconfig"
            )));
        }
        tracing::info!(cluster = %cluster, "talosconfig removed");
        Ok(Response::new(pb::DeleteTalosconfigReply {}))
    }

    async fn server_action(
        &self,
        req: Request<ServerActionRequest>,
    ) -> Result<Response<ServerActionReply>, Status> {
        let req = req.into_inner();
        let action = ServerActionKind::try_from(req.action)
            .ok()
            .filter(|a| *a != ServerActionKind::ServerActionUnspecified)
            .ok_or_else(|| Status::invalid_argument(format!("unknown action {}", req.action)))?;
        use crate::reconcile::lifecycle::Event;
        if action == ServerActionKind::ServerActionRekey {
            let name = req.name.clone();
            let now = crate::clock::unix_ms();
            let store = self.lifecycle.store().clone();
            crate::store::blocking(move || {
                crate::reconcile::apply::rekey(&store, &name, "operator", now)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(super::agent::lifecycle_status)?;
        }
        let event = match action {
            ServerActionKind::ServerActionRekey => None,
            ServerActionKind::ServerActionAccept => Some(Event::Accept),
            ServerActionKind::ServerActionCordon => Some(Event::Cordon),
            ServerActionKind::ServerActionUncordon => Some(Event::Uncordon),
            ServerActionKind::ServerActionUnspecified => {
                return Err(Status::invalid_argument("no action given"));
            }
        };
        if let Some(event) = event {
            self.lifecycle
                .fire(&req.name, event, "operator action")
                .await
                .map_err(super::agent::lifecycle_status)?;
        }
        let name = req.name.clone();
        let stored = self
            .blocking(move |s| s.get(Kind::Server, &name))
            .await?
            .ok_or_else(|| Status::not_found(format!("server `{}` not found", req.name)))?;
        Ok(Response::new(ServerActionReply {
            server: Some(to_pb(stored)),
        }))
    }
}
