//! The one TCP listener on :8081 (accept loop in `listener`): axum routes (health, metrics,
//! the boot routes in `boot`, metadata, the web console in `console`) and tonic gRPC
//! services, all in one `Routes`, on the same port, split by path (gRPC paths are
//! `/<package>.<Service>/<Method>`). HTTP/1.1 and HTTP/2 (h2c, for gRPC) both served. Handlers see the peer address as `ConnectInfo<SocketAddr>`. A path no
//! route takes answers 404, or grpc-status 12 (UNIMPLEMENTED) to a gRPC call.

pub mod boot;
pub mod console;
pub mod listener;
pub mod metrics;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use appliance_rpc::admin::admin_server::AdminServer;
use appliance_rpc::console::console_admin_server::{ConsoleAdmin, ConsoleAdminServer};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tonic::service::Routes;

use crate::api::admin::AdminService;
use crate::api::auth;
use crate::store::Store;

pub use metrics::Metrics;

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// What `/metrics` renders (built by [`metrics::registry`] at startup).
    pub registry: Arc<crate::metrics::Registry>,
    pub ready: Arc<AtomicBool>,
    /// Network-boot routes (`/boot.ipxe`, `/ipxe`, `/tftp/`, `/env/`).
    pub boot: Arc<boot::BootContext>,
    /// The web console (pages, JSON API, SSE); see `console`.
    pub console: console::ConsoleState,
    /// SideroLink's node log book (the observe API's `Logs`).
    pub logs: crate::siderolink::logbook::LogBook,
}

/// The admin-token check for gRPC services: `authorization: Bearer <token>` or
/// UNAUTHENTICATED. Wrap every admin-side service with it:
/// `FooServer::with_interceptor(svc, admin_auth(token, metrics))`.
pub fn admin_auth(
    token: Arc<str>,
    metrics: Arc<Metrics>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth::check_bearer(header, &token) {
            metrics.admin_calls.inc();
            Ok(req)
        } else {
            metrics.admin_auth_failures.inc();
            Err(tonic::Status::unauthenticated(
                "admin API needs `authorization: Bearer <token>`; the token is in <data_dir>/admin.token",
            ))
        }
    }
}

/// Builds the full router: plain HTTP routes, the metadata service (`/configdata`), and the
/// gRPC services: admin, console admin, lifecycle, observe and power (behind the admin token) and
/// the agent API (NOT behind the token: agents are unauthenticated, as in Sidero; bound to
/// each agent boot's source address under `agent_policy`). All gRPC services are in one
/// `Routes` (tonic's router carries a fallback, and axum merges only one).
// Every service is built once in app.rs and handed in here (one construction path). The
// console admin service (`api::console`, built on `console::ConsoleState`) comes in as any
// `ConsoleAdmin`, so this room never names it (api/console.rs ↔ http/console was a circle).
#[allow(clippy::too_many_arguments)]
pub fn router(
    state: HttpState,
    admin: AdminService,
    console_admin: impl ConsoleAdmin,
    admin_token: Arc<str>,
    lifecycle: crate::reconcile::Lifecycle,
    power: crate::bmc::service::PowerService,
    agent_policy: crate::api::agent::AgentPolicy,
    provision: Option<crate::siderolink::provision::ProvisionApi>,
    certs: Option<crate::api::admin_certs::AdminCertsService>,
) -> Router {
    use appliance_rpc::agent::agent_server::AgentServer;
    use appliance_rpc::lifecycle::lifecycle_server::LifecycleServer;
    use appliance_rpc::observe::observe_server::ObserveServer;
    use appliance_rpc::power::power_server::PowerServer;
    let auth = admin_auth(admin_token, state.metrics.clone());
    let boot_routes = boot::routes(state.boot.clone());
    let timeline = state.boot.timeline.clone();
    let console = console::router(state.console.clone());
    let grpc = Routes::new(AdminServer::with_interceptor(admin, auth.clone()))
        .add_service(ConsoleAdminServer::with_interceptor(
            console_admin,
            auth.clone(),
        ))
        .add_service(AgentServer::new(
            crate::api::agent::AgentService::new(
                lifecycle.clone(),
                state.metrics.agent.clone(),
                agent_policy,
                state.boot.decider.first_contact.clone(),
            )
            .recording(state.boot.timeline.clone()),
        ))
        .add_service(LifecycleServer::with_interceptor(
            crate::api::lifecycle::LifecycleService::new(lifecycle.clone()),
            auth.clone(),
        ))
        .add_service(ObserveServer::with_interceptor(
            crate::api::observe::ObserveService::new(state.logs.clone()),
            auth.clone(),
        ))
        .add_service(PowerServer::with_interceptor(power, auth.clone()));
    // Client certificates of the mTLS admin port (token only), when that port is on.
    let grpc = match certs {
        Some(c) => grpc.add_service(
            appliance_rpc::admin::admin_certs_server::AdminCertsServer::with_interceptor(
                c,
                auth.clone(),
            ),
        ),
        None => grpc,
    };
    // SideroLink Provision (unauthenticated, as in Sidero), when SideroLink is on.
    let grpc = match provision {
        Some(p) => grpc.add_service(
            appliance_rpc::siderolink::provision_service_server::ProvisionServiceServer::new(p),
        ),
        None => grpc,
    }
    .into_axum_router()
    .layer(axum::middleware::from_fn(grpc_only));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .with_state(state)
        .merge(boot_routes)
        .merge(console)
        .merge(crate::metadata::router(lifecycle.store().clone(), timeline))
        .merge(grpc)
        .fallback(unknown_path)
}

fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}

/// The gRPC services see gRPC requests only: anything else on their paths is a 404.
async fn grpc_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if is_grpc(req.headers()) {
        next.run(req).await
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// A request no route took: a gRPC call (content-type `application/grpc…`) to an unknown
/// method gets grpc-status 12 (UNIMPLEMENTED) as tonic answers it; anything else a 404.
async fn unknown_path(headers: axum::http::HeaderMap) -> axum::response::Response {
    if is_grpc(&headers) {
        tonic::Status::unimplemented("").into_http::<axum::body::Body>()
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// The router of the mTLS admin port (`tls`): the admin, lifecycle and power services,
/// for clients whose certificate the TLS handshake already verified (no token). gRPC only:
/// other paths 404, unknown methods UNIMPLEMENTED.
pub fn admin_tls_router(
    admin: AdminService,
    lifecycle: crate::reconcile::Lifecycle,
    power: crate::bmc::service::PowerService,
) -> Router {
    use appliance_rpc::lifecycle::lifecycle_server::LifecycleServer;
    use appliance_rpc::power::power_server::PowerServer;
    Routes::new(AdminServer::new(admin))
        .add_service(LifecycleServer::new(
            crate::api::lifecycle::LifecycleService::new(lifecycle),
        ))
        .add_service(PowerServer::new(power))
        .into_axum_router()
        .layer(axum::middleware::from_fn(grpc_only))
        .fallback(unknown_path)
}
