//! The lifecycle's tokio glue.
//!
//! `Lifecycle` (cloneable handle, used by the agent API, the lifecycle/admin APIs and later
//! the boot path and SideroLink): runs each transition as one store transaction on the
//! blocking pool, remembers agent signs of life, wipe progress and agent boots (`boots`) in
//! memory, and hands the planned actions to the task. An allocation closes the server's
//! agent boot.
//!
//! `ReconcileTask` (spawned from app.rs, stops on the shutdown signal) owns:
//! - the reboot timers (accepted/wiping/released/allocated servers must show a sign of life
//!   within `reboot_timeout`; else `RebootTimeout` → retry with backoff → condition);
//! - the power hook (`PowerActions`), called after commits;
//! - ServerClass membership: follows the store change feed, keeps `status.serversAvailable`
//!   / `serversInUse` of every class current (one transaction per recompute, flushed at
//!   most every `CLASS_FLUSH`), creates the built-in `any` class and resets its qualifiers
//!   (`class_status.rs`);
//! - spec edits made outside the lifecycle API (apply of `spec.accepted`, a ServerBinding
//!   created or deleted by kube-bridge/admin) are turned into the matching transition
//!   (`edits.rs`).
//!
//! Its timers, deadlines and signs of life are on tokio's clock (`tokio::time::Instant`), so
//! tests drive the task under `tokio::time::pause()` (`task/tests.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::apply::{
    self, AllocateInput, Allocated, LifecycleError, NewServer, Outcome, Registered, Registration,
    ReleaseBy,
};
use super::boots::{AgentBoots, Boot, BootRefusal, Need};
pub use super::class_status::ensure_any_class;
use super::class_status::{ClassIndex, class_changed, write_class_status};
use super::edits::{binding_changed, edit_needed, reconcile_server_edits};
use super::lifecycle::{Action, Context, Event, Phase, Step};
use super::power::PowerActions;
use crate::clock;
use crate::config::LifecycleConfig;
use crate::model::{Condition, ConditionSeverity, ConditionStatus, Kind, Object, Server};
use crate::store::{Change, ChangeOp, Group, Store, StoreError};

/// Class status is written at most this often during bursts of server changes.
pub const CLASS_FLUSH: Duration = Duration::from_millis(500);
/// Most changes of one batch that the task handles on its runtime worker (see
/// `ReconcileTask::on_plain_server_writes`); a longer batch goes to the blocking pool.
const INLINE_BATCH: usize = 16;

/// Per-disk progress of a running wipe, as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskProgress {
    pub device: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub method: String,
    pub done: bool,
}

/// Actions of a committed step, for the task.
#[derive(Debug)]
struct Planned {
    server: Server,
    actions: Vec<Action>,
    /// Retries already made (for the reboot timer of this step).
    attempt: u32,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    config: LifecycleConfig,
    /// The BMC room's setup starter when `[bmc] auto_setup` is on: agents of accepted
    /// servers without `spec.bmc` are asked for their BMC.
    bmc_setup: Option<crate::bmc::setup::AutoSetup>,
    seen: Mutex<HashMap<String, Instant>>,
    progress: Mutex<HashMap<String, Vec<DiskProgress>>>,
    boots: Mutex<AgentBoots>,
    tx: mpsc::UnboundedSender<Planned>,
    /// CreateServer calls, group-committed.
    registrations: Group<Registration, Registered, LifecycleError>,
    /// ReconcileServerAddresses reports, group-committed.
    addresses: Group<AddressReport, bool, LifecycleError>,
}

/// One ReconcileServerAddresses: the server and the `(type, address)` pairs it sent.
type AddressReport = (String, Vec<(String, String)>);

/// Handle to the lifecycle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    inner: Arc<Shared>,
}

