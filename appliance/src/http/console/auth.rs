//! Console authentication: the login page, `POST /api/v1/login` (admin token or console
//! password; counted per client address before the secret is looked at, throttled per
//! address and globally, password verifications bounded by `verify`; answers where to go
//! next), logout, the session cookie, and the `require_session` middleware (session lookup,
//! CSRF token and Origin check on mutating calls) in front of every other page and API call.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::assets::asset_response;
use super::{CSRF_HEADER, ConsoleState, SESSION_COOKIE, error, random_hex};
use crate::clock;
use crate::console::redirect;
use crate::console::session::{LoginMethod, constant_time_eq, cookie_value};
use crate::console::throttle::{self, Refusal};
use crate::console::{self, password, view};

/// The address a login is counted against: the TCP peer, or what a trusted proxy says
/// (`console::throttle::client_addr`).
fn client_addr(state: &ConsoleState, req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    throttle::client_addr(
        peer,
        &forwarded,
        &state.inner.config.console.trusted_proxies,
    )
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie_value(h, SESSION_COOKIE).map(str::to_string))
}

pub(super) async fn login_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers)
        && state
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .is_live(&id, clock::now())
    {
        return Redirect::to("/").into_response();
    }
    asset_response("login.html", &headers, "no-cache")
}

/// The session of this request, found by `require_session`.
#[derive(Debug, Clone)]
pub(super) struct SessionCtx {
    pub(super) id: String,
    pub(super) csrf: String,
    pub(super) method: LoginMethod,
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

pub(super) async fn require_session(
    State(state): State<ConsoleState>,
    mut req: Request,
    next: Next,
) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let now = clock::now();
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
    /// Where the login page was asked to go afterwards (answered as a safe `next`).
    #[serde(default)]
    next: Option<String>,
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
    retry_later(msg, secs)
}

fn retry_later(message: String, secs: u64) -> Response {
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, message);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits"),
    );
    resp
}

pub(super) async fn login(State(state): State<ConsoleState>, req: Request) -> Response {
    let ip = client_addr(&state, &req);
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
    let is_token = constant_time_eq(body.secret.trim(), &state.inner.token);
    // Counted before the secret is looked at: concurrent guesses cannot outrun the count.
    let begun =
        state
            .inner
            .throttle
            .lock()
            .expect("throttle lock")
            .begin(ip, clock::now(), is_token);
    let attempt = match begun {
        Ok(a) => a,
        Err(r) => {
            let stats = state.login_stats();
            match r {
                Refusal::Client { .. } => &stats.refused_client,
                Refusal::Global { .. } => &stats.refused_global,
            }
            .inc();
            return too_many(r);
        }
    };
    let method = if is_token {
        Some(LoginMethod::Token)
    } else {
        let Some(slot) = state.inner.verify.enter().await else {
            state
                .inner
                .throttle
                .lock()
                .expect("throttle lock")
                .abandoned(attempt);
            state.login_stats().refused_busy.inc();
            return retry_later(
                "too many logins are being checked right now; try again in a moment".into(),
                1,
            );
        };
        let st = state.clone();
        let secret = body.secret;
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = slot;
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
            .failed(attempt, clock::now());
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
        .succeeded(attempt, clock::now());
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
        clock::now(),
    );
    tracing::info!(client = %ip, method = method.as_str(), "console login");
    let next = redirect::safe_next(body.next.as_deref().unwrap_or(redirect::HOME));
    let mut resp =
        Json(json!({ "csrf": csrf, "method": method.as_str(), "next": next })).into_response();
    let max_age = console::session::ABSOLUTE_TIMEOUT.as_secs();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, &id, max_age));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) async fn logout(
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

pub(super) async fn session_info(axum::Extension(s): axum::Extension<SessionCtx>) -> Response {
    Json(json!({
        "csrf": s.csrf,
        "method": s.method.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": view::capabilities(None, view::wipe_capability(None)),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn next_is_percent_encoded() {
        assert_eq!(percent_encode("/servers/a b?x=1"), "/servers/a%20b%3Fx%3D1");
    }
}
