//! A server's boot timeline for the console's server page: `GET
//! /api/v1/servers/<name>/timeline` (JSON, behind the session like the rest of `/api/v1`):
//! the stored steps in the order they began (`crate::timeline::view`) and the durations
//! read from them. 404 when the box knows no such server and holds no timeline of it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ConsoleState, error};
use crate::model::Kind;
use crate::store::StoreError;
use crate::timeline::View;

/// The JSON the page renders.
pub(super) fn timeline_json(name: &str, v: &View) -> serde_json::Value {
    let events: Vec<serde_json::Value> = v
        .records
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "at": r.time_ms,
                "step": r.step,
                "outcome": r.outcome,
                "detail": r.detail,
                "bytes": r.bytes,
                "durationMs": r.duration_ms,
                "mac": r.mac,
                "ip": r.ip,
            })
        })
        .collect();
    json!({
        "server": name,
        "events": events,
        "timeToRegisteredMs": v.summary.time_to_registered_ms,
        "timeToInstalledMs": v.summary.time_to_installed_ms,
        "firstDiskBootAt": v.summary.first_disk_boot_ms,
    })
}

pub(super) async fn server_timeline(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = crate::model::meta::validate_name(&name) {
        return error(StatusCode::BAD_REQUEST, format!("server name: {e}"));
    }
    let store = state.inner.store.clone();
    let n = name.clone();
    let read = crate::store::blocking(move || {
        Ok::<_, StoreError>((
            store.get(Kind::Server, &n)?.is_some(),
            crate::timeline::view(&store, &n)?,
        ))
    })
    .await;
    match read {
        Ok(Ok((known, view))) => {
            if !known && view.records.is_empty() {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no server `{name}` and no timeline of it"),
                );
            }
            Json(timeline_json(&name, &view)).into_response()
        }
        Ok(Err(e)) => super::store_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
