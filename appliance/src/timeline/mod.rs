//! The boot timeline: per server, what the box saw of it from its first DHCP packet to its
//! first boot from disk (DHCP offer/ack, TFTP file, `/boot.ipxe`, the `/ipxe` decision,
//! kernel/initrd fetch, agent registration, wipe, SideroLink up, config fetched, install
//! done, boot from disk), each with its time and outcome, kept durably in a bounded ring
//! per server in the store (`store/timeline.rs`), shown by `appliance ctl server timeline`
//! and the console's server page, and measured as `appliance_time_to_registered_seconds`
//! and `appliance_time_to_installed_seconds` (from the start of the PXE boot that led to
//! the registration / installation; `event::time_to`).
//!
//! The rooms that see a step (DHCP, TFTP, the boot routes, the agent API, metadata,
//! SideroLink) hold a [`Recorder`], built once by `app.rs`: `record` takes the time from
//! the recorder's clock (`crate::clock` unless a test gives another) and hands the event to
//! a bounded queue without waiting; a full queue drops the event and counts it
//! (`appliance_timeline_events_total{result="dropped"}`), so the DHCP/TFTP/HTTP paths
//! never block on the timeline. One [`Writer`] task (spawned by `app.rs`) attributes the
//! queued events and writes them in batches (≤ [`BATCH_WINDOW`] or [`BATCH_MAX`] events per
//! transaction).
//!
//! **Attribution** (`event::Attributor`, pure): an event that names its server for sure
//! (agent registration and wipe, `/ipxe` and `/configdata` for a stored Server, SideroLink,
//! the install) goes to that server. Otherwise it knows a MAC (DHCP's chaddr, `/ipxe`'s
//! `mac=`) or only the client's address (TFTP, `/boot.ipxe`, asset fetches): an address is
//! the MAC the box's last DHCP ACK (or an `/ipxe` request from it) gave it, or the server
//! that registered from it; a MAC is a server's when a stored Server's inventory lists it
//! as a NIC (read at start, learned from every registration), or by the lease tie: an
//! `/ipxe` naming a stored Server comes from the address this box's DHCP leased to that
//! MAC (a client speaks only for the MAC whose lease it holds; how an operator-created
//! Server without inventory gets its DHCP steps). Events of a client not yet
//! known to be a server are kept under `mac:<mac>` (or `ip:<addr>` when no MAC is known)
//! in a small pending ring ([`PENDING_PER_CLIENT`] events, at most [`PENDING_CLIENTS`]
//! clients, the oldest dropped first), and moved, in place by time, to the server's ring
//! when a registration names that NIC (or address). An unauthenticated request can at
//! most add events to the timeline (and tie only the MAC whose lease it holds), never change
//! a server's identity, BMC or wipe state.

pub mod event;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::metrics::{Counter, Histogram, Labeled, Registry, Unit};
use crate::model::{Kind, MacAddr, Object};
use crate::store::{Store, StoreError, TimelineLimits, TimelineOp, TimelineRecord};
use event::{Attributor, Event, Key, Outcome, Step, Who};

/// Events gathered at most this long before they are committed.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// At most this many events per transaction.
pub const BATCH_MAX: usize = 1024;
/// Events waiting for the writer; beyond this they are dropped (and counted).
pub const QUEUE: usize = 4096;
/// Events kept per client not yet known to be a server.
pub const PENDING_PER_CLIENT: u64 = 32;
/// Clients not yet known to be a server, held at once.
pub const PENDING_CLIENTS: u64 = 4096;
/// Address → client pairs remembered for attribution.
pub const ADDRESSES: usize = 16384;

/// Timeline counters and the provisioning histograms (`/metrics`).
#[derive(Debug)]
pub struct Stats {
    pub stored: Counter,
    pub dropped: Counter,
    pub to_registered: Histogram,
    pub to_installed: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            stored: Counter::default(),
            dropped: Counter::default(),
            to_registered: Histogram::new(crate::metrics::boot_seconds_buckets()),
            to_installed: Histogram::new(crate::metrics::boot_seconds_buckets()),
        }
    }
}

