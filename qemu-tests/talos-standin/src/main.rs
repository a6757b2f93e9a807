//! The Talos stand-in: run by the test Environment's /init (built by
//! `scripts/build-talos-standin-initramfs`) after the NIC has a DHCP lease, it does what Talos
//! does on a PXE install, on the wire shapes of shared/sidero-facts.md §7.3–§7.7 and through
//! its own protobuf definitions (`proto/`, not the box's):
//!
//! 1. reads `talos.config=`, `siderolink.api=`, `talos.logging.kernel=`,
//!    `talos.events.sink=` from /proc/cmdline and its SMBIOS UUID;
//! 2. makes a WireGuard key (`wg genkey`/`wg pubkey`), calls
//!    `sidero.link.ProvisionService/Provision` on the box;
//! 3. brings up the guest kernel's WireGuard link `siderolink` as Talos does (`ip link add
//!    … type wireguard`, `wg set` with the box as the only peer: AllowedIPs = server /128,
//!    keepalive 25 s; the node address from the reply; MTU 1280);
//! 4. streams the kernel log (/dev/kmsg, from the first record) as Talos JSON lines to
//!    `talos.logging.kernel` and publishes `machine.*` events with xid ids to
//!    `talos.events.sink` (`events.EventSinkService/Publish`), both through the tunnel;
//! 5. fetches the machine config over HTTP (`talos.config=` + the UUID; a failure is
//!    reported as `ConfigLoadErrorEvent`), reports the config saved, then the install
//!    sequence; writes a bootable disk (a boot sector that prints [`DISK_MARKER`] on COM1),
//!    reports the install done (the `unix.Reboot` sequence error Sidero reads as
//!    installed), replays its event backlog on a new connection (as Talos does after a
//!    reconnect), flushes the log and returns; /init then reboots.
//!
//! Test hook: with `standin.gate=<url>` it waits before the install phase and before the
//! install itself until `<url><step>` answers 200, so the test can look at the box's state
//! between the steps (`configured`, `installing`).
//!
//! Progress goes to stdout (the serial console) as `TALOS-STANDIN …` lines.

mod kmsg;
mod pb;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use prost::Message;
use tonic::transport::{Channel, Endpoint};

use pb::events::EventRequest;
use pb::events::event_sink_service_client::EventSinkServiceClient;
use pb::machine;
use pb::sidero_link::ProvisionRequest;
use pb::sidero_link::provision_service_client::ProvisionServiceClient;

/// What the installed disk's boot sector prints on COM1.
pub const DISK_MARKER: &str = "TALOS-STANDIN-INSTALLED-DISK-BOOTED";

/// The Talos version the stand-in claims in Provision.
const TALOS_VERSION: &str = "v1.9.0-standin";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn say(msg: &str) {
    println!("TALOS-STANDIN {msg}");
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("FAILED: runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("FAILED: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The kernel arguments the stand-in reads.
#[derive(Debug)]
struct Args {
    config: String,
    api: String,
    logging: SocketAddr,
    events: String,
    gate: Option<String>,
    disk: String,
}

fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|a| a.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

fn parse_args(cmdline: &str) -> Result<Args, Error> {
    let need = |key: &str| {
        arg(cmdline, key)
            .map(str::to_string)
            .ok_or_else(|| format!("kernel argument {key}= missing"))
    };
    let logging = need("talos.logging.kernel")?;
    let logging = logging
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("talos.logging.kernel={logging}: not tcp://"))?
        .parse()
        .map_err(|e| format!("talos.logging.kernel={logging}: {e}"))?;
    Ok(Args {
        config: need("talos.config")?,
        api: need("siderolink.api")?,
        logging,
        events: need("talos.events.sink")?,
        gate: arg(cmdline, "standin.gate").map(str::to_string),
        disk: arg(cmdline, "standin.disk")
            .unwrap_or("/dev/vda")
            .to_string(),
    })
}

/// `siderolink.api` as Talos reads it: no scheme → insecure gRPC; `?jointoken=` → join
/// token. Returns (URL for tonic, join token).
fn api_url(api: &str) -> Result<(String, Option<String>), Error> {
    let (base, token) = match api.split_once("?jointoken=") {
        Some((b, t)) => (b, Some(t.to_string())),
        None => (api, None),
    };
    let url = if let Some(rest) = base.strip_prefix("grpc://") {
        format!("http://{rest}")
    } else if base.contains("://") {
        return Err(format!("siderolink.api={api}: only insecure gRPC is supported here").into());
    } else {
        format!("http://{base}")
    };
    Ok((url, token))
}

fn run_cmd(args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .ok_or("stdin")?
            .write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A plain HTTP/1.1 GET (Talos fetches `talos.config` like this when it is http://).
fn http_get(url: &str) -> Result<(u16, Vec<u8>), Error> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not http://"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr: SocketAddr = host
        .parse()
        .or_else(|_| format!("{host}:80").parse())
        .map_err(|e| format!("{url}: host {host}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: talos-standin\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("short chunk")?);
        b = b.get(size + 2..).ok_or("short chunk")?;
    }
}

/// Lowercase base32hex without padding (xid's alphabet).
fn xid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&secs.to_be_bytes());
    let mut rnd = [0u8; 5];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut rnd);
    }
    raw[4..9].copy_from_slice(&rnd);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    raw[9..].copy_from_slice(&c.to_be_bytes()[1..]);
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut bits: u128 = 0;
    for b in raw {
        bits = (bits << 8) | u128::from(b);
    }
    // 96 bits → 20 characters of 5 bits (the last padded with 4 zero bits).
    bits <<= 4;
    (0..20)
        .rev()
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The event sink client: publishes each event until acknowledged and keeps the backlog.
struct Events {
    url: String,
    client: EventSinkServiceClient<Channel>,
    backlog: Vec<EventRequest>,
}

