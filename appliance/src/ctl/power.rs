//! `appliance ctl server power|bootdev|bmc`: the client side of the Power service.
//!
//! May touch: the admin endpoint (gRPC) and, for `bmc --password-file`, that file.

use std::path::Path;

use appliance_rpc::power::power_client::PowerClient;
use appliance_rpc::power::{
    PowerActionRequest, PowerStatusRequest, SetBmcRequest, SetBootDeviceRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{AddToken, CtlArgs, CtlError, channel, outln};
use crate::cli::{BootdevArg, PowerArg};

type Client = PowerClient<InterceptedService<Channel, AddToken>>;

async fn connect(args: &CtlArgs) -> Result<Client, CtlError> {
    let (channel, add_token) = channel(args).await?;
    Ok(PowerClient::with_interceptor(channel, add_token))
}

/// `ctl server power ACTION NAME`.
pub(super) async fn power(args: &CtlArgs, name: &str, action: PowerArg) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let action = match action {
        PowerArg::Status => {
            let r = client
                .power_status(PowerStatusRequest {
                    server: name.to_string(),
                })
                .await?
                .into_inner();
            outln!("server/{name} power: {}", r.power)?;
            return Ok(());
        }
        PowerArg::On => "on",
        PowerArg::Off => "off",
        PowerArg::Cycle => "cycle",
        PowerArg::Reset => "reset",
        PowerArg::Soft => "soft",
    };
    client
        .power_action(PowerActionRequest {
            server: name.to_string(),
            action: action.to_string(),
        })
        .await?;
    outln!("server/{name} power {action}: done")?;
    Ok(())
}

/// `ctl server bootdev DEVICE NAME [--uefi|--bios] [--persistent]`.
pub(super) async fn bootdev(
    args: &CtlArgs,
    name: &str,
    device: BootdevArg,
    uefi: bool,
    bios: bool,
    persistent: bool,
) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let device = match device {
        BootdevArg::Pxe => "pxe",
        BootdevArg::Disk => "disk",
    };
    let mode = if uefi {
        "uefi"
    } else if bios {
        "bios"
    } else {
        ""
    };
    client
        .set_boot_device(SetBootDeviceRequest {
            server: name.to_string(),
            device: device.to_string(),
            mode: mode.to_string(),
            persistent,
        })
        .await?;
    let when = if persistent {
        "every boot"
    } else {
        "next boot"
    };
    outln!("server/{name} boot device {device} ({when})")?;
    Ok(())
}

/// The arguments of `ctl server bmc`.
pub(super) struct SetBmc<'a> {
    pub name: &'a str,
    pub endpoint: &'a str,
    pub port: Option<u16>,
    pub interface: &'a str,
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub insecure_tls: bool,
    pub clear_pin: bool,
}

/// `ctl server bmc NAME --endpoint … --user … (--password-file F | APPLIANCE_BMC_PASSWORD)`.
pub(super) async fn set_bmc(args: &CtlArgs, bmc: SetBmc<'_>) -> Result<(), CtlError> {
    let SetBmc {
        name,
        endpoint,
        port,
        interface,
        user,
        password,
        password_file,
        insecure_tls,
        clear_pin,
    } = bmc;
    let mut client = connect(args).await?;
    let password = match (password, password_file) {
        (Some(p), _) => p.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|source| CtlError::ReadFile {
                path: f.to_path_buf(),
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
            server: name.to_string(),
            endpoint: endpoint.to_string(),
            port: port.map(u32::from).unwrap_or(0),
            interface: interface.to_string(),
            user: user.to_string(),
            password,
            insecure_tls,
            clear_pin,
        })
        .await?;
    outln!("server/{name} BMC set ({interface} {endpoint}); credentials stored in the box")?;
    Ok(())
}