impl Stats {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_timeline_events",
            "Boot timeline events: stored, dropped (queue full or store failure)",
            Labeled::new(
                "result",
                [
                    ("stored", self.stored.clone()),
                    ("dropped", self.dropped.clone()),
                ],
            ),
        );
        r.register_with_unit(
            "appliance_time_to_registered",
            "From the start of a server's PXE boot to its agent's registration",
            Unit::Seconds,
            self.to_registered.clone(),
        );
        r.register_with_unit(
            "appliance_time_to_installed",
            "From the start of a server's install PXE boot to Talos reporting the install done",
            Unit::Seconds,
            self.to_installed.clone(),
        );
    }
}

/// The time source: ms since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One event handed to the writer.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub who: Who,
    pub time_ms: u64,
    pub step: Step,
    pub outcome: Outcome,
    pub detail: String,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
}

/// The rooms' handle: records without waiting. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Sighting>>,
    stats: Arc<Stats>,
    clock: Clock,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("on", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::off()
    }
}

impl Recorder {
    /// A recorder that records nothing (rooms built without a timeline, in tests).
    pub fn off() -> Recorder {
        Recorder {
            tx: None,
            stats: Arc::default(),
            clock: Arc::new(crate::clock::unix_ms),
        }
    }

    /// Now, by the recorder's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Records `step` of `who` as happening now.
    pub fn record(&self, who: Who, step: Step, outcome: Outcome, detail: impl Into<String>) {
        self.record_at(self.now_ms(), who, step, outcome, detail.into(), None, None);
    }

    /// Records a transfer that began at `time_ms` and moved `bytes` in `duration`.
    #[allow(clippy::too_many_arguments)] // the event's fields, as `record` plus two
    pub fn transfer(
        &self,
        time_ms: u64,
        who: Who,
        step: Step,
        outcome: Outcome,
        detail: impl Into<String>,
        bytes: u64,
        duration: Duration,
    ) {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.record_at(
            time_ms,
            who,
            step,
            outcome,
            detail.into(),
            Some(bytes),
            Some(ms),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn record_at(
        &self,
        time_ms: u64,
        who: Who,
        step: Step,
        outcome: Outcome,
        detail: String,
        bytes: Option<u64>,
        duration_ms: Option<u64>,
    ) {
        let Some(tx) = &self.tx else { return };
        let s = Sighting {
            who,
            time_ms,
            step,
            outcome,
            detail,
            bytes,
            duration_ms,
        };
        if tx.try_send(s).is_err() {
            self.stats.dropped.inc();
        }
    }
}

/// The timeline's writer: attribution state and the store. `run` is its task.
pub struct Writer {
    store: Store,
    limits: TimelineLimits,
    stats: Arc<Stats>,
    rx: mpsc::Receiver<Sighting>,
}

/// Builds the recorder the rooms share and the writer that stores what they record;
/// `per_server` events are kept per server (`[timeline] events_per_server`).
pub fn new(store: Store, per_server: usize, stats: Arc<Stats>, clock: Clock) -> (Recorder, Writer) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (
        Recorder {
            tx: Some(tx),
            stats: stats.clone(),
            clock,
        },
        Writer {
            store,
            limits: TimelineLimits {
                per_server: per_server.max(1) as u64,
                per_pending: PENDING_PER_CLIENT,
                pending_keys: PENDING_CLIENTS,
            },
            stats,
            rx,
        },
    )
}

/// The MACs of every stored Server's NICs (its inventory).
fn stored_nics(store: &Store) -> Result<Vec<(String, Vec<MacAddr>)>, StoreError> {
    Ok(store
        .list(Kind::Server)?
        .into_iter()
        .filter_map(|s| match s.object {
            Object::Server(s) => Some((s.metadata.name.clone(), s.spec.nic_macs())),
            _ => None,
        })
        .collect())
}

impl Writer {
    /// Stores recorded events until `shutdown`; events still queued then are stored before
    /// it returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let nics = tokio::task::spawn_blocking(move || stored_nics(&store))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| crate::error_chain(&e)));
        let nics = nics.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "timeline: stored servers not read; their NICs are learned again as they register");
            Vec::new()
        });
        let attributor = Arc::new(Mutex::new(Attributor::new(nics, ADDRESSES)));
        loop {
            let first = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                s = self.rx.recv() => s,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < BATCH_MAX {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(s)) => batch.push(s),
                    Ok(None) | Err(_) => break,
                }
            }
            self.write(&attributor, batch).await;
        }
        let mut rest = Vec::new();
        while let Ok(s) = self.rx.try_recv() {
            rest.push(s);
        }
        self.write(&attributor, rest).await;
    }

    /// Attributes and stores one batch (one transaction), then observes the durations of
    /// the registrations and installations in it. Each event is attributed as the
    /// transaction takes it (on the blocking thread, the attributor locked by this task
    /// alone), so the batch's store operations are never all held at once.
    async fn write(&self, attributor: &Arc<Mutex<Attributor>>, batch: Vec<Sighting>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let attributor = attributor.clone();
        let store = self.store.clone();
        let limits = self.limits;
        let stored = tokio::task::spawn_blocking(move || {
            let mut attributor = attributor.lock().unwrap_or_else(PoisonError::into_inner);
            let mut ops = plan(&mut attributor, batch);
            let appended = store.apply_timeline(&mut ops, limits, |key, r| {
                !key.contains(':')
                    && (r.step == Step::Registered.as_str() || r.step == Step::Installed.as_str())
            });
            // A failed transaction still attributes the rest of its batch, as when the
            // whole batch was planned first: what is learned does not depend on the store.
            ops.for_each(drop);
            drop(attributor);
            let appended = appended?;
            // The milestones' durations, read from their servers' rings as stored.
            let mut observed = Vec::new();
            let milestones: BTreeSet<(String, u64, String)> = appended
                .into_iter()
                .map(|(key, r)| (key, r.seq, r.step))
                .collect();
            for (key, seq, step) in milestones {
                let events = read_events(&store, &key)?;
                if let Some(ms) = event::time_to(&events, seq) {
                    observed.push((step, ms));
                }
            }
            Ok::<_, StoreError>(observed)
        })
        .await;
        match stored {
            Ok(Ok(observed)) => {
                self.stats.stored.inc_by(n);
                for (step, ms) in observed {
                    let h = if step == Step::Registered.as_str() {
                        &self.stats.to_registered
                    } else {
                        &self.stats.to_installed
                    };
                    h.observe(ms as f64 / 1000.0);
                }
            }
            Ok(Err(e)) => {
                self.stats.dropped.inc_by(n);
                tracing::warn!(events = n, error = %crate::error_chain(&e), "timeline events not stored");
            }
            Err(e) => {
                self.stats.dropped.inc_by(n);
                tracing::warn!(events = n, error = %e, "timeline write task failed");
            }
        }
    }
}

