//! The provisioning appliance as a library; `main.rs` is a thin shell around it.
//! See ARCHITECTURE.md at the repository root for the map of rooms and how data flows.

pub mod agent;
pub mod api;
pub mod app;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod config;
pub mod console;
pub mod ctl;
pub mod http;
pub mod logging;
pub mod metadata;
pub mod model;
pub mod net;
pub mod protocol;
pub mod reconcile;
pub mod store;

/// Formats an error with its whole source chain: "outer: inner: innermost".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
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
