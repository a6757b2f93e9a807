//! One simulated machine's boot, as its firmware and agent do it, with their timers:
//!
//! 1. the NIC's UEFI PXE: DHCP DISCOVER/REQUEST (retransmitted after 4, 8, 16, 32 s: PXE
//!    spec), then TFTP of the boot file from the leased address on the packet socket
//!    (`blksize 1432`, `tsize`, lock-step ACKs, iPXE's retry timer as `src/net/retry.c`
//!    runs it: at least 0.25 s, doubled on every expiry, given up once it would pass 10 s;
//!    a packet received takes back one expiry, or with none outstanding smooths the
//!    timeout toward four round trips);
//! 2. iPXE: its own DHCP with user class `iPXE` (1, 2, 4, 8 s), the leased address put on
//!    the interface, `GET /boot.ipxe`; the script's `ifconf` is a third DHCP; then the
//!    script's `chain` URL with iPXE's variables filled in (`/ipxe?uuid=…&mac=…`), and the
//!    `kernel` and `initrd` it names;
//! 3. the agent: the kernel arguments read as the agent reads them
//!    (`agent::cmdline::parse`), a fresh ed25519 key and the boot token signed into every
//!    call (`agent::signer`), CreateServer, ReconcileServerAddresses and NextAction over
//!    gRPC from the leased address, transient failures retried every 3 s for 300 s as the
//!    agent does.
//!
//! A step that runs out of retries fails the boot (real firmware would reboot and start
//! over: counted as a failed boot, never retried here).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use appliance::agent::signer::{SignedClient, Signer};
use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb};
use dhcproto::v4::MessageType;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::httpc;
use crate::storm::{Inbound, Shared, Stages};
use crate::wire::{self, DhcpClient, DhcpReply, Stage, Tftp};

/// UEFI PXE's DHCP retransmission timeouts (PXE 2.1 §2.2).
const PXE_DHCP: [u64; 4] = [4, 8, 16, 32];
/// iPXE's DHCP timer: 1 s doubling, given up once it would exceed 10 s.
const IPXE_DHCP: [u64; 4] = [1, 2, 4, 8];
/// iPXE's default retry timer (TFTP): at least a quarter second, doubling ...
const TFTP_FIRST: Duration = Duration::from_millis(250);
/// ... until it would pass 10 s.
const TFTP_MAX: Duration = Duration::from_secs(10);

/// iPXE's retry timer (`src/net/retry.c`): `start` arms it, `stop` (a packet received)
/// takes back one expiry or, with none outstanding, smooths the timeout (`t := 7t/8 +
/// rtt/2`), `expire` doubles it and says whether the transfer gives up.
struct RetryTimer {
    timeout: Duration,
    count: u32,
    started: std::time::Instant,
}

impl RetryTimer {
    fn new() -> RetryTimer {
        RetryTimer {
            timeout: TFTP_FIRST,
            count: 0,
            started: appliance::clock::now(),
        }
    }

    /// Arms the timer; its deadline.
    fn start(&mut self) -> std::time::Instant {
        self.timeout = self.timeout.clamp(TFTP_FIRST, TFTP_MAX);
        self.started = appliance::clock::now();
        self.started + self.timeout
    }

    fn stop(&mut self) {
        if self.count > 0 {
            self.count -= 1;
        } else {
            let rtt = appliance::clock::now().duration_since(self.started);
            self.timeout = self.timeout - self.timeout / 8 + rtt / 2;
        }
    }

    /// `true`: given up.
    fn expire(&mut self) -> bool {
        self.count += 1;
        self.timeout *= 2;
        self.timeout > TFTP_MAX
    }
}
/// The block size iPXE asks for.
pub const BLKSIZE: u16 = 1432;
/// A whole HTTP request (connect included), as iPXE's TCP would give up.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// The agent's retry rule.
const AGENT_RETRY_EVERY: Duration = Duration::from_secs(3);
const AGENT_RETRY_FOR: Duration = Duration::from_secs(300);

/// How one boot ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `None` when every step of the chosen stages completed.
    pub failed: Option<String>,
    /// Seconds from power-on to the kernel and initrd loaded.
    pub kernel_loaded: Option<f64>,
    /// Seconds from power-on to the box's CreateServer answer.
    pub registered: Option<f64>,
    /// The machine's index.
    pub i: usize,
    /// Every DHCP ACK the machine received: the address and the wall clock at receipt (Unix
    /// ms), for the fault tests' account of who was given what and when.
    pub acks: Vec<(Ipv4Addr, u64)>,
    /// Wall clock (Unix ms) at the box's CreateServer answer.
    pub registered_at_ms: Option<u64>,
}

