//! The console's pages and embedded files: every page path serves the same `index.html`
//! shell, `/console/<file>` the scripts, styles and icon, with strong ETags (304 on a
//! match), a gzip copy for clients that accept it, and the security headers for HTML.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error;
use crate::console;

pub(super) fn asset_response(path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
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
pub(super) async fn serve_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file.ends_with(".html") {
        return error(StatusCode::NOT_FOUND, "pages are served at their own paths");
    }
    asset_response(&file, &headers, "public, max-age=3600, must-revalidate")
}

/// Every console page is the same shell; the script renders the view for the path.
pub(super) async fn page(headers: HeaderMap) -> Response {
    asset_response("index.html", &headers, "no-cache")
}
