//! A server's Talos log lines for the console's server page, live:
//! `GET /api/v1/servers/<name>/logs` (SSE, behind the session like the rest of `/api/v1`).
//! One `line` event per stored line (the newest `tail`, default 200, first, then each new
//! one as SideroLink's log book stores it), a keep-alive comment every 15 s; the stream
//! ends when the session does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::auth::SessionCtx;
use super::{ConsoleState, error};
use crate::clock;
use crate::store::{NodeLogQuery, NodeLogRecord};

/// Lines sent before following, unless `tail` says otherwise (at most `MAX_TAIL`).
const DEFAULT_TAIL: usize = 200;
const MAX_TAIL: usize = 5000;

#[derive(Debug, Deserialize)]
pub(super) struct LogsParams {
    tail: Option<usize>,
}

/// The JSON of one line: Sidero's keys (`msg`, `talos-time`, `talos-level`, the other
/// fields as sent) plus `server`, `address`, `seq` and `received` (ms since the epoch).
pub(super) fn line_json(r: &NodeLogRecord) -> serde_json::Value {
    let mut v = json!({
        "seq": r.seq,
        "received": r.time_ms,
        "server": r.server,
        "address": r.address,
        "msg": r.msg,
    });
    let o = v.as_object_mut().expect("object");
    if let Some(t) = &r.talos_time {
        o.insert("talos-time".into(), json!(t));
    }
    if let Some(l) = &r.talos_level {
        o.insert("talos-level".into(), json!(l));
    }
    for (k, val) in &r.fields {
        o.entry(k.clone()).or_insert_with(|| json!(val));
    }
    v
}

pub(super) async fn server_logs(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    Query(p): Query<LogsParams>,
    axum::Extension(s): axum::Extension<SessionCtx>,
) -> Response {
    if let Err(e) = crate::model::meta::validate_name(&name) {
        return error(StatusCode::BAD_REQUEST, format!("server name: {e}"));
    }
    let query = NodeLogQuery {
        limit: p.tail.unwrap_or(DEFAULT_TAIL).clamp(1, MAX_TAIL),
        ..Default::default()
    };
    let lines = match state.inner.logs.follow(&name, query).await {
        Ok(l) => l,
        Err(e) => return super::store_error(e),
    };
    let st = state.clone();
    let events = lines
        .take_while(move |_| {
            let live = st
                .inner
                .sessions
                .lock()
                .expect("sessions lock")
                .is_live(&s.id, clock::now());
            std::future::ready(live)
        })
        .filter_map(|r| {
            std::future::ready(match r {
                Ok(r) => Some(Ok::<_, Infallible>(
                    Event::default()
                        .event("line")
                        .id(r.seq.to_string())
                        .data(line_json(&r).to_string()),
                )),
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "console log tail: store read failed");
                    None
                }
            })
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
