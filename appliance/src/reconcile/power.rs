//! The hook through which the lifecycle drives power: PXE-boot-once + power cycle, and
//! power off. The `bmc` room implements it over IPMI/Redfish; until it is wired,
//! `LoggedPower` only logs what it would do (the agent's NextAction still moves servers that
//! run the agent, so the lifecycle works without a BMC, as Sidero's does with a reboot loop).

use std::future::Future;
use std::pin::Pin;

use crate::model::Server;

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

/// The BMC room's power control as the lifecycle's hook. A server without `spec.bmc` is
/// not an error: it is logged and skipped (its agent, if running, follows NextAction).
impl PowerActions for crate::bmc::power::PowerControl {
    fn pxe_boot_and_cycle(&self, server: &Server) -> PowerFuture {
        let (pc, server) = (self.clone(), server.clone());
        Box::pin(async move {
            match pc.pxe_boot_and_cycle(&server).await {
                Ok(()) => Ok(()),
                Err(crate::bmc::power::PowerCtlError::NoBmc(_)) => {
                    tracing::info!(server = %server.metadata.name, "power: no BMC; waiting for the server to PXE boot by itself");
                    Ok(())
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
        let (pc, server) = (self.clone(), server.clone());
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
