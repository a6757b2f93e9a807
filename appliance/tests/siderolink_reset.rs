//! Root-only: reset without a BMC. The box's userspace SideroLink endpoint (in this test
//! process, with the real lifecycle and its power hook `ServerPower`) and Debian's
//! `wireguard-go` + `wg` as two Talos nodes in network namespaces this test creates; in
//! each node's namespace this test binary, re-executed (`standin_child`), plays Talos's
//! machine API on `[<node overlay address>]:50000`: TLS with a certificate of the
//! cluster's CA, client certificates of that CA required (any other refused at the
//! handshake), HTTP/2, `/machine.MachineService/Reset` decoded with its own message
//! definition written from the facts (not the box's proto), one line per request in a file.
//!
//! Proves, through the real release path (`Lifecycle::release` → power hook → no BMC →
//! Talos reset over an outbound overlay connection):
//! - no talosconfig: the release completes (`released`), `ResetViaTalos=False` reason
//!   `NoTalosconfig` after the bounded retries, nothing reaches the node;
//! - a talosconfig whose client certificate is not of the cluster CA: the stand-in refuses
//!   the handshake, the box raises `ResetViaTalos=False` with the reason, no Reset arrives;
//! - the right talosconfig (chosen by the binding's cluster label): exactly one Reset with
//!   graceful=false, reboot=true, mode=SYSTEM_DISK reaches the node, `ResetViaTalos=True`,
//!   and the server stays `released` (its agent wipes it when it PXE boots);
//!
//! All within bounded waits (no hang).
//!
//! Skips with a printed reason when not root or a tool is missing, unless APPLIANCE_E2E=1
//! (CI), where that is a failure.

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use appliance::model::{Condition, ConditionStatus, Kind, Object};
use appliance::reconcile::Lifecycle;
use appliance::reconcile::apply::{ReleaseBy, server_state};
use appliance::reconcile::power::{OsResetSlot, ServerPower};
use appliance::siderolink::endpoint::{Endpoint, EndpointConfig};
use appliance::siderolink::identity::Identity;
use appliance::siderolink::reset::{ResetSettings, TalosReset};
use appliance::siderolink::{peers, provision};
use appliance::store::Store;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::{Body, Bytes, Frame};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ED25519};
use tokio::sync::watch;

#[path = "support/prereq.rs"]
mod prereq;
#[path = "support/wg.rs"]
mod wg;

use wg::{Lab, allocate};

fn skip_reason() -> Option<String> {
    prereq::missing_root_or(wg::TOOLS, wg::NEEDS)
}

// ---- the stand-in machine API (runs inside a node's namespace) ----

