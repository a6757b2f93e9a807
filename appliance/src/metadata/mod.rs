//! The metadata service: `GET /configdata?uuid=<uuid>` serves a server's machine config
//! (bootstrap data of its allocation with ServerClass, then Server, then allocation config
//! patches applied, as Sidero does; each layer's RFC 6902 `configPatches`, then its Talos
//! `strategicPatches`).

pub mod patch;
pub mod strategic;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::model::{Kind, Object, Server, ServerClass};
use crate::store::{AllocationRecord, Store, StoreError};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// The label Sidero adds to the kubelet so the node can be matched to its Server.
pub const UUID_LABEL: &str = "metal.sidero.dev/uuid";

/// Why no config could be served.
#[derive(Debug, thiserror::Error)]
pub enum RenderConfigError {
    #[error("missing `uuid` query parameter")]
    NoUuid,
    #[error("server {0} not found")]
    UnknownServer(String),
    #[error("server is not allocated")]
    NotAllocated,
    #[error("the allocation of server {0} has no bootstrap data (machine config)")]
    NoBootstrapData(String),
    #[error("bootstrap data of server {server} is not valid YAML: {message}")]
    BadBootstrap { server: String, message: String },
    #[error("unknown config type: no `version: v1alpha1` document in the bootstrap data")]
    UnknownConfigType,
    #[error("{source_name} configPatches cannot be applied")]
    Patch {
        source_name: String,
        #[source]
        source: patch::ApplyPatchError,
    },
    #[error("{source_name} strategicPatches[{index}] cannot be applied")]
    Strategic {
        source_name: String,
        index: usize,
        #[source]
        source: strategic::StrategicPatchError,
    },
    #[error("store")]
    Store(#[from] StoreError),
}

impl RenderConfigError {
    fn status(&self) -> StatusCode {
        match self {
            RenderConfigError::NoUuid => StatusCode::BAD_REQUEST,
            RenderConfigError::UnknownServer(_)
            | RenderConfigError::NotAllocated
            | RenderConfigError::NoBootstrapData(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A layer's RFC 6902 patches (one JSON array) and its strategic-merge patch texts.
fn patches_of(spec: &impl serde::Serialize) -> (Value, Vec<String>) {
    let v = serde_json::to_value(spec).unwrap_or(Value::Null);
    let patches = v
        .get("configPatches")
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    let strategic = v
        .get("strategicPatches")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    (patches, strategic)
}

/// Assembles the machine config, as Sidero's metadata server does: the allocation's
/// bootstrap data (YAML) converted to JSON documents; the ServerClass's RFC 6902 patches
/// applied to the `version: v1alpha1` document, then its strategic patches to the whole
/// config; the same for the Server; then the allocation's RFC 6902 patches; the
/// kubelet gets the `metal.sidero.dev/uuid=<uuid>` node label; back to YAML. Pure.
pub fn render(
    server: &Server,
    class: Option<&ServerClass>,
    alloc: &AllocationRecord,
) -> Result<String, RenderConfigError> {
    use serde::Deserialize as _;
    let name = server.metadata.name.clone();
    if alloc.bootstrap_data.trim().is_empty() {
        return Err(RenderConfigError::NoBootstrapData(name));
    }
    let mut docs: Vec<Value> = Vec::new();
    for de in yaml_serde::Deserializer::from_str(&alloc.bootstrap_data) {
        let v = Value::deserialize(de).map_err(|e| RenderConfigError::BadBootstrap {
            server: name.clone(),
            message: e.to_string(),
        })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let v1alpha1 = |docs: &[Value]| {
        docs.iter()
            .position(|d| d.get("version").and_then(Value::as_str) == Some("v1alpha1"))
            .ok_or(RenderConfigError::UnknownConfigType)
    };
    v1alpha1(&docs)?;
    let mut layers: Vec<(String, Value, Vec<String>)> = Vec::new();
    if let Some(c) = class {
        let (p, s) = patches_of(&c.spec);
        layers.push((format!("ServerClass {}", c.metadata.name), p, s));
    }
    let (p, s) = patches_of(&server.spec);
    layers.push((format!("Server {name}"), p, s));
    layers.push((
        format!("allocation of {name}"),
        Value::Array(alloc.config_patches.clone()),
        Vec::new(),
    ));
    for (source_name, patches, strategic) in layers {
        let idx = v1alpha1(&docs)?;
        docs[idx] =
            patch::apply(&docs[idx], &patches).map_err(|source| RenderConfigError::Patch {
                source_name: source_name.clone(),
                source,
            })?;
        for (index, text) in strategic.iter().enumerate() {
            docs =
                strategic::apply(&docs, text).map_err(|source| RenderConfigError::Strategic {
                    source_name: source_name.clone(),
                    index,
                    source,
                })?;
        }
    }
    let idx = v1alpha1(&docs)?;
    add_node_label(&mut docs[idx], &name);
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&yaml_serde::to_string(d).expect("JSON values serialise as YAML"));
    }
    Ok(out)
}

/// `machine.kubelet.extraArgs["node-labels"]` gets `metal.sidero.dev/uuid=<uuid>`
/// (comma-appended), creating the path as needed.
fn add_node_label(doc: &mut Value, uuid: &str) {
    let label = format!("{UUID_LABEL}={uuid}");
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    let obj = |v: &mut Value| {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
    };
    let machine = root
        .entry("machine")
        .or_insert_with(|| Value::Object(Default::default()));
    obj(machine);
    let kubelet = machine
        .as_object_mut()
        .expect("object")
        .entry("kubelet")
        .or_insert_with(|| Value::Object(Default::default()));
    obj(kubelet);
    let extra = kubelet
        .as_object_mut()
        .expect("object")
        .entry("extraArgs")
        .or_insert_with(|| Value::Object(Default::default()));
    obj(extra);
    let extra = extra.as_object_mut().expect("object");
    let labels = match extra.get("node-labels").and_then(Value::as_str) {
        Some(existing) if !existing.is_empty() => {
            if existing.split(',').any(|l| l == label) {
                existing.to_string()
            } else {
                format!("{existing},{label}")
            }
        }
        _ => label,
    };
    extra.insert("node-labels".into(), Value::String(labels));
}

/// Reads what `render` needs from the store and renders.
pub fn config_for(store: &Store, uuid: &str) -> Result<String, RenderConfigError> {
    let uuid = uuid.trim().to_ascii_lowercase();
    if uuid.is_empty() {
        return Err(RenderConfigError::NoUuid);
    }
    let server = match store.get(Kind::Server, &uuid)?.map(|s| s.object) {
        Some(Object::Server(s)) => s,
        _ => return Err(RenderConfigError::UnknownServer(uuid)),
    };
    if store.get(Kind::ServerBinding, &uuid)?.is_none() {
        return Err(RenderConfigError::NotAllocated);
    }
    let alloc = store
        .allocation(&uuid)?
        .ok_or(RenderConfigError::NoBootstrapData(uuid.clone()))?;
    let class = match &alloc.server_class {
        Some(c) => match store.get(Kind::ServerClass, c)?.map(|s| s.object) {
            Some(Object::ServerClass(c)) => Some(c),
            _ => None,
        },
        None => None,
    };
    render(&server, class.as_ref(), &alloc)
}

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    uuid: Option<String>,
}

async fn configdata(
    State((store, timeline)): State<(Store, Recorder)>,
    Query(q): Query<ConfigQuery>,
    conn: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let uuid = q.uuid.unwrap_or_default();
    let name = uuid.clone();
    let result = tokio::task::spawn_blocking(move || config_for(&store, &uuid)).await;
    // The timeline of a stored server: the config it got, or why not.
    let who = || Who {
        server: Some(name.trim().to_ascii_lowercase()),
        ip: conn.as_ref().map(|Extension(ConnectInfo(a))| a.ip()),
        ..Default::default()
    };
    match result {
        Ok(Ok(yaml)) => {
            timeline.record(
                who(),
                Step::ConfigFetched,
                Outcome::Ok,
                format!("{} bytes", yaml.len()),
            );
            (
                [(axum::http::header::CONTENT_TYPE, "application/yaml")],
                yaml,
            )
                .into_response()
        }
        Ok(Err(e)) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::warn!(error = %crate::error_chain(&e), "metadata: cannot serve config");
            }
            if !matches!(
                e,
                RenderConfigError::NoUuid | RenderConfigError::UnknownServer(_)
            ) {
                timeline.record(
                    who(),
                    Step::ConfigFetched,
                    Outcome::Refused,
                    crate::error_chain(&e),
                );
            }
            (status, format!("{}\n", crate::error_chain(&e))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `GET /configdata?uuid=<uuid>`; fetches are recorded in the boot timeline.
pub fn router(store: Store, timeline: Recorder) -> Router {
    Router::new()
        .route("/configdata", get(configdata))
        .with_state((store, timeline))
}

#[cfg(test)]
mod tests;
