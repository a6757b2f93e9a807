//! Shared by the console's browser tests (`console_browser.rs`, `console_siderolink.rs`):
//! Debian's chromium as the browser under test, driven by playwright-core installed with npm
//! at a pinned version into the git-ignored `target/console-node/` the first time
//! (Playwright's own browser download is not used: it does not work here). Screenshots go to
//! `target/console-screenshots/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The playwright-core version the tests are pinned to.
pub const PLAYWRIGHT_CORE: &str = "1.64.1";
pub const CHROMIUM: &str = "/usr/bin/chromium";

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `target/` (the test binary is `target/<profile>/deps/<name>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Where screenshots go.
pub fn shots_dir() -> PathBuf {
    target_dir().join("console-screenshots")
}

fn ensure_playwright(dir: &Path) -> Result<(), String> {
    let marker = dir.join("node_modules/playwright-core/package.json");
    if let Ok(text) = std::fs::read_to_string(&marker)
        && text.contains(&format!("\"version\": \"{PLAYWRIGHT_CORE}\""))
    {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("npm")
        .current_dir(dir)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
            ".",
            &format!("playwright-core@{PLAYWRIGHT_CORE}"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "npm install playwright-core@{PLAYWRIGHT_CORE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Checks chromium, node and npm and installs playwright-core; returns the directory whose
/// `node_modules` the scripts load it from, or why the browser cannot run.
pub fn prepare() -> Result<PathBuf, String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!("{CHROMIUM} missing (apt-get install chromium)"));
    }
    if !have("node") || !have("npm") {
        return Err("node/npm missing".into());
    }
    let dir = target_dir().join("console-node");
    ensure_playwright(&dir)?;
    Ok(dir)
}
