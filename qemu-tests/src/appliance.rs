//! The real `appliance serve` inside the lab namespace, bound to the bridge address, with a
//! test config (data dir in the lab directory, TFTP root /usr/lib/ipxe, HTTP on :8081), plus
//! `appliance ctl` and plain-HTTP helpers that run inside the namespace (the bridge address is
//! only reachable there).
//!
//! The binary: `$APPLIANCE_BIN` if set (`scripts/test` sets it to its own build's), else
//! `cargo build -p appliance --bin appliance` is run once per test process (a no-op when up to
//! date) and the path Cargo reports is used, so the tests always run the binary built from
//! this tree, whatever the target dir.

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::{BRIDGE, BRIDGE_ADDR, Netns};
use crate::process::{Guarded, run};
use crate::{tail, workspace_root};

/// HTTP + gRPC port of the appliance in the lab.
pub const HTTP_PORT: u16 = 8081;

/// Path of the `appliance` binary to test (built on first use).
pub fn binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("appliance", "appliance").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("appliance binary: {e}"))
}

/// The executable of the workspace binary `bin` of `package`: `$<BIN>_BIN` when set
/// (`APPLIANCE_BIN`, `KUBE_BRIDGE_BIN`, `KUBE_TEST_APISERVER_BIN`; `scripts/test` sets them
/// to its first step's build, so the QEMU tests build nothing), else
/// `cargo build -p <package> --bin <bin>` in this workspace (a no-op when up to date) and the
/// path of the executable Cargo reports, so it is this tree's, whatever the target dir.
pub(crate) fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let var = format!("{}_BIN", bin.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{var}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut child = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("run cargo build -p {package}"))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut exe = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("read cargo output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == bin
            && let Some(path) = msg["executable"].as_str()
        {
            exe = Some(PathBuf::from(path));
        }
    }
    let status = child.wait().context("wait for cargo build")?;
    if !status.success() {
        bail!("cargo build -p {package} --bin {bin} failed ({status})");
    }
    exe.ok_or_else(|| anyhow!("cargo build reported no {bin} executable"))
}

/// The appliance's DHCP pool in the lab (server mode).
pub const POOL: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 149));

/// How the appliance under test is configured.
#[derive(Debug, Clone)]
pub struct ApplianceConfig {
    /// `[dhcp] mode`: "server", "proxy" or "off".
    pub dhcp_mode: String,
    /// Give DHCP server mode the lab pool [`POOL`] on the bridge subnet.
    pub pool: bool,
    /// A directory with `vmlinuz` + `initramfs.xz` installed as the built-in agent
    /// environment `agent-amd64` (what unknown servers boot).
    pub agent_env: Option<PathBuf>,
    /// The same for `agent-arm64` (what unknown ARM64 servers boot).
    pub agent_env_arm64: Option<PathBuf>,
    /// `[boot] boot_from_disk_method`.
    pub boot_from_disk_method: Option<String>,
    /// More TOML appended to the generated config.
    pub extra_toml: String,
    /// `[http] listen` (default: the bridge's IPv4 address, port 8081).
    pub http_listen: Option<String>,
    /// tracing filter.
    pub log_level: String,
}

impl ApplianceConfig {
    fn with_mode(mode: &str, pool: bool) -> ApplianceConfig {
        ApplianceConfig {
            dhcp_mode: mode.to_string(),
            pool,
            agent_env: None,
            agent_env_arm64: None,
            boot_from_disk_method: None,
            extra_toml: String::new(),
            http_listen: None,
            log_level: "debug,h2=info,hyper=info,tower=info,tonic=info,axum=info".to_string(),
        }
    }

    /// DHCP server mode with the lab pool.
    pub fn server() -> ApplianceConfig {
        ApplianceConfig::with_mode("server", true)
    }

    /// proxyDHCP beside another DHCP server: boot information only, no pool.
    pub fn proxy() -> ApplianceConfig {
        ApplianceConfig::with_mode("proxy", false)
    }

    /// No DHCP at all.
    pub fn dhcp_off() -> ApplianceConfig {
        ApplianceConfig::with_mode("off", false)
    }

    /// Boot `dir`'s `vmlinuz` + `initramfs.xz` as the agent environment.
    pub fn agent_env(mut self, dir: &Path) -> ApplianceConfig {
        self.agent_env = Some(dir.to_path_buf());
        self
    }

    /// Boot `dir`'s `vmlinuz` + `initramfs.xz` as the ARM64 agent environment.
    pub fn agent_env_arm64(mut self, dir: &Path) -> ApplianceConfig {
        self.agent_env_arm64 = Some(dir.to_path_buf());
        self
    }

    pub fn boot_from_disk_method(mut self, method: &str) -> ApplianceConfig {
        self.boot_from_disk_method = Some(method.to_string());
        self
    }