impl Outcome {
    /// The machine's account as one JSON object (`storm --outcomes FILE`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "i": self.i,
            "uuid": crate::synthetic_agent::uuid(self.i),
            "mac": mac_text(mac(self.i), ':'),
            "acks": self.acks.iter().map(|(ip, at)| serde_json::json!({"ip": ip.to_string(), "at_ms": at})).collect::<Vec<_>>(),
            "registered_at_ms": self.registered_at_ms,
            "failed": self.failed,
        })
    }
}

/// Client `i`'s MAC: the synthetic agent's first NIC (`52:54:ii:ii:ii:00`).
pub fn mac(i: usize) -> [u8; 6] {
    [0x52, 0x54, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0]
}

fn mac_text(m: [u8; 6], sep: char) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

/// The UUID of synthetic server `i` as 16 bytes (SMBIOS order as iPXE prints it).
pub(crate) fn uuid_bytes(uuid: &str) -> [u8; 16] {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (k, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap_or(0);
    }
    out
}

/// One client.
pub struct Client {
    /// The machine's identity (MAC, UUID, inventory).
    pub i: usize,
    /// Its place in this storm (transaction ids, inbox, leased address).
    pub slot: usize,
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<Inbound>,
    pub uuid: String,
    pub mac: [u8; 6],
    /// Power-on instant (after the ramp delay).
    pub t0: std::time::Instant,
    /// The DHCP ACKs received so far (address, Unix ms).
    pub acks: Vec<(Ipv4Addr, u64)>,
}

struct Fail(String);

