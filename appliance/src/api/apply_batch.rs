//! Group commit for admin applies: Apply calls that arrive while a commit is in flight are
//! written together in the next redb transaction, so N concurrent writers share one fsync
//! instead of queueing for N. Each call stays all-or-nothing (the shared transaction commits
//! or aborts as a whole) and its reply is sent only after that commit returned.
//!
//! Touches the store only through `Store::apply_answered`, with the completion given at
//! construction (the box gives the lifecycle's adoption, `reconcile::edits::adopt_applied`:
//! a Server applied without a lifecycle state is stored with it in the same commit). The task ([`ApplyTask::run`], spawned by
//! `app.rs`) stops taking calls on the shutdown signal, commits the calls already queued,
//! and ends; later calls are answered UNAVAILABLE.
//!
//! The commits run on a thread of their own (`apply-commit`), which takes the calls from the
//! channel itself: a call wakes one thread to be committed and its caller once answered,
//! where a tokio task handing each commit to the blocking pool woke four (the task, a pool
//! thread, the task again, the caller). With one writer that hand-off was a visible part of
//! each apply's latency.
//!
//! One writer goes further: a call that finds the commit thread waiting with nothing queued, after
//! `LONE_WRITER` commits in a row of one call each with no other call arriving meanwhile, and no
//! other call committing in place, commits in place, on the runtime thread that polls it, and is
//! answered there (still after its durable commit, before its changes are published). Why: handing
//! it to the commit thread and its answer back cost two thread wake-ups per apply. One writer,
//! `scripts/bench store`'s client, 5 pairs against the hand-off on this machine's disk: the box's
//! CPU per apply 491 -> 441 µs (median; lower in 5 of 5), context switches 12.3 -> 9.4, objects/s
//! higher in 3 (on a tmpfs data dir the rate was a toss-up). `block_in_place` instead was worse
//! than the hand-off (15 switches and ~330 µs CPU per apply against 8 and ~300 on tmpfs): it moves
//! the runtime's worker to another thread. It blocks that runtime thread for one commit (an
//! fdatasync), as a `spawn_blocking` awaited would not, which is why only one call at a time does
//! it and never while other calls are queued: calls that arrive meanwhile go to the commit thread
//! (redb runs the two commits one after the other), and then every call goes there until
//! `LONE_WRITER` one-call commits have come in a row again.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tonic::Status;

use crate::clock;
use crate::model::Object;
use crate::store::{Applied, NewEvent, Store, StoreError};

/// Run on each object an apply writes, inside its transaction (see `Store::apply_with`).
pub type Complete = fn(&mut Object, u64) -> Option<NewEvent>;

/// Most calls one transaction takes; bounds the latency one commit can add.
const MAX_CALLS_PER_COMMIT: usize = 256;

/// Longest wait for more calls before a commit (see [`commit_loop`]).
const MAX_LINGER: Duration = Duration::from_micros(500);

/// Commits in a row of one call each, with no other call arriving meanwhile, after which a
/// call may commit in place (see the module doc). Why more than one: with many writers a
/// one-call commit happens now and then, and a call committed in place there holds up the
/// runtime thread that would read the other writers' calls (16 writers, tmpfs, when one
/// such commit was enough: 92 -> 105 µs CPU per apply, median of 4 pairs).
const LONE_WRITER: u32 = 8;

/// How often the wait for more calls looks at the queue (see [`linger`]).
const LINGER_POLL: Duration = Duration::from_micros(50);

struct Job {
    objects: Vec<Object>,
    reply: oneshot::Sender<Result<Vec<Applied>, Status>>,
}

/// What the commit thread is sent: a call, or the shutdown (after which it commits what is
/// queued and ends).
enum Msg {
    Job(Job),
    Stop,
}

/// Handle to the group-commit task; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApplyBatcher {
    jobs: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

/// What the callers and the commit thread share: the store, and whether a call may commit
/// in place (see the module doc).
#[derive(Debug)]
struct Shared {
    store: Store,
    complete: Complete,
    state: Mutex<InPlace>,
    /// Told when an in-place commit ends (the shutdown waits for it).
    in_place_done: Notify,
}

