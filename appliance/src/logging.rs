//! Logging with `tracing`: human or JSON lines on stderr, or the systemd journal when
//! JOURNAL_STREAM is set (we run under systemd) or it is asked for.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Installs the global subscriber. Returns a warning to log once logging is up, if the
/// requested sink was not available.
pub fn init(format: LogFormat, level: &str) -> Option<String> {
    let mut warning = None;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|e| {
        warning = Some(format!("log level `{level}` is invalid ({e}); using info"));
        EnvFilter::new("info")
    });
    let wants_journal =
        format == LogFormat::Journald || std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter);
    if wants_journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                registry.with(layer).init();
                return warning;
            }
            Err(e) => {
                warning = Some(format!(
                    "journald is not reachable ({e}); logging to stderr"
                ));
            }
        }
    }
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        _ => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
    warning
}
