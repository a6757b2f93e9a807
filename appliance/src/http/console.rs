//! The web console over HTTP: its pages and assets, login/logout with a session cookie,
//! the JSON API under `/api/v1/…` and the live change stream `/api/v1/events` (SSE).
//!
//! Reads go through `Store`; every write goes through the in-process admin gRPC service
//! (`api::admin::AdminService`; the on-demand wipe through `api::lifecycle::LifecycleService`,
//! power through the bmc room's `PowerService`), so the console gets exactly the validation
//! and lifecycle rules that `appliance ctl` gets. The pure parts (throttle, sessions, views, error
//! locations, password hashing) live in `crate::console`.
//!
//! Security model:
//! - Login with the admin token or the console password (`appliance ctl admin
//!   set-password`). A session is a random 256-bit id in the `appliance_session` cookie
//!   (HttpOnly, SameSite=Strict, Path=/; `Secure` only when `secure_cookie` is set, because
//!   the box serves plain HTTP on :8081 and browsers drop Secure cookies on plain HTTP to
//!   anything but localhost).
//! - Every mutating call (POST/PUT/DELETE) needs the session's CSRF token in the
//!   `x-csrf-token` header (synchronizer token) and, when the browser sends an `Origin`,
//!   an Origin that matches `Host`.
//! - Failed logins are throttled per client IP and globally (`console::throttle`).
//! - Without a session, pages redirect to `/login` and `/api/v1/*` answers 401. Only the
//!   login page, its assets and `POST /api/v1/login` are public here.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use appliance_rpc::admin::admin_server::Admin;
use appliance_rpc::admin::{ApplyRequest, DeleteRequest, ServerActionKind, ServerActionRequest};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use appliance_rpc::power::power_server::Power;
use appliance_rpc::power::{PowerActionRequest, SetBootDeviceRequest};

use crate::api::admin::AdminService;
use crate::api::lifecycle::LifecycleService;
use crate::bmc::service::PowerService;
use crate::config::Config;
use crate::console::session::{LoginMethod, Sessions, constant_time_eq, cookie_value};
use crate::console::throttle::{LoginThrottle, Refusal};
use crate::console::view::{self, ClassIndex, ServerQuery, ServerRow};
use crate::console::{self, locate, password};
use crate::model::{self, Kind, Object, ParseObjectError};
use crate::store::{Change, ChangeOp, Store, StoreError};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "appliance_session";
/// Header carrying the CSRF token on mutating calls.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Recent changes kept for the overview and server history.
const RECENT_EVENTS: usize = 500;

/// What the console's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    admin: AdminService,
    token: Arc<str>,
    config: Config,
    secure_cookie: bool,
    sessions: Mutex<Sessions>,
    throttle: Mutex<LoginThrottle>,
    events: Mutex<VecDeque<RecentEvent>>,
    rows: Mutex<RowsCache>,
    /// The BMC room's Power service, once `app.rs` hands it over.
    power: std::sync::OnceLock<PowerService>,
    /// The lifecycle's admin service (on-demand wipe), once `app.rs` hands it over.
    lifecycle: std::sync::OnceLock<LifecycleService>,
}

/// Server rows kept current from the change feed: built once, then each request first
/// applies the changes queued on its own receiver (re-reading only the changed servers), so
/// a client that refreshes on an SSE event sees that change. A lagged receiver rebuilds.
struct RowsCache {
    rx: tokio::sync::broadcast::Receiver<Change>,
    built: bool,
    rows: std::collections::BTreeMap<String, ServerRow>,
    classes: Arc<ClassIndex>,
    snapshot: Option<Arc<Vec<ServerRow>>>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").finish_non_exhaustive()
    }
}

/// One entry of the recent-changes list (from the store change feed).
#[derive(Debug, Clone, Serialize)]
pub struct RecentEvent {
    pub revision: u64,
    /// Unix seconds when the console saw the change.
    pub at: u64,
    pub kind: String,
    pub name: String,
    pub op: &'static str,
    /// For servers: the lifecycle state after the change (and "cordoned").
    pub detail: String,
}

