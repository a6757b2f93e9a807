//! The server lifecycle as a pure state machine: `plan(state, event, ctx)` returns the next
//! state and the actions to take, or `IllegalTransition` with the reason. No IO, no clock:
//! whatever the plan depends on (is the agent connected? retry policy) is an input.
//!
//! ```text
//!            register                accept              wipe started           wiped
//! (none) ──────────────▶ discovered ─────────▶ accepted ─────────────▶ wiping ─────────▶ available
//!            (auto-accept ───────────────────▶ accepted)                                    │
//!                                                                              allocate     │
//!  released ◀─────── release ──────── installed ◀── installed ── booting ◀── allocated ◀───┘
//!     │                                      (env booted)                        
//!     └── wipe started ──▶ wiping …
//! ```
//! `cordon`/`uncordon` flip a flag in every phase (a cordoned server is not picked from a
//! class); `unaccept` returns a free server to `discovered`. `wipe-requested` (an operator's
//! on-demand wipe) takes an available server back to `accepted` (dirty), so its agent is
//! told to wipe again; nothing else may be wiped on demand. While the box waits for a
//! server to reboot (accepted, wiping, released, allocated) a reboot timeout retries the
//! PXE boot + power cycle with backoff, then raises a condition.
//!
//! Sidero's status flags follow from the phase (`flags`), so `accepted/isClean/inUse/ready`
//! stay meaningful for Sidero users.

use std::fmt;
use std::time::Duration;

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Registered by the agent, not accepted: never wiped, never powered.
    Discovered,
    /// Accepted and dirty: waiting for the agent to start the wipe.
    Accepted,
    /// The agent was told to wipe and is wiping.
    Wiping,
    /// Clean, accepted and free: can be allocated.
    Available,
    /// Bound to an owner: waiting for it to boot its Environment.
    Allocated,
    /// Its Environment was served: installing.
    Booting,
    /// The OS reported it is installed: running.
    Installed,
    /// The binding was released: dirty, waiting for the agent to wipe it.
    Released,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Discovered,
        Phase::Accepted,
        Phase::Wiping,
        Phase::Available,
        Phase::Allocated,
        Phase::Booting,
        Phase::Installed,
        Phase::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Discovered => "discovered",
            Phase::Accepted => "accepted",
            Phase::Wiping => "wiping",
            Phase::Available => "available",
            Phase::Allocated => "allocated",
            Phase::Booting => "booting",
            Phase::Installed => "installed",
            Phase::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The phase of a stored server: its recorded `status.state` when that agrees with the
    /// Sidero flags, else derived from the flags (objects applied from Sidero YAML carry
    /// only the flags).
    pub fn of_server(state: Option<&str>, accepted: bool, in_use: bool, is_clean: bool) -> Phase {
        let derived = match (accepted, in_use, is_clean) {
            (false, _, _) => Phase::Discovered,
            (true, true, _) => Phase::Allocated,
            (true, false, true) => Phase::Available,
            (true, false, false) => Phase::Accepted,
        };
        match state.and_then(Phase::parse) {
            Some(p) if flags(p).accepted == accepted && flags(p).in_use == in_use => p,
            _ => derived,
        }
    }

    /// The box waits for this server to (re)boot: the reboot timeout applies.
    pub fn awaits_reboot(self) -> bool {
        matches!(
            self,
            Phase::Accepted | Phase::Wiping | Phase::Released | Phase::Allocated
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The machine's state: the phase and the orthogonal cordon flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    pub phase: Phase,
    pub cordoned: bool,
}

/// What happened to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An operator (or auto-accept) accepted it.
    Accept,
    /// An operator took the acceptance back.
    Unaccept,
    /// The agent was told to wipe (CreateServer said wipe, or NextAction handed out WIPE).
    WipeStarted,
    /// The agent reported the wipe done (MarkServerAsWiped).
    Wiped,
    /// No sign of life within the reboot timeout; `attempt` retries were already made.
    RebootTimeout {
        attempt: u32,
    },
    /// Bound to an owner; `explicit` = named server (a class pick never takes a cordoned one).
    Allocate {
        explicit: bool,
    },
    /// The boot path served the server its Environment.
    EnvironmentBooted,
    /// The OS reported the installation done (SideroLink / operator).
    Installed,
    /// The binding was released.
    Release,
    Cordon,
    Uncordon,
    /// An operator asked for a wipe of a clean, free server (it becomes dirty again).
    WipeRequested,
}

