//! GRUB configuration text for network boots through GRUB (Debian's signed shim → signed
//! GRUB network image under Secure Boot, GRUB's arm64 network image): the fixed
//! `grub/grub.cfg` every such client reads first, and the per-client config it chains to,
//! rendered from the same boot decision as the iPXE script (`crate::boot::answer`).
//!
//! Pure rendering (sans-IO): values in, config text out.
//!
//! Quoting. GRUB's script language is shell-like, unlike iPXE (which has no quoting at
//! all, so the iPXE renderer refuses any argument with whitespace): every value the box
//! puts into a config (kernel arguments, paths, messages) is written as one single-quoted
//! GRUB word. Inside single quotes GRUB treats every character literally (`$`, `;`, `"`,
//! `\`, spaces, `{`…); a `'` itself is written `'\''` (close, escaped quote, reopen),
//! which GRUB joins into the same word. So an argument can never end its word, start a
//! command or expand a variable. Control characters (newline, tab, NUL, …) are refused:
//! no kernel argument needs one and a newline is where a GRUB command would end.
//!
//! Boot-from-disk methods as GRUB actions (the iPXE answer in brackets):
//! - `ipxe-exit` → `exit`: GRUB returns to the firmware (through shim under Secure Boot),
//!   which goes on to the next boot option, the disk [iPXE `exit`];
//! - `http-404` → `exit` as well: the network boot fails over to the firmware's next boot
//!   option [`/ipxe` answers 404 so that iPXE's chain fails];
//! - `ipxe-sanboot` → chain-load the removable-media loader of the first local disk that
//!   has one (`/EFI/BOOT/BOOTX64.EFI`, `BOOTAA64.EFI` on arm64; under Secure Boot it must
//!   be signed), else `exit` [iPXE `sanboot --drive 0x80`, the first BIOS disk].

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

pub use crate::model::BootFromDiskMethod;

/// Where per-client configs are read, below the TFTP root: `grub/client/<grub_cpu>/<mac>/
/// <uuid>` (GRUB's `$grub_cpu`, `$net_default_mac`, the SMBIOS system UUID or `none`).
pub const CLIENT_DIR: &str = "grub/client";

/// The fixed config GRUB's network image reads (`$prefix/grub.cfg`, prefix `/grub` on the
/// TFTP server it was loaded from).
pub const CHAIN_CONFIG: &str = "grub/grub.cfg";

/// Rounds of asking for the per-client config before GRUB reboots (as iPXE's script).
pub const CHAIN_ATTEMPTS: u32 = 10;

/// Why a config cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderConfigError {
    #[error("kernel argument {index} ({arg:?}) contains a control character")]
    BadArg { index: usize, arg: String },
    #[error("path {path:?} is empty or contains a control character")]
    BadPath { path: String },
}

/// `s` as one single-quoted GRUB word (see the module doc). The caller has refused
/// control characters.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The fixed `grub/grub.cfg`: reads the SMBIOS system UUID (`none` when there is none),
/// then sources `$prefix/../client/<cpu>/<mac>/<uuid>` (the per-client config, from the
/// same TFTP server) up to [`CHAIN_ATTEMPTS`] times, 5 s apart, and reboots when every
/// attempt failed. A per-client config that boots never returns; one that refuses prints
/// why and returns, so the loop asks again.
pub fn chain_config() -> String {
    format!(
        "# Rendered by the appliance: chain to this client's config, decided per boot.
set appliance_uuid=none
smbios --type 1 --get-uuid 8 --set appliance_uuid
if [ -z \"$appliance_uuid\" ]; then set appliance_uuid=none; fi
echo \"appliance: GRUB on $net_default_mac (uuid $appliance_uuid, $grub_cpu)\"
for appliance_attempt in {attempts}; do
  source \"($root)/{CLIENT_DIR}/$grub_cpu/$net_default_mac/$appliance_uuid\"
  echo \"appliance: no boot config yet (attempt $appliance_attempt of {CHAIN_ATTEMPTS}); retrying in 5 s\"
  sleep 5
done
echo \"appliance: giving up after {CHAIN_ATTEMPTS} attempts; rebooting\"
sleep 5
reboot
",
        attempts = (1..=CHAIN_ATTEMPTS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A kernel boot: kernel and initrd paths on the TFTP server GRUB came from, and the
/// kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot<'a> {
    /// `/env/<name>/vmlinuz`.
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub args: &'a [String],
}

/// `linux '<kernel>' '<arg>'… / initrd '<initrd>' / boot`, every value one quoted word.
pub fn kernel_config(boot: &KernelBoot<'_>) -> Result<String, RenderConfigError> {
    for path in [boot.kernel, boot.initrd] {
        if path.is_empty() || has_control(path) {
            return Err(RenderConfigError::BadPath {
                path: path.to_string(),
            });
        }
    }
    let mut out = format!(
        "# Rendered by the appliance.\necho {}\nlinux ",
        quote(&format!("appliance: loading {}", boot.kernel))
    );
    out.push_str(&quote(boot.kernel));
    for (index, arg) in boot.args.iter().enumerate() {
        if has_control(arg) {
            return Err(RenderConfigError::BadArg {
                index,
                arg: arg.clone(),
            });
        }
        out.push(' ');
        out.push_str(&quote(arg));
    }
    let _ = write!(out, "\ninitrd {}\nboot\n", quote(boot.initrd));
    Ok(out)
}

/// The CPU the GRUB image runs on (`$grub_cpu`), for the disk loader's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpu {
    X86_64,
    Arm64,
}

impl Cpu {
    /// The removable-media loader path of the ESP (UEFI spec §3.5).
    pub fn removable_loader(self) -> &'static str {
        match self {
            Cpu::X86_64 => "/EFI/BOOT/BOOTX64.EFI",
            Cpu::Arm64 => "/EFI/BOOT/BOOTAA64.EFI",
        }
    }
}

/// The GRUB action of each boot-from-disk method (see the module doc for the mapping).
pub fn boot_from_disk(method: BootFromDiskMethod, cpu: Cpu) -> String {
    match method {
        BootFromDiskMethod::IpxeExit | BootFromDiskMethod::Http404 => format!(
            "# Rendered by the appliance: boot from disk ({}).\necho 'appliance: installed; leaving network boot to the firmware'\nexit\n",
            method.as_str()
        ),
        BootFromDiskMethod::IpxeSanboot => {
            let loader = quote(cpu.removable_loader());
            format!(
                "# Rendered by the appliance: boot from disk (ipxe-sanboot).
set appliance_esp=
search --no-floppy --file --set=appliance_esp {loader}
if [ -n \"$appliance_esp\" ]; then
  echo \"appliance: installed; chain-loading the disk loader from $appliance_esp\"
  chainloader \"($appliance_esp)\"{loader}
  boot
fi
echo 'appliance: no local disk with a removable-media loader; leaving to the firmware'
exit
"
            )
        }
    }
}

/// A refusal the client should retry later (an Environment not ready, an unknown one, a
/// store failure): GRUB prints `message` and returns to the chain loop.
pub fn refusal(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "# Rendered by the appliance: refused.\necho {}\n",
        quote(&format!("appliance: {}", clean.trim()))
    )
}
