//! An in-test Kubernetes API server, small and strict: only what kube-bridge and kubectl use.
//! Discovery (`/api`, `/apis`, resource lists), `/version`, `/openapi/v3`; get/list/watch with
//! resourceVersion, bookmarks and 410 Gone from a compacted revision; create, update, JSON
//! patch, JSON merge patch, server-side apply (managed fields, 409 conflicts, force), the status
//! subresource, finalizers and deletionTimestamp, Leases; CRDs register their kinds and are
//! checked against their structural schema (`fieldValidation` Strict/Warn/Ignore). Anything
//! else is refused (unknown query parameters, patch types, paths), so a client that needs
//! more fails loudly instead of being answered wrongly. Plain HTTP, on 127.0.0.1 unless told.
//!
//! A library for kube-bridge's tests (its dev-dependency) and a binary
//! (`kube-test-apiserver`, `src/main.rs`) for tests that run the bridge somewhere the test
//! process cannot serve from (qemu-tests' lab network namespace). Never shipped.

pub mod openapi;
pub mod schema;
pub mod ssa;
pub mod store;
pub mod table;
pub mod types;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use ssa::Scope;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{FieldValidation, Selector, State, Write};
use types::{ResourceType, status};

/// The Kubernetes version `/version` reports (the k8s-openapi feature the crate uses).
pub const VERSION: (&str, &str) = ("1", "33");

/// A running server; stops when dropped.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<State>>,
    bookmark_every: Duration,
    down: Arc<AtomicBool>,
}

impl ApiServer {
    /// Starts on an ephemeral port with its own runtime thread. `retain_events` bounds the
    /// watch history (older revisions answer 410 Gone).
    pub fn start(retain_events: usize) -> ApiServer {
        ApiServer::start_on(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            retain_events,
        )
    }

