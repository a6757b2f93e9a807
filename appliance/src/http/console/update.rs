//! The box's system status and the update upload, behind the console session:
//!
//! - `GET /api/v1/system`: running version (binary and image), booted slot, the other
//!   slot, whether the box takes updates, the last update's outcome.
//! - `POST /api/v1/update` (body: the bundle): stored in `<data_dir>/update/bundle`,
//!   checked in full with the box's update key (a bad bundle is answered 400 with the
//!   reason and left nowhere), then `update/request` is created for the privileged path
//!   (`appliance-update.path` → `appliance-update.service`), which checks it again, writes
//!   the other slot and reboots. This process never writes a slot itself.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{ConsoleState, error};
use crate::update::install::{self, Layout};

fn request_dir(state: &ConsoleState) -> std::path::PathBuf {
    state.inner.config.data_dir.join(crate::update::REQUEST_DIR)
}

pub(super) async fn system(State(state): State<ConsoleState>) -> Response {
    let dir = request_dir(&state);
    let key = state.inner.config.update.public_key.clone();
    let st = tokio::task::spawn_blocking(move || {
        let st = install::status(&Layout::default());
        let last = std::fs::read_to_string(dir.join("result")).ok();
        let pending = dir.join("request").exists();
        (st, last, pending, key.is_file())
    })
    .await;
    let Ok((st, last, pending, takes_updates)) = st else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "status task failed");
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "image_version": st.image_version,
        "slot": st.booted.map(|s| s.to_string()),
        "other_slot": st.booted.map(|s| s.other().to_string()),
        "updates": takes_updates,
        "update_pending": pending,
        "last_update": last.map(|l| l.trim().to_string()),
    }))
    .into_response()
}

pub(super) async fn upload(State(state): State<ConsoleState>, req: Request) -> Response {
    let cfg = &state.inner.config.update;
    let key = match tokio::task::spawn_blocking({
        let p = cfg.public_key.clone();
        move || install::read_public_key(&p)
    })
    .await
    {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this box takes no updates: {}", crate::error_chain(&e)),
            );
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "key task failed"),
    };
    let dir = request_dir(&state);
    if dir.join("request").exists() {
        return error(StatusCode::CONFLICT, "an update is already being applied");
    }
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", dir.display()),
        );
    }
    let part = dir.join("bundle.part");
    let max = cfg.max_bundle_mib << 20;
    if let Err(r) = receive(req, &part, max).await {
        let _ = tokio::fs::remove_file(&part).await;
        return r;
    }
    let checked = tokio::task::spawn_blocking({
        let part = part.clone();
        move || install::verify_file(&part, &key, std::env::consts::ARCH)
    })
    .await;
    let manifest = match checked {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&part).await;
            tracing::warn!(error = %crate::error_chain(&e), "update bundle refused");
            return error(StatusCode::BAD_REQUEST, crate::error_chain(&e));
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "verify task failed"),
    };
    let bundle = dir.join("bundle");
    let request = dir.join("request");
    let _ = tokio::fs::remove_file(dir.join("result")).await;
    if let Err(e) = tokio::fs::rename(&part, &bundle).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", bundle.display()),
        );
    }
    if let Err(e) = tokio::fs::write(&request, manifest.version.as_bytes()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", request.display()),
        );
    }
    tracing::info!(version = %manifest.version, "update bundle accepted; the box writes the other slot and reboots");
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "version": manifest.version,
            "message": "bundle verified; the box writes the other slot and reboots into it",
        })),
    )
        .into_response()
}

/// Streams the request body into `path` (0600), at most `max` bytes.
async fn receive(req: Request, path: &std::path::Path, max: u64) -> Result<(), Response> {
    use tokio_stream::StreamExt;
    let internal = |e: std::io::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", path.display()),
        )
    };
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(internal)?;
    let mut body = req.into_body().into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| error(StatusCode::BAD_REQUEST, format!("upload broke off: {e}")))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "bundle larger than [update] max_bundle_mib ({} MiB)",
                    max >> 20
                ),
            ));
        }
        f.write_all(&chunk).await.map_err(internal)?;
    }
    f.sync_all().await.map_err(internal)?;
    Ok(())
}