impl Lifecycle {
    /// The handle and the task that must be spawned (`ReconcileTask::run`). `bmc_setup` is
    /// the BMC room's auto setup, `None` when `[bmc] auto_setup` is off.
    pub fn new(
        store: Store,
        config: LifecycleConfig,
        power: Arc<dyn PowerActions>,
        bmc_setup: Option<crate::bmc::setup::AutoSetup>,
    ) -> (Lifecycle, ReconcileTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let lc = Lifecycle {
            inner: Arc::new(Shared {
                registrations: Group::new(store.clone(), apply::register_in),
                addresses: Group::new(store.clone(), |t, (name, sent): &AddressReport| {
                    apply::set_addresses_in(t, name, sent)
                }),
                store,
                config,
                bmc_setup,
                seen: Mutex::new(HashMap::new()),
                progress: Mutex::new(HashMap::new()),
                boots: Mutex::new(AgentBoots::default()),
                tx,
            }),
        };
        let task = ReconcileTask {
            lc: lc.clone(),
            rx,
            power,
            actions: tokio::task::JoinSet::new(),
            timers: HashMap::new(),
            index: ClassIndex::default(),
            class_dirty: false,
            last_flush: clock::timer_now(),
        };
        (lc, task)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.inner.config
    }

    /// Whether CreateServer asks agents to set up their BMC (`[bmc] auto_setup`; default on).
    pub fn auto_bmc_setup(&self) -> bool {
        self.inner.bmc_setup.is_some()
    }

    /// The auto setup starter, when `[bmc] auto_setup` is on.
    pub fn bmc_setup(&self) -> Option<&crate::bmc::setup::AutoSetup> {
        self.inner.bmc_setup.as_ref()
    }

    /// Records a sign of life of the server's agent (any agent call).
    pub fn touch(&self, name: &str) {
        let mut seen = self.inner.seen.lock().expect("seen lock");
        match seen.get_mut(name) {
            Some(t) => *t = clock::timer_now(),
            None => {
                seen.insert(name.to_string(), clock::timer_now());
            }
        }
    }

    pub(super) fn last_seen(&self, name: &str) -> Option<Instant> {
        self.inner
            .seen
            .lock()
            .expect("seen lock")
            .get(name)
            .copied()
    }

    /// The agent called within three poll intervals.
    pub fn agent_connected(&self, name: &str) -> bool {
        let window =
            Duration::from_secs(3 * u64::from(self.inner.config.agent_poll_seconds.max(1)));
        self.last_seen(name).is_some_and(|t| t.elapsed() < window)
    }

    pub fn context(&self, name: &str) -> Context {
        Context {
            agent_connected: self.agent_connected(name),
            reboot_timeout: self.inner.config.reboot_timeout,
            reboot_retries: self.inner.config.reboot_retries,
        }
    }

    pub fn set_progress(&self, name: &str, disks: Vec<DiskProgress>) {
        self.inner
            .progress
            .lock()
            .expect("progress lock")
            .insert(name.to_string(), disks);
    }

    pub fn progress(&self, name: &str) -> Option<Vec<DiskProgress>> {
        self.inner
            .progress
            .lock()
            .expect("progress lock")
            .get(name)
            .cloned()
    }

    fn clear_progress(&self, name: &str) {
        self.inner
            .progress
            .lock()
            .expect("progress lock")
            .remove(name);
    }