/// The store operations for `batch`, attributed in order, each event when it is taken.
pub fn plan(
    attributor: &mut Attributor,
    batch: Vec<Sighting>,
) -> impl Iterator<Item = TimelineOp> + '_ {
    batch.into_iter().flat_map(move |s| {
        let (moves, key) = attributor.place(&s.who);
        let key = match key {
            Key::Server(name) => name,
            other => other.store_key(),
        };
        let moves = moves.into_iter().map(|m| TimelineOp::Move {
            from: m.from.store_key(),
            to: m.to.store_key(),
        });
        moves.chain(std::iter::once(TimelineOp::Append {
            key,
            record: TimelineRecord {
                seq: 0,
                time_ms: s.time_ms,
                step: s.step.as_str().to_string(),
                outcome: s.outcome.as_str().to_string(),
                detail: s.detail,
                bytes: s.bytes,
                duration_ms: s.duration_ms,
                mac: s.who.mac.map(|m| m.to_string()),
                ip: s.who.ip.map(|ip| ip.to_string()),
            },
        }))
    })
}

/// A stored record as an event (records of unknown steps are skipped: a newer box's).
pub fn to_event(r: &TimelineRecord) -> Option<Event> {
    Some(Event {
        seq: r.seq,
        time_ms: r.time_ms,
        step: Step::parse(&r.step)?,
        outcome: Outcome::parse(&r.outcome).unwrap_or(Outcome::Failed),
        detail: r.detail.clone(),
        bytes: r.bytes,
        duration_ms: r.duration_ms,
    })
}

