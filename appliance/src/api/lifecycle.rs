//! The lifecycle gRPC service (`appliance.lifecycle.v1.Lifecycle`), behind the admin token:
//! allocate a server to an owner, release it, wipe an available one on demand, read
//! lifecycle events. Input is validated
//! before anything is written; each call is one store transaction (`reconcile::apply`).

use appliance_rpc::lifecycle::{
    AllocateReply, AllocateRequest, Event as PbEvent, EventsReply, EventsRequest, ReleaseReply,
    ReleaseRequest, WipeReply, WipeRequest, lifecycle_server::Lifecycle as LifecycleApi,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::agent::lifecycle_status;
use crate::model::Kind;
use crate::reconcile::Lifecycle;
use crate::reconcile::apply::{AllocateInput, ReleaseBy};

/// The lifecycle service.
#[derive(Debug, Clone)]
pub struct LifecycleService {
    lc: Lifecycle,
}

impl LifecycleService {
    pub fn new(lc: Lifecycle) -> Self {
        LifecycleService { lc }
    }
}

fn check_name(field: &str, s: &str) -> Result<(), Status> {
    crate::model::meta::validate_name(s)
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn check_owner(owner: &str) -> Result<(), Status> {
    if owner.is_empty()
        || owner.len() > 253
        || owner.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Status::invalid_argument(
            "owner must be 1-253 printable characters without spaces (e.g. a MetalMachine \"namespace/name\")",
        ));
    }
    Ok(())
}

/// Validates bootstrap data: empty, or YAML documents that are mappings.
pub fn check_bootstrap(text: &str) -> Result<(), Status> {
    use serde::Deserialize;
    for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let v = yaml_serde::Value::deserialize(de).map_err(|e| {
            Status::invalid_argument(format!(
                "bootstrap_data document {}: not valid YAML: {e}",
                i + 1
            ))
        })?;
        if !(v.is_mapping() || v.is_null()) {
            return Err(Status::invalid_argument(format!(
                "bootstrap_data document {} is not a mapping",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Parses config patches: empty, or a JSON array of RFC 6902 operation objects.
pub fn parse_patches(text: &str) -> Result<Vec<Value>, Status> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("config_patches: not JSON: {e}")))?;
    let ops = v.as_array().ok_or_else(|| {
        Status::invalid_argument("config_patches must be a JSON array of RFC 6902 operations")
    })?;
    for (i, op) in ops.iter().enumerate() {
        let ok =
            op.get("op").and_then(Value::as_str).is_some_and(|o| {
                matches!(o, "add" | "remove" | "replace" | "move" | "copy" | "test")
            }) && op.get("path").and_then(Value::as_str).is_some();
        if !ok {
            return Err(Status::invalid_argument(format!(
                "config_patches[{i}] needs `op` (add/remove/replace/move/copy/test) and `path`"
            )));
        }
    }
    Ok(ops.clone())
}

#[tonic::async_trait]
impl LifecycleApi for LifecycleService {
    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateReply>, Status> {
        let req = req.into_inner();
        check_owner(&req.owner)?;
        let (class, server) = match (req.server_class.is_empty(), req.server.is_empty()) {
            (false, true) => {
                check_name("server_class", &req.server_class)?;
                (Some(req.server_class.clone()), None)
            }
            (true, false) => {
                check_name("server", &req.server)?;
                (None, Some(req.server.clone()))
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of server_class and server",
                ));
            }
        };
        check_bootstrap(&req.bootstrap_data)?;
        let config_patches = parse_patches(&req.config_patches)?;
        let environment = if req.environment.is_empty() {
            None
        } else {
            check_name("environment", &req.environment)?;
            let store = self.lc.store().clone();
            let env = req.environment.clone();
            let exists = tokio::task::spawn_blocking(move || store.get(Kind::Environment, &env))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(crate::error_chain(&e)))?
                .is_some();
            if !exists {
                return Err(Status::invalid_argument(format!(
                    "environment `{}` does not exist",
                    req.environment
                )));
            }
            Some(req.environment.clone())
        };
        let a = self
            .lc
            .allocate(AllocateInput {
                server_class: class,
                server,
                owner: req.owner,
                bootstrap_data: req.bootstrap_data,
                config_patches,
                environment,
            })
            .await
            .map_err(lifecycle_status)?;
        Ok(Response::new(AllocateReply {
            server: a.outcome.server.metadata.name.clone(),
            server_class: a.record.server_class.unwrap_or_default(),
            environment: a.record.environment.unwrap_or_default(),
            revision: a.binding_revision,
        }))
    }

    async fn release(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseReply>, Status> {
        let req = req.into_inner();
        let by = match (req.owner.is_empty(), req.server.is_empty()) {
            (false, true) => {
                check_owner(&req.owner)?;
                ReleaseBy::Owner(req.owner)
            }
            (true, false) => {
                check_name("server", &req.server)?;
                ReleaseBy::Server(req.server)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of owner and server",
                ));
            }
        };
        let o = self.lc.release(by).await.map_err(lifecycle_status)?;
        let revision = self.lc.store().revision().unwrap_or(0);
        Ok(Response::new(ReleaseReply {
            server: o.server.metadata.name,
            revision,
        }))
    }

    async fn wipe(&self, req: Request<WipeRequest>) -> Result<Response<WipeReply>, Status> {
        let req = req.into_inner();
        check_name("server", &req.server)?;
        let o = self
            .lc
            .wipe(&req.server, "an operator")
            .await
            .map_err(lifecycle_status)?;
        let revision = self.lc.store().revision().unwrap_or(0);
        Ok(Response::new(WipeReply {
            server: o.server.metadata.name,
            state: o.step.next.phase.as_str().to_string(),
            revision,
        }))
    }

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<EventsReply>, Status> {
        let req = req.into_inner();
        if !req.name.is_empty() {
            check_name("name", &req.name)?;
        }
        let store = self.lc.store().clone();
        let events = tokio::task::spawn_blocking(move || {
            let name = (!req.name.is_empty()).then_some(req.name.as_str());
            store.events(name, req.limit as usize)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(crate::error_chain(&e)))?;
        Ok(Response::new(EventsReply {
            events: events
                .into_iter()
                .map(|e| PbEvent {
                    seq: e.seq,
                    time: crate::clock::rfc3339(e.time_ms),
                    server: e.server,
                    event: e.event,
                    from: e.from,
                    to: e.to,
                    message: e.message,
                })
                .collect(),
        }))
    }
}
