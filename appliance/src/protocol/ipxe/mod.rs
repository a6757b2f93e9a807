//! iPXE script text: the generic `/boot.ipxe` chain script, environment boot scripts
//! (`kernel` / `initrd` / `boot`) and the boot-from-disk answers.
//!
//! Pure rendering (sans-IO): values in, script text out. The boot decision that picks which
//! script to send lives in `crate::boot`; the HTTP glue in `crate::http::boot`. `query` reads
//! the `/ipxe` query string.

pub mod query;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

pub use crate::model::BootFromDiskMethod;

/// What an HTTP handler sends back for a script request: a status code and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptResponse {
    pub status: u16,
    pub body: String,
}

/// The answer for a server that boots from its disk.
pub fn boot_from_disk(method: BootFromDiskMethod) -> ScriptResponse {
    match method {
        BootFromDiskMethod::IpxeExit => ScriptResponse {
            status: 200,
            body: "#!ipxe\nexit\n".into(),
        },
        BootFromDiskMethod::Http404 => ScriptResponse {
            status: 404,
            body: String::new(),
        },
        BootFromDiskMethod::IpxeSanboot => ScriptResponse {
            status: 200,
            body: "#!ipxe\nsanboot --no-describe --drive 0x80\n".into(),
        },
    }
}

/// Rounds over all NICs before the boot script gives up and reboots (as Sidero).
pub const CHAIN_ATTEMPTS: u32 = 10;

/// The generic boot script served at `/boot.ipxe` (Sidero's `BootTemplate`, §2.1): up to
/// [`CHAIN_ATTEMPTS`] rounds over `net0..netN`; on each NIC wait for link, DHCP, then chain
/// to `<ipxe_path>?uuid=…&mac=…&domain=…&hostname=…&serial=…&arch=…`; when every round fails,
/// reboot after 5 s.
///
/// `ipxe_path` is where `/ipxe` is reached: a path (`/ipxe`, resolved by iPXE against the
/// URL this script came from) or an absolute URL.
///
/// `iflinkwait` exists only in iPXE builds from 2021 on (Debian bookworm ships a 2019
/// snapshot without it). Its failure is therefore ignored: on an old iPXE the command is
/// "not found" and the script goes on; a NIC without link then fails at `dhcp` and the
/// script moves to the next one, as it would have after `iflinkwait`.
///
/// DHCP runs as `ifconf --configurator dhcp` (iPXE 2016+), falling back to `dhcp`: plain
/// `dhcp` in the 2019 iPXE also waits for an IPv6 router advertisement, ~15 s on a segment
/// without an IPv6 router (measured in qemu-tests: `Configuring (net0 …)` with 18 dots vs 3).
pub fn chain_script(ipxe_path: &str) -> String {
    chain_script_for(ipxe_path, false)
}

/// [`chain_script`] for a client that fetched it over IPv6 (`ipv6`): each NIC is configured
/// by iPXE's `ipv6` configurator (router advertisement; the box's Managed flag makes iPXE run
/// stateful DHCPv6) instead of DHCPv4, which never answers on an IPv6-only segment and would
/// cost iPXE's whole DHCPv4 timeout per NIC and round.
pub fn chain_script_for(ipxe_path: &str, ipv6: bool) -> String {
    let configure = if ipv6 {
        "ifconf --configurator ipv6 net${idx} || goto next_iface"
    } else {
        "ifconf --configurator dhcp net${idx} || dhcp net${idx} || goto next_iface"
    };
    format!(
        "#!ipxe
prompt --key 0x02 --timeout 2000 Press Ctrl-B for the iPXE command line... && shell ||

ifstat

set attempts:int32 {CHAIN_ATTEMPTS}
set x:int32 0

:retry_loop
set idx:int32 0

:loop
isset ${{net${{idx}}/mac}} || goto exhausted
ifclose
iflinkwait --timeout 5000 net${{idx}} || echo net${{idx}}: no link yet (or iflinkwait unsupported), trying DHCP anyway
{configure}
goto boot

:next_iface
inc idx && goto loop

:boot
route
chain --replace {ipxe_path}?uuid=${{uuid}}&mac=${{net${{idx}}/mac:hexhyp}}&domain=${{domain}}&hostname=${{hostname}}&serial=${{serial}}&arch=${{buildarch}} || goto next_iface

:exhausted
echo
echo Failed to iPXE boot successfully via all interfaces
iseq ${{x}} ${{attempts}} && goto fail ||
echo Retrying...
echo
inc x
goto retry_loop

:fail
echo
echo Failed to get a valid response after ${{attempts}} attempts
echo
echo Rebooting in 5 seconds...
sleep 5
reboot
"
    )
}

/// Why an environment script cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderScriptError {
    #[error("kernel argument {index} ({arg:?}) contains whitespace or a control character")]
    BadArg { index: usize, arg: String },
    #[error("asset URL {url:?} contains whitespace or a control character")]
    BadUrl { url: String },
}

/// An environment boot: kernel URL with its command line, initrd URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentBoot<'a> {
    /// Usually relative: `/env/<name>/vmlinuz`.
    pub kernel_url: &'a str,
    pub initrd_url: &'a str,
    pub args: &'a [String],
}

fn bad_token(s: &str) -> bool {
    s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `#!ipxe / kernel <url> <args> / initrd <url> / boot` (Sidero's `ipxeTemplate`). Every
/// argument must be one iPXE token (no whitespace, no control characters): iPXE has no
/// quoting, so a space would silently split an argument in two.
pub fn environment_script(boot: &EnvironmentBoot<'_>) -> Result<String, RenderScriptError> {
    for url in [boot.kernel_url, boot.initrd_url] {
        if bad_token(url) {
            return Err(RenderScriptError::BadUrl {
                url: url.to_string(),
            });
        }
    }
    let mut out = String::from("#!ipxe\nkernel ");
    out.push_str(boot.kernel_url);
    for (index, arg) in boot.args.iter().enumerate() {
        if bad_token(arg) {
            return Err(RenderScriptError::BadArg {
                index,
                arg: arg.clone(),
            });
        }
        out.push(' ');
        out.push_str(arg);
    }
    let _ = write!(out, "\ninitrd {}\nboot\n", boot.initrd_url);
    Ok(out)
}
