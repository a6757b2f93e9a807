//! `/metrics`: the process-wide [`Metrics`] (admin API counters, open connections, the DHCP,
//! TFTP, rogue DHCP probe, agent API and SideroLink rooms' counter sets) and the console login counters in one registry
//! built at startup ([`registry`]), plus store gauges read at each scrape; rendered as
//! Prometheus text by `crate::metrics` (prometheus-client).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::HttpState;
use super::console::LoginStats;
use crate::api::agent::AgentCounters;
use crate::metrics::{ConstGauge, Counter, Gauge, Info, Labeled, Registry};
use crate::net::dhcp::DhcpCounters;
use crate::net::tftp::TftpCounters;
use crate::siderolink::endpoint::Stats as SideroLinkStats;

/// Process-wide counters; one instance shared by all services.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections on the :8081 listener.
    pub http_connections: Gauge,
    pub admin_calls: Counter,
    pub admin_auth_failures: Counter,
    pub dhcp: Arc<DhcpCounters>,
    pub tftp: Arc<TftpCounters>,
    pub agent: Arc<AgentCounters>,
    pub siderolink: Arc<SideroLinkStats>,
    /// Rogue DHCP detection (`net::dhcp_probe`).
    pub rogue_dhcp: Arc<crate::net::dhcp_probe::RogueWatch>,
    /// The boot timeline's counters and provisioning histograms.
    pub timeline: Arc<crate::timeline::Stats>,
}

