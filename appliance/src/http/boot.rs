//! The network-boot routes on :8081: `/boot.ipxe` (generic chain script), `/ipxe` (the
//! per-server decision), `/tftp/<file>` (iPXE binaries over HTTP, for UEFI HTTP boot) and
//! `/env/<name>/{vmlinuz,initramfs.xz,initrd}` (Environment assets, streamed with Range).
//!
//! Thin glue: reads the store, calls the pure decision (`crate::boot`) and renderer
//! (`crate::protocol::ipxe`), and streams files from disk without loading them whole.
//! Environment assets in the box's own cache (which it only ever replaces by rename) are
//! memory-mapped, one shared map per file version, and handed to hyper as one buffer: bytes
//! go from the page cache to the socket with no read copy and no blocking-pool hop.
//! `/tftp/` files and an operator's agent directory may be rewritten in place, so they are
//! read in chunks.
//! Every request on these routes is logged as `HTTP <method> <path> <remote> -> <status>`:
//! the path only, never the query string (it may carry tokens).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use crate::boot::answer::{self, Answer, Decider, Note, asset_paths};
use crate::boot::assets::{self, Asset, AssetDirs, EnvSpec};
use crate::boot::{Arch, is_agent_environment};
use crate::model::{Kind, Object, meta::validate_name};
use crate::net::tftp_root::{RootError, TftpRoot};
use crate::protocol::http_range::{self, RangeAnswer};
use crate::protocol::ipxe::query::IpxeQuery;
use crate::protocol::ipxe::{self, EnvironmentBoot};
use crate::store::{Store, StoreError};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// What the boot routes need; built once in `app.rs`.
#[derive(Debug)]
pub struct BootContext {
    pub store: Store,
    pub dirs: AssetDirs,
    /// Root of `/tftp/<file>` and where its links may lead (config `tftp.root`,
    /// `tftp.link_targets`): the same resolver as TFTP.
    pub tftp: Arc<TftpRoot>,
    /// Config `boot.advertise` ("host:port"), used in absolute URLs when set.
    pub advertise: Option<String>,
    /// Used when neither `advertise` nor a Host header gives an endpoint.
    pub fallback_endpoint: String,
    /// The boot decision and kernel arguments, shared with the GRUB configs.
    pub decider: Arc<Decider>,
    /// Admin token for the upload API.
    pub admin_token: Arc<str>,
    /// One shared memory map per served Environment asset.
    pub maps: MappedFiles,
    /// The boot timeline: `/boot.ipxe`, `/ipxe` decisions and kernel/initrd fetches.
    pub timeline: Recorder,
}

/// Read-only memory maps of Environment asset files, one per file version (device, inode,
/// size, mtime), shared by the downloads running at the same time: concurrent boots read
/// the same pages and the process maps each file once. The table holds the maps weakly, so
/// a map is unmapped when its last download ends (a replaced or deleted file's space is
/// never held after that); the next boot maps the file again from the page cache.
#[derive(Debug, Default)]
pub struct MappedFiles {
    maps: std::sync::Mutex<
        std::collections::HashMap<PathBuf, (FileVersion, std::sync::Weak<memmap2::Mmap>)>,
    >,
}

