//! The console's view of the change feed: the recent-changes list (followed from the store
//! change feed, shown on the overview and server pages) and the live stream
//! `GET /api/v1/events` (SSE).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::ConsoleState;
use super::auth::SessionCtx;
use crate::clock;
use crate::console::view::{self, RecentEvent};
use crate::model::Kind;
use crate::store::{Change, ChangeOp};

impl ConsoleState {
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
            // The changes carry their objects: nothing is read from the store, and a
            // Server's detail is read from its typed fields (`view::change_detail`: a few
            // allocations), so the batch is described right here; handing it to the
            // blocking pool woke a pool thread and then this task again for every commit.
            let entries = describe(batch);
            {
                let mut ev = self.inner.events.lock().expect("events lock");
                for e in entries {
                    ev.push(e);
                }
            }
            // The server rows' receiver is drained here too, so that the feed does not hold
            // the changes' objects until the next page view.
            self.inner.rows.lock().expect("rows lock").absorb();
        }
    }

    pub(super) fn recent(&self, name: Option<&str>, limit: usize) -> Vec<RecentEvent> {
        let ev = self.inner.events.lock().expect("events lock");
        ev.iter()
            .rev()
            .filter(|e| name.is_none_or(|n| e.name == n && e.kind == "Server"))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// The recent-events entries of `batch`, from the objects the changes carry.
fn describe(batch: Vec<Change>) -> Vec<RecentEvent> {
    let at = crate::clock::unix_secs();
    batch
        .into_iter()
        .map(|c| {
            let detail = match (c.kind, c.op, &c.object) {
                (Kind::Server, ChangeOp::Put, Some(object)) => view::change_detail(object),
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

/// Server-sent events: one `change` event per committed store change, `resync` when this
/// client fell behind (reload everything), and a keep-alive comment every 15 s. The stream
/// ends when the session does.
pub(super) async fn events(
    State(state): State<ConsoleState>,
    axum::Extension(s): axum::Extension<SessionCtx>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    // Paced by the browser: a client that stops reading must not keep committed objects
    // alive in the feed, and this stream sends only names anyway.
    let rx = state.inner.store.subscribe_without_objects();
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
                .is_live(&s.id, clock::now())
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
    use std::sync::Arc;

    use super::*;
    use crate::model::Object;

    #[test]
    fn a_change_is_described_from_the_object_it_carries() {
        let object = crate::model::parse_documents(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n  cordoned: true\n",
        )
        .unwrap()
        .remove(0);
        let detail = view::change_detail(&object);
        assert!(detail.ends_with(", cordoned"), "{detail}");
        let change = |op, object: Option<Object>| Change {
            revision: 7,
            kind: Kind::Server,
            name: "s1".into(),
            op,
            object: object.map(Arc::new),
        };
        let described = describe(vec![
            change(ChangeOp::Put, Some(object)),
            change(ChangeOp::Delete, None),
        ]);
        let got: Vec<_> = described
            .iter()
            .map(|e| {
                (
                    e.revision,
                    e.kind.as_str(),
                    e.name.as_str(),
                    e.op,
                    e.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (7, "Server", "s1", "put", detail.as_str()),
                (7, "Server", "s1", "delete", "")
            ]
        );
    }
}