#[derive(Debug, Default)]
struct InPlace {
    /// The commit thread waits for a call with nothing queued.
    thread_idle: bool,
    /// Commits in a row (on the thread or in place) of one call, with no other call
    /// arriving meanwhile: one writer.
    singles: u32,
    /// A call commits in place now.
    in_place: bool,
    /// The shutdown began: every call goes through the queue.
    stopped: bool,
}

fn lock(m: &Mutex<InPlace>) -> MutexGuard<'_, InPlace> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("objects", &self.objects.len())
            .finish()
    }
}

/// The group-commit task; run it with [`ApplyTask::run`].
#[derive(Debug)]
pub struct ApplyTask {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    /// Sends the shutdown; weak, so that the task ends when every handle is gone.
    stop: mpsc::WeakSender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Job(job) => job.fmt(f),
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

impl ApplyBatcher {
    /// The handle and the task that must be spawned (`ApplyTask::run`); `complete` runs
    /// on each object written, in the apply's transaction.
    pub fn new(store: Store, complete: Complete) -> (ApplyBatcher, ApplyTask) {
        let (jobs, rx) = mpsc::channel(1024);
        let stop = jobs.downgrade();
        let shared = Arc::new(Shared {
            store,
            complete,
            state: Mutex::new(InPlace::default()),
            in_place_done: Notify::new(),
        });
        (
            ApplyBatcher {
                jobs,
                shared: shared.clone(),
            },
            ApplyTask { shared, rx, stop },
        )
    }

    /// Writes `objects` (already validated) durably; returns what happened to each.
    pub async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Applied>, Status> {
        if self.claim_in_place() {
            return self.commit_in_place(objects);
        }
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Msg::Job(Job { objects, reply }))
            .await
            .map_err(|_| Status::unavailable("store writer stopped"))?;
        rx.await
            .map_err(|_| Status::internal("store writer dropped the call"))?
    }
}

impl ApplyBatcher {
    /// Whether this call may commit in place: the commit thread waits with nothing queued,
    /// the last [`LONE_WRITER`] commits each held one call with none arriving meanwhile, no
    /// other call commits in place, and the shutdown has not begun. Marks the in-place
    /// commit running if so.
    fn claim_in_place(&self) -> bool {
        let mut st = lock(&self.shared.state);
        if st.thread_idle && st.singles >= LONE_WRITER && !st.in_place && !st.stopped {
            st.in_place = true;
            return true;
        }
        false
    }

    /// Commits one call on the caller's thread (see the module doc), answered as the
    /// commit thread answers, after its durable commit and before its changes are published.
    fn commit_in_place(&self, objects: Vec<Object>) -> Result<Vec<Applied>, Status> {
        let (reply, mut answer) = oneshot::channel();
        commit(
            &self.shared.store,
            self.shared.complete,
            vec![Job { objects, reply }],
        );
        {
            let mut st = lock(&self.shared.state);
            st.in_place = false;
            // A call that went to the commit thread meanwhile: not one writer.
            st.singles = if st.thread_idle {
                st.singles.saturating_add(1)
            } else {
                0
            };
        }
        self.shared.in_place_done.notify_waiters();
        answer
            .try_recv()
            .unwrap_or_else(|_| Err(Status::internal("store writer dropped the call")))
    }
}

impl ApplyTask {
    /// Commits calls until `shutdown` turns true (or every handle dropped); then refuses
    /// new calls, commits those already queued (and waits for one committing in place),
    /// and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let ApplyTask { shared, rx, stop } = self;
        let (ended, mut thread_ended) = oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let started = std::thread::Builder::new()
            .name("apply-commit".into())
            .spawn(move || {
                commit_loop(&thread_shared, rx);
                let _ = ended.send(());
            });
        if let Err(e) = started {
            // Every call is then refused: the channel's receiver went with the closure.
            tracing::error!(error = %e, "cannot start the apply commit thread");
            return;
        }
        tokio::select! {
            _ = &mut thread_ended => return,
            _ = shutdown.wait_for(|s| *s) => {}
        }
        lock(&shared.state).stopped = true;
        if let Some(tx) = stop.upgrade() {
            let _ = tx.send(Msg::Stop).await;
        }
        let _ = thread_ended.await;
        loop {
            let done = shared.in_place_done.notified();
            if !lock(&shared.state).in_place {
                break;
            }
            done.await;
        }
    }
}

