//! Spec edits made outside the lifecycle API, turned into transitions by the reconcile
//! task: `spec.accepted` applied by an operator (Accept/Unaccept, or the flag put back
//! with a `<event>-rejected` event saying why), a Server applied without a lifecycle state
//! (adopted), a ServerBinding created or deleted by kube-bridge/admin (Allocate/release).
//! The admin API's applies adopt in their own commit ([`adopt_applied`]); the task adopts
//! what reaches the store another way.

use super::apply::{self, LifecycleError};
use super::lifecycle::{self, Context, Event, Phase, Step};
use super::task::Lifecycle;
use crate::clock;
use crate::model::{Kind, Object, Server};
use crate::store::{ChangeOp, NewEvent, Txn};

/// Servers were written: for each, if its spec was edited outside the lifecycle (apply),
/// bring the lifecycle state in line with one transition, all in one transaction (each
/// server's edit still its own: see `Store::transact_each`). Returns, per name, the step to
/// dispatch.
pub(super) fn reconcile_server_edits(
    lc: &Lifecycle,
    names: &[String],
) -> Vec<Result<Option<(Server, Step)>, LifecycleError>> {
    let inputs: Vec<(&str, Context)> = names.iter().map(|n| (n.as_str(), lc.context(n))).collect();
    match lc
        .store()
        .transact_each(&inputs, |t, (name, ctx)| server_edit_in(t, name, ctx))
    {
        Ok(results) => results,
        Err(e) => {
            let msg = crate::error_chain(&e);
            names
                .iter()
                .map(|_| Err(LifecycleError::Internal(msg.clone())))
                .collect()
        }
    }
}

/// The lifecycle state recorded in the server's `status.state`.
fn recorded_phase(server: &Server) -> Option<Phase> {
    server
        .status
        .as_ref()
        .and_then(|s| s.state.as_deref())
        .and_then(Phase::parse)
}

/// Whether a written server needs [`reconcile_server_edits`]: it has no lifecycle state
/// yet, or its `spec.accepted` disagrees with the recorded one. Read outside a write
/// transaction, so the reconcile task takes the store's write lock only for those.
pub(super) fn edit_needed(server: &Server) -> bool {
    match recorded_phase(server) {
        None => true,
        Some(recorded) => server.spec.accepted != lifecycle::flags(recorded).accepted,
    }
}

/// A server written without a lifecycle state (e.g. Sidero YAML applied) adopts the state
/// derived from its flags: written into it, with the `adopt` event to append. `None` (and
/// the server untouched) when it has one.
pub fn adopt(server: &mut Server, now_ms: u64) -> Option<NewEvent> {
    if recorded_phase(server).is_some() {
        return None;
    }
    let state = apply::server_state(server);
    apply::write_state(server, state, now_ms);
    Some(NewEvent {
        time_ms: now_ms,
        server: server.metadata.name.clone(),
        event: "adopt".into(),
        from: String::new(),
        to: state.phase.as_str().into(),
        message: "state derived from accepted/inUse/isClean".into(),
    })
}

/// [`adopt`] for an object an admin apply is about to write (`Store::apply_with`), so that
/// a Server applied without a lifecycle state is stored with it in the apply's own commit
/// rather than in a second one by the reconcile task.
pub fn adopt_applied(object: &mut Object, now_ms: u64) -> Option<NewEvent> {
    match object {
        Object::Server(server) => adopt(server, now_ms),
        _ => None,
    }
}

/// One server's edit (see [`reconcile_server_edits`]) inside `t`.
fn server_edit_in(
    t: &mut Txn<'_>,
    name: &str,
    ctx: &Context,
) -> Result<Option<(Server, Step)>, LifecycleError> {
    let Some(stored) = t.get(Kind::Server, name)? else {
        return Ok(None);
    };
    let Object::Server(mut server) = stored.object else {
        return Ok(None);
    };
    let Some(recorded) = recorded_phase(&server) else {
        if let Some(event) = adopt(&mut server, clock::unix_ms()) {
            t.put(&Object::Server(server))?;
            t.append_event(event)?;
        }
        return Ok(None);
    };
    let accepted_now = server.spec.accepted;
    if accepted_now == lifecycle::flags(recorded).accepted {
        return Ok(None);
    }
    let event = if accepted_now {
        Event::Accept
    } else {
        Event::Unaccept
    };
    let from = lifecycle::ServerState {
        phase: recorded,
        cordoned: server.spec.cordoned,
    };
    match lifecycle::plan(from, event, ctx) {
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
}

/// A ServerBinding appeared or disappeared outside `allocate`/`release`.
pub(super) fn binding_changed(
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
