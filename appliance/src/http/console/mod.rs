//! The web console over HTTP: its pages and assets, login/logout with a session cookie,
//! the JSON API under `/api/v1/…`, the live change stream `/api/v1/events` and a server's
//! live log tail `/api/v1/servers/<name>/logs` (both SSE).
//!
//! Reads go through `Store`; every write goes through the in-process admin gRPC service
//! (`api::admin::AdminService`; the on-demand wipe through `api::lifecycle::LifecycleService`,
//! power through the bmc room's `PowerService`), so the console gets exactly the validation
//! and lifecycle rules that `appliance ctl` gets. The pure parts (throttle, sessions, views, error
//! locations, password hashing) live in `crate::console`.
//!
//! This file holds the shared state, the router and the reply helpers; the handlers are
//! split by concern: `auth` (login/logout, sessions, CSRF), `assets` (pages and embedded
//! files), `servers` (server list, detail and actions), `logs` (a server's Talos log
//! lines, live, SSE), `timeline` (a server's boot timeline, JSON), `objects` (ServerClass/Environment
//! YAML CRUD), `settings`, `update` (system status, update upload), `events` (recent changes and the SSE stream) and `verify` (the
//! bound on concurrent password verifications).
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
//! - Login attempts are counted per client address before the secret is looked at, and
//!   throttled per address and globally (`console::throttle`; the global pause spares the
//!   admin token and addresses that logged in before). The client address is the TCP peer,
//!   or the last `X-Forwarded-For` hop when the peer is a `[console] trusted_proxies`
//!   entry. At most two password verifications run at once (`verify`).
//! - After login the browser goes to `next` only if it stays on the box
//!   (`console::redirect`).
//! - Without a session, pages redirect to `/login` and `/api/v1/*` answers 401. Only the
//!   login page, its assets and `POST /api/v1/login` are public here.

mod assets;
mod auth;
mod events;
mod logs;
mod objects;
mod servers;
mod settings;
mod timeline;
mod update;
mod verify;

pub use verify::LoginStats;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::api::admin::AdminService;
use crate::api::lifecycle::LifecycleService;
use crate::bmc::service::PowerService;
use crate::config::Config;
use crate::console::password;
use crate::console::session::Sessions;
use crate::console::throttle::LoginThrottle;
use crate::console::view::RecentEvents;
use crate::siderolink::logbook::LogBook;
use crate::store::{Store, StoreError};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "appliance_session";
/// Header carrying the CSRF token on mutating calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
    verify: verify::VerifyGate,
    events: Mutex<RecentEvents>,
    rows: Mutex<servers::RowsCache>,
    /// The BMC room's Power service (power and boot-device actions).
    power: PowerService,
    /// The lifecycle's admin service (on-demand wipe).
    lifecycle: LifecycleService,
    /// SideroLink's node log book (the server page's live tail).
    logs: LogBook,
    /// Rogue DHCP servers seen by the DHCP probe (the overview's banner).
    rogue_dhcp: Arc<crate::net::dhcp_probe::RogueWatch>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").finish_non_exhaustive()
    }
}

impl ConsoleState {
    /// The console's writes go through the same in-process services as the gRPC API:
    /// `admin` (objects, accept/cordon through the lifecycle), `lifecycle` (wipe) and
    /// `power`; server logs come from SideroLink's `logs`. The session cookie is Secure
    /// when `[console] secure_cookie` says so. `rogue_dhcp` is what the DHCP probe found
    /// (the overview's banner).
    #[allow(clippy::too_many_arguments)] // each a service the console is built on
    pub fn new(
        store: Store,
        admin: AdminService,
        lifecycle: LifecycleService,
        power: PowerService,
        logs: LogBook,
        token: Arc<str>,
        config: Config,
        rogue_dhcp: Arc<crate::net::dhcp_probe::RogueWatch>,
    ) -> Self {
        let rx = store.subscribe();
        let secure_cookie = config.console.secure_cookie;
        ConsoleState {
            inner: Arc::new(Inner {
                store,
                admin,
                token,
                secure_cookie,
                config,
                sessions: Mutex::default(),
                throttle: Mutex::default(),
                verify: verify::VerifyGate::default(),
                events: Mutex::default(),
                rows: Mutex::new(servers::RowsCache::new(rx)),
                power,
                lifecycle,
                logs,
                rogue_dhcp,
            }),
        }
    }

    /// The login counters, for `/metrics`.
    pub fn login_stats(&self) -> &LoginStats {
        self.inner.verify.stats()
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
    crate::store::blocking(move || f(&st))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(store_error)
}

/// `N` random bytes from the OS, hex-encoded; None if the OS has no randomness.
fn random_hex<const N: usize>() -> Option<String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

/// The routes of the console. Merged into `http::router`.
pub fn router(state: ConsoleState) -> Router {
    let pages = Router::new()
        .route("/", get(assets::page))
        .route("/servers", get(assets::page))
        .route("/servers/{name}", get(assets::page))
        .route("/classes", get(assets::page))
        .route("/classes/{name}", get(assets::page))
        .route("/environments", get(assets::page))
        .route("/environments/{name}", get(assets::page))
        .route("/settings", get(assets::page));
    let api = Router::new()
        .route("/api/v1/session", get(auth::session_info))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/overview", get(servers::overview))
        .route("/api/v1/servers", get(servers::servers))
        .route(
            "/api/v1/servers/{name}",
            get(servers::server_detail).delete(servers::server_delete),
        )
        .route("/api/v1/servers/{name}/logs", get(logs::server_logs))
        .route(
            "/api/v1/servers/{name}/timeline",
            get(timeline::server_timeline),
        )
        .route(
            "/api/v1/servers/{name}/actions/{action}",
            post(servers::server_action),
        )
        .route(
            "/api/v1/{kind}",
            get(objects::list_objects).post(objects::create_object),
        )
        .route(
            "/api/v1/{kind}/{name}",
            get(objects::get_object)
                .put(objects::put_object)
                .delete(objects::delete_object),
        )
        .route("/api/v1/settings", get(settings::settings))
        .route(
            "/api/v1/talosconfig",
            get(settings::talosconfigs).post(settings::set_talosconfig),
        )
        .route("/api/v1/system", get(update::system))
        .route("/api/v1/update", post(update::upload))
        .route("/api/v1/events", get(events::events));
    let guarded = pages.merge(api).route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_session,
    ));
    Router::new()
        .route("/login", get(auth::login_page))
        .route("/console/{file}", get(assets::serve_asset))
        .route("/api/v1/login", post(auth::login))
        .merge(guarded)
        .with_state(state)
}
