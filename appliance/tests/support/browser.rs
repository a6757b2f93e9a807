//! Shared by the console's browser tests (`console_browser.rs`, `console_siderolink.rs`):
//! Debian's chromium as the browser under test, driven by playwright-core installed with npm
//! at a pinned version into the git-ignored `target/console-node/` the first time
//! (Playwright's own browser download is not used: it does not work here). Screenshots go to
//! `target/console-screenshots/`. [`run_script`] runs a script of `console-tests/` and
//! answers its requests (the other side of `console-tests/harness.mjs`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

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

/// How a console script ended and what it printed.
pub struct ScriptRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `console-tests/{script}` with node against the box at `base_url` (its data dir
/// `data_dir`, for the admin token), playwright-core from `node_dir` (see [`prepare`]),
/// Debian's chromium, screenshots to [`shots_dir`], and `env`. Each line the script prints
/// is echoed; a line `@{who} CMD` is answered on its stdin with `answer(CMD)` (`@ok …` or
/// `@err …`, echoed too). Returns once the script exited; its stderr is echoed then.
pub fn run_script(
    node_dir: &Path,
    script: &str,
    base_url: &str,
    data_dir: &Path,
    env: &[(&str, String)],
    who: &str,
    mut answer: impl FnMut(&str) -> String,
) -> ScriptRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("console-tests")
        .join(script);
    let mut child = Command::new("node")
        .arg(&path)
        .env("BASE_URL", base_url)
        .env("DATA_DIR", data_dir)
        .env("SHOTS_DIR", shots_dir())
        .env("NODE_PATH", node_dir.join("node_modules"))
        .env("CHROMIUM", CHROMIUM)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut to_script = child.stdin.take().unwrap();
    let prefix = format!("@{who} ");
    let mut stdout = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("script output");
        println!("{line}");
        stdout.push_str(&line);
        stdout.push('\n');
        if let Some(cmd) = line.strip_prefix(&prefix) {
            let reply = answer(cmd.trim());
            println!("{reply}");
            // The script may already have failed and exited: a closed pipe is not our error.
            let _ = writeln!(to_script, "{reply}");
            let _ = to_script.flush();
        }
    }
    drop(to_script);
    let status = child.wait().expect("node exits");
    let stderr = stderr_reader.join().unwrap();
    eprintln!("{stderr}");
    ScriptRun {
        status,
        stdout,
        stderr,
    }
}
