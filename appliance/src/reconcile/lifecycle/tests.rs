//! Table-driven tests: every (phase, event) pair is listed with its expected outcome, and
//! the test fails if a pair is missing from the table.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    To(Phase),
    Noop,
    Illegal,
}
use Expect::*;
use Phase::*;

const T: Duration = Duration::from_secs(1200);

fn ctx(agent_connected: bool) -> Context {
    Context {
        agent_connected,
        reboot_timeout: T,
        reboot_retries: 3,
    }
}

fn st(phase: Phase) -> ServerState {
    ServerState {
        phase,
        cordoned: false,
    }
}

/// Uncordoned servers: every phase × every event.
fn table() -> Vec<(Phase, Event, Expect)> {
    let to = |p| To(p);
    let mut t = Vec::new();
    let mut row = |p: Phase, cells: [Expect; 12]| {
        for (e, x) in Event::ALL.into_iter().zip(cells) {
            t.push((p, e, x));
        }
    };
    // Columns: Accept, Unaccept, WipeStarted, Wiped, RebootTimeout, Allocate,
    //          EnvironmentBooted, Installed, Release, Cordon, Uncordon, WipeRequested
    row(
        Discovered,
        [
            to(Accepted),
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            to(Discovered),
            Illegal,
            Illegal,
        ],
    );
    row(
        Accepted,
        [
            Illegal,
            to(Discovered),
            to(Wiping),
            to(Available),
            to(Accepted),
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            to(Accepted),
            Illegal,
            Illegal,
        ],
    );
    row(
        Wiping,
        [
            Illegal,
            to(Discovered),
            to(Wiping),
            to(Available),
            to(Wiping),
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            to(Wiping),
            Illegal,
            Illegal,
        ],
    );
    row(
        Available,
        [
            Illegal,
            to(Discovered),
            Illegal,
            Noop,
            Illegal,
            to(Allocated),
            Illegal,
            Illegal,
            Illegal,
            to(Available),
            Illegal,
            to(Accepted),
        ],
    );
    row(
        Allocated,
        [
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            to(Allocated),
            Illegal,
            to(Booting),
            to(Installed),
            to(Released),
            to(Allocated),
            Illegal,
            Illegal,
        ],
    );
    row(
        Booting,
        [
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Noop,
            to(Installed),
            to(Released),
            to(Booting),
            Illegal,
            Illegal,
        ],
    );
    row(
        Installed,
        [
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            Noop,
            Noop,
            to(Released),
            to(Installed),
            Illegal,
            Illegal,
        ],
    );
    row(
        Released,
        [
            Illegal,
            to(Discovered),
            to(Wiping),
            to(Available),
            to(Released),
            Illegal,
            Illegal,
            Illegal,
            Illegal,
            to(Released),
            Illegal,
            Illegal,
        ],
    );
    t
}

fn outcome(r: &Result<Step, IllegalTransition>) -> Expect {
    match r {
        Ok(s) if !s.changed => Noop,
        Ok(s) => To(s.next.phase),
        Err(_) => Illegal,
    }
}

#[test]
fn every_transition_of_an_uncordoned_server() {
    let table = table();
    let listed: HashSet<(Phase, &str)> = table.iter().map(|(p, e, _)| (*p, e.name())).collect();
    for p in Phase::ALL {
        for e in Event::ALL {
            assert!(
                listed.contains(&(p, e.name())),
                "({p}, {e}) missing from the table"
            );
        }
    }
    for (phase, event, expect) in table {
        for connected in [false, true] {
            let r = plan(st(phase), event, &ctx(connected));
            assert_eq!(
                outcome(&r),
                expect,
                "{phase} --{event}--> (agent connected: {connected})"
            );
            match r {
                Err(e) => {
                    assert_eq!(e.from, phase);
                    assert_eq!(e.event, event);
                    assert!(!e.reason.is_empty());
                    assert!(e.to_string().contains(phase.as_str()), "{e}");
                }
                Ok(s) if !s.changed => {
                    assert_eq!(s.next, st(phase));
                    assert!(s.actions.is_empty());
                }
                Ok(s) => {
                    let cordon = matches!(event, Event::Cordon);
                    assert_eq!(s.next.cordoned, cordon, "{phase} --{event}-->");
                }
            }
        }
    }
}

