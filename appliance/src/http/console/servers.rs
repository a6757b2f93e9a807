//! Servers in the console: the server rows kept current from the change feed, the overview,
//! the servers list (`GET /api/v1/servers`), a server's detail page and its actions
//! (accept/cordon/uncordon and delete through the admin service, the on-demand wipe through
//! the lifecycle service, power and PXE-once through the BMC room's Power service).

use std::sync::Arc;

use appliance_rpc::admin::admin_server::Admin;
use appliance_rpc::admin::{DeleteRequest, ServerActionKind, ServerActionRequest};
use appliance_rpc::power::power_server::Power;
use appliance_rpc::power::{PowerActionRequest, SetBootDeviceRequest};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ConsoleState, blocking, error, status_error};
use crate::console::view::{self, ClassIndex, ServerQuery, ServerRow};
use crate::model::{Kind, Object};
use crate::store::{Change, StoreError};

/// Server rows kept current from the change feed: built once, then each request first
/// applies the changes queued on its own receiver (re-reading only the changed servers), so
/// a client that refreshes on an SSE event sees that change. A lagged receiver rebuilds.
/// The console's change follower drains the receiver after each batch ([`RowsCache::absorb`])
/// into a set of names, so that the feed does not keep the changes' objects for it.
pub(super) struct RowsCache {
    rx: tokio::sync::broadcast::Receiver<Change>,
    built: bool,
    rows: std::collections::BTreeMap<String, ServerRow>,
    classes: Arc<ClassIndex>,
    snapshot: Option<Arc<Vec<ServerRow>>>,
    /// Servers changed since the rows were last brought up to date.
    pending: std::collections::BTreeSet<String>,
    classes_changed: bool,
    /// Everything is read again at the next request (lagged, or too many pending names).
    rebuild: bool,
}

/// Most pending server names kept; more and the next request rebuilds every row.
const MAX_PENDING: usize = 1024;

impl RowsCache {
    /// An empty cache following `rx` (subscribed when the console is built).
    pub(super) fn new(rx: tokio::sync::broadcast::Receiver<Change>) -> Self {
        RowsCache {
            rx,
            built: false,
            rows: Default::default(),
            classes: Arc::default(),
            snapshot: None,
            pending: Default::default(),
            classes_changed: false,
            rebuild: false,
        }
    }

