//! SideroLink, the box's side of the overlay that installed nodes join (Sidero's
//! siderolink-manager, log-receiver and events-manager in one room): the box identity
//! (`identity`, sealed in redb), the Provision API on :8081 (`provision`), the peer set
//! following ServerBindings (`peers`), the userspace WireGuard endpoint (`endpoint`) with
//! its smoltcp overlay (`overlay`, `stream`) carrying the TCP 4001 log receiver and the
//! gRPC 4002 event sink (`sink`), and the log book (`logbook`) keeping each server's lines
//! in a bounded ring in the store, and the reset without BMC (`reset`: the Talos machine
//! API over the overlay with an operator's talosconfig, `talosconfig`). Pure parts (prefix derivation, address allocation,
//! log-line decoding, event mapping) live in `crate::protocol::siderolink`.
//!
//! [`start`] builds it all for `app.rs`.

pub mod endpoint;
pub mod identity;
pub mod logbook;
pub mod overlay;
pub mod payload;
pub mod peers;
pub mod provision;
pub mod reset;
pub mod screen;
pub mod sink;
pub mod stream;
pub mod talosconfig;

use std::net::Ipv6Addr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::SideroLinkConfig;
use crate::protocol::siderolink::events::IpPrefix;
use crate::reconcile::Lifecycle;

/// Why SideroLink did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("SideroLink identity")]
    Identity(#[from] identity::IdentityError),
    #[error("cannot listen on udp {addr} (SideroLink WireGuard)")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running SideroLink: the Provision service for the :8081 router, the overlay's
/// server address (for kernel args), the endpoint's counters and decoded logs, and its
/// tasks (they stop on the shutdown signal).
/// A task of the room, not yet spawned.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub struct Started {
    pub provision: provision::ProvisionApi,
    pub server_address: Ipv6Addr,
    pub stats: Arc<endpoint::Stats>,
    pub logs: tokio::sync::broadcast::Sender<Arc<endpoint::NodeLog>>,
    /// The reset without BMC, for the lifecycle's power hook (`reconcile::power`).
    pub reset: reset::TalosReset,
    /// The room's long-running tasks, for `app.rs` to spawn and join; each ends on the
    /// shutdown signal.
    pub tasks: Vec<(&'static str, Task)>,
}

/// "ip:port" nodes send WireGuard to: the configured endpoint, else the host of
/// `advertise` ("host:port" of :8081), else `interface_addr`, with the listen port.
pub fn advertised_endpoint(
    config: &SideroLinkConfig,
    advertise: Option<&str>,
    interface_addr: Option<std::net::Ipv4Addr>,
) -> String {
    if let Some(e) = config.endpoint.as_ref().filter(|e| !e.is_empty()) {
        return e.clone();
    }
    let port = config.listen.port();
    if let Some(a) = advertise {
        let host = a.rsplit_once(':').map_or(a, |(h, _)| h);
        return format!("{host}:{port}");
    }
    match interface_addr {
        Some(ip) => format!("{ip}:{port}"),
        None if !config.listen.ip().is_unspecified() => config.listen.to_string(),
        None => format!("127.0.0.1:{port}"),
    }
}

/// Loads (or creates) the identity, binds the WireGuard socket and returns the peer
/// follower, the endpoint and the event sink's gRPC server as tasks for `app.rs` to spawn.
/// Decoded log lines go to `logbook`; the endpoint counts into `stats` (`/metrics`); first
/// handshakes and installations go to the boot `timeline`.
pub async fn start(
    config: &SideroLinkConfig,
    endpoint_addr: String,
    lifecycle: Lifecycle,
    logbook: logbook::LogBook,
    stats: Arc<endpoint::Stats>,
    timeline: crate::timeline::Recorder,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, StartError> {
    let store = lifecycle.store().clone();
    let s = store.clone();
    let identity = tokio::task::spawn_blocking(move || identity::load_or_create(&s))
        .await
        .expect("identity task")?;
    let identity = Arc::new(identity);
    let prefix = identity.prefix();
    let socket = tokio::net::UdpSocket::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut endpoint = endpoint::Endpoint::new(
        socket,
        identity.clone(),
        &endpoint::EndpointConfig {
            max_log_line: config.max_log_line,
            max_log_connections: config.max_connections,
            max_connections_per_node: config.max_connections_per_node,
            discard_port: None,
            handshake_limit: endpoint::HANDSHAKE_LIMIT,
        },
        u64::from_le_bytes(seed),
        stats.clone(),
    );
    endpoint.record_to(timeline.clone());
    let logs = endpoint.log_sender();
    let reset = reset::TalosReset::new(
        store.clone(),
        endpoint.connector(),
        prefix,
        reset::ResetSettings {
            attempts: config.reset_attempts.max(1),
            backoff: std::time::Duration::from_secs(config.reset_backoff_secs),
            timeout: std::time::Duration::from_secs(config.reset_timeout_secs.max(1)),
        },
    );
    let log_lines = endpoint.subscribe_logs();
    let event_conns = endpoint
        .take_event_connections()
        .expect("fresh endpoint has its event connections");
    let (peers_tx, peers_rx) = watch::channel(Arc::new(Vec::new()));
    let negative: Vec<IpPrefix> = config
        .negative_address_filter
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let sink = sink::EventSink::new(lifecycle, peers_rx.clone(), negative).recording(timeline);
    let mut grpc_stop = shutdown.clone();
    let tasks = vec![
        (
            "siderolink-peers",
            Box::pin(peers::follow(
                store.clone(),
                prefix,
                peers_tx,
                shutdown.clone(),
            )) as Task,
        ),
        (
            "siderolink-events",
            Box::pin(async move {
                let served = tonic::transport::Server::builder()
                    .add_service(
                        appliance_rpc::events::event_sink_service_server::EventSinkServiceServer::new(sink),
                    )
                    .serve_with_incoming_shutdown(event_conns, async move {
                        let _ = grpc_stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %crate::error_chain(&e), "SideroLink event sink stopped");
                }
            }),
        ),
        (
            "siderolink-logs",
            Box::pin(logbook.record(log_lines, shutdown.clone())) as Task,
        ),
        (
            "siderolink-wireguard",
            Box::pin(endpoint.run(peers_rx, shutdown)),
        ),
    ];
    tracing::info!(
        prefix = %prefix,
        listen = %config.listen,
        endpoint = %endpoint_addr,
        public_key = %identity.public_key_base64(),
        "SideroLink up"
    );
    Ok(Started {
        provision: provision::ProvisionApi::new(store, identity, endpoint_addr),
        server_address: prefix.server_address(),
        stats,
        logs,
        reset,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_falls_back_in_order() {
        let mut c = crate::config::Config::default().siderolink;
        assert_eq!(
            advertised_endpoint(&c, Some("10.1.1.1:8081"), Some([10, 2, 2, 2].into())),
            "10.1.1.1:51821"
        );
        assert_eq!(
            advertised_endpoint(&c, None, Some([10, 2, 2, 2].into())),
            "10.2.2.2:51821"
        );
        assert_eq!(advertised_endpoint(&c, None, None), "127.0.0.1:51821");
        c.endpoint = Some("192.0.2.9:5000".into());
        assert_eq!(
            advertised_endpoint(&c, Some("10.1.1.1:8081"), None),
            "192.0.2.9:5000"
        );
    }
}