#[test]
fn cordoned_servers_move_the_same_except_class_allocation_and_cordon_flags() {
    for (phase, event, expect) in table() {
        let state = ServerState {
            phase,
            cordoned: true,
        };
        let r = plan(state, event, &ctx(false));
        let expect = match event {
            Event::Cordon => Illegal,
            Event::Uncordon => To(phase),
            Event::Allocate { explicit: false } => Illegal,
            _ => expect,
        };
        assert_eq!(outcome(&r), expect, "cordoned {phase} --{event}-->");
        if let Ok(s) = r
            && s.changed
        {
            assert_eq!(s.next.cordoned, !matches!(event, Event::Uncordon));
        }
    }
    // An explicit allocation by name may take a cordoned server.
    let r = plan(
        ServerState {
            phase: Available,
            cordoned: true,
        },
        Event::Allocate { explicit: true },
        &ctx(false),
    );
    assert_eq!(outcome(&r), To(Allocated));
    let err = plan(
        ServerState {
            phase: Available,
            cordoned: true,
        },
        Event::Allocate { explicit: false },
        &ctx(false),
    )
    .unwrap_err();
    assert!(err.reason.contains("cordoned"), "{err}");
}

#[test]
fn actions_of_the_main_path() {
    let c = ctx(false);
    assert_eq!(register(false, &c).next.phase, Discovered);
    assert!(register(false, &c).actions.is_empty());
    assert_eq!(register(true, &c).next.phase, Accepted);
    assert_eq!(register(true, &c).actions, vec![Action::ArmRebootTimer(T)]);

    // Accepting a server whose agent is not connected power-cycles it into the agent.
    let s = plan(st(Discovered), Event::Accept, &c).unwrap();
    assert_eq!(
        s.actions,
        vec![Action::PxeBootAndPowerCycle, Action::ArmRebootTimer(T)]
    );
    // … but not when the agent is up and polling: it picks up WIPE itself.
    let s = plan(st(Discovered), Event::Accept, &ctx(true)).unwrap();
    assert_eq!(s.actions, vec![Action::ArmRebootTimer(T)]);

    let s = plan(st(Wiping), Event::Wiped, &c).unwrap();
    assert_eq!(s.actions, vec![Action::DisarmRebootTimer, Action::PowerOff]);

    let s = plan(st(Available), Event::Allocate { explicit: false }, &c).unwrap();
    assert_eq!(
        s.actions,
        vec![Action::PxeBootAndPowerCycle, Action::ArmRebootTimer(T)]
    );

    let s = plan(st(Installed), Event::Release, &c).unwrap();
    assert_eq!(
        s.actions,
        vec![Action::PxeBootAndPowerCycle, Action::ArmRebootTimer(T)]
    );

    let s = plan(st(Allocated), Event::EnvironmentBooted, &c).unwrap();
    assert_eq!(s.actions, vec![Action::DisarmRebootTimer]);
}

#[test]
fn an_on_demand_wipe_makes_an_available_server_dirty_and_boots_it_into_the_agent() {
    // Whether or not its agent called recently: an available server with a BMC was told to
    // power off, so the box always PXE boots + power cycles it (the hook skips servers
    // without a BMC, whose agent keeps polling).
    for connected in [false, true] {
        for cordoned in [false, true] {
            let from = ServerState {
                phase: Available,
                cordoned,
            };
            let s = plan(from, Event::WipeRequested, &ctx(connected)).unwrap();
            assert!(s.changed);
            assert_eq!(
                s.next,
                ServerState {
                    phase: Accepted,
                    cordoned
                }
            );
            assert_eq!(
                s.actions,
                vec![Action::PxeBootAndPowerCycle, Action::ArmRebootTimer(T)]
            );
            // Dirty again: not clean, not ready, and its agent is told to wipe.
            let f = flags(s.next.phase);
            assert!(f.accepted && !f.is_clean && !f.ready && !f.in_use);
            assert_eq!(agent_instruction(s.next.phase, true).0, Instruction::Wipe);
            // … and the usual path brings it back.
            let s = plan(s.next, Event::WipeStarted, &ctx(true)).unwrap();
            let s = plan(s.next, Event::Wiped, &ctx(true)).unwrap();
            assert_eq!(s.next.phase, Available);
        }
    }
}

