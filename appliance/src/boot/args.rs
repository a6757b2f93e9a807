//! Kernel command lines, as Sidero builds them (facts §2.3).
//!
//! Pure. `endpoint` is the `host:port` under which booting servers reach this box.

/// Talos machinery `kernel.DefaultArgs` without the version-dependent IMA/SELinux args.
pub const TALOS_DEFAULT_ARGS: [&str; 6] = [
    "init_on_alloc=1",
    "slab_nomerge=",
    "pti=on",
    "consoleblank=0",
    "nvme_core.io_timeout=4294967295",
    "printk.devkmsg=on",
];

/// The key of a kernel argument: the part before the first `=` (the whole argument when
/// there is none).
pub fn key(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

/// Merges `extra` over `base` by key: the first extra argument with a key replaces every
/// base argument with that key (at the position of the first one), further extras with the
/// same key are added after it; extras with new keys are appended.
pub fn merge_by_key(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    let mut replaced: Vec<&str> = Vec::new();
    for e in extra {
        let k = key(e);
        if replaced.contains(&k) {
            // Insert after the last argument with this key.
            let pos = out
                .iter()
                .rposition(|a| key(a) == k)
                .map_or(out.len(), |p| p + 1);
            out.insert(pos, e.clone());
            continue;
        }
        if let Some(first) = out.iter().position(|a| key(a) == k) {
            out[first] = e.clone();
            let mut i = first + 1;
            while i < out.len() {
                if key(&out[i]) == k {
                    out.remove(i);
                } else {
                    i += 1;
                }
            }
            replaced.push(k);
        } else {
            out.push(e.clone());
            replaced.push(k);
        }
    }
    out
}

/// The agent environment's command line: Talos defaults, consoles (the screen and the
/// architecture's first serial port: `ttyS0` on x86-64, the PL011 `ttyAMA0` on ARM64),
/// `initrd=initramfs.xz`, `panic=30`, `sidero.mac=<mac>` (when known),
/// `sidero.endpoint=<endpoint>`, then the operator's extra args merged by key.
pub fn agent_args(
    arch: super::Arch,
    mac: Option<&str>,
    endpoint: &str,
    extra: &[String],
) -> Vec<String> {
    let mut base: Vec<String> = TALOS_DEFAULT_ARGS.iter().map(|s| s.to_string()).collect();
    let serial = match arch {
        super::Arch::Amd64 => "console=ttyS0",
        super::Arch::Arm64 => "console=ttyAMA0",
    };
    base.extend(
        ["console=tty0", serial, "initrd=initramfs.xz", "panic=30"]
            .iter()
            .map(|s| s.to_string()),
    );
    if let Some(mac) = mac {
        base.push(format!("sidero.mac={mac}"));
    }
    base.push(format!("sidero.endpoint={endpoint}"));
    merge_by_key(&base, extra)
}

/// A stored Environment's command line: its own args, plus (each only if no argument with
/// that key is there already, as Sidero's `appendTalosArguments`)
/// `talos.config=http://<endpoint>/configdata?uuid=`, `siderolink.api=<endpoint>` and, with
/// SideroLink on (`siderolink` = the overlay's server address),
/// `talos.logging.kernel=tcp://[<addr>]:4001` and `talos.events.sink=[<addr>]:4002`.
pub fn environment_args(
    spec_args: &[String],
    endpoint: &str,
    siderolink: Option<std::net::Ipv6Addr>,
) -> Vec<String> {
    let mut out = spec_args.to_vec();
    let mut appended = vec![
        format!("talos.config=http://{endpoint}/configdata?uuid="),
        format!("siderolink.api={endpoint}"),
    ];
    if let Some(addr) = siderolink {
        appended.push(format!("talos.logging.kernel=tcp://[{addr}]:4001"));
        appended.push(format!("talos.events.sink=[{addr}]:4002"));
    }
    for a in appended {
        let k = key(&a).to_string();
        if !out.iter().any(|x| key(x) == k) {
            out.push(a);
        }
    }
    out
}
