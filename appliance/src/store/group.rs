//! Group commit for one kind of write transaction (e.g. the agents' CreateServer): calls
//! that arrive while a commit is in flight are run together in the next one, through
//! [`Store::transact_each`], so N concurrent callers share one fsync instead of queueing
//! for N. Each call keeps its own result (a failing call fails no other and leaves nothing
//! written) and is answered only after the commit that holds it returned.
//!
//! No long-running task: the first call that finds no commit running starts a run on
//! tokio's blocking pool, which commits the queue until it is empty; that call, like the
//! others, waits only for its own answer, not for the run's end. A caller that goes away (a
//! dropped future) does not stop that commit; its own write still lands or fails whole.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{Store, StoreError, Txn};

/// Most calls one transaction takes; bounds the latency one commit can add.
const MAX_CALLS_PER_COMMIT: usize = 256;

type Job<I, T, E> = dyn Fn(&mut Txn<'_>, &I) -> Result<T, E> + Send + Sync;

struct Queue<I, T, E> {
    pending: Vec<(I, oneshot::Sender<Result<T, E>>)>,
    /// A commit loop is running (it takes what is queued before it stops).
    running: bool,
}

/// Group-committed calls of one job; cheap to clone.
pub struct Group<I, T, E> {
    store: Store,
    job: Arc<Job<I, T, E>>,
    queue: Arc<Mutex<Queue<I, T, E>>>,
}

impl<I, T, E> Clone for Group<I, T, E> {
    fn clone(&self) -> Self {
        Group {
            store: self.store.clone(),
            job: self.job.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<I, T, E> std::fmt::Debug for Group<I, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("store", &self.store).finish()
    }
}

fn lock<Q>(m: &Mutex<Q>) -> MutexGuard<'_, Q> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<I, T, E> Group<I, T, E>
where
    I: Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    /// `job` is what one call does inside the shared transaction (see
    /// [`Store::transact_each`]: it must depend only on its input and the store).
    pub fn new(
        store: Store,
        job: impl Fn(&mut Txn<'_>, &I) -> Result<T, E> + Send + Sync + 'static,
    ) -> Group<I, T, E> {
        Group {
            store,
            job: Arc::new(job),
            queue: Arc::new(Mutex::new(Queue {
                pending: Vec::new(),
                running: false,
            })),
        }
    }

    /// Runs the job for `input` in the next group commit; returns its own result once that
    /// commit returned.
    pub async fn run(&self, input: I) -> Result<T, E> {
        let (reply, rx) = oneshot::channel();
        let start = {
            let mut q = lock(&self.queue);
            q.pending.push((input, reply));
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            // The call that found the queue idle starts the commits, which run until the
            // queue is empty; it waits, like the others, only for its own reply, not for the
            // commits of calls that came later (awaiting the whole run held its answer back
            // by up to the run's length: p99 100-180 ms under the agents bench). A panic
            // there drops the pending replies, which the `rx` below reports.
            let this = self.clone();
            drop(tokio::task::spawn_blocking(move || {
                this.commit_until_empty()
            }));
        }
        rx.await.map_err(|_| {
            E::from(StoreError::GroupCommit(
                "the commit holding this call stopped".into(),
            ))
        })?
    }

    fn commit_until_empty(&self) {
        // A panicking job must not leave the queue marked as served.
        struct Running<'a, I, T, E>(&'a Mutex<Queue<I, T, E>>);
        impl<I, T, E> Drop for Running<'_, I, T, E> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut q = lock(self.0);
                    q.running = false;
                    q.pending.clear();
                }
            }
        }
        let _guard = Running(&self.queue);
        loop {
            let batch: Vec<_> = {
                let mut q = lock(&self.queue);
                if q.pending.is_empty() {
                    q.running = false;
                    return;
                }
                let n = q.pending.len().min(MAX_CALLS_PER_COMMIT);
                q.pending.drain(..n).collect()
            };
            let (inputs, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
            match self.store.transact_each(&inputs, &*self.job) {
                Ok(results) => {
                    for (result, reply) in results.into_iter().zip(replies) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    let msg = crate::error_chain(&e);
                    tracing::error!(error = %msg, calls = replies.len(), "group commit failed");
                    for reply in replies {
                        let _ = reply.send(Err(E::from(StoreError::GroupCommit(msg.clone()))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Object, parse_documents};
    use crate::store::NewEvent;

    fn server(name: &str) -> Object {
        parse_documents(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  hostname: h\n"
        ))
        .unwrap()
        .remove(0)
    }

    /// Creates the server and an event; "bad-*" names fail after the put (so the failure
    /// comes after a write), "refused-*" before any.
    fn job(t: &mut Txn<'_>, name: &String) -> Result<u64, StoreError> {
        if name.starts_with("refused") {
            return Err(StoreError::GroupCommit(format!("{name} refused")));
        }
        let rev = t.put(&server(name))?;
        t.append_event(NewEvent {
            time_ms: 0,
            server: name.clone(),
            event: "test".into(),
            from: String::new(),
            to: String::new(),
            message: String::new(),
        })?;
        if name.starts_with("bad") {
            return Err(StoreError::GroupCommit(format!("{name} failed")));
        }
        Ok(rev)
    }

    #[test]
    fn a_failing_job_leaves_nothing_and_fails_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut feed = store.subscribe();
        let names: Vec<String> = ["a", "bad-1", "b", "refused-1", "c", "bad-2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let results = store.transact_each(&names, job).unwrap();
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, false, true, false]);
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "store commit failed: bad-1 failed"
        );
        // Revisions as if each good job had committed alone, in order.
        let revs: Vec<u64> = results.into_iter().filter_map(Result::ok).collect();
        assert_eq!(revs, [1, 2, 3]);
        assert_eq!(store.revision().unwrap(), 3);
        let stored: Vec<String> = store
            .list(Kind::Server)
            .unwrap()
            .into_iter()
            .map(|s| s.object.name().to_string())
            .collect();
        assert_eq!(stored, ["a", "b", "c"]);
        for name in ["a", "b", "c"] {
            assert_eq!(store.events(Some(name), 0).unwrap().len(), 1, "{name}");
        }
        for name in ["bad-1", "bad-2"] {
            assert!(store.events(Some(name), 0).unwrap().is_empty(), "{name}");
        }
        let published: Vec<u64> = std::iter::from_fn(|| feed.try_recv().ok())
            .map(|c| c.revision)
            .collect();
        assert_eq!(published, [1, 2, 3]);
    }

    #[test]
    fn only_failures_write_nothing_and_commit_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let names = vec!["bad-1".to_string(), "refused-1".to_string()];
        let results = store.transact_each(&names, job).unwrap();
        assert!(results.iter().all(Result::is_err));
        assert_eq!(store.revision().unwrap(), 0);
        assert!(store.is_empty().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_calls_share_commits_and_keep_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let group = Group::new(store.clone(), job);
        let mut tasks = Vec::new();
        for i in 0..64 {
            let g = group.clone();
            let name = if i % 8 == 3 {
                format!("bad-{i}")
            } else {
                format!("s{i}")
            };
            tasks.push(tokio::spawn(async move { (i, g.run(name).await) }));
        }
        let mut revisions = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            if i % 8 == 3 {
                assert!(r.is_err(), "bad-{i}");
            } else {
                revisions.push(r.unwrap());
            }
        }
        revisions.sort();
        revisions.dedup();
        assert_eq!(revisions.len(), 56, "every write has its own revision");
        assert_eq!(store.list(Kind::Server).unwrap().len(), 56);
        assert_eq!(store.revision().unwrap(), 56);
        // The loop stopped when the queue ran empty; a later call starts a new one.
        assert_eq!(group.run("late".to_string()).await.unwrap(), 57);
    }
}
