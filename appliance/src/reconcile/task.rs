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
//!   most every `CLASS_FLUSH`), creates the built-in `any` class and resets its qualifiers;
//! - spec edits made outside the lifecycle API (apply of `spec.accepted`, a ServerBinding
//!   created or deleted by kube-bridge/admin) are turned into the matching transition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::apply::{
    self, AllocateInput, Allocated, LifecycleError, NewServer, Outcome, Registered, ReleaseBy,
};
use super::boots::{AgentBoots, Boot, BootRefusal, Need};
use super::classes::{ANY, Matcher};
use super::lifecycle::{Action, Context, Event, Phase, Step};
use super::power::PowerActions;
use crate::clock;
use crate::config::LifecycleConfig;
use crate::model::{Kind, Object, Server, ServerClass};
use crate::store::{Change, ChangeOp, NewEvent, Store, StoreError};

/// Class status is written at most this often during bursts of server changes.
pub const CLASS_FLUSH: Duration = Duration::from_millis(500);

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
}

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
            last_flush: clock::now(),
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
            Some(t) => *t = clock::now(),
            None => {
                seen.insert(name.to_string(), clock::now());
            }
        }
    }

    fn last_seen(&self, name: &str) -> Option<Instant> {
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
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| LifecycleError::Internal(format!("store task failed: {e}")))?
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
            .blocking(move |s| apply::register(s, &new, auto_accept, &ctx, clock::unix_ms()))
            .await?;
        if let Some(step) = &r.step {
            self.dispatch(&r.server, step, 0);
        }
        Ok(r)
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

/// Which classes each server belongs to, and whether it is in use.
#[derive(Debug, Default)]
struct ClassIndex {
    /// Class name → (spec as JSON, matcher).
    classes: BTreeMap<String, (Value, Matcher)>,
    /// Server name → (in use, member of these classes).
    members: HashMap<String, (bool, Vec<String>)>,
}

impl ClassIndex {
    fn evaluate(&self, server: &Server) -> (bool, Vec<String>) {
        let in_use = server.status.as_ref().is_some_and(|s| s.in_use);
        let classes = self
            .classes
            .iter()
            .filter(|(_, (_, m))| m.matches(server))
            .map(|(n, _)| n.clone())
            .collect();
        (in_use, classes)
    }

    /// Returns true if the membership changed.
    fn update_server(&mut self, server: &Server) -> bool {
        let v = self.evaluate(server);
        let name = &server.metadata.name;
        if self.members.get(name) == Some(&v) {
            return false;
        }
        self.members.insert(name.clone(), v);
        true
    }

    fn remove_server(&mut self, name: &str) -> bool {
        self.members.remove(name).is_some()
    }

    fn rebuild(&mut self, store: &Store) -> Result<(), StoreError> {
        self.classes.clear();
        for s in store.list(Kind::ServerClass)? {
            if let Object::ServerClass(c) = s.object {
                let spec = serde_json::to_value(&c.spec).unwrap_or(Value::Null);
                self.classes
                    .insert(c.metadata.name.clone(), (spec, Matcher::new(&c)));
            }
        }
        self.members.clear();
        for s in store.list(Kind::Server)? {
            if let Object::Server(server) = s.object {
                let v = self.evaluate(&server);
                self.members.insert(server.metadata.name.clone(), v);
            }
        }
        Ok(())
    }

