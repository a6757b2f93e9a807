//! `appliance ctl server power|bootdev|bmc`: the client side of the Power service.
//!
//! May touch: the admin endpoint (gRPC) and, for `bmc --password-file`, that file.

use appliance_rpc::power::power_client::PowerClient;
use appliance_rpc::power::{
    PowerActionRequest, PowerStatusRequest, SetBmcRequest, SetBootDeviceRequest,
};

use crate::cli::{BootdevArg, CtlArgs, PowerArg, ServerCommand};
use crate::ctl::{CtlError, channel, outln};

/// Whether `command` is one of the BMC commands handled here.
pub fn handles(command: &ServerCommand) -> bool {
    matches!(
        command,
        ServerCommand::Power { .. } | ServerCommand::Bootdev { .. } | ServerCommand::Bmc { .. }
    )
}

pub async fn run(args: &CtlArgs, command: &ServerCommand) -> Result<(), CtlError> {
    let (channel, add_token) = channel(args).await?;
    let mut client = PowerClient::with_interceptor(channel, add_token);
    match command {
        ServerCommand::Power {
            action: PowerArg::Status,
            name,
        } => {
            let r = client
                .power_status(PowerStatusRequest {
                    server: name.clone(),
                })
                .await?
                .into_inner();
            outln!("server/{name} power: {}", r.power)?;
        }
        ServerCommand::Power { action, name } => {
            let action = match action {
                PowerArg::On => "on",
                PowerArg::Off => "off",
                PowerArg::Cycle => "cycle",
                PowerArg::Reset => "reset",
                PowerArg::Soft => "soft",
                PowerArg::Status => unreachable!("matched above"),
            };
            client
                .power_action(PowerActionRequest {
                    server: name.clone(),
                    action: action.to_string(),
                })
                .await?;
            outln!("server/{name} power {action}: done")?;
        }
        ServerCommand::Bootdev {
            device,
            name,
            uefi,
            bios,
            persistent,
        } => {
            let device = match device {
                BootdevArg::Pxe => "pxe",
                BootdevArg::Disk => "disk",
            };
            let mode = if *uefi {
                "uefi"
            } else if *bios {
                "bios"
            } else {
                ""
            };
            client
                .set_boot_device(SetBootDeviceRequest {
                    server: name.clone(),
                    device: device.to_string(),
                    mode: mode.to_string(),
                    persistent: *persistent,
                })
                .await?;
            let when = if *persistent {
                "every boot"
            } else {
                "next boot"
            };
            outln!("server/{name} boot device {device} ({when})")?;
        }
        ServerCommand::Bmc {
            name,
            endpoint,
            port,
            interface,
            user,
            password,
            password_file,
            insecure_tls,
            clear_pin,
        } => {
            let password = match (password, password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|source| CtlError::ReadFile {
                        path: f.clone(),
                        source,
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                (None, None) => {
                    return Err(CtlError::Api(tonic::Status::invalid_argument(
                        "give the BMC password with --password-file FILE or APPLIANCE_BMC_PASSWORD",
                    )));
                }
            };
            client
                .set_bmc(SetBmcRequest {
                    server: name.clone(),
                    endpoint: endpoint.clone(),
                    port: port.map(u32::from).unwrap_or(0),
                    interface: interface.clone(),
                    user: user.clone(),
                    password,
                    insecure_tls: *insecure_tls,
                    clear_pin: *clear_pin,
                })
                .await?;
            outln!(
                "server/{name} BMC set ({interface} {endpoint}); credentials stored in the box"
            )?;
        }
        _ => unreachable!("`handles` admits only BMC commands"),
    }
    Ok(())
}