    fn boots(&self) -> std::sync::MutexGuard<'_, AgentBoots> {
        self.inner.boots.lock().expect("boots lock")
    }

    /// A CreateServer from `source` began a new agent boot of the server; `bmc_asked` /
    /// `wipe_told`: what its reply said.
    pub fn begin_boot(&self, name: &str, source: IpAddr, bmc_asked: bool, wipe_told: bool) {
        self.boots().begin(name, source, bmc_asked, wipe_told);
    }

    /// May `caller` make an agent call that needs `need` about the server?
    pub fn check_boot(&self, name: &str, caller: IpAddr, need: Need) -> Result<Boot, BootRefusal> {
        self.boots().check(name, caller, need)
    }

    /// The server's current agent boot, if any.
    pub fn boot(&self, name: &str) -> Option<Boot> {
        self.boots().get(name)
    }

    /// Where the server's latest agent boot registered from (since this box started),
    /// whether or not that boot is over.
    pub fn last_agent_source(&self, name: &str) -> Option<IpAddr> {
        self.boots().last_source(name)
    }

    /// NextAction told the server's current agent boot to wipe.
    pub fn boot_told_wipe(&self, name: &str) {
        self.boots().told_wipe(name);
    }

    /// A reply asked the server's current agent boot for its BMC.
    pub fn boot_asked_bmc(&self, name: &str) {
        self.boots().asked_bmc(name);
    }

    /// The current agent boot reported its BMC credentials.
    pub fn boot_bmc_answered(&self, name: &str) {
        self.boots().bmc_answered(name);
    }

    /// The box told the server's agent to reboot or power off: that boot is over.
    pub fn end_boot(&self, name: &str) {
        self.boots().end(name);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, LifecycleError> + Send + 'static,
    ) -> Result<T, LifecycleError> {
        let store = self.inner.store.clone();
        crate::store::blocking(move || f(&store))
            .await
            .map_err(|e| LifecycleError::Internal(e.to_string()))?
    }

    fn dispatch(&self, server: &Server, step: &Step, attempt: u32) {
        if step.changed && step.next.phase == Phase::Allocated {
            // Its next boot is its owner's: the agent may only learn that it must reboot.
            self.boots().close(&server.metadata.name);
        }
        if step.actions.is_empty() {
            return;
        }
        let _ = self.inner.tx.send(Planned {
            server: server.clone(),
            actions: step.actions.clone(),
            attempt,
        });
    }

    /// Schedules the actions of a transition committed by another room's transaction
    /// (`apply::transition_in` beside its own writes, e.g. SideroLink's event sink).
    pub fn dispatch_outcome(&self, o: &apply::Outcome) {
        self.dispatch(&o.server, &o.step, 0);
    }

    /// Applies one event to one server (one transaction), then schedules its actions.
    pub async fn fire(
        &self,
        name: &str,
        event: Event,
        message: &str,
    ) -> Result<Outcome, LifecycleError> {
        let ctx = self.context(name);
        let (n, m) = (name.to_string(), message.to_string());
        let o = self
            .blocking(move |s| apply::transition(s, &n, event, &ctx, clock::unix_ms(), &m))
            .await?;
        if matches!(event, Event::Wiped) {
            self.clear_progress(name);
        }
        let attempt = match event {
            Event::RebootTimeout { attempt } => attempt + 1,
            _ => 0,
        };
        self.dispatch(&o.server, &o.step, attempt);
        Ok(o)
    }

    /// CreateServer from an agent.
    pub async fn register(&self, new: NewServer) -> Result<Registered, LifecycleError> {
        self.touch(&new.name);
        let ctx = self.context(&new.name);
        let auto_accept = self.inner.config.auto_accept;
        let r = self
            .inner
            .registrations
            .run(Registration::new(new, auto_accept, ctx, clock::unix_ms()))
            .await?;
        if let Some(step) = &r.step {
            self.dispatch(r.server(), step, 0);
        }
        Ok(r)
    }

    /// ReconcileServerAddresses from an agent: the sent `(type, address)` pairs replace the
    /// server's addresses of those types (`apply::set_addresses_in`), in the next group
    /// commit of address reports. Whether anything changed.
    pub async fn report_addresses(
        &self,
        name: String,
        sent: Vec<(String, String)>,
    ) -> Result<bool, LifecycleError> {
        self.inner.addresses.run((name, sent)).await
    }

    pub async fn allocate(&self, input: AllocateInput) -> Result<Allocated, LifecycleError> {
        // Whether the picked server's agent is connected is only known after the pick; a
        // power cycle of a server whose agent is parked is harmless, so plan without it.
        let ctx = Context {
            agent_connected: false,
            ..self.context("")
        };
        let a = self
            .blocking(move |s| apply::allocate(s, &input, &ctx, clock::unix_ms()))
            .await?;
        let name = a.outcome.server.metadata.name.clone();
        let mut step = a.outcome.step.clone();
        if self.agent_connected(&name) {
            // The parked agent reboots itself on its next NextAction.
            step.actions.retain(|x| *x != Action::PxeBootAndPowerCycle);
        }
        self.dispatch(&a.outcome.server, &step, 0);
        Ok(a)
    }

    /// An operator's on-demand wipe of an available server: it becomes dirty (`accepted`)
    /// so its agent is told to WIPE, and a server with a BMC is PXE booted + power cycled
    /// into the agent. Refused (nothing written) unless the server is available.
    pub async fn wipe(&self, name: &str, by: &str) -> Result<Outcome, LifecycleError> {
        self.fire(
            name,
            Event::WipeRequested,
            &format!("wipe requested by {by}"),
        )
        .await
    }

    pub async fn release(&self, by: ReleaseBy) -> Result<Outcome, LifecycleError> {
        let ctx = Context {
            agent_connected: false,
            ..self.context("")
        };
        let o = self
            .blocking(move |s| apply::release(s, &by, &ctx, clock::unix_ms()))
            .await?;
        self.dispatch(&o.server, &o.step, 0);
        Ok(o)
    }
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    deadline: Instant,
    attempt: u32,
}