/// A shared map as the owner of a response body's bytes.
struct SharedMap(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> FileVersion {
        use std::os::unix::fs::MetadataExt;
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

impl MappedFiles {
    fn get(
        &self,
        path: &Path,
        file: &tokio::fs::File,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<axum::body::Bytes> {
        let version = FileVersion::of(meta);
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let live = maps
            .get(path)
            .filter(|(v, _)| *v == version)
            .and_then(|(_, weak)| weak.upgrade());
        let map = match live {
            Some(map) => map,
            None => {
                let map = Arc::new(map_file(file)?);
                maps.retain(|_, (_, weak)| weak.strong_count() > 0);
                maps.insert(path.to_path_buf(), (version, Arc::downgrade(&map)));
                map
            }
        };
        Ok(axum::body::Bytes::from_owner(SharedMap(map)))
    }

    fn forget(&self, path: &Path) {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }
}

/// The boot routes, with request logging.
pub fn routes(ctx: Arc<BootContext>) -> Router {
    Router::new()
        .route("/boot.ipxe", get(boot_ipxe))
        .route("/ipxe", get(ipxe))
        .route("/tftp/{*path}", get(tftp_file))
        .route("/env/{name}/{file}", get(env_file))
        .route(
            "/api/v1/environments/{name}/{asset}",
            put(upload).get(upload_check),
        )
        .layer(middleware::from_fn(log_request))
        .with_state(ctx)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // The path only: a query string may carry a token (`/ipxe?…&token=`), never logged.
    let path = req.uri().path().to_string();
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "-".into());
    let resp = next.run(req).await;
    tracing::info!(
        target: "appliance::http::boot",
        "HTTP {method} {path} {remote} -> {}",
        resp.status().as_u16()
    );
    resp
}

/// The HTTP peer's address (an IPv4-mapped IPv6 one as IPv4).
fn peer_ip(conn: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    conn.map(|Extension(ConnectInfo(a))| match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn boot_ipxe(
    State(ctx): State<Arc<BootContext>>,
    headers: HeaderMap,
    conn: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let ip = peer_ip(conn);
    ctx.timeline.record(
        Who {
            ip,
            ..Default::default()
        },
        Step::BootScript,
        Outcome::Ok,
        "",
    );
    // Absolute, as Sidero: the script's `dhcp` makes iPXE reset its working URI to
    // tftp://<next-server>/ when a DHCP server sets next-server (the site's server beside
    // us in proxy mode), and a relative /ipxe would then go there (found by qemu-tests).
    let url = format!("http://{}/ipxe", endpoint(&ctx, &headers));
    // A client that came over IPv6 configures its NICs over IPv6 again.
    let ipv6 = matches!(ip, Some(std::net::IpAddr::V6(_)));
    text(StatusCode::OK, ipxe::chain_script_for(&url, ipv6))
}

/// `host:port` for absolute URLs: config `advertise`, else the Host header, else the
/// listen address.
fn endpoint(ctx: &BootContext, headers: &HeaderMap) -> String {
    if let Some(a) = &ctx.advertise {
        return a.clone();
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| ctx.fallback_endpoint.clone())
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %crate::error_chain(e), "store read failed");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("store read failed: {}\n", crate::error_chain(e)),
    )
}

fn env_script(name: &str, args: &[String]) -> Response {
    let (kernel, initrd) = asset_paths(name);
    match ipxe::environment_script(&EnvironmentBoot {
        kernel_url: &kernel,
        initrd_url: &initrd,
        args,
    }) {
        Ok(s) => text(StatusCode::OK, s),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("environment \"{name}\" cannot be rendered: {e}\n"),
        ),
    }
}

async fn ipxe(
    State(ctx): State<Arc<BootContext>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    conn: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let query = IpxeQuery::parse(raw.as_deref());
    let mac = query.mac;
    let endpoint = endpoint(&ctx, &headers);
    let req = answer::Request {
        uuid: &query.uuid,
        arch: Arch::from_query(&query.arch),
        mac,
        endpoint: &endpoint,
    };
    let mut note = Note::default();
    let resp = match ctx.decider.answer(&req, &mut note).await {
        Answer::Disk(method) => {
            let r = ipxe::boot_from_disk(method);
            text(
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                r.body,
            )
        }
        Answer::Kernel { environment, args } => env_script(&environment, &args),
        Answer::Refused { status, message } => text(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{message}\n"),
        ),
    };
    let status = resp.status();
    let outcome = if status.is_success() {
        Outcome::Ok
    } else if status.is_server_error() {
        Outcome::Failed
    } else {
        Outcome::Refused
    };
    if !status.is_success() && note.detail.is_empty() {
        note.detail = format!("answered {}", status.as_u16());
    }
    ctx.timeline.record(
        Who {
            server: note.server,
            mac,
            ip: peer_ip(conn),
            ..Default::default()
        },
        note.step,
        outcome,
        note.detail,
    );
    resp
}

/// `/tftp/<file>`: the name is checked lexically as TFTP checks it, and must be in its
/// plain form (no `.`, empty or `\` components, no leading `/`); the file is then found
/// by the same resolver as TFTP (`net::tftp_root`: links only to files inside the root or
/// the allowed targets, never as directories).
async fn tftp_file(
    State(ctx): State<Arc<BootContext>>,
    UrlPath(path): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let rel = match crate::protocol::tftp::path::resolve(&path) {
        Ok(rel) if rel.to_str() == Some(path.as_str()) => rel,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("refused path {path:?}: only plain names below the TFTP root are served\n"),
            );
        }
    };
    match ctx.tftp.resolve_async(rel).await {
        Ok(full) => serve_file(&full, &method, &headers, FileBody::Read, None).await,
        Err(RootError::NotFound | RootError::NotRegular) => {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
        Err(e) if e.is_refusal() => {
            tracing::warn!(file = %path, "HTTP /tftp/ refused: {}", crate::error_chain(&e));
            text(StatusCode::FORBIDDEN, format!("refused: {e}\n"))
        }
        Err(e) => {
            tracing::warn!(file = %path, "HTTP /tftp/ failed: {}", crate::error_chain(&e));
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}

async fn env_file(
    State(ctx): State<Arc<BootContext>>,
    UrlPath((name, file)): UrlPath<(String, String)>,
    method: Method,
    headers: HeaderMap,
    conn: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    if !is_agent_environment(&name) && validate_name(&name).is_err() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("refused environment name {name:?}\n"),
        );
    }
    let Some(asset) = Asset::from_file_name(&file) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such asset {file:?} (vmlinuz, initramfs.xz or initrd)\n"),
        );
    };
    let path = ctx.dirs.file(&name, asset);
    // Only files under the box's own env cache are replaced by rename alone; an operator's
    // agent directory (`boot.agent_dir`) may be rewritten in place, so it is read.
    let body = if path.starts_with(&ctx.dirs.env_root) {
        FileBody::Mapped(&ctx.maps)
    } else {
        FileBody::Read
    };
    let meter = Meter {
        timeline: ctx.timeline.clone(),
        who: Who {
            ip: peer_ip(conn),
            ..Default::default()
        },
        step: match asset {
            Asset::Kernel => Step::Kernel,
            Asset::Initrd => Step::Initrd,
        },
        detail: format!("{name}/{file}"),
        began_ms: ctx.timeline.now_ms(),
        began: crate::clock::now(),
    };
    let resp = serve_file(&path, &method, &headers, body, Some(meter.clone())).await;
    if !resp.status().is_success() && method != Method::HEAD {
        meter.timeline.record(
            meter.who,
            meter.step,
            Outcome::Refused,
            format!("{}: answered {}", meter.detail, resp.status().as_u16()),
        );
    }
    resp
}

