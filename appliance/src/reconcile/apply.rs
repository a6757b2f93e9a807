//! The effectful half of the lifecycle: each function runs ONE store transaction that reads
//! the server, asks the pure machine (`lifecycle::plan`) and writes the new status, the
//! binding/allocation if any, and the lifecycle event together. Actions are returned to the
//! caller, who runs them after the commit. Synchronous (redb); call from `spawn_blocking`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::lifecycle::{self, Context, Event, IllegalTransition, Phase, ServerState, Step};
use crate::model::validate::Check;
use crate::model::{
    Condition, ConditionStatus, HardwareInformation, Kind, Object, ObjectMeta, Server, ServerSpec,
};
use crate::protocol::first_contact::{
    AgentKey, JUNK_LABEL, Junk, KEY_ANNOTATION, KeyClaim, KeyDecision, key_rule,
};
use crate::store::{AllocationRecord, NewEvent, Store, StoreError, Txn};

/// Annotation on a ServerBinding naming its owner.
pub const OWNER_ANNOTATION: &str = "appliance.sidero.dev/owner";

/// Why a lifecycle operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("server `{0}` not found")]
    UnknownServer(String),
    #[error("server class `{0}` not found")]
    UnknownClass(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("{0}")]
    Invalid(String),
    #[error("no server available in class `{class}` (needs accepted, clean, uncordoned, free)")]
    NoneAvailable { class: String },
    #[error("owner `{owner}` already holds server `{server}`")]
    OwnerTaken { owner: String, server: String },
    #[error("{0} holds nothing")]
    NothingToRelease(String),
    #[error("store")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    /// Refused by the agent API's key-pinning rule.
    #[error("{0}")]
    Denied(String),
}

/// The machine state of a stored server.
pub fn server_state(server: &Server) -> ServerState {
    let status = server.status.clone().unwrap_or_default();
    ServerState {
        phase: Phase::of_server(
            status.state.as_deref(),
            server.spec.accepted,
            status.in_use,
            status.is_clean,
        ),
        cordoned: server.spec.cordoned,
    }
}

/// Writes a machine state into the Server's spec/status (Sidero flags + `status.state`),
/// and condition `PXEBooted`: set True when installed (which `/ipxe` reads to boot from
/// disk), deleted when the server leaves use (Sidero deletes it on deallocation), left
/// alone otherwise (an imported Server keeps its own until it is released).
pub fn write_state(server: &mut Server, state: ServerState, now_ms: u64) {
    let was_in_use = server.status.as_ref().is_some_and(|s| s.in_use);
    let f = lifecycle::flags(state.phase);
    server.spec.accepted = f.accepted;
    server.spec.cordoned = state.cordoned;
    let status = server.status.get_or_insert_with(Default::default);
    status.ready = f.ready;
    status.in_use = f.in_use;
    status.is_clean = f.is_clean;
    status.state = Some(state.phase.as_str().to_string());
    let pxe = status.conditions.iter().position(|c| c.type_ == PXE_BOOTED);
    if f.pxe_booted {
        let already = pxe.is_some_and(|i| status.conditions[i].status == ConditionStatus::True);
        if !already {
            if let Some(i) = pxe {
                status.conditions.remove(i);
            }
            status.conditions.push(Condition {
                type_: PXE_BOOTED.to_string(),
                status: ConditionStatus::True,
                severity: None,
                last_transition_time: crate::clock::rfc3339(now_ms),
                reason: None,
                message: None,
            });
        }
    } else if was_in_use
        && !f.in_use
        && let Some(i) = pxe
    {
        status.conditions.remove(i);
    }
}

/// The Server condition that switches `/ipxe` to boot-from-disk.
pub const PXE_BOOTED: &str = "PXEBooted";

/// A transition that committed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub from: ServerState,
    pub step: Step,
    pub server: Server,
}

fn load_server(t: &Txn<'_>, name: &str) -> Result<Server, LifecycleError> {
    match t.get(Kind::Server, name)? {
        Some(s) => match s.object {
            Object::Server(server) => Ok(server),
            _ => Err(LifecycleError::UnknownServer(name.to_string())),
        },
        None => Err(LifecycleError::UnknownServer(name.to_string())),
    }
}