impl ConsoleState {
    pub fn new(
        store: Store,
        admin: AdminService,
        token: Arc<str>,
        config: Config,
        secure_cookie: bool,
    ) -> Self {
        let rx = store.subscribe();
        ConsoleState {
            inner: Arc::new(Inner {
                store,
                admin,
                token,
                config,
                secure_cookie,
                sessions: Mutex::default(),
                throttle: Mutex::default(),
                events: Mutex::default(),
                rows: Mutex::new(RowsCache {
                    rx,
                    built: false,
                    rows: Default::default(),
                    classes: Arc::default(),
                    snapshot: None,
                }),
                power: std::sync::OnceLock::new(),
                lifecycle: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Enables power/boot-device actions through the BMC room's Power service.
    pub fn set_power(&self, power: PowerService) {
        let _ = self.inner.power.set(power);
    }

    /// Enables the on-demand wipe through the lifecycle's admin service.
    pub fn set_lifecycle(&self, lifecycle: LifecycleService) {
        let _ = self.inner.lifecycle.set(lifecycle);
    }

    /// Follows the store change feed into the recent-events list until `shutdown`.
    /// Spawned once from `app.rs`.
    /// Also builds the server rows once at start, so the first page view does not wait.
    pub async fn record_events(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut rx = self.inner.store.subscribe();
        let warm = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = warm.rows() {
                tracing::warn!(error = %crate::error_chain(&e), "console: building server rows failed");
            }
        })
        .await;
        tokio::pin!(shutdown);
        loop {
            let first = tokio::select! {
                _ = &mut shutdown => return,
                r = rx.recv() => r,
            };
            let mut batch = match first {
                Ok(c) => vec![c],
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            while let Ok(c) = rx.try_recv() {
                batch.push(c);
                if batch.len() >= 256 {
                    break;
                }
            }
            let store = self.inner.store.clone();
            let entries = tokio::task::spawn_blocking(move || describe(&store, batch))
                .await
                .unwrap_or_default();
            let mut ev = self.inner.events.lock().expect("events lock");
            for e in entries {
                push_recent(&mut ev, e);
            }
        }
    }

    fn recent(&self, name: Option<&str>, limit: usize) -> Vec<RecentEvent> {
        let ev = self.inner.events.lock().expect("events lock");
        ev.iter()
            .rev()
            .filter(|e| name.is_none_or(|n| e.name == n && e.kind == "Server"))
            .take(limit)
            .cloned()
            .collect()
    }

    /// All server rows (sorted by name) and the class index, current as of now.
    fn rows(&self) -> Result<(Arc<Vec<ServerRow>>, Arc<ClassIndex>), StoreError> {
        use tokio::sync::broadcast::error::TryRecvError;
        let store = &self.inner.store;
        let mut c = self.inner.rows.lock().expect("rows lock");
        let mut servers = std::collections::BTreeSet::new();
        let mut classes_changed = false;
        let mut rebuild = !c.built;
        loop {
            match c.rx.try_recv() {
                Ok(change) => match change.kind {
                    Kind::Server => {
                        servers.insert(change.name);
                    }
                    Kind::ServerClass => classes_changed = true,
                    _ => {}
                },
                Err(TryRecvError::Lagged(_)) => rebuild = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
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

/// Why the console password could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SetConsolePasswordError {
    #[error("password refused")]
    Policy(#[source] password::SetPasswordError),
    #[error("no randomness available for a salt")]
    Random,
    #[error("storing the password hash failed")]
    Store(#[source] StoreError),
    #[error("password task failed")]
    Task,
}

impl ConsoleState {
    /// Hashes and stores a new console password, then ends every console session (a
    /// password change must lock out whoever had a session). Returns how many ended.
    pub async fn set_password(&self, new: String) -> Result<usize, SetConsolePasswordError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| SetConsolePasswordError::Random)?;
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            let phc = password::hash(&new, salt).map_err(SetConsolePasswordError::Policy)?;
            store
                .set_console_password_hash(&phc)
                .map_err(SetConsolePasswordError::Store)
        })
        .await
        .map_err(|_| SetConsolePasswordError::Task)??;
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let ended = sessions.len();
        sessions.clear();
        tracing::info!(sessions_ended = ended, "console password set");
        Ok(ended)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends to the recent-events list, dropping the oldest beyond `RECENT_EVENTS`. A change
/// that reads the same as the object's previous entry is left out: `describe` reads the
/// object as it is when the batch is described, so a create followed by a status write (two
/// changes, one batch later) would otherwise show twice with the same state.
fn push_recent(ev: &mut std::collections::VecDeque<RecentEvent>, e: RecentEvent) {
    let previous = ev
        .iter()
        .rev()
        .find(|p| p.kind == e.kind && p.name == e.name);
    if previous.is_some_and(|p| p.op == e.op && p.detail == e.detail) {
        return;
    }
    if ev.len() == RECENT_EVENTS {
        ev.pop_front();
    }
    ev.push_back(e);
}

fn describe(store: &Store, batch: Vec<Change>) -> Vec<RecentEvent> {
    let at = unix_now();
    batch
        .into_iter()
        .map(|c| {
            let detail = match (c.kind, c.op) {
                (Kind::Server, ChangeOp::Put) => store
                    .get(Kind::Server, &c.name)
                    .ok()
                    .flatten()
                    .map(|s| {
                        let v = serde_json::to_value(&s.object).unwrap_or_default();
                        let mut d = view::server_state(&v);
                        if v.pointer("/spec/cordoned").and_then(Value::as_bool) == Some(true) {
                            d.push_str(", cordoned");
                        }
                        d
                    })
                    .unwrap_or_default(),
                _ => String::new(),
            };
            RecentEvent {
                revision: c.revision,
                at,
                kind: c.kind.to_string(),
                name: c.name,
                op: match c.op {
                    ChangeOp::Put => "put",
                    ChangeOp::Delete => "delete",
                },
                detail,
            }
        })
        .collect()
}

/// A JSON error reply: `{"error": message, ...extra}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    match &e {
        StoreError::NotFound { .. } => error(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::Rejected { .. } => error(StatusCode::CONFLICT, e.to_string()),
        _ => {
            tracing::error!(error = %crate::error_chain(&e), "console store failure");
            error(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e))
        }
    }
}

fn status_error(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, s.message().to_string())
}

async fn blocking<T: Send + 'static>(
    state: &ConsoleState,
    f: impl FnOnce(&ConsoleState) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("task failed: {e}"),
            )
        })?
        .map_err(store_error)
}

