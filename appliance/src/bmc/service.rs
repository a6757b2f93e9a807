//! The admin-side Power gRPC service (`appliance.power.v1.Power`, `proto/power.proto`):
//! power status/actions, boot-device override and setting a Server's BMC, for
//! `appliance ctl server power|bootdev|bmc`. Served behind the admin token
//! (`http::admin_auth`), in the one gRPC `Routes` of the :8081 router (`http::router`).
//!
//! May touch: `PowerControl` and the store's BMC API. Never echoes credentials.

use appliance_rpc::power::power_server::Power;
use appliance_rpc::power::{
    PowerActionReply, PowerActionRequest, PowerStatusReply, PowerStatusRequest, SetBmcReply,
    SetBmcRequest, SetBootDeviceReply, SetBootDeviceRequest,
};
use tonic::{Request, Response, Status};

use super::power::{PowerControl, PowerCtlError};
use super::{BmcError, BootOverride, BootTarget, Firmware, PowerAction};
use crate::model::server;
use crate::model::{Kind, Object};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct PowerService {
    control: PowerControl,
}

impl PowerService {
    pub fn new(control: PowerControl) -> PowerService {
        PowerService { control }
    }
}

fn status(e: PowerCtlError) -> Status {
    let text = crate::error_chain(&e);
    match &e {
        PowerCtlError::NotFound(_) => Status::not_found(text),
        PowerCtlError::NoBmc(_)
        | PowerCtlError::NoCredentials { .. }
        | PowerCtlError::Interface { .. } => Status::failed_precondition(text),
        PowerCtlError::Bmc { source, .. } => match source {
            BmcError::Timeout { .. } => Status::deadline_exceeded(text),
            BmcError::Unreachable { .. } | BmcError::Busy { .. } => Status::unavailable(text),
            BmcError::Auth { .. } | BmcError::CertificateChanged { .. } => {
                Status::permission_denied(text)
            }
            _ => Status::aborted(text),
        },
        PowerCtlError::Store(_) => Status::internal(text),
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        e => Status::internal(crate::error_chain(&e)),
    }
}

fn parse_action(s: &str) -> Result<PowerAction, Status> {
    Ok(match s {
        "on" => PowerAction::On,
        "off" => PowerAction::Off,
        "cycle" => PowerAction::Cycle,
        "reset" => PowerAction::Reset,
        "soft" => PowerAction::Soft,
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown power action `{other}` (expected on, off, cycle, reset or soft)"
            )));
        }
    })
}

#[tonic::async_trait]
impl Power for PowerService {
    async fn power_status(
        &self,
        req: Request<PowerStatusRequest>,
    ) -> Result<Response<PowerStatusReply>, Status> {
        let name = req.into_inner().server;
        let p = self.control.status(&name).await.map_err(status)?;
        let endpoint = self
            .control
            .store()
            .get(Kind::Server, &name)
            .ok()
            .flatten()
            .and_then(|s| match s.object {
                Object::Server(s) => s.spec.bmc.map(|b| b.endpoint),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Response::new(PowerStatusReply {
            power: p.as_str().to_string(),
            endpoint,
        }))
    }

    async fn power_action(
        &self,
        req: Request<PowerActionRequest>,
    ) -> Result<Response<PowerActionReply>, Status> {
        let r = req.into_inner();
        let action = parse_action(&r.action)?;
        self.control
            .power(&r.server, action)
            .await
            .map_err(status)?;
        Ok(Response::new(PowerActionReply {}))
    }

    async fn set_boot_device(
        &self,
        req: Request<SetBootDeviceRequest>,
    ) -> Result<Response<SetBootDeviceReply>, Status> {
        let r = req.into_inner();
        let target = match r.device.as_str() {
            "pxe" => BootTarget::Pxe,
            "disk" => BootTarget::Disk,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown boot device `{other}` (expected pxe or disk)"
                )));
            }
        };
        let firmware = match r.mode.as_str() {
            "uefi" => Firmware::Uefi,
            "bios" => Firmware::Bios,
            "" => {
                let s = match self.control.store().get(Kind::Server, &r.server) {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        return Err(Status::not_found(format!(
                            "server `{}` not found",
                            r.server
                        )));
                    }
                    Err(e) => return Err(store_status(e)),
                };
                match s.object {
                    Object::Server(s) => self.control.pxe_firmware(&s),
                    _ => Firmware::Uefi,
                }
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown boot mode `{other}` (expected uefi or bios)"
                )));
            }
        };
        let boot = BootOverride {
            target,
            firmware,
            persistent: r.persistent,
        };
        self.control
            .set_boot(&r.server, boot)
            .await
            .map_err(status)?;
        Ok(Response::new(SetBootDeviceReply {}))
    }

    async fn set_bmc(&self, req: Request<SetBmcRequest>) -> Result<Response<SetBmcReply>, Status> {
        let r = req.into_inner();
        if r.endpoint.is_empty() {
            return Err(Status::invalid_argument("endpoint must not be empty"));
        }
        if r.user.is_empty() || r.password.is_empty() {
            return Err(Status::invalid_argument(
                "user and password must not be empty",
            ));
        }
        let interface = if r.interface.is_empty() {
            "lanplus".to_string()
        } else {
            r.interface.clone()
        };
        if !["lanplus", "lanplus-3", "lanplus-17", "redfish"].contains(&interface.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown interface `{interface}` (expected lanplus, lanplus-3, lanplus-17 or redfish)"
            )));
        }
        if r.port > 65535 {
            return Err(Status::invalid_argument(format!(
                "{} is not a port",
                r.port
            )));
        }
        let spec = server::Bmc {
            endpoint: r.endpoint.clone(),
            port: (r.port != 0).then_some(r.port),
            interface: (interface != "lanplus").then_some(interface),
            ..Default::default()
        };
        let store = self.control.store().clone();
        let name = r.server.clone();
        let (insecure, clear_pin) = (r.insecure_tls, r.clear_pin);
        tokio::task::spawn_blocking(move || {
            store.set_server_bmc(&name, spec, &r.user, &r.password)?;
            store.update_bmc_settings(&name, |s| {
                s.insecure_tls = insecure;
                if clear_pin {
                    s.pinned_sha256 = None;
                }
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        Ok(Response::new(SetBmcReply {}))
    }
}
