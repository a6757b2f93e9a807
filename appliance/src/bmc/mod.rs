//! Power control and boot-device selection of servers through their BMC: the [`Bmc`] trait
//! and its real implementations, IPMI over LAN / RMCP+ ([`ipmi::IpmiBmc`], on the sans-IO
//! core in `protocol::ipmi`) and Redfish over HTTPS ([`redfish::RedfishBmc`], reqwest +
//! rustls), the gate that bounds concurrency and time of every call ([`gate::BmcGate`]),
//! and automatic BMC user setup ([`setup`]).
//!
//! The trait is async (boxed futures so servers with different BMC kinds share one
//! `Arc<dyn Bmc>` type). Every call has a timeout; a dead, slow or lying BMC yields a
//! [`BmcError`] and never blocks calls to other BMCs.
//!
//! May touch: the network (UDP to BMCs, HTTPS to Redfish), `store` (credentials, pinned
//! certificates) through its typed API. Never logs credentials.

pub mod gate;
pub mod ipmi;
pub mod power;
pub mod redfish;
pub mod service;
pub mod setup;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Power state as read from the BMC; shown on the Server as `power: on|off|unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    Unknown,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }
}

/// A power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    /// Hard power off.
    Off,
    /// Power cycle; a server that is off is powered on instead (IPMI's cycle does nothing
    /// on a powered-off chassis).
    Cycle,
    /// Hard reset (no power interruption).
    Reset,
    /// Graceful (ACPI) shutdown.
    Soft,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
            PowerAction::Soft => "soft",
        }
    }
}

/// Which device the next (or every) boot should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    Pxe,
    Disk,
}

/// Firmware mode of the boot override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Uefi,
    Bios,
}

/// A boot-device override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    pub target: BootTarget,
    pub firmware: Firmware,
    /// All future boots rather than only the next one.
    pub persistent: bool,
}

/// A user name and password for a BMC. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a BMC call failed. Every variant names the BMC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("BMC {endpoint}: no valid reply within {after:?}{}", last_drop.as_ref().map(|d| format!(" (dropped invalid replies; last: {d})")).unwrap_or_default())]
    Timeout {
        endpoint: String,
        after: Duration,
        last_drop: Option<String>,
    },
    #[error("BMC {endpoint}: unreachable")]
    Unreachable {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BMC {endpoint}: login failed: {message}")]
    Auth { endpoint: String, message: String },
    #[error("BMC {endpoint}: protocol error: {message}")]
    Protocol { endpoint: String, message: String },
    #[error("BMC {endpoint}: {message}")]
    Refused { endpoint: String, message: String },
    #[error(
        "BMC {endpoint}: TLS certificate changed since it was pinned (pinned sha256 {pinned}, now {seen}); if the BMC was re-keyed on purpose, clear the pin"
    )]
    CertificateChanged {
        endpoint: String,
        pinned: String,
        seen: String,
    },
    #[error("BMC {endpoint}: {message}")]
    Config { endpoint: String, message: String },
    #[error("BMC {endpoint}: busy: too many calls queued")]
    Busy { endpoint: String },
}

impl BmcError {
    /// The endpoint the error is about.
    pub fn endpoint(&self) -> &str {
        match self {
            BmcError::Timeout { endpoint, .. }
            | BmcError::Unreachable { endpoint, .. }
            | BmcError::Auth { endpoint, .. }
            | BmcError::Protocol { endpoint, .. }
            | BmcError::Refused { endpoint, .. }
            | BmcError::CertificateChanged { endpoint, .. }
            | BmcError::Config { endpoint, .. }
            | BmcError::Busy { endpoint } => endpoint,
        }
    }
}

/// A boxed future returned by [`Bmc`] methods.
pub type BmcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BmcError>> + Send + 'a>>;

/// One server's BMC. Implementations bound every network wait by their own timeouts; the
/// [`gate::BmcGate`] adds an overall deadline and concurrency limits on top.
pub trait Bmc: Send + Sync + fmt::Debug {
    /// Where the BMC is, for logs and errors (never includes credentials).
    fn endpoint(&self) -> &str;
    fn power_state(&self) -> BmcFuture<'_, PowerState>;
    fn power(&self, action: PowerAction) -> BmcFuture<'_, ()>;
    fn set_boot(&self, boot: BootOverride) -> BmcFuture<'_, ()>;
}

#[cfg(test)]
pub mod testsupport;