    /// (available, in use) per class, sorted by server name.
    fn status(&self) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
        let mut out: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = self
            .classes
            .keys()
            .map(|k| (k.clone(), Default::default()))
            .collect();
        for (server, (in_use, classes)) in &self.members {
            for c in classes {
                if let Some((avail, used)) = out.get_mut(c) {
                    if *in_use {
                        used.insert(server.clone());
                    } else {
                        avail.insert(server.clone());
                    }
                }
            }
        }
        out.into_iter()
            .map(|(k, (a, u))| (k, (a.into_iter().collect(), u.into_iter().collect())))
            .collect()
    }
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
            Ok(store
                .list(Kind::Server)?
                .into_iter()
                .filter_map(|s| match s.object {
                    Object::Server(srv) if apply::server_state(&srv).phase.awaits_reboot() => {
                        Some(srv.metadata.name)
                    }
                    _ => None,
                })
                .collect())
        })
        .await
        .map_err(|e| LifecycleError::Internal(e.to_string()))??;
        let deadline = clock::now() + self.lc.config().reboot_timeout;
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
                            deadline: clock::now() + d,
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
        let now = clock::now();
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
        let lc = self.lc.clone();
        let mut index = std::mem::take(&mut self.index);
        let result = tokio::task::spawn_blocking(move || {
            let mut dirty = false;
            let mut planned = Vec::new();
            let mut rescan = false;
            for c in batch {
                match (c.kind, c.op) {
                    (Kind::Server, ChangeOp::Put) => {
                        match reconcile_server_edit(&lc, &c.name) {
                            Ok(Some((server, step))) => planned.push((server, step)),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(server = %c.name, error = %crate::error_chain(&e), "lifecycle: reconcile"),
                        }
                        match lc.store().get(Kind::Server, &c.name) {
                            Ok(Some(s)) => {
                                if let Object::Server(server) = s.object {
                                    dirty |= index.update_server(&server);
                                }
                            }
                            Ok(None) => dirty |= index.remove_server(&c.name),
                            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "lifecycle: read server"),
                        }
                    }
                    (Kind::Server, ChangeOp::Delete) => dirty |= index.remove_server(&c.name),
                    (Kind::ServerClass, _) => match class_changed(&lc, &index, &c.name) {
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

    /// Writes every class whose member lists changed, in one transaction.
    async fn flush_classes(&mut self) {
        self.class_dirty = false;
        self.last_flush = clock::now();
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

fn write_class_status(
    store: &Store,
    status: &BTreeMap<String, (Vec<String>, Vec<String>)>,
) -> Result<(), StoreError> {
    store.transact(|t| {
        for (name, (avail, used)) in status {
            let Some(stored) = t.get(Kind::ServerClass, name)? else {
                continue;
            };
            let Object::ServerClass(mut class) = stored.object else {
                continue;
            };
            let st = class.status.get_or_insert_with(Default::default);
            if st.servers_available == *avail && st.servers_in_use == *used {
                continue;
            }
            st.servers_available = avail.clone();
            st.servers_in_use = used.clone();
            t.put(&Object::ServerClass(class))?;
        }
        Ok(())
    })
}

/// Creates the built-in `any` class if missing, and resets its qualifiers (as Sidero does
/// on every reconcile), so it lists every accepted, uncordoned server.
pub fn ensure_any_class(store: &Store) -> Result<(), LifecycleError> {
    store.transact(|t| {
        let doc = serde_json::json!({
            "apiVersion": Kind::ServerClass.api_version(),
            "kind": "ServerClass",
            "metadata": { "name": ANY },
            "spec": {},
        });
        let fresh = Object::from_json(Kind::ServerClass, &doc.to_string())
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        match t.get(Kind::ServerClass, ANY)? {
            None => {
                t.put(&fresh)?;
            }
            Some(stored) => {
                if let (Object::ServerClass(mut class), Object::ServerClass(f)) =
                    (stored.object, fresh)
                {
                    let q = |c: &ServerClass| {
                        serde_json::to_value(&c.spec)
                            .ok()
                            .and_then(|v| v.get("qualifiers").cloned())
                    };
                    if q(&class) != q(&f) {
                        let mut spec = serde_json::to_value(&class.spec).unwrap_or_default();
                        if let Some(m) = spec.as_object_mut() {
                            m.remove("qualifiers");
                        }
                        if let Ok(s) = serde_json::from_value(spec) {
                            class.spec = s;
                            t.put(&Object::ServerClass(class))?;
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// A class changed: returns whether its spec differs from the indexed one (then members
/// must be recomputed). Resets `any`'s qualifiers.
fn class_changed(lc: &Lifecycle, index: &ClassIndex, name: &str) -> Result<bool, LifecycleError> {
    if name == ANY {
        ensure_any_class(lc.store())?;
    }
    let now = lc.store().get(Kind::ServerClass, name)?;
    let spec = now.and_then(|s| match s.object {
        Object::ServerClass(c) => serde_json::to_value(&c.spec).ok(),
        _ => None,
    });
    Ok(spec.as_ref() != index.classes.get(name).map(|(v, _)| v))
}

/// A Server was written: if its spec was edited outside the lifecycle (apply), bring the
/// lifecycle state in line with one transition. Returns the step to dispatch.
fn reconcile_server_edit(
    lc: &Lifecycle,
    name: &str,
) -> Result<Option<(Server, Step)>, LifecycleError> {
    let ctx = lc.context(name);
    lc.store().transact(|t| {
        let Some(stored) = t.get(Kind::Server, name)? else {
            return Ok(None);
        };
        let Object::Server(mut server) = stored.object else {
            return Ok(None);
        };
        let recorded = server
            .status
            .as_ref()
            .and_then(|s| s.state.as_deref())
            .and_then(Phase::parse);
        let Some(recorded) = recorded else {
            // Applied without a lifecycle state (e.g. Sidero YAML): adopt the derived one.
            let state = apply::server_state(&server);
            apply::write_state(&mut server, state, clock::unix_ms());
            t.put(&Object::Server(server.clone()))?;
            t.append_event(NewEvent {
                time_ms: clock::unix_ms(),
                server: name.to_string(),
                event: "adopt".into(),
                from: String::new(),
                to: state.phase.as_str().into(),
                message: "state derived from accepted/inUse/isClean".into(),
            })?;
            return Ok(None);
        };
        let accepted_now = server.spec.accepted;
        if accepted_now == super::lifecycle::flags(recorded).accepted {
            return Ok(None);
        }
        let event = if accepted_now {
            Event::Accept
        } else {
            Event::Unaccept
        };
        let from = super::lifecycle::ServerState {
            phase: recorded,
            cordoned: server.spec.cordoned,
        };
        match super::lifecycle::plan(from, event, &ctx) {
            Ok(step) => {
                apply::write_state(&mut server, step.next, clock::unix_ms());
                t.put(&Object::Server(server.clone()))?;
                t.append_event(NewEvent {
                    time_ms: clock::unix_ms(),
                    server: name.to_string(),
                    event: event.name().into(),
                    from: recorded.as_str().into(),
                    to: step.next.phase.as_str().into(),
                    message: "spec.accepted edited".into(),
                })?;
                Ok(Some((server, step)))
            }
            Err(illegal) => {
                // Put the flag back and say why, rather than leave status and spec apart.
                apply::write_state(&mut server, from, clock::unix_ms());
                t.put(&Object::Server(server))?;
                t.append_event(NewEvent {
                    time_ms: clock::unix_ms(),
                    server: name.to_string(),
                    event: format!("{event}-rejected"),
                    from: recorded.as_str().into(),
                    to: recorded.as_str().into(),
                    message: illegal.to_string(),
                })?;
                Ok(None)
            }
        }
    })
}

/// A ServerBinding appeared or disappeared outside `allocate`/`release`.
fn binding_changed(
    lc: &Lifecycle,
    name: &str,
    op: ChangeOp,
) -> Result<Option<(Server, Step)>, LifecycleError> {
    let ctx = lc.context(name);
    match op {
        ChangeOp::Delete => Ok(
            apply::binding_gone(lc.store(), name, &ctx, clock::unix_ms())?
                .map(|o| (o.server, o.step)),
        ),
        ChangeOp::Put => {
            let Some(stored) = lc.store().get(Kind::Server, name)? else {
                return Ok(None);
            };
            let Object::Server(server) = stored.object else {
                return Ok(None);
            };
            if apply::server_state(&server).phase != Phase::Available {
                return Ok(None);
            }
            let o = apply::transition(
                lc.store(),
                name,
                Event::Allocate { explicit: true },
                &ctx,
                clock::unix_ms(),
                "a ServerBinding was created for it",
            )?;
            Ok(Some((o.server, o.step)))
        }
    }
}

/// Sets condition `PowerCycle=False` (reason `RebootTimeout`) on the server.
fn raise_timeout_condition(store: &Store, name: &str, retries: u32) -> Result<(), LifecycleError> {
    let time = crate::reconcile::rfc3339(clock::unix_ms());
    apply::edit_server(store, name, |v| {
        let status = v
            .as_object_mut()
            .ok_or("server is not an object")?
            .entry("status")
            .or_insert_with(|| serde_json::json!({}));
        let conditions = status
            .as_object_mut()
            .ok_or("status is not an object")?
            .entry("conditions")
            .or_insert_with(|| serde_json::json!([]));
        let list = conditions.as_array_mut().ok_or("conditions is not a list")?;
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PowerCycle"));
        list.push(serde_json::json!({
            "type": "PowerCycle",
            "status": "False",
            "severity": "Warning",
            "lastTransitionTime": time,
            "reason": "RebootTimeout",
            "message": format!("no sign of life after {retries} power-cycle retries; check the BMC and the boot order"),
        }));
        Ok(())
    })
    .map(|_| ())
}