/// Measures one asset download for the boot timeline: bytes handed to the connection and
/// the time until the last of them (or until the client went away).
#[derive(Clone)]
pub struct Meter {
    timeline: Recorder,
    who: Who,
    step: Step,
    detail: String,
    began_ms: u64,
    began: std::time::Instant,
}

/// Frames handed to hyper at most this big, so the body ends about when its bytes went
/// out (hyper asks for the next frame once it has written the last), not when one huge
/// mapped buffer was queued.
const METER_FRAME: usize = 1 << 20;

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send>>;

/// A body stream that reports its download to the timeline when it ends or is dropped.
struct Metered {
    inner: ByteStream,
    pending: Option<axum::body::Bytes>,
    sent: u64,
    expected: u64,
    meter: Option<Meter>,
}

impl Metered {
    fn finish(&mut self) {
        let Some(m) = self.meter.take() else { return };
        let (outcome, detail) = if self.sent == self.expected {
            (Outcome::Ok, m.detail)
        } else {
            (
                Outcome::Failed,
                format!(
                    "{}: client went away after {} of {} bytes",
                    m.detail, self.sent, self.expected
                ),
            )
        };
        m.timeline.transfer(
            m.began_ms,
            m.who,
            m.step,
            outcome,
            detail,
            self.sent,
            m.began.elapsed(),
        );
    }
}

impl futures_util::Stream for Metered {
    type Item = std::io::Result<axum::body::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        let next = match this.pending.take() {
            Some(b) => b,
            None => match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => b,
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                other => return other,
            },
        };
        let mut chunk = next;
        if chunk.len() > METER_FRAME {
            this.pending = Some(chunk.split_off(METER_FRAME));
        }
        this.sent += chunk.len() as u64;
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The response body: measured when a meter is given.
fn body_of(stream: ByteStream, expected: u64, meter: Option<Meter>) -> Body {
    match meter {
        Some(meter) => Body::from_stream(Metered {
            inner: stream,
            pending: None,
            sent: 0,
            expected,
            meter: Some(meter),
        }),
        None => Body::from_stream(stream),
    }
}

/// Bytes per read while streaming a file.
const CHUNK: usize = 256 * 1024;

/// How `serve_file` produces the body.
#[derive(Debug, Clone, Copy)]
pub enum FileBody<'a> {
    /// Chunked reads: safe for any file.
    Read,
    /// A read-only memory map. Only for files that are replaced by rename, never truncated
    /// or rewritten in place (a mapping keeps the old inode alive; a file shrunk in place
    /// under it would fault the reader).
    Mapped(&'a MappedFiles),
}

