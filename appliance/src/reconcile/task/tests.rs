//! `ReconcileTask` under paused tokio time, against a real store: reboot timers with their
//! doubling backoff ending in `PowerCycle=False`, a heartbeat pushing the deadline back,
//! `spec.accepted` edits accepted or put back with the refusal, a ServerBinding created
//! and deleted outside the lifecycle API, class status written at most every
//! `CLASS_FLUSH`, the `any` class reset and recreated, concurrent address reports (group-committed) each landing on its own
//! server, and a deleted Server's remembered agent source dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::*;
use crate::model::ConditionStatus;
use crate::reconcile::apply::{AllocateInput, NewServer};
use crate::reconcile::power::{PowerActions, PowerFuture};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Records when each power action was asked for (tokio's clock).
#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<(&'static str, String, Instant)>>);

impl Recorded {
    fn cycles(&self) -> Vec<Instant> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter(|(what, _, _)| *what == "cycle")
            .map(|(_, _, at)| *at)
            .collect()
    }
}

impl PowerActions for Recorded {
    fn pxe_boot_and_cycle(&self, server: &Server) -> PowerFuture {
        let name = server.metadata.name.clone();
        self.0.lock().unwrap().push(("cycle", name, Instant::now()));
        Box::pin(async { Ok(()) })
    }
    fn power_off(&self, server: &Server) -> PowerFuture {
        let name = server.metadata.name.clone();
        self.0.lock().unwrap().push(("off", name, Instant::now()));
        Box::pin(async { Ok(()) })
    }
}

struct Box_ {
    lc: Lifecycle,
    power: Arc<Recorded>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let mut config = crate::config::Config::default().lifecycle;
    config.auto_accept = false;
    config.reboot_timeout = TIMEOUT;
    config.reboot_retries = 2;
    let power = Arc::new(Recorded::default());
    let (lc, task) = Lifecycle::new(store, config, power.clone(), None);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(task.run(rx));
    Box_ {
        lc,
        power,
        stop,
        task,
        _dir: dir,
    }
}

impl Box_ {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }

    fn events(&self, name: &str) -> Vec<String> {
        let events = self.lc.store().events(Some(name), 0).unwrap();
        events.into_iter().map(|e| e.event).collect()
    }

    fn server(&self, name: &str) -> Server {
        match self
            .lc
            .store()
            .get(Kind::Server, name)
            .unwrap()
            .unwrap()
            .object
        {
            Object::Server(s) => s,
            other => panic!("{other:?}"),
        }
    }

    async fn register(&self, name: &str) {
        let new = NewServer {
            name: name.into(),
            hostname: None,
            hardware: Default::default(),
            key: None,
            junk: None,
        };
        self.lc.register(new).await.unwrap();
    }

    /// Registered, accepted, wiped: available.
    async fn available(&self, name: &str) {
        self.register(name).await;
        for e in [Event::Accept, Event::WipeStarted, Event::Wiped] {
            self.lc.fire(name, e, "test").await.unwrap();
        }
    }

    /// Waits (in paused time) until `cond` holds, at most `limit`.
    async fn until(&self, limit: Duration, mut cond: impl FnMut(&Self) -> bool) {
        let end = Instant::now() + limit;
        while !cond(self) {
            assert!(Instant::now() < end, "condition not met within {limit:?}");
            sleep(Duration::from_millis(10)).await;
        }
    }
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