impl Event {
    /// Every kind of event (with representative parameters), for exhaustive tests.
    pub const ALL: [Event; 12] = [
        Event::Accept,
        Event::Unaccept,
        Event::WipeStarted,
        Event::Wiped,
        Event::RebootTimeout { attempt: 0 },
        Event::Allocate { explicit: false },
        Event::EnvironmentBooted,
        Event::Installed,
        Event::Release,
        Event::Cordon,
        Event::Uncordon,
        Event::WipeRequested,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Event::Accept => "accept",
            Event::Unaccept => "unaccept",
            Event::WipeStarted => "wipe-started",
            Event::Wiped => "wiped",
            Event::RebootTimeout { .. } => "reboot-timeout",
            Event::Allocate { .. } => "allocate",
            Event::EnvironmentBooted => "environment-booted",
            Event::Installed => "installed",
            Event::Release => "release",
            Event::Cordon => "cordon",
            Event::Uncordon => "uncordon",
            Event::WipeRequested => "wipe-requested",
        }
    }

    /// The operation as a verb, for messages ("cannot wipe a server that is allocated").
    pub fn verb(self) -> &'static str {
        match self {
            Event::WipeRequested => "wipe",
            e => e.name(),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the effectful side does after the transition committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set PXE as next boot device and power cycle (or power on) via the BMC, so the server
    /// boots what the box serves it now (the agent, or its Environment).
    PxeBootAndPowerCycle,
    /// Power off via the BMC (clean servers wait powered off, as in Sidero).
    PowerOff,
    /// Expect a sign of life within this time, else fire `RebootTimeout`.
    ArmRebootTimer(Duration),
    /// Stop waiting for a reboot.
    DisarmRebootTimer,
    /// Retries are exhausted: mark the server (condition `PowerCycle=False`, reason
    /// `RebootTimeout`) and stop retrying until something else happens.
    RaiseRebootTimeoutCondition,
}

/// Inputs of the plan besides state and event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The agent polled or heartbeated recently: it will pick up its next instruction
    /// itself, so no power cycle is needed.
    pub agent_connected: bool,
    pub reboot_timeout: Duration,
    /// Power-cycle retries after a reboot timeout before the condition is raised.
    pub reboot_retries: u32,
}

impl Context {
    /// Wait before the retry after `attempt` earlier retries: timeout × 2^attempt, at most 8×.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.reboot_timeout * (1u32 << attempt.min(3))
    }
}

/// The result of a legal event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub next: ServerState,
    pub actions: Vec<Action>,
    /// False for an idempotent repeat (e.g. a retried MarkServerAsWiped on a clean server):
    /// nothing is written or recorded.
    pub changed: bool,
}

/// An event that is not allowed in the current state; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a server that is {from}: {reason}", event.verb())]
pub struct IllegalTransition {
    pub from: Phase,
    pub event: Event,
    pub reason: &'static str,
}

/// Sidero's status flags for a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub accepted: bool,
    pub is_clean: bool,
    pub in_use: bool,
    pub ready: bool,
    /// Condition `PXEBooted=True` (installed; boot from disk from now on).
    pub pxe_booted: bool,
}

pub fn flags(phase: Phase) -> Flags {
    let f = |accepted, is_clean, in_use, ready, pxe_booted| Flags {
        accepted,
        is_clean,
        in_use,
        ready,
        pxe_booted,
    };
    match phase {
        Phase::Discovered => f(false, false, false, false, false),
        Phase::Accepted | Phase::Wiping | Phase::Released => f(true, false, false, false, false),
        Phase::Available => f(true, true, false, true, false),
        Phase::Allocated | Phase::Booting => f(true, false, true, true, false),
        Phase::Installed => f(true, false, true, true, true),
    }
}

/// The state of a newly registered server.
pub fn register(auto_accept: bool, ctx: &Context) -> Step {
    let phase = if auto_accept {
        Phase::Accepted
    } else {
        Phase::Discovered
    };
    let actions = if auto_accept {
        vec![Action::ArmRebootTimer(ctx.reboot_timeout)]
    } else {
        Vec::new()
    };
    Step {
        next: ServerState {
            phase,
            cordoned: false,
        },
        actions,
        changed: true,
    }
}

