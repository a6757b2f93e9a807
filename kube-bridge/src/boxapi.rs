//! The bridge's only way into a box: its admin and lifecycle gRPC APIs (`appliance-rpc`),
//! over the box's mTLS admin port with the bridge's enrolled client certificate
//! ([`crate::boxtls`]), or on the box itself over its plain admin port with the admin token.
//!
//! The box's objects reach the sync loop as [`Feed`]s from [`BoxClient::follow`]: it lists
//! every kind the bridge mirrors once ([`Feed::Relist`]), then follows the box's admin
//! `Watch` stream from the list's revision ([`Feed::Changes`], bookmarks included). A broken
//! stream (the box restarted, the network went) is resumed from the last revision seen; a
//! revision the box has compacted away (`OUT_OF_RANGE`, "list again") is a re-list. A box
//! without `Watch` (older than its change log) is not served: the bridge says so and retries.
//!
//! Every write the bridge makes on the box records the store revision the box answered
//! ([`BoxClient::written`]): the sync loop compares it with its view (see `sync.rs`).

use crate::boxtls;
use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{
    ApplyRequest, ChangeType, DeleteRequest, GetRequest, SetTalosconfigRequest, StatusRequest,
    WatchRequest,
};
use appliance_rpc::lifecycle::lifecycle_client::LifecycleClient;
use appliance_rpc::lifecycle::{AllocateRequest, ReleaseRequest};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The kinds the bridge mirrors, as the box names them.
pub const KINDS: [&str; 4] = ["Server", "ServerClass", "Environment", "ServerBinding"];

/// Annotation on a box ServerBinding naming the owner it was allocated to.
pub const OWNER_ANNOTATION: &str = "appliance.sidero.dev/owner";

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("box endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("box unreachable: {0}")]
    Unreachable(String),
    #[error(
        "the box refused this bridge's client certificate at TLS (revoked, not enrolled on this box, or from another box's CA): enroll again (`appliance ctl bridge enroll NAME`) and update --credentials; retrying ({0})"
    )]
    CertificateRefused(String),
    #[error("box refused: {0}")]
    Refused(Status),
    #[error("the box has no admin Watch API (it is older than its change log): update it")]
    NoWatch,
    #[error("box sent an object that is not JSON ({kind} {name}): {error}")]
    BadObject {
        kind: String,
        name: String,
        error: String,
    },
}

impl From<Status> for BoxError {
    fn from(s: Status) -> Self {
        match s.code() {
            Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled => {
                // The transport's reason is in the source chain, not the message.
                let mut text = s.message().to_string();
                let mut source = std::error::Error::source(&s);
                while let Some(e) = source {
                    text.push_str(": ");
                    text.push_str(&e.to_string());
                    source = e.source();
                }
                if boxtls::client_refused(&text) {
                    BoxError::CertificateRefused(text)
                } else {
                    BoxError::Unreachable(text)
                }
            }
            _ => BoxError::Refused(s),
        }
    }
}

/// How the bridge proves itself to the box.
#[derive(Debug, Clone)]
pub enum Auth {
    /// mTLS with an enrolled client certificate (`https://` box URL).
    Tls(Arc<boxtls::Credentials>),
    /// The admin token (`http://` box URL, the box's plain admin port).
    Token(String),
}

/// Adds `authorization: Bearer <token>` to every call (nothing over mTLS).
#[derive(Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Token>;

/// One object as the box stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxObject {
    pub revision: u64,
    pub json: Value,
}

/// Every mirrored object of one box: kind → name → object.
///
/// Each kind is listed at its own store revision (one `Get` per kind). `revision` is the
/// oldest of them, where the change stream resumes, and every change after it is folded in
/// as it comes; `settled` is the newest: once `revision` reaches it, changes replayed over
/// kinds listed later have been overwritten by their later ones, and the view is the box's
/// state at `revision` ([`Snapshot::consistent`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub revision: u64,
    pub settled: u64,
    pub objects: BTreeMap<String, BTreeMap<String, BoxObject>>,
}

impl Snapshot {
    /// The view is the box's state at one revision (see the type's doc).
    pub fn consistent(&self) -> bool {
        self.revision >= self.settled
    }