impl<E: std::fmt::Display> From<(&'static str, E)> for Fail {
    fn from((step, e): (&'static str, E)) -> Fail {
        Fail(format!("{step}: {e}"))
    }
}

impl Client {
    fn since(&self) -> f64 {
        appliance::clock::now()
            .duration_since(self.t0)
            .as_secs_f64()
    }

    /// Runs the boot through the chosen stages.
    pub async fn boot(mut self) -> Outcome {
        let mut out = Outcome {
            i: self.i,
            ..Outcome::default()
        };
        if let Err(Fail(why)) = self.steps(&mut out).await {
            out.failed = Some(why);
        }
        out.acks = std::mem::take(&mut self.acks);
        if let Some(ip) = self.shared.leased(self.slot) {
            self.shared.forget(ip);
        }
        out
    }

    async fn steps(&mut self, out: &mut Outcome) -> Result<(), Fail> {
        let pxe = self.dhcp(Stage::Pxe, 0).await?;
        self.shared.remember(pxe.yiaddr, self.slot);
        if self.shared.opts.stages == Stages::Dhcp {
            return Ok(());
        }
        let tftp_server = if pxe.siaddr.is_unspecified() {
            pxe.server.unwrap_or(pxe.siaddr)
        } else {
            pxe.siaddr
        };
        if pxe.boot_file.is_empty() {
            return Err(Fail("pxe dhcp: no boot file".into()));
        }
        self.tftp(pxe.yiaddr, tftp_server, &pxe.boot_file).await?;

        let ipxe = self.dhcp(Stage::Ipxe, 1).await?;
        self.shared.remember(ipxe.yiaddr, self.slot);
        let ip = ipxe.yiaddr;
        self.shared
            .add_address(ip)
            .await
            .map_err(|e| Fail(format!("address {ip}: {e}")))?;
        let (server, script_path) = httpc::split_url(&ipxe.boot_file)
            .ok_or_else(|| Fail(format!("ipxe dhcp: boot file {:?}", ipxe.boot_file)))?;
        let local = IpAddr::V4(ip);
        let script = self.http(local, server, &script_path, true).await?;
        let script = String::from_utf8_lossy(&script).into_owned();
        if script
            .lines()
            .any(|l| l.trim_start().starts_with("ifconf") || l.trim_start().starts_with("dhcp"))
        {
            let again = self.dhcp(Stage::Ipxe, 2).await?;
            if again.yiaddr != ip {
                return Err(Fail(format!(
                    "third dhcp: address moved {ip} -> {}",
                    again.yiaddr
                )));
            }
        }
        let chain = chain_url(&script, &self.uuid, self.mac)
            .ok_or_else(|| Fail("boot.ipxe: no chain line".into()))?;
        let (server, path) = resolve(&chain, server)?;
        let ipxe_script = self.http(local, server, &path, true).await?;
        let ipxe_script = String::from_utf8_lossy(&ipxe_script).into_owned();
        let Some((kernel, args, initrd)) = kernel_lines(&ipxe_script) else {
            let first = ipxe_script.lines().take(3).collect::<Vec<_>>().join(" | ");
            return Err(Fail(format!("/ipxe: no kernel+initrd: {first}")));
        };
        let (ks, kp) = resolve(&kernel, server)?;
        self.http(local, ks, &kp, false).await?;
        let (is, ip_) = resolve(&initrd, server)?;
        self.http(local, is, &ip_, false).await?;
        out.kernel_loaded = Some(self.since());
        if self.shared.opts.stages == Stages::Http {
            return Ok(());
        }
        self.agent(local, &args, out).await
    }

    /// One DHCP exchange (DISCOVER → OFFER, REQUEST → ACK) with the stage's timers.
    async fn dhcp(&mut self, stage: Stage, round: u32) -> Result<DhcpReply, Fail> {
        let once = self.shared.opts.dora_once.map(|d| [d.as_secs().max(1)]);
        let timers: &[u64] = match (stage, &once) {
            (_, Some(once)) => once,
            (Stage::Pxe, None) => {
                &PXE_DHCP[..self.shared.opts.pxe_dhcp_tries.clamp(1, PXE_DHCP.len())]
            }
            (Stage::Ipxe, None) => &IPXE_DHCP,
        };
        let c = DhcpClient {
            mac: self.mac,
            uuid: uuid_bytes(&self.uuid),
            xid: self.shared.xid(self.slot, round),
        };
        let offer = self
            .exchange(&c, stage, None, MessageType::Offer, timers)
            .await
            .map_err(|e| Fail(format!("dhcp {stage:?} discover: {e}")))?;
        let server = offer.server.unwrap_or(offer.siaddr);
        let ack = self
            .exchange(
                &c,
                stage,
                Some((offer.yiaddr, server)),
                MessageType::Ack,
                timers,
            )
            .await
            .map_err(|e| Fail(format!("dhcp {stage:?} request: {e}")))?;
        self.acks.push((ack.yiaddr, appliance::clock::unix_ms()));
        Ok(ack)
    }

    async fn exchange(
        &mut self,
        c: &DhcpClient,
        stage: Stage,
        requested: Option<(Ipv4Addr, Ipv4Addr)>,
        want: MessageType,
        timers: &[u64],
    ) -> Result<DhcpReply, String> {
        for (k, secs) in timers.iter().enumerate() {
            if k > 0 {
                self.shared.stats.dhcp_retx.fetch_add(1, Ordering::Relaxed);
            }
            let elapsed = self.since().min(f64::from(u16::MAX)) as u16;
            let msg = wire::dhcp_request(c, stage, requested, elapsed);
            let frame = wire::udp_frame(
                wire::BROADCAST,
                self.mac,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
                &msg,
            );
            self.shared.send(&frame).await;
            let until = tokio::time::Instant::from_std(appliance::clock::now())
                + Duration::from_secs(*secs);
            loop {
                match tokio::time::timeout_at(until, self.rx.recv()).await {
                    Err(_) => break,
                    Ok(None) => return Err("receive loop gone".into()),
                    Ok(Some(Inbound::Dhcp(r))) if r.xid == c.xid => {
                        if r.kind == want {
                            return Ok(r);
                        }
                        if r.kind == MessageType::Nak {
                            return Err("NAK".into());
                        }
                    }
                    Ok(Some(_)) => {}
                }
            }
        }
        Err(format!("no {want:?} after {} tries", timers.len()))
    }

    /// Reads `file` from `server` by TFTP from `ip`, lock-step as iPXE does.
    async fn tftp(&mut self, ip: Ipv4Addr, server: Ipv4Addr, file: &str) -> Result<u64, Fail> {
        let port = 1024 + (self.i % 60000) as u16;
        let me = SocketAddrV4::new(ip, port);
        let mut peer = SocketAddrV4::new(server, 69);
        let mut last = wire::tftp_rrq(file, BLKSIZE);
        let mut blksize = 512usize;
        let mut tsize: Option<u64> = None;
        let mut expect: u16 = 1;
        let mut got: u64 = 0;
        let mut tid_known = false;
        let mut timer = RetryTimer::new();
        let mut until = tokio::time::Instant::now();
        let mut next_send = true;
        loop {
            if next_send {
                let frame = wire::udp_frame(self.shared.box_mac(), self.mac, me, peer, &last);
                self.shared.send(&frame).await;
                until = tokio::time::Instant::from_std(timer.start());
            }
            next_send = true;
            let msg = loop {
                match tokio::time::timeout_at(until, self.rx.recv()).await {
                    Err(_) => break None,
                    Ok(None) => return Err(Fail("tftp: receive loop gone".into())),
                    Ok(Some(Inbound::Tftp { from, to, payload })) => {
                        if to != me || from.ip() != &server || (tid_known && from != peer) {
                            continue;
                        }
                        break Some((from, payload));
                    }
                    Ok(Some(_)) => {}
                }
            };
            let Some((from, payload)) = msg else {
                if timer.expire() {
                    return Err(Fail(format!("tftp {file}: timed out at block {expect}")));
                }
                self.shared.stats.tftp_retx.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !tid_known {
                peer = from;
                tid_known = true;
            }
            match wire::tftp(&payload) {
                Tftp::Oack(opts) if expect == 1 && got == 0 => {
                    for (k, v) in opts {
                        match k.as_str() {
                            "blksize" => blksize = v.parse().unwrap_or(512),
                            "tsize" => tsize = v.parse().ok(),
                            _ => {}
                        }
                    }
                    last = wire::tftp_ack(0);
                    timer.stop();
                }
                Tftp::Data(n, data) if n == expect => {
                    got += data.len() as u64;
                    last = wire::tftp_ack(n);
                    timer.stop();
                    expect = expect.wrapping_add(1);
                    if data.len() < blksize {
                        let frame =
                            wire::udp_frame(self.shared.box_mac(), self.mac, me, peer, &last);
                        self.shared.send(&frame).await;
                        if let Some(t) = tsize
                            && t != got
                        {
                            return Err(Fail(format!("tftp {file}: {got} bytes, tsize {t}")));
                        }
                        return Ok(got);
                    }
                }
                Tftp::Data(..) | Tftp::Oack(..) => {
                    // A duplicate (our ACK was lost or late): ACK again, as iPXE does.
                    timer.stop();
                }
                Tftp::Error(code, msg) => {
                    return Err(Fail(format!("tftp {file}: error {code} {msg}")));
                }
                Tftp::Other => next_send = false,
            }
        }
    }

    async fn http(
        &self,
        local: IpAddr,
        server: SocketAddr,
        path: &str,
        keep: bool,
    ) -> Result<Vec<u8>, Fail> {
        match httpc::get(local, server, path, keep, HTTP_TIMEOUT).await {
            Ok(g) => Ok(g.body),
            Err(e) => {
                let short: String = path.chars().take(40).collect();
                Err(Fail(format!("GET {short}: {e}")))
            }
        }
    }

    /// The agent's first contact: CreateServer, its addresses, NextAction.
    async fn agent(&self, local: IpAddr, args: &str, out: &mut Outcome) -> Result<(), Fail> {
        let cmd = appliance::agent::cmdline::parse(args).map_err(|e| ("kernel args", e))?;
        let channel = Endpoint::from_shared(format!("http://{}", cmd.endpoint))
            .map_err(|e| ("endpoint", e))?
            .local_address(Some(local))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        let signer = Signer::generate(cmd.token.clone()).map_err(|e| ("key", e))?;
        let client = SignedClient::new(AgentClient::new(channel), Arc::new(signer));
        let mut hw = crate::synthetic_agent::hardware(self.i);
        if let Some(sys) = hw.system.as_mut() {
            sys.uuid = self.uuid.clone();
        }
        let create = pb::CreateServerRequest {
            hardware: Some(hw),
            hostname: String::new(),
        };
        let reg = self
            .retry("CreateServer", || {
                let mut c = client.clone();
                let r = create.clone();
                async move { c.create_server(r).await }
            })
            .await?;
        out.registered = Some(self.since());
        out.registered_at_ms = Some(appliance::clock::unix_ms());
        let uuid = if reg.name.is_empty() {
            self.uuid.clone()
        } else {
            reg.name
        };
        let addr = pb::ReconcileServerAddressesRequest {
            uuid: uuid.clone(),
            address: vec![pb::Address {
                r#type: "InternalIP".into(),
                address: local.to_string(),
            }],
        };
        self.retry("ReconcileServerAddresses", || {
            let mut c = client.clone();
            let r = addr.clone();
            async move { c.reconcile_server_addresses(r).await }
        })
        .await?;
        let next = pb::NextActionRequest { uuid };
        self.retry("NextAction", || {
            let mut c = client.clone();
            let r = next.clone();
            async move { c.next_action(r).await }
        })
        .await?;
        Ok(())
    }

    async fn retry<T, F, Fut>(&self, call: &'static str, mut f: F) -> Result<T, Fail>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = appliance::clock::now() + AGENT_RETRY_FOR;
        loop {
            match f().await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let transient = matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                            | tonic::Code::Internal
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::Aborted
                            | tonic::Code::Cancelled
                    );
                    if !transient || appliance::clock::now() >= deadline {
                        return Err(Fail(format!("{call}: {:?}: {}", s.code(), s.message())));
                    }
                    self.shared
                        .stats
                        .agent_retries
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(AGENT_RETRY_EVERY).await;
                }
            }
        }
    }
}