    /// Starts on `listener` (already bound), with its own runtime thread.
    pub fn start_on(listener: std::net::TcpListener, retain_events: usize) -> ApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(State::new(retain_events)));
        let down = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            state: state.clone(),
            bookmark_every: Duration::from_millis(500),
            down: down.clone(),
        };
        // Bound by the caller (std), served on the runtime: start() may be called from async
        // tests.
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let ctx = ctx.clone();
                async move { handle(ctx, method, uri, headers, body).await }
            },
        );
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap()
        });
        ApiServer {
            addr,
            state,
            down,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file for this server in `dir` (plain HTTP, no credentials).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// An outage: while down, every request answers 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Runs `f` on the state (to inspect it or to play a controller writing directly).
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response<Body> {
    let mut r = Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json");
    for w in warnings {
        r = r.header("Warning", format!("299 - {:?}", w));
    }
    r.body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn fail((code, body): (u16, Value)) -> Response<Body> {
    json_response(code, &body, &[])
}

/// The apiserver's answer for a path that names no known resource (or a subresource or scope it
/// does not have).
fn no_such_resource() -> Response<Body> {
    fail((
        404,
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        ),
    ))
}

fn bad_request(message: &str) -> Response<Body> {
    fail((400, status(400, "BadRequest", message, None)))
}

/// A parsed resource path.
struct Target {
    group: String,
    version: String,
    namespace: String,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let (plural, name, subresource) = match rest {
        [p] => (p.to_string(), None, None),
        [p, n] => (p.to_string(), Some(n.to_string()), None),
        [p, n, s] => (p.to_string(), Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Target {
        group,
        version,
        namespace,
        plural,
        name,
        subresource,
    })
}

async fn handle(
    ctx: Ctx,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .map(|q| q.0)
                .unwrap_or_else(|_| vec![("?".into(), q.into())])
        })
        .unwrap_or_default();
    let param = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    if ctx.down.load(Ordering::SeqCst) {
        return json_response(
            503,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503, "message": "the API server is down (a test outage)"}),
            &[],
        );
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();

    if method == Method::GET {
        match path.as_str() {
            "/version" => {
                return json_response(
                    200,
                    &json!({
                        "major": VERSION.0, "minor": VERSION.1, "gitVersion": format!("v{}.{}.0", VERSION.0, VERSION.1),
                        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                        "buildDate": "2025-12-05T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
                    }),
                    &[],
                );
            }
            "/api" => {
                return json_response(
                    200,
                    &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
                    &[],
                );
            }
            "/apis" => {
                let st = ctx.state.lock().unwrap();
                return json_response(200, &discovery_groups(&st), &[]);
            }
            // OpenAPI v2 is protobuf-only for kubectl; an empty document (zero bytes is a valid
            // empty message) says "no v2 schemas" and kubectl uses /openapi/v3 instead.
            "/openapi/v2" => {
                return Response::builder()
                    .status(200)
                    .header(
                        header::CONTENT_TYPE,
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    )
                    .body(Body::empty())
                    .unwrap();
            }
            p if p == "/openapi/v3" || p.starts_with("/openapi/v3/") => {
                let st = ctx.state.lock().unwrap();
                return match openapi::serve(&st, p) {
                    Some(doc) => json_response(200, &doc, &[]),
                    None => no_such_resource(),
                };
            }
            _ => {}
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let st = ctx.state.lock().unwrap();
        match segs.as_slice() {
            ["api", v] | ["apis", _, v] => {
                let group = if segs[0] == "api" { "" } else { segs[1] };
                if let Some(list) = discovery_resources(&st, group, v) {
                    return json_response(200, &list, &[]);
                }
            }
            ["apis", g] => {
                if let Some(grp) = discovery_groups(&st)["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == *g)
                {
                    let mut grp = grp.clone();
                    grp["kind"] = json!("APIGroup");
                    grp["apiVersion"] = json!("v1");
                    return json_response(200, &grp, &[]);
                }
            }
            _ => {}
        }
    }

    let Some(target) = parse_target(&path) else {
        return no_such_resource();
    };
    let t = {
        let st = ctx.state.lock().unwrap();
        st.find(&target.group, &target.version, &target.plural)
    };
    let Some(t) = t else {
        return no_such_resource();
    };
    if !t.namespaced && !target.namespace.is_empty() {
        return no_such_resource();
    }
    let scope = match target.subresource.as_deref() {
        None => Scope::Main {
            status_subresource: t.status_subresource,
        },
        Some("status") if t.status_subresource => Scope::Status,
        Some(_) => {
            return no_such_resource();
        }
    };

    let collection = target.name.is_none();
    let allowed: &[&str] = match (&method, collection) {
        (&Method::GET, true) => &[
            "watch",
            "resourceVersion",
            "resourceVersionMatch",
            "allowWatchBookmarks",
            "timeoutSeconds",
            "fieldSelector",
            "labelSelector",
            "limit",
            "continue",
            "sendInitialEvents",
        ],
        (&Method::GET, false) => &["resourceVersion"],
        (&Method::POST, true) | (&Method::PUT, false) => {
            &["fieldManager", "fieldValidation", "dryRun"]
        }
        (&Method::PATCH, false) => &["fieldManager", "fieldValidation", "dryRun", "force"],
        (&Method::DELETE, false) => &["dryRun", "propagationPolicy", "gracePeriodSeconds"],
        _ => {
            return fail((
                405,
                status(
                    405,
                    "MethodNotAllowed",
                    &format!("{method} is not supported here"),
                    None,
                ),
            ));
        }
    };
    if let Some((k, _)) = query
        .iter()
        .find(|(k, _)| k != "pretty" && !allowed.contains(&k.as_str()))
    {
        return bad_request(&format!(
            "unsupported query parameter {k:?} for {method} {path}"
        ));
    }
    let dry_run = match param("dryRun") {
        None => false,
        Some("All") => true,
        Some(other) => return bad_request(&format!("unsupported dryRun {other:?}")),
    };
    let validation = match param("fieldValidation") {
        None | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => return bad_request(&format!("invalid fieldValidation {other:?}")),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let default_manager = user_agent.split('/').next().unwrap_or("unknown").to_owned();
    let manager = param("fieldManager")
        .map(str::to_owned)
        .unwrap_or(default_manager);
    if manager.len() > 128 {
        return bad_request("fieldManager: Too long: may not be more than 128 bytes");
    }
    let ns = target.namespace.clone();
    let w = Write {
        manager: &manager,
        validation,
        dry_run,
    };

    match (method.clone(), target.name.clone()) {
        (Method::GET, None) => {
            let selector = match Selector::parse(param("fieldSelector"), param("labelSelector")) {
                Ok(s) => s,
                Err(e) => return bad_request(&e),
            };
            if param("watch").is_some_and(|w| w == "true" || w == "1") {
                let timeout = param("timeoutSeconds")
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs);
                let bookmarks = param("allowWatchBookmarks") == Some("true");
                let initial = param("sendInitialEvents") == Some("true");
                return watch(
                    ctx,
                    t,
                    ns,
                    selector,
                    param("resourceVersion").unwrap_or("").to_owned(),
                    bookmarks,
                    initial,
                    timeout,
                );
            }
            let st = ctx.state.lock().unwrap();
            let list = st.list(&t, &ns, &selector);
            if accept.contains("as=Table") {
                let rv = list["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                return json_response(
                    200,
                    &table::table(&t, list["items"].as_array().unwrap(), &rv),
                    &[],
                );
            }
            json_response(200, &list, &[])
        }
        (Method::GET, Some(name)) => {
            let st = ctx.state.lock().unwrap();
            match st.get(&t, &ns, &name) {
                Ok(o) if accept.contains("as=Table") => {
                    let rv = o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    json_response(200, &table::table(&t, &[o], &rv), &[])
                }
                Ok(o) => json_response(200, &o, &[]),
                Err(f) => fail(f),
            }
        }
        (Method::POST, None) => {
            let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                return bad_request("the body is not JSON");
            };
            let mut st = ctx.state.lock().unwrap();
            match st.create(&t, &ns, obj, w, None) {
                Ok((o, w)) => json_response(201, &o, &w),
                Err(f) => fail(f),
            }
        }
        (Method::PUT, Some(name)) => {
            let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                return bad_request("the body is not JSON");
            };
            let mut st = ctx.state.lock().unwrap();
            match st.replace(&t, &ns, &name, obj, scope, w, None) {
                Ok((o, w)) => json_response(200, &o, &w),
                Err(f) => fail(f),
            }
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            patch(
                &ctx,
                &t,
                &ns,
                &name,
                content_type,
                &body,
                scope,
                w,
                param("force") == Some("true"),
                param("fieldManager").is_some(),
            )
        }
        (Method::DELETE, Some(name)) => {
            let mut st = ctx.state.lock().unwrap();
            match st.delete(&t, &ns, &name, dry_run) {
                Ok((code, o)) => json_response(code, &o, &[]),
                Err(f) => fail(f),
            }
        }
        _ => fail((405, status(405, "MethodNotAllowed", "not supported", None))),
    }
}

