//! The IPMI commands the appliance sends, as (netfn, cmd, data) builders and reply parsers:
//! Get Channel Authentication Capabilities, Set Session Privilege Level, Close Session,
//! Chassis Status / Control, Set / Get System Boot Options (parameter 5, boot flags), and
//! the user commands used by automatic BMC setup (Get/Set User Name, Set User Password,
//! Set User Access, Get User Access).
//!
//! Pure: no IO. Reply parsers check lengths and return `CommandError`, never panic.

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

/// A request ready for `Session::request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// What it is, for error messages ("chassis control").
    pub name: &'static str,
}

/// Why a reply did not carry what the command promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{command}: BMC answered completion code {code:#04x} ({text})")]
    Completion {
        command: &'static str,
        code: u8,
        text: &'static str,
    },
    #[error("{command}: reply has {got} data bytes, expected at least {need}")]
    Short {
        command: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{command}: {message}")]
    Invalid {
        command: &'static str,
        message: &'static str,
    },
}

/// Generic completion codes (IPMI 2.0 table 5-2).
pub fn completion_text(code: u8) -> &'static str {
    match code {
        0x00 => "ok",
        0x80 => "parameter not supported",
        0x81 => "attempt to set the set-in-progress value when not in set-complete state",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled or invalid",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return number of requested data bytes",
        0xCB => "requested sensor, data, or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        _ => "device-specific or OEM code",
    }
}

/// Turns a non-zero completion code into an error.
pub fn check(command: &'static str, completion: u8) -> Result<(), CommandError> {
    if completion == 0 {
        Ok(())
    } else {
        Err(CommandError::Completion {
            command,
            code: completion,
            text: completion_text(completion),
        })
    }
}

fn need(command: &'static str, data: &[u8], n: usize) -> Result<(), CommandError> {
    if data.len() < n {
        Err(CommandError::Short {
            command,
            need: n,
            got: data.len(),
        })
    } else {
        Ok(())
    }
}

// --- App: channel and session -------------------------------------------------------------

/// Get Channel Authentication Capabilities for "this channel" at `privilege`, asking for
/// the IPMI 2.0 extended data.
pub fn get_channel_auth_caps(privilege: u8) -> Command {
    Command {
        netfn: NETFN_APP,
        cmd: 0x38,
        data: vec![0x8E, privilege & 0x0F],
        name: "get channel authentication capabilities",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAuthCaps {
    pub channel: u8,
    /// The channel supports IPMI 2.0 (RMCP+) connections.
    pub ipmi_v2: bool,
    /// Bit mask of IPMI 1.5 auth types (bit 0 none, 1 MD2, 2 MD5, 4 password).
    pub v15_auth_types: u8,
}

pub fn parse_channel_auth_caps(data: &[u8]) -> Result<ChannelAuthCaps, CommandError> {
    let c = "get channel authentication capabilities";
    need(c, data, 4)?;
    Ok(ChannelAuthCaps {
        channel: data[0],
        ipmi_v2: data[1] & 0x80 != 0 && data[3] & 0x02 != 0,
        v15_auth_types: data[1] & 0x3F,
    })
}

pub fn set_session_privilege(privilege: u8) -> Command {
    Command {
        netfn: NETFN_APP,
        cmd: 0x3B,
        data: vec![privilege & 0x0F],
        name: "set session privilege level",
    }
}

pub fn close_session(bmc_sid: u32) -> Command {
    Command {
        netfn: NETFN_APP,
        cmd: 0x3C,
        data: bmc_sid.to_le_bytes().to_vec(),
        name: "close session",
    }
}

// --- Chassis ------------------------------------------------------------------------------

pub fn chassis_status() -> Command {
    Command {
        netfn: NETFN_CHASSIS,
        cmd: 0x01,
        data: Vec::new(),
        name: "get chassis status",
    }
}

/// The part of Get Chassis Status the appliance uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    pub power_on: bool,
    pub power_overload: bool,
    pub power_fault: bool,
}

pub fn parse_chassis_status(data: &[u8]) -> Result<ChassisStatus, CommandError> {
    need("get chassis status", data, 3)?;
    Ok(ChassisStatus {
        power_on: data[0] & 0x01 != 0,
        power_overload: data[0] & 0x02 != 0,
        power_fault: data[0] & 0x08 != 0,
    })
}

/// Chassis Control actions (IPMI 2.0 table 28-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisAction {
    PowerDown = 0,
    PowerUp = 1,
    PowerCycle = 2,
    HardReset = 3,
    /// ACPI soft shutdown (emulated power button).
    SoftShutdown = 5,
}

