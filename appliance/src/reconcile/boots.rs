//! Agent boots: for each server, the agent boot the box is talking to — the source address
//! of the CreateServer call that began it, and what the box asked of it (its BMC, a wipe).
//! Pure (no IO); the lifecycle handle keeps one table behind a mutex, in memory only: after
//! a restart of the box every agent registers again (it answers NotFound, and the agent
//! calls CreateServer).
//!
//! The rules the agent API enforces with it (a hostile PXE segment must not change another
//! server's identity, BMC or wipe state):
//! - every call about a server comes from the address that registered its current boot;
//! - `UpdateBMCInfo` only while the box has asked this boot for its BMC (`setup_bmc`); an
//!   accepted credentials report answers the question;
//! - `MarkServerAsWiped` only after the box told this boot to wipe (CreateServer's `wipe` or
//!   NextAction's WIPE);
//! - a boot ends when the box tells it to reboot or power off, or a new CreateServer for the
//!   server begins another; it is *closed* when the server is allocated (the next boot is
//!   its owner's OS): a closed boot may still poll NextAction to learn that it must reboot,
//!   nothing else.

use std::collections::HashMap;
use std::net::IpAddr;

/// One agent boot of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// Where its CreateServer came from.
    pub source: IpAddr,
    /// The box asked it for its BMC (`setup_bmc`) and has no answer yet.
    pub bmc_asked: bool,
    /// The box told it to wipe.
    pub wipe_told: bool,
    /// The server was allocated since: the boot may only learn that it must reboot.
    pub closed: bool,
}

/// What a call needs of the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// NextAction, Heartbeat: allowed on a closed boot too.
    Poll,
    /// ReconcileServerAddresses, ReportWipeProgress.
    Report,
    /// UpdateBMCInfo.
    Bmc,
    /// MarkServerAsWiped.
    Wipe,
}

/// Why an agent call was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootRefusal {
    #[error(
        "no agent boot of server {server} is known to the box (it restarted, or the server was handed to its owner since): the agent must register again with CreateServer"
    )]
    NoBoot { server: String },
    /// The message names the caller, not the registered address (no need to tell a forger).
    #[error(
        "server {server}'s agent registered from another address in this boot; calls about it from {caller} are refused"
    )]
    WrongSource {
        server: String,
        registered: IpAddr,
        caller: IpAddr,
    },
    #[error(
        "server {server} was allocated after this agent boot registered: the agent may only ask for its next action (reboot)"
    )]
    Closed { server: String },
    #[error(
        "the box has not asked server {server} for its BMC in this boot (setup_bmc): BMC reports are accepted only in answer to that"
    )]
    BmcNotAsked { server: String },
    #[error(
        "the box has not told server {server} to wipe in this boot: MarkServerAsWiped is accepted only after CreateServer or NextAction said WIPE"
    )]
    WipeNotTold { server: String },
}

/// Every server's current agent boot.
#[derive(Debug, Default)]
pub struct AgentBoots {
    boots: HashMap<String, Boot>,
    /// Where each server's latest CreateServer came from, kept after its boot ended (the
    /// agent API's displacement rule: `api::agent::displacement_check`).
    last: HashMap<String, IpAddr>,
}

impl AgentBoots {
    /// A CreateServer from `source` began a new boot of `server` (replacing any other).
    pub fn begin(&mut self, server: &str, source: IpAddr, bmc_asked: bool, wipe_told: bool) {
        self.last.insert(server.to_string(), source);
        self.boots.insert(
            server.to_string(),
            Boot {
                source,
                bmc_asked,
                wipe_told,
                closed: false,
            },
        );
    }

    pub fn get(&self, server: &str) -> Option<Boot> {
        self.boots.get(server).copied()
    }

    /// Where the server's latest agent boot registered from, whether or not it is over.
    pub fn last_source(&self, server: &str) -> Option<IpAddr> {
        self.last.get(server).copied()
    }

    /// May `caller` make a call that needs `need` about `server`? Returns the boot.
    pub fn check(&self, server: &str, caller: IpAddr, need: Need) -> Result<Boot, BootRefusal> {
        let s = || server.to_string();
        let boot = self
            .boots
            .get(server)
            .copied()
            .ok_or_else(|| BootRefusal::NoBoot { server: s() })?;
        if boot.source != caller {
            return Err(BootRefusal::WrongSource {
                server: s(),
                registered: boot.source,
                caller,
            });
        }
        if boot.closed && need != Need::Poll {
            return Err(BootRefusal::Closed { server: s() });
        }
        match need {
            Need::Bmc if !boot.bmc_asked => Err(BootRefusal::BmcNotAsked { server: s() }),
            Need::Wipe if !boot.wipe_told => Err(BootRefusal::WipeNotTold { server: s() }),
            _ => Ok(boot),
        }
    }

    fn edit(&mut self, server: &str, f: impl FnOnce(&mut Boot)) {
        if let Some(b) = self.boots.get_mut(server) {
            f(b);
        }
    }

    /// NextAction said WIPE to the current boot.
    pub fn told_wipe(&mut self, server: &str) {
        self.edit(server, |b| b.wipe_told = true);
    }

    /// A reply said `setup_bmc` to the current boot.
    pub fn asked_bmc(&mut self, server: &str) {
        self.edit(server, |b| b.bmc_asked = true);
    }

