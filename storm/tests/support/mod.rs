//! What the storm's root tests share: the box binary built from this tree, the box and its
//! segment ([`StormBox`]: namespaces, veth, config, `appliance serve` until healthy, `ctl`,
//! the generator's command) and the host's neighbour-table limits raised for a thousand
//! machines.
#![allow(dead_code)] // each test takes what it needs

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::netns::{Namespaces, Proc, run, tag, veth};

const GEN: &str = env!("CARGO_BIN_EXE_storm");

/// The box's side of a storm test: namespaces `{p}s{tag}` (the box, `10.254.0.1/16` on the
/// veth of the same name) and `{p}c{tag}` (the machines, `10.254.255.254/16`), a temporary
/// dir with the data dir, a 256 KiB `ipxe.efi` TFTP root, the agent Environment (256 KiB
/// kernel, 512 KiB initrd) and `config.toml`: DHCP server mode with the pool
/// `10.254.1.0`..`pool_end`, HTTP on :8081, SideroLink and admin TLS off, log level `warn`.
pub struct StormBox {
    pub ns_s: String,
    pub ns_c: String,
    pub vs: String,
    pub vc: String,
    pub data: PathBuf,
    pub cfg: PathBuf,
    pub bin: String,
    tmp: tempfile::TempDir,
    _ns: Namespaces,
}

impl StormBox {
    /// `dhcp_extra`: more lines of the `[dhcp]` table (lease times and the like).
    pub fn new(prefix: &str, pool_end: &str, dhcp_extra: &str) -> StormBox {
        let t = tag();
        let (ns_s, ns_c) = (format!("{prefix}s{t}"), format!("{prefix}c{t}"));
        let (vs, vc) = (ns_s.clone(), ns_c.clone());
        let ns = Namespaces::new(&[ns_s.clone(), ns_c.clone()]);
        veth(
            &ns_s,
            &vs,
            Some("10.254.0.1/16"),
            &ns_c,
            &vc,
            Some("10.254.255.254/16"),
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let data = dir.join("data");
        let tftp = dir.join("tftp");
        std::fs::create_dir_all(&tftp).unwrap();
        std::fs::write(tftp.join("ipxe.efi"), vec![0x5a; 256 * 1024]).unwrap();
        let env = data.join("env/agent-amd64");
        std::fs::create_dir_all(&env).unwrap();
        std::fs::write(env.join("vmlinuz"), vec![b'k'; 256 * 1024]).unwrap();
        std::fs::write(env.join("initramfs.xz"), vec![b'i'; 512 * 1024]).unwrap();
        let config = format!(
            "data_dir = \"{data}\"\ninterface = \"{vs}\"\n\
             [http]\nlisten = \"0.0.0.0:8081\"\n\
             [tftp]\nlisten = \"10.254.0.1:69\"\nroot = \"{tftp}\"\n\
             [dhcp]\nmode = \"server\"\n{dhcp_extra}\
             [[dhcp.pools]]\nrange_start = \"10.254.1.0\"\nrange_end = \"{pool_end}\"\nnetmask = \"255.255.0.0\"\n\
             [boot]\nadvertise = \"10.254.0.1:8081\"\ndownload_assets = false\n\
             [siderolink]\nenabled = false\n[admin_tls]\nenabled = false\n[log]\nlevel = \"warn\"\n",
            data = data.display(),
            tftp = tftp.display(),
        );
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let bin = appliance_bin().to_str().unwrap().to_string();
        StormBox {
            ns_s,
            ns_c,
            vs,
            vc,
            data,
            cfg,
            bin,
            tmp,
            _ns: ns,
        }
    }

    /// Adds `lines` to the `[tftp]` table of the box's config (before `start`).
    pub fn tftp_extra(&self, lines: &str) {
        let text = std::fs::read_to_string(&self.cfg).unwrap();
        let text = text.replacen("[tftp]\n", &format!("[tftp]\n{lines}"), 1);
        std::fs::write(&self.cfg, text).unwrap();
    }

    /// The value of the un-labelled sample `name` on the running box's `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_s, "curl", "-sf"])
            .arg("http://10.254.0.1:8081/metrics")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
    }

    /// The temporary dir (logs, reports, the data dir) removed with the box.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `appliance serve` in the box's namespace with `env`, its output in `dir/log`;
    /// returns once `/healthz` answers (panics after 60 s or when the box exits first).
    pub fn start(&self, log: &str, env: &[(&str, &str)]) -> Proc {
        let mut server = Proc::spawn_env(
            &self.ns_s,
            &[&self.bin, "serve", "--config", self.cfg.to_str().unwrap()],
            env,
            &self.dir().join(log),
        );
        let deadline = appliance::clock::now() + Duration::from_secs(60);
        loop {
            let healthy = Command::new("ip")
                .args(["netns", "exec", &self.ns_s, "curl", "-sf"])
                .arg("http://10.254.0.1:8081/healthz")
                .output()
                .is_ok_and(|o| o.status.success());
            if healthy {
                return server;
            }
            assert!(
                appliance::clock::now() < deadline,
                "the box never became healthy:\n{}",
                server.log()
            );
            if let Some(st) = server.child.try_wait().unwrap() {
                panic!("the box exited ({st}):\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `appliance ctl ARGS` against the running box, from its namespace.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns_s, &self.bin, "ctl"])
            .args(["--endpoint", "http://10.254.0.1:8081"])
            .args(["--data-dir", self.data.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    /// As [`Self::ctl`]; panics unless it succeeds. Its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// How many Servers the box stores (`ctl status`), None when it does not answer.
    pub fn servers_stored(&self) -> Option<usize> {
        servers_in(&String::from_utf8_lossy(&self.ctl(&["status"]).stdout))
    }

    /// The `storm` generator in the machines' namespace on their veth; the caller adds the
    /// run's flags.
    pub fn storm(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_c, GEN, "--iface", &self.vc]);
        c
    }
}

/// The Server count in `ctl status` output.
pub fn servers_in(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Server:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The real `appliance` built from this tree (`$APPLIANCE_BIN`, else `cargo build -p
/// appliance`, as kube-bridge's tests do: a no-op when it is fresh, never a stale binary).
pub fn appliance_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("APPLIANCE_BIN") {
        return PathBuf::from(b);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "-p", "appliance", "--bin", "appliance"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cargo build -p appliance runs");
    let mut exe = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line.unwrap()) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "appliance"
            && let Some(p) = msg["executable"].as_str()
        {
            exe = Some(PathBuf::from(p));
        }
    }
    assert!(child.wait().unwrap().success(), "cargo build -p appliance");
    exe.expect("cargo reported the appliance executable")
}

/// Raises the host's neighbour-table limits (one table for all namespaces; the box's
/// namespace holds an entry per machine) and puts them back on drop.
pub struct NeighLimits(Vec<(String, String)>);

impl NeighLimits {
    pub fn raise() -> NeighLimits {
        let mut old = Vec::new();
        for (k, v) in [
            ("gc_thresh1", "32768"),
            ("gc_thresh2", "65536"),
            ("gc_thresh3", "131072"),
        ] {
            let key = format!("net.ipv4.neigh.default.{k}");
            old.push((key.clone(), run(&["sysctl", "-n", &key]).trim().to_string()));
            run(&["sysctl", "-qw", &format!("{key}={v}")]);
        }
        NeighLimits(old)
    }
}

impl Drop for NeighLimits {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            let _ = Command::new("sysctl")
                .args(["-qw", &format!("{k}={v}")])
                .status();
        }
    }
}
