//! The synthetic agent: speaks the agent gRPC API (`api.Agent`) exactly as a PXE-booted
//! agent does (CreateServer with a realistic hardware inventory, Heartbeat, NextAction,
//! ReportWipeProgress, MarkServerAsWiped), every call from one source address as the box
//! requires (`connect`: the kernel's choice, 127.0.0.1 on loopback; `connect_from`: a
//! given 127/8 address, as `source(i)` gives each synthetic server its own). Shared by the
//! load generator (`examples/agent_load.rs`, via `#[path]`) and the integration/browser
//! tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb, AgentAction};
use tonic::transport::{Channel, Endpoint};

/// The UUID (Server name) of synthetic server `i`.
pub fn uuid(i: usize) -> String {
    format!(
        "4c4c4544-{:04x}-{:04x}-8000-{:012x}",
        (i >> 16) & 0xffff,
        i & 0xffff,
        i
    )
}

/// A loopback source address of its own for synthetic server `i` (127.16.0.0 + i), so a
/// crowd of synthetic servers looks like a crowd of machines (the box caps registrations
/// per address).
pub fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f10_0000u32 + (i as u32 & 0x000f_ffff)))
}

/// A channel to `endpoint` whose TCP connections leave from `source`.
pub async fn channel_from(
    endpoint: &str,
    source: IpAddr,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(endpoint.to_string())?
        .local_address(Some(source))
        .connect()
        .await
}

/// A Dell R640-like inventory for server `i` (1–4 CPUs, 8 DIMMs, 2 SSDs, 2 NICs).
pub fn hardware(i: usize) -> pb::HardwareInformation {
    let cpus = 1 + (i % 4) as u32;
    pb::HardwareInformation {
        system: Some(pb::SystemInformation {
            uuid: uuid(i),
            manufacturer: "Dell Inc.".into(),
            product_name: "PowerEdge R640".into(),
            serial_number: format!("SN{i:08}"),
            sku_number: "SKU=NotProvided".into(),
            family: "PowerEdge".into(),
            ..Default::default()
        }),
        compute: Some(pb::ComputeInformation {
            total_core_count: cpus * 16,
            total_thread_count: cpus * 32,
            processor_count: cpus,
            processors: (0..cpus)
                .map(|_| pb::Processor {
                    manufacturer: "Intel".into(),
                    product_name: "Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz".into(),
                    speed: 2100,
                    core_count: 16,
                    thread_count: 32,
                    ..Default::default()
                })
                .collect(),
        }),
        memory: Some(pb::MemoryInformation {
            total_size: 262_144,
            module_count: 8,
            modules: (0..8)
                .map(|m| pb::MemoryModule {
                    manufacturer: "Samsung".into(),
                    product_name: "M393A4K40CB2-CTD".into(),
                    serial_number: format!("{i:06}{m:02}"),
                    r#type: "DDR4".into(),
                    size: 32_768,
                    speed: 2666,
                })
                .collect(),
        }),
        storage: Some(pb::StorageInformation {
            total_size: 2 * 960_197_124_096,
            device_count: 2,
            devices: (0..2)
                .map(|d| pb::StorageDevice {
                    r#type: pb::StorageType::Ssd as i32,
                    size: 960_197_124_096,
                    model: "SAMSUNG MZ7LH960".into(),
                    serial: format!("S4{i:08}{d}"),
                    name: format!("sd{}", (b'a' + d) as char),
                    device_name: format!("/dev/sd{}", (b'a' + d) as char),
                    wwid: format!("naa.5002538e{i:08x}{d}"),
                    ..Default::default()
                })
                .collect(),
        }),
        network: Some(pb::NetworkInformation {
            interface_count: 2,
            interfaces: (0..2u32)
                .map(|n| pb::NetworkInterface {
                    index: n + 2,
                    name: format!("eno{}", n + 1),
                    flags: "up|broadcast|multicast".into(),
                    mtu: 1500,
                    mac: format!(
                        "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                        (i >> 16) & 0xff,
                        (i >> 8) & 0xff,
                        i & 0xff,
                        n
                    ),
                    addresses: vec![],
                })
                .collect(),
        }),
        // No firmware part, as a Sidero agent reports (the extension stays optional).
        firmware: None,
    }
}

/// One synthetic agent on server `i`.
pub struct SyntheticAgent {
    pub client: AgentClient<Channel>,
    pub index: usize,
    pub uuid: String,
}

impl SyntheticAgent {
    pub async fn connect(endpoint: &str, index: usize) -> Result<Self, tonic::transport::Error> {
        Ok(SyntheticAgent {
            client: AgentClient::connect(endpoint.to_string()).await?,
            index,
            uuid: uuid(index),
        })
    }

    /// Like `connect`, with every call leaving from `source`.
    pub async fn connect_from(
        endpoint: &str,
        index: usize,
        source: IpAddr,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(SyntheticAgent {
            client: AgentClient::new(channel_from(endpoint, source).await?),
            index,
            uuid: uuid(index),
        })
    }

    /// CreateServer with the hardware inventory, as the agent does first after PXE boot.
    pub async fn register(
        &mut self,
        hostname: &str,
    ) -> Result<pb::CreateServerResponse, tonic::Status> {
        self.client
            .create_server(pb::CreateServerRequest {
                hardware: Some(hardware(self.index)),
                hostname: hostname.to_string(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// ReconcileServerAddresses, as the agent does right after CreateServer.
    pub async fn report_address(&mut self, ip: &str) -> Result<(), tonic::Status> {
        self.client
            .reconcile_server_addresses(pb::ReconcileServerAddressesRequest {
                uuid: self.uuid.clone(),
                address: vec![pb::Address {
                    r#type: "InternalIP".into(),
                    address: ip.to_string(),
                }],
            })
            .await
            .map(|_| ())
    }

    pub async fn heartbeat(&mut self) -> Result<(), tonic::Status> {
        self.client
            .heartbeat(pb::HeartbeatRequest {
                uuid: self.uuid.clone(),
            })
            .await
            .map(|_| ())
    }

    pub async fn next_action(&mut self) -> Result<pb::NextActionResponse, tonic::Status> {
        self.client
            .next_action(pb::NextActionRequest {
                uuid: self.uuid.clone(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// What a real agent does when NextAction says WIPE: report progress per disk, then
    /// MarkServerAsWiped. Returns the NextAction it acted on (an error if it was not WIPE).
    pub async fn wipe_if_told(&mut self) -> Result<pb::NextActionResponse, tonic::Status> {
        let n = self.next_action().await?;
        if n.action != AgentAction::Wipe as i32 {
            return Err(tonic::Status::failed_precondition(format!(
                "synthetic agent: NextAction said {:?} ({}), not WIPE",
                AgentAction::try_from(n.action),
                n.reason
            )));
        }
        let disks = hardware(self.index)
            .storage
            .map(|s| s.devices)
            .unwrap_or_default();
        for done in [false, true] {
            self.heartbeat().await?;
            self.client
                .report_wipe_progress(pb::ReportWipeProgressRequest {
                    uuid: self.uuid.clone(),
                    disks: disks
                        .iter()
                        .map(|d| pb::DiskProgress {
                            device_name: d.device_name.clone(),
                            bytes_done: if done { 1 << 20 } else { 0 },
                            bytes_total: 1 << 20,
                            method: "fast".into(),
                            done,
                        })
                        .collect(),
                })
                .await?;
        }
        self.client
            .mark_server_as_wiped(pb::MarkServerAsWipedRequest {
                uuid: self.uuid.clone(),
                wipe_mode: n.wipe_mode,
            })
            .await?;
        Ok(n)
    }
}
