//! Talos machine events (as received by the SideroLink event sink, TCP 4002) mapped onto
//! ServerBinding changes, exactly as Sidero's events-manager adapter does
//! (`SCM/cmd/events-manager/adapter.go`):
//!
//! | event | change |
//! |---|---|
//! | `AddressEvent` | `spec.addresses` = its addresses minus invalid ones, the node's SideroLink address and the negative filter; `spec.hostname` |
//! | `ConfigLoadErrorEvent` | `TalosConfigLoaded=False` `TalosConfigLoadFailed` (Error) |
//! | `ConfigValidationErrorEvent` | `TalosConfigValidated=False` `TalosConfigValidationFailed` (Error) |
//! | `PhaseEvent` `install` START | `TalosInstalled=False` `TalosInstallationInProgress` (Info) |
//! | `PhaseEvent` `saveConfig` START | `TalosConfigValidated=True`, `TalosConfigLoaded=True` |
//! | `SequenceEvent` `install` NOOP, error code FATAL | message contains `unix.Reboot`: `TalosInstalled=True`; else `TalosInstalled=False` `TalosInstallationFailed` (Error) |
//! | `SequenceEvent` `boot` START | all three True |
//! | anything else | nothing (logged by the caller) |
//!
//! Like Go's `GetError().GetCode()`, a SequenceEvent without an error reads as code FATAL
//! with an empty message. Also here: the per-node memory of event ids that makes Talos's
//! resent backlog harmless. Pure.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr};

/// `machine.PhaseEvent.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseAction {
    Start,
    Stop,
    Unknown(i32),
}

impl PhaseAction {
    pub fn from_wire(v: i32) -> PhaseAction {
        match v {
            0 => PhaseAction::Start,
            1 => PhaseAction::Stop,
            n => PhaseAction::Unknown(n),
        }
    }
}

/// `machine.SequenceEvent.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceAction {
    Noop,
    Start,
    Stop,
    Unknown(i32),
}

impl SequenceAction {
    pub fn from_wire(v: i32) -> SequenceAction {
        match v {
            0 => SequenceAction::Noop,
            1 => SequenceAction::Start,
            2 => SequenceAction::Stop,
            n => SequenceAction::Unknown(n),
        }
    }
}

/// `common.Error` (code FATAL = 0, LOCKED = 1, CANCELED = 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TalosError {
    pub code: i32,
    pub message: String,
}

/// The Talos events the box reads; the rest are kept by type URL only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalosEvent {
    Address {
        hostname: String,
        addresses: Vec<String>,
    },
    ConfigLoadError {
        error: String,
    },
    ConfigValidationError {
        error: String,
    },
    Phase {
        phase: String,
        action: PhaseAction,
    },
    Sequence {
        sequence: String,
        action: SequenceAction,
        error: Option<TalosError>,
    },
    Task {
        task: String,
        action: PhaseAction,
    },
    ServiceState {
        service: String,
        action: i32,
        message: String,
    },
    /// Any other type (acknowledged and dropped, as Sidero does).
    Other {
        type_url: String,
    },
}

/// The three ServerBinding conditions that Talos events drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalosCondition {
    ConfigLoaded,
    ConfigValidated,
    Installed,
}

impl TalosCondition {
    /// The condition type as Sidero names it.
    pub fn as_str(self) -> &'static str {
        match self {
            TalosCondition::ConfigLoaded => "TalosConfigLoaded",
            TalosCondition::ConfigValidated => "TalosConfigValidated",
            TalosCondition::Installed => "TalosInstalled",
        }
    }
}

/// CAPI condition severity (only set on False).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Info,
}

/// `conditions.MarkTrue` / `MarkFalse` on one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionChange {
    pub condition: TalosCondition,
    pub status: bool,
    pub reason: Option<&'static str>,
    pub severity: Option<Severity>,
    /// None for an empty message (CAPI omits it).
    pub message: Option<String>,
}