/// The lifecycle's background task (see the module doc).
#[derive(Debug)]
pub struct ReconcileTask {
    lc: Lifecycle,
    rx: mpsc::UnboundedReceiver<Planned>,
    power: Arc<dyn PowerActions>,
    /// Running power actions and condition writes (after their commits); aborted on
    /// shutdown (the reboot timers of the servers they were for are re-armed at start).
    actions: tokio::task::JoinSet<()>,
    timers: HashMap<String, Timer>,
    index: ClassIndex,
    class_dirty: bool,
    last_flush: Instant,
}

impl ReconcileTask {
    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut feed = self.lc.store().subscribe();
        if let Err(e) = self.start().await {
            tracing::error!(error = %crate::error_chain(&e), "lifecycle: initial scan failed");
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(p) = self.rx.recv() => self.run_actions(p),
                Some(_) = self.actions.join_next(), if !self.actions.is_empty() => {}
                r = feed.recv() => match r {
                    Ok(c) => {
                        let mut batch = vec![c];
                        while batch.len() < 4096 {
                            match feed.try_recv() {
                                Ok(c) => batch.push(c),
                                Err(_) => break,
                            }
                        }
                        self.on_changes(batch).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "lifecycle: change feed lagged; full rescan");
                        if let Err(e) = self.rescan().await {
                            tracing::error!(error = %crate::error_chain(&e), "lifecycle: rescan failed");
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    self.check_timers().await;
                    if self.class_dirty && self.last_flush.elapsed() >= CLASS_FLUSH {
                        self.flush_classes().await;
                    }
                }
            }
        }
        if self.class_dirty {
            self.flush_classes().await;
        }
        self.actions.abort_all();
        while self.actions.join_next().await.is_some() {}
    }

    async fn start(&mut self) -> Result<(), LifecycleError> {
        let store = self.lc.store().clone();
        tokio::task::spawn_blocking(move || ensure_any_class(&store))
            .await
            .map_err(|e| LifecycleError::Internal(e.to_string()))??;
        self.rescan().await?;
        // Servers the box was waiting for before a restart get a fresh timer.
        let store = self.lc.store().clone();
        let waiting = tokio::task::spawn_blocking(move || -> Result<Vec<String>, StoreError> {
            store.scan(Kind::Server, |s| match s.object {
                Object::Server(srv) if apply::server_state(&srv).phase.awaits_reboot() => {
                    Some(srv.metadata.name)
                }
                _ => None,
            })
        })
        .await
        .map_err(|e| LifecycleError::Internal(e.to_string()))??;
        let deadline = clock::timer_now() + self.lc.config().reboot_timeout;
        for name in waiting {
            self.timers.insert(
                name,
                Timer {
                    deadline,
                    attempt: 0,
                },
            );
        }
        Ok(())
    }

    async fn rescan(&mut self) -> Result<(), LifecycleError> {
        let store = self.lc.store().clone();
        let mut index = std::mem::take(&mut self.index);
        let index = tokio::task::spawn_blocking(move || index.rebuild(&store).map(|_| index))
            .await
            .map_err(|e| LifecycleError::Internal(e.to_string()))??;
        self.index = index;
        self.class_dirty = true;
        Ok(())
    }

    fn run_actions(&mut self, p: Planned) {
        let name = p.server.metadata.name.clone();
        for a in p.actions {
            match a {
                Action::PxeBootAndPowerCycle => {
                    let fut = self.power.pxe_boot_and_cycle(&p.server);
                    self.actions.spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::warn!(error = %e, "lifecycle: power cycle failed; the reboot timer retries");
                        }
                    });
                }
                Action::PowerOff => {
                    let fut = self.power.power_off(&p.server);
                    self.actions.spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::warn!(error = %e, "lifecycle: power off failed");
                        }
                    });
                }
                Action::ArmRebootTimer(d) => {
                    self.timers.insert(
                        name.clone(),
                        Timer {
                            deadline: clock::timer_now() + d,
                            attempt: p.attempt,
                        },
                    );
                }
                Action::DisarmRebootTimer => {
                    self.timers.remove(&name);
                }
                Action::RaiseRebootTimeoutCondition => {
                    self.timers.remove(&name);
                    let store = self.lc.store().clone();
                    let n = name.clone();
                    let retries = self.lc.config().reboot_retries;
                    self.actions.spawn_blocking(move || {
                        if let Err(e) = raise_timeout_condition(&store, &n, retries) {
                            tracing::warn!(server = %n, error = %crate::error_chain(&e), "lifecycle: cannot set PowerCycle condition");
                        }
                    });
                }
            }
        }
    }

    async fn check_timers(&mut self) {
        let now = clock::timer_now();
        let timeout = self.lc.config().reboot_timeout;
        let due: Vec<(String, Timer)> = self
            .timers
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        for (name, timer) in due {
            // A heartbeat (any agent call) after the deadline was set pushes it back.
            if let Some(seen) = self.lc.last_seen(&name)
                && seen + timeout > now
            {
                self.timers.insert(
                    name,
                    Timer {
                        deadline: seen + timeout,
                        ..timer
                    },
                );
                continue;
            }
            self.timers.remove(&name);
            let event = Event::RebootTimeout {
                attempt: timer.attempt,
            };
            let message = format!(
                "no sign of life within the reboot timeout (retry {} of {})",
                timer.attempt + 1,
                self.lc.config().reboot_retries
            );
            match self.lc.fire(&name, event, &message).await {
                Ok(_) => {}
                Err(LifecycleError::Illegal(_)) | Err(LifecycleError::UnknownServer(_)) => {}
                Err(e) => {
                    tracing::warn!(server = %name, error = %crate::error_chain(&e), "lifecycle: reboot timeout");
                }
            }
        }
    }

    async fn on_changes(&mut self, batch: Vec<Change>) {
        if self.on_plain_server_writes(&batch) {
            if self.class_dirty && self.last_flush.elapsed() >= CLASS_FLUSH {
                self.flush_classes().await;
            }
            return;
        }
        let lc = self.lc.clone();
        let mut index = std::mem::take(&mut self.index);
        let result = tokio::task::spawn_blocking(move || {
            let mut dirty = false;
            let mut planned = Vec::new();
            let mut rescan = false;
            // Edits of the servers written one after another are reconciled in one
            // transaction (one commit for a burst of applies).
            let mut batch = batch.into_iter().peekable();
            while let Some(c) = batch.next() {
                match (c.kind, c.op) {
                    (Kind::Server, ChangeOp::Put) => {
                        // The newest object each change of the run carries, by name.
                        let mut carried = HashMap::new();
                        let mut names = vec![c.name];
                        carried.extend(c.object.map(|o| (names[0].clone(), o)));
                        while let Some(n) =
                            batch.next_if(|n| (n.kind, n.op) == (Kind::Server, ChangeOp::Put))
                        {
                            if let Some(o) = n.object {
                                carried.insert(n.name.clone(), o);
                            } else {
                                carried.remove(&n.name);
                            }
                            names.push(n.name);
                        }
                        let mut seen = std::collections::HashSet::new();
                        names.retain(|n| seen.insert(n.clone()));
                        // Read first (the object the change carries, else the store): only
                        // the servers whose spec needs an edit (most writes need none) are
                        // edited, in one write transaction.
                        let mut read: Vec<_> = names
                            .iter()
                            .map(|n| Some(carried.get(n).map_or_else(|| lc.store().get(Kind::Server, n).map(|s| s.map(|s| Arc::new(s.object))), |o| Ok(Some(o.clone())))))
                            .collect();
                        let to_edit: Vec<usize> = (0..names.len())
                            .filter(|&i| match &read[i] {
                                Some(Ok(Some(object))) => match &**object {
                                    Object::Server(server) => edit_needed(server),
                                    _ => false,
                                },
                                Some(Ok(None)) => false,
                                _ => true,
                            })
                            .collect();
                        if !to_edit.is_empty() {
                            let edit_names: Vec<String> =
                                to_edit.iter().map(|&i| names[i].clone()).collect();
                            let edits = reconcile_server_edits(&lc, &edit_names);
                            for (&i, edit) in to_edit.iter().zip(edits) {
                                match edit {
                                    Ok(Some((server, step))) => planned.push((server, step)),
                                    Ok(None) => {}
                                    Err(e) => tracing::warn!(server = %names[i], error = %crate::error_chain(&e), "lifecycle: reconcile"),
                                }
                                // Edited: read again below.
                                read[i] = None;
                            }
                        }
                        for (name, read) in names.iter().zip(read) {
                            let read = read.unwrap_or_else(|| {
                                lc.store()
                                    .get(Kind::Server, name)
                                    .map(|s| s.map(|s| Arc::new(s.object)))
                            });
                            match read {
                                Ok(Some(object)) => {
                                    if let Object::Server(server) = &*object {
                                        dirty |= index.update_server(server);
                                    }
                                }
                                Ok(None) => dirty |= index.remove_server(name),
                                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "lifecycle: read server"),
                            }
                        }
                    }
                    (Kind::Server, ChangeOp::Delete) => {
                        lc.boots().forget_source(&c.name);
                        dirty |= index.remove_server(&c.name);
                    }
                    (Kind::ServerClass, _) => match class_changed(&lc, &index, &c.name, c.object.as_deref()) {
                        Ok(true) => rescan = true,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "lifecycle: class"),
                    },
                    (Kind::ServerBinding, op) => match binding_changed(&lc, &c.name, op) {
                        Ok(Some((server, step))) => planned.push((server, step)),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(server = %c.name, error = %crate::error_chain(&e), "lifecycle: binding"),
                    },
                    _ => {}
                }
            }
            if rescan {
                if let Err(e) = index.rebuild(lc.store()) {
                    tracing::warn!(error = %crate::error_chain(&e), "lifecycle: class rescan");
                }
                dirty = true;
            }
            (index, dirty, planned)
        })
        .await;
        match result {
            Ok((index, dirty, planned)) => {
                self.index = index;
                self.class_dirty |= dirty;
                for (server, step) in planned {
                    self.lc.dispatch(&server, &step, 0);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "lifecycle: change task failed; rescanning");
                let _ = self.rescan().await;
            }
        }
        if self.class_dirty && self.last_flush.elapsed() >= CLASS_FLUSH {
            self.flush_classes().await;
        }
    }

    /// The common batch, handled here without the blocking pool or a store read: a few
    /// Server writes whose carried objects need no lifecycle edit (an apply that changed
    /// labels or spec, a registration, a status write) only update the class index. False
    /// (nothing done) for any other batch, which [`ReconcileTask::on_changes`] handles.
    fn on_plain_server_writes(&mut self, batch: &[Change]) -> bool {
        let plain = batch.len() <= INLINE_BATCH
            && batch
                .iter()
                .all(|c| match (c.kind, c.op, c.object.as_deref()) {
                    (Kind::Server, ChangeOp::Put, Some(Object::Server(server))) => {
                        !edit_needed(server)
                    }
                    _ => false,
                });
        if !plain {
            return false;
        }
        for c in batch {
            if let Some(Object::Server(server)) = c.object.as_deref() {
                self.class_dirty |= self.index.update_server(server);
            }
        }
        true
    }

    /// Writes every class whose member lists changed, in one transaction.
    async fn flush_classes(&mut self) {
        self.class_dirty = false;
        self.last_flush = clock::timer_now();
        let status = self.index.status();
        let store = self.lc.store().clone();
        let r = tokio::task::spawn_blocking(move || write_class_status(&store, &status)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "lifecycle: class status write failed");
                self.class_dirty = true;
            }
            Err(e) => tracing::error!(error = %e, "lifecycle: class status task failed"),
        }
    }
}

/// Sets condition `PowerCycle=False` (reason `RebootTimeout`) on the server.
fn raise_timeout_condition(store: &Store, name: &str, retries: u32) -> Result<(), LifecycleError> {
    let condition = Condition {
        type_: "PowerCycle".into(),
        status: ConditionStatus::False,
        severity: Some(ConditionSeverity::Warning),
        last_transition_time: clock::rfc3339(clock::unix_ms()),
        reason: Some("RebootTimeout".into()),
        message: Some(format!(
            "no sign of life after {retries} power-cycle retries; check the BMC and the boot order"
        )),
    };
    apply::edit_server_typed(store, name, |server| {
        let status = server.status.get_or_insert_with(Default::default);
        Condition::set(&mut status.conditions, condition);
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests;