#[tokio::test(start_paused = true)]
async fn reboot_timeouts_retry_with_doubling_backoff_then_raise_the_condition() {
    let b = start().await;
    b.register("n1").await;
    // The agent last called at registration; its wipe started and then nothing more.
    b.lc.fire("n1", Event::Accept, "test").await.unwrap();
    b.lc.fire("n1", Event::WipeStarted, "test").await.unwrap();
    let armed = Instant::now();

    // Nothing before the timeout.
    sleep(TIMEOUT - Duration::from_secs(1)).await;
    assert_eq!(count(&b.events("n1"), "reboot-timeout"), 0);
    assert!(b.power.cycles().is_empty());

    // Retry 1 at the timeout (within one 250 ms tick), retry 2 after 2 × timeout, then the
    // condition after 4 × timeout: 60 + 120 + 240 s.
    sleep(Duration::from_secs(60 + 120 + 240)).await;
    let cycles = b.power.cycles();
    assert_eq!(cycles.len(), 2, "{cycles:?}");
    let tick = Duration::from_millis(250);
    let first = cycles[0] - armed;
    assert!(first >= TIMEOUT && first <= TIMEOUT + tick, "{first:?}");
    let second = cycles[1] - cycles[0];
    assert!(
        second >= 2 * TIMEOUT && second <= 2 * TIMEOUT + tick,
        "{second:?}"
    );
    b.until(Duration::from_secs(1), |b| {
        count(&b.events("n1"), "reboot-timeout") == 3
    })
    .await;
    let server = b.server("n1");
    let conds = &server.status.as_ref().unwrap().conditions;
    let c = conds
        .iter()
        .find(|c| c.type_ == "PowerCycle")
        .expect("PowerCycle");
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason.as_deref(), Some("RebootTimeout"));

    // Retries are exhausted: no more timers, no more cycles.
    sleep(10 * TIMEOUT).await;
    assert_eq!(b.power.cycles().len(), 2);
    assert_eq!(count(&b.events("n1"), "reboot-timeout"), 3);
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_pushes_the_reboot_deadline_back() {
    let b = start().await;
    b.register("n1").await;
    b.lc.fire("n1", Event::Accept, "test").await.unwrap();
    b.lc.fire("n1", Event::WipeStarted, "test").await.unwrap();
    sleep(Duration::from_secs(50)).await;
    b.lc.touch("n1");
    // Past the first deadline, before 50 + 60 s: the heartbeat holds it back.
    sleep(Duration::from_secs(55)).await;
    assert_eq!(count(&b.events("n1"), "reboot-timeout"), 0);
    assert!(b.power.cycles().is_empty());
    sleep(Duration::from_secs(6)).await;
    b.until(Duration::from_secs(1), |b| {
        count(&b.events("n1"), "reboot-timeout") == 1
    })
    .await;
    assert_eq!(b.power.cycles().len(), 1);
    b.stop().await;
}

/// Writes the server back with `spec.accepted` set, as an operator's apply does.
fn edit_accepted(store: &Store, name: &str, accepted: bool) {
    let Object::Server(mut s) = store.get(Kind::Server, name).unwrap().unwrap().object else {
        panic!("not a server")
    };
    s.spec.accepted = accepted;
    store.apply(vec![Object::Server(s)]).unwrap();
}