impl ConditionChange {
    fn mark_true(condition: TalosCondition) -> ConditionChange {
        ConditionChange {
            condition,
            status: true,
            reason: None,
            severity: None,
            message: None,
        }
    }

    fn mark_false(
        condition: TalosCondition,
        reason: &'static str,
        severity: Severity,
        message: &str,
    ) -> ConditionChange {
        ConditionChange {
            condition,
            status: false,
            reason: Some(reason),
            severity: Some(severity),
            message: (!message.is_empty()).then(|| message.to_string()),
        }
    }
}

/// What one event changes on the node's ServerBinding (applied in one transaction).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingChange {
    /// Replaces `spec.addresses` and `spec.hostname` (None = leave them).
    pub addresses: Option<(Vec<String>, String)>,
    /// Applied in order.
    pub conditions: Vec<ConditionChange>,
}

impl BindingChange {
    /// Whether the event changes nothing.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_none() && self.conditions.is_empty()
    }

    /// Whether the change sets `TalosInstalled=True` (the box then marks the Server
    /// `PXEBooted`).
    pub fn installs(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.condition == TalosCondition::Installed && c.status)
    }
}

/// A CIDR prefix of the negative address filter (IPv4 or IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// A filter prefix that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address prefix such as 10.0.0.0/8 or fd00::/8")]
pub struct IpPrefixError(pub String);

impl std::str::FromStr for IpPrefix {
    type Err = IpPrefixError;

    fn from_str(s: &str) -> Result<IpPrefix, IpPrefixError> {
        let err = || IpPrefixError(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let len: u8 = l.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(err());
        }
        Ok(IpPrefix { addr, len })
    }
}

impl IpPrefix {
    /// Whether `ip` lies inside (an IPv4 prefix never contains an IPv6 address and back).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits_equal(a: &[u8], b: &[u8], len: u8) -> bool {
            let (full, rest) = ((len / 8) as usize, len % 8);
            if a[..full] != b[..full] {
                return false;
            }
            rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
        }
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => bits_equal(&p.octets(), &a.octets(), self.len),
            (IpAddr::V6(p), IpAddr::V6(a)) => bits_equal(&p.octets(), &a.octets(), self.len),
            _ => false,
        }
    }
}

/// The ServerBinding change for `event` from the node whose tunnel address is `node`.
pub fn map_event(event: &TalosEvent, node: Ipv6Addr, negative: &[IpPrefix]) -> BindingChange {
    use TalosCondition::{ConfigLoaded, ConfigValidated, Installed};
    let mut change = BindingChange::default();
    match event {
        TalosEvent::Address {
            hostname,
            addresses,
        } => {
            let kept = addresses
                .iter()
                .filter(|s| match s.parse::<IpAddr>() {
                    Err(_) => false,
                    Ok(ip) => ip != IpAddr::V6(node) && !negative.iter().any(|p| p.contains(ip)),
                })
                .cloned()
                .collect();
            change.addresses = Some((kept, hostname.clone()));
        }
        TalosEvent::ConfigLoadError { error } => {
            change.conditions.push(ConditionChange::mark_false(
                ConfigLoaded,
                "TalosConfigLoadFailed",
                Severity::Error,
                error,
            ));
        }
        TalosEvent::ConfigValidationError { error } => {
            change.conditions.push(ConditionChange::mark_false(
                ConfigValidated,
                "TalosConfigValidationFailed",
                Severity::Error,
                error,
            ));
        }
        TalosEvent::Phase { phase, action } if *action == PhaseAction::Start => {
            match phase.as_str() {
                "install" => change.conditions.push(ConditionChange::mark_false(
                    Installed,
                    "TalosInstallationInProgress",
                    Severity::Info,
                    "",
                )),
                "saveConfig" => change.conditions.extend([
                    ConditionChange::mark_true(ConfigValidated),
                    ConditionChange::mark_true(ConfigLoaded),
                ]),
                _ => {}
            }
        }
        TalosEvent::Sequence {
            sequence,
            action,
            error,
        } => {
            let error = error.clone().unwrap_or_default();
            if sequence == "install" && *action == SequenceAction::Noop && error.code == 0 {
                change
                    .conditions
                    .push(if error.message.contains("unix.Reboot") {
                        ConditionChange::mark_true(Installed)
                    } else {
                        ConditionChange::mark_false(
                            Installed,
                            "TalosInstallationFailed",
                            Severity::Error,
                            &error.message,
                        )
                    });
            } else if sequence == "boot" && *action == SequenceAction::Start {
                change.conditions.extend([
                    ConditionChange::mark_true(Installed),
                    ConditionChange::mark_true(ConfigValidated),
                    ConditionChange::mark_true(ConfigLoaded),
                ]);
            }
        }
        TalosEvent::Phase { .. }
        | TalosEvent::Task { .. }
        | TalosEvent::ServiceState { .. }
        | TalosEvent::Other { .. } => {}
    }
    change
}