/// `N` random bytes from the OS, hex-encoded; None if the OS has no randomness.
fn random_hex<const N: usize>() -> Option<String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

fn client_ip(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie_value(h, SESSION_COOKIE).map(str::to_string))
}

/// The routes of the console. Merged into `http::router`.
pub fn router(state: ConsoleState) -> Router {
    let pages = Router::new()
        .route("/", get(page))
        .route("/servers", get(page))
        .route("/servers/{name}", get(page))
        .route("/classes", get(page))
        .route("/classes/{name}", get(page))
        .route("/environments", get(page))
        .route("/environments/{name}", get(page))
        .route("/settings", get(page));
    let api = Router::new()
        .route("/api/v1/session", get(session_info))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/servers", get(servers))
        .route(
            "/api/v1/servers/{name}",
            get(server_detail).delete(server_delete),
        )
        .route(
            "/api/v1/servers/{name}/actions/{action}",
            post(server_action),
        )
        .route("/api/v1/{kind}", get(list_objects).post(create_object))
        .route(
            "/api/v1/{kind}/{name}",
            get(get_object).put(put_object).delete(delete_object),
        )
        .route("/api/v1/settings", get(settings))
        .route("/api/v1/events", get(events));
    let guarded = pages.merge(api).route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_session,
    ));
    Router::new()
        .route("/login", get(login_page))
        .route("/console/{file}", get(serve_asset))
        .route("/api/v1/login", post(login))
        .merge(guarded)
        .with_state(state)
}

