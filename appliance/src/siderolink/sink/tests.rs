//! The event sink against a real store and lifecycle: Talos's install sequence moves the
//! ServerBinding conditions in Sidero's order and ends with the Server installed
//! (`PXEBooted=True`); a resent old event is not applied again; events from an address no
//! server holds are refused; unknown or undecodable payloads are acknowledged and change
//! nothing.

use std::net::Ipv6Addr;
use std::sync::Arc;

use appliance_rpc::common;
use appliance_rpc::events::EventRequest;
use appliance_rpc::events::event_sink_service_server::EventSinkService;
use appliance_rpc::machine;
use prost::Message;
use tokio::sync::watch;

use super::*;
use crate::model::{ConditionStatus, Kind, Object};
use crate::protocol::siderolink::address::Prefix;
use crate::reconcile::apply::{AllocateInput, NewServer};
use crate::reconcile::power::LoggedPower;
use crate::siderolink::identity::Identity;
use crate::siderolink::{peers, provision};
use crate::store::Store;

async fn allocated(dir: &std::path::Path) -> (Lifecycle, Prefix, Ipv6Addr) {
    let store = Store::open(&dir.join("state.redb")).unwrap();
    let config = crate::config::Config::default().lifecycle;
    let (lc, _task) = Lifecycle::new(store.clone(), config, Arc::new(LoggedPower), None);
    lc.register(NewServer {
        name: "n1".into(),
        hostname: None,
        hardware: Default::default(),
        key: None,
        junk: None,
    })
    .await
    .unwrap();
    for e in [Event::Accept, Event::WipeStarted, Event::Wiped] {
        lc.fire("n1", e, "test").await.unwrap();
    }
    lc.allocate(AllocateInput {
        server_class: None,
        server: Some("n1".into()),
        owner: "default/m1".into(),
        bootstrap_data: String::new(),
        config_patches: vec![],
        environment: None,
    })
    .await
    .unwrap();
    let prefix = Identity::generate([4; 64]).prefix();
    let key = Identity::generate([5; 64]).public_key_base64();
    let addr = provision::bind_node(&store, prefix, "n1", &key, vec![[0x42; 8]]).unwrap();
    (lc, prefix, addr)
}

fn event<M: Message>(id: &str, name: &str, m: &M) -> EventRequest {
    EventRequest {
        data: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/machine.{name}"),
            value: m.encode_to_vec(),
        }),
        id: id.into(),
        actor_id: String::new(),
    }
}

fn from(node: Ipv6Addr, req: EventRequest) -> Request<EventRequest> {
    let mut r = Request::new(req);
    r.extensions_mut().insert(OverlayPeer(node));
    r
}

fn binding_conditions(lc: &Lifecycle) -> Vec<(String, ConditionStatus, Option<String>)> {
    match lc
        .store()
        .get(Kind::ServerBinding, "n1")
        .unwrap()
        .unwrap()
        .object
    {
        Object::ServerBinding(b) => b
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason))
            .collect(),
        _ => unreachable!(),
    }
}

fn server_phase(lc: &Lifecycle) -> Phase {
    match lc.store().get(Kind::Server, "n1").unwrap().unwrap().object {
        Object::Server(s) => apply::server_state(&s).phase,
        _ => unreachable!(),
    }
}

fn status(s: &str) -> ConditionStatus {
    if s == "T" {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    }
}