    /// Takes every change queued on the receiver into the pending names (reads nothing).
    pub(super) fn absorb(&mut self) {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            match self.rx.try_recv() {
                Ok(change) => match change.kind {
                    Kind::Server if !self.rebuild => {
                        self.pending.insert(change.name);
                        if self.pending.len() > MAX_PENDING {
                            self.rebuild = true;
                            self.pending.clear();
                        }
                    }
                    Kind::ServerClass => self.classes_changed = true,
                    _ => {}
                },
                Err(TryRecvError::Lagged(_)) => {
                    self.rebuild = true;
                    self.pending.clear();
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }
}

impl ConsoleState {
    /// All server rows (sorted by name) and the class index, current as of now.
    pub(super) fn rows(&self) -> Result<(Arc<Vec<ServerRow>>, Arc<ClassIndex>), StoreError> {
        let store = &self.inner.store;
        // Read-your-writes: an apply answered just before this request is on the feed.
        store.wait_published();
        let mut c = self.inner.rows.lock().expect("rows lock");
        c.absorb();
        let servers = std::mem::take(&mut c.pending);
        let classes_changed = std::mem::take(&mut c.classes_changed);
        let rebuild = !c.built || std::mem::take(&mut c.rebuild);
        if rebuild || classes_changed {
            let list: Vec<Object> = store
                .list(Kind::ServerClass)?
                .into_iter()
                .map(|s| s.object)
                .collect();
            c.classes = Arc::new(ClassIndex::build(&list));
        }
        if rebuild {
            let index = c.classes.clone();
            c.rows = store
                .list(Kind::Server)?
                .iter()
                .map(|s| {
                    let row = view::server_row(&s.object, s.revision, &index);
                    (row.name.clone(), row)
                })
                .collect();
            c.built = true;
            c.snapshot = None;
        } else {
            if classes_changed {
                let index = c.classes.clone();
                for row in c.rows.values_mut() {
                    row.classes = index
                        .members
                        .get(&row.name)
                        .map(|m| m.iter().cloned().collect())
                        .unwrap_or_default();
                }
                c.snapshot = None;
            }
            for name in servers {
                match store.get(Kind::Server, &name)? {
                    Some(s) => {
                        let row = view::server_row(&s.object, s.revision, &c.classes);
                        c.rows.insert(name, row);
                    }
                    None => {
                        c.rows.remove(&name);
                    }
                }
                c.snapshot = None;
            }
        }
        let snapshot = match &c.snapshot {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(c.rows.values().cloned().collect::<Vec<_>>());
                c.snapshot = Some(s.clone());
                s
            }
        };
        Ok((snapshot, c.classes.clone()))
    }
}

pub(super) async fn overview(State(state): State<ConsoleState>) -> Response {
    let result = blocking(&state, |st| {
        let (rows, classes) = st.rows()?;
        let mut counts = std::collections::BTreeMap::new();
        counts.insert(Kind::Server, rows.len() as u64);
        counts.insert(Kind::ServerClass, classes.classes.len() as u64);
        counts.insert(
            Kind::Environment,
            st.inner.store.list(Kind::Environment)?.len() as u64,
        );
        Ok((
            view::state_counts(&rows),
            classes.classes.clone(),
            counts,
            st.inner.store.revision()?,
            rows.len(),
        ))
    })
    .await;
    let (states, classes, counts, revision, servers) = match result {
        Ok(v) => v,
        Err(r) => return r,
    };
    Json(json!({
        "servers": servers,
        "states": states,
        "state_order": view::STATES,
        "classes": classes,
        "objects": counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
        "revision": revision,
        "events": state.recent(None, 25),
        "rogue_dhcp": state.inner.rogue_dhcp.rogues().iter().map(|r| json!({
            "mac": r.mac,
            "source_ip": r.source_ip.to_string(),
            "server_id": r.server_id.map(|s| s.to_string()),
            "offered": r.offered.to_string(),
            "first_seen": r.first_seen,
            "last_seen": r.last_seen,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

pub(super) async fn servers(
    State(state): State<ConsoleState>,
    Query(q): Query<ServerQuery>,
) -> Response {
    let result = blocking(&state, move |st| {
        let (rows, classes) = st.rows()?;
        Ok((view::query(&rows, &q), classes))
    })
    .await;
    match result {
        Ok((page, classes)) => {
            let class_names: Vec<&str> = classes.classes.iter().map(|c| c.name.as_str()).collect();
            Json(json!({ "page": page, "classes": class_names, "states": view::STATES }))
                .into_response()
        }
        Err(r) => r,
    }
}

pub(super) async fn server_detail(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
) -> Response {
    let n = name.clone();
    let result = blocking(&state, move |st| {
        let found = st.inner.store.get(Kind::Server, &n)?;
        let (_, classes) = st.rows()?;
        let lifecycle = st.inner.store.events(Some(&n), 100)?;
        Ok((found, classes, lifecycle))
    })
    .await;
    let (found, classes, lifecycle) = match result {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(stored) = found else {
        return error(StatusCode::NOT_FOUND, format!("Server `{name}` not found"));
    };
    let row = view::server_row(&stored.object, stored.revision, &classes);
    let server = match &stored.object {
        Object::Server(s) => Some(s),
        _ => None,
    };
    let has_bmc = server.is_some_and(|s| s.spec.bmc.is_some());
    let wipe = view::wipe_capability(server);
    Json(json!({
        "row": row,
        "object": stored.object,
        "yaml": stored.object.to_yaml(),
        "history": state.recent(Some(&name), 100),
        "lifecycle": view::lifecycle_events(&lifecycle),
        "capabilities": view::capabilities(Some(has_bmc), wipe),
    }))
    .into_response()
}

pub(super) async fn server_action(
    State(state): State<ConsoleState>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let kind = match action.as_str() {
        "accept" => ServerActionKind::ServerActionAccept,
        "cordon" => ServerActionKind::ServerActionCordon,
        "uncordon" => ServerActionKind::ServerActionUncordon,
        "power-on" | "power-off" | "power-cycle" | "pxe-once" => {
            return power_action(&state, name, &action).await;
        }
        "wipe" => return wipe_action(&state, name).await,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown server action `{other}`"),
            );
        }
    };
    let req = tonic::Request::new(ServerActionRequest {
        name,
        action: kind as i32,
    });
    match state.inner.admin.server_action(req).await {
        Ok(reply) => {
            let obj = reply.into_inner().server;
            Json(json!({ "ok": true, "revision": obj.map(|o| o.revision) })).into_response()
        }
        Err(s) => status_error(s),
    }
}

/// On-demand wipe through the lifecycle's admin service (in process): the same rules and
/// refusals (409 with the reason) as `appliance ctl server wipe`.
async fn wipe_action(state: &ConsoleState, server: String) -> Response {
    use appliance_rpc::lifecycle::WipeRequest;
    use appliance_rpc::lifecycle::lifecycle_server::Lifecycle as _;
    match state
        .inner
        .lifecycle
        .wipe(tonic::Request::new(WipeRequest { server }))
        .await
    {
        Ok(reply) => {
            let r = reply.into_inner();
            Json(json!({ "ok": true, "state": r.state, "revision": r.revision })).into_response()
        }
        Err(s) => status_error(s),
    }
}

/// Power and boot-device actions through the BMC room's Power service (in process).
async fn power_action(state: &ConsoleState, server: String, action: &str) -> Response {
    let power = &state.inner.power;
    let result = match action {
        "pxe-once" => power
            .set_boot_device(tonic::Request::new(SetBootDeviceRequest {
                server,
                device: "pxe".into(),
                mode: String::new(),
                persistent: false,
            }))
            .await
            .map(|_| ()),
        _ => power
            .power_action(tonic::Request::new(PowerActionRequest {
                server,
                action: action.trim_start_matches("power-").into(),
            }))
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(s) => status_error(s),
    }
}

pub(super) async fn server_delete(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
) -> Response {
    delete_kind(&state, Kind::Server, name).await
}

pub(super) async fn delete_kind(state: &ConsoleState, kind: Kind, name: String) -> Response {
    let req = tonic::Request::new(DeleteRequest {
        kind: kind.to_string(),
        name,
    });
    match state.inner.admin.delete(req).await {
        Ok(r) => Json(json!({ "ok": true, "revision": r.into_inner().revision })).into_response(),
        Err(s) => status_error(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn server(name: &str) -> Vec<Object> {
        crate::model::parse_documents(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\n"
        ))
        .unwrap()
    }

    #[test]
    fn absorbing_releases_the_feed_and_keeps_the_changed_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut cache = RowsCache::new(store.subscribe());
        for name in ["a", "b", "a"] {
            store.apply(server(name)).unwrap();
        }
        store
            .apply(
                crate::model::parse_documents(
                    "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: c\n",
                )
                .unwrap(),
            )
            .unwrap();
        // Until the cache's receiver has seen them, the feed keeps the changes' objects.
        assert_eq!(store.feed_backlog(), 3);
        cache.absorb();
        assert_eq!(store.feed_backlog(), 0);
        assert_eq!(cache.pending.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(cache.classes_changed && !cache.rebuild);
        // More changed servers than are worth remembering: the next request rebuilds.
        for i in 0..=MAX_PENDING {
            store.apply(server(&format!("s{i}"))).unwrap();
        }
        cache.absorb();
        assert!(cache.rebuild && cache.pending.is_empty());
        assert_eq!(store.feed_backlog(), 0);
    }
}
