//! The Talos event sink, `events.EventSinkService/Publish`, served with tonic inside the
//! overlay on `[<prefix>::1]:4002` (connections from `endpoint` as `OverlayStream`s).
//!
//! The node is the connection's overlay address (already checked against the sending
//! peer's own address by the endpoint), mapped to its server through the peer set. Each
//! event is decoded from its `google.protobuf.Any` (`machine.*` type URLs), skipped if its
//! id was applied for that server before (Talos resends its backlog after a reconnect; the
//! ids are kept in the store with each event's effect, so also across a restart), mapped
//! with `protocol::siderolink::events::map_event`, and applied in ONE store transaction:
//! ServerBinding addresses/hostname/conditions and, when `TalosInstalled` turns True, the
//! lifecycle's `installed` transition (Server `PXEBooted=True`, so `/ipxe` boots from disk).
//! Undecodable or unknown events are acknowledged and dropped (an error would make Talos
//! resend the same event forever).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use appliance_rpc::events::event_sink_service_server::EventSinkService;
use appliance_rpc::events::{EventRequest, EventResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub use super::payload::{DecodeError, decode};
use super::peers::PeerSpec;
use super::stream::OverlayPeer;
use crate::clock::rfc3339;
use crate::model::{Condition, ConditionSeverity, ConditionStatus, Kind, Object};
use crate::protocol::siderolink::events::{
    BindingChange, ConditionChange, IpPrefix, RecentIds, Severity, map_event,
};
use crate::reconcile::apply::{self, Outcome};
use crate::reconcile::lifecycle::{Event, Phase};
use crate::reconcile::{Lifecycle, LifecycleError};
use crate::timeline::Recorder;
use crate::timeline::event::{self as timeline_event, Step, Who};

/// Event ids remembered per server (in memory and in the store).
const IDS_PER_NODE: usize = 1024;

/// Sets a CAPI condition from `change`; the transition time moves only when the status
/// flips (`conditions.Set`).
fn set_condition(conditions: &mut Vec<Condition>, change: &ConditionChange, now: &str) {
    let status = if change.status {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let new = Condition {
        type_: change.condition.as_str().to_string(),
        status,
        severity: change.severity.map(|s| match s {
            Severity::Error => ConditionSeverity::Error,
            Severity::Info => ConditionSeverity::Info,
        }),
        last_transition_time: now.to_string(),
        reason: change.reason.map(str::to_string),
        message: change.message.clone(),
    };
    Condition::set(conditions, new);
}

/// Applies `change` (of the event `id`) to ServerBinding `name` and, when it installs,
/// fires the lifecycle's `installed` on the Server; the id is remembered with it. One
/// transaction. Ok(None): nothing to dispatch.
pub fn apply_change(
    lc: &Lifecycle,
    name: &str,
    id: &str,
    change: &BindingChange,
    now_ms: u64,
) -> Result<Option<Outcome>, LifecycleError> {
    let ctx = lc.context(name);
    let now = rfc3339(now_ms);
    lc.store().transact(|t| {
        let Some(Object::ServerBinding(mut b)) =
            t.get(Kind::ServerBinding, name)?.map(|s| s.object)
        else {
            return Ok(None);
        };
        if let Some((addresses, hostname)) = &change.addresses {
            b.spec.addresses = addresses.clone();
            b.spec.hostname = (!hostname.is_empty()).then(|| hostname.clone());
        }
        let status = b.status.get_or_insert_with(Default::default);
        for c in &change.conditions {
            set_condition(&mut status.conditions, c, &now);
        }
        t.put(&Object::ServerBinding(b))?;
        if !id.is_empty() {
            t.remember_talos_event(name, id, IDS_PER_NODE as u64)?;
        }
        if !change.installs() {
            return Ok(None);
        }
        let Some(Object::Server(server)) = t.get(Kind::Server, name)?.map(|s| s.object) else {
            return Ok(None);
        };
        if !matches!(
            apply::server_state(&server).phase,
            Phase::Allocated | Phase::Booting
        ) {
            return Ok(None);
        }
        apply::transition_in(
            t,
            name,
            Event::Installed,
            &ctx,
            now_ms,
            "Talos reported the installation done (SideroLink)",
        )
        .map(Some)
    })
}

/// The EventSinkService.
#[derive(Clone)]
pub struct EventSink {
    lc: Lifecycle,
    peers: watch::Receiver<Arc<Vec<PeerSpec>>>,
    negative: Arc<Vec<IpPrefix>>,
    /// Applied event ids per server name; loaded from the store on a server's first event
    /// after a start.
    seen: Arc<Mutex<HashMap<String, RecentIds>>>,
    /// The boot timeline: the install done.
    timeline: Recorder,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").finish_non_exhaustive()
    }
}

impl EventSink {
    /// Whether event `id` of server `name` was applied before (since this start, or, read
    /// from the store, before it).
    async fn already_applied(&self, name: &str, id: &str) -> Result<bool, Status> {
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = seen.get(name) {
                return Ok(r.contains(id));
            }
        }
        let store = self.lc.store().clone();
        let n = name.to_string();
        let stored = tokio::task::spawn_blocking(move || store.talos_event_ids(&n))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(crate::error_chain(&e)))?;
        let mut recent = RecentIds::new(IDS_PER_NODE);
        for i in &stored {
            recent.first_time(i);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let peers = self.peers.borrow();
        if seen.len() > peers.len() * 2 + 16 {
            seen.retain(|n, _| peers.iter().any(|p| p.name == *n));
        }
        let r = seen.entry(name.to_string()).or_insert(recent);
        Ok(r.contains(id))
    }

    /// Remembers an applied event id in memory (the store has it already).
    fn remember(&self, name: &str, id: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.entry(name.to_string())
            .or_insert_with(|| RecentIds::new(IDS_PER_NODE))
            .first_time(id);
    }

    pub fn new(
        lc: Lifecycle,
        peers: watch::Receiver<Arc<Vec<PeerSpec>>>,
        negative: Vec<IpPrefix>,
    ) -> EventSink {
        EventSink {
            lc,
            peers,
            negative: Arc::new(negative),
            seen: Arc::new(Mutex::new(HashMap::new())),
            timeline: Recorder::off(),
        }
    }

    /// Records the installation in the boot timeline (`crate::timeline`).
    pub fn recording(mut self, timeline: Recorder) -> Self {
        self.timeline = timeline;
        self
    }
}