#[tokio::test(start_paused = true)]
async fn spec_accepted_edits_become_transitions_or_are_put_back_with_the_reason() {
    let b = start().await;
    b.register("n1").await;
    edit_accepted(b.lc.store(), "n1", true);
    b.until(Duration::from_secs(1), |b| {
        b.events("n1").contains(&"accept".into())
    })
    .await;
    let status = b.server("n1").status.unwrap();
    assert_eq!(status.state.as_deref(), Some("accepted"));
    // The accept's actions ran: the reboot timer is armed, so its timeout fires.
    sleep(TIMEOUT + Duration::from_secs(1)).await;
    assert_eq!(count(&b.events("n1"), "reboot-timeout"), 1);

    // An allocated server cannot be unaccepted: the flag is put back, the event says why.
    b.available("n2").await;
    b.lc.allocate(AllocateInput {
        server_class: None,
        server: Some("n2".into()),
        owner: "default/m1".into(),
        bootstrap_data: String::new(),
        config_patches: vec![],
        environment: None,
    })
    .await
    .unwrap();
    edit_accepted(b.lc.store(), "n2", false);
    b.until(Duration::from_secs(1), |b| {
        b.events("n2").contains(&"unaccept-rejected".into())
    })
    .await;
    let s = b.server("n2");
    assert!(s.spec.accepted, "the flag is put back");
    assert_eq!(s.status.unwrap().state.as_deref(), Some("allocated"));
    let events = b.lc.store().events(Some("n2"), 0).unwrap();
    let rejected = events
        .iter()
        .find(|e| e.event == "unaccept-rejected")
        .unwrap();
    assert!(
        rejected.message.contains("allocated"),
        "{}",
        rejected.message
    );
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_binding_created_or_deleted_outside_the_api_allocates_or_releases() {
    let b = start().await;
    b.available("n1").await;
    let doc = json!({
        "apiVersion": Kind::ServerBinding.api_version(),
        "kind": "ServerBinding",
        "metadata": { "name": "n1" },
        "spec": {},
    });
    let binding = Object::from_json(Kind::ServerBinding, &doc.to_string()).unwrap();
    b.lc.store().apply(vec![binding]).unwrap();
    b.until(Duration::from_secs(1), |b| {
        b.events("n1").contains(&"allocate".into())
    })
    .await;
    let status = b.server("n1").status.unwrap();
    assert!(status.in_use);
    assert_eq!(status.state.as_deref(), Some("allocated"));

    b.lc.store().delete(Kind::ServerBinding, "n1").unwrap();
    b.until(Duration::from_secs(1), |b| {
        b.events("n1").contains(&"release".into())
    })
    .await;
    let status = b.server("n1").status.unwrap();
    assert!(!status.in_use);
    assert_eq!(status.state.as_deref(), Some("released"));
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_server_leaves_no_remembered_agent_source() {
    let b = start().await;
    b.register("n1").await;
    b.register("n2").await;
    let from: IpAddr = "10.0.0.5".parse().unwrap();
    b.lc.begin_boot("n1", from, false, false);
    b.lc.begin_boot("n2", from, false, false);
    b.lc.end_boot("n1");
    assert_eq!(b.lc.last_agent_source("n1"), Some(from));

    b.lc.store().delete(Kind::Server, "n1").unwrap();
    b.until(Duration::from_secs(1), |b| {
        b.lc.last_agent_source("n1").is_none()
    })
    .await;
    // Another server's is kept.
    assert_eq!(b.lc.last_agent_source("n2"), Some(from));
    b.stop().await;
}

/// The `any` class's available and in-use servers; both empty while the class is not written
/// yet (the task writes it on its own schedule: a poll may come first, as it once did while
/// clippy loaded the machine and the paused clock ran ahead during a blocking store call).
fn any_class(store: &Store) -> (Vec<String>, Vec<String>) {
    let Some(record) = store.get(Kind::ServerClass, "any").unwrap() else {
        return (Vec::new(), Vec::new());
    };
    let Object::ServerClass(c) = record.object else {
        panic!("not a class")
    };
    let st = c.status.unwrap_or_default();
    (st.servers_available, st.servers_in_use)
}

/// The `any` class's `spec.qualifiers` as JSON (null when it has none), or None when gone.
fn any_qualifiers(store: &Store) -> Option<serde_json::Value> {
    let Object::ServerClass(c) = store.get(Kind::ServerClass, "any").unwrap()?.object else {
        panic!("not a class")
    };
    let spec = serde_json::to_value(&c.spec).unwrap();
    Some(spec.get("qualifiers").cloned().unwrap_or_default())
}

#[tokio::test(start_paused = true)]
async fn the_any_class_loses_applied_qualifiers_and_comes_back_when_deleted() {
    let b = start().await;
    b.available("n1").await;
    b.until(Duration::from_secs(2), |b| {
        any_class(b.lc.store()) == (vec!["n1".to_string()], vec![])
    })
    .await;
    let none = any_qualifiers(b.lc.store()).expect("created at start");
    // Qualifiers applied to `any` are taken away again; its member lists stay.
    let with_qualifiers = crate::model::parse_documents(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: any\nspec:\n  qualifiers:\n    hardware:\n      - system:\n          manufacturer: Dell Inc.\n",
    )
    .unwrap();
    b.lc.store().apply(with_qualifiers).unwrap();
    assert_ne!(any_qualifiers(b.lc.store()).as_ref(), Some(&none));
    b.until(Duration::from_secs(2), |b| {
        any_qualifiers(b.lc.store()).as_ref() == Some(&none)
    })
    .await;
    assert_eq!(any_class(b.lc.store()), (vec!["n1".to_string()], vec![]));
    // Deleted, it is created again.
    b.lc.store().delete(Kind::ServerClass, "any").unwrap();
    b.until(Duration::from_secs(2), |b| {
        any_qualifiers(b.lc.store()).as_ref() == Some(&none)
    })
    .await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn class_status_follows_servers_at_most_every_class_flush() {
    let b = start().await;
    b.available("n1").await;
    b.until(Duration::from_secs(2), |b| {
        any_class(b.lc.store()) == (vec!["n1".to_string()], vec![])
    })
    .await;
    // A change right after a flush is written once CLASS_FLUSH has passed, not before
    // (the poll saw the first flush within 10 ms of it).
    let flushed = Instant::now();
    b.available("n2").await;
    b.until(Duration::from_secs(2), |b| {
        any_class(b.lc.store()).0 == ["n1", "n2"]
    })
    .await;
    let after = flushed.elapsed();
    assert!(
        after + Duration::from_millis(10) >= CLASS_FLUSH
            && after <= CLASS_FLUSH + Duration::from_millis(260),
        "{after:?}"
    );
    b.lc.allocate(AllocateInput {
        server_class: Some("any".into()),
        server: None,
        owner: "default/m1".into(),
        bootstrap_data: String::new(),
        config_patches: vec![],
        environment: None,
    })
    .await
    .unwrap();
    b.until(Duration::from_secs(2), |b| {
        let (avail, used) = any_class(b.lc.store());
        avail.len() == 1 && used.len() == 1
    })
    .await;
    b.stop().await;
}

/// `(type, address)` of the server's stored `status.addresses`.
fn stored_addresses(s: &Server) -> Vec<(String, String)> {
    let v = serde_json::to_value(s).unwrap();
    v["status"]["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    let f = |k: &str| a[k].as_str().unwrap_or_default().to_string();
                    (f("type"), f("address"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_address_reports_each_land_on_their_own_server_only() {
    let b = start().await;
    let names: Vec<String> = (0..48).map(|i| format!("s{i}")).collect();
    for n in &names {
        b.register(n).await;
    }
    let pair = |t: &str, a: String| (t.to_string(), a);
    // A first report with two types, then concurrent reports replacing one type each, and
    // reports about a server the box does not know, all at once.
    for (i, n) in names.iter().enumerate() {
        let sent = vec![
            pair("InternalIP", format!("10.0.0.{i}")),
            pair("Hostname", format!("h{i}")),
        ];
        assert!(b.lc.report_addresses(n.clone(), sent).await.unwrap());
    }
    let mut calls = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let lc = b.lc.clone();
        let (n, sent) = (n.clone(), vec![pair("InternalIP", format!("10.1.0.{i}"))]);
        calls.push(tokio::spawn(
            async move { lc.report_addresses(n, sent).await },
        ));
        let lc = b.lc.clone();
        let sent = vec![pair("InternalIP", "10.9.9.9".into())];
        calls.push(tokio::spawn(async move {
            lc.report_addresses(format!("unknown-{i}"), sent).await
        }));
    }
    let results: Vec<_> = futures_util::future::join_all(calls).await;
    for (k, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        if k % 2 == 0 {
            assert!(r.unwrap(), "report {k} changed its server");
        } else {
            assert!(
                matches!(r, Err(LifecycleError::UnknownServer(_))),
                "report {k}: {r:?}"
            );
        }
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            stored_addresses(&b.server(n)),
            [
                pair("Hostname", format!("h{i}")),
                pair("InternalIP", format!("10.1.0.{i}")),
            ],
            "{n}"
        );
    }
    assert!(
        b.lc.store()
            .get(Kind::Server, "unknown-0")
            .unwrap()
            .is_none()
    );
    // The same report again changes nothing.
    let again = vec![pair("InternalIP", "10.1.0.0".into())];
    assert!(
        !b.lc
            .report_addresses(names[0].clone(), again)
            .await
            .unwrap()
    );
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_change_is_indexed_from_the_object_it_carries() {
    // An available server, taken from one box...
    let b = start().await;
    b.available("n1").await;
    let server = b.server("n1");
    b.stop().await;
    // ...arrives on the change feed of a task whose store never held it: the class index
    // follows the carried object (a re-read of the store would have found nothing).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let (_lc, mut task) = Lifecycle::new(
        store,
        crate::config::Config::default().lifecycle,
        Arc::new(Recorded::default()),
        None,
    );
    task.start().await.unwrap();
    let change = |op, object: Option<Server>| Change {
        revision: 1,
        kind: Kind::Server,
        name: "n1".into(),
        op,
        object: object.map(|s| Arc::new(Object::Server(s))),
    };
    task.on_changes(vec![change(ChangeOp::Put, Some(server))])
        .await;
    let members = |task: &ReconcileTask| task.index.status().remove("any").unwrap();
    assert_eq!(members(&task), (vec!["n1".to_string()], vec![]));
    assert!(task.class_dirty);
    task.on_changes(vec![change(ChangeOp::Delete, None)]).await;
    assert_eq!(members(&task), (vec![], vec![]));
}
