//! Decoding of a Talos event's `google.protobuf.Any` (`machine.*` type URLs) into the
//! pure [`TalosEvent`], used by the event sink (`sink`) on every published event: the
//! first bytes a node's event reaches the box with. Depends only on `appliance_rpc`'s
//! Talos messages, prost and `protocol::siderolink::events`, so `fuzz/` includes it by
//! path (target `siderolink_event`); [`check_payload`] is the property both the fuzzer and
//! the `cargo test` smoke run.

use std::net::{IpAddr, Ipv6Addr};

use appliance_rpc::{common, machine};
use prost::Message;

use crate::protocol::siderolink::events::{
    IpPrefix, PhaseAction, SequenceAction, TalosError, TalosEvent, map_event,
};

/// A payload that is not the message its type URL names.
#[derive(Debug, thiserror::Error)]
#[error("event payload of type {type_url} does not decode")]
pub struct DecodeError {
    pub type_url: String,
    #[source]
    pub source: prost::DecodeError,
}

/// Decodes an event's `Any` into the pure event type.
pub fn decode(any: &prost_types::Any) -> Result<TalosEvent, DecodeError> {
    let name = any.type_url.rsplit('/').next().unwrap_or("");
    let err = |source| DecodeError {
        type_url: any.type_url.clone(),
        source,
    };
    let v = any.value.as_slice();
    Ok(match name {
        "machine.AddressEvent" => {
            let e = machine::AddressEvent::decode(v).map_err(err)?;
            TalosEvent::Address {
                hostname: e.hostname,
                addresses: e.addresses,
            }
        }
        "machine.ConfigLoadErrorEvent" => TalosEvent::ConfigLoadError {
            error: machine::ConfigLoadErrorEvent::decode(v).map_err(err)?.error,
        },
        "machine.ConfigValidationErrorEvent" => TalosEvent::ConfigValidationError {
            error: machine::ConfigValidationErrorEvent::decode(v)
                .map_err(err)?
                .error,
        },
        "machine.PhaseEvent" => {
            let e = machine::PhaseEvent::decode(v).map_err(err)?;
            TalosEvent::Phase {
                phase: e.phase,
                action: PhaseAction::from_wire(e.action),
            }
        }
        "machine.TaskEvent" => {
            let e = machine::TaskEvent::decode(v).map_err(err)?;
            TalosEvent::Task {
                task: e.task,
                action: PhaseAction::from_wire(e.action),
            }
        }
        "machine.ServiceStateEvent" => {
            let e = machine::ServiceStateEvent::decode(v).map_err(err)?;
            TalosEvent::ServiceState {
                service: e.service,
                action: e.action,
                message: e.message,
            }
        }
        "machine.SequenceEvent" => {
            let e = machine::SequenceEvent::decode(v).map_err(err)?;
            TalosEvent::Sequence {
                sequence: e.sequence,
                action: SequenceAction::from_wire(e.action),
                error: e.error.map(|e| TalosError {
                    code: e.code,
                    message: e.message,
                }),
            }
        }
        _ => TalosEvent::Other {
            type_url: any.type_url.clone(),
        },
    })
}

/// The type names of [`check_payload`]'s byte 0: those the sink reads, one it keeps by
/// type URL only, and none.
pub const TYPE_NAMES: [&str; 9] = [
    "AddressEvent",
    "ConfigLoadErrorEvent",
    "ConfigValidationErrorEvent",
    "PhaseEvent",
    "TaskEvent",
    "ServiceStateEvent",
    "SequenceEvent",
    "MachineStatusEvent",
    "",
];

fn phase_wire(a: PhaseAction) -> i32 {
    match a {
        PhaseAction::Start => 0,
        PhaseAction::Stop => 1,
        PhaseAction::Unknown(n) => n,
    }
}

fn sequence_wire(a: SequenceAction) -> i32 {
    match a {
        SequenceAction::Noop => 0,
        SequenceAction::Start => 1,
        SequenceAction::Stop => 2,
        SequenceAction::Unknown(n) => n,
    }
}