    /// The boot reported its BMC credentials: the question is answered.
    pub fn bmc_answered(&mut self, server: &str) {
        self.edit(server, |b| b.bmc_asked = false);
    }

    /// The server was allocated: its current boot may only learn that it must reboot.
    pub fn close(&mut self, server: &str) {
        self.edit(server, |b| {
            *b = Boot {
                closed: true,
                bmc_asked: false,
                wipe_told: false,
                ..*b
            }
        });
    }

    /// The box told the boot to reboot or power off: it is over.
    pub fn end(&mut self, server: &str) {
        self.boots.remove(server);
    }

    /// The Server was deleted: where its agent last registered from is no longer kept (a
    /// later CreateServer for that UUID registers a new server, which the displacement
    /// rule does not cover; without this every deleted name stayed in memory).
    pub fn forget_source(&mut self, server: &str) {
        self.last.remove(server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "4c4c4544-0042-3510-8052-b4c04f4e3132";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_last_source_outlives_the_boot_but_not_the_server() {
        let mut b = AgentBoots::default();
        b.begin(S, ip("10.0.0.5"), false, false);
        b.end(S);
        assert_eq!(b.get(S), None);
        assert_eq!(b.last_source(S), Some(ip("10.0.0.5")));
        b.forget_source(S);
        assert_eq!(b.last_source(S), None);
        assert!(b.last.is_empty());
    }

    #[test]
    fn calls_come_from_the_registering_address() {
        let mut b = AgentBoots::default();
        assert!(matches!(
            b.check(S, ip("10.0.0.5"), Need::Poll),
            Err(BootRefusal::NoBoot { .. })
        ));
        b.begin(S, ip("10.0.0.5"), false, false);
        b.check(S, ip("10.0.0.5"), Need::Poll).unwrap();
        b.check(S, ip("10.0.0.5"), Need::Report).unwrap();
        let e = b.check(S, ip("10.0.0.6"), Need::Poll).unwrap_err();
        assert_eq!(
            e,
            BootRefusal::WrongSource {
                server: S.into(),
                registered: ip("10.0.0.5"),
                caller: ip("10.0.0.6")
            }
        );
        assert!(e.to_string().contains("10.0.0.6"), "{e}");
        assert!(!e.to_string().contains("10.0.0.5"), "{e}");
        // A new boot (a reboot, a new lease) moves the address.
        b.begin(S, ip("10.0.0.6"), false, false);
        b.check(S, ip("10.0.0.6"), Need::Poll).unwrap();
        assert!(b.check(S, ip("10.0.0.5"), Need::Poll).is_err());
    }

    #[test]
    fn bmc_reports_only_while_asked() {
        let mut b = AgentBoots::default();
        b.begin(S, ip("10.0.0.5"), false, false);
        assert!(matches!(
            b.check(S, ip("10.0.0.5"), Need::Bmc),
            Err(BootRefusal::BmcNotAsked { .. })
        ));
        b.asked_bmc(S);
        b.check(S, ip("10.0.0.5"), Need::Bmc).unwrap();
        assert!(b.check(S, ip("10.0.0.9"), Need::Bmc).is_err());
        b.bmc_answered(S);
        assert!(b.check(S, ip("10.0.0.5"), Need::Bmc).is_err());
        // Asked in CreateServer's reply.
        b.begin(S, ip("10.0.0.5"), true, false);
        b.check(S, ip("10.0.0.5"), Need::Bmc).unwrap();
        // A new boot has not been asked yet.
        b.begin(S, ip("10.0.0.5"), false, false);
        assert!(b.check(S, ip("10.0.0.5"), Need::Bmc).is_err());
    }

    #[test]
    fn wipe_reports_only_after_the_box_said_wipe_in_this_boot() {
        let mut b = AgentBoots::default();
        b.begin(S, ip("10.0.0.5"), false, false);
        let e = b.check(S, ip("10.0.0.5"), Need::Wipe).unwrap_err();
        assert!(matches!(e, BootRefusal::WipeNotTold { .. }), "{e}");
        b.told_wipe(S);
        b.check(S, ip("10.0.0.5"), Need::Wipe).unwrap();
        // Retries of the report stay allowed within the boot.
        b.check(S, ip("10.0.0.5"), Need::Wipe).unwrap();
        b.begin(S, ip("10.0.0.5"), false, true);
        b.check(S, ip("10.0.0.5"), Need::Wipe).unwrap();
        // The box told it to reboot: the boot is over.
        b.end(S);
        assert!(matches!(
            b.check(S, ip("10.0.0.5"), Need::Wipe),
            Err(BootRefusal::NoBoot { .. })
        ));
    }

    #[test]
    fn an_allocation_closes_the_boot() {
        let mut b = AgentBoots::default();
        b.begin(S, ip("10.0.0.5"), true, true);
        b.close(S);
        b.check(S, ip("10.0.0.5"), Need::Poll).unwrap();
        for need in [Need::Report, Need::Bmc, Need::Wipe] {
            assert!(matches!(
                b.check(S, ip("10.0.0.5"), need),
                Err(BootRefusal::Closed { .. })
            ));
        }
        // Nothing a closed boot is told afterwards reopens it.
        b.told_wipe(S);
        assert!(b.check(S, ip("10.0.0.5"), Need::Wipe).is_err());
        // Its next registration is a fresh boot.
        b.begin(S, ip("10.0.0.5"), false, true);
        b.check(S, ip("10.0.0.5"), Need::Wipe).unwrap();
    }
}
