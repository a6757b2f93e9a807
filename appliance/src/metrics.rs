//! Metric types for every room, a leaf below `net/`, `api/` and `http/` (it imports nothing
//! of this crate): rooms own their counters and register them, `http::metrics` serves the
//! one registry as Prometheus text (format 0.0.4).
//!
//! Counters, gauges, histograms, the registry and the text encoding are `prometheus-client`'s.
//! Kept by hand, because the crate lacks it:
//! - [`Labeled`]: a family with a fixed label set known at construction, encoded in that
//!   order with every sample present from the start. The crate's `Family` is a hash map:
//!   samples appear only once touched and in hash order.
//! - [`Held`]: one unit of a gauge for as long as a value lives (open connections).
//! - [`high_water`]: a gauge raised to a value if lower (the crate's gauge only sets).

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::metrics::info::Info;
pub use prometheus_client::registry::{Registry, Unit};

/// A monotonic count (rendered `<name>_total`).
pub type Counter = prometheus_client::metrics::counter::Counter<u64, AtomicU64>;
/// A value that goes up and down.
pub type Gauge = prometheus_client::metrics::gauge::Gauge<u64, AtomicU64>;

/// Label pairs of one sample: `[("reason", "rate")]`.
pub type Labels = Vec<(&'static str, String)>;

/// Buckets for durations in seconds, 0.5 ms to ~33 s by doubling (a histogram of request,
/// commit or handshake latency): `Histogram::new(seconds_buckets())`.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 17)
}

/// Buckets for provisioning times in seconds, 1 s to ~68 min by doubling (time to
/// registered, time to installed).
pub fn boot_seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 2.0, 13)
}

/// A family of metrics under one name with a fixed, ordered label set: one sample per
/// label set, in the given order.
#[derive(Debug, Clone)]
pub struct Labeled<M> {
    members: Vec<(Labels, M)>,
}

impl<M> Labeled<M> {
    /// `label` is the label's name, `members` pairs its values with their metrics.
    pub fn new<V: ToString>(
        label: &'static str,
        members: impl IntoIterator<Item = (V, M)>,
    ) -> Self {
        Labeled {
            members: members
                .into_iter()
                .map(|(value, m)| (vec![(label, value.to_string())], m))
                .collect(),
        }
    }
}

impl<M: EncodeMetric + Debug + Send + Sync + 'static> EncodeMetric for Labeled<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.members {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.members
            .first()
            .map_or(MetricType::Unknown, |(_, m)| m.metric_type())
    }
}

/// Counts one unit of a gauge until dropped.
#[derive(Debug)]
pub struct Held(Gauge);

impl Held {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Raises `gauge` to `n` if it is lower (the most that ever ran at once).
pub fn high_water(gauge: &Gauge, n: u64) {
    gauge.inner().fetch_max(n, Ordering::Relaxed);
}

/// The registry as Prometheus text (format 0.0.4; see [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(out, registry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_family_keeps_its_order_and_shows_untouched_samples() {
        let (a, b, c) = (Counter::default(), Counter::default(), Counter::default());
        let mut r = Registry::default();
        r.register(
            "x_dropped",
            "Dropped, by reason",
            Labeled::new("reason", [("zeta", a.clone()), ("alpha", b), ("mid", c)]),
        );
        a.inc_by(3);
        let mut out = String::new();
        encode(&r, &mut out);
        assert_eq!(
            out,
            "# HELP x_dropped_total Dropped, by reason.\n# TYPE x_dropped_total counter\n\
             x_dropped_total{reason=\"zeta\"} 3\nx_dropped_total{reason=\"alpha\"} 0\n\
             x_dropped_total{reason=\"mid\"} 0\n"
        );
    }

    #[test]
    fn held_gauge_counts_while_alive_and_high_water_only_rises() {
        let g = Gauge::default();
        let one = Held::new(&g);
        let two = Held::new(&g);
        assert_eq!(g.get(), 2);
        drop(one);
        assert_eq!(g.get(), 1);
        drop(two);
        assert_eq!(g.get(), 0);
        high_water(&g, 5);
        high_water(&g, 3);
        assert_eq!(g.get(), 5);
    }

    #[test]
    fn histogram_renders_buckets_sum_and_count() {
        let h = Histogram::new(seconds_buckets());
        let mut r = Registry::default();
        r.register_with_unit("x_commit", "Commit time", Unit::Seconds, h.clone());
        h.observe(0.0007);
        h.observe(40.0);
        let mut out = String::new();
        encode(&r, &mut out);
        assert!(out.starts_with(
            "# HELP x_commit_seconds Commit time.\n# TYPE x_commit_seconds histogram\n"
        ));
        assert!(
            out.contains("x_commit_seconds_bucket{le=\"0.0005\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_commit_seconds_bucket{le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_commit_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_commit_seconds_count 2\n"), "{out}");
        assert!(out.contains("x_commit_seconds_sum 40.0007\n"), "{out}");
    }
}
