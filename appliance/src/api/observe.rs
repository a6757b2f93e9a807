//! The observe gRPC service (`appliance.observe.v1.Observe`), behind the admin token: a
//! server's Talos log lines from the SideroLink log book, read once or followed
//! (server-streaming; the client's hang-up ends the stream), and its boot timeline
//! (`crate::timeline`).

use std::pin::Pin;

use appliance_rpc::observe::observe_server::Observe;
use appliance_rpc::observe::{LogLine, LogsRequest, TimelineEvent, TimelineReply, TimelineRequest};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::model::Kind;
use crate::siderolink::logbook::LogBook;
use crate::store::{NodeLogQuery, NodeLogRecord, StoreError};

/// The observe service.
#[derive(Debug, Clone)]
pub struct ObserveService {
    logs: LogBook,
}

impl ObserveService {
    pub fn new(logs: LogBook) -> Self {
        ObserveService { logs }
    }
}

fn store_status(e: StoreError) -> Status {
    Status::internal(crate::error_chain(&e))
}

/// A stored line on the wire.
pub fn to_wire(r: NodeLogRecord) -> LogLine {
    LogLine {
        seq: r.seq,
        received_unix_ms: r.time_ms,
        server: r.server,
        address: r.address,
        msg: r.msg,
        talos_time: r.talos_time.unwrap_or_default(),
        talos_level: r.talos_level.unwrap_or_default(),
        fields: r.fields.into_iter().collect(),
    }
}

/// A server's timeline on the wire.
pub fn timeline_to_wire(server: &str, v: crate::timeline::View) -> TimelineReply {
    TimelineReply {
        server: server.to_string(),
        events: v
            .records
            .into_iter()
            .map(|r| TimelineEvent {
                seq: r.seq,
                time_unix_ms: r.time_ms,
                step: r.step,
                outcome: r.outcome,
                detail: r.detail,
                bytes: r.bytes,
                duration_ms: r.duration_ms,
                mac: r.mac.unwrap_or_default(),
                ip: r.ip.unwrap_or_default(),
            })
            .collect(),
        time_to_registered_ms: v.summary.time_to_registered_ms,
        time_to_installed_ms: v.summary.time_to_installed_ms,
        first_disk_boot_unix_ms: v.summary.first_disk_boot_ms,
    }
}

type LineStream = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

#[tonic::async_trait]
impl Observe for ObserveService {
    type LogsStream = LineStream;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LineStream>, Status> {
        let req = req.into_inner();
        crate::model::meta::validate_name(&req.server)
            .map_err(|e| Status::invalid_argument(format!("server: {e}")))?;
        let query = NodeLogQuery {
            after_seq: 0,
            since_ms: req.since_unix_ms,
            limit: req.tail as usize,
        };
        let store = self.logs.store().clone();
        let name = req.server.clone();
        let known = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>(
                store.get(Kind::Server, &name)?.is_some() || store.node_log_count(&name)? > 0,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        if !known {
            return Err(Status::not_found(format!(
                "no server `{}` and no log lines of it",
                req.server
            )));
        }
        let stream: LineStream = if req.follow {
            let lines = self
                .logs
                .follow(&req.server, query)
                .await
                .map_err(store_status)?;
            Box::pin(lines.map(|r| r.map(to_wire).map_err(store_status)))
        } else {
            let lines = self
                .logs
                .read(&req.server, query)
                .await
                .map_err(store_status)?;
            Box::pin(futures_util::stream::iter(
                lines.into_iter().map(|r| Ok(to_wire(r))),
            ))
        };
        Ok(Response::new(stream))
    }

    async fn timeline(
        &self,
        req: Request<TimelineRequest>,
    ) -> Result<Response<TimelineReply>, Status> {
        let name = req.into_inner().server;
        crate::model::meta::validate_name(&name)
            .map_err(|e| Status::invalid_argument(format!("server: {e}")))?;
        let store = self.logs.store().clone();
        let n = name.clone();
        let (known, view) = crate::store::blocking(move || {
            Ok::<_, StoreError>((
                store.get(Kind::Server, &n)?.is_some(),
                crate::timeline::view(&store, &n)?,
            ))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        if !known && view.records.is_empty() {
            return Err(Status::not_found(format!(
                "no server `{name}` and no timeline of it"
            )));
        }
        Ok(Response::new(timeline_to_wire(&name, view)))
    }
}