/// The commit thread: takes the first queued call and every call queued behind it (up to
/// [`MAX_CALLS_PER_COMMIT`]), commits them in one transaction, answers each, and again;
/// after `Stop` the channel refuses new calls and the loop ends once the queue is empty.
///
/// After a commit that answered several calls, the next one first waits for more calls
/// ([`linger`]): until as many are queued as that commit answered, at most as long as it
/// took (and at most [`MAX_LINGER`]). Why: the writers just answered
/// come back while the next commit runs, so without the wait concurrent writers split into
/// two groups that alternate, each half the size, each paying redb's fixed cost of a commit
/// (~300k instructions, ~18 page writes and an fdatasync, whatever it holds). 16 writers:
/// 7.4 calls per commit without it. One writer (one call per commit) never waits, nor does
/// the loop after `Stop`.
///
/// It counts the one-call commits in a row, and before it waits for a call it tells the
/// callers whether anything is queued: both decide whether a call may commit in place
/// (the module doc).
fn commit_loop(shared: &Shared, mut rx: mpsc::Receiver<Msg>) {
    let (store, complete) = (&shared.store, shared.complete);
    let mut answered = 0;
    let mut last_commit = Duration::ZERO;
    loop {
        lock(&shared.state).thread_idle = rx.is_empty();
        let received = rx.blocking_recv();
        {
            let mut st = lock(&shared.state);
            st.thread_idle = false;
            if st.in_place {
                // This call came while another commits in place: not one writer.
                st.singles = 0;
            }
        }
        let first = match received {
            None => return,
            Some(Msg::Stop) => {
                rx.close();
                continue;
            }
            Some(Msg::Job(job)) => job,
        };
        let mut jobs = vec![first];
        take_queued(&mut rx, &mut jobs);
        if answered > 1 {
            linger(&mut rx, &mut jobs, answered, last_commit.min(MAX_LINGER));
        }
        answered = jobs.len();
        {
            let mut st = lock(&shared.state);
            st.singles = if answered == 1 {
                st.singles.saturating_add(1)
            } else {
                0
            };
        }
        let started = clock::now();
        commit(store, complete, jobs);
        last_commit = started.elapsed();
    }
}

/// Waits at most `bound` for more calls, until `expected` are queued (the writers the last
/// commit answered are back) or the queue is closed. Why not sleep out the bound: the
/// writers come back within a part of it, and the time left would be the cycle's idle time.
fn linger(rx: &mut mpsc::Receiver<Msg>, jobs: &mut Vec<Job>, expected: usize, bound: Duration) {
    let expected = expected.min(MAX_CALLS_PER_COMMIT);
    let started = clock::now();
    loop {
        take_queued(rx, jobs);
        let left = bound.saturating_sub(started.elapsed());
        if jobs.len() >= expected || rx.is_closed() || left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(LINGER_POLL));
    }
}

/// Moves the calls queued now into `jobs`, up to [`MAX_CALLS_PER_COMMIT`].
fn take_queued(rx: &mut mpsc::Receiver<Msg>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_CALLS_PER_COMMIT {
        match rx.try_recv() {
            Ok(Msg::Job(job)) => jobs.push(job),
            Ok(Msg::Stop) => rx.close(),
            Err(_) => break,
        }
    }
}

