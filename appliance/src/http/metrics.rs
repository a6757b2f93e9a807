//! Prometheus text metrics: a few process-wide counters plus store gauges read at scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::response::IntoResponse;

use super::{HttpState, PROMETHEUS_TEXT};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Process-wide counters; one instance shared by all services.
#[derive(Debug, Default)]
pub struct Metrics {
    pub admin_calls: Counter,
    pub admin_auth_failures: Counter,
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