fn asset_response(path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let Some(a) = console::asset(path) else {
        return error(StatusCode::NOT_FOUND, format!("no console asset `{path}`"));
    };
    // The gzip copy is a representation of its own (own strong ETag, Vary).
    let gz = a.gzip.as_deref().filter(|_| {
        headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(console::accepts_gzip)
    });
    let tag = if gz.is_some() { &a.etag_gzip } else { &a.etag };
    let etag = HeaderValue::from_str(tag).expect("etag is ASCII");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = match gz {
            Some(bytes) => {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            None => Response::new(Body::from(a.body)),
        };
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    if a.gzip.is_some() {
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if a.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    resp
}

/// Assets: revalidated with the ETag after an hour (they change only with the binary).
async fn serve_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file.ends_with(".html") {
        return error(StatusCode::NOT_FOUND, "pages are served at their own paths");
    }
    asset_response(&file, &headers, "public, max-age=3600, must-revalidate")
}

/// Every console page is the same shell; the script renders the view for the path.
async fn page(headers: HeaderMap) -> Response {
    asset_response("index.html", &headers, "no-cache")
}

async fn login_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers)
        && state
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .is_live(&id, Instant::now())
    {
        return Redirect::to("/").into_response();
    }
    asset_response("login.html", &headers, "no-cache")
}

/// The session of this request, found by `require_session`.
#[derive(Debug, Clone)]
struct SessionCtx {
    id: String,
    csrf: String,
    method: LoginMethod,
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // Not a browser cross-origin request; the CSRF token still applies.
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

async fn require_session(
    State(state): State<ConsoleState>,
    mut req: Request,
    next: Next,
) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let now = Instant::now();
    let session = session_id(req.headers()).and_then(|id| {
        let s = state
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .touch(&id, now)?;
        Some(SessionCtx {
            id,
            csrf: s.csrf,
            method: s.method,
        })
    });
    let Some(session) = session else {
        if is_api {
            return error(
                StatusCode::UNAUTHORIZED,
                "not logged in: POST /api/v1/login first",
            );
        }
        let next_path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = if next_path == "/" {
            "/login".to_string()
        } else {
            format!("/login?next={}", percent_encode(next_path))
        };
        return Redirect::to(&target).into_response();
    };
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating {
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(presented, &session.csrf) {
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token (send the x-csrf-token header from GET /api/v1/session)",
            );
        }
        if !same_origin(req.headers()) {
            return error(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
    }
    req.extensions_mut().insert(session);
    let mut resp = next.run(req).await;
    if is_api {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct LoginBody {
    /// The admin token or the console password.
    secret: String,
}

fn session_cookie(state: &ConsoleState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.inner.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie is ASCII")
}

fn too_many(r: Refusal) -> Response {
    let secs = r.retry_after().as_secs().max(1);
    let msg = match r {
        Refusal::Client { .. } => {
            format!("too many failed logins from this address; try again in {secs} s")
        }
        Refusal::Global { .. } => {
            format!("too many failed logins on this box; logins are paused for {secs} s")
        }
    };
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, msg);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits"),
    );
    resp
}

async fn login(State(state): State<ConsoleState>, req: Request) -> Response {
    let ip = client_ip(req.extensions());
    if !same_origin(req.headers()) {
        return error(StatusCode::FORBIDDEN, "cross-origin login refused");
    }
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send {\"secret\": …} as application/json",
        );
    }
    let bytes = match axum::body::to_bytes(req.into_body(), 8 * 1024).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "login body too large"),
    };
    let Ok(body) = serde_json::from_slice::<LoginBody>(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "send {\"secret\": \"<admin token or password>\"}",
        );
    };
    if let Err(r) = state
        .inner
        .throttle
        .lock()
        .expect("throttle lock")
        .check(ip, Instant::now())
    {
        return too_many(r);
    }
    let method = if constant_time_eq(body.secret.trim(), &state.inner.token) {
        Some(LoginMethod::Token)
    } else {
        let st = state.clone();
        let secret = body.secret;
        let ok = tokio::task::spawn_blocking(move || {
            st.inner
                .store
                .console_password_hash()
                .ok()
                .flatten()
                .is_some_and(|phc| password::verify(&secret, &phc))
        })
        .await
        .unwrap_or(false);
        ok.then_some(LoginMethod::Password)
    };
    let Some(method) = method else {
        let lock = state
            .inner
            .throttle
            .lock()
            .expect("throttle lock")
            .failed(ip, Instant::now());
        tracing::warn!(client = %ip, "console login failed");
        if let Some(r) = lock {
            return too_many(r);
        }
        return error(StatusCode::UNAUTHORIZED, "wrong token or password");
    };
    state
        .inner
        .throttle
        .lock()
        .expect("throttle lock")
        .succeeded(ip);
    let (Some(id), Some(csrf)) = (random_hex::<32>(), random_hex::<32>()) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness available for a session",
        );
    };
    state.inner.sessions.lock().expect("sessions lock").create(
        id.clone(),
        csrf.clone(),
        method,
        Instant::now(),
    );
    tracing::info!(client = %ip, method = method.as_str(), "console login");
    let mut resp = Json(json!({ "csrf": csrf, "method": method.as_str() })).into_response();
    let max_age = console::session::ABSOLUTE_TIMEOUT.as_secs();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, &id, max_age));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn logout(
    State(state): State<ConsoleState>,
    axum::Extension(s): axum::Extension<SessionCtx>,
) -> Response {
    state
        .inner
        .sessions
        .lock()
        .expect("sessions lock")
        .remove(&s.id);
    let mut resp = Json(json!({ "ok": true })).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    resp
}

