//! `kube-bridge run`: the two-way sync between one box and the management cluster.
//!
//! Level-triggered: the cluster side is kept in kube-runtime reflectors (a watch per kind;
//! a stale watch answered 410 Gone re-lists by itself), the box side in a [`Snapshot`] fed
//! by [`BoxClient::follow`] (a list, then the box's change stream; resumed after a break,
//! listed again when the box compacted past it). Every change on either side, and a timer,
//! runs one [`Bridge::pass`]
//! that compares both views and writes only the differences: box observations to the
//! cluster (server-side apply, the bridge's field manager, forced), cluster intent to the
//! box (admin `Apply`, lifecycle `Allocate`/`Release`). Neither side waits for the other:
//! when one is away the pass skips what needs it and the next pass after it returns catches
//! up from whatever both sides say then. What wins for which field is `mirror.rs`'s
//! contract (README's who-wins table).

use crate::boxapi::{AllocateOutcome, BoxClient, BoxError, BoxEvent, Feed, Snapshot};
use crate::mirror::{self, BOX_LABEL};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Annotation on a MetalMachine: the box whose bridge claimed it.
pub const CLAIM_ANNOTATION: &str = "appliance.sidero.dev/box";
/// Sidero's MetalMachine finalizer: the server is released before the object goes.
pub const MACHINE_FINALIZER: &str = "metalmachine.infrastructure.cluster.x-k8s.io";
/// CAPI's pause annotation.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// CAPI's cluster-name label.
pub const CLUSTER_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// How often a cluster's talosconfig Secret is read again (see [`Bridge::talosconfigs`]).
pub const TALOSCONFIG_READ_EVERY: Duration = Duration::from_secs(5);
/// Field manager shared by every bridge for MetalCluster (all write the same values).
pub const SHARED_MANAGER: &str = "kube-bridge";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error("{0}")]
    Other(String),
}

/// What `run` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub box_id: String,
    /// How often a pass runs when nothing else woke the loop (writes that failed are
    /// retried, a Machine's bootstrap Secret is looked for), and how often an unreachable
    /// box is tried again.
    pub poll: Duration,
}

/// The kinds the bridge reads from the cluster.
#[derive(Clone)]
struct Kinds {
    server: ApiResource,
    class: ApiResource,
    env: ApiResource,
    binding: ApiResource,
    machine: ApiResource,
    metal_cluster: ApiResource,
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

impl Kinds {
    fn new() -> Kinds {
        let metal = "metal.sidero.dev";
        let infra = "infrastructure.cluster.x-k8s.io";
        Kinds {
            server: ar(metal, "v1alpha2", "Server", "servers"),
            class: ar(metal, "v1alpha2", "ServerClass", "serverclasses"),
            env: ar(metal, "v1alpha2", "Environment", "environments"),
            binding: ar(infra, "v1alpha3", "ServerBinding", "serverbindings"),
            machine: ar(infra, "v1alpha3", "MetalMachine", "metalmachines"),
            metal_cluster: ar(infra, "v1alpha3", "MetalCluster", "metalclusters"),
        }
    }
}

struct Stores {
    server: Store<DynamicObject>,
    class: Store<DynamicObject>,
    env: Store<DynamicObject>,
    binding: Store<DynamicObject>,
    machine: Store<DynamicObject>,
    metal_cluster: Store<DynamicObject>,
}

/// Starts a reflector for `ar`; every event wakes the loop.
fn reflect(
    client: &kube::Client,
    ar: &ApiResource,
    wake: Arc<Notify>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let kind = ar.kind.clone();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    tasks.spawn(async move {
        futures_util::pin_mut!(stream);
        let mut failing = false;
        while let Some(e) = stream.next().await {
            match e {
                Ok(_) => {
                    failing = false;
                    wake.notify_one();
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(kind = %kind, error = %e, "cluster watch failing; retrying with backoff");
                }
                Err(_) => {}
            }
        }
    });
    reader
}

fn value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn by_name(store: &Store<DynamicObject>) -> BTreeMap<String, Value> {
    store
        .state()
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), value(o)))
        .collect()
}