#[allow(clippy::too_many_arguments)]
fn patch(
    ctx: &Ctx,
    t: &ResourceType,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    scope: Scope,
    w: Write<'_>,
    force: bool,
    explicit_manager: bool,
) -> Response<Body> {
    let Write {
        manager,
        validation,
        ..
    } = w;
    let mut st = ctx.state.lock().unwrap();
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => {
            let Ok(p) = serde_json::from_slice::<Value>(body) else {
                return bad_request("the patch is not JSON");
            };
            let live = match st.get(t, ns, name) {
                Ok(o) => o,
                Err(f) => return fail(f),
            };
            let mut merged = live;
            merge_patch(&mut merged, &p);
            match st.replace(t, ns, name, merged, scope, w, None) {
                Ok((o, w)) => json_response(200, &o, &w),
                Err(f) => fail(f),
            }
        }
        "application/json-patch+json" => {
            let Ok(ops) = serde_json::from_slice::<Vec<Value>>(body) else {
                return bad_request("the patch is not a JSON array of operations");
            };
            let mut patched = match st.get(t, ns, name) {
                Ok(o) => o,
                Err(f) => return fail(f),
            };
            if let Err(why) = json_patch(&mut patched, &ops) {
                return fail((422, status(422, "Invalid", &why, None)));
            }
            match st.replace(t, ns, name, patched, scope, w, None) {
                Ok((o, w)) => json_response(200, &o, &w),
                Err(f) => fail(f),
            }
        }
        "application/apply-patch+yaml" => {
            if !explicit_manager {
                return bad_request("PATCH, application/apply-patch+yaml requires fieldManager");
            }
            let config: Value = match yaml_serde::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(&format!("error decoding YAML: {e}")),
            };
            if config["metadata"]["name"] != name {
                return bad_request("the name of the object does not match the name on the URL");
            }
            // Check the applied configuration itself first (types, unknown fields).
            if let Some(schema) = &t.schema {
                let mut probe = config.clone();
                let errors = crate::schema::admit(schema, &mut probe);
                let unknown: Vec<String> = errors
                    .iter()
                    .filter(|e| e.kind == crate::schema::Problem::Unknown)
                    .map(|e| format!("unknown field \"{}\"", e.path))
                    .collect();
                if validation == FieldValidation::Strict && !unknown.is_empty() {
                    return fail((
                        400,
                        status(
                            400,
                            "BadRequest",
                            &format!("strict decoding error: {}", unknown.join(", ")),
                            None,
                        ),
                    ));
                }
            }
            let live = st.owners(t, ns, name);
            let exists = live.is_some();
            let now = store::rfc3339(st.now);
            let (merged, owners) =
                match store::apply_merge(live, &config, t, scope, manager, &now, force) {
                    Ok(x) => x,
                    Err(f) => return fail(f),
                };
            let result = if exists {
                st.replace(t, ns, name, merged, scope, w, Some(owners))
                    .map(|(o, w)| (200, o, w))
            } else if scope == Scope::Status {
                Err((404, types::not_found(t, name)))
            } else {
                st.create(t, ns, merged, w, Some(owners))
                    .map(|(o, w)| (201, o, w))
            };
            match result {
                Ok((code, o, w)) => json_response(code, &o, &w),
                Err(f) => fail(f),
            }
        }
        other => fail((
            415,
            status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
                None,
            ),
        )),
    }
}

