//! The server lifecycle end to end with the real binary: a synthetic agent speaks the agent
//! gRPC API (as `appliance agent` will), the operator uses `appliance ctl`, the machine
//! config comes from the metadata service.
//!
//! discovered → accept → agent told to wipe → wiped → available in `any` and in a class
//! qualifying on CPU count → allocate → /configdata serves the patched config → release →
//! the next agent boot registers and is wiped again. Plus: bad agent input is refused and
//! writes nothing.

mod support;

use std::time::Duration;

use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb, AgentAction};
use serde_json::json;
use support::{Appliance, http_get};
use tonic::transport::Channel;

const UUID: &str = "4c4c4544-0042-3510-8052-b4c04f4e3132";
const OTHER: &str = "4c4c4544-0042-3510-8052-b4c04f4e3133";

const CLASSES: &str = r#"
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: two-cpus
spec:
  qualifiers:
    hardware:
      - compute:
          processorCount: 2
  configPatches:
    - op: replace
      path: /machine/install/disk
      value: /dev/vda
---
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: four-cpus
spec:
  qualifiers:
    hardware:
      - compute:
          processorCount: 4
"#;

const BOOTSTRAP: &str = "version: v1alpha1\nmachine:\n  type: worker\n  install:\n    disk: /dev/sda\ncluster:\n  name: c1\n";