    fn render(&self, data_dir: &Path, agent_dir: &Path) -> String {
        let mut t = format!(
            "data_dir = \"{data}\"\ninterface = \"{BRIDGE}\"\n\n[http]\nlisten = \"{listen}\"\n\n[dhcp]\nmode = \"{mode}\"\n\n[tftp]\nenabled = true\nlisten = \"{BRIDGE_ADDR}:69\"\nroot = \"{tftp}\"\n\n[boot]\nagent_dir = \"{agent}\"\n",
            data = data_dir.display(),
            listen = self
                .http_listen
                .clone()
                .unwrap_or_else(|| format!("{BRIDGE_ADDR}:{HTTP_PORT}")),
            mode = self.dhcp_mode,
            tftp = crate::IPXE_DIR,
            agent = agent_dir.display(),
        );
        if let Some(m) = &self.boot_from_disk_method {
            t.push_str(&format!("boot_from_disk_method = \"{m}\"\n"));
        }
        t.push_str(&format!(
            "\n[log]\nformat = \"human\"\nlevel = \"{}\"\n",
            self.log_level
        ));
        if self.pool {
            let (first, last) = POOL;
            t.push_str(&format!(
                "\n[[dhcp.pools]]\nrange_start = \"{first}\"\nrange_end = \"{last}\"\nnetmask = \"255.255.255.0\"\nrouter = \"{BRIDGE_ADDR}\"\nlease_time_secs = 600\n"
            ));
        }
        t.push('\n');
        t.push_str(&self.extra_toml);
        t
    }
}

#[derive(Debug)]
pub struct Appliance {
    process: Guarded,
    bin: PathBuf,
    data_dir: PathBuf,
    config_path: PathBuf,
    ns_name: String,
}

impl Appliance {
    pub(crate) fn start(ns: &Netns, dir: &Path, config: &ApplianceConfig) -> Result<Appliance> {
        let bin = binary()?;
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let agent_dir = dir.join("agent");
        for (src, name) in [
            (&config.agent_env, "agent-amd64"),
            (&config.agent_env_arm64, "agent-arm64"),
        ] {
            let Some(src) = src else { continue };
            let env = agent_dir.join(name);
            std::fs::create_dir_all(&env)?;
            for f in ["vmlinuz", "initramfs.xz"] {
                std::fs::copy(src.join(f), env.join(f))
                    .with_context(|| format!("install {} as {name}", src.join(f).display()))?;
            }
        }
        let config_path = dir.join("appliance.toml");
        let toml = config.render(&data_dir, &agent_dir);
        std::fs::write(&config_path, toml)?;
        let mut cmd = ns.command(bin.to_str().context("binary path is not UTF-8")?);
        cmd.arg("serve").arg("--config").arg(&config_path);
        // No colours in the log file.
        cmd.env("NO_COLOR", "1");
        let process = Guarded::spawn("appliance", cmd, &dir.join("appliance.log"))?;
        let mut appliance = Appliance {
            process,
            bin,
            data_dir,
            config_path,
            ns_name: ns.name().to_string(),
        };
        appliance.wait_ready(ns, Duration::from_secs(30))?;
        Ok(appliance)
    }

    fn wait_ready(&mut self, ns: &Netns, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.exited() {
                bail!(
                    "appliance serve exited ({status}) during startup\n--- log ---\n{}",
                    tail(&self.log(), 4000)
                );
            }
            if let Ok((200, _)) = http_get(ns, &format!("{}/healthz", self.base_url())) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "appliance not healthy within {timeout:?}\n--- log ---\n{}",
                    tail(&self.log(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://10.77.0.1:8081`
    pub fn base_url(&self) -> String {
        format!("http://{BRIDGE_ADDR}:{HTTP_PORT}")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Fails when the process is no longer running (a crash during a test).
    pub fn check_alive(&mut self) -> Result<()> {
        match self.process.exited() {
            None => Ok(()),
            Some(status) => bail!(
                "appliance exited ({status})\n--- log ---\n{}",
                tail(&self.log(), 4000)
            ),
        }
    }

    /// Runs `appliance ctl <args>` against this appliance (inside the namespace).
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_name])
            .arg(&self.bin)
            .arg("ctl")
            .arg("--endpoint")
            .arg(self.base_url())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args);
        run(&mut cmd)
    }

    /// `ctl server timeline <uuid> -o json` once it holds a `step` event, or as it stands
    /// after `timeout`. The box writes the timeline in batches (`timeline::BATCH_WINDOW`)
    /// after the event, so a read right after, say, the agent's registration line may
    /// not hold that registration yet; CI once read an empty timeline so.
    pub fn timeline_with(
        &self,
        uuid: &str,
        step: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let t: serde_json::Value =
                serde_json::from_str(&self.ctl(&["server", "timeline", uuid, "-o", "json"])?)
                    .context("timeline json")?;
            let has = t["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["step"] == step));
            if has || Instant::now() > deadline {
                return Ok(t);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `appliance ctl apply -f <file with yaml>`.
    pub fn apply(&self, dir: &Path, yaml: &str) -> Result<String> {
        let file = tempfile::Builder::new()
            .prefix("apply-")
            .suffix(".yaml")
            .tempfile_in(dir)?;
        std::fs::write(file.path(), yaml)?;
        self.ctl(&["apply", "-f", file.path().to_str().context("utf-8 path")?])
    }
}

/// GET `url` from inside the namespace: (status, body). Status 0 = no HTTP response.
pub fn http_get(ns: &Netns, url: &str) -> Result<(u16, String)> {
    let out = ns
        .command("curl")
        .args(["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", url])
        .stdin(Stdio::null())
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code = code.trim().parse().unwrap_or(0);
    Ok((code, body.to_string()))
}