/// Serves one regular file with single-range support; never reads it whole into memory.
pub async fn serve_file(
    path: &Path,
    method: &Method,
    headers: &HeaderMap,
    body: FileBody<'_>,
    meter: Option<Meter>,
) -> Response {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let FileBody::Mapped(maps) = body {
                maps.forget(path);
            }
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open file to serve");
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let len = meta.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, count) = match http_range::answer(range, len) {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Body::from(format!(
                    "range not satisfiable: file has {len} bytes\n"
                )))
                .unwrap_or_else(|_| StatusCode::RANGE_NOT_SATISFIABLE.into_response());
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    if *method == Method::HEAD {
        return builder
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if let FileBody::Mapped(maps) = body
        && count > 0
    {
        match maps.get(path, &file, &meta) {
            Ok(map) => {
                // Both ends were checked against `len` by `http_range::answer`.
                let (from, to) = (start as usize, (start + count) as usize);
                if to <= map.len() {
                    let bytes = map.slice(from..to);
                    let body = match meter {
                        Some(m) => body_of(
                            Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
                            count,
                            Some(m),
                        ),
                        None => Body::from(bytes),
                    };
                    return builder
                        .body(body)
                        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "mmap failed; reading instead");
            }
        }
    }
    if start > 0 {
        use tokio::io::AsyncSeekExt;
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            tracing::warn!(path = %path.display(), error = %e, "seek failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "seek failed\n");
        }
    }
    file.set_max_buf_size(CHUNK);
    use tokio::io::AsyncReadExt;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), CHUNK);
    builder
        .body(body_of(Box::pin(stream), count, meter))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Maps `file` read-only (see [`FileBody::Mapped`] for when that is safe).
#[allow(unsafe_code)] // mmap has no safe form; ARCHITECTURE.md lists this exception.
fn map_file(file: &tokio::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and private to this process; the callers only map
    // files that are replaced by atomic rename (the open inode is never modified), so the
    // memory stays valid and unchanged for as long as the map lives.
    let map = unsafe { memmap2::Mmap::map(file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// Largest accepted upload (a kernel or an initrd).
const MAX_UPLOAD: u64 = 8 << 30;

/// `PUT /api/v1/environments/<name>/{kernel,initrd}` with `authorization: Bearer <admin
/// token>`: streams the body into the cache (temp file + rename), computes its SHA-512,
/// refuses it (422) when the spec names a different digest, and records a ready condition.
/// `<name>` is a stored Environment, or a built-in agent environment (files only).
/// What an upload to `/api/v1/environments/<name>/<asset>` may write, once the token, the
/// asset name, the environment name and (for a non-agent environment) the Environment
/// object are checked; or the refusal to send.
async fn check_upload(
    ctx: &BootContext,
    headers: &HeaderMap,
    name: &str,
    asset: &str,
) -> Result<(Asset, Option<EnvSpec>), Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !crate::api::auth::check_bearer(bearer, &ctx.admin_token) {
        return Err(text(
            StatusCode::UNAUTHORIZED,
            "uploads need `authorization: Bearer <token>`; the token is in <data_dir>/admin.token\n",
        ));
    }
    let Some(asset) = Asset::parse(asset) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!("no asset {asset:?}: upload `kernel` or `initrd`\n"),
        ));
    };
    let agent = is_agent_environment(name);
    if !agent && validate_name(name).is_err() {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("refused environment name {name:?}\n"),
        ));
    }
    if agent {
        return Ok((asset, None));
    }
    let store = ctx.store.clone();
    let n = name.to_string();
    match tokio::task::spawn_blocking(move || store.get(Kind::Environment, &n)).await {
        Ok(Ok(Some(s))) => match &s.object {
            Object::Environment(e) => Ok((asset, Some(EnvSpec::from_environment(e)))),
            _ => Ok((asset, None)),
        },
        Ok(Ok(None)) => Err(text(
            StatusCode::NOT_FOUND,
            format!("environment \"{name}\" not found: apply it first, then upload its files\n"),
        )),
        Ok(Err(e)) => Err(internal(&e)),
        Err(e) => Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("environment lookup failed: {e}\n"),
        )),
    }
}

