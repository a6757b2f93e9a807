//! ServerClass and Environment objects in the console: list, read, create and replace as
//! YAML (checked here for the editor's sake: one document, the editor's kind, no rename; then
//! applied through the admin service, which validates as `appliance ctl apply` does), and
//! delete. Validation errors answer 422 with the field and the editor line.

use appliance_rpc::admin::ApplyRequest;
use appliance_rpc::admin::admin_server::Admin;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::servers::delete_kind;
use super::{ConsoleState, blocking, error, status_error};
use crate::console::{locate, view};
use crate::model::{self, Kind, ParseObjectError};

/// The kinds editable as YAML in the console, by their URL segment.
fn editable_kind(segment: &str) -> Option<Kind> {
    match segment {
        "serverclasses" => Some(Kind::ServerClass),
        "environments" => Some(Kind::Environment),
        _ => None,
    }
}

fn unknown_collection(segment: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no console API collection `{segment}` (serverclasses, environments)"),
    )
}

pub(super) async fn list_objects(
    State(state): State<ConsoleState>,
    Path(seg): Path<String>,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    match blocking(&state, move |st| st.inner.store.list(kind)).await {
        Ok(list) => Json(json!({
            "items": list.iter().map(|s| view::object_summary(kind, &s.object, s.revision)).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

pub(super) async fn get_object(
    State(state): State<ConsoleState>,
    Path((seg, name)): Path<(String, String)>,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    let n = name.clone();
    match blocking(&state, move |st| st.inner.store.get(kind, &n)).await {
        Ok(Some(s)) => Json(json!({
            "summary": view::object_summary(kind, &s.object, s.revision),
            "object": s.object,
            "yaml": s.object.to_yaml(),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("{kind} `{name}` not found")),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct YamlBody {
    yaml: String,
}

/// A validation error with where it is: the field path and the editor line.
fn invalid(yaml: &str, e: &ParseObjectError) -> Response {
    let at = locate::error_at(yaml, e);
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": e.to_string(),
            "field": at.field,
            "message": at.message,
            "line": at.line,
        })),
    )
        .into_response()
}

async fn write_yaml(
    state: &ConsoleState,
    kind: Kind,
    expected_name: Option<&str>,
    body: &str,
) -> Response {
    let Ok(YamlBody { yaml }) = serde_json::from_str::<YamlBody>(body) else {
        return error(StatusCode::BAD_REQUEST, "send {\"yaml\": \"...\"}");
    };
    if yaml.len() > model::MAX_APPLY_BYTES {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "YAML larger than 1 MiB");
    }
    let objects = match model::parse_documents(&yaml) {
        Ok(o) => o,
        Err(e) => return invalid(&yaml, &e),
    };
    let [object] = objects.as_slice() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "expected exactly one {kind} document, found {}",
                objects.len()
            ),
        );
    };
    if object.kind() != kind {
        let line = locate::locate(&yaml, &[locate::Segment::Key("kind".into())]);
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!("this editor holds a {kind}, not a {}", object.kind()),
                "field": "kind",
                "message": format!("must be {kind}"),
                "line": line,
            })),
        )
            .into_response();
    }
    if let Some(name) = expected_name
        && object.name() != name
    {
        let line = locate::locate(&yaml, &locate::parse_path("metadata.name"));
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!("metadata.name is `{}`, but this is `{name}`; renaming is not supported (create a new one instead)", object.name()),
                "field": "metadata.name",
                "message": format!("must stay `{name}`"),
                "line": line,
            })),
        )
            .into_response();
    }
    let name = object.name().to_string();
    let req = tonic::Request::new(ApplyRequest {
        documents: yaml,
        dry_run: false,
    });
    match state.inner.admin.apply(req).await {
        Ok(reply) => {
            let applied = reply.into_inner().applied;
            let result = applied
                .first()
                .map(|a| a.result.clone())
                .unwrap_or_default();
            Json(json!({ "ok": true, "name": name, "result": result })).into_response()
        }
        Err(s) => status_error(s),
    }
}

pub(super) async fn put_object(
    State(state): State<ConsoleState>,
    Path((seg, name)): Path<(String, String)>,
    body: String,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    let n = name.clone();
    match blocking(&state, move |st| st.inner.store.get(kind, &n)).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("{kind} `{name}` not found")),
        Err(r) => return r,
    }
    write_yaml(&state, kind, Some(&name), &body).await
}

pub(super) async fn create_object(
    State(state): State<ConsoleState>,
    Path(seg): Path<String>,
    body: String,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    write_yaml(&state, kind, None, &body).await
}

pub(super) async fn delete_object(
    State(state): State<ConsoleState>,
    Path((seg, name)): Path<(String, String)>,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    delete_kind(&state, kind, name).await
}