/// RFC 6902 JSON patch (`add`, `remove`, `replace`, `test`), all or nothing. `Err` says which
/// operation failed and why.
pub fn json_patch(target: &mut Value, ops: &[Value]) -> Result<(), String> {
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let kind = op["op"].as_str().ok_or(format!("operation {i}: no op"))?;
        let path = op["path"]
            .as_str()
            .ok_or(format!("operation {i}: no path"))?;
        let tokens: Vec<String> = if path.is_empty() {
            vec![]
        } else {
            path.strip_prefix('/')
                .ok_or(format!("operation {i}: path {path:?} must start with /"))?
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect()
        };
        let Some((last, parents)) = tokens.split_last() else {
            return Err(format!(
                "operation {i}: the whole document cannot be patched"
            ));
        };
        let mut parent = &mut doc;
        for t in parents {
            parent = match parent {
                Value::Object(m) => m.get_mut(t),
                Value::Array(a) => t.parse::<usize>().ok().and_then(|n| a.get_mut(n)),
                _ => None,
            }
            .ok_or(format!("operation {i} ({kind} {path}): missing path"))?;
        }
        let missing = || format!("operation {i} ({kind} {path}): missing path");
        match (kind, parent) {
            ("test", p) => {
                let got = match p {
                    Value::Object(m) => m.get(last),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|n| a.get(n)),
                    _ => None,
                };
                // A missing member tests equal to null (as the apiserver's json-patch library does).
                if got.unwrap_or(&Value::Null) != &op["value"] {
                    return Err(format!("operation {i}: testing value {path} failed"));
                }
            }
            ("add" | "replace", Value::Object(m)) => {
                if kind == "replace" && !m.contains_key(last) {
                    return Err(missing());
                }
                m.insert(last.clone(), op["value"].clone());
            }
            ("add", Value::Array(a)) => {
                let n = if last == "-" {
                    a.len()
                } else {
                    last.parse().map_err(|_| missing())?
                };
                if n > a.len() {
                    return Err(missing());
                }
                a.insert(n, op["value"].clone());
            }
            ("replace", Value::Array(a)) => {
                let n: usize = last.parse().map_err(|_| missing())?;
                *a.get_mut(n).ok_or_else(missing)? = op["value"].clone();
            }
            ("remove", Value::Object(m)) => {
                m.remove(last).ok_or_else(missing)?;
            }
            ("remove", Value::Array(a)) => {
                let n: usize = last.parse().map_err(|_| missing())?;
                if n >= a.len() {
                    return Err(missing());
                }
                a.remove(n);
            }
            (other, _) if !matches!(other, "add" | "remove" | "replace") => {
                return Err(format!("operation {i}: unsupported op {other:?}"));
            }
            _ => return Err(missing()),
        }
    }
    *target = doc;
    Ok(())
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn discovery_groups(st: &State) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (g, v, _) in st.types.keys() {
        if g.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(name, _)| name == g) {
            Some((_, vs)) if !vs.contains(v) => vs.push(v.clone()),
            Some(_) => {}
            None => groups.push((g.clone(), vec![v.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[versions.len() - 1]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn discovery_resources(st: &State, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = st
        .types
        .values()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// A watch: replays retained events after `rv` (or the current objects for `""`/`"0"`), then
/// follows the feed; 410 Gone as an ERROR event when `rv` was compacted; bookmarks when asked.
#[allow(clippy::too_many_arguments)]
fn watch(
    ctx: Ctx,
    t: ResourceType,
    ns: String,
    selector: Selector,
    rv: String,
    bookmarks: bool,
    initial: bool,
    timeout: Option<Duration>,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1024);
    let line = |type_: &str, object: &Value| {
        let mut b = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap();
        b.push(b'\n');
        Bytes::from(b)
    };
    let matches = {
        let t = t.clone();
        let ns = ns.clone();
        move |e: &store::Event| {
            e.group == t.group
                && e.plural == t.plural
                && (ns.is_empty() || e.namespace == ns)
                && selector.matches(&e.object)
        }
    };
    let mut replay: Vec<Bytes> = Vec::new();
    let (mut feed, mut last_rv) = {
        let mut st = ctx.state.lock().unwrap();
        let feed = st.feed.subscribe();
        let from: u64 = match rv.as_str() {
            "" | "0" => {
                let list = st.list(&t, &ns, &Selector::default());
                for o in list["items"].as_array().unwrap() {
                    let e = store::Event {
                        rv: 0,
                        group: t.group.clone(),
                        plural: t.plural.clone(),
                        namespace: o["metadata"]["namespace"].as_str().unwrap_or("").into(),
                        type_: "ADDED",
                        object: o.clone(),
                    };
                    if matches(&e) {
                        replay.push(line("ADDED", o));
                    }
                }
                st.rv
            }
            n => match n.parse::<u64>() {
                Ok(n) if n < st.compacted => {
                    st.gone_answers += 1;
                    let gone = status(
                        410,
                        "Expired",
                        &format!("too old resource version: {n} ({})", st.compacted + 1),
                        None,
                    );
                    replay.push(line("ERROR", &gone));
                    u64::MAX
                }
                Ok(n) => {
                    for e in st.events.iter().filter(|e| e.rv > n && matches(e)) {
                        let mut o = e.object.clone();
                        o["apiVersion"] = json!(t.api_version());
                        replay.push(line(e.type_, &o));
                    }
                    n.max(st.events.back().map_or(n, |e| e.rv))
                }
                Err(_) => return bad_request(&format!("invalid resourceVersion {n:?}")),
            },
        };
        (
            feed,
            if from == u64::MAX {
                None
            } else {
                Some(st.rv.max(from))
            },
        )
    };
    let bookmark = {
        let t = t.clone();
        move |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line(
                "BOOKMARK",
                &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": meta}),
            )
        }
    };
    let every = ctx.bookmark_every;
    let down = ctx.down.clone();
    tokio::spawn(async move {
        for b in replay {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let Some(mut last) = last_rv.take() else {
            return;
        };
        if bookmarks && initial && tx.send(Ok(bookmark(last, true))).await.is_err() {
            return;
        }
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut outage = tokio::time::interval(Duration::from_millis(20));
        loop {
            let sleep_until =
                deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = outage.tick() => if down.load(Ordering::SeqCst) { return; },
                e = feed.recv() => match e {
                    _ if down.load(Ordering::SeqCst) => return,
                    Ok(e) if e.rv > last && matches(&e) => {
                        last = e.rv;
                        let mut o = e.object.clone();
                        o["apiVersion"] = json!(t.api_version());
                        if tx.send(Ok(line(e.type_, &o))).await.is_err() { return; }
                    }
                    Ok(e) => last = last.max(e.rv),
                    Err(_) => return, // lagged or closed: the client re-watches
                },
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(last, false))).await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(sleep_until) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Transfer-Encoding", "chunked")
        .body(Body::from_stream(stream))
        .unwrap()
}
