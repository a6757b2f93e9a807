//! The test Environment: the host's Debian kernel and a busybox initramfs whose /init prints
//! [`MARKER`] (followed by ` cmdline=<kernel command line>`) on the serial console and powers
//! off. Built once per test process by `scripts/build-test-initramfs` into the git-ignored
//! `qemu-tests/work/env/test-env/`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};

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
