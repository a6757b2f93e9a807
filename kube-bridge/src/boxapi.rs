//! The bridge's only way into a box: its admin and lifecycle gRPC APIs (`appliance-rpc`),
//! authenticated with the admin token on the box's plain admin port.
//!
//! The box's objects reach the sync loop as a [`Feed`]: [`BoxClient::poll`] asks the box for
//! its store revision and, when it moved, lists every kind the bridge mirrors (a re-list).
//! A change stream that resumes from a revision answers the same type with
//! [`Feed::Changes`], so the loop does not care which one feeds it.

use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{ApplyRequest, DeleteRequest, GetRequest, StatusRequest};
use appliance_rpc::lifecycle::lifecycle_client::LifecycleClient;
use appliance_rpc::lifecycle::{AllocateRequest, ReleaseRequest};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
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
    #[error("box refused: {0}")]
    Refused(Status),
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
                BoxError::Unreachable(s.message().to_string())
            }
            _ => BoxError::Refused(s),
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Token(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
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

/// Every mirrored object of one box at one store revision: kind → name → object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub revision: u64,
    pub objects: BTreeMap<String, BTreeMap<String, BoxObject>>,
}

impl Snapshot {
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
    Unchanged,
    /// Everything, at the snapshot's revision (the first read, a poll, or after "too old").
    Relist(Snapshot),
    /// The changes after the last revision, in commit order.
    Changes {
        revision: u64,
        changes: Vec<Change>,
    },
}

impl Snapshot {
    /// Folds a feed into this view of the box.
    pub fn absorb(&mut self, feed: Feed) {
        match feed {
            Feed::Unchanged => {}
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
                self.revision = revision;
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

/// A connected box.
#[derive(Clone)]
pub struct BoxClient {
    admin: AdminClient<Svc>,
    lifecycle: LifecycleClient<Svc>,
}

impl BoxClient {
    /// A lazily connecting client: the box may be down now and come back later.
    pub fn new(url: &str, token: &str) -> Result<BoxClient, BoxError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| BoxError::Endpoint(url.into(), e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .tcp_keepalive(Some(Duration::from_secs(20)))
            .http2_keep_alive_interval(Duration::from_secs(20));
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| BoxError::Endpoint(url.into(), "the token is not printable".into()))?;
        let channel = endpoint.connect_lazy();
        let token = Token(value);
        Ok(BoxClient {
            admin: AdminClient::with_interceptor(channel.clone(), token.clone())
                .max_decoding_message_size(256 << 20),
            lifecycle: LifecycleClient::with_interceptor(channel, token),
        })
    }

    /// The box's store revision.
    pub async fn revision(&self) -> Result<u64, BoxError> {
        let reply = self.admin.clone().status(StatusRequest {}).await?;
        Ok(reply.into_inner().store_revision)
    }

    /// Everything the bridge mirrors, read kind by kind. The revision is read first, so a
    /// change committed during the listing is seen again by the next poll.
    pub async fn snapshot(&self) -> Result<Snapshot, BoxError> {
        let revision = self.revision().await?;
        let mut objects = BTreeMap::new();
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
        Ok(Snapshot { revision, objects })
    }

    /// What changed since `since` (0: never read). Polls the store revision and re-lists when
    /// it moved.
    pub async fn poll(&self, since: u64) -> Result<Feed, BoxError> {
        if since != 0 && self.revision().await? == since {
            return Ok(Feed::Unchanged);
        }
        Ok(Feed::Relist(self.snapshot().await?))
    }

    /// Creates or replaces objects (one YAML/JSON stream, one transaction on the box).
    pub async fn apply(&self, documents: String) -> Result<(), BoxError> {
        self.admin
            .clone()
            .apply(ApplyRequest {
                documents,
                dry_run: false,
            })
            .await?;
        Ok(())
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
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
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
            Ok(r) => Ok(AllocateOutcome::Allocated(r.into_inner().server)),
            Err(s) if s.code() == Code::AlreadyExists => {
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
            Ok(_) => Ok(true),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(false),
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
        let relist = Snapshot {
            revision: 9,
            objects: [(
                "Server".to_string(),
                [("u3".to_string(), obj(9, json!({})))].into(),
            )]
            .into(),
        };
        s.absorb(Feed::Relist(relist.clone()));
        assert_eq!(s, relist, "a re-list replaces the view");
        s.absorb(Feed::Unchanged);
        assert_eq!(s, relist);
    }
}