#[cfg(test)]
mod tests;

#[tonic::async_trait]
impl EventSinkService for EventSink {
    async fn publish(
        &self,
        request: Request<EventRequest>,
    ) -> Result<Response<EventResponse>, Status> {
        let Some(OverlayPeer(node)) = request.extensions().get::<OverlayPeer>().copied() else {
            return Err(Status::permission_denied(
                "events are only accepted inside SideroLink",
            ));
        };
        let Some(name) = self
            .peers
            .borrow()
            .iter()
            .find(|p| p.address == node)
            .map(|p| p.name.clone())
        else {
            return Err(Status::permission_denied(
                "no server holds this SideroLink address",
            ));
        };
        let req = request.into_inner();
        if self.already_applied(&name, &req.id).await? {
            tracing::debug!(server = %name, id = %req.id, "Talos event already applied");
            return Ok(Response::new(EventResponse {}));
        }
        let Some(any) = req.data else {
            return Ok(Response::new(EventResponse {}));
        };
        let event = match decode(&any) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(server = %name, error = %crate::error_chain(&e), "Talos event dropped");
                return Ok(Response::new(EventResponse {}));
            }
        };
        tracing::info!(server = %name, id = %req.id, event = ?event, "Talos event");
        let change = map_event(&event, node, &self.negative);
        if change.is_empty() {
            if !req.id.is_empty() {
                let store = self.lc.store().clone();
                let (n, id) = (name.clone(), req.id.clone());
                tokio::task::spawn_blocking(move || {
                    store.transact(|t| t.remember_talos_event(&n, &id, IDS_PER_NODE as u64))
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(crate::error_chain(&e)))?;
            }
            self.remember(&name, &req.id);
            return Ok(Response::new(EventResponse {}));
        }
        let lc = self.lc.clone();
        let n = name.clone();
        let id = req.id.clone();
        let now = crate::clock::unix_ms();
        let outcome = tokio::task::spawn_blocking(move || apply_change(&lc, &n, &id, &change, now))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match outcome {
            Ok(Some(o)) => {
                tracing::info!(server = %name, "Talos installed: server boots from disk from now on");
                self.timeline.record(
                    Who {
                        server: Some(name.clone()),
                        ..Default::default()
                    },
                    Step::Installed,
                    timeline_event::Outcome::Ok,
                    "Talos reported the installation done",
                );
                self.lc.dispatch_outcome(&o);
            }
            Ok(None) => {}
            Err(e) => {
                // Not acknowledged (and not remembered): Talos resends it.
                return Err(crate::api::agent::lifecycle_status(e));
            }
        }
        self.remember(&name, &req.id);
        Ok(Response::new(EventResponse {}))
    }
}