/// Plans `event` for the server and, if legal and a change, writes state + event inside `t`
/// (for callers that change other objects in the same transaction; they dispatch the
/// outcome with `Lifecycle::dispatch_outcome` after the commit).
pub fn transition_in(
    t: &mut Txn<'_>,
    name: &str,
    event: Event,
    ctx: &Context,
    now_ms: u64,
    message: &str,
) -> Result<Outcome, LifecycleError> {
    let mut server = load_server(t, name)?;
    let from = server_state(&server);
    let step = lifecycle::plan(from, event, ctx)?;
    if step.changed {
        write_state(&mut server, step.next, now_ms);
        t.put(&Object::Server(server.clone()))?;
        t.append_event(NewEvent {
            time_ms: now_ms,
            server: name.to_string(),
            event: event.name().to_string(),
            from: from.phase.as_str().to_string(),
            to: step.next.phase.as_str().to_string(),
            message: message.to_string(),
        })?;
    }
    Ok(Outcome { from, step, server })
}

/// One event on one server, in one transaction.
pub fn transition(
    store: &Store,
    name: &str,
    event: Event,
    ctx: &Context,
    now_ms: u64,
    message: &str,
) -> Result<Outcome, LifecycleError> {
    store.transact(|t| transition_in(t, name, event, ctx, now_ms, message))
}

/// What the agent reported at registration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewServer {
    pub name: String,
    pub hostname: Option<String>,
    /// v1alpha2 `spec.hardware`.
    pub hardware: HardwareInformation,
    /// Token mode: the agent's key, decided on by the pinning rule inside the transaction
    /// (the stored pin is read there).
    pub key: Option<KeyClaim>,
    /// The SMBIOS UUID is junk: the server is named by MAC + baseboard serial and labelled.
    pub junk: Option<Junk>,
}

/// Applies the pinning rule to `server` (pin read from its annotation): writes a new pin
/// with an event; refuses with the rule's reason.
fn pin_key(
    t: &mut Txn<'_>,
    server: &mut Server,
    claim: &KeyClaim,
    now_ms: u64,
) -> Result<(), LifecycleError> {
    let pinned = server
        .metadata
        .annotations
        .get(KEY_ANNOTATION)
        .and_then(|k| k.parse::<AgentKey>().ok());
    let c = KeyClaim { pinned, ..*claim };
    let (event, message) = match key_rule(c) {
        KeyDecision::Refuse(why) => return Err(LifecycleError::Denied(why.to_string())),
        KeyDecision::Keep => return Ok(()),
        KeyDecision::Pin => (
            "agent-key-pinned",
            "agent key pinned by a boot with a fresh token",
        ),
        KeyDecision::Replace => (
            "agent-key-replaced",
            "agent key replaced by a new boot with a fresh token (no agent with the old key running)",
        ),
    };
    server
        .metadata
        .annotations
        .insert(KEY_ANNOTATION.to_string(), c.presented.to_string());
    t.put(&Object::Server(server.clone()))?;
    let phase = server_state(server).phase.as_str().to_string();
    t.append_event(NewEvent {
        time_ms: now_ms,
        server: server.metadata.name.clone(),
        event: event.into(),
        from: phase.clone(),
        to: phase,
        message: format!("{message}: {}", c.presented),
    })?;
    Ok(())
}

/// Result of a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub created: bool,
    /// The server as stored: an `Object::Server` ([`Registered::server`]), the one the
    /// transaction wrote when created (shared with the change it published, not copied).
    object: Arc<Object>,
    /// The step taken (creation, or wipe started), if any.
    pub step: Option<Step>,
    /// The agent is to wipe now.
    pub wipe: bool,
}

impl Registered {
    pub fn server(&self) -> &Server {
        match &*self.object {
            Object::Server(s) => s,
            _ => unreachable!("a registration holds a Server"),
        }
    }
}

/// One CreateServer as its transaction runs it ([`register_in`]): the request's claims and
/// the Server it creates if its name is new, built once beforehand from the reported
/// inventory (moved, not copied), so the job, which `transact_each` may run again, and its
/// result share that Server instead of each copying the inventory.
#[derive(Debug)]
pub struct Registration {
    name: String,
    key: Option<KeyClaim>,
    auto_accept: bool,
    ctx: Context,
    now_ms: u64,
    /// The step of a new server (`lifecycle::register`).
    step: Step,
    /// The Server created if the name is new (an `Object::Server`), or why its inventory is
    /// refused.
    created: Result<Arc<Object>, String>,
}

