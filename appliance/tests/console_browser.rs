//! The web console in a real browser: headless Debian Chromium driven by playwright-core
//! (`appliance/console-tests/e2e.mjs`) against a real `appliance serve`.
//!
//! playwright-core is installed with npm at a pinned version into the git-ignored
//! `target/console-node/` the first time (Playwright's own browser download is not used:
//! it does not work here, and Debian's chromium is the browser under test). Skips with a
//! printed reason when chromium, node or npm is missing. Screenshots (laptop and phone
//! widths) and page weights land in `target/console-screenshots/`.

mod console_support;

use std::path::Path;
use std::process::Command;

use console_support::{Appliance, target_dir};

/// The playwright-core version the test is pinned to.
const PLAYWRIGHT_CORE: &str = "1.64.1";
const CHROMIUM: &str = "/usr/bin/chromium";

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
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

#[test]
fn console_end_to_end_in_chromium() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "SKIP console_end_to_end_in_chromium: {CHROMIUM} missing (apt-get install chromium)"
        );
        return;
    }
    if !have("node") || !have("npm") {
        eprintln!("SKIP console_end_to_end_in_chromium: node/npm missing");
        return;
    }
    let target = target_dir();
    let node_dir = target.join("console-node");
    if let Err(e) = ensure_playwright(&node_dir) {
        eprintln!("SKIP console_end_to_end_in_chromium: {e}");
        return;
    }
    let shots = target.join("console-screenshots");
    // A pool in the config so the settings page has one to show (DHCP itself stays off).
    let app = Appliance::start_with(
        "[[dhcp.pools]]\nrange_start = \"10.10.0.100\"\nrange_end = \"10.10.0.199\"\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.10.0.1\"\ndns = [\"10.10.0.1\"]\n\
         domain = \"lab.example\"\n",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console-tests/e2e.mjs");
    let out = Command::new("node")
        .arg(&script)
        .env("BASE_URL", app.base_url())
        .env("DATA_DIR", app.data_dir())
        .env("APPLIANCE_BIN", console_support::BIN)
        .env("SHOTS_DIR", &shots)
        .env("NODE_PATH", node_dir.join("node_modules"))
        .env("CHROMIUM", CHROMIUM)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    for name in [
        "login-laptop",
        "login-phone",
        "overview-laptop",
        "overview-phone",
        "servers-laptop",
        "servers-phone",
        "server-detail-laptop",
        "server-detail-phone",
        "classes-laptop",
        "classes-phone",
        "class-edit-error-laptop",
        "environment-laptop",
        "environment-phone",
        "settings-laptop",
        "settings-phone",
    ] {
        let p = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "screenshot {} missing or empty", p.display());
    }
}