#[test]
fn an_on_demand_wipe_is_refused_with_the_reason_everywhere_else() {
    let c = ctx(false);
    let reason = |p| {
        let e = plan(st(p), Event::WipeRequested, &c).unwrap_err();
        assert_eq!((e.from, e.event), (p, Event::WipeRequested));
        assert!(
            e.to_string()
                .starts_with(&format!("cannot wipe a server that is {p}: ")),
            "{e}"
        );
        e.reason
    };
    assert!(reason(Discovered).contains("never wipes a server that was not accepted"));
    for p in [Allocated, Booting, Installed] {
        assert!(
            reason(p).contains("allocated; an allocated server is never wiped"),
            "{p}"
        );
    }
    for p in [Accepted, Released] {
        assert!(reason(p).contains("already told to wipe"), "{p}");
    }
    assert!(reason(Wiping).contains("being wiped already"));
}

#[test]
fn reboot_timeout_retries_with_backoff_then_raises_a_condition() {
    let c = ctx(false);
    for phase in [Accepted, Wiping, Released, Allocated] {
        for attempt in 0..3 {
            let s = plan(st(phase), Event::RebootTimeout { attempt }, &c).unwrap();
            assert_eq!(s.next.phase, phase);
            assert_eq!(
                s.actions,
                vec![
                    Action::PxeBootAndPowerCycle,
                    Action::ArmRebootTimer(T * (1 << (attempt + 1)))
                ]
            );
        }
        let s = plan(st(phase), Event::RebootTimeout { attempt: 3 }, &c).unwrap();
        assert_eq!(s.actions, vec![Action::RaiseRebootTimeoutCondition]);
    }
    // Backoff is capped at 8× the timeout.
    assert_eq!(c.backoff(10), T * 8);
}

#[test]
fn illegal_reasons_name_the_rule() {
    let c = ctx(false);
    let r = |p, e| plan(st(p), e, &c).unwrap_err().reason;
    assert!(
        r(Discovered, Event::WipeStarted).contains("never wipes a server that was not accepted")
    );
    assert!(r(Allocated, Event::WipeStarted).contains("never wiped"));
    assert!(r(Wiping, Event::Allocate { explicit: false }).contains("not clean"));
    assert!(r(Installed, Event::Unaccept).contains("release it first"));
    assert!(r(Available, Event::Release).contains("not allocated"));
}

#[test]
fn flags_match_sidero_semantics() {
    for p in Phase::ALL {
        let f = flags(p);
        // Sidero: unaccepted servers are never clean; in use and clean never together.
        if !f.accepted {
            assert!(!f.is_clean && !f.in_use && !f.ready, "{p}");
        }
        assert!(!(f.in_use && f.is_clean), "{p}");
        assert_eq!(
            f.ready,
            matches!(p, Available | Allocated | Booting | Installed),
            "{p}"
        );
        assert_eq!(f.pxe_booted, p == Installed);
    }
}

#[test]
fn phase_of_a_stored_server() {
    // Recorded state wins when it agrees with the flags.
    assert_eq!(Phase::of_server(Some("wiping"), true, false, false), Wiping);
    assert_eq!(
        Phase::of_server(Some("installed"), true, true, false),
        Installed
    );
    // Otherwise (Sidero YAML without state, or an edited spec.accepted) the flags decide.
    assert_eq!(Phase::of_server(None, false, false, false), Discovered);
    assert_eq!(Phase::of_server(None, true, false, false), Accepted);
    assert_eq!(Phase::of_server(None, true, false, true), Available);
    assert_eq!(Phase::of_server(None, true, true, false), Allocated);
    assert_eq!(
        Phase::of_server(Some("available"), false, false, true),
        Discovered
    );
    assert_eq!(
        Phase::of_server(Some("bogus"), true, false, true),
        Available
    );
    for p in Phase::ALL {
        assert_eq!(Phase::parse(p.as_str()), Some(p));
    }
}

#[test]
fn agent_instructions() {
    assert_eq!(agent_instruction(Discovered, true).0, Instruction::Wait);
    for p in [Accepted, Wiping, Released] {
        assert_eq!(agent_instruction(p, false).0, Instruction::Wipe);
    }
    assert_eq!(agent_instruction(Available, true).0, Instruction::PowerOff);
    assert_eq!(agent_instruction(Available, false).0, Instruction::Wait);
    for p in [Allocated, Booting, Installed] {
        assert_eq!(agent_instruction(p, false).0, Instruction::Reboot);
    }
}