fn read_events(store: &Store, key: &str) -> Result<Vec<Event>, StoreError> {
    let mut events: Vec<Event> = store.timeline(key)?.iter().filter_map(to_event).collect();
    event::order(&mut events);
    Ok(events)
}

/// A server's timeline as shown: records in display order and the summary.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub records: Vec<TimelineRecord>,
    pub summary: event::Summary,
}

/// Reads the timeline of server `name` (blocking: call through `store::blocking`).
pub fn view(store: &Store, name: &str) -> Result<View, StoreError> {
    let mut records = store.timeline(name)?;
    records.sort_by_key(|r| (r.time_ms, r.seq));
    let events: Vec<Event> = records.iter().filter_map(to_event).collect();
    Ok(View {
        summary: event::summary(&events),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn clock() -> (Arc<AtomicU64>, Clock) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let n = now.clone();
        (now, Arc::new(move || n.load(Ordering::SeqCst)))
    }

    #[tokio::test]
    async fn recorded_events_are_attributed_stored_and_measured() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let stats = Arc::new(Stats::default());
        let (now, clock) = clock();
        let (rec, writer) = new(store.clone(), 64, stats.clone(), clock);
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(writer.run(shutdown));
        let mac: MacAddr = "52:54:00:00:00:07".parse().unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let by_ip = || Who {
            ip: Some(ip),
            ..Default::default()
        };
        rec.record(
            Who {
                mac: Some(mac),
                ..Default::default()
            },
            Step::DhcpOffer,
            Outcome::Ok,
            "10.0.0.7",
        );
        now.fetch_add(500, Ordering::SeqCst);
        rec.record(
            Who {
                mac: Some(mac),
                ip: Some(ip),
                ..Default::default()
            },
            Step::DhcpAck,
            Outcome::Ok,
            "10.0.0.7",
        );
        rec.transfer(
            rec.now_ms(),
            by_ip(),
            Step::Tftp,
            Outcome::Ok,
            "ipxe.efi",
            1000,
            Duration::from_millis(30),
        );
        now.fetch_add(1_000, Ordering::SeqCst);
        rec.record(by_ip(), Step::BootScript, Outcome::Ok, "");
        rec.record(
            Who {
                mac: Some(mac),
                ip: Some(ip),
                ..Default::default()
            },
            Step::Ipxe,
            Outcome::Ok,
            "agent-amd64",
        );
        now.fetch_add(41_500, Ordering::SeqCst);
        rec.record(
            Who {
                server: Some("s1".into()),
                ip: Some(ip),
                nics: Some(vec![mac]),
                ..Default::default()
            },
            Step::Registered,
            Outcome::Ok,
            "new server",
        );
        let _ = stop.send(true);
        task.await.unwrap();
        let v = view(&store, "s1").unwrap();
        assert_eq!(
            v.records
                .iter()
                .map(|r| r.step.as_str())
                .collect::<Vec<_>>(),
            [
                "dhcp-offer",
                "dhcp-ack",
                "tftp",
                "boot-script",
                "ipxe",
                "registered"
            ]
        );
        assert_eq!(v.records[2].bytes, Some(1000));
        assert_eq!(v.summary.time_to_registered_ms, Some(43_000));
        assert!(store.timeline_pending().unwrap().is_empty());
        assert_eq!(stats.stored.get(), 6);
        let mut r = Registry::default();
        stats.register(&mut r);
        let mut out = String::new();
        crate::metrics::encode(&r, &mut out);
        assert!(
            out.contains("appliance_time_to_registered_seconds_count 1\n"),
            "{out}"
        );
        assert!(
            out.contains("appliance_time_to_registered_seconds_sum 43.0\n"),
            "{out}"
        );
        assert!(
            out.contains("appliance_time_to_installed_seconds_count 0\n"),
            "{out}"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let stats = Arc::new(Stats::default());
        let (rec, _writer) = new(store, 8, stats.clone(), Arc::new(|| 5));
        for _ in 0..QUEUE + 10 {
            rec.record(Who::default(), Step::BootScript, Outcome::Ok, "");
        }
        assert_eq!(stats.dropped.get(), 10);
        Recorder::off().record(Who::default(), Step::BootScript, Outcome::Ok, "");
    }
}