fn channel(url: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect_lazy())
}

impl Events {
    fn new(sink: &str) -> Result<Events, Error> {
        let url = format!("http://{sink}");
        Ok(Events {
            client: EventSinkServiceClient::new(channel(&url)?),
            url,
            backlog: Vec::new(),
        })
    }

    async fn send(
        client: &mut EventSinkServiceClient<Channel>,
        req: &EventRequest,
    ) -> Result<(), Error> {
        let mut last = String::new();
        for _ in 0..120 {
            match client.publish(req.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("Publish {} never acknowledged: {last}", req.id).into())
    }

    async fn publish<M: Message>(&mut self, name: &str, msg: &M) -> Result<(), Error> {
        let req = EventRequest {
            data: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/machine.{name}"),
                value: msg.encode_to_vec(),
            }),
            id: xid(),
            actor_id: String::new(),
        };
        Events::send(&mut self.client, &req).await?;
        say(&format!("event sent type=machine.{name} id={}", req.id));
        self.backlog.push(req);
        Ok(())
    }

    /// Talos resends its backlog after reconnecting; the sink must not apply it twice.
    async fn replay_backlog(&self) -> Result<(), Error> {
        let mut client = EventSinkServiceClient::new(channel(&self.url)?);
        for req in &self.backlog {
            Events::send(&mut client, req).await?;
        }
        say(&format!(
            "backlog replayed on a new connection events={}",
            self.backlog.len()
        ));
        Ok(())
    }
}

async fn phase(
    ev: &mut Events,
    name: &str,
    action: machine::phase_event::Action,
) -> Result<(), Error> {
    ev.publish(
        "PhaseEvent",
        &machine::PhaseEvent {
            phase: name.into(),
            action: action as i32,
        },
    )
    .await
}

async fn task(ev: &mut Events, name: &str) -> Result<(), Error> {
    for action in [
        machine::task_event::Action::Start,
        machine::task_event::Action::Stop,
    ] {
        ev.publish(
            "TaskEvent",
            &machine::TaskEvent {
                task: name.into(),
                action: action as i32,
            },
        )
        .await?;
    }
    Ok(())
}

async fn sequence(
    ev: &mut Events,
    name: &str,
    action: machine::sequence_event::Action,
    error: Option<pb::common::Error>,
) -> Result<(), Error> {
    ev.publish(
        "SequenceEvent",
        &machine::SequenceEvent {
            sequence: name.into(),
            action: action as i32,
            error,
        },
    )
    .await
}