impl Registration {
    pub fn new(new: NewServer, auto_accept: bool, ctx: Context, now_ms: u64) -> Registration {
        let step = lifecycle::register(auto_accept, &ctx);
        let mut meta = ObjectMeta {
            name: new.name.clone(),
            ..ObjectMeta::default()
        };
        if let Some(c) = &new.key {
            meta.annotations
                .insert(KEY_ANNOTATION.into(), c.presented.to_string());
        }
        if let Some(j) = new.junk {
            meta.labels.insert(JUNK_LABEL.into(), j.as_str().into());
        }
        let mut server = Server {
            api_version: Kind::Server.api_version().into(),
            kind: Kind::Server.as_str().into(),
            metadata: meta,
            spec: ServerSpec {
                hardware: Some(new.hardware),
                hostname: new.hostname,
                accepted: false,
                ..ServerSpec::default()
            },
            status: None,
        };
        let created = server
            .check("")
            .map_err(|e| format!("hardware: at `{}`: {}", e.path, e.message))
            .map(|()| {
                write_state(&mut server, step.next, now_ms);
                Arc::new(Object::Server(server))
            });
        Registration {
            name: new.name,
            key: new.key,
            auto_accept,
            ctx,
            now_ms,
            step,
            created,
        }
    }
}

/// CreateServer: creates the Server (hardware captured once, as Sidero), or, for a known
/// accepted dirty free server, starts its wipe, inside `t` (the lifecycle group-commits
/// registrations: `store::Group`). Depends only on its input and the store.
pub fn register_in(t: &mut Txn<'_>, r: &Registration) -> Result<Registered, LifecycleError> {
    if let Some(stored) = t.get(Kind::Server, &r.name)? {
        let Object::Server(mut server) = stored.object else {
            return Err(LifecycleError::UnknownServer(r.name.clone()));
        };
        if let Some(claim) = &r.key {
            pin_key(t, &mut server, claim, r.now_ms)?;
        }
        let state = server_state(&server);
        if matches!(
            state.phase,
            Phase::Accepted | Phase::Wiping | Phase::Released
        ) {
            let o = transition_in(
                t,
                &r.name,
                Event::WipeStarted,
                &r.ctx,
                r.now_ms,
                "agent registered; told to wipe",
            )?;
            return Ok(Registered {
                created: false,
                object: Arc::new(Object::Server(o.server)),
                step: Some(o.step),
                wipe: true,
            });
        }
        return Ok(Registered {
            created: false,
            object: Arc::new(Object::Server(server)),
            step: None,
            wipe: false,
        });
    }
    if let Some(c) = &r.key
        && let KeyDecision::Refuse(why) = key_rule(KeyClaim { pinned: None, ..*c })
    {
        return Err(LifecycleError::Denied(why.to_string()));
    }
    let created = r.created.clone().map_err(LifecycleError::Invalid)?;
    // New (read above, absent): written without `put`'s second read and its copy.
    t.put_changed(created.clone())?;
    t.append_event(NewEvent {
        time_ms: r.now_ms,
        server: r.name.clone(),
        event: "register".into(),
        from: String::new(),
        to: r.step.next.phase.as_str().into(),
        message: if r.auto_accept {
            "registered by its agent; auto-accepted".into()
        } else {
            "registered by its agent".into()
        },
    })?;
    Ok(Registered {
        created: true,
        object: created,
        step: Some(r.step.clone()),
        wipe: false,
    })
}

/// Edits a server's JSON form (for fields outside the lifecycle, e.g. addresses, BMC),
/// re-validating it; writes only on change. One transaction.
pub fn edit_server(
    store: &Store,
    name: &str,
    edit: impl FnOnce(&mut Value) -> Result<(), String>,
) -> Result<bool, LifecycleError> {
    store.transact(|t| edit_server_in(t, name, edit))
}

/// [`edit_server`] inside `t`.
pub fn edit_server_in(
    t: &mut Txn<'_>,
    name: &str,
    edit: impl FnOnce(&mut Value) -> Result<(), String>,
) -> Result<bool, LifecycleError> {
    let server = load_server(t, name)?;
    let mut v = serde_json::to_value(&server).expect("servers serialise");
    edit(&mut v).map_err(LifecycleError::Invalid)?;
    let edited = Object::from_json(Kind::Server, &v.to_string())
        .map_err(|e| LifecycleError::Invalid(e.to_string()))?;
    if edited == Object::Server(server) {
        return Ok(false);
    }
    t.put(&edited)?;
    Ok(true)
}