/// `event` encoded again as the message of its type (None: kept by type URL only).
fn encode(event: &TalosEvent) -> Option<prost_types::Any> {
    let (name, value) = match event.clone() {
        TalosEvent::Address {
            hostname,
            addresses,
        } => (
            "AddressEvent",
            machine::AddressEvent {
                hostname,
                addresses,
            }
            .encode_to_vec(),
        ),
        TalosEvent::ConfigLoadError { error } => (
            "ConfigLoadErrorEvent",
            machine::ConfigLoadErrorEvent { error }.encode_to_vec(),
        ),
        TalosEvent::ConfigValidationError { error } => (
            "ConfigValidationErrorEvent",
            machine::ConfigValidationErrorEvent { error }.encode_to_vec(),
        ),
        TalosEvent::Phase { phase, action } => (
            "PhaseEvent",
            machine::PhaseEvent {
                phase,
                action: phase_wire(action),
            }
            .encode_to_vec(),
        ),
        TalosEvent::Task { task, action } => (
            "TaskEvent",
            machine::TaskEvent {
                task,
                action: phase_wire(action),
            }
            .encode_to_vec(),
        ),
        TalosEvent::ServiceState {
            service,
            action,
            message,
        } => (
            "ServiceStateEvent",
            machine::ServiceStateEvent {
                service,
                action,
                message,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        TalosEvent::Sequence {
            sequence,
            action,
            error,
        } => (
            "SequenceEvent",
            machine::SequenceEvent {
                sequence,
                action: sequence_wire(action),
                error: error.map(|e| common::Error {
                    code: e.code,
                    message: e.message,
                    details: vec![],
                }),
            }
            .encode_to_vec(),
        ),
        TalosEvent::Other { .. } => return None,
    };
    Some(prost_types::Any {
        type_url: format!("type.googleapis.com/machine.{name}"),
        value,
    })
}

/// Byte 0 picks the type URL from [`TYPE_NAMES`], the rest is the payload. Properties: no
/// panic; a type the sink does not read always decodes (to `Other`, so Talos is answered
/// and does not resend it forever); a decoded event encodes back to a payload that decodes
/// to the same event; its mapping keeps only addresses the event named that parse, are not
/// the node's own overlay address and are outside the negative filter, and changes at
/// most the three Talos conditions.
pub fn check_payload(data: &[u8]) {
    let name = TYPE_NAMES[data.first().copied().unwrap_or(0) as usize % TYPE_NAMES.len()];
    let any = prost_types::Any {
        type_url: format!("type.googleapis.com/machine.{name}"),
        value: data.get(1..).unwrap_or_default().to_vec(),
    };
    let event = match decode(&any) {
        Ok(e) => e,
        Err(e) => {
            assert!(
                TYPE_NAMES[..7].contains(&name),
                "{name}: unread type refused: {e}"
            );
            return;
        }
    };
    if let Some(again) = encode(&event) {
        assert_eq!(
            decode(&again).ok().as_ref(),
            Some(&event),
            "re-encoded event decodes differently"
        );
    } else {
        assert!(matches!(event, TalosEvent::Other { .. }));
    }
    let node: Ipv6Addr = "fd0b:4902:8b54:2503::5".parse().expect("literal");
    let negative: Vec<IpPrefix> = ["10.0.0.0/8", "fd00::/8"]
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let change = map_event(&event, node, &negative);
    assert!(change.conditions.len() <= 3, "{change:?}");
    if let Some((kept, hostname)) = &change.addresses {
        let TalosEvent::Address {
            hostname: h,
            addresses,
        } = &event
        else {
            panic!("addresses from a {event:?}")
        };
        assert_eq!(hostname, h);
        for a in kept {
            assert!(addresses.contains(a), "{a} was not in the event");
            let ip: IpAddr = a.parse().expect("kept addresses parse");
            assert_ne!(ip, IpAddr::V6(node), "the overlay address kept");
            assert!(!negative.iter().any(|p| p.contains(ip)), "{a} filtered out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_decode_unknown_are_kept_by_url_bad_bytes_refused() {
        let any = |name: &str, value: Vec<u8>| prost_types::Any {
            type_url: format!("type.googleapis.com/machine.{name}"),
            value,
        };
        let phase = machine::PhaseEvent {
            phase: "install".into(),
            action: 1,
        };
        assert_eq!(
            decode(&any("PhaseEvent", phase.encode_to_vec())).unwrap(),
            TalosEvent::Phase {
                phase: "install".into(),
                action: PhaseAction::Stop
            }
        );
        assert_eq!(
            decode(&any("MachineStatusEvent", vec![0xff])).unwrap(),
            TalosEvent::Other {
                type_url: "type.googleapis.com/machine.MachineStatusEvent".into()
            }
        );
        let e = decode(&any("SequenceEvent", vec![0xff, 0xff, 0xff])).unwrap_err();
        assert!(e.to_string().contains("machine.SequenceEvent"), "{e}");
    }

    /// Bounded fuzz smoke (the real fuzzer is `fuzz/fuzz_targets/siderolink_event.rs`):
    /// valid payloads of every type, mutated and truncated, and random bytes, under every
    /// type URL, through [`check_payload`].
    #[test]
    fn fuzz_smoke_event_payloads_hold_their_properties() {
        let valid: Vec<Vec<u8>> = vec![
            machine::AddressEvent {
                hostname: "talos-a".into(),
                addresses: vec![
                    "192.168.1.5".into(),
                    "10.1.2.3".into(),
                    "fd0b:4902:8b54:2503::5".into(),
                    "x".into(),
                ],
            }
            .encode_to_vec(),
            machine::SequenceEvent {
                sequence: "install".into(),
                action: 0,
                error: Some(common::Error {
                    code: 0,
                    message: "unix.Reboot".into(),
                    details: vec![],
                }),
            }
            .encode_to_vec(),
            machine::PhaseEvent {
                phase: "saveConfig".into(),
                action: 0,
            }
            .encode_to_vec(),
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut reached = 0;
        for i in 0..4000 {
            let mut value = if i % 2 == 0 {
                valid[(next() as usize) % valid.len()].clone()
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if value.is_empty() {
                    break;
                }
                let at = (next() as usize) % value.len();
                value[at] = next() as u8;
            }
            if next() % 3 == 0 {
                value.truncate((next() as usize) % (value.len() + 1));
            }
            let mut data = vec![next() as u8];
            data.extend(value);
            let name = TYPE_NAMES[data[0] as usize % TYPE_NAMES.len()];
            if TYPE_NAMES[..7].contains(&name)
                && decode(&prost_types::Any {
                    type_url: format!("type.googleapis.com/machine.{name}"),
                    value: data[1..].to_vec(),
                })
                .is_ok()
            {
                reached += 1;
            }
            check_payload(&data);
        }
        assert!(reached > 100, "the smoke must reach the mapping: {reached}");
    }
}