    pub fn kind(&self, kind: &str) -> impl Iterator<Item = (&String, &BoxObject)> {
        self.objects.get(kind).into_iter().flatten()
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<&BoxObject> {
        self.objects.get(kind).and_then(|m| m.get(name))
    }

    /// The server allocated to `owner` (from the owner annotation of its ServerBinding).
    pub fn allocation_of(&self, owner: &str) -> Option<&str> {
        self.kind("ServerBinding")
            .find(|(_, b)| {
                b.json["metadata"]["annotations"][OWNER_ANNOTATION].as_str() == Some(owner)
            })
            .map(|(n, _)| n.as_str())
    }
}

/// One committed change from a box's change stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: String,
    pub name: String,
    pub revision: u64,
    /// `None`: deleted.
    pub object: Option<Value>,
}

/// What the box says since the revision the bridge last saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// Everything (the first read, or after "too old").
    Relist(Snapshot),
    /// The changes after the last revision, in commit order, complete up to `revision` (a
    /// bookmark is a `Changes` without changes).
    Changes { revision: u64, changes: Vec<Change> },
}

impl Snapshot {
    /// Folds a feed into this view of the box.
    pub fn absorb(&mut self, feed: Feed) {
        match feed {
            Feed::Relist(s) => *self = s,
            Feed::Changes { revision, changes } => {
                for c in changes {
                    let kind = self.objects.entry(c.kind).or_default();
                    match c.object {
                        Some(json) => {
                            kind.insert(
                                c.name,
                                BoxObject {
                                    revision: c.revision,
                                    json,
                                },
                            );
                        }
                        None => {
                            kind.remove(&c.name);
                        }
                    }
                }
                self.revision = self.revision.max(revision);
            }
        }
    }
}

/// Why an allocation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocateOutcome {
    Allocated(String),
    /// The owner already holds this server (an earlier allocation the bridge did not see
    /// answered): nothing was allocated twice.
    AlreadyHeld(String),
    /// No server is available (class empty, unknown class or server, server busy).
    Unavailable(String),
}

/// What [`BoxClient::follow`] tells the sync loop.
#[derive(Debug)]
pub enum BoxEvent {
    Feed(Feed),
    /// The stream broke and the box does not answer (said once per outage); the view is
    /// kept, and followed again from its revision when the box returns.
    Down(BoxError),
}

/// How long an idle change stream waits before the box sends a bookmark. Short, because a
/// bookmark is what brings the view up to the revision of a bridge write that changed no
/// mirrored object (or whose answer named a later revision), and the sync loop waits for
/// that (see `sync.rs`).
pub const BOOKMARK_MS: u32 = 200;

/// Why one [`BoxClient::follow_once`] returned without an error.
enum Stop {
    /// The sync loop is gone.
    Closed,
    /// Follow again (resume, or re-list when `since` was reset).
    Ended,
}

/// A connected box.
#[derive(Clone)]
pub struct BoxClient {
    admin: AdminClient<Svc>,
    lifecycle: LifecycleClient<Svc>,
    /// The newest store revision a write of this bridge was answered with.
    written: Arc<AtomicU64>,
}