/// ReconcileServerAddresses: per address type sent, the sent `(type, address)` pairs replace
/// the server's `status.addresses` of that type; other types are kept. Inside `t` (the
/// lifecycle group-commits these reports: `store::Group`); whether anything changed.
pub fn set_addresses_in(
    t: &mut Txn<'_>,
    name: &str,
    sent: &[(String, String)],
) -> Result<bool, LifecycleError> {
    edit_server_in(t, name, |v| {
        let status = v
            .as_object_mut()
            .ok_or("server is not an object")?
            .entry("status")
            .or_insert_with(|| json!({}));
        let list = status
            .as_object_mut()
            .ok_or("status is not an object")?
            .entry("addresses")
            .or_insert_with(|| json!([]));
        let arr = list.as_array_mut().ok_or("addresses is not a list")?;
        arr.retain(|a| {
            let t = a.get("type").and_then(Value::as_str).unwrap_or_default();
            !sent.iter().any(|(st, _)| st == t)
        });
        arr.extend(sent.iter().map(|(t, a)| json!({"type": t, "address": a})));
        Ok(())
    })
}

/// An operator's approval of a new agent key: the server's pinned key (annotation) is
/// removed, with an event; the next registration with a fresh boot token pins its key.
/// Whether a key was pinned.
pub fn rekey(store: &Store, name: &str, by: &str, now_ms: u64) -> Result<bool, LifecycleError> {
    store.transact(|t| {
        let mut server = load_server(t, name)?;
        let Some(old) = server.metadata.annotations.remove(KEY_ANNOTATION) else {
            return Ok(false);
        };
        t.put(&Object::Server(server.clone()))?;
        let phase = server_state(&server).phase.as_str().to_string();
        t.append_event(NewEvent {
            time_ms: now_ms,
            server: name.to_string(),
            event: "agent-key-released".into(),
            from: phase.clone(),
            to: phase,
            message: format!("{by} approved a new agent key (the pinned {old} removed)"),
        })?;
        Ok(true)
    })
}

/// Edits a server's typed form (status fields outside the lifecycle, e.g. conditions); writes
/// only on change. One transaction.
pub fn edit_server_typed(
    store: &Store,
    name: &str,
    edit: impl FnOnce(&mut Server),
) -> Result<bool, LifecycleError> {
    store.transact(|t| {
        let server = load_server(t, name)?;
        let mut edited = server.clone();
        edit(&mut edited);
        if edited == server {
            return Ok(false);
        }
        t.put(&Object::Server(edited))?;
        Ok(true)
    })
}

/// What to allocate, for whom.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocateInput {
    pub server_class: Option<String>,
    pub server: Option<String>,
    pub owner: String,
    pub bootstrap_data: String,
    pub config_patches: Vec<Value>,
    pub environment: Option<String>,
}

/// A committed allocation.
#[derive(Debug, Clone)]
pub struct Allocated {
    pub outcome: Outcome,
    pub record: AllocationRecord,
    pub binding_revision: u64,
}

/// Whether a server may be picked from a class now: available and uncordoned.
fn eligible(server: &Server) -> bool {
    let s = server_state(server);
    s.phase == Phase::Available && !s.cordoned
}