/// Waits until the test opens `step` (only with `standin.gate=`).
async fn gate(base: &Option<String>, step: &str) -> Result<(), Error> {
    let Some(base) = base else { return Ok(()) };
    let url = format!("{base}{step}");
    say(&format!("waiting at gate {step}"));
    loop {
        let u = url.clone();
        if let Ok(Ok((200, _))) = tokio::task::spawn_blocking(move || http_get(&u)).await {
            say(&format!("gate {step} open"));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The lease /init's udhcpc hook wrote: (interface, address).
fn lease() -> Result<(String, String), Error> {
    let text = std::fs::read_to_string("/run/standin-lease")
        .map_err(|e| format!("/run/standin-lease: {e}"))?;
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
            .ok_or_else(|| format!("{k} missing in lease {text}"))
    };
    Ok((field("iface=")?, field("ip=")?))
}

/// The boot sector written as "the installed OS": prints [`DISK_MARKER`] on COM1 and halts
/// (16-bit code: set up segments, `lodsb`/`out 0x3f8` until NUL, `hlt`).
fn boot_sector() -> [u8; 512] {
    const CODE: [u8; 28] = [
        0xfa, 0xfc, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xbe, 0x1c, 0x7c, 0xba,
        0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd,
    ];
    let mut s = [0u8; 512];
    s[..CODE.len()].copy_from_slice(&CODE);
    let msg = format!("{DISK_MARKER}\r\n");
    s[CODE.len()..CODE.len() + msg.len()].copy_from_slice(msg.as_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

fn write_disk(dev: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| format!("{dev}: {e}"))?;
    f.write_all(&boot_sector())?;
    f.sync_all()?;
    Ok(())
}

async fn run() -> Result<(), Error> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")?;
    let args = parse_args(&cmdline)?;
    let uuid = std::fs::read_to_string("/sys/class/dmi/id/product_uuid")?
        .trim()
        .to_ascii_lowercase();
    say(&format!("uuid={uuid}"));

    // 1. Provision with a fresh key (Talos brings SideroLink up before it loads its config).
    let private = run_cmd(&["wg", "genkey"], None)?;
    let public = run_cmd(&["wg", "pubkey"], Some(&private))?;
    let (api, join_token) = api_url(&args.api)?;
    let mut provision = ProvisionServiceClient::new(channel(&api)?);
    let reply = provision
        .provision(ProvisionRequest {
            node_uuid: uuid.clone(),
            node_public_key: public.clone(),
            join_token,
            node_unique_token: None,
            talos_version: Some(TALOS_VERSION.into()),
            wireguard_over_grpc: Some(false),
        })
        .await
        .map_err(|e| format!("Provision: {e}"))?
        .into_inner();
    let endpoint = reply
        .server_endpoint
        .first()
        .ok_or("Provision returned no server endpoint")?;
    say(&format!(
        "provisioned address={} server={} endpoint={endpoint} server_key={}",
        reply.node_address_prefix, reply.server_address, reply.server_public_key
    ));

    // 2. The kernel's WireGuard link, as Talos configures `siderolink`.
    let key_file = "/run/siderolink.key";
    std::fs::write(key_file, format!("{private}\n"))?;
    run_cmd(
        &["ip", "link", "add", "siderolink", "type", "wireguard"],
        None,
    )?;
    // No duplicate address detection on the tunnel (its address was just allocated).
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/siderolink/accept_dad", "0");
    run_cmd(
        &[
            "wg",
            "set",
            "siderolink",
            "private-key",
            key_file,
            "peer",
            &reply.server_public_key,
            "endpoint",
            endpoint,
            "allowed-ips",
            &format!("{}/128", reply.server_address),
            "persistent-keepalive",
            "25",
        ],
        None,
    )?;
    run_cmd(
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &reply.node_address_prefix,
            "dev",
            "siderolink",
        ],
        None,
    )?;
    run_cmd(
        &["ip", "link", "set", "siderolink", "mtu", "1280", "up"],
        None,
    )?;
    say("link siderolink up (kernel WireGuard)");
    say(&format!(
        "wg: {}",
        run_cmd(&["wg", "show", "siderolink"], None)?.replace('\n', " | ")
    ));

    // 3. Kernel log to talos.logging.kernel, from the first record.
    let shipper = kmsg::Shipper::start(args.logging);
    kmsg::write(&format!(
        "talos-standin: node {uuid} streaming its kernel log"
    ));

    // 4. Events, in Talos's order for a PXE install, and the machine config
    // (`talos.config` ends with `uuid=`; Talos appends its UUID).
    let mut ev = Events::new(&args.events)?;
    use machine::phase_event::Action as Phase;
    use machine::sequence_event::Action as Seq;
    sequence(&mut ev, "initialize", Seq::Start, None).await?;
    let url = format!("{}{uuid}", args.config);
    let u = url.clone();
    let fetched = tokio::task::spawn_blocking(move || http_get(&u)).await?;
    let config = match fetched {
        Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
        other => {
            let error = match other {
                Ok((status, _)) => format!("GET {url}: HTTP {status}"),
                Err(e) => format!("GET {url}: {e}"),
            };
            ev.publish(
                "ConfigLoadErrorEvent",
                &machine::ConfigLoadErrorEvent {
                    error: error.clone(),
                },
            )
            .await?;
            return Err(error.into());
        }
    };
    say(&format!("config fetched bytes={}", config.len()));
    ev.publish(
        "MachineStatusEvent",
        &machine::MachineStatusEvent {
            stage: machine::machine_status_event::MachineStage::Installing as i32,
            status: Some(machine::machine_status_event::MachineStatus {
                ready: false,
                unmet_conditions: vec![],
            }),
        },
    )
    .await?;
    let (iface, v4) = lease()?;
    let hostname = format!("talos-{}", &uuid[uuid.len() - 6..]);
    let node_address = reply
        .node_address_prefix
        .split('/')
        .next()
        .unwrap_or_default();
    ev.publish(
        "AddressEvent",
        &machine::AddressEvent {
            hostname: hostname.clone(),
            // Bare addresses, as Talos lists its node addresses (the SideroLink one too).
            addresses: vec![v4.clone(), node_address.to_string()],
        },
    )
    .await?;
    say(&format!(
        "addresses reported iface={iface} v4={v4} hostname={hostname}"
    ));
    if !config.contains("machine:") {
        ev.publish(
            "ConfigValidationErrorEvent",
            &machine::ConfigValidationErrorEvent {
                error: "no machine: section in the config".into(),
            },
        )
        .await?;
        return Err("config has no machine: section".into());
    }
    phase(&mut ev, "saveConfig", Phase::Start).await?;
    task(&mut ev, "saveConfig").await?;
    phase(&mut ev, "saveConfig", Phase::Stop).await?;
    sequence(&mut ev, "initialize", Seq::Stop, None).await?;
    gate(&args.gate, "configured").await?;

    sequence(&mut ev, "install", Seq::Start, None).await?;
    phase(&mut ev, "install", Phase::Start).await?;
    ev.publish(
        "ServiceStateEvent",
        &machine::ServiceStateEvent {
            service: "installer".into(),
            action: machine::service_state_event::Action::Running as i32,
            message: "installing to the disk".into(),
            health: None,
        },
    )
    .await?;
    gate(&args.gate, "installing").await?;

    // 5. Install: the disk's boot sector.
    let disk = args.disk.clone();
    tokio::task::spawn_blocking(move || write_disk(&disk)).await??;
    say(&format!("installed to {}", args.disk));
    kmsg::write(&format!("talos-standin: installed to {}", args.disk));
    task(&mut ev, "install").await?;
    phase(&mut ev, "install", Phase::Stop).await?;
    // Talos ends the install sequence by rebooting; the sequence "fails" with the reboot.
    sequence(
        &mut ev,
        "install",
        Seq::Noop,
        Some(pb::common::Error {
            code: pb::common::Code::Fatal as i32,
            message: "reboot: unix.Reboot(0x1234567)".into(),
            details: vec![],
        }),
    )
    .await?;
    ev.replay_backlog().await?;

    let lines = match shipper.finish(Duration::from_secs(30)) {
        Ok(n) => n,
        Err(e) => {
            // What the tunnel and the sockets looked like, for the failure report.
            for cmd in [
                &["wg", "show", "siderolink"][..],
                &["cat", "/proc/net/tcp6"][..],
            ] {
                if let Ok(out) = run_cmd(cmd, None) {
                    say(&format!("{cmd:?}: {}", out.replace('\n', " | ")));
                }
            }
            return Err(e);
        }
    };
    say(&format!("kernel log shipped lines={lines}"));
    say("install done, rebooting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kernel_args_as_talos() {
        let a = parse_args(
            "console=ttyS0 talos.config=http://10.77.0.1:8081/configdata?uuid= siderolink.api=10.77.0.1:8081 talos.logging.kernel=tcp://[fd00::1]:4001 talos.events.sink=[fd00::1]:4002",
        )
        .unwrap();
        assert_eq!(a.logging, "[fd00::1]:4001".parse().unwrap());
        assert_eq!(a.events, "[fd00::1]:4002");
        assert_eq!(a.gate, None);
        assert_eq!(
            api_url("10.77.0.1:8081?jointoken=abc").unwrap(),
            ("http://10.77.0.1:8081".into(), Some("abc".into()))
        );
        assert!(api_url("https://x:443").is_err());
        assert!(parse_args("talos.config=x").is_err());
    }

    #[test]
    fn xid_is_20_base32hex_chars_and_unique() {
        let (a, b) = (xid(), xid());
        assert_eq!(a.len(), 20);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn boot_sector_is_bootable_and_carries_the_marker() {
        let s = boot_sector();
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        assert!(String::from_utf8_lossy(&s).contains(DISK_MARKER));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}