#[tokio::test]
async fn talos_install_sequence_installs_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (lc, prefix, node) = allocated(dir.path()).await;
    let peers = peers::load(lc.store(), prefix).unwrap();
    assert_eq!(peers.len(), 1);
    let (_tx, rx) = watch::channel(Arc::new(peers));
    let sink = EventSink::new(lc.clone(), rx, vec!["10.99.0.0/16".parse().unwrap()]);

    let phase = |p: &str, action| machine::PhaseEvent {
        phase: p.into(),
        action,
    };
    sink.publish(from(
        node,
        event("e1", "PhaseEvent", &phase("saveConfig", 0)),
    ))
    .await
    .unwrap();
    sink.publish(from(node, event("e2", "PhaseEvent", &phase("install", 0))))
        .await
        .unwrap();
    let c = binding_conditions(&lc);
    assert!(
        c.contains(&("TalosConfigLoaded".into(), status("T"), None)),
        "{c:?}"
    );
    assert!(
        c.contains(&("TalosConfigValidated".into(), status("T"), None)),
        "{c:?}"
    );
    assert!(c.contains(&(
        "TalosInstalled".into(),
        status("F"),
        Some("TalosInstallationInProgress".into())
    )));
    assert_eq!(server_phase(&lc), Phase::Allocated);

    let addresses = machine::AddressEvent {
        hostname: "talos-n1".into(),
        addresses: vec!["192.168.7.5".into(), node.to_string(), "10.99.1.1".into()],
    };
    sink.publish(from(node, event("e3", "AddressEvent", &addresses)))
        .await
        .unwrap();
    match lc
        .store()
        .get(Kind::ServerBinding, "n1")
        .unwrap()
        .unwrap()
        .object
    {
        Object::ServerBinding(b) => {
            assert_eq!(b.spec.addresses, vec!["192.168.7.5".to_string()]);
            assert_eq!(b.spec.hostname.as_deref(), Some("talos-n1"));
        }
        _ => unreachable!(),
    }

    let done = machine::SequenceEvent {
        sequence: "install".into(),
        action: 0,
        error: Some(common::Error {
            code: 0,
            message: "unix.Reboot(0x1234567)".into(),
            details: vec![],
        }),
    };
    sink.publish(from(node, event("e4", "SequenceEvent", &done)))
        .await
        .unwrap();
    assert!(binding_conditions(&lc).contains(&("TalosInstalled".into(), status("T"), None)));
    assert_eq!(server_phase(&lc), Phase::Installed);
    match lc.store().get(Kind::Server, "n1").unwrap().unwrap().object {
        Object::Server(s) => {
            // What /ipxe reads to answer boot-from-disk.
            assert!(crate::boot::facts::ServerFacts::from_server(&s).pxe_booted);
            let conds = s.status.unwrap_or_default().conditions;
            assert!(
                conds
                    .iter()
                    .any(|c| c.type_ == "PXEBooted" && c.status == ConditionStatus::True),
                "{conds:?}"
            );
        }
        _ => unreachable!(),
    }

    // Talos resends its backlog after a reconnect: the old install START (same id) must
    // not undo TalosInstalled.
    sink.publish(from(node, event("e2", "PhaseEvent", &phase("install", 0))))
        .await
        .unwrap();
    assert!(binding_conditions(&lc).contains(&("TalosInstalled".into(), status("T"), None)));
    // ... also after the box restarted (a new sink, the same store): the ids are durable.
    let (_tx2, rx2) = watch::channel(Arc::new(peers::load(lc.store(), prefix).unwrap()));
    let restarted = EventSink::new(lc.clone(), rx2, vec![]);
    restarted
        .publish(from(node, event("e2", "PhaseEvent", &phase("install", 0))))
        .await
        .unwrap();
    assert!(binding_conditions(&lc).contains(&("TalosInstalled".into(), status("T"), None)));
    // A new event still applies after the restart.
    restarted
        .publish(from(node, event("e9", "PhaseEvent", &phase("install", 0))))
        .await
        .unwrap();
    assert!(binding_conditions(&lc).contains(&(
        "TalosInstalled".into(),
        status("F"),
        Some("TalosInstallationInProgress".into())
    )));
    let ids = lc.store().talos_event_ids("n1").unwrap();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e9"]);
}

#[tokio::test]
async fn strangers_and_junk_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (lc, prefix, node) = allocated(dir.path()).await;
    let (_tx, rx) = watch::channel(Arc::new(peers::load(lc.store(), prefix).unwrap()));
    let sink = EventSink::new(lc.clone(), rx, vec![]);
    let rev = lc.store().revision().unwrap();
    let install = machine::PhaseEvent {
        phase: "install".into(),
        action: 0,
    };
    // Another overlay address, and no overlay at all.
    let e = sink
        .publish(from(
            prefix.with_host(99),
            event("x", "PhaseEvent", &install),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = sink
        .publish(Request::new(event("x", "PhaseEvent", &install)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // Undecodable payload and unknown type: acknowledged, nothing written.
    let mut junk = event("j1", "SequenceEvent", &install);
    junk.data.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
    sink.publish(from(node, junk)).await.unwrap();
    sink.publish(from(node, event("j2", "MachineStatusEvent", &install)))
        .await
        .unwrap();
    assert_eq!(lc.store().revision().unwrap(), rev);
}
