//! The observe gRPC service (`appliance.observe.v1.Observe`), behind the admin token: a
//! server's Talos log lines from the SideroLink log book, read once or followed
//! (server-streaming; the client's hang-up ends the stream).

use std::pin::Pin;

use appliance_rpc::observe::observe_server::Observe;
use appliance_rpc::observe::{LogLine, LogsRequest};
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
}