fn hardware(uuid: &str, cpus: u32) -> pb::HardwareInformation {
    pb::HardwareInformation {
        system: Some(pb::SystemInformation {
            uuid: uuid.to_uppercase(),
            manufacturer: "QEMU".into(),
            product_name: "Standard PC (Q35 + ICH9, 2009)".into(),
            ..Default::default()
        }),
        compute: Some(pb::ComputeInformation {
            total_core_count: cpus,
            total_thread_count: cpus,
            processor_count: cpus,
            processors: (0..cpus)
                .map(|_| pb::Processor {
                    manufacturer: "QEMU".into(),
                    core_count: 1,
                    thread_count: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        memory: Some(pb::MemoryInformation {
            total_size: 1024,
            module_count: 1,
            modules: vec![],
        }),
        storage: Some(pb::StorageInformation {
            total_size: 3 << 30,
            device_count: 2,
            devices: vec![
                pb::StorageDevice {
                    r#type: pb::StorageType::Hdd as i32,
                    size: 1 << 30,
                    device_name: "/dev/vda".into(),
                    ..Default::default()
                },
                pb::StorageDevice {
                    r#type: pb::StorageType::Hdd as i32,
                    size: 2 << 30,
                    device_name: "/dev/vdb".into(),
                    ..Default::default()
                },
            ],
        }),
        network: None,
        firmware: None,
    }
}

async fn agent(box_: &Appliance) -> AgentClient<Channel> {
    AgentClient::connect(box_.endpoint()).await.unwrap()
}

async fn next(a: &mut AgentClient<Channel>, uuid: &str) -> pb::NextActionResponse {
    a.next_action(pb::NextActionRequest { uuid: uuid.into() })
        .await
        .unwrap()
        .into_inner()
}

fn server_yaml(box_: &Appliance, name: &str) -> serde_json::Value {
    yaml_serde::from_str(&box_.ctl_ok(&["get", "server", name, "-o", "yaml"])).unwrap()
}

fn class_lists(box_: &Appliance, class: &str) -> (Vec<String>, Vec<String>) {
    let v: serde_json::Value =
        yaml_serde::from_str(&box_.ctl_ok(&["get", "serverclass", class, "-o", "yaml"])).unwrap();
    let list = |k: &str| -> Vec<String> {
        v["status"][k]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    (list("serversAvailable"), list("serversInUse"))
}

/// Waits (≤10 s) for the reconcile task to bring a class's status to `want`.
fn wait_class(box_: &Appliance, class: &str, want: (&[&str], &[&str])) {
    let deadline = appliance::clock::now() + Duration::from_secs(10);
    loop {
        let got = class_lists(box_, class);
        if got.0 == want.0 && got.1 == want.1 {
            return;
        }
        assert!(
            appliance::clock::now() < deadline,
            "class {class}: {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_accept_wipe_allocate_configdata_release() {
    let b = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let ctl = |args: &'static [&'static str]| b.ctl_ok(args);
    b.ctl_stdin(&["apply", "-f", "-"], Some(CLASSES));
    let mut a = agent(&b).await;

    // Registration: the Server appears, discovered, not accepted; the agent waits.
    let r = a
        .create_server(pb::CreateServerRequest {
            hardware: Some(hardware(UUID, 2)),
            hostname: "node-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "discovered");
    assert!(!r.wipe && !r.setup_bmc);
    let s = server_yaml(&b, UUID);
    assert_eq!(s["spec"]["accepted"], serde_json::Value::Bool(false));
    assert_eq!(s["spec"]["hardware"]["compute"]["processorCount"], json!(2));
    assert_eq!(s["spec"]["hardware"]["memory"]["totalSize"], json!("1 GB"));
    assert_eq!(
        s["spec"]["hardware"]["storage"]["devices"][1]["size"],
        json!((2u64 << 30))
    );
    assert_eq!(s["status"]["state"], json!("discovered"));
    assert!(ctl(&["server", "list"]).contains("discovered"));
    assert_eq!(next(&mut a, UUID).await.action, AgentAction::Wait as i32);
    // An unaccepted server is never wiped.
    let e = a
        .mark_server_as_wiped(pb::MarkServerAsWipedRequest {
            uuid: UUID.into(),
            wipe_mode: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("not told server"), "{e}");
    // Not in any class before acceptance.
    wait_class(&b, "any", (&[], &[]));

    // Accept → the agent is told to wipe (fast by default) → wiping.
    assert!(ctl(&["server", "accept", UUID]).contains("accepted"));
    let n = next(&mut a, UUID).await;
    assert_eq!(n.action, AgentAction::Wipe as i32);
    assert_eq!(n.wipe_mode, pb::WipeMode::Fast as i32);
    assert_eq!(n.state, "wiping");
    assert_eq!(n.reboot_timeout, 1200.0);
    a.heartbeat(pb::HeartbeatRequest { uuid: UUID.into() })
        .await
        .unwrap();
    a.report_wipe_progress(pb::ReportWipeProgressRequest {
        uuid: UUID.into(),
        disks: vec![pb::DiskProgress {
            device_name: "/dev/vda".into(),
            bytes_done: 1 << 20,
            bytes_total: 1 << 30,
            method: "write".into(),
            done: false,
        }],
    })
    .await
    .unwrap();
    a.reconcile_server_addresses(pb::ReconcileServerAddressesRequest {
        uuid: UUID.into(),
        address: vec![pb::Address {
            r#type: "InternalIP".into(),
            address: "10.5.0.7".into(),
        }],
    })
    .await
    .unwrap();
    a.mark_server_as_wiped(pb::MarkServerAsWipedRequest {
        uuid: UUID.into(),
        wipe_mode: pb::WipeMode::Fast as i32,
    })
    .await
    .unwrap();
    let s = server_yaml(&b, UUID);
    assert_eq!(s["status"]["state"], json!("available"));
    assert_eq!(s["status"]["isClean"], json!(true));
    assert_eq!(s["status"]["ready"], json!(true));
    assert_eq!(s["status"]["addresses"][0]["address"], json!("10.5.0.7"));
    // A retried MarkServerAsWiped is harmless.
    a.mark_server_as_wiped(pb::MarkServerAsWipedRequest {
        uuid: UUID.into(),
        wipe_mode: 0,
    })
    .await
    .unwrap();
    // Clean and available: in `any` and in the 2-CPU class, not in the 4-CPU class.
    wait_class(&b, "any", (&[UUID], &[]));
    wait_class(&b, "two-cpus", (&[UUID], &[]));
    wait_class(&b, "four-cpus", (&[], &[]));
    // No BMC: the agent stays up waiting for an allocation.
    assert_eq!(next(&mut a, UUID).await.action, AgentAction::Wait as i32);

    // A second, unallocated server: the metadata service says so.
    a.create_server(pb::CreateServerRequest {
        hardware: Some(hardware(OTHER, 4)),
        hostname: String::new(),
    })
    .await
    .unwrap();
    let (code, body) = http_get(b.addr, &format!("/configdata?uuid={OTHER}")).unwrap();
    assert_eq!(code, 404);
    assert!(body.contains("server is not allocated"), "{body}");
    let (code, _) = http_get(
        b.addr,
        "/configdata?uuid=4c4c4544-0000-0000-0000-00000000dead",
    )
    .unwrap();
    assert_eq!(code, 404);
    // The 4-CPU class has no available server (OTHER is not accepted).
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("config.yaml");
    std::fs::write(&boot, BOOTSTRAP).unwrap();
    let patches = dir.path().join("patches.json");
    std::fs::write(
        &patches,
        r#"[{"op":"add","path":"/cluster/id","value":"abc"}]"#,
    )
    .unwrap();
    let (boot, patches) = (boot.to_str().unwrap(), patches.to_str().unwrap());
    let out = b.ctl(&[
        "allocate",
        "--class",
        "four-cpus",
        "--owner",
        "default/m0",
        "--bootstrap",
        boot,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no server available"),
        "{out:?}"
    );

    // Allocate from the 2-CPU class → bound, the agent reboots into its Environment.
    let out = b.ctl_ok(&[
        "allocate",
        "--class",
        "two-cpus",
        "--owner",
        "default/m1",
        "--bootstrap",
        boot,
        "--patches",
        patches,
    ]);
    assert!(out.contains(UUID), "{out}");
    let s = server_yaml(&b, UUID);
    assert_eq!(s["status"]["state"], json!("allocated"));
    assert_eq!(s["status"]["inUse"], json!(true));
    assert_eq!(s["status"]["isClean"], json!(false));
    let binding: serde_json::Value =
        yaml_serde::from_str(&b.ctl_ok(&["get", "serverbinding", UUID, "-o", "yaml"])).unwrap();
    assert_eq!(binding["spec"]["serverClassRef"]["name"], json!("two-cpus"));
    assert_eq!(binding["spec"]["metalMachineRef"]["name"], json!("m1"));
    assert_eq!(next(&mut a, UUID).await.action, AgentAction::Reboot as i32);
    wait_class(&b, "two-cpus", (&[], &[UUID]));
    // The same owner cannot take a second server.
    let out = b.ctl(&["allocate", "--class", "any", "--owner", "default/m1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds"),
        "{out:?}"
    );

    // The machine config: bootstrap data + class patch + allocation patch + node label.
    let (code, body) = http_get(b.addr, &format!("/configdata?uuid={UUID}")).unwrap();
    assert_eq!(code, 200, "{body}");
    let cfg: serde_json::Value = yaml_serde::from_str(&body).unwrap();
    assert_eq!(cfg["machine"]["install"]["disk"], json!("/dev/vda"));
    assert_eq!(cfg["cluster"]["id"], json!("abc"));
    assert_eq!(
        cfg["machine"]["kubelet"]["extraArgs"]["node-labels"],
        json!(format!("metal.sidero.dev/uuid={UUID}"))
    );

    // Release → back through a wipe.
    assert!(
        b.ctl_ok(&["release", "--owner", "default/m1"])
            .contains(UUID)
    );
    let s = server_yaml(&b, UUID);
    assert_eq!(s["status"]["state"], json!("released"));
    assert_eq!(s["status"]["inUse"], json!(false));
    assert!(b.ctl(&["get", "serverbinding", UUID]).status.code() != Some(0));
    // The agent boot that was told to reboot is over: the box does not know it any more.
    let e = a
        .next_action(pb::NextActionRequest { uuid: UUID.into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    // The server's next agent boot registers, and is told to wipe.
    let r = a
        .create_server(pb::CreateServerRequest {
            hardware: Some(hardware(UUID, 2)),
            hostname: "node-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.wipe, "{r:?}");
    let n = next(&mut a, UUID).await;
    assert_eq!(n.action, AgentAction::Wipe as i32);
    assert_eq!(n.state, "wiping");
    let (code, _) = http_get(b.addr, &format!("/configdata?uuid={UUID}")).unwrap();
    assert_eq!(code, 404);

    // Every transition is in the event log, in order.
    let events = b.ctl_ok(&["server", "events", UUID]);
    let names: Vec<&str> = events
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        names,
        [
            "register",
            "accept",
            "wipe-started",
            "wiped",
            "allocate",
            "release",
            "wipe-started"
        ],
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agent_input_is_refused_and_writes_nothing() {
    let b = tokio::task::spawn_blocking(Appliance::start).await.unwrap();
    let mut a = agent(&b).await;
    let before = b.ctl_ok(&["status"]);
    let cases: Vec<(pb::CreateServerRequest, &str)> = vec![
        (pb::CreateServerRequest::default(), "hardware is required"),
        (
            pb::CreateServerRequest {
                hardware: Some(pb::HardwareInformation::default()),
                hostname: String::new(),
            },
            "hardware.system",
        ),
        (
            pb::CreateServerRequest {
                hardware: Some(hardware("not-a-uuid", 1)),
                hostname: String::new(),
            },
            "not a UUID",
        ),
        (
            pb::CreateServerRequest {
                hardware: Some(hardware("00000000-0000-0000-0000-000000000000", 1)),
                hostname: String::new(),
            },
            "placeholder UUID",
        ),
        (
            pb::CreateServerRequest {
                hardware: Some(hardware(UUID, 1)),
                hostname: "bad\nname".into(),
            },
            "control characters",
        ),
    ];
    for (req, want) in cases {
        let e = a.create_server(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(
            e.message().contains(want),
            "{} should contain {want}",
            e.message()
        );
    }
    for e in [
        a.heartbeat(pb::HeartbeatRequest { uuid: UUID.into() })
            .await
            .unwrap_err(),
        a.mark_server_as_wiped(pb::MarkServerAsWipedRequest {
            uuid: UUID.into(),
            wipe_mode: 0,
        })
        .await
        .unwrap_err(),
    ] {
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    }
    let e = a
        .update_bmc_info(pb::UpdateBmcInfoRequest {
            uuid: UUID.into(),
            bmc_info: Some(pb::BmcInfo {
                ip: "999.1.1.1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    // Nothing was written: same object counts and revision.
    assert_eq!(
        b.ctl_ok(&["status"])
            .lines()
            .filter(|l| !l.starts_with("uptime"))
            .collect::<Vec<_>>(),
        before
            .lines()
            .filter(|l| !l.starts_with("uptime"))
            .collect::<Vec<_>>()
    );
    // The lifecycle API is behind the admin token; the agent API is not.
    let mut lc = appliance_rpc::lifecycle::lifecycle_client::LifecycleClient::connect(b.endpoint())
        .await
        .unwrap();
    let e = lc
        .events(appliance_rpc::lifecycle::EventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}