/// `GET /api/v1/environments/<name>/<asset>`: would an upload be accepted (same checks,
/// no body)? `appliance ctl env upload` asks first, because a refusal sent while a large
/// body is still streaming in can reach the client as a reset connection instead of the
/// status and message.
async fn upload_check(
    State(ctx): State<Arc<BootContext>>,
    UrlPath((name, asset)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match check_upload(&ctx, &headers, &name, &asset).await {
        Ok((asset, _)) => {
            let present = ctx.dirs.present(&name, asset);
            text(
                StatusCode::OK,
                format!(
                    "{} upload accepted; a file is {}\n",
                    asset.as_str(),
                    if present {
                        "present"
                    } else {
                        "not present yet"
                    }
                ),
            )
        }
        Err(refusal) => refusal,
    }
}

async fn upload(
    State(ctx): State<Arc<BootContext>>,
    UrlPath((name, asset)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (asset, spec) = match check_upload(&ctx, &headers, &name, &asset).await {
        Ok(ok) => ok,
        Err(refusal) => return refusal,
    };
    let expected = spec
        .as_ref()
        .map(|s| s.asset(asset).sha512.clone())
        .unwrap_or_default();
    let dest = ctx.dirs.file(&name, asset);
    let got = match receive(body, &dest, &expected).await {
        Ok(got) => got,
        Err((status, msg)) => {
            tracing::warn!(environment = %name, asset = asset.as_str(), error = %msg, "upload refused");
            return text(status, format!("{msg}\n"));
        }
    };
    if let Some(spec) = &spec {
        let cond = assets::AssetCondition {
            url: assets::condition_key(asset, spec.asset(asset)),
            sha512: got.sha512.clone(),
            ready: true,
            reason: "Uploaded".into(),
            message: if expected.is_empty() {
                format!("{} bytes uploaded", got.bytes)
            } else {
                format!("{} bytes uploaded, sha512 verified", got.bytes)
            },
        };
        let (store, dirs, n) = (ctx.store.clone(), ctx.dirs.clone(), name.clone());
        let written = tokio::task::spawn_blocking(move || {
            crate::boot::download::record_condition(&store, &dirs, &n, asset, &cond)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return internal(&e),
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("status write failed: {e}\n"),
                );
            }
        }
    }
    tracing::info!(environment = %name, asset = asset.as_str(), bytes = got.bytes, sha512 = %got.sha512, "environment asset uploaded");
    text(
        StatusCode::OK,
        format!(
            "{} {} bytes sha512 {}\n",
            asset.as_str(),
            got.bytes,
            got.sha512
        ),
    )
}

/// Streams an upload body into `dest` via a temp file, checking size and digest.
async fn receive(
    body: Body,
    dest: &Path,
    expected: &str,
) -> Result<crate::boot::download::Fetched, (StatusCode, String)> {
    use sha2::{Digest, Sha512};
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;
    let io_err = |what: &str, p: &Path, e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot {what} {}: {e}", p.display()),
        )
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io_err("create", dir, e))?;
    let mut rnd = [0u8; 6];
    let _ = getrandom::fill(&mut rnd);
    let file_name = dest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.upload-{}", hex::encode(rnd)));
    let result = async {
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_err("create", &tmp, e))?;
        let mut hasher = Sha512::new();
        let mut bytes = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("upload body broke off: {e}"),
                )
            })?;
            bytes += chunk.len() as u64;
            if bytes > MAX_UPLOAD {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("upload larger than {MAX_UPLOAD} bytes"),
                ));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| io_err("write", &tmp, e))?;
        }
        if bytes == 0 {
            return Err((StatusCode::BAD_REQUEST, "empty upload".to_string()));
        }
        out.sync_all().await.map_err(|e| io_err("sync", &tmp, e))?;
        let sha512 = hex::encode(hasher.finalize());
        if !expected.is_empty() && !sha512.eq_ignore_ascii_case(expected) {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "sha512 of the upload is {sha512}, the Environment spec asks for {expected}"
                ),
            ));
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| io_err("rename into", dest, e))?;
        Ok(crate::boot::download::Fetched { sha512, bytes })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(path: &Path) -> (tokio::fs::File, std::fs::Metadata) {
        let f = tokio::fs::File::open(path).await.unwrap();
        let m = f.metadata().await.unwrap();
        (f, m)
    }

    /// Downloads at the same time share one map; it is unmapped when the last one ends;
    /// a file replaced by rename is mapped anew.
    #[tokio::test]
    async fn maps_are_shared_while_in_use_and_dropped_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.xz");
        std::fs::write(&path, b"first version").unwrap();
        let maps = MappedFiles::default();
        let (f, m) = open(&path).await;
        let a = maps.get(&path, &f, &m).unwrap();
        let b = maps.get(&path, &f, &m).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "concurrent downloads share one map");
        let weak = maps.maps.lock().unwrap()[&path].1.clone();
        drop((a, b));
        assert!(weak.upgrade().is_none(), "unmapped after the last download");

        let tmp = dir.path().join("initramfs.xz.tmp");
        std::fs::write(&tmp, b"second, longer version").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let (f2, m2) = open(&path).await;
        let c = maps.get(&path, &f2, &m2).unwrap();
        assert_eq!(&c[..], b"second, longer version");
        assert_eq!(maps.maps.lock().unwrap().len(), 1);
    }
}