pub fn chassis_control(action: ChassisAction) -> Command {
    Command {
        netfn: NETFN_CHASSIS,
        cmd: 0x02,
        data: vec![action as u8],
        name: "chassis control",
    }
}

/// Boot device selectors of boot flags byte 2, bits 5:2 (IPMI 2.0 table 28-14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// No override.
    None,
    Pxe,
    Disk,
    Cdrom,
    Bios,
}

impl BootDevice {
    fn selector(self) -> u8 {
        match self {
            BootDevice::None => 0x00,
            BootDevice::Pxe => 0x01,
            BootDevice::Disk => 0x02,
            BootDevice::Cdrom => 0x05,
            BootDevice::Bios => 0x06,
        }
    }

    fn from_selector(s: u8) -> Option<BootDevice> {
        Some(match s {
            0x00 => BootDevice::None,
            0x01 => BootDevice::Pxe,
            0x02 | 0x03 => BootDevice::Disk,
            0x05 => BootDevice::Cdrom,
            0x06 => BootDevice::Bios,
            _ => return None,
        })
    }
}

/// Boot flags (System Boot Options parameter 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    pub valid: bool,
    /// Applies to all future boots, not only the next one.
    pub persistent: bool,
    /// UEFI boot (EFI bit); BIOS/legacy otherwise.
    pub uefi: bool,
    pub device: BootDevice,
}

const BOOT_PARAM_IN_PROGRESS: u8 = 0x00;
const BOOT_PARAM_INFO_ACK: u8 = 0x04;
const BOOT_PARAM_FLAGS: u8 = 0x05;

fn set_boot_option(param: u8, data: &[u8]) -> Command {
    let mut d = vec![param & 0x7F];
    d.extend_from_slice(data);
    Command {
        netfn: NETFN_CHASSIS,
        cmd: 0x08,
        data: d,
        name: "set system boot options",
    }
}

/// The sequence that sets boot flags the way BMCs expect (and as Sidero/goipmi does):
/// set-in-progress, clear the boot-info acknowledge, write the flags, commit, complete.
/// Set-in-progress steps may be answered 0x80 (parameter not supported) by simpler BMCs;
/// the caller treats that as success for those steps only ([`SetBootStep::optional`]).
pub fn set_boot_flags(flags: BootFlags) -> Vec<SetBootStep> {
    let mut b1 = 0u8;
    if flags.valid {
        b1 |= 0x80;
    }
    if flags.persistent {
        b1 |= 0x40;
    }
    if flags.uefi {
        b1 |= 0x20;
    }
    let b2 = flags.device.selector() << 2;
    vec![
        SetBootStep {
            command: set_boot_option(BOOT_PARAM_IN_PROGRESS, &[0x01]),
            optional: true,
        },
        SetBootStep {
            command: set_boot_option(BOOT_PARAM_INFO_ACK, &[0x01, 0x01]),
            optional: true,
        },
        SetBootStep {
            command: set_boot_option(BOOT_PARAM_FLAGS, &[b1, b2, 0, 0, 0]),
            optional: false,
        },
        SetBootStep {
            command: set_boot_option(BOOT_PARAM_IN_PROGRESS, &[0x02]),
            optional: true,
        },
        SetBootStep {
            command: set_boot_option(BOOT_PARAM_IN_PROGRESS, &[0x00]),
            optional: true,
        },
    ]
}

