//! The test Environment: the host's Debian kernel and a busybox initramfs whose /init prints
//! [`MARKER`] (followed by ` cmdline=<kernel command line>`) on the serial console and powers
//! off. Built once per test process by `scripts/build-test-initramfs` into the git-ignored
//! `qemu-tests/work/env/test-env/`.
//!
//! Also the agent environment ([`agent_env`]): `scripts/build-agent-initramfs` with this
//! tree's `appliance` binary, into `qemu-tests/work/env/agent-amd64/`; the ARM64 agent
//! environment ([`agent_env_arm64`]): `scripts/build-agent-initramfs --arch arm64` with this
//! tree's aarch64 musl release binary (what `scripts/build-static` builds before
//! `scripts/test`), into `qemu-tests/work/env/agent-arm64/`; and the SideroLink
//! test Environment ([`talos_standin_env`]): `scripts/build-talos-standin-initramfs` (the
//! Talos stand-in of `qemu-tests/talos-standin`, the guest kernel's WireGuard, Debian's
//! `wg`), into `qemu-tests/work/env/talos-standin/`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

use crate::appliance::binary;
use crate::process::run;
use crate::workspace_root;

/// What the test Environment's /init prints on the serial console.
pub const MARKER: &str = "APPLIANCE-TEST-ENV-BOOTED";

#[derive(Debug, Clone)]
pub struct TestEnv {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Builds the test Environment (once per process) and returns its files.
pub fn test_env() -> Result<&'static TestEnv> {
    static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = workspace_root();
        let dir = root.join("qemu-tests/work/env/test-env");
        run(Command::new(root.join("scripts/build-test-initramfs")).arg(&dir))
            .map_err(|e| format!("{e:#}"))?;
        Ok(TestEnv {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initramfs.xz"),
            dir,
        })
    })
    .as_ref()
    .map_err(|e| anyhow!("building the test Environment: {e}"))
}

/// Builds the agent environment from this tree's binary (once per test process) and
/// returns its directory (`vmlinuz`, `initramfs.xz`).
pub fn agent_env() -> Result<PathBuf> {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let build = || -> Result<PathBuf> {
            let bin = binary()?;
            let root = workspace_root();
            let dir = root.join("qemu-tests/work/env/agent-amd64");
            let out = Command::new(root.join("scripts/build-agent-initramfs"))
                .arg(&dir)
                .env("AGENT_BIN", &bin)
                // The debug binary is large: trade a little size for build time.
                .env("AGENT_XZ_PRESET", "1")
                .output()
                .context("run scripts/build-agent-initramfs")?;
            if !out.status.success() {
                bail!(
                    "scripts/build-agent-initramfs failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
            Ok(dir)
        };
        build().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!("building the agent environment: {e}"))
}

/// Builds the ARM64 agent environment (once per test process) from this tree's aarch64
/// musl release binary and returns its directory (`vmlinuz`, `initramfs.xz`).
pub fn agent_env_arm64() -> Result<PathBuf> {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let build = || -> Result<PathBuf> {
            let root = workspace_root();
            let bin = root.join("target/aarch64-unknown-linux-musl/release/appliance");
            if !bin.is_file() {
                bail!(
                    "{} missing: run scripts/build-static (scripts/test's CI runs it first)",
                    bin.display()
                );
            }
            let dir = root.join("qemu-tests/work/env/agent-arm64");
            let out = Command::new(root.join("scripts/build-agent-initramfs"))
                .args(["--arch", "arm64"])
                .arg(&dir)
                .env("AGENT_BIN", &bin)
                .current_dir(&root)
                .output()
                .context("run scripts/build-agent-initramfs --arch arm64")?;
            if !out.status.success() {
                bail!(
                    "scripts/build-agent-initramfs --arch arm64 failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
            Ok(dir)
        };
        build().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!("building the ARM64 agent environment: {e}"))
}

/// Builds the Talos stand-in Environment (once per test process) and returns its files.
pub fn talos_standin_env() -> Result<&'static TestEnv> {
    static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let build = || -> Result<TestEnv> {
            let root = workspace_root();
            let dir = root.join("qemu-tests/work/env/talos-standin");
            let out = Command::new(root.join("scripts/build-talos-standin-initramfs"))
                .arg(&dir)
                .current_dir(&root)
                .output()
                .context("run scripts/build-talos-standin-initramfs")?;
            if !out.status.success() {
                bail!(
                    "scripts/build-talos-standin-initramfs failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
            Ok(TestEnv {
                kernel: dir.join("vmlinuz"),
                initrd: dir.join("initramfs.xz"),
                dir,
            })
        };
        build().map_err(|e| format!("{e:#}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("building the Talos stand-in Environment: {e}"))
}
