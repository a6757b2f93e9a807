//! The hook through which the lifecycle drives power: PXE-boot-once + power cycle, and
//! power off. [`ServerPower`] is the one place that decides how a server is made to boot
//! what the box serves: through its BMC (the `bmc` room, IPMI/Redfish) when it has one;
//! without a BMC, a released server whose node still runs Talos with a SideroLink session
//! is reset through the Talos machine API ([`OsReset`], filled in by SideroLink once it
//! runs); any other server without a BMC is left to PXE boot by itself (the agent's
//! NextAction moves servers that run the agent, as Sidero's reboot loop does).
//! `LoggedPower` only logs (tests).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::model::Server;
use crate::reconcile::apply::server_state;
use crate::reconcile::lifecycle::Phase;

pub type PowerFuture = Pin<Box<dyn Future<Output = Result<(), PowerError>> + Send>>;

/// A power operation that failed; the lifecycle logs it and its reboot timer retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("power {operation} of server {server} failed: {message}")]
pub struct PowerError {
    pub operation: &'static str,
    pub server: String,
    pub message: String,
}

/// Power control of servers, by their Server object (`spec.bmc`, `spec.managementApi`).
pub trait PowerActions: Send + Sync + std::fmt::Debug + 'static {
    /// Set PXE as the next boot device (once) and power cycle, or power on if off.
    fn pxe_boot_and_cycle(&self, server: &Server) -> PowerFuture;
    /// Power off.
    fn power_off(&self, server: &Server) -> PowerFuture;
}

/// No BMC driver wired: logs the action and succeeds.
#[derive(Debug, Default)]
pub struct LoggedPower;

impl PowerActions for LoggedPower {
    fn pxe_boot_and_cycle(&self, server: &Server) -> PowerFuture {
        tracing::info!(
            server = %server.metadata.name,
            "power: would set PXE boot once and power cycle (no BMC driver wired yet)"
        );
        Box::pin(async { Ok(()) })
    }

    fn power_off(&self, server: &Server) -> PowerFuture {
        tracing::info!(
            server = %server.metadata.name,
            "power: would power off (no BMC driver wired yet)"
        );
        Box::pin(async { Ok(()) })
    }
}

/// A way to make a running OS reset its machine and reboot into PXE, for servers without
/// a BMC (SideroLink's Talos machine API reset).
pub trait OsReset: Send + Sync + std::fmt::Debug + 'static {
    /// The reset of `server` (retries, conditions and all), or `None` when this way does
    /// not apply to it (its node never joined SideroLink).
    fn reset(&self, server: &Server) -> Option<PowerFuture>;
}

/// Where the OS reset is plugged in once its room runs (SideroLink starts after the
/// lifecycle); empty = no second way.
#[derive(Debug, Clone, Default)]
pub struct OsResetSlot(Arc<OnceLock<Arc<dyn OsReset>>>);

impl OsResetSlot {
    /// Plugs `reset` in (once; a second call is ignored).
    pub fn set(&self, reset: Arc<dyn OsReset>) {
        let _ = self.0.set(reset);
    }

    fn get(&self) -> Option<&Arc<dyn OsReset>> {
        self.0.get()
    }
}

/// The lifecycle's power hook: the BMC when the server has one, else (released servers
/// only) the OS reset. See the module doc.
#[derive(Debug, Clone)]
pub struct ServerPower {
    bmc: crate::bmc::power::PowerControl,
    os_reset: OsResetSlot,
}

impl ServerPower {
    pub fn new(bmc: crate::bmc::power::PowerControl, os_reset: OsResetSlot) -> ServerPower {
        ServerPower { bmc, os_reset }
    }
}

impl PowerActions for ServerPower {
    fn pxe_boot_and_cycle(&self, server: &Server) -> PowerFuture {
        let (pc, server, os) = (self.bmc.clone(), server.clone(), self.os_reset.clone());
        Box::pin(async move {
            match pc.pxe_boot_and_cycle(&server).await {
                Ok(()) => Ok(()),
                Err(crate::bmc::power::PowerCtlError::NoBmc(_)) => {
                    let reset = (server_state(&server).phase == Phase::Released)
                        .then(|| os.get().and_then(|r| r.reset(&server)))
                        .flatten();
                    match reset {
                        Some(reset) => {
                            tracing::info!(server = %server.metadata.name, "power: no BMC; resetting the released server through the Talos machine API");
                            reset.await
                        }
                        None => {
                            tracing::info!(server = %server.metadata.name, "power: no BMC; waiting for the server to PXE boot by itself");
                            Ok(())
                        }
                    }
                }
                Err(e) => Err(PowerError {
                    operation: "PXE boot + cycle",
                    server: server.metadata.name.clone(),
                    message: crate::error_chain(&e),
                }),
            }
        })
    }

    fn power_off(&self, server: &Server) -> PowerFuture {
        let (pc, server) = (self.bmc.clone(), server.clone());
        Box::pin(async move {
            match pc.power_server(&server, crate::bmc::PowerAction::Off).await {
                Ok(()) | Err(crate::bmc::power::PowerCtlError::NoBmc(_)) => Ok(()),
                Err(e) => Err(PowerError {
                    operation: "off",
                    server: server.metadata.name.clone(),
                    message: crate::error_chain(&e),
                }),
            }
        })
    }
}