/// The `chain` URL of a `/boot.ipxe` script with iPXE's variables filled in for this
/// machine (`${uuid}`, `${net<i>/mac:hexhyp}`, `${buildarch}`; the rest empty).
pub fn chain_url(script: &str, uuid: &str, mac: [u8; 6]) -> Option<String> {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("chain "))?;
    let url = line
        .split_whitespace()
        .skip(1)
        .find(|t| !t.starts_with("--"))?;
    let hexhyp = mac_text(mac, '-');
    let mut u = url
        .replace("${uuid}", uuid)
        .replace("${buildarch}", "x86_64")
        .replace("${net${idx}/mac:hexhyp}", &hexhyp)
        .replace("${net0/mac:hexhyp}", &hexhyp)
        .replace("${net0/mac}", &mac_text(mac, ':'));
    // Variables this machine does not set (domain, hostname, serial) expand to nothing.
    while let Some(s) = u.find("${") {
        let e = u[s..].find('}').map_or(u.len(), |e| s + e + 1);
        u.replace_range(s..e, "");
    }
    Some(u)
}

/// `(kernel URL, kernel arguments, initrd URL)` of an environment's iPXE script.
pub fn kernel_lines(script: &str) -> Option<(String, String, String)> {
    let mut kernel = None;
    let mut initrd = None;
    for l in script.lines().map(str::trim) {
        let mut t = l.split_whitespace();
        match t.next() {
            Some("kernel") => {
                let rest: Vec<&str> = t.collect();
                let k = rest.iter().position(|x| !x.starts_with("--"))?;
                kernel = Some((rest[k].to_string(), rest[k + 1..].join(" ")));
            }
            Some("initrd") => {
                initrd = t.find(|x| !x.starts_with("--")).map(str::to_string);
            }
            _ => {}
        }
    }
    let (k, args) = kernel?;
    Some((k, args, initrd?))
}