/// One command of [`set_boot_flags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetBootStep {
    pub command: Command,
    /// A "parameter not supported" (0x80) or similar refusal of this step is tolerated.
    pub optional: bool,
}

pub fn get_boot_flags() -> Command {
    Command {
        netfn: NETFN_CHASSIS,
        cmd: 0x09,
        data: vec![BOOT_PARAM_FLAGS, 0, 0],
        name: "get system boot options",
    }
}

pub fn parse_boot_flags(data: &[u8]) -> Result<BootFlags, CommandError> {
    let c = "get system boot options";
    // version, parameter valid + selector, 5 bytes of boot flags
    need(c, data, 4)?;
    if data[1] & 0x7F != BOOT_PARAM_FLAGS {
        return Err(CommandError::Invalid {
            command: c,
            message: "reply is for another parameter",
        });
    }
    let b1 = data[2];
    let b2 = data[3];
    let device = BootDevice::from_selector((b2 >> 2) & 0x0F).ok_or(CommandError::Invalid {
        command: c,
        message: "unknown boot device selector",
    })?;
    Ok(BootFlags {
        valid: b1 & 0x80 != 0,
        persistent: b1 & 0x40 != 0,
        uefi: b1 & 0x20 != 0,
        device,
    })
}

// --- Users (App netfn) --------------------------------------------------------------------