/// Talos's `machine.ResetRequest`, written from the facts (`ResetRequest { bool graceful =
/// 1; bool reboot = 2; repeated ResetPartitionSpec system_partitions_to_wipe = 3; repeated
/// string user_disks_to_wipe = 4; WipeMode mode = 5; }`).
#[derive(Clone, PartialEq, prost::Message)]
struct WireResetRequest {
    #[prost(bool, tag = "1")]
    graceful: bool,
    #[prost(bool, tag = "2")]
    reboot: bool,
    #[prost(message, repeated, tag = "3")]
    system_partitions_to_wipe: Vec<WirePartition>,
    #[prost(string, repeated, tag = "4")]
    user_disks_to_wipe: Vec<String>,
    #[prost(int32, tag = "5")]
    mode: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WirePartition {
    #[prost(string, tag = "1")]
    label: String,
    #[prost(bool, tag = "2")]
    wipe: bool,
}

/// One gRPC message (empty `ResetResponse`) then `grpc-status: 0` trailers.
struct GrpcReply(u8);

impl Body for GrpcReply {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0 += 1;
        Poll::Ready(match self.0 {
            1 => Some(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])))),
            2 => {
                let mut t = hyper::HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                Some(Ok(Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

fn append(out: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Run inside a node's namespace by the main test (`SL_STANDIN_ADDR` = the node's overlay
/// address; `SL_STANDIN_DIR` holds `ca.pem` (client CA), `server.pem`, `server.key`;
/// lines go to `SL_STANDIN_DIR/requests`). Does nothing when run on its own.
#[tokio::test]
async fn standin_child() {
    let (Ok(addr), Ok(dir)) = (
        std::env::var("SL_STANDIN_ADDR"),
        std::env::var("SL_STANDIN_DIR"),
    ) else {
        return;
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = PathBuf::from(dir);
    let out = dir.join("requests");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(dir.join("server.pem")).unwrap()],
            PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let addr: Ipv6Addr = addr.parse().unwrap();
    let listener = tokio::net::TcpListener::bind((addr, 50000)).await.unwrap();
    append(&out, "ready");
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let (acceptor, out) = (acceptor.clone(), out.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    append(&out, &format!("refused {e}"));
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let out = out.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let mut body = req.into_body();
                        let mut bytes = Vec::new();
                        while let Some(frame) =
                            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                        {
                            if let Ok(Ok(d)) = frame.map(|f| f.into_data()) {
                                bytes.extend_from_slice(&d);
                            }
                        }
                        let line = match (path.as_str(), bytes.get(5..)) {
                            ("/machine.MachineService/Reset", Some(msg)) => {
                                match <WireResetRequest as prost::Message>::decode(msg) {
                                    Ok(r) => format!(
                                        "reset graceful={} reboot={} mode={} partitions={} user_disks={}",
                                        r.graceful,
                                        r.reboot,
                                        r.mode,
                                        r.system_partitions_to_wipe.len(),
                                        r.user_disks_to_wipe.len()
                                    ),
                                    Err(e) => format!("undecodable {e}"),
                                }
                            }
                            _ => format!("other {path}"),
                        };
                        append(&out, &line);
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(GrpcReply(0))
                                .unwrap(),
                        )
                    }
                },
            );
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

// ---- certificates: a Talos-like cluster CA (Ed25519), the node's and clients' ----

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// (certificate pem, key pem) issued by `ca` for `names`.
fn issue(ca: &Ca, names: Vec<String>) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A talosconfig as talosctl writes it (base64 PEM, Talos's Ed25519 key label).
fn talosconfig(ca_pem: &str, client: &(String, String)) -> Vec<u8> {
    let key = client.1.replace("PRIVATE KEY", "ED25519 PRIVATE KEY");
    format!(
        "context: c\ncontexts:\n  c:\n    endpoints: [192.0.2.1]\n    ca: {}\n    crt: {}\n    key: {}\n",
        STANDARD.encode(ca_pem),
        STANDARD.encode(&client.0),
        STANDARD.encode(key)
    )
    .into_bytes()
}

/// Starts the stand-in in `ns` for `addr`, trusting client certificates of `ca`.
fn start_standin(ns: &str, dir: &Path, addr: Ipv6Addr, ca: &Ca) -> StandIn {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = issue(ca, vec![addr.to_string()]);
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    let exe = std::env::current_exe().unwrap();
    let log = std::fs::File::create(dir.join("child.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "standin_child", "--nocapture"])
        .env("SL_STANDIN_ADDR", addr.to_string())
        .env("SL_STANDIN_DIR", dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let s = StandIn {
        child,
        out: dir.join("requests"),
    };
    for _ in 0..200 {
        if s.lines().iter().any(|l| l == "ready") {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "stand-in in {ns} did not start: {}",
        std::fs::read_to_string(dir.join("child.log")).unwrap_or_default()
    );
}

struct StandIn {
    child: Child,
    out: PathBuf,
}

impl StandIn {
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn resets(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| !l.starts_with("ready") && !l.starts_with("refused"))
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn condition(store: &Store, name: &str) -> Option<Condition> {
    let Object::Server(s) = store.get(Kind::Server, name).unwrap().unwrap().object else {
        panic!("not a server");
    };
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ResetViaTalos")
}

fn phase(store: &Store, name: &str) -> String {
    let Object::Server(s) = store.get(Kind::Server, name).unwrap().unwrap().object else {
        panic!("not a server");
    };
    server_state(&s).phase.to_string()
}

/// Waits (bounded) until `f` holds for the server's ResetViaTalos condition.
async fn wait_condition(
    store: &Store,
    name: &str,
    within: Duration,
    f: impl Fn(&Condition) -> bool,
) -> Condition {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let c = condition(store, name);
        if let Some(c) = c.as_ref().filter(|c| f(c)) {
            return c.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: ResetViaTalos not as expected within {within:?}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_server_without_bmc_is_reset_through_talos_api() {
    if let Some(why) = skip_reason() {
        prereq::skip(
            "released_server_without_bmc_is_reset_through_talos_api",
            &why,
        );
        return;
    }
    appliance::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let mut config = appliance::config::Config::default();
    // The lifecycle's own reboot-timeout retry stays out of the way of this test.
    config.lifecycle.reboot_timeout = Duration::from_secs(3600);
    let slot = OsResetSlot::default();
    let power = appliance::bmc::power::PowerControl::new(store.clone(), &config.bmc);
    let (lc, reconcile) = Lifecycle::new(
        store.clone(),
        config.lifecycle.clone(),
        Arc::new(ServerPower::new(power, slot.clone())),
        None,
    );
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(reconcile.run(shutdown.clone()));

    let mut random = [0u8; 64];
    getrandom::fill(&mut random).unwrap();
    let identity = Arc::new(Identity::generate(random));
    let prefix = identity.prefix();
    let server = prefix.server_address();
    let tag = format!("{}r", std::process::id() % 10000);
    let net = 240 + (std::process::id() % 3) as u8 * 4;
    let mut lab = Lab::default();
    let na = lab.node(&format!("{tag}a"), net);
    let nb = lab.node(&format!("{tag}b"), net + 1);
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let endpoint = Endpoint::new(
        socket,
        identity.clone(),
        &EndpointConfig {
            max_log_line: 16 * 1024,
            max_log_connections: 64,
            max_connections_per_node: 4,
            discard_port: None,
            handshake_limit: appliance::siderolink::endpoint::HANDSHAKE_LIMIT,
        },
        11,
        Arc::new(Default::default()),
    );
    let stats = endpoint.stats();
    let reset = TalosReset::new(
        store.clone(),
        endpoint.connector(),
        prefix,
        ResetSettings {
            attempts: 2,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        },
    );
    slot.set(Arc::new(reset.clone()));
    let (peers_tx, peers_rx) = watch::channel(Arc::new(Vec::new()));
    tokio::spawn(peers::follow(
        store.clone(),
        prefix,
        peers_tx,
        shutdown.clone(),
    ));
    tokio::spawn(endpoint.run(peers_rx, shutdown.clone()));

    // node-a: no cluster label (the `default` talosconfig); node-b: cluster `prod`.
    allocate(&lc, "node-a").await;
    allocate(&lc, "node-b").await;
    store
        .transact(|t| {
            let Some(s) = t.get(Kind::ServerBinding, "node-b")? else {
                panic!("binding");
            };
            let Object::ServerBinding(mut b) = s.object else {
                panic!("binding");
            };
            b.metadata
                .labels
                .insert(provision::CLUSTER_LABEL.into(), "prod".into());
            t.put(&Object::ServerBinding(b)).map(|_| ())
        })
        .unwrap();
    let addr_a =
        provision::bind_node(&store, prefix, "node-a", &na.public, vec![[0x31; 8]]).unwrap();
    let addr_b =
        provision::bind_node(&store, prefix, "node-b", &nb.public, vec![[0x32; 8]]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server_key = identity.public_key_base64();
    for (n, addr, net) in [(&na, addr_a, net), (&nb, addr_b, net + 1)] {
        let ep: SocketAddr = format!("198.18.{net}.1:{port}").parse().unwrap();
        lab.wireguard(
            n,
            dir.path(),
            &server_key,
            ep,
            &format!("{addr}/64"),
            server,
        );
    }
    // Both nodes hold a session (wireguard-go sends its first keepalive at once).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stats.handshakes.get() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes did not handshake: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cluster_ca = ca();
    let other_ca = ca();
    let standin_a = start_standin(&na.ns, &dir.path().join("standin-a"), addr_a, &cluster_ca);
    let standin_b = start_standin(&nb.ns, &dir.path().join("standin-b"), addr_b, &cluster_ca);

    // 1. No talosconfig: the release completes, the condition says so, nothing is sent.
    lc.release(ReleaseBy::Server("node-a".into()))
        .await
        .unwrap();
    assert_eq!(phase(&store, "node-a"), "released");
    let c = wait_condition(&store, "node-a", Duration::from_secs(20), |c| {
        c.message
            .as_deref()
            .unwrap_or("")
            .contains("attempt 2 of 2")
    })
    .await;
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason.as_deref(), Some("NoTalosconfig"), "{c:?}");
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .contains("ctl talosconfig set"),
        "{c:?}"
    );
    assert_eq!(phase(&store, "node-a"), "released");
    assert!(standin_a.lines() == ["ready"], "{:?}", standin_a.lines());

    // 2. A client certificate of another CA: the stand-in refuses it; the box says so.
    let wrong = issue(&other_ca, vec![]);
    store
        .set_talosconfig("default", &talosconfig(&cluster_ca.pem, &wrong))
        .unwrap();
    // The path the power hook takes again when the reboot timer retries.
    let r = tokio::time::timeout(Duration::from_secs(30), reset.run("node-a"))
        .await
        .expect("bounded");
    assert!(r.is_err(), "{r:?}");
    let c = condition(&store, "node-a").unwrap();
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason.as_deref(), Some("MachineAPIUnreachable"), "{c:?}");
    assert!(c.message.as_deref().unwrap().contains("alert"), "{c:?}");
    assert!(
        standin_a.lines().iter().any(|l| l.starts_with("refused")),
        "the stand-in saw no refused handshake: {:?}",
        standin_a.lines()
    );
    assert!(standin_a.resets().is_empty(), "{:?}", standin_a.lines());

    // 3. The right talosconfig, for node-b's cluster: exactly one Reset with the fields.
    let right = issue(&cluster_ca, vec![]);
    store
        .set_talosconfig("prod", &talosconfig(&cluster_ca.pem, &right))
        .unwrap();
    lc.release(ReleaseBy::Server("node-b".into()))
        .await
        .unwrap();
    let c = wait_condition(&store, "node-b", Duration::from_secs(20), |c| {
        c.status == ConditionStatus::True
    })
    .await;
    assert_eq!(c.reason.as_deref(), Some("ResetRequested"), "{c:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        standin_b.resets(),
        ["reset graceful=false reboot=true mode=1 partitions=0 user_disks=0"],
        "{:?}",
        standin_b.lines()
    );
    assert_eq!(phase(&store, "node-b"), "released");
    // node-a's wrong `default` talosconfig never reached node-b's stand-in.
    assert!(
        !standin_b.lines().iter().any(|l| l.starts_with("refused")),
        "{:?}",
        standin_b.lines()
    );
    eprintln!(
        "stand-in a: {:?}\nstand-in b: {:?}\nnode-a: {:?}\nnode-b: {:?}",
        standin_a.lines(),
        standin_b.lines(),
        condition(&store, "node-a"),
        condition(&store, "node-b")
    );
    let _ = stop.send(true);
}