const NO_LIFECYCLE: &str = "not available on this box: the lifecycle service is not running";

/// Whether an on-demand wipe of this server is allowed now, and if not, why: asks the
/// lifecycle's pure state machine, so the button and the API give the same reason.
fn wipe_capability(lifecycle: bool, server: Option<&model::Server>) -> Value {
    use crate::reconcile::lifecycle::{Context, Event, plan};
    if !lifecycle {
        return json!({ "enabled": false, "reason": NO_LIFECYCLE });
    }
    let Some(server) = server else {
        return json!({ "enabled": true });
    };
    let ctx = Context {
        agent_connected: false,
        reboot_timeout: Duration::ZERO,
        reboot_retries: 0,
    };
    match plan(
        crate::reconcile::apply::server_state(server),
        Event::WipeRequested,
        &ctx,
    ) {
        Ok(_) => json!({ "enabled": true }),
        Err(e) => json!({ "enabled": false, "reason": e.to_string() }),
    }
}

/// What the box can do to servers right now; buttons for the rest are shown disabled with
/// the reason. `has_bmc`: None = not known (session-wide view), Some(false) = this server
/// has no `spec.bmc`. `wipe` from `wipe_capability`.
fn capabilities(power: bool, has_bmc: Option<bool>, wipe: Value) -> Value {
    let power_cap = if !power {
        json!({ "enabled": false, "reason": "not available on this box: BMC power control is not running" })
    } else if has_bmc == Some(false) {
        json!({ "enabled": false, "reason": "this server has no BMC configured (set one with appliance ctl server bmc NAME …, or let the agent report it)" })
    } else {
        json!({ "enabled": true })
    };
    json!({
        "accept": { "enabled": true },
        "cordon": { "enabled": true },
        "uncordon": { "enabled": true },
        "delete": { "enabled": true },
        "power-on": power_cap,
        "power-off": power_cap,
        "power-cycle": power_cap,
        "pxe-once": power_cap,
        "wipe": wipe,
    })
}

async fn session_info(
    State(state): State<ConsoleState>,
    axum::Extension(s): axum::Extension<SessionCtx>,
) -> Response {
    Json(json!({
        "csrf": s.csrf,
        "method": s.method.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": capabilities(
            state.inner.power.get().is_some(),
            None,
            wipe_capability(state.inner.lifecycle.get().is_some(), None),
        ),
    }))
    .into_response()
}