/// The last `capacity` event ids of one node: Talos resends its backlog from the last
/// acknowledged id after a reconnect, so an id seen before is acknowledged and not applied
/// again (an old `install` START applied after `boot` START would undo `TalosInstalled`).
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records `id`; false if it was already among the remembered ids. An empty id is
    /// never remembered (always new).
    pub fn first_time(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
        true
    }

    /// Whether `id` is among the remembered ids (an empty id never is).
    pub fn contains(&self, id: &str) -> bool {
        !id.is_empty() && self.seen.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::TalosCondition::{ConfigLoaded, ConfigValidated, Installed};
    use super::*;

    fn node() -> Ipv6Addr {
        "fd0b:4902:8b54:2503:1:2:3:4".parse().unwrap()
    }

    fn conds(c: &BindingChange) -> Vec<(TalosCondition, bool, Option<&str>)> {
        c.conditions
            .iter()
            .map(|c| (c.condition, c.status, c.reason))
            .collect()
    }

    #[test]
    fn address_event_filters_siderolink_invalid_and_negative() {
        let negative: Vec<IpPrefix> = ["10.99.0.0/16", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ev = TalosEvent::Address {
            hostname: "talos-abc".into(),
            addresses: vec![
                "192.168.1.20".into(),
                "fd0b:4902:8b54:2503:1:2:3:4".into(),
                "10.99.3.4".into(),
                "fdff::1".into(),
                "2001:db8::7".into(),
                "192.168.1.21/24".into(),
                "garbage".into(),
            ],
        };
        let c = map_event(&ev, node(), &negative);
        assert_eq!(
            c.addresses,
            Some((
                vec!["192.168.1.20".to_string(), "2001:db8::7".to_string()],
                "talos-abc".to_string()
            ))
        );
        assert!(c.conditions.is_empty());
        // Without a filter only the SideroLink address and invalid strings go.
        let c = map_event(&ev, node(), &[]);
        assert_eq!(c.addresses.unwrap().0.len(), 4);
    }

    #[test]
    fn install_sequence_in_talos_order() {
        let n = node();
        let phase = |p: &str, a| TalosEvent::Phase {
            phase: p.into(),
            action: a,
        };
        let c = map_event(&phase("saveConfig", PhaseAction::Start), n, &[]);
        assert_eq!(
            conds(&c),
            [(ConfigValidated, true, None), (ConfigLoaded, true, None)]
        );
        assert!(map_event(&phase("saveConfig", PhaseAction::Stop), n, &[]).is_empty());
        let c = map_event(&phase("install", PhaseAction::Start), n, &[]);
        assert_eq!(
            conds(&c),
            [(Installed, false, Some("TalosInstallationInProgress"))]
        );
        assert_eq!(c.conditions[0].severity, Some(Severity::Info));
        assert!(!c.installs());
        let done = TalosEvent::Sequence {
            sequence: "install".into(),
            action: SequenceAction::Noop,
            error: Some(TalosError {
                code: 0,
                message: "error in reboot: unix.Reboot(0x1234567)".into(),
            }),
        };
        let c = map_event(&done, n, &[]);
        assert_eq!(conds(&c), [(Installed, true, None)]);
        assert!(c.installs());
        let boot = TalosEvent::Sequence {
            sequence: "boot".into(),
            action: SequenceAction::Start,
            error: None,
        };
        assert_eq!(
            conds(&map_event(&boot, n, &[])),
            [
                (Installed, true, None),
                (ConfigValidated, true, None),
                (ConfigLoaded, true, None)
            ]
        );
    }

    #[test]
    fn failures_map_to_false_with_sidero_reasons() {
        let n = node();
        let failed = TalosEvent::Sequence {
            sequence: "install".into(),
            action: SequenceAction::Noop,
            error: Some(TalosError {
                code: 0,
                message: "disk not found".into(),
            }),
        };
        let c = map_event(&failed, n, &[]);
        assert_eq!(
            conds(&c),
            [(Installed, false, Some("TalosInstallationFailed"))]
        );
        assert_eq!(c.conditions[0].message.as_deref(), Some("disk not found"));
        assert_eq!(c.conditions[0].severity, Some(Severity::Error));
        // Go's GetError().GetCode() on a nil error is FATAL: same outcome, empty message.
        let no_error = TalosEvent::Sequence {
            sequence: "install".into(),
            action: SequenceAction::Noop,
            error: None,
        };
        let c = map_event(&no_error, n, &[]);
        assert_eq!(
            conds(&c),
            [(Installed, false, Some("TalosInstallationFailed"))]
        );
        assert_eq!(c.conditions[0].message, None);
        // Other codes and actions change nothing.
        for (code, action) in [(1, SequenceAction::Noop), (0, SequenceAction::Start)] {
            let ev = TalosEvent::Sequence {
                sequence: "install".into(),
                action,
                error: Some(TalosError {
                    code,
                    message: "unix.Reboot".into(),
                }),
            };
            assert!(map_event(&ev, n, &[]).is_empty());
        }
        let c = map_event(
            &TalosEvent::ConfigLoadError {
                error: "bad yaml".into(),
            },
            n,
            &[],
        );
        assert_eq!(
            conds(&c),
            [(ConfigLoaded, false, Some("TalosConfigLoadFailed"))]
        );
        let c = map_event(
            &TalosEvent::ConfigValidationError {
                error: "no cluster".into(),
            },
            n,
            &[],
        );
        assert_eq!(
            conds(&c),
            [(ConfigValidated, false, Some("TalosConfigValidationFailed"))]
        );
        for ev in [
            TalosEvent::Task {
                task: "x".into(),
                action: PhaseAction::Start,
            },
            TalosEvent::ServiceState {
                service: "etcd".into(),
                action: 3,
                message: "Running".into(),
            },
            TalosEvent::Other {
                type_url: "type.googleapis.com/machine.MachineStatusEvent".into(),
            },
        ] {
            assert!(map_event(&ev, n, &[]).is_empty());
        }
    }

    #[test]
    fn ip_prefix_parse_and_contains() {
        let p: IpPrefix = "10.0.0.0/9".parse().unwrap();
        assert!(p.contains("10.127.255.255".parse().unwrap()));
        assert!(!p.contains("10.128.0.0".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let all: IpPrefix = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "1.2.3.4/+1",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn recent_ids_dedupe_and_stay_bounded() {
        let mut r = RecentIds::new(2);
        assert!(!r.contains("a"));
        assert!(r.first_time("a"));
        assert!(r.contains("a"));
        assert!(!r.first_time("a"));
        assert!(r.first_time("b"));
        assert!(r.first_time("c"));
        assert_eq!(r.len(), 2);
        assert!(r.first_time("a"), "forgotten after two newer ids");
        assert!(r.first_time("") && r.first_time(""));
    }
}
