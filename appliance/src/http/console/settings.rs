//! The settings page (`GET /api/v1/settings`): the effective config and DHCP pool usage,
//! read-only (settings come from the config file, flags and environment).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{ConsoleState, blocking};
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