async fn overview(State(state): State<ConsoleState>) -> Response {
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
    }))
    .into_response()
}

async fn servers(State(state): State<ConsoleState>, Query(q): Query<ServerQuery>) -> Response {
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

async fn server_detail(State(state): State<ConsoleState>, Path(name): Path<String>) -> Response {
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
    let wipe = wipe_capability(state.inner.lifecycle.get().is_some(), server);
    Json(json!({
        "row": row,
        "object": stored.object,
        "yaml": stored.object.to_yaml(),
        "history": state.recent(Some(&name), 100),
        "lifecycle": lifecycle.iter().rev().map(|e| json!({
            "seq": e.seq,
            "at": e.time_ms / 1000,
            "event": e.event,
            "from": e.from,
            "to": e.to,
            "message": e.message,
        })).collect::<Vec<_>>(),
        "capabilities": capabilities(state.inner.power.get().is_some(), Some(has_bmc), wipe),
    }))
    .into_response()
}

async fn server_action(
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
    let Some(lc) = state.inner.lifecycle.get() else {
        return error(StatusCode::NOT_IMPLEMENTED, NO_LIFECYCLE);
    };
    match lc.wipe(tonic::Request::new(WipeRequest { server })).await {
        Ok(reply) => {
            let r = reply.into_inner();
            Json(json!({ "ok": true, "state": r.state, "revision": r.revision })).into_response()
        }
        Err(s) => status_error(s),
    }
}

/// Power and boot-device actions through the BMC room's Power service (in process).
async fn power_action(state: &ConsoleState, server: String, action: &str) -> Response {
    let Some(power) = state.inner.power.get() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "not available on this box: BMC power control is not running",
        );
    };
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

async fn server_delete(State(state): State<ConsoleState>, Path(name): Path<String>) -> Response {
    delete_kind(&state, Kind::Server, name).await
}

async fn delete_kind(state: &ConsoleState, kind: Kind, name: String) -> Response {
    let req = tonic::Request::new(DeleteRequest {
        kind: kind.to_string(),
        name,
    });
    match state.inner.admin.delete(req).await {
        Ok(r) => Json(json!({ "ok": true, "revision": r.into_inner().revision })).into_response(),
        Err(s) => status_error(s),
    }
}

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

fn summary(kind: Kind, object: &Object, revision: u64) -> Value {
    let v = serde_json::to_value(object).unwrap_or_default();
    match kind {
        Kind::ServerClass => {
            let len = |p: &str| v.pointer(p).and_then(Value::as_array).map_or(0, Vec::len);
            json!({
                "name": object.name(),
                "revision": revision,
                "available": len("/status/serversAvailable"),
                "in_use": len("/status/serversInUse"),
                "environment": v.pointer("/spec/environmentRef/name"),
                "qualifiers": v.pointer("/spec/qualifiers").map(|q| q.to_string()),
                "labels": object.metadata().labels,
            })
        }
        _ => {
            let conditions = v
                .pointer("/status/conditions")
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            json!({
                "name": object.name(),
                "revision": revision,
                "kernel": v.pointer("/spec/kernel/url"),
                "initrd": v.pointer("/spec/initrd/url"),
                "args": v.pointer("/spec/kernel/args"),
                "conditions": conditions,
                "assets": asset_status(&v),
            })
        }
    }
}

/// Download status per Environment asset, from its conditions (Sidero: one `Ready`
/// condition per URL with `status` True/False).
fn asset_status(v: &Value) -> Vec<Value> {
    let conditions: Vec<&Value> = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    ["kernel", "initrd"]
        .iter()
        .filter_map(|part| {
            let url = v.pointer(&format!("/spec/{part}/url"))?.as_str()?;
            let cond = conditions
                .iter()
                .find(|c| c.get("url").and_then(Value::as_str) == Some(url));
            let status = match cond.and_then(|c| c.get("status")).and_then(Value::as_str) {
                Some("True") => "ready",
                Some("False") => "failed",
                Some(_) => "pending",
                None => "not downloaded",
            };
            Some(json!({
                "asset": part,
                "url": url,
                "status": status,
                "message": cond.and_then(|c| c.get("message")),
            }))
        })
        .collect()
}