/// Allocate: picks the server (named, or the first eligible class member by ascending
/// name), then in the same transaction moves it to `allocated`, creates its ServerBinding
/// (named after the server) and stores the allocation (owner, bootstrap data, patches).
pub fn allocate(
    store: &Store,
    input: &AllocateInput,
    ctx: &Context,
    now_ms: u64,
) -> Result<Allocated, LifecycleError> {
    if input.owner.trim().is_empty() {
        return Err(LifecycleError::Invalid("owner must not be empty".into()));
    }
    let (class_name, explicit) = match (&input.server_class, &input.server) {
        (Some(c), None) => (Some(c.clone()), false),
        (None, Some(_)) => (None, true),
        _ => {
            return Err(LifecycleError::Invalid(
                "give exactly one of a server class or a server".into(),
            ));
        }
    };
    store.transact(|t| {
        if let Some((server, _)) = t
            .allocations()?
            .into_iter()
            .find(|(_, r)| r.owner == input.owner)
        {
            return Err(LifecycleError::OwnerTaken {
                owner: input.owner.clone(),
                server,
            });
        }
        let name = match (&class_name, &input.server) {
            (Some(class), _) => pick_from_class(t, class)?,
            (None, Some(server)) => server.clone(),
            (None, None) => unreachable!("checked above"),
        };
        let outcome = transition_in(
            t,
            &name,
            Event::Allocate { explicit },
            ctx,
            now_ms,
            &format!("allocated to {}", input.owner),
        )?;
        let (ns, machine) = match input.owner.split_once('/') {
            Some((ns, m)) => (Some(ns.to_string()), m.to_string()),
            None => (None, input.owner.clone()),
        };
        let mut spec = json!({
            "metalMachineRef": { "kind": "MetalMachine", "name": machine },
        });
        if let Some(ns) = ns {
            spec["metalMachineRef"]["namespace"] = json!(ns);
        }
        if let Some(class) = &class_name {
            spec["serverClassRef"] = json!({
                "apiVersion": Kind::ServerClass.api_version(),
                "kind": "ServerClass",
                "name": class,
            });
        }
        let doc = json!({
            "apiVersion": Kind::ServerBinding.api_version(),
            "kind": "ServerBinding",
            "metadata": { "name": name, "annotations": { OWNER_ANNOTATION: input.owner } },
            "spec": spec,
            "status": { "ready": true },
        });
        let binding = Object::from_json(Kind::ServerBinding, &doc.to_string())
            .map_err(|e| LifecycleError::Invalid(format!("binding: {e}")))?;
        let binding_revision = t.put(&binding)?;
        let record = AllocationRecord {
            owner: input.owner.clone(),
            server_class: class_name.clone(),
            bootstrap_data: input.bootstrap_data.clone(),
            config_patches: input.config_patches.clone(),
            environment: input.environment.clone(),
            time_ms: now_ms,
        };
        t.put_allocation(&name, &record)?;
        Ok(Allocated {
            outcome,
            record,
            binding_revision,
        })
    })
}

/// Sidero's selection: walk the class's members in ascending name order, take the first
/// that is available and uncordoned. Membership is evaluated now (not from a possibly
/// stale status list).
fn pick_from_class(t: &Txn<'_>, class: &str) -> Result<String, LifecycleError> {
    let Some(stored) = t.get(Kind::ServerClass, class)? else {
        return Err(LifecycleError::UnknownClass(class.to_string()));
    };
    let Object::ServerClass(class_obj) = stored.object else {
        return Err(LifecycleError::UnknownClass(class.to_string()));
    };
    let matcher = super::classes::Matcher::new(&class_obj);
    for stored in t.list(Kind::Server)? {
        if let Object::Server(server) = stored.object
            && eligible(&server)
            && matcher.matches(&server)
        {
            return Ok(server.metadata.name);
        }
    }
    Err(LifecycleError::NoneAvailable {
        class: class.to_string(),
    })
}

/// Who to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseBy {
    Owner(String),
    Server(String),
}

/// Release: deletes the binding and allocation and moves the server to `released` (it is
/// wiped before it is available again). One transaction.
pub fn release(
    store: &Store,
    by: &ReleaseBy,
    ctx: &Context,
    now_ms: u64,
) -> Result<Outcome, LifecycleError> {
    store.transact(|t| {
        let name = match by {
            ReleaseBy::Server(s) => s.clone(),
            ReleaseBy::Owner(o) => t
                .allocations()?
                .into_iter()
                .find(|(_, r)| &r.owner == o)
                .map(|(s, _)| s)
                .ok_or_else(|| LifecycleError::NothingToRelease(format!("owner `{o}`")))?,
        };
        let owner = t.allocation(&name)?.map(|r| r.owner);
        t.delete_allocation(&name)?;
        t.delete(Kind::ServerBinding, &name)?;
        let message = match owner {
            Some(o) => format!("released by {o}"),
            None => "released".to_string(),
        };
        transition_in(t, &name, Event::Release, ctx, now_ms, &message)
    })
}

/// A ServerBinding was deleted outside `release` (admin delete, kube-bridge): release the
/// server the same way. Nothing happens if it is not allocated.
pub fn binding_gone(
    store: &Store,
    server: &str,
    ctx: &Context,
    now_ms: u64,
) -> Result<Option<Outcome>, LifecycleError> {
    store.transact(|t| {
        if t.get(Kind::ServerBinding, server)?.is_some() {
            return Ok(None);
        }
        let s = match load_server(t, server) {
            Ok(s) => s,
            Err(LifecycleError::UnknownServer(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !matches!(
            server_state(&s).phase,
            Phase::Allocated | Phase::Booting | Phase::Installed
        ) {
            return Ok(None);
        }
        t.delete_allocation(server)?;
        transition_in(
            t,
            server,
            Event::Release,
            ctx,
            now_ms,
            "its ServerBinding was deleted",
        )
        .map(Some)
    })
}