fn deleting(o: &Value) -> bool {
    o["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn name_of(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ns_of(o: &Value) -> String {
    o["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The bridge of one box.
pub struct Bridge {
    box_id: String,
    manager: String,
    seed_manager: String,
    client: kube::Client,
    boxc: BoxClient,
    kinds: Kinds,
    stores: Stores,
    /// The box as its change stream has told it so far; `loaded` once listed, `fresh`
    /// while the stream is followed and has caught up (a list, or a bookmark since the
    /// stream was last broken: the box sends one once it has replayed the backlog).
    view: Snapshot,
    loaded: bool,
    fresh: bool,
    /// Environment status last written per name (several boxes may download the same one:
    /// each writes only when its own observation changed, so they never ping-pong).
    env_written: HashMap<String, Value>,
    /// Servers a pass found needing no write, by name: (the cluster object's
    /// resourceVersion, the box object's revision) it compared. The next pass skips the
    /// comparison (and the JSON conversion of the cluster object) while both are unchanged,
    /// so a pass over 10,000 Servers in sync costs a map lookup per Server.
    server_in_sync: HashMap<String, (String, u64)>,
    /// Talosconfigs handed to the box: cluster → the Secret's resourceVersion sent (shared
    /// with the write futures, which record it once the box took it).
    talosconfigs: Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// When each cluster's talosconfig Secret was last read.
    talosconfig_read: HashMap<String, tokio::time::Instant>,
    /// Statistics of the last pass, for logs and tests.
    pub writes: u64,
}

type Write = BoxFuture<'static, Result<(), SyncError>>;

/// Runs the bridge until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    boxc: BoxClient,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SyncError> {
    let wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    let kinds = Kinds::new();
    let stores = Stores {
        server: reflect(&client, &kinds.server, wake.clone(), &mut tasks),
        class: reflect(&client, &kinds.class, wake.clone(), &mut tasks),
        env: reflect(&client, &kinds.env, wake.clone(), &mut tasks),
        binding: reflect(&client, &kinds.binding, wake.clone(), &mut tasks),
        machine: reflect(&client, &kinds.machine, wake.clone(), &mut tasks),
        metal_cluster: reflect(&client, &kinds.metal_cluster, wake.clone(), &mut tasks),
    };
    let mut bridge = Bridge {
        manager: format!("kube-bridge/{}", settings.box_id),
        seed_manager: format!("kube-bridge-seed/{}", settings.box_id),
        box_id: settings.box_id.clone(),
        client,
        boxc,
        kinds,
        stores,
        view: Snapshot::default(),
        loaded: false,
        fresh: false,
        env_written: HashMap::new(),
        server_in_sync: HashMap::new(),
        talosconfigs: Default::default(),
        talosconfig_read: HashMap::new(),
        writes: 0,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    match box_lag() {
        None => {
            tasks.spawn(bridge.boxc.clone().follow(tx, settings.poll));
        }
        Some(lag) => {
            let (lag_tx, lag_rx) = tokio::sync::mpsc::channel(1024);
            tasks.spawn(bridge.boxc.clone().follow(lag_tx, settings.poll));
            tasks.spawn(delay(lag_rx, tx, lag));
        }
    }
    tokio::pin!(shutdown);
    let mut behind_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(ev) = rx.recv() => {
                bridge.take(ev);
                // Let a burst of changes settle into one pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = wake.notified() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = tokio::time::sleep(settings.poll) => {}
        }
        while let Ok(ev) = rx.try_recv() {
            bridge.take(ev);
        }
        if !bridge.ready() {
            continue;
        }
        let before = bridge.writes;
        if bridge.caught_up() {
            behind_since = None;
            bridge.pass().await;
        } else {
            let since = *behind_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                tracing::warn!(
                    view = bridge.view.revision,
                    settled = bridge.view.settled,
                    written = bridge.boxc.written(),
                    "the box view has not caught up with the bridge's own writes for 30 s"
                );
                behind_since = Some(tokio::time::Instant::now());
            }
            bridge.cluster_pass().await;
        }
        if bridge.writes != before {
            // Our own writes come back as events; one more pass sees them settle.
            wake.notify_one();
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Fault injection for tests: `KUBE_BRIDGE_TEST_BOX_LAG_MS` holds every event of the box's
/// change stream this long before the loop sees it, as a slow stream on a loaded box would
/// (tests/sync.rs shows with it that the bridge never undoes its own box writes from a
/// stale view; see [`Bridge::caught_up`]).
fn box_lag() -> Option<Duration> {
    let ms: u64 = std::env::var("KUBE_BRIDGE_TEST_BOX_LAG_MS")
        .ok()?
        .parse()
        .ok()?;
    (ms > 0).then(|| {
        tracing::warn!(
            lag_ms = ms,
            "KUBE_BRIDGE_TEST_BOX_LAG_MS: the box's change stream is held back (a test setting)"
        );
        Duration::from_millis(ms)
    })
}

/// Forwards each event `lag` after it arrived.
async fn delay(
    mut rx: tokio::sync::mpsc::Receiver<BoxEvent>,
    tx: tokio::sync::mpsc::Sender<BoxEvent>,
    lag: Duration,
) {
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    let hold = async move {
        while let Some(ev) = rx.recv().await {
            if held_tx
                .send((tokio::time::Instant::now() + lag, ev))
                .is_err()
            {
                return;
            }
        }
    };
    let release = async move {
        while let Some((at, ev)) = held_rx.recv().await {
            tokio::time::sleep_until(at).await;
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(hold, release);
}

impl Bridge {
    fn take(&mut self, ev: BoxEvent) {
        match ev {
            BoxEvent::Feed(feed) => {
                let caught_up = match &feed {
                    Feed::Relist(_) => true,
                    Feed::Changes { changes, .. } => changes.is_empty(),
                };
                self.loaded |= matches!(feed, Feed::Relist(_));
                self.fresh |= caught_up;
                self.view.absorb(feed);
            }
            // The view is kept but no longer taken as proof that something is gone.
            BoxEvent::Down(_) => self.fresh = false,
        }
    }

    /// May a pass derive writes from the box view now?
    ///
    /// The view trails the box: it is what the change stream has delivered so far. Right
    /// after the bridge writes the box (deletes a ServerClass deleted in the cluster,
    /// releases a server, allocates one) the view still shows the box from before that
    /// write while the cluster already shows what followed from it (the class's finalizer
    /// dropped, the object gone). A pass comparing the two would take the stale class for a
    /// box-only one and create it in the cluster again, or allocate twice. So writes derived
    /// from the view wait until the view has reached the revision the box answered the
    /// bridge's last write with ([`BoxClient::written`]) and a re-list has settled
    /// ([`Snapshot::consistent`]); the change stream brings it there within one event or
    /// one bookmark ([`crate::boxapi::BOOKMARK_MS`]).
    ///
    /// This gate, rather than a revision precondition on the box's `Apply`: the write the
    /// race made wrong is on the cluster side (the re-created class), where a box
    /// precondition cannot reach; `Delete`, `Allocate` and `Release` would each need one
    /// too; and the box's replies already carry the revision, so the box needs no change.
    /// Other writers (an operator on the box, the agents) are not gated: their changes are
    /// observations the next pass mirrors, as for any level-triggered controller.
    ///
    /// For the same reason nothing is derived from the view while the box is away or its
    /// stream is still replaying what happened meanwhile (`fresh`): a Server the box
    /// deleted while the bridge was away would otherwise be written back to it whole.
    fn caught_up(&self) -> bool {
        self.loaded
            && self.fresh
            && self.view.consistent()
            && self.view.revision >= self.boxc.written()
    }

    /// Every reflector has listed once.
    fn ready(&self) -> bool {
        let s = &self.stores;
        [
            &s.server,
            &s.class,
            &s.env,
            &s.binding,
            &s.machine,
            &s.metal_cluster,
        ]
        .iter()
        .all(|st| {
            st.wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
        })
    }

    fn api(&self, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
        if ns.is_empty() {
            Api::all_with(self.client.clone(), ar)
        } else {
            Api::namespaced_with(self.client.clone(), ns, ar)
        }
    }

    /// Server-side apply of `body` (main resource or status) with the bridge's manager.
    fn apply(&self, ar: &ApiResource, ns: &str, body: Value, status: bool) -> Write {
        let api = self.api(ar, ns);
        let pp = PatchParams::apply(&self.manager).force();
        Box::pin(async move {
            let name = name_of(&body);
            if status {
                api.patch_status(&name, &pp, &Patch::Apply(&body)).await?;
            } else {
                api.patch(&name, &pp, &Patch::Apply(&body)).await?;
            }
            Ok(())
        })
    }

    /// Creates `seed` (owned by the seed manager, so later edits by anyone never conflict
    /// with the bridge), then applies the observed part and status.
    fn create_then(&self, ar: &ApiResource, seed: Value, then: Vec<(Value, bool)>) -> Write {
        let api = self.api(ar, "");
        let pp = PostParams {
            field_manager: Some(self.seed_manager.clone()),
            ..Default::default()
        };
        let rest: Vec<Write> = then
            .into_iter()
            .map(|(b, status)| self.apply(ar, "", b, status))
            .collect();
        Box::pin(async move {
            let obj: DynamicObject =
                serde_json::from_value(seed).map_err(|e| SyncError::Other(e.to_string()))?;
            match api.create(&pp, &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            for w in rest {
                w.await?;
            }
            Ok(())
        })
    }

    /// Replaces `obj` as read (its resourceVersion is the precondition: a 409 means someone
    /// wrote first, and the next pass looks again).
    fn replace(&self, ar: &ApiResource, obj: Value) -> Write {
        let api = self.api(ar, &ns_of(&obj));
        Box::pin(async move {
            let name = name_of(&obj);
            let o: DynamicObject =
                serde_json::from_value(obj).map_err(|e| SyncError::Other(e.to_string()))?;
            match api.replace(&name, &PostParams::default(), &o).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// `obj` without `finalizer` (a precondition write, see [`Bridge::replace`]).
    fn drop_finalizer(&self, ar: &ApiResource, mut obj: Value, finalizer: &str) -> Write {
        if let Some(a) = obj["metadata"]["finalizers"].as_array_mut() {
            a.retain(|f| f != finalizer);
        }
        self.replace(ar, obj)
    }

    /// Deletes `kind/name` on the box, then drops the bridge's finalizer from the cluster
    /// object `obj` (in that order: the finalizer goes only once the box let the object go).
    fn delete_on_box(
        &self,
        ar: &ApiResource,
        obj: Value,
        fin: &str,
        kind: &str,
        name: &str,
    ) -> Write {
        let boxc = self.boxc.clone();
        let (kind, name) = (kind.to_string(), name.to_string());
        let drop = self.drop_finalizer(ar, obj, fin);
        Box::pin(async move {
            boxc.delete(&kind, &name).await?;
            drop.await
        })
    }

    /// Removes the bridge's finalizer and deletes the cluster object (its box object is gone).
    fn forget(&self, ar: &ApiResource, obj: Value) -> Write {
        let api = self.api(ar, &ns_of(&obj));
        let drop = self.drop_finalizer(ar, obj.clone(), &mirror::finalizer(&self.box_id));
        Box::pin(async move {
            drop.await?;
            match api.delete(&name_of(&obj), &Default::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn to_box(&self, doc: Value) -> Write {
        let boxc = self.boxc.clone();
        Box::pin(async move {
            boxc.apply(doc.to_string()).await?;
            Ok(())
        })
    }

    /// One comparison of both sides; writes the differences (at most 32 at a time).
    pub async fn pass(&mut self) {
        let mut writes: Vec<(String, Write)> = Vec::new();
        self.servers(&mut writes);
        self.specs("ServerClass", &mut writes);
        self.specs("Environment", &mut writes);
        self.bindings(&mut writes);
        self.metal_clusters(&mut writes);
        self.machines(&mut writes).await;
        self.talosconfigs(&mut writes);
        self.write(writes).await;
    }

    /// The Talos control-plane provider keeps each cluster's talosconfig in the Secret
    /// `<cluster>-talosconfig` (key `talosconfig`) beside its Machines: for every cluster
    /// with a MetalMachine this box claimed, the box gets it (Admin `SetTalosconfig`) when
    /// it appears or changes, so a released server of that cluster without a BMC can be
    /// reset through the Talos API. Each Secret is read at most every
    /// [`TALOSCONFIG_READ_EVERY`]; a cluster whose machines all left keeps its talosconfig on
    /// the box (its released servers still need the reset). Never logged.
    fn talosconfigs(&mut self, writes: &mut Vec<(String, Write)>) {
        let mut clusters = BTreeSet::new();
        for m in self.stores.machine.state() {
            let claimed = m
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CLAIM_ANNOTATION))
                .is_some_and(|b| *b == self.box_id);
            let cluster = m
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CLUSTER_LABEL));
            if let (true, Some(cluster), Some(ns)) = (claimed, cluster, &m.metadata.namespace) {
                clusters.insert((ns.clone(), cluster.clone()));
            }
        }
        let now = tokio::time::Instant::now();
        for (ns, cluster) in clusters {
            if self
                .talosconfig_read
                .get(&cluster)
                .is_some_and(|t| now.duration_since(*t) < TALOSCONFIG_READ_EVERY)
            {
                continue;
            }
            self.talosconfig_read.insert(cluster.clone(), now);
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
            let boxc = self.boxc.clone();
            let sent = self.talosconfigs.clone();
            writes.push((
                format!("talosconfig of cluster {ns}/{cluster}"),
                Box::pin(async move {
                    let name = format!("{cluster}-talosconfig");
                    let Some(secret) = secrets.get_opt(&name).await? else {
                        return Ok(());
                    };
                    let rv = secret.metadata.resource_version.clone().unwrap_or_default();
                    if sent.lock().unwrap().get(&cluster) == Some(&rv) {
                        return Ok(());
                    }
                    let Some(data) = secret.data.and_then(|mut d| d.remove("talosconfig")) else {
                        tracing::warn!(secret = %name, namespace = %ns, "no `talosconfig` key in the Secret; not handed to the box");
                        return Ok(());
                    };
                    match boxc.set_talosconfig(&cluster, data.0).await {
                        Ok(context) => {
                            tracing::info!(%cluster, %context, "talosconfig handed to the box");
                            sent.lock().unwrap().insert(cluster, rv);
                            Ok(())
                        }
                        Err(BoxError::Refused(s)) if s.code() == tonic::Code::InvalidArgument => {
                            // Refused as malformed: logged (the box's reason names no secret
                            // material) and not retried until the Secret changes.
                            tracing::warn!(%cluster, reason = %s.message(), "the box refused the cluster's talosconfig");
                            sent.lock().unwrap().insert(cluster, rv);
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    }
                }),
            ));
        }
    }

    /// What needs no box view (MetalCluster), while the view catches up.
    async fn cluster_pass(&mut self) {
        let mut writes: Vec<(String, Write)> = Vec::new();
        self.metal_clusters(&mut writes);
        self.write(writes).await;
    }

    async fn write(&mut self, writes: Vec<(String, Write)>) {
        if writes.is_empty() {
            return;
        }
        self.writes += writes.len() as u64;
        let results: Vec<(String, Result<(), SyncError>)> = futures_util::stream::iter(writes)
            .map(|(what, w)| async move { (what, w.await) })
            .buffer_unordered(32)
            .collect()
            .await;
        let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
        if let Some((what, Err(e))) = failed.first() {
            tracing::warn!(failed = failed.len(), first = %what, error = %e, "writes failed; retried on the next pass");
        }
    }

    fn is_mine(&self, o: &Value) -> bool {
        o["metadata"]["labels"][BOX_LABEL] == self.box_id.as_str()
    }

    fn servers(&mut self, writes: &mut Vec<(String, Write)>) {
        // The cluster's Servers as the reflector holds them; converted to JSON only where a
        // comparison is needed (see `server_in_sync`).
        let cluster: HashMap<String, Arc<DynamicObject>> = self
            .stores
            .server
            .state()
            .into_iter()
            .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
            .collect();
        let fin = mirror::finalizer(&self.box_id);
        let ar = &self.kinds.server;
        let mut in_sync = HashMap::with_capacity(self.server_in_sync.len());
        for (name, b) in self.view.kind("Server") {
            let what = format!("Server {name}");
            let c_obj = cluster.get(name);
            let key = c_obj.map(|c| {
                (
                    c.metadata.resource_version.clone().unwrap_or_default(),
                    b.revision,
                )
            });
            if let (Some(key), Some(memo)) = (&key, self.server_in_sync.get(name))
                && key == memo
            {
                in_sync.insert(name.clone(), key.clone());
                continue;
            }
            let c_value = c_obj.map(|c| value(c));
            match c_value.as_ref() {
                None => {
                    let seed = mirror::server_seed(&b.json, &self.box_id);
                    let then = vec![
                        (mirror::server_observed(&b.json, &self.box_id), false),
                        (
                            mirror::status_body(
                                "metal.sidero.dev/v1alpha2",
                                "Server",
                                name,
                                mirror::server_status(&b.json),
                            ),
                            true,
                        ),
                    ];
                    writes.push((what, self.create_then(ar, seed, then)));
                }
                Some(c) if deleting(c) => {}
                Some(c) if !c["metadata"]["labels"][BOX_LABEL].is_null() && !self.is_mine(c) => {
                    tracing::warn!(server = %name, other = %c["metadata"]["labels"][BOX_LABEL], "a Server of the same name belongs to another box; left alone");
                }
                Some(c) => {
                    let before = writes.len();
                    if !mirror::server_in_sync(c, &b.json, &self.box_id) {
                        writes.push((
                            what.clone(),
                            self.apply(
                                ar,
                                "",
                                mirror::server_observed(&b.json, &self.box_id),
                                false,
                            ),
                        ));
                        writes.push((
                            what.clone(),
                            self.apply(
                                ar,
                                "",
                                mirror::status_body(
                                    "metal.sidero.dev/v1alpha2",
                                    "Server",
                                    name,
                                    mirror::server_status(&b.json),
                                ),
                                true,
                            ),
                        ));
                    }
                    if let Some(fill) = mirror::server_fill(c, &b.json) {
                        let api = self.api(ar, "");
                        let pp = PatchParams {
                            field_manager: Some(self.seed_manager.clone()),
                            ..Default::default()
                        };
                        let n = name.clone();
                        writes.push((
                            what.clone(),
                            Box::pin(async move {
                                api.patch(&n, &pp, &Patch::Merge(&fill)).await?;
                                Ok(())
                            }),
                        ));
                    }
                    if let Some(doc) = mirror::server_intent(&b.json, c) {
                        tracing::debug!(server = %name, "the cluster's intent differs: written to the box");
                        writes.push((format!("{what} → box"), self.to_box(doc)));
                    }
                    if writes.len() == before
                        && let Some(key) = key
                    {
                        in_sync.insert(name.clone(), key);
                    }
                }
            }
        }
        for (name, c) in &cluster {
            let meta = &c.metadata;
            let mine = meta
                .labels
                .as_ref()
                .and_then(|l| l.get(BOX_LABEL))
                .is_some_and(|b| *b == self.box_id);
            if !mine || !meta.finalizers.as_ref().is_some_and(|f| f.contains(&fin)) {
                continue;
            }
            let on_box = self.view.get("Server", name);
            let c = &value(c);
            if deleting(c) {
                // `kubectl delete server`: deleted on the box too, once it is not in use
                // (Sidero's finalizer rule); until then the object stays Terminating.
                if on_box.is_some_and(|b| b.json["status"]["inUse"] == true) {
                    continue;
                }
                if !self.fresh && on_box.is_some() {
                    continue;
                }
                writes.push((
                    format!("Server {name} delete"),
                    self.delete_on_box(ar, c.clone(), &fin, "Server", name),
                ));
            } else if self.fresh && on_box.is_none() {
                writes.push((format!("Server {name} gone"), self.forget(ar, c.clone())));
            }
        }
        self.server_in_sync = in_sync;
    }

    /// ServerClass and Environment: specs from the cluster to the box, box-only ones up to
    /// the cluster, status up, deletes both ways as the who-wins table says.
    fn specs(&mut self, kind: &str, writes: &mut Vec<(String, Write)>) {
        let (store, ar) = match kind {
            "ServerClass" => (&self.stores.class, self.kinds.class.clone()),
            _ => (&self.stores.env, self.kinds.env.clone()),
        };
        let cluster = by_name(store);
        let fin = mirror::finalizer(&self.box_id);
        // Servers of other boxes (by their box label; no JSON conversion of every Server).
        let others: BTreeSet<String> = self
            .stores
            .server
            .state()
            .iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(BOX_LABEL))
                    .is_some_and(|b| *b != self.box_id)
            })
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        for (name, c) in &cluster {
            let what = format!("{kind} {name}");
            let on_box = self.view.get(kind, name);
            if deleting(c) {
                if mirror::has_finalizer(c, &fin) && self.fresh {
                    writes.push((
                        format!("{what} delete"),
                        self.delete_on_box(&ar, c.clone(), &fin, kind, name),
                    ));
                }
                continue;
            }
            if !mirror::has_finalizer(c, &fin) {
                let mut o = c.clone();
                let f = o["metadata"]["finalizers"].as_array().cloned();
                let mut f = f.unwrap_or_default();
                f.push(json!(fin));
                o["metadata"]["finalizers"] = json!(f);
                writes.push((format!("{what} finalizer"), self.replace(&ar, o)));
            }
            if let Some(doc) = mirror::spec_intent(kind, on_box.map(|b| &b.json), c) {
                writes.push((format!("{what} → box"), self.to_box(doc)));
            }
            let Some(b) = on_box else { continue };
            let status = if kind == "ServerClass" {
                let s = mirror::class_status(&c["status"], &b.json["status"], &others);
                (mirror::normalize(&s) != mirror::normalize(&c["status"])).then_some(s)
            } else {
                let s = mirror::environment_status(&b.json);
                let changed = self.env_written.get(name) != Some(&s)
                    && mirror::normalize(&s) != mirror::normalize(&c["status"]);
                if changed {
                    self.env_written.insert(name.clone(), s.clone());
                }
                changed.then_some(s)
            };
            if let Some(s) = status {
                let body = mirror::status_body("metal.sidero.dev/v1alpha2", kind, name, s);
                writes.push((format!("{what} status"), self.apply(&ar, "", body, true)));
            }
        }
        for (name, b) in self.view.kind(kind) {
            if !cluster.contains_key(name) {
                let seed = mirror::spec_seed(kind, &b.json, &self.box_id);
                writes.push((
                    format!("{kind} {name} seed"),
                    self.create_then(&ar, seed, vec![]),
                ));
            }
        }
    }

    fn bindings(&self, writes: &mut Vec<(String, Write)>) {
        let cluster = by_name(&self.stores.binding);
        let machines = self.stores.machine.state();
        let fin = mirror::finalizer(&self.box_id);
        let ar = &self.kinds.binding;
        for (name, b) in self.view.kind("ServerBinding") {
            let owner = b.json["metadata"]["annotations"][crate::boxapi::OWNER_ANNOTATION]
                .as_str()
                .unwrap_or_default();
            let cluster_name = machines.iter().find_map(|m| {
                let id = format!(
                    "{}/{}",
                    m.metadata.namespace.as_deref().unwrap_or_default(),
                    m.metadata.name.as_deref().unwrap_or_default()
                );
                (id == owner)
                    .then(|| m.metadata.labels.as_ref()?.get(CLUSTER_LABEL).cloned())
                    .flatten()
            });
            let desired = mirror::binding(&b.json, &self.box_id, cluster_name.as_deref());
            let status = mirror::binding_status(&b.json);
            match cluster.get(name) {
                Some(c) if deleting(c) => {}
                Some(c) if mirror::binding_in_sync(c, &desired, &status) => {}
                _ => {
                    let body = mirror::status_body(
                        "infrastructure.cluster.x-k8s.io/v1alpha3",
                        "ServerBinding",
                        name,
                        status,
                    );
                    let main = self.apply(ar, "", desired, false);
                    let st = self.apply(ar, "", body, true);
                    writes.push((
                        format!("ServerBinding {name}"),
                        Box::pin(async move {
                            main.await?;
                            st.await
                        }),
                    ));
                }
            }
        }
        for (name, c) in &cluster {
            if !self.is_mine(c) || !mirror::has_finalizer(c, &fin) || !self.fresh {
                continue;
            }
            let on_box = self.view.get("ServerBinding", name).is_some();
            if deleting(c) {
                // A binding deleted in the cluster releases the server on the box (as
                // deleting it on the box does).
                writes.push((
                    format!("ServerBinding {name} delete"),
                    self.delete_on_box(ar, c.clone(), &fin, "ServerBinding", name),
                ));
            } else if !on_box {
                writes.push((
                    format!("ServerBinding {name} gone"),
                    self.forget(ar, c.clone()),
                ));
            }
        }
    }

    /// MetalCluster: ready once owned by a CAPI Cluster and given a control-plane endpoint
    /// (its own, or the Cluster's copied into it).
    fn metal_clusters(&self, writes: &mut Vec<(String, Write)>) {
        for mc in self.stores.metal_cluster.state() {
            let v = value(&mc);
            if deleting(&v) || v["metadata"]["annotations"][PAUSED_ANNOTATION].is_string() {
                continue;
            }
            let Some(owner) = v["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|a| a.iter().find(|o| o["kind"] == "Cluster"))
                .cloned()
            else {
                continue;
            };
            let api = self.api(&self.kinds.metal_cluster, &ns_of(&v));
            let capi = capi_resource(&owner, "Cluster", "clusters");
            let clusters: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &ns_of(&v), &capi);
            let pp = PatchParams::apply(SHARED_MANAGER).force();
            writes_push_if(writes, &v, move |v| {
                Box::pin(async move {
                    let name = name_of(&v);
                    let cluster = clusters
                        .get_opt(owner["name"].as_str().unwrap_or_default())
                        .await?;
                    let Some(cluster) = cluster.map(|c| value(&c)) else {
                        return Ok(());
                    };
                    if is_paused(&cluster) {
                        return Ok(());
                    }
                    let mut endpoint = v["spec"]["controlPlaneEndpoint"].clone();
                    if endpoint["host"].as_str().unwrap_or_default().is_empty() {
                        endpoint = cluster["spec"]["controlPlaneEndpoint"].clone();
                        if endpoint["host"].as_str().unwrap_or_default().is_empty() {
                            return Ok(());
                        }
                        let body = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalCluster", "metadata": {"name": name}, "spec": {"controlPlaneEndpoint": endpoint}});
                        api.patch(&name, &pp, &Patch::Apply(&body)).await?;
                    }
                    let status = json!({"ready": true, "initialization": {"provisioned": true}});
                    if v["status"]["ready"] != true
                        || v["status"]["initialization"]["provisioned"] != true
                    {
                        let body = mirror::status_body(
                            "infrastructure.cluster.x-k8s.io/v1alpha3",
                            "MetalCluster",
                            &name,
                            status,
                        );
                        api.patch_status(&name, &pp, &Patch::Apply(&body)).await?;
                    }
                    Ok(())
                })
            });
        }
    }

    async fn machines(&self, writes: &mut Vec<(String, Write)>) {
        let all: Vec<Value> = self
            .stores
            .machine
            .state()
            .iter()
            .map(|m| value(m))
            .collect();
        // Servers this box could still give: available ones, less what its claimed but not
        // yet allocated MetalMachines will take.
        let mut spare: HashMap<String, i64> = HashMap::new();
        let pending = |class: &str| {
            all.iter()
                .filter(|m| {
                    m["metadata"]["annotations"][CLAIM_ANNOTATION] == self.box_id.as_str()
                        && m["spec"]["serverClassRef"]["name"] == class
                        && self.view.allocation_of(&owner_of(m)).is_none()
                })
                .count() as i64
        };
        for m in &all {
            let owner = owner_of(m);
            let claimed = m["metadata"]["annotations"][CLAIM_ANNOTATION].as_str();
            let mine = claimed == Some(self.box_id.as_str());
            let what = format!("MetalMachine {owner}");
            if deleting(m) {
                if mine && has(m, MACHINE_FINALIZER) && self.fresh {
                    let boxc = self.boxc.clone();
                    let o = owner.clone();
                    let drop =
                        self.drop_finalizer(&self.kinds.machine, m.clone(), MACHINE_FINALIZER);
                    writes.push((
                        format!("{what} release"),
                        Box::pin(async move {
                            boxc.release(&o).await?;
                            drop.await
                        }),
                    ));
                }
                continue;
            }
            if m["metadata"]["annotations"][PAUSED_ANNOTATION].is_string() {
                continue;
            }
            match claimed {
                Some(_) if !mine => continue,
                None => {
                    if !self.fresh || !self.can_serve(m, &mut spare, &pending) {
                        continue;
                    }
                    let mut o = m.clone();
                    o["metadata"]["annotations"][CLAIM_ANNOTATION] = json!(self.box_id);
                    let mut f = o["metadata"]["finalizers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !f.iter().any(|x| x == MACHINE_FINALIZER) {
                        f.push(json!(MACHINE_FINALIZER));
                    }
                    o["metadata"]["finalizers"] = json!(f);
                    writes.push((
                        format!("{what} claim"),
                        self.replace(&self.kinds.machine, o),
                    ));
                    continue;
                }
                Some(_) => {}
            }
            if !self.fresh {
                continue;
            }
            let held = self.view.allocation_of(&owner).map(str::to_string);
            let w = self.machine_step(m.clone(), held);
            if let Some(w) = w {
                writes.push((what, w));
            }
        }
    }

    /// Could this box allocate for `m` now?
    fn can_serve(
        &self,
        m: &Value,
        spare: &mut HashMap<String, i64>,
        pending: &dyn Fn(&str) -> i64,
    ) -> bool {
        if let Some(server) = m["spec"]["serverRef"]["name"].as_str() {
            return self.view.get("Server", server).is_some();
        }
        let Some(class) = m["spec"]["serverClassRef"]["name"].as_str() else {
            return false;
        };
        let Some(c) = self.view.get("ServerClass", class) else {
            return false;
        };
        let n = spare.entry(class.to_string()).or_insert_with(|| {
            let listed: BTreeSet<&str> = c.json["status"]["serversAvailable"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let available = self
                .view
                .kind("Server")
                .filter(|(n, s)| {
                    s.json["status"]["state"] == "available"
                        && s.json["spec"]["cordoned"] != true
                        && (class == "any" || listed.contains(n.as_str()))
                })
                .count() as i64;
            available - pending(class)
        });
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    }

    /// A MetalMachine this box claimed: allocate (once the Machine's bootstrap data
    /// exists), then mirror providerID, serverRef and status; or report that the box took
    /// the server back.
    fn machine_step(&self, m: Value, held: Option<String>) -> Option<Write> {
        let ar = self.kinds.machine.clone();
        let api = self.api(&ar, &ns_of(&m));
        let pp = PatchParams::apply(&self.manager).force();
        let owner = owner_of(&m);
        let box_id = self.box_id.clone();
        if let Some(server) = held {
            let desired = machine_status(&self.view, &server, &m);
            let provider = format!("sidero://{server}");
            if m["spec"]["providerID"] == provider.as_str()
                && mirror::normalize(&m["status"]) == mirror::normalize(&desired)
            {
                return None;
            }
            let name = name_of(&m);
            return Some(Box::pin(async move {
                let spec = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalMachine",
                    "metadata": {"name": name},
                    "spec": {"providerID": provider, "serverRef": {"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "name": server}}});
                api.patch(&name, &pp, &Patch::Apply(&spec)).await?;
                let body = mirror::status_body(
                    "infrastructure.cluster.x-k8s.io/v1alpha3",
                    "MetalMachine",
                    &name,
                    desired,
                );
                api.patch_status(&name, &pp, &Patch::Apply(&body)).await?;
                Ok(())
            }));
        }
        if m["spec"]["providerID"].is_string() {
            // Allocated once, and the box no longer holds it: the box took it back (a release
            // or a delete on the box). CAPI sees a failed machine and replaces it.
            if m["status"]["failureReason"].is_string() {
                return None;
            }
            let name = name_of(&m);
            let server = m["spec"]["providerID"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("sidero://")
                .to_string();
            return Some(Box::pin(async move {
                let body = mirror::status_body(
                    "infrastructure.cluster.x-k8s.io/v1alpha3",
                    "MetalMachine",
                    &name,
                    json!({"ready": false, "failureReason": "UpdateError",
                        "failureMessage": format!("server {server} is no longer allocated to this MetalMachine on box {box_id}")}),
                );
                api.patch_status(&name, &pp, &Patch::Apply(&body)).await?;
                Ok(())
            }));
        }
        let client = self.client.clone();
        let boxc = self.boxc.clone();
        let unclaim = {
            let mut o = m.clone();
            if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                a.remove(CLAIM_ANNOTATION);
            }
            if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                f.retain(|x| x != MACHINE_FINALIZER);
            }
            self.replace(&ar, o)
        };
        Some(Box::pin(async move {
            let Some(bootstrap) = bootstrap_data(&client, &m).await? else {
                return Ok(());
            };
            let class = m["spec"]["serverClassRef"]["name"].as_str();
            let server = m["spec"]["serverRef"]["name"].as_str();
            match boxc
                .allocate(
                    &owner,
                    class.filter(|_| server.is_none()),
                    server,
                    &bootstrap,
                )
                .await?
            {
                AllocateOutcome::Allocated(s) | AllocateOutcome::AlreadyHeld(s) => {
                    tracing::info!(machine = %owner, server = %s, "allocated");
                    Ok(())
                }
                AllocateOutcome::Unavailable(why) => {
                    // Let another box try.
                    tracing::info!(machine = %owner, reason = %why, "no server on this box; claim given up");
                    unclaim.await
                }
            }
        }))
    }
}

fn writes_push_if(writes: &mut Vec<(String, Write)>, v: &Value, f: impl FnOnce(Value) -> Write) {
    writes.push((
        format!("MetalCluster {}/{}", ns_of(v), name_of(v)),
        f(v.clone()),
    ));
}

fn has(o: &Value, finalizer: &str) -> bool {
    mirror::has_finalizer(o, finalizer)
}

/// The owner the box records for a MetalMachine: `namespace/name`.
pub fn owner_of(m: &Value) -> String {
    format!("{}/{}", ns_of(m), name_of(m))
}

/// A CAPI core resource (Cluster, Machine) at the version an owner reference names.
fn capi_resource(owner: &Value, kind: &str, plural: &str) -> ApiResource {
    let api_version = owner["apiVersion"]
        .as_str()
        .unwrap_or("cluster.x-k8s.io/v1beta1");
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("cluster.x-k8s.io", "v1beta1"));
    ar(group, version, kind, plural)
}

/// Cluster `spec.paused` or the pause annotation.
pub fn is_paused(cluster: &Value) -> bool {
    cluster["spec"]["paused"] == true
        || cluster["metadata"]["annotations"][PAUSED_ANNOTATION].is_string()
}

/// The Machine's bootstrap data (secret `spec.bootstrap.dataSecretName`, key `value`), when
/// CAPI has produced it and the machine's Cluster is not paused. `None`: not yet (or paused).
async fn bootstrap_data(client: &kube::Client, m: &Value) -> Result<Option<String>, SyncError> {
    let ns = ns_of(m);
    let Some(owner) = m["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["kind"] == "Machine"))
    else {
        return Ok(None);
    };
    let machines: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &capi_resource(owner, "Machine", "machines"),
    );
    let Some(machine) = machines
        .get_opt(owner["name"].as_str().unwrap_or_default())
        .await?
    else {
        return Ok(None);
    };
    let machine = value(&machine);
    if let Some(cluster_name) = m["metadata"]["labels"][CLUSTER_LABEL].as_str() {
        let clusters: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &capi_resource(owner, "Cluster", "clusters"),
        );
        if let Some(c) = clusters.get_opt(cluster_name).await?
            && is_paused(&value(&c))
        {
            return Ok(None);
        }
    }
    let Some(secret_name) = machine["spec"]["bootstrap"]["dataSecretName"].as_str() else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let Some(secret) = secrets.get_opt(secret_name).await? else {
        return Ok(None);
    };
    let Some(data) = secret.data.as_ref().and_then(|d| d.get("value")) else {
        return Ok(None);
    };
    String::from_utf8(data.0.clone())
        .map(Some)
        .map_err(|_| SyncError::Other(format!("bootstrap secret {ns}/{secret_name} is not UTF-8")))
}

/// MetalMachine status for an allocated server: ready and provisioned (as Sidero, once the
/// binding exists), its addresses (the binding's as InternalIP, the Server's observed ones,
/// the hostname) and the binding's conditions; no failure.
pub fn machine_status(view: &Snapshot, server: &str, m: &Value) -> Value {
    let binding = view.get("ServerBinding", server).map(|b| &b.json);
    let srv = view.get("Server", server).map(|s| &s.json);
    let mut addresses: Vec<Value> = Vec::new();
    let mut push = |type_: &str, address: &str| {
        let a = json!({"type": type_, "address": address});
        if !address.is_empty() && !addresses.contains(&a) {
            addresses.push(a);
        }
    };
    if let Some(b) = binding {
        for a in b["spec"]["addresses"].as_array().into_iter().flatten() {
            push("InternalIP", a.as_str().unwrap_or_default());
        }
    }
    if let Some(s) = srv {
        for a in s["status"]["addresses"].as_array().into_iter().flatten() {
            let t = a["type"].as_str().unwrap_or_default();
            if matches!(
                t,
                "Hostname" | "ExternalIP" | "InternalIP" | "ExternalDNS" | "InternalDNS"
            ) {
                push(t, a["address"].as_str().unwrap_or_default());
            }
        }
        if let Some(h) = s["spec"]["hostname"].as_str() {
            push("Hostname", h);
        }
    }
    let mut status = json!({"ready": true, "initialization": {"provisioned": true}});
    if !addresses.is_empty() {
        status["addresses"] = json!(addresses);
    }
    if let Some(c) = binding
        .and_then(|b| b["status"]["conditions"].as_array())
        .filter(|c| !c.is_empty())
    {
        status["conditions"] = json!(c);
    }
    let _ = m;
    status
}