async fn list_objects(State(state): State<ConsoleState>, Path(seg): Path<String>) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    match blocking(&state, move |st| st.inner.store.list(kind)).await {
        Ok(list) => Json(json!({
            "items": list.iter().map(|s| summary(kind, &s.object, s.revision)).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn get_object(
    State(state): State<ConsoleState>,
    Path((seg, name)): Path<(String, String)>,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    let n = name.clone();
    match blocking(&state, move |st| st.inner.store.get(kind, &n)).await {
        Ok(Some(s)) => Json(json!({
            "summary": summary(kind, &s.object, s.revision),
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
    let (path, message, document) = match e {
        ParseObjectError::Field {
            path,
            message,
            document,
            ..
        } => (Some(path.clone()), message.clone(), *document),
        ParseObjectError::Missing { field, document } => {
            (Some(field.to_string()), e.to_string(), *document)
        }
        ParseObjectError::Syntax { document, message } => (None, message.clone(), *document),
        other => (None, other.to_string(), 1),
    };
    let mut segments = path.as_deref().map(locate::parse_path).unwrap_or_default();
    let mut field = path.clone();
    let already_there = |u: &str| segments.last() == Some(&locate::Segment::Key(u.to_string()));
    if let Some(unknown) = locate::unknown_field(&message).filter(|u| !already_there(u)) {
        segments.push(locate::Segment::Key(unknown.to_string()));
        field = Some(match &path {
            Some(p) if p != "." && !p.is_empty() => format!("{p}.{unknown}"),
            _ => unknown.to_string(),
        });
    }
    let line = if document == 1 {
        locate::locate(yaml, &segments).or_else(|| syntax_line(&message))
    } else {
        None
    };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": e.to_string(),
            "field": field,
            "message": message,
            "line": line,
        })),
    )
        .into_response()
}

/// serde_yaml syntax errors say "at line N column M".
fn syntax_line(message: &str) -> Option<usize> {
    let rest = &message[message.find("at line ")? + 8..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
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
    if yaml.len() > 1 << 20 {
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

async fn put_object(
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

async fn create_object(
    State(state): State<ConsoleState>,
    Path(seg): Path<String>,
    body: String,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    write_yaml(&state, kind, None, &body).await
}

async fn delete_object(
    State(state): State<ConsoleState>,
    Path((seg, name)): Path<(String, String)>,
) -> Response {
    let Some(kind) = editable_kind(&seg) else {
        return unknown_collection(&seg);
    };
    delete_kind(&state, kind, name).await
}

async fn settings(State(state): State<ConsoleState>) -> Response {
    let leases = match blocking(&state, |st| st.inner.store.dhcp_leases()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let now = unix_now();
    let bound: Vec<_> = leases
        .iter()
        .filter(|l| {
            matches!(l.state, crate::protocol::dhcp::LeaseState::Bound) && l.expires_at > now
        })
        .collect();
    let c = &state.inner.config;
    let d = &c.dhcp;
    let pools: Vec<Value> = d
        .pools
        .iter()
        .map(|p| {
            let (lo, hi) = (u32::from(p.range_start), u32::from(p.range_end));
            let size = hi.saturating_sub(lo).saturating_add(1);
            let in_use = bound
                .iter()
                .filter(|l| (lo..=hi).contains(&u32::from(l.addr)))
                .count();
            json!({
                "range": format!("{} – {}", p.range_start, p.range_end),
                "netmask": p.netmask.to_string(),
                "router": p.router.map(|r| r.to_string()),
                "dns": p.dns.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "domain": p.domain,
                "size": size,
                "in_use": in_use,
            })
        })
        .collect();
    let active: Vec<Value> = bound
        .iter()
        .take(200)
        .map(|l| {
            json!({
                "ip": l.addr.to_string(),
                "mac": l.chaddr.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                "hostname": l.hostname,
                "expires_in": l.expires_at.saturating_sub(now),
            })
        })
        .collect();
    let config_value = serde_json::to_value(c).unwrap_or_default();
    Json(json!({
        "network": {
            "interface": c.interface,
            "http_listen": c.http.listen.to_string(),
            "tftp": config_value.get("tftp"),
        },
        "dhcp": {
            "mode": config_value.pointer("/dhcp/mode"),
            "listen_port": d.listen_port,
            "proxy_port": d.proxy_port,
            "lease_time_secs": d.lease_time_secs,
            "boot": config_value.pointer("/dhcp/boot"),
            "pools": pools,
            "reservations": d.reservations.len(),
            "active_leases": bound.len(),
            "leases": active,
        },
        "effective_toml": c.to_toml(),
        "editable": false,
        "editable_reason": "Settings come from the config file, flags and APPLIANCE_* environment; edit /etc/appliance/config.toml and restart the service",
    }))
    .into_response()
}

/// Server-sent events: one `change` event per committed store change, `resync` when this
/// client fell behind (reload everything), and a keep-alive comment every 15 s. The stream
/// ends when the session does.
async fn events(
    State(state): State<ConsoleState>,
    axum::Extension(s): axum::Extension<SessionCtx>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let rx = state.inner.store.subscribe();
    let hello = tokio_stream::once(Ok(Event::default()
        .event("hello")
        .data(json!({ "revision": state.inner.store.revision().unwrap_or(0) }).to_string())));
    let st = state.clone();
    let changes = BroadcastStream::new(rx)
        .take_while(move |_| {
            st.inner
                .sessions
                .lock()
                .expect("sessions lock")
                .is_live(&s.id, Instant::now())
        })
        .map(|item| {
            Ok(match item {
                Ok(c) => Event::default().event("change").data(
                    json!({
                        "revision": c.revision,
                        "kind": c.kind.to_string(),
                        "name": c.name,
                        "op": match c.op { ChangeOp::Put => "put", ChangeOp::Delete => "delete" },
                    })
                    .to_string(),
                ),
                Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
                    .event("resync")
                    .data(json!({ "missed": n }).to_string()),
            })
        });
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_events_collapse_repeats_of_the_same_state() {
        let ev = |rev: u64, name: &str, op: &'static str, detail: &str| RecentEvent {
            revision: rev,
            at: 0,
            kind: "Server".into(),
            name: name.into(),
            op,
            detail: detail.into(),
        };
        let mut list = std::collections::VecDeque::new();
        push_recent(&mut list, ev(1, "a", "put", "discovered"));
        push_recent(&mut list, ev(2, "b", "put", "discovered"));
        push_recent(&mut list, ev(3, "a", "put", "discovered"));
        push_recent(&mut list, ev(4, "a", "put", "accepted"));
        push_recent(&mut list, ev(5, "a", "put", "discovered"));
        push_recent(&mut list, ev(6, "a", "delete", ""));
        let revs: Vec<u64> = list.iter().map(|e| e.revision).collect();
        assert_eq!(revs, vec![1, 2, 4, 5, 6]);
        for i in 0..RECENT_EVENTS as u64 + 10 {
            push_recent(&mut list, ev(10 + i, &format!("s{i}"), "put", "x"));
        }
        assert_eq!(list.len(), RECENT_EVENTS);
    }

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, HeaderValue::from_static("10.0.0.1:8081"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://10.0.0.1:8081"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_encode("/servers/a b?x=1"), "/servers/a%20b%3Fx%3D1");
        assert_eq!(
            syntax_line("mapping values are not allowed at line 3 column 7"),
            Some(3)
        );
        assert_eq!(syntax_line("nothing"), None);
        let v = json!({
            "spec": {"kernel": {"url": "http://a/k"}, "initrd": {"url": "http://a/i"}},
            "status": {"conditions": [{"url": "http://a/k", "status": "True", "type": "Ready"}]},
        });
        let a = asset_status(&v);
        assert_eq!(a[0]["status"], "ready");
        assert_eq!(a[1]["status"], "not downloaded");
    }
}