pub fn get_user_access(channel: u8, user_id: u8) -> Command {
    Command {
        netfn: NETFN_APP,
        cmd: 0x44,
        data: vec![channel & 0x0F, user_id & 0x3F],
        name: "get user access",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAccess {
    pub max_users: u8,
    pub enabled_users: u8,
    pub ipmi_messaging: bool,
    pub privilege: u8,
}

pub fn parse_user_access(data: &[u8]) -> Result<UserAccess, CommandError> {
    need("get user access", data, 4)?;
    Ok(UserAccess {
        max_users: data[0] & 0x3F,
        enabled_users: data[1] & 0x3F,
        ipmi_messaging: data[3] & 0x10 != 0,
        privilege: data[3] & 0x0F,
    })
}

pub fn get_user_name(user_id: u8) -> Command {
    Command {
        netfn: NETFN_APP,
        cmd: 0x46,
        data: vec![user_id & 0x3F],
        name: "get user name",
    }
}

/// The user name, without trailing NULs.
pub fn parse_user_name(data: &[u8]) -> Result<Vec<u8>, CommandError> {
    need("get user name", data, 16)?;
    let mut n = data[..16].to_vec();
    while n.last() == Some(&0) {
        n.pop();
    }
    Ok(n)
}

pub fn set_user_name(user_id: u8, name: &[u8]) -> Result<Command, CommandError> {
    if name.is_empty() || name.len() > 16 {
        return Err(CommandError::Invalid {
            command: "set user name",
            message: "name must be 1 to 16 bytes",
        });
    }
    let mut data = vec![user_id & 0x3F];
    let mut padded = [0u8; 16];
    padded[..name.len()].copy_from_slice(name);
    data.extend_from_slice(&padded);
    Ok(Command {
        netfn: NETFN_APP,
        cmd: 0x45,
        data,
        name: "set user name",
    })
}

/// Set User Password operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordOp {
    DisableUser = 0,
    EnableUser = 1,
    SetPassword = 2,
    TestPassword = 3,
}

/// Set User Password; passwords longer than 16 bytes use the 20-byte form.
pub fn set_user_password(
    user_id: u8,
    op: PasswordOp,
    password: &[u8],
) -> Result<Command, CommandError> {
    if password.len() > 20 {
        return Err(CommandError::Invalid {
            command: "set user password",
            message: "password longer than 20 bytes",
        });
    }
    let (flag, width) = if password.len() > 16 {
        (0x80, 20)
    } else {
        (0x00, 16)
    };
    let mut data = vec![flag | (user_id & 0x3F), op as u8];
    if matches!(op, PasswordOp::SetPassword | PasswordOp::TestPassword) {
        let mut padded = vec![0u8; width];
        padded[..password.len()].copy_from_slice(password);
        data.extend_from_slice(&padded);
    }
    Ok(Command {
        netfn: NETFN_APP,
        cmd: 0x47,
        data,
        name: "set user password",
    })
}

/// Set User Access on `channel`: IPMI messaging and callin on, link auth off, privilege
/// limit `privilege` (4 = administrator). Sidero sends the same bits (0x91 on channel 1
/// plus link auth off).
pub fn set_user_access(channel: u8, user_id: u8, privilege: u8) -> Command {
    Command {
        netfn: NETFN_APP,
        cmd: 0x43,
        data: vec![
            0x80 | 0x10 | (channel & 0x0F),
            user_id & 0x3F,
            privilege & 0x0F,
            0,
        ],
        name: "set user access",
    }
}

// --- Transport: LAN configuration (in-band discovery of the BMC's address) ------------------

pub const NETFN_TRANSPORT: u8 = 0x0C;
/// LAN configuration parameter 3: IP address.
pub const LAN_PARAM_IP: u8 = 3;
/// LAN configuration parameter 8: primary RMCP port (optional; many BMCs answer 0x80).
pub const LAN_PARAM_PRIMARY_PORT: u8 = 8;

/// Get LAN Configuration Parameters `param` of `channel` (set 0, block 0).
pub fn get_lan_config(channel: u8, param: u8) -> Command {
    Command {
        netfn: NETFN_TRANSPORT,
        cmd: 0x02,
        data: vec![channel & 0x0F, param & 0x7F, 0, 0],
        name: "get LAN configuration parameters",
    }
}

/// The IPv4 address of a Get LAN Configuration Parameters (param 3) reply: revision byte,
/// then 4 address bytes (MS-byte first).
pub fn parse_lan_ip(data: &[u8]) -> Result<std::net::Ipv4Addr, CommandError> {
    need("get LAN configuration parameters (IP address)", data, 5)?;
    Ok(std::net::Ipv4Addr::new(data[1], data[2], data[3], data[4]))
}

/// The port of a Get LAN Configuration Parameters (param 8) reply: revision byte, then
/// the 16-bit port, least significant byte first.
pub fn parse_lan_port(data: &[u8]) -> Result<u16, CommandError> {
    need("get LAN configuration parameters (RMCP port)", data, 3)?;
    Ok(u16::from_le_bytes([data[1], data[2]]))
}

/// Where the dedicated user goes, given the name of each user id from 2 up (`None`: the
/// lookup failed): the slot already holding `user` (reused), else the first slot that is
/// empty, reads "(Empty User)" or failed to read (Sidero's rule); `None` when full.
pub fn pick_user_slot(user: &[u8], names: &[(u8, Option<Vec<u8>>)]) -> Option<UserSlot> {
    if let Some((id, _)) = names.iter().find(|(_, n)| n.as_deref() == Some(user)) {
        return Some(UserSlot::Existing(*id));
    }
    names
        .iter()
        .find(|(_, n)| match n {
            None => true,
            Some(n) => n.is_empty() || n == b"(Empty User)",
        })
        .map(|(id, _)| UserSlot::Free(*id))
}

/// The result of [`pick_user_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSlot {
    /// The user already exists in this slot: keep the name, reset the password.
    Existing(u8),
    /// An empty slot: set the name first.
    Free(u8),
}

impl UserSlot {
    pub fn id(self) -> u8 {
        match self {
            UserSlot::Existing(id) | UserSlot::Free(id) => id,
        }
    }
}
