//! In-band BMC setup by the agent (Sidero's `cmd/agent/bmc.go`): when the box asks
//! (`setup_bmc`), read the local BMC's LAN address (Get LAN Configuration Parameters 3 and
//! 8 on channel 1), then create or reuse the dedicated `sidero` user with a generated
//! password (Set User Name, Set User Password, Set User Access with administrator
//! privilege, Enable User). The caller reports both with UpdateBMCInfo.
//!
//! The steps run over any [`Transport`] (one request → one reply); the real one is
//! `ipmidev::IpmiDevice` (`/dev/ipmi0`). Commands and reply parsing are the shared
//! `protocol::ipmi::command` builders, the same the box uses over LAN. No IO here besides
//! the transport, no clock, no randomness (the password is an input), so the tests drive
//! the steps with a scripted BMC.
//!
//! May touch: only the transport it is given.

use std::net::Ipv4Addr;
use std::time::Duration;

use thiserror::Error;

use crate::protocol::ipmi::command::{self, Command, CommandError, PasswordOp, UserSlot};

/// The user created in-band (Sidero's name; the box recognises it).
pub const SETUP_USER: &str = "sidero";
/// The LAN channel read and configured (Sidero supports only channel 1).
pub const LAN_CHANNEL: u8 = 1;
/// Privilege limit given to the user: administrator.
const PRIV_ADMIN: u8 = 0x04;

/// One reply: completion code and the data after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub completion: u8,
    pub data: Vec<u8>,
}

impl Reply {
    /// A reply as the device hands it over (`data[0]` is the completion code), checked
    /// against the request it answers.
    pub fn from_device(c: &Command, netfn: u8, cmd: u8, data: &[u8]) -> Result<Reply, InbandError> {
        if netfn != (c.netfn | 1) || cmd != c.cmd {
            return Err(InbandError::Mismatch {
                command: c.name,
                netfn,
                cmd,
            });
        }
        let (&completion, rest) = data
            .split_first()
            .ok_or(InbandError::Empty { command: c.name })?;
        Ok(Reply {
            completion,
            data: rest.to_vec(),
        })
    }
}

/// Sends one IPMI request to the local BMC and returns its reply.
pub trait Transport {
    fn call(&mut self, c: &Command) -> Result<Reply, InbandError>;
}

#[derive(Debug, Error)]
pub enum InbandError {
    #[error("open {path} (in-band IPMI device)")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: sending to the BMC failed")]
    Send {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: reading the reply failed")]
    Receive {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: no reply from the BMC within {timeout:?}")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
    #[error("{command}: reply for netfn {netfn:#04x} cmd {cmd:#04x} does not match the request")]
    Mismatch {
        command: &'static str,
        netfn: u8,
        cmd: u8,
    },
    #[error("{command}: empty reply (no completion code)")]
    Empty { command: &'static str },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the BMC has no IPv4 address on LAN channel {channel} (it reports {ip})")]
    NoAddress { channel: u8, ip: Ipv4Addr },
    #[error("no free BMC user slot among ids 2..={max}")]
    NoFreeSlot { max: u8 },
}

/// What the BMC says about its LAN side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanAddress {
    pub ip: Ipv4Addr,
    /// Primary RMCP port; `None` when the BMC does not support parameter 8 (or says 0):
    /// the box then keeps the known port, else 623.
    pub port: Option<u16>,
}

fn call_ok<T: Transport>(t: &mut T, c: Command) -> Result<Vec<u8>, InbandError> {
    let r = t.call(&c)?;
    command::check(c.name, r.completion)?;
    Ok(r.data)
}

/// Reads the BMC's IP (parameter 3, required, not 0.0.0.0) and port (parameter 8,
/// optional) of LAN `channel`.
pub fn read_lan<T: Transport>(t: &mut T, channel: u8) -> Result<LanAddress, InbandError> {
    let data = call_ok(t, command::get_lan_config(channel, command::LAN_PARAM_IP))?;
    let ip = command::parse_lan_ip(&data)?;
    if ip.is_unspecified() || ip.is_broadcast() {
        return Err(InbandError::NoAddress { channel, ip });
    }
    let c = command::get_lan_config(channel, command::LAN_PARAM_PRIMARY_PORT);
    let port = match t.call(&c) {
        Ok(r) if r.completion == 0 => command::parse_lan_port(&r.data).ok().filter(|p| *p != 0),
        Ok(_) => None,
        Err(e @ InbandError::Timeout { .. }) => return Err(e),
        Err(_) => None,
    };
    Ok(LanAddress { ip, port })
}

/// Creates (in the first free slot) or reuses (the slot already named `user`) the user,
/// sets `password`, administrator privilege and IPMI messaging on `channel`, and enables
/// it. Returns the slot used.
pub fn ensure_user<T: Transport>(
    t: &mut T,
    channel: u8,
    user: &str,
    password: &str,
) -> Result<UserSlot, InbandError> {
    // Validate the inputs before touching the BMC.
    let name_cmd = |id| command::set_user_name(id, user.as_bytes());
    name_cmd(2)?;
    command::set_user_password(2, PasswordOp::SetPassword, password.as_bytes())?;

    let data = call_ok(t, command::get_user_access(channel, 1))?;
    let max = command::parse_user_access(&data)?.max_users.clamp(2, 63);
    let mut names = Vec::new();
    for id in 2..=max {
        let r = t.call(&command::get_user_name(id))?;
        let name = (r.completion == 0)
            .then(|| command::parse_user_name(&r.data).ok())
            .flatten();
        let found = name.as_deref() == Some(user.as_bytes());
        names.push((id, name));
        if found {
            break;
        }
    }
    let slot =
        command::pick_user_slot(user.as_bytes(), &names).ok_or(InbandError::NoFreeSlot { max })?;
    let id = slot.id();
    if let UserSlot::Free(_) = slot {
        call_ok(t, name_cmd(id)?)?;
    }
    call_ok(
        t,
        command::set_user_password(id, PasswordOp::SetPassword, password.as_bytes())?,
    )?;
    call_ok(t, command::set_user_access(channel, id, PRIV_ADMIN))?;
    call_ok(
        t,
        command::set_user_password(id, PasswordOp::EnableUser, &[])?,
    )?;
    Ok(slot)
}

#[cfg(test)]
mod tests;
