//! The provisioning appliance as a library; `main.rs` is a thin shell around it.
//! See ARCHITECTURE.md at the repository root for the map of rooms and how data flows.

pub mod agent;
pub mod api;
pub mod app;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod ctl;
pub mod http;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod net;
pub mod protocol;
pub mod reconcile;
pub mod secrets;
pub mod siderolink;
pub mod site;
pub mod store;
pub mod timeline;
pub mod update;

/// Writes command output to stdout. Unlike `print!`, a failed write is returned instead of
/// panicking, so a command whose reader went away (`appliance ctl status | head -4`) can end
/// quietly; see [`reader_gone`].
pub fn write_stdout(text: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_fmt(text)
}

/// Whether a failed stdout write means only that its reader went away (a closed pipe):
/// the command then exits with status 0 and prints nothing.
pub fn reader_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Formats an error with its whole source chain: "outer: inner: innermost".
///
/// A cause whose text is already contained in the previous link's text is left out: some
/// wrappers display their source as well as returning it (tonic's `ConnectError` around
/// hyper-util's "tcp connect error"), which would otherwise print that cause twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut previous = e.to_string();
    let mut out = previous.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !previous.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
        source = s.source();
    }
    out
}

/// Installs rustls' `ring` crypto provider as the process default (idempotent; a provider
/// already installed is kept). Call before building any reqwest/rustls client: the binary
/// links no OpenSSL and no aws-lc.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    /// An error with a fixed text and an optional source.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(texts: &[&'static str]) -> E {
        texts
            .iter()
            .rev()
            .fold(None, |inner, t| Some(E(t, inner.map(Box::new))))
            .expect("at least one link")
    }

    #[test]
    fn every_link_once_in_order() {
        let e = chain(&["cannot reach", "transport error", "refused"]);
        assert_eq!(error_chain(&e), "cannot reach: transport error: refused");
    }

    #[test]
    fn a_cause_repeating_its_wrapper_is_printed_once() {
        // tonic's ConnectError displays its source and also returns it.
        let e = chain(&[
            "cannot reach",
            "transport error",
            "tcp connect error",
            "tcp connect error",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            error_chain(&e),
            "cannot reach: transport error: tcp connect error: Connection refused (os error 111)"
        );
        // A wrapper that already printed its source's text ("outer: inner").
        let e = chain(&["read config: bad key", "bad key"]);
        assert_eq!(error_chain(&e), "read config: bad key");
    }
}