/// Commits `jobs` in one transaction and answers each, before the commit's changes are
/// published on the change feed (`Store::apply_answered`).
fn commit(store: &Store, complete: Complete, jobs: Vec<Job>) {
    let mut all = Vec::new();
    let mut calls = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        let n = job.objects.len();
        all.append(&mut job.objects);
        calls.push((job, n));
    }
    let mut unanswered = Some(calls);
    // A panic in the store answers the calls (debug builds; release builds abort).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.apply_answered(all, complete, |result| {
            if let Some(calls) = unanswered.take() {
                answer(calls, result);
            }
        })
    }));
    if let (Err(_), Some(calls)) = (result, unanswered) {
        for (job, _) in calls {
            let _ = job
                .reply
                .send(Err(Status::internal("store task failed: it panicked")));
        }
    }
}

/// Answers each call of a commit with its share of the result: its own objects' outcomes,
/// in order (each call paired with the number of objects it sent), or the commit's error.
fn answer(calls: Vec<(Job, usize)>, result: Result<Vec<Applied>, StoreError>) {
    match result {
        Ok(applied) => {
            let mut applied = applied.into_iter();
            for (job, n) in calls {
                let mine: Vec<Applied> = applied.by_ref().take(n).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let msg = crate::error_chain(&e);
            tracing::error!(error = %msg, calls = calls.len(), "group commit failed");
            for (job, _) in calls {
                let _ = job.reply.send(Err(Status::internal(msg.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, parse_documents};
    use crate::store::ApplyResult;

    fn server(name: &str, hostname: &str) -> Vec<Object> {
        parse_documents(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  hostname: {hostname}\n"
        ))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_calls_get_their_own_results_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (batcher, task) = ApplyBatcher::new(store.clone(), |_, _| None);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(task.run(shutdown));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move {
                let mut objects = server(&format!("s{i}"), "a");
                objects.extend(server(&format!("t{i}"), "b"));
                (i, b.apply(objects).await.unwrap())
            }));
        }
        let mut revisions = Vec::new();
        for t in tasks {
            let (i, applied) = t.await.unwrap();
            let names: Vec<_> = applied.iter().map(|a| a.name.clone()).collect();
            assert_eq!(names, [format!("s{i}"), format!("t{i}")]);
            assert!(applied.iter().all(|a| a.result == ApplyResult::Created));
            revisions.extend(applied.iter().map(|a| a.revision));
        }
        revisions.sort();
        revisions.dedup();
        assert_eq!(revisions.len(), 128, "every write has its own revision");
        assert_eq!(store.list(Kind::Server).unwrap().len(), 128);
        assert_eq!(store.revision().unwrap(), 128);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_applied_without_a_lifecycle_state_is_adopted_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (batcher, task) =
            ApplyBatcher::new(store.clone(), crate::reconcile::edits::adopt_applied);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(task.run(shutdown));
        let mut feed = store.subscribe();
        let mut objects = server("s1", "a");
        objects.extend(
            parse_documents(
                "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: c1\n",
            )
            .unwrap(),
        );
        let applied = batcher.apply(objects).await.unwrap();
        let revisions: Vec<u64> = applied.iter().map(|a| a.revision).collect();
        assert_eq!(
            revisions,
            [1, 2],
            "one revision per object, none for the adoption"
        );
        assert_eq!(store.revision().unwrap(), 2);
        // The callers are answered before the changes go on the feed (`apply_answered`),
        // so the feed is awaited, not polled.
        let mut published = Vec::new();
        for _ in 0..2 {
            let change = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
                .await
                .expect("published")
                .unwrap();
            published.push(change.revision);
        }
        assert_eq!(published, [1, 2]);
        assert!(
            feed.try_recv().is_err(),
            "nothing published for the adoption"
        );
        let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
            panic!("kind");
        };
        let status = s.status.expect("adopted with a status");
        assert_eq!(status.state.as_deref(), Some("discovered"));
        assert!(!status.ready && !status.in_use && !status.is_clean);
        let events = store.events(Some("s1"), 0).unwrap();
        let events: Vec<_> = events
            .iter()
            .map(|e| (e.event.as_str(), e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(events, [("adopt", "", "discovered")]);
        // The same document again (no status: the stored one is kept) changes nothing.
        let again = batcher.apply(server("s1", "a")).await.unwrap();
        assert_eq!(again[0].result, ApplyResult::Unchanged);
        assert_eq!(again[0].revision, 1);
        assert_eq!(store.events(Some("s1"), 0).unwrap().len(), 1);
        // A Server applied with its lifecycle state keeps it and gets no event.
        let mut stated = server("s2", "b");
        if let Object::Server(s) = &mut stated[0] {
            crate::reconcile::apply::write_state(s, crate::reconcile::apply::server_state(s), 0);
        }
        batcher.apply(stated).await.unwrap();
        assert!(store.events(Some("s2"), 0).unwrap().is_empty());
    }

    /// Names of the threads `note_thread` ran on (only the in-place test uses it).
    static COMMITTED_ON: std::sync::Mutex<Vec<Option<String>>> = std::sync::Mutex::new(Vec::new());

    fn note_thread(_: &mut Object, _: u64) -> Option<NewEvent> {
        COMMITTED_ON
            .lock()
            .unwrap()
            .push(std::thread::current().name().map(str::to_string));
        None
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_writer_commits_in_place_and_is_answered_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (batcher, task) = ApplyBatcher::new(store.clone(), note_thread);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(task.run(shutdown));
        let calls = LONE_WRITER as usize + 3;
        for i in 0..calls {
            // The commit thread back at its wait (it publishes after answering): a call
            // then goes in place exactly when the one-call commits before it were enough.
            while !lock(&batcher.shared.state).thread_idle {
                tokio::task::yield_now().await;
            }
            let name = format!("s{i}");
            let applied = batcher.apply(server(&name, "a")).await.unwrap();
            assert_eq!(applied[0].result, ApplyResult::Created);
            assert!(store.get(Kind::Server, &name).unwrap().is_some());
        }
        let on = COMMITTED_ON.lock().unwrap().clone();
        assert_eq!(on.len(), calls);
        let (first, then) = on.split_at(LONE_WRITER as usize);
        assert!(
            first.iter().all(|n| n.as_deref() == Some("apply-commit")),
            "the first calls go to the commit thread: {on:?}"
        );
        assert!(
            then.iter().all(|n| n.as_deref() != Some("apply-commit")),
            "then a lone writer's calls commit in place: {on:?}"
        );
        assert!(!lock(&batcher.shared.state).in_place);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn later_calls_in_a_batch_see_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (batcher, task) = ApplyBatcher::new(store.clone(), |_, _| None);
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(task.run(shutdown));
        // The same object from many callers at once: exactly one creates it, the rest find
        // it (unchanged or configured), and the final value is one of the written ones.
        let mut tasks = Vec::new();
        for i in 0..32 {
            let b = batcher.clone();
            let host = if i % 2 == 0 { "even" } else { "odd" };
            tasks.push(tokio::spawn(
                async move { b.apply(server("same", host)).await },
            ));
        }
        let mut created = 0;
        for t in tasks {
            let applied = t.await.unwrap().unwrap();
            if applied[0].result == ApplyResult::Created {
                created += 1;
            }
        }
        assert_eq!(created, 1);
        let Object::Server(s) = store.get(Kind::Server, "same").unwrap().unwrap().object else {
            panic!("kind");
        };
        assert!(matches!(s.spec.hostname.as_deref(), Some("even" | "odd")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_commits_queued_calls_then_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (batcher, task) = ApplyBatcher::new(store.clone(), |_, _| None);
        let queued = {
            let b = batcher.clone();
            tokio::spawn(async move { b.apply(server("queued", "a")).await })
        };
        while batcher.jobs.capacity() == batcher.jobs.max_capacity() {
            tokio::task::yield_now().await;
        }
        // The signal is already up when the task starts: the queued call still lands.
        let (_stop, shutdown) = watch::channel(true);
        task.run(shutdown).await;
        let applied = queued.await.unwrap().unwrap();
        assert_eq!(applied[0].result, ApplyResult::Created);
        assert!(store.get(Kind::Server, "queued").unwrap().is_some());
        let refused = batcher.apply(server("late", "b")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(store.get(Kind::Server, "late").unwrap().is_none());
    }
}
