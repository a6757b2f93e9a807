//! Prometheus text metrics: process-wide counters (admin API, the DHCP, TFTP and agent API
//! rooms' own counter sets, console logins) plus store gauges read at scrape.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::response::IntoResponse;

use super::{HttpState, PROMETHEUS_TEXT};
use crate::api::agent::AgentCounters;
use crate::net::dhcp::DhcpCounters;
use crate::net::tftp::TftpCounters;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Raises the value to `n` if it is lower (a high-water mark).
    pub fn max(&self, n: u64) {
        self.0.fetch_max(n, Ordering::Relaxed);
    }
}

/// A value that goes up and down (open connections).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Counts one more until the guard drops.
    pub fn hold(self: &Arc<Self>) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self.clone())
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One unit of a [`Gauge`], given back on drop.
#[derive(Debug)]
pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Process-wide counters; one instance shared by all services.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections on the :8081 listener.
    pub http_connections: Arc<Gauge>,
    pub admin_calls: Counter,
    pub admin_auth_failures: Counter,
    pub dhcp: Arc<DhcpCounters>,
    pub tftp: Arc<TftpCounters>,
    pub agent: Arc<AgentCounters>,
}

/// One Prometheus metric family: HELP, TYPE and one sample per label set.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

pub async fn render(State(state): State<HttpState>) -> impl IntoResponse {
    let store = state.store.clone();
    let gauges = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((store.counts()?, store.revision()?))
    })
    .await
    .ok()
    .and_then(Result::ok);
    let m = &state.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP appliance_build_info Build of the running binary.\n# TYPE appliance_build_info gauge\nappliance_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "appliance_http_connections",
        "gauge",
        "Open connections on the HTTP + gRPC listener.",
        &[("", m.http_connections.get())],
    );
    let _ = writeln!(
        out,
        "# HELP appliance_admin_calls_total Authenticated admin API calls.\n# TYPE appliance_admin_calls_total counter\nappliance_admin_calls_total {}",
        m.admin_calls.get()
    );
    let _ = writeln!(
        out,
        "# HELP appliance_admin_auth_failures_total Admin API calls refused for a missing or wrong token.\n# TYPE appliance_admin_auth_failures_total counter\nappliance_admin_auth_failures_total {}",
        m.admin_auth_failures.get()
    );
    let d = &m.dhcp;
    family(
        &mut out,
        "appliance_dhcp_received_total",
        "counter",
        "DHCP datagrams received (ports 67 and 4011).",
        &[("", d.received.get())],
    );
    family(
        &mut out,
        "appliance_dhcp_replies_total",
        "counter",
        "DHCP replies by message type.",
        &[
            ("type=\"offer\"", d.offers.get()),
            ("type=\"ack\"", d.acks.get()),
            ("type=\"nak\"", d.naks.get()),
        ],
    );
    family(
        &mut out,
        "appliance_dhcp_dropped_total",
        "counter",
        "DHCP requests not answered, by reason.",
        &[
            ("reason=\"malformed\"", d.dropped_malformed.get()),
            ("reason=\"ignored\"", d.dropped_ignored.get()),
            ("reason=\"no_address\"", d.dropped_no_address.get()),
            ("reason=\"overload\"", d.dropped_overload.get()),
            ("reason=\"commit_failed\"", d.commit_failed.get()),
        ],
    );
    let t = &m.tftp;
    family(
        &mut out,
        "appliance_tftp_refused_total",
        "counter",
        "TFTP requests answered with an ERROR.",
        &[("", t.refused.get())],
    );
    family(
        &mut out,
        "appliance_tftp_transfers_total",
        "counter",
        "TFTP transfers by outcome.",
        &[
            ("result=\"complete\"", t.completed.get()),
            ("result=\"failed\"", t.failed.get()),
        ],
    );
    family(
        &mut out,
        "appliance_tftp_sent_bytes_total",
        "counter",
        "File bytes of completed TFTP transfers.",
        &[("", t.bytes_sent.get())],
    );
    let a = &m.agent;
    family(
        &mut out,
        "appliance_agent_registrations_refused_total",
        "counter",
        "New servers the agent API refused, by per-address cap.",
        &[
            ("reason=\"rate\"", a.registrations_rate.get()),
            ("reason=\"count\"", a.registrations_count.get()),
        ],
    );
    family(
        &mut out,
        "appliance_agent_registration_sources",
        "gauge",
        "Source addresses the agent API's registration caps track.",
        &[("", a.sources_tracked.load(Ordering::Relaxed))],
    );
    family(
        &mut out,
        "appliance_agent_calls_refused_total",
        "counter",
        "Agent API calls refused by the boot, BMC, wipe, lease and size rules.",
        &[
            ("reason=\"too_large\"", a.too_large.get()),
            ("reason=\"no_boot\"", a.no_boot.get()),
            ("reason=\"wrong_source\"", a.wrong_source.get()),
            ("reason=\"closed\"", a.closed.get()),
            ("reason=\"bmc_not_asked\"", a.bmc_not_asked.get()),
            ("reason=\"bmc_replace\"", a.bmc_replace.get()),
            ("reason=\"wipe_not_told\"", a.wipe_not_told.get()),
            ("reason=\"lease\"", a.lease.get()),
        ],
    );
    let l = state.console.login_stats();
    family(
        &mut out,
        "appliance_console_login_verifications_total",
        "counter",
        "Console password verifications run.",
        &[("", l.verifications.get())],
    );
    family(
        &mut out,
        "appliance_console_login_verifications_max_concurrent",
        "gauge",
        "Most console password verifications that ran at once.",
        &[("", l.max_concurrent.get())],
    );
    family(
        &mut out,
        "appliance_console_login_waited_total",
        "counter",
        "Console logins that waited for a password verification slot.",
        &[("", l.waited.get())],
    );
    family(
        &mut out,
        "appliance_console_login_refused_total",
        "counter",
        "Console logins refused before their secret was looked at, by reason.",
        &[
            ("reason=\"client\"", l.refused_client.get()),
            ("reason=\"global\"", l.refused_global.get()),
            ("reason=\"busy\"", l.refused_busy.get()),
        ],
    );
    if let Some((counts, revision)) = gauges {
        let _ = writeln!(
            out,
            "# HELP appliance_store_objects Stored objects by kind.\n# TYPE appliance_store_objects gauge"
        );
        for (kind, n) in counts {
            let _ = writeln!(out, "appliance_store_objects{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP appliance_store_revision Revision of the last committed change.\n# TYPE appliance_store_revision counter\nappliance_store_revision {revision}"
        );
    }
    ([PROMETHEUS_TEXT], out)
}
