//! The real `appliance serve` (built from this tree: `$APPLIANCE_BIN`, else `cargo build -p
//! appliance` once per test process, as qemu-tests does: kube-bridge never links the
//! appliance), servers registered by the synthetic agent of `appliance/tests/synthetic_agent`
//! and brought to `available` (accept → wipe), and the real `kube-bridge run` as a child,
//! reaching the box on its mTLS admin port (`[admin_tls] listen` on an ephemeral port) with
//! a client certificate from `appliance ctl bridge enroll` (or on the token port: [`Via`]).

#[path = "../../../appliance/tests/synthetic_agent/mod.rs"]
pub mod agent;

use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{GetRequest, ServerActionKind, ServerActionRequest};
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;

pub const BRIDGE: &str = env!("CARGO_BIN_EXE_kube-bridge");

fn appliance_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("APPLIANCE_BIN") {
            return PathBuf::from(b);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut child = Command::new(cargo)
            .current_dir(root)
            .args([
                "build",
                "-p",
                "appliance",
                "--bin",
                "appliance",
                "--message-format=json-render-diagnostics",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cargo build -p appliance runs");
        let mut exe = None;
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(msg) = serde_json::from_str::<Value>(&line.unwrap()) else {
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
    })
    .clone()
}

/// The box's config file: the test settings, its mTLS port on `tls_addr`, then `extra`.
fn write_config(config: &Path, tls_addr: SocketAddr, extra: &str) {
    std::fs::write(
        config,
        format!("[dhcp]\nmode = \"off\"\n[tftp]\nenabled = false\n[siderolink]\nlisten = \"127.0.0.1:0\"\n[agent]\nfirst_contact = \"sidero-compatible\"\n[admin_tls]\nlisten = \"{tls_addr}\"\n{extra}"),
    )
    .unwrap();
}

/// `appliance serve` on `addr` (its mTLS port on `tls_addr`, as in `config`), once both
/// answer; `None` when one of the addresses was taken.
fn spawn_box(
    config: &Path,
    data_dir: &Path,
    addr: SocketAddr,
    tls_addr: SocketAddr,
    log: &Path,
) -> Option<Child> {
    let mut child = Command::new(appliance_bin())
        .args(["serve", "--log-level", "warn", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-listen")
        .arg(addr.to_string())
        .env_remove("APPLIANCE_CONFIG")
        .env_remove("APPLIANCE_DHCP_MODE")
        .env_remove("APPLIANCE_LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200) {
            if TcpStream::connect(tls_addr).is_ok() {
                return Some(child);
            }
            // The TLS port taken meanwhile: the box serves without it; try again.
            if std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("admin TLS port not started")
            {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(Instant::now() < deadline, "box not healthy: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        log.to_ascii_lowercase().contains("address already in use"),
        "box exited: {log}"
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((code, body))
}

/// A running box; killed on drop.
pub struct Box {
    child: Child,
    pub addr: SocketAddr,
    /// The mTLS admin port.
    pub tls_addr: SocketAddr,
    /// The first (addr, tls_addr): [`Box::restart_on`] its `addr` comes back to both.
    home: (SocketAddr, SocketAddr),
    extra: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Box {
    pub fn start() -> Box {
        Box::start_with("")
    }

    /// A box whose config file ends with `extra` (TOML).
    pub fn start_with(extra: &str) -> Box {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = tmp.path().join("config.toml");
        let log = tmp.path().join("box.log");
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            write_config(&config, tls_addr, extra);
            if let Some(child) = spawn_box(&config, &data_dir, addr, tls_addr, &log) {
                return Box {
                    child,
                    addr,
                    tls_addr,
                    home: (addr, tls_addr),
                    extra: extra.to_string(),
                    data_dir,
                    config,
                    log,
                    _tmp: tmp,
                };
            }
        }
        panic!("no free port for the box");
    }

    /// Stops the box and starts it again on the same data directory, listening on `addr`
    /// (its own address, or another one the bridge does not know); the mTLS port goes home
    /// with it, or elsewhere too.
    pub fn restart_on(&mut self, addr: SocketAddr) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tls_addr = if addr == self.home.0 {
                self.home.1
            } else {
                Box::other_addr()
            };
            write_config(&self.config, tls_addr, &self.extra);
            if let Some(child) = spawn_box(&self.config, &self.data_dir, addr, tls_addr, &self.log)
            {
                self.child = child;
                self.addr = addr;
                self.tls_addr = tls_addr;
                return;
            }
            assert!(Instant::now() < deadline, "{addr} stays in use");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the box (its data directory stays; [`Box::restart_on`] starts it again).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A free address for [`Box::restart_on`].
    pub fn other_addr() -> SocketAddr {
        format!("127.0.0.1:{}", free_port()).parse().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// `appliance ctl ARGS` on this box's token port: its stdout, or its stderr as the error.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(appliance_bin())
            .arg("ctl")
            .arg("--endpoint")
            .arg(self.endpoint())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env_remove("APPLIANCE_TOKEN")
            .env_remove("APPLIANCE_ENDPOINT")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }

    /// `appliance ctl bridge enroll NAME --out DIR`: the bridge's ca.crt, tls.crt, tls.key.
    pub fn enroll(&self, name: &str, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let out = self
            .ctl(&["bridge", "enroll", name, "--out", dir.to_str().unwrap()])
            .unwrap();
        assert!(out.contains("server name appliance-admin"), "{out}");
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .unwrap()
            .trim()
            .to_string()
    }

    pub async fn admin(
        &self,
    ) -> AdminClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl tonic::service::Interceptor + use<>,
        >,
    > {
        let channel = Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let token: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", self.token()).parse().unwrap();
        AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        })
        .max_decoding_message_size(256 << 20)
    }

    /// The box's objects of `kind` (JSON), by name.
    pub async fn list(&self, kind: &str) -> std::collections::BTreeMap<String, Value> {
        let reply = self
            .admin()
            .await
            .get(GetRequest {
                kind: kind.into(),
                name: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        reply
            .objects
            .into_iter()
            .map(|o| (o.name, serde_json::from_str(&o.json).unwrap()))
            .collect()
    }

    /// `appliance ctl apply -f -` of `yaml`.
    pub async fn apply(&self, yaml: &str) {
        self.admin()
            .await
            .apply(appliance_rpc::admin::ApplyRequest {
                documents: yaml.into(),
                dry_run: false,
            })
            .await
            .unwrap();
    }

    /// Synthetic server `i` registered, accepted, wiped: available, at `10.5.<i>.<i>`.
    pub async fn available_server(&self, i: usize) -> agent::SyntheticAgent {
        let mut a = agent::SyntheticAgent::connect_from(&self.endpoint(), i, agent::source(i))
            .await
            .unwrap();
        a.register(&format!("node-{i}")).await.unwrap();
        a.report_address(&format!("10.5.{}.{}", i / 250, i % 250 + 1))
            .await
            .unwrap();
        self.admin()
            .await
            .server_action(ServerActionRequest {
                name: a.uuid.clone(),
                action: ServerActionKind::ServerActionAccept as i32,
            })
            .await
            .unwrap();
        a.wipe_if_told().await.unwrap();
        a
    }
}

impl Drop for Box {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a bridge reaches its box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The mTLS port with a certificate enrolled under the box id (the default).
    Tls,
    /// The mTLS port with the credentials already in this directory.
    Credentials(PathBuf),
    /// The plain admin port with the admin token (the bridge on the box itself).
    Token,
}

/// `kube-bridge run` for `b` against the cluster in `kubeconfig`; killed on drop.
pub struct Bridge {
    child: Child,
    log: PathBuf,
    /// The credentials directory (mTLS), as `enroll --out` wrote it.
    pub credentials: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Bridge {
    /// Over mTLS, enrolled as `box_id`.
    pub fn start(b: &Box, box_id: &str, kubeconfig: &Path) -> Bridge {
        Bridge::launch(b, box_id, kubeconfig, Via::Tls, 0, &[])
    }

    /// A bridge that sees the box's change stream `lag_ms` late (its
    /// `KUBE_BRIDGE_TEST_BOX_LAG_MS`).
    pub fn start_lagging(b: &Box, box_id: &str, kubeconfig: &Path, lag_ms: u64) -> Bridge {
        Bridge::launch(b, box_id, kubeconfig, Via::Tls, lag_ms, &[])
    }

    /// A bridge reaching its box `via`, with `extra` flags.
    pub fn start_via(b: &Box, box_id: &str, kubeconfig: &Path, via: Via, extra: &[&str]) -> Bridge {
        Bridge::launch(b, box_id, kubeconfig, via, 0, extra)
    }

    fn launch(
        b: &Box,
        box_id: &str,
        kubeconfig: &Path,
        via: Via,
        lag_ms: u64,
        extra: &[&str],
    ) -> Bridge {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("bridge.log");
        let mut credentials = tmp.path().join("credentials");
        let mut cmd = Command::new(BRIDGE);
        cmd.args(["run", "--box-id", box_id, "--poll-ms", "100"])
            .args(["--lease-duration-secs", "4"]);
        match via {
            Via::Tls | Via::Credentials(_) => {
                match via {
                    Via::Credentials(dir) => credentials = dir,
                    _ => b.enroll(box_id, &credentials),
                }
                cmd.arg("--box")
                    .arg(format!("https://{}", b.tls_addr))
                    .arg("--credentials")
                    .arg(&credentials);
            }
            Via::Token => {
                cmd.arg("--box")
                    .arg(b.endpoint())
                    .arg("--token-file")
                    .arg(b.token_file());
            }
        }
        let child = cmd
            .args(extra)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--log", "info,kube_bridge=debug"])
            .env_remove("KUBE_BRIDGE_CREDENTIALS")
            .env_remove("KUBE_BRIDGE_TOKEN_FILE")
            .env_remove("KUBE_BRIDGE_BOX_SERVER_NAME")
            .env("KUBE_BRIDGE_TEST_BOX_LAG_MS", lag_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Bridge {
            child,
            log,
            credentials,
            _tmp: tmp,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The bridge's process id (for its RSS in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not exited, crashed or stopped).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` and `ctx()` after `secs`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    ctx: impl Fn() -> String,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", ctx());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