/// The transition function.
pub fn plan(state: ServerState, event: Event, ctx: &Context) -> Result<Step, IllegalTransition> {
    use Phase::*;
    let illegal = |reason: &'static str| {
        Err(IllegalTransition {
            from: state.phase,
            event,
            reason,
        })
    };
    let to = |phase: Phase, actions: Vec<Action>| {
        Ok(Step {
            next: ServerState { phase, ..state },
            actions,
            changed: true,
        })
    };
    let noop = || {
        Ok(Step {
            next: state,
            actions: Vec::new(),
            changed: false,
        })
    };
    // Boot it into what is served now, unless its agent is up and will do it on its own.
    let boot = |extra: Vec<Action>| {
        let mut a = Vec::new();
        if !ctx.agent_connected {
            a.push(Action::PxeBootAndPowerCycle);
        }
        a.push(Action::ArmRebootTimer(ctx.reboot_timeout));
        a.extend(extra);
        a
    };
    let p = state.phase;
    let free_dirty = matches!(p, Accepted | Wiping | Released);
    let allocated = matches!(p, Allocated | Booting | Installed);
    match event {
        Event::Cordon if state.cordoned => illegal("it is already cordoned"),
        Event::Cordon => Ok(Step {
            next: ServerState {
                cordoned: true,
                ..state
            },
            actions: Vec::new(),
            changed: true,
        }),
        Event::Uncordon if !state.cordoned => illegal("it is not cordoned"),
        Event::Uncordon => Ok(Step {
            next: ServerState {
                cordoned: false,
                ..state
            },
            actions: Vec::new(),
            changed: true,
        }),

        Event::Accept if p == Discovered => to(Accepted, boot(vec![])),
        Event::Accept => illegal("it is already accepted"),

        Event::Unaccept if p == Discovered => illegal("it is not accepted"),
        Event::Unaccept if allocated => illegal(
            "it is allocated; release it first (an allocated server is never taken back silently)",
        ),
        Event::Unaccept => to(Discovered, vec![Action::DisarmRebootTimer]),

        Event::WipeStarted if free_dirty => {
            to(Wiping, vec![Action::ArmRebootTimer(ctx.reboot_timeout)])
        }
        Event::WipeStarted if p == Discovered => {
            illegal("it is not accepted; the box never wipes a server that was not accepted")
        }
        Event::WipeStarted if p == Available => illegal("it is already clean"),
        Event::WipeStarted => illegal("it is allocated; an allocated server is never wiped"),

        Event::Wiped if free_dirty => {
            to(Available, vec![Action::DisarmRebootTimer, Action::PowerOff])
        }
        Event::Wiped if p == Available => noop(),
        Event::Wiped if p == Discovered => illegal("it is not accepted; no wipe was requested"),
        Event::Wiped => illegal("it is allocated; no wipe was requested"),

        Event::RebootTimeout { attempt } if p.awaits_reboot() => {
            if attempt < ctx.reboot_retries {
                to(
                    p,
                    vec![
                        Action::PxeBootAndPowerCycle,
                        Action::ArmRebootTimer(ctx.backoff(attempt + 1)),
                    ],
                )
            } else {
                to(p, vec![Action::RaiseRebootTimeoutCondition])
            }
        }
        Event::RebootTimeout { .. } => illegal("the box is not waiting for it to reboot"),

        Event::Allocate { .. }
            if p == Available
                && state.cordoned
                && !matches!(event, Event::Allocate { explicit: true }) =>
        {
            illegal("it is cordoned; only an explicit allocation by name may take it")
        }
        Event::Allocate { .. } if p == Available => to(Allocated, boot(vec![])),
        Event::Allocate { .. } if allocated => illegal("it is already allocated"),
        Event::Allocate { .. } if p == Discovered => illegal("it is not accepted"),
        Event::Allocate { .. } => {
            illegal("it is not clean yet; it becomes available after its wipe")
        }

        Event::EnvironmentBooted if p == Allocated => to(Booting, vec![Action::DisarmRebootTimer]),
        Event::EnvironmentBooted if matches!(p, Booting | Installed) => noop(),
        Event::EnvironmentBooted => illegal("it is not allocated"),

        Event::Installed if matches!(p, Allocated | Booting) => {
            to(Installed, vec![Action::DisarmRebootTimer])
        }
        Event::Installed if p == Installed => noop(),
        Event::Installed => illegal("it is not allocated"),

        // On demand: only a clean, free server. It waits powered off when it has a BMC (its
        // agent was told to power off, so a recent call says nothing about whether it will
        // poll again): always PXE boot + power cycle; the hook skips servers without a BMC,
        // whose agent is still polling and gets WIPE on its next NextAction.
        Event::WipeRequested if p == Available => to(
            Accepted,
            vec![
                Action::PxeBootAndPowerCycle,
                Action::ArmRebootTimer(ctx.reboot_timeout),
            ],
        ),
        Event::WipeRequested if p == Discovered => {
            illegal("it is not accepted; the box never wipes a server that was not accepted")
        }
        Event::WipeRequested if p == Wiping => illegal("it is being wiped already"),
        Event::WipeRequested if free_dirty => {
            illegal("it is not clean yet; its agent is already told to wipe it")
        }
        Event::WipeRequested => illegal(
            "it is allocated; an allocated server is never wiped (release it: a released server is wiped)",
        ),

        Event::Release if allocated => to(Released, boot(vec![])),
        Event::Release if p == Released => illegal("it is already released"),
        Event::Release => illegal("it is not allocated"),
    }
}

/// What the agent on a server should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    Wait,
    Wipe,
    Reboot,
    PowerOff,
}

/// The agent's next instruction in `phase`, with the reason it is told.
pub fn agent_instruction(phase: Phase, has_bmc: bool) -> (Instruction, &'static str) {
    match phase {
        Phase::Discovered => (
            Instruction::Wait,
            "not accepted yet: accept it with `appliance ctl server accept <uuid>`",
        ),
        Phase::Accepted | Phase::Wiping | Phase::Released => {
            (Instruction::Wipe, "accepted and not clean: wipe the disks")
        }
        Phase::Available if has_bmc => (
            Instruction::PowerOff,
            "clean and available: power off; the BMC powers it on when it is allocated",
        ),
        Phase::Available => (
            Instruction::Wait,
            "clean and available: waiting for an allocation (no BMC, so stay up)",
        ),
        Phase::Allocated | Phase::Booting | Phase::Installed => (
            Instruction::Reboot,
            "allocated: reboot into its Environment",
        ),
    }
}

#[cfg(test)]
mod tests;