/// Every metric of the box that lives in memory, in `/metrics` order.
pub fn registry(m: &Metrics, login: &LoginStats) -> Registry {
    let mut r = Registry::default();
    r.register(
        "appliance_build",
        "Build of the running binary",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    r.register(
        "appliance_http_connections",
        "Open connections on the HTTP + gRPC listener",
        m.http_connections.clone(),
    );
    r.register(
        "appliance_admin_calls",
        "Authenticated admin API calls",
        m.admin_calls.clone(),
    );
    r.register(
        "appliance_admin_auth_failures",
        "Admin API calls refused for a missing or wrong token",
        m.admin_auth_failures.clone(),
    );
    m.dhcp.register(&mut r);
    m.rogue_dhcp.register(&mut r);
    m.tftp.register(&mut r);
    m.agent.register(&mut r);
    login.register(&mut r);
    m.siderolink.register(&mut r);
    m.timeline.register(&mut r);
    r
}

/// The store's gauges, read now: objects by kind and the last committed revision (a gauge,
/// as etcd's current revision is).
fn store_registry(counts: impl IntoIterator<Item = (String, u64)>, revision: u64) -> Registry {
    let mut r = Registry::default();
    r.register(
        "appliance_store_objects",
        "Stored objects by kind",
        Labeled::new(
            "kind",
            counts.into_iter().map(|(k, n)| (k, ConstGauge::new(n))),
        ),
    );
    r.register(
        "appliance_store_revision",
        "Revision of the last committed change",
        ConstGauge::new(revision),
    );
    r
}

pub async fn render(State(state): State<HttpState>) -> impl IntoResponse {
    let store = state.store.clone();
    let gauges = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((store.counts()?, store.revision()?))
    })
    .await
    .ok()
    .and_then(Result::ok);
    let mut out = String::new();
    crate::metrics::encode(&state.registry, &mut out);
    if let Some((counts, revision)) = gauges {
        let counts = counts.into_iter().map(|(k, n)| (k.to_string(), n));
        crate::metrics::encode(&store_registry(counts, revision), &mut out);
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition as it was written by hand before prometheus-client: names, HELP, TYPE,
    /// labels and their order.
    #[test]
    fn exposition_keeps_the_names_and_order() {
        let m = Metrics::default();
        let login = LoginStats::default();
        m.admin_auth_failures.inc_by(3);
        m.dhcp.acks.inc();
        m.tftp.bytes_sent.inc_by(100);
        m.agent.sources_tracked.set(2);
        m.siderolink.peers.set(1);
        m.siderolink.rx_bytes.inc_by(148);
        m.siderolink.spoofed.inc_by(2);
        m.siderolink.connections_refused_per_node.inc_by(3);
        m.siderolink.log_lines_stored.inc_by(5);
        m.timeline.stored.inc_by(7);
        m.timeline.to_registered.observe(3.0);
        crate::metrics::high_water(&login.max_concurrent, 2);
        let mut out = String::new();
        crate::metrics::encode(&registry(&m, &login), &mut out);
        crate::metrics::encode(
            &store_registry([("Server".to_string(), 4), ("Environment".into(), 1)], 9),
            &mut out,
        );
        let version = env!("CARGO_PKG_VERSION");
        let want = format!(
            r#"# HELP appliance_build_info Build of the running binary.
# TYPE appliance_build_info gauge
appliance_build_info{{version="{version}"}} 1
# HELP appliance_http_connections Open connections on the HTTP + gRPC listener.
# TYPE appliance_http_connections gauge
appliance_http_connections 0
# HELP appliance_admin_calls_total Authenticated admin API calls.
# TYPE appliance_admin_calls_total counter
appliance_admin_calls_total 0
# HELP appliance_admin_auth_failures_total Admin API calls refused for a missing or wrong token.
# TYPE appliance_admin_auth_failures_total counter
appliance_admin_auth_failures_total 3
# HELP appliance_dhcp_received_total DHCP datagrams received (ports 67 and 4011).
# TYPE appliance_dhcp_received_total counter
appliance_dhcp_received_total 0
# HELP appliance_dhcp_replies_total DHCP replies by message type.
# TYPE appliance_dhcp_replies_total counter
appliance_dhcp_replies_total{{type="offer"}} 0
appliance_dhcp_replies_total{{type="ack"}} 1
appliance_dhcp_replies_total{{type="nak"}} 0
# HELP appliance_dhcp_dropped_total DHCP requests not answered, by reason.
# TYPE appliance_dhcp_dropped_total counter
appliance_dhcp_dropped_total{{reason="malformed"}} 0
appliance_dhcp_dropped_total{{reason="ignored"}} 0
appliance_dhcp_dropped_total{{reason="no_address"}} 0
appliance_dhcp_dropped_total{{reason="overload"}} 0
appliance_dhcp_dropped_total{{reason="commit_failed"}} 0
# HELP appliance_dhcp_arp_probes_total ARP probes for addresses before they are handed out, by outcome.
# TYPE appliance_dhcp_arp_probes_total counter
appliance_dhcp_arp_probes_total{{result="sent"}} 0
appliance_dhcp_arp_probes_total{{result="in_use"}} 0
# HELP appliance_rogue_dhcp_servers DHCP servers other than the box and dhcp.expected_servers that answered the last probe.
# TYPE appliance_rogue_dhcp_servers gauge
appliance_rogue_dhcp_servers 0
# HELP appliance_dhcp_probes_total Rogue DHCP probe rounds, by result.
# TYPE appliance_dhcp_probes_total counter
appliance_dhcp_probes_total{{result="ok"}} 0
appliance_dhcp_probes_total{{result="failed"}} 0
# HELP appliance_tftp_refused_total TFTP requests answered with an ERROR.
# TYPE appliance_tftp_refused_total counter
appliance_tftp_refused_total 0
# HELP appliance_tftp_transfers_total TFTP transfers by outcome.
# TYPE appliance_tftp_transfers_total counter
appliance_tftp_transfers_total{{result="complete"}} 0
appliance_tftp_transfers_total{{result="failed"}} 0
# HELP appliance_tftp_sent_bytes_total File bytes of completed TFTP transfers.
# TYPE appliance_tftp_sent_bytes_total counter
appliance_tftp_sent_bytes_total 100
# HELP appliance_tftp_paced_total TFTP transfers started paced (every full-speed slot taken).
# TYPE appliance_tftp_paced_total counter
appliance_tftp_paced_total 0
# HELP appliance_agent_registrations_refused_total New servers the agent API refused, by per-address cap.
# TYPE appliance_agent_registrations_refused_total counter
appliance_agent_registrations_refused_total{{reason="rate"}} 0
appliance_agent_registrations_refused_total{{reason="count"}} 0
# HELP appliance_agent_registration_sources Source addresses the agent API's registration caps track.
# TYPE appliance_agent_registration_sources gauge
appliance_agent_registration_sources 2
# HELP appliance_agent_calls_refused_total Agent API calls refused by the boot, BMC, wipe, lease, size and first-contact rules.
# TYPE appliance_agent_calls_refused_total counter
appliance_agent_calls_refused_total{{reason="too_large"}} 0
appliance_agent_calls_refused_total{{reason="no_boot"}} 0
appliance_agent_calls_refused_total{{reason="wrong_source"}} 0
appliance_agent_calls_refused_total{{reason="closed"}} 0
appliance_agent_calls_refused_total{{reason="bmc_not_asked"}} 0
appliance_agent_calls_refused_total{{reason="bmc_replace"}} 0
appliance_agent_calls_refused_total{{reason="wipe_not_told"}} 0
appliance_agent_calls_refused_total{{reason="lease"}} 0
appliance_agent_calls_refused_total{{reason="unsigned"}} 0
appliance_agent_calls_refused_total{{reason="forged"}} 0
appliance_agent_calls_refused_total{{reason="token"}} 0
appliance_agent_calls_refused_total{{reason="key"}} 0
# HELP appliance_console_login_verifications_total Console password verifications run.
# TYPE appliance_console_login_verifications_total counter
appliance_console_login_verifications_total 0
# HELP appliance_console_login_verifications_max_concurrent Most console password verifications that ran at once.
# TYPE appliance_console_login_verifications_max_concurrent gauge
appliance_console_login_verifications_max_concurrent 2
# HELP appliance_console_login_waited_total Console logins that waited for a password verification slot.
# TYPE appliance_console_login_waited_total counter
appliance_console_login_waited_total 0
# HELP appliance_console_login_refused_total Console logins refused before their secret was looked at, by reason.
# TYPE appliance_console_login_refused_total counter
appliance_console_login_refused_total{{reason="client"}} 0
appliance_console_login_refused_total{{reason="global"}} 0
appliance_console_login_refused_total{{reason="busy"}} 0
# HELP appliance_siderolink_peers SideroLink WireGuard peers configured (bindings with an overlay address and key).
# TYPE appliance_siderolink_peers gauge
appliance_siderolink_peers 1
# HELP appliance_siderolink_handshakes_total SideroLink handshake initiations of peers answered.
# TYPE appliance_siderolink_handshakes_total counter
appliance_siderolink_handshakes_total 0
# HELP appliance_siderolink_bytes_total SideroLink WireGuard UDP bytes by direction.
# TYPE appliance_siderolink_bytes_total counter
appliance_siderolink_bytes_total{{direction="rx"}} 148
appliance_siderolink_bytes_total{{direction="tx"}} 0
# HELP appliance_siderolink_dropped_packets_total SideroLink datagrams or inner packets dropped, by reason (cookie: answered with a cookie under handshake load).
# TYPE appliance_siderolink_dropped_packets_total counter
appliance_siderolink_dropped_packets_total{{reason="unknown_key"}} 0
appliance_siderolink_dropped_packets_total{{reason="unknown_index"}} 0
appliance_siderolink_dropped_packets_total{{reason="invalid"}} 0
appliance_siderolink_dropped_packets_total{{reason="rejected"}} 0
appliance_siderolink_dropped_packets_total{{reason="spoofed_source"}} 2
appliance_siderolink_dropped_packets_total{{reason="cookie"}} 0
# HELP appliance_siderolink_connections_refused_total SideroLink overlay connections (logs, events) refused, by reason (node_limit: the node held max_connections_per_node).
# TYPE appliance_siderolink_connections_refused_total counter
appliance_siderolink_connections_refused_total{{reason="node_limit"}} 3
# HELP appliance_siderolink_log_lines_total Talos log lines: decoded, refused by the decoder, stored, lost before storage.
# TYPE appliance_siderolink_log_lines_total counter
appliance_siderolink_log_lines_total{{result="decoded"}} 0
appliance_siderolink_log_lines_total{{result="refused"}} 0
appliance_siderolink_log_lines_total{{result="stored"}} 5
appliance_siderolink_log_lines_total{{result="dropped"}} 0
# HELP appliance_timeline_events_total Boot timeline events: stored, dropped (queue full or store failure).
# TYPE appliance_timeline_events_total counter
appliance_timeline_events_total{{result="stored"}} 7
appliance_timeline_events_total{{result="dropped"}} 0
# HELP appliance_time_to_registered_seconds From the start of a server's PXE boot to its agent's registration.
# TYPE appliance_time_to_registered_seconds histogram
appliance_time_to_registered_seconds_bucket{{le="1"}} 0
appliance_time_to_registered_seconds_bucket{{le="2"}} 0
appliance_time_to_registered_seconds_bucket{{le="4"}} 1
appliance_time_to_registered_seconds_bucket{{le="8"}} 1
appliance_time_to_registered_seconds_bucket{{le="16"}} 1
appliance_time_to_registered_seconds_bucket{{le="32"}} 1
appliance_time_to_registered_seconds_bucket{{le="64"}} 1
appliance_time_to_registered_seconds_bucket{{le="128"}} 1
appliance_time_to_registered_seconds_bucket{{le="256"}} 1
appliance_time_to_registered_seconds_bucket{{le="512"}} 1
appliance_time_to_registered_seconds_bucket{{le="1024"}} 1
appliance_time_to_registered_seconds_bucket{{le="2048"}} 1
appliance_time_to_registered_seconds_bucket{{le="4096"}} 1
appliance_time_to_registered_seconds_bucket{{le="+Inf"}} 1
appliance_time_to_registered_seconds_sum 3.0
appliance_time_to_registered_seconds_count 1
# HELP appliance_time_to_installed_seconds From the start of a server's install PXE boot to Talos reporting the install done.
# TYPE appliance_time_to_installed_seconds histogram
appliance_time_to_installed_seconds_bucket{{le="1"}} 0
appliance_time_to_installed_seconds_bucket{{le="2"}} 0
appliance_time_to_installed_seconds_bucket{{le="4"}} 0
appliance_time_to_installed_seconds_bucket{{le="8"}} 0
appliance_time_to_installed_seconds_bucket{{le="16"}} 0
appliance_time_to_installed_seconds_bucket{{le="32"}} 0
appliance_time_to_installed_seconds_bucket{{le="64"}} 0
appliance_time_to_installed_seconds_bucket{{le="128"}} 0
appliance_time_to_installed_seconds_bucket{{le="256"}} 0
appliance_time_to_installed_seconds_bucket{{le="512"}} 0
appliance_time_to_installed_seconds_bucket{{le="1024"}} 0
appliance_time_to_installed_seconds_bucket{{le="2048"}} 0
appliance_time_to_installed_seconds_bucket{{le="4096"}} 0
appliance_time_to_installed_seconds_bucket{{le="+Inf"}} 0
appliance_time_to_installed_seconds_sum 0.0
appliance_time_to_installed_seconds_count 0
# HELP appliance_store_objects Stored objects by kind.
# TYPE appliance_store_objects gauge
appliance_store_objects{{kind="Server"}} 4
appliance_store_objects{{kind="Environment"}} 1
# HELP appliance_store_revision Revision of the last committed change.
# TYPE appliance_store_revision gauge
appliance_store_revision 9
"#
        );
        assert_eq!(out, want);
    }
}