/// An absolute `http://` URL, or a path on `base`'s server.
fn resolve(url: &str, base: SocketAddr) -> Result<(SocketAddr, String), Fail> {
    if url.starts_with('/') {
        return Ok((base, url.to_string()));
    }
    httpc::split_url(url).ok_or_else(|| Fail(format!("url {url:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_line_gets_this_machines_variables() {
        let script = appliance::protocol::ipxe::chain_script("http://10.0.0.1:8081/ipxe");
        let u = chain_url(&script, "4c4c4544-0000-0005-8000-000000000005", mac(5)).unwrap();
        assert_eq!(
            u,
            "http://10.0.0.1:8081/ipxe?uuid=4c4c4544-0000-0005-8000-000000000005\
             &mac=52-54-00-00-05-00&domain=&hostname=&serial=&arch=x86_64"
        );
    }

    #[test]
    fn kernel_and_initrd_lines_are_found() {
        let s = "#!ipxe\nkernel http://b/env/a/vmlinuz console=ttyS0 sidero.endpoint=b:8081\n\
                 initrd http://b/env/a/initramfs.xz\nboot\n";
        assert_eq!(
            kernel_lines(s),
            Some((
                "http://b/env/a/vmlinuz".into(),
                "console=ttyS0 sidero.endpoint=b:8081".into(),
                "http://b/env/a/initramfs.xz".into()
            ))
        );
        assert_eq!(kernel_lines("#!ipxe\nsleep 5\nchain x\n"), None);
    }

    #[test]
    fn uuid_text_becomes_bytes() {
        assert_eq!(
            uuid_bytes("00112233-4455-6677-8899-aabbccddeeff"),
            [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
    }
}