impl BoxClient {
    /// A lazily connecting client: the box may be down now and come back later.
    pub fn new(url: &str, auth: Auth) -> Result<BoxClient, BoxError> {
        let bad = |why: String| BoxError::Endpoint(url.into(), why);
        let channel_url = match &auth {
            Auth::Tls(_) => boxtls::channel_uri(url)
                .ok_or_else(|| bad("an mTLS box URL starts with https://".into()))?,
            Auth::Token(_) => url.to_string(),
        };
        let endpoint = Endpoint::from_shared(channel_url)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .tcp_keepalive(Some(Duration::from_secs(20)))
            .http2_keep_alive_interval(Duration::from_secs(20));
        let (channel, token) = match auth {
            Auth::Tls(credentials) => (boxtls::connect_lazy(&endpoint, credentials), Token(None)),
            Auth::Token(token) => {
                let value = format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| bad("the token is not printable".into()))?;
                (endpoint.connect_lazy(), Token(Some(value)))
            }
        };
        Ok(BoxClient {
            admin: AdminClient::with_interceptor(channel.clone(), token.clone())
                .max_decoding_message_size(256 << 20),
            lifecycle: LifecycleClient::with_interceptor(channel, token),
            written: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The newest store revision one of this client's writes (apply, delete, allocate,
    /// release) was answered with. A write that found its work already done (a delete of a
    /// gone object, an allocation already held) records the box's revision at that moment,
    /// since the change that did it may be newer than what the bridge has seen.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    fn wrote(&self, revision: u64) {
        self.written.fetch_max(revision, Ordering::SeqCst);
    }

    /// Records the box's current revision (see [`BoxClient::written`]); an unreachable box
    /// fails the write that asked.
    async fn wrote_now(&self) -> Result<(), BoxError> {
        let r = self.revision().await?;
        self.wrote(r);
        Ok(())
    }

    /// The box's store revision.
    pub async fn revision(&self) -> Result<u64, BoxError> {
        let reply = self.admin.clone().status(StatusRequest {}).await?;
        Ok(reply.into_inner().store_revision)
    }

    /// Everything the bridge mirrors, listed kind by kind (each `Get` answers the revision
    /// it read at: see [`Snapshot`]).
    pub async fn snapshot(&self) -> Result<Snapshot, BoxError> {
        let mut objects = BTreeMap::new();
        let (mut oldest, mut newest) = (u64::MAX, 0);
        for kind in KINDS {
            let reply = self
                .admin
                .clone()
                .get(GetRequest {
                    kind: kind.to_string(),
                    name: String::new(),
                })
                .await?
                .into_inner();
            oldest = oldest.min(reply.revision);
            newest = newest.max(reply.revision);
            let mut by_name = BTreeMap::new();
            for o in reply.objects {
                let json: Value =
                    serde_json::from_str(&o.json).map_err(|e| BoxError::BadObject {
                        kind: o.kind.clone(),
                        name: o.name.clone(),
                        error: e.to_string(),
                    })?;
                by_name.insert(
                    o.name,
                    BoxObject {
                        revision: o.revision,
                        json,
                    },
                );
            }
            objects.insert(kind.to_string(), by_name);
        }
        Ok(Snapshot {
            revision: oldest,
            settled: newest,
            objects,
        })
    }

    /// Follows the box for as long as `tx` is open: a re-list, then the change stream from
    /// the list's revision; after a broken stream the stream again from the last revision
    /// seen (every `retry` while the box does not answer); after `OUT_OF_RANGE` a re-list.
    pub async fn follow(self, tx: mpsc::Sender<BoxEvent>, retry: Duration) {
        let mut since = None;
        let mut down = false;
        // A failure is reported when it starts; a refused client certificate once more when
        // first seen (the same refusal may first show as a closed connection, by timing).
        let mut refusal_reported = false;
        loop {
            match self.follow_once(&mut since, &mut down, &tx).await {
                Ok(Stop::Closed) => return,
                Ok(Stop::Ended) => {}
                Err(e) => {
                    let refused = matches!(e, BoxError::CertificateRefused(_));
                    if !down {
                        refusal_reported = false;
                    }
                    if !down || (refused && !refusal_reported) {
                        refusal_reported |= refused;
                        tracing::warn!(error = %e, since = ?since, "box unreachable; the cluster side keeps its last view");
                        if tx.send(BoxEvent::Down(e)).await.is_err() {
                            return;
                        }
                    }
                    down = true;
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    /// One list (when `since` is `None`) and one stream; `since` advances with what is
    /// sent to `tx`, and is `None` again after `OUT_OF_RANGE`.
    async fn follow_once(
        &self,
        since: &mut Option<u64>,
        down: &mut bool,
        tx: &mpsc::Sender<BoxEvent>,
    ) -> Result<Stop, BoxError> {
        let from = match *since {
            Some(r) => r,
            None => {
                let snap = self.snapshot().await?;
                tracing::info!(
                    revision = snap.revision,
                    settled = snap.settled,
                    servers = snap.kind("Server").count(),
                    "listed the box"
                );
                *since = Some(snap.revision);
                let r = snap.revision;
                if tx.send(BoxEvent::Feed(Feed::Relist(snap))).await.is_err() {
                    return Ok(Stop::Closed);
                }
                r
            }
        };
        let req = WatchRequest {
            kinds: KINDS.iter().map(|k| k.to_string()).collect(),
            name: String::new(),
            since_revision: Some(from),
            bookmark_interval_ms: BOOKMARK_MS,
        };
        let mut stream = match self.admin.clone().watch(req).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::OutOfRange => {
                tracing::info!(since = from, reason = %s.message(), "the box's change log no longer reaches our revision; listing again");
                let store = s
                    .metadata()
                    .get("appliance-revision")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if let Some(store) = store.filter(|r| *r < from) {
                    // The box went back in time (its store restored from a backup): the
                    // bridge's writes after `store` are gone with it, and waiting for the
                    // view to reach their revisions would wait for ever.
                    tracing::warn!(
                        since = from,
                        store,
                        "the box's store is older than what the bridge has seen (restored from a backup?); its later writes are gone"
                    );
                    self.written.fetch_min(store, Ordering::SeqCst);
                }
                *since = None;
                return Ok(Stop::Ended);
            }
            Err(s) if s.code() == Code::Unimplemented => return Err(BoxError::NoWatch),
            Err(s) => return Err(s.into()),
        };
        if std::mem::take(down) {
            tracing::info!("box reachable again");
        }
        tracing::info!(since = from, "following the box's change stream");
        loop {
            let ev = match stream.message().await {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(Stop::Ended),
                Err(s) if s.code() == Code::OutOfRange => {
                    tracing::info!(since = ?*since, reason = %s.message(), "the change stream fell behind the box's change log; listing again");
                    *since = None;
                    return Ok(Stop::Ended);
                }
                Err(s) => return Err(s.into()),
            };
            let object = match ChangeType::try_from(ev.r#type) {
                Ok(ChangeType::Put) => {
                    Some(
                        serde_json::from_str(&ev.json).map_err(|e| BoxError::BadObject {
                            kind: ev.kind.clone(),
                            name: ev.name.clone(),
                            error: e.to_string(),
                        })?,
                    )
                }
                Ok(ChangeType::Delete) => None,
                Ok(ChangeType::Bookmark) => {
                    let r = ev.revision.max(since.unwrap_or(from));
                    *since = Some(r);
                    let feed = Feed::Changes {
                        revision: r,
                        changes: vec![],
                    };
                    if tx.send(BoxEvent::Feed(feed)).await.is_err() {
                        return Ok(Stop::Closed);
                    }
                    continue;
                }
                _ => continue,
            };
            *since = Some(ev.revision);
            let feed = Feed::Changes {
                revision: ev.revision,
                changes: vec![Change {
                    kind: ev.kind,
                    name: ev.name,
                    revision: ev.revision,
                    object,
                }],
            };
            if tx.send(BoxEvent::Feed(feed)).await.is_err() {
                return Ok(Stop::Closed);
            }
        }
    }

    /// Creates or replaces objects (one YAML/JSON stream, one transaction on the box).
    pub async fn apply(&self, documents: String) -> Result<(), BoxError> {
        let reply = self
            .admin
            .clone()
            .apply(ApplyRequest {
                documents,
                dry_run: false,
            })
            .await?
            .into_inner();
        self.wrote(reply.applied.iter().map(|a| a.revision).max().unwrap_or(0));
        Ok(())
    }

    /// Hands the box `cluster`'s talosconfig (Admin `SetTalosconfig`: checked there, sealed
    /// in its store, used to reset released servers without a BMC through the Talos API).
    /// Returns the context whose credentials the box will use.
    pub async fn set_talosconfig(
        &self,
        cluster: &str,
        talosconfig: Vec<u8>,
    ) -> Result<String, BoxError> {
        let reply = self
            .admin
            .clone()
            .set_talosconfig(SetTalosconfigRequest {
                cluster: cluster.to_string(),
                talosconfig,
            })
            .await?
            .into_inner();
        Ok(reply.context)
    }

    /// Deletes one object; an object already gone is not an error.
    pub async fn delete(&self, kind: &str, name: &str) -> Result<(), BoxError> {
        match self
            .admin
            .clone()
            .delete(DeleteRequest {
                kind: kind.to_string(),
                name: name.to_string(),
            })
            .await
        {
            Ok(r) => {
                self.wrote(r.into_inner().revision);
                Ok(())
            }
            Err(s) if s.code() == Code::NotFound => self.wrote_now().await,
            Err(s) => Err(s.into()),
        }
    }

    /// Allocates a server to `owner` from a class or by name: the box picks (Sidero's
    /// selection), and holds one server per owner, so asking twice never allocates twice.
    pub async fn allocate(
        &self,
        owner: &str,
        class: Option<&str>,
        server: Option<&str>,
        bootstrap_data: &str,
    ) -> Result<AllocateOutcome, BoxError> {
        let req = AllocateRequest {
            server_class: class.unwrap_or_default().to_string(),
            server: server.unwrap_or_default().to_string(),
            owner: owner.to_string(),
            bootstrap_data: bootstrap_data.to_string(),
            config_patches: String::new(),
            environment: String::new(),
        };
        match self.lifecycle.clone().allocate(req).await {
            Ok(r) => {
                let r = r.into_inner();
                self.wrote(r.revision);
                Ok(AllocateOutcome::Allocated(r.server))
            }
            Err(s) if s.code() == Code::AlreadyExists => {
                self.wrote_now().await?;
                // "owner `o` already holds server `s`"
                let held = s
                    .message()
                    .rsplit('`')
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                Ok(AllocateOutcome::AlreadyHeld(held))
            }
            Err(s)
                if matches!(
                    s.code(),
                    Code::FailedPrecondition | Code::NotFound | Code::ResourceExhausted
                ) =>
            {
                Ok(AllocateOutcome::Unavailable(s.message().to_string()))
            }
            Err(s) => Err(s.into()),
        }
    }

    /// Releases what `owner` holds; `Ok(false)` when it held nothing.
    pub async fn release(&self, owner: &str) -> Result<bool, BoxError> {
        match self
            .lifecycle
            .clone()
            .release(ReleaseRequest {
                owner: owner.to_string(),
                server: String::new(),
            })
            .await
        {
            Ok(r) => {
                self.wrote(r.into_inner().revision);
                Ok(true)
            }
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {
                self.wrote_now().await?;
                Ok(false)
            }
            Err(s) => Err(s.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(rev: u64, v: Value) -> BoxObject {
        BoxObject {
            revision: rev,
            json: v,
        }
    }

    #[test]
    fn changes_fold_into_the_view_and_find_owners() {
        let mut s = Snapshot::default();
        s.absorb(Feed::Changes {
            revision: 7,
            changes: vec![
                Change {
                    kind: "ServerBinding".into(),
                    name: "u1".into(),
                    revision: 6,
                    object: Some(
                        json!({"metadata": {"name": "u1", "annotations": {OWNER_ANNOTATION: "ns/m1"}}}),
                    ),
                },
                Change {
                    kind: "Server".into(),
                    name: "u2".into(),
                    revision: 7,
                    object: Some(json!({})),
                },
            ],
        });
        assert_eq!(s.revision, 7);
        assert_eq!(s.allocation_of("ns/m1"), Some("u1"));
        assert_eq!(s.allocation_of("ns/m2"), None);
        s.absorb(Feed::Changes {
            revision: 8,
            changes: vec![Change {
                kind: "ServerBinding".into(),
                name: "u1".into(),
                revision: 8,
                object: None,
            }],
        });
        assert_eq!(s.allocation_of("ns/m1"), None);
        assert!(s.get("Server", "u2").is_some());
        // A re-list whose kinds were read at revisions 9 (Server) and 11 (ServerBinding):
        // the stream resumes from 9 and replays 10 (u3 changed, ServerBinding u4 made) and
        // 11 (u4 deleted, already absent from the later list).
        let relist = Snapshot {
            revision: 9,
            settled: 11,
            objects: [(
                "Server".to_string(),
                [("u3".to_string(), obj(9, json!({"v": 1})))].into(),
            )]
            .into(),
        };
        s.absorb(Feed::Relist(relist.clone()));
        assert_eq!(s, relist, "a re-list replaces the view");
        assert!(!s.consistent());
        s.absorb(Feed::Changes {
            revision: 10,
            changes: vec![
                Change {
                    kind: "Server".into(),
                    name: "u3".into(),
                    revision: 10,
                    object: Some(json!({"v": 2})),
                },
                Change {
                    kind: "ServerBinding".into(),
                    name: "u4".into(),
                    revision: 10,
                    object: Some(json!({})),
                },
            ],
        });
        assert!(!s.consistent(), "u4 replayed, its delete not yet");
        s.absorb(Feed::Changes {
            revision: 11,
            changes: vec![Change {
                kind: "ServerBinding".into(),
                name: "u4".into(),
                revision: 11,
                object: None,
            }],
        });
        assert!(s.consistent());
        assert!(s.get("ServerBinding", "u4").is_none());
        assert_eq!(s.get("Server", "u3").unwrap().json, json!({"v": 2}));
        // A bookmark moves the revision only forward.
        s.absorb(Feed::Changes {
            revision: 5,
            changes: vec![],
        });
        assert_eq!(s.revision, 11);
    }
}
