//! The settings page (`GET /api/v1/settings`): the effective config and DHCP pool usage,
//! read-only (settings come from the config file, flags and environment). And the Talos
//! credentials for resets without BMC (`GET`/`POST /api/v1/talosconfig`): the clusters
//! that have one (names only) and the form that stores one through the admin service
//! (checked, sealed, never shown back).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{ConsoleState, blocking, status_error};
use crate::console::view;

pub(super) async fn settings(State(state): State<ConsoleState>) -> Response {
    let leases = match blocking(&state, |st| st.inner.store.dhcp_leases()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    Json(view::settings(
        &state.inner.config,
        &leases,
        crate::clock::unix_secs(),
    ))
    .into_response()
}

/// `POST /api/v1/talosconfig` body.
#[derive(Debug, serde::Deserialize)]
pub(super) struct SetTalosconfig {
    #[serde(default)]
    cluster: String,
    talosconfig: String,
}

pub(super) async fn talosconfigs(State(state): State<ConsoleState>) -> Response {
    match state.inner.admin.talosconfig_clusters().await {
        Ok(clusters) => Json(serde_json::json!({ "clusters": clusters })).into_response(),
        Err(s) => status_error(s),
    }
}

pub(super) async fn set_talosconfig(
    State(state): State<ConsoleState>,
    Json(body): Json<SetTalosconfig>,
) -> Response {
    match state
        .inner
        .admin
        .set_talosconfig(&body.cluster, body.talosconfig.into_bytes())
        .await
    {
        Ok((cluster, context)) => {
            Json(serde_json::json!({ "cluster": cluster, "context": context })).into_response()
        }
        Err(s) => status_error(s),
    }
}
