//! The storm: N clients (`client::Client`) in one process and one network namespace, all
//! on one packet socket whose receive loop hands each client its DHCP replies (by
//! transaction id) and TFTP packets (by leased address) and answers the server's ARP
//! requests for the clients' addresses; the addresses iPXE configures are put on the
//! interface by one long-lived `ip -batch` (so HTTP and gRPC leave from them through the
//! kernel's TCP). The box's RSS and CPU are sampled from `/proc/<pid>` when its pid is
//! given. The result is one [`Report`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::client::{Client, Outcome};
use crate::packet::Link;
use crate::wire::{self, Frame};

/// How far each client goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stages {
    /// DHCP (the PXE stage's DORA) only.
    Dhcp,
    /// DHCP, TFTP, iPXE's DHCP, HTTP through the kernel and initrd (what dnsmasq + nginx
    /// can serve too).
    Http,
    /// Everything, through the agent's registration and NextAction.
    Full,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The generator's interface (in its namespace).
    pub iface: String,
    pub clients: usize,
    /// Index of the first client (MACs and UUIDs are derived from the index).
    pub first: usize,
    /// Power-on spread: client k powers on at `ramp * k / clients`.
    pub ramp: Duration,
    pub stages: Stages,
    /// The server's pid, for RSS and CPU.
    pub box_pid: Option<u32>,
    /// A label for the report (`appliance`, `dnsmasq+nginx`).
    pub server: String,
    /// PXE DHCP transmissions before a machine gives up (1–4; firmware sends 4: 4, 8, 16,
    /// 32 s). The clock-jump test's machines that must get no address give up after one.
    pub pxe_dhcp_tries: usize,
    /// Write every machine's account ([`Outcome::json`], one JSON line each) to this file.
    pub outcomes: Option<std::path::PathBuf>,
    /// The DHCP-only rate mode (`scripts/bench dhcp`): each machine sends its DISCOVER and
    /// its REQUEST once and waits this long for each answer, never retransmitting (as
    /// perfdhcp counts loss); machine k starts at `ramp * k / clients`, so the offered rate
    /// is `clients / ramp` DORA/s.
    pub dora_once: Option<Duration>,
    /// Distinct machine identities (MAC, UUID): machine k is identity `first + k % macs`
    /// (as perfdhcp's `-R`, so a long run at a high rate fits the server's pool).
    pub macs: Option<usize>,
}

/// A frame handed to one client.
#[derive(Debug)]
pub enum Inbound {
    Dhcp(wire::DhcpReply),
    Tftp {
        from: std::net::SocketAddrV4,
        to: std::net::SocketAddrV4,
        payload: Vec<u8>,
    },
}

/// Counters every client adds to.
#[derive(Debug, Default)]
pub struct Stats {
    pub dhcp_retx: AtomicU64,
    pub tftp_retx: AtomicU64,
    pub agent_retries: AtomicU64,
    pub arp_answers: AtomicU64,
    /// Replies that found their client's queue full (dropped, as a NIC ring would).
    pub queue_drops: AtomicU64,
}

/// What the clients share.
pub struct Shared {
    pub opts: Options,
    link: Link,
    xid_base: u32,
    inboxes: Vec<mpsc::Sender<Inbound>>,
    by_ip: Mutex<HashMap<Ipv4Addr, usize>>,
    leased: Mutex<HashMap<usize, Ipv4Addr>>,
    box_mac: AtomicU64,
    ip_batch: tokio::sync::Mutex<ChildStdin>,
    pub stats: Stats,
}

impl Shared {
    /// The transaction id of client `i`'s DHCP exchange number `round` (0–3).
    pub fn xid(&self, i: usize, round: u32) -> u32 {
        self.xid_base
            .wrapping_add((i as u32) << 2)
            .wrapping_add(round & 3)
    }

    /// The inbox of the machine in storm slot `slot` (0-based: xids and remembered addresses
    /// are keyed by slot, not by the identity index that starts at `opts.first`).
    fn inbox(&self, slot: usize) -> Option<&mpsc::Sender<Inbound>> {
        self.inboxes.get(slot)
    }

    /// Sends a frame (a failed send is left to the client's retransmission timer).
    pub async fn send(&self, frame: &[u8]) {
        let _ = self.link.send(frame).await;
    }

    /// The server's MAC as learnt from its DHCP replies (broadcast until then).
    pub fn box_mac(&self) -> [u8; 6] {
        let v = self.box_mac.load(Ordering::Relaxed);
        if v == 0 {
            return wire::BROADCAST;
        }
        let b = v.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// Client `i` holds `ip`: its frames go to the client, its ARP requests are answered.
    pub fn remember(&self, ip: Ipv4Addr, i: usize) {
        self.by_ip.lock().expect("lock").insert(ip, i);
        self.leased.lock().expect("lock").insert(i, ip);
    }

    pub fn forget(&self, ip: Ipv4Addr) {
        self.by_ip.lock().expect("lock").remove(&ip);
    }

    pub fn leased(&self, i: usize) -> Option<Ipv4Addr> {
        self.leased.lock().expect("lock").get(&i).copied()
    }

    /// Puts `ip` on the interface (as iPXE configures its lease) and waits until the
    /// kernel has it.
    pub async fn add_address(&self, ip: Ipv4Addr) -> anyhow::Result<()> {
        {
            let mut w = self.ip_batch.lock().await;
            w.write_all(format!("address add {ip}/32 dev {}\n", self.opts.iface).as_bytes())
                .await?;
            w.flush().await?;
        }
        let deadline = appliance::clock::now() + Duration::from_secs(30);
        loop {
            if std::net::UdpSocket::bind((ip, 0)).is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                appliance::clock::now() < deadline,
                "not on {} after 30 s",
                self.opts.iface
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The receive loop: hands frames to clients and answers ARP for their addresses.
async fn receive(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(n) = shared.link.recv(&mut buf).await else {
            continue;
        };
        let frame = &buf[..n];
        match wire::parse(frame) {
            Frame::Udp { src, dst, payload } if dst.port() == 68 && src.port() == 67 => {
                let Some(xid) = wire::bootreply_xid(payload) else {
                    continue;
                };
                let i = (xid.wrapping_sub(shared.xid_base) >> 2) as usize;
                let Some(inbox) = shared.inbox(i) else {
                    continue;
                };
                if shared.box_mac.load(Ordering::Relaxed) == 0 {
                    let mut b = [0u8; 8];
                    b[2..].copy_from_slice(&frame[6..12]);
                    shared
                        .box_mac
                        .store(u64::from_be_bytes(b), Ordering::Relaxed);
                }
                if let Some(r) = wire::dhcp_reply(payload)
                    && inbox.try_send(Inbound::Dhcp(r)).is_err()
                {
                    shared.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
            Frame::Udp { src, dst, payload } => {
                let i = shared.by_ip.lock().expect("lock").get(dst.ip()).copied();
                if let Some(inbox) = i.and_then(|i| shared.inbox(i)) {
                    let msg = Inbound::Tftp {
                        from: src,
                        to: dst,
                        payload: payload.to_vec(),
                    };
                    if inbox.try_send(msg).is_err() {
                        shared.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Frame::ArpRequest {
                sender_mac,
                sender_ip,
                target,
            } => {
                let ours = shared.by_ip.lock().expect("lock").contains_key(&target);
                if ours {
                    let reply = wire::arp_reply(shared.link.mac, target, sender_mac, sender_ip);
                    shared.send(&reply).await;
                    shared.stats.arp_answers.fetch_add(1, Ordering::Relaxed);
                }
            }
            Frame::Other => {}
        }
    }
}

/// The result of one storm.
#[derive(Debug, Clone)]
pub struct Report {
    pub server: String,
    pub stages: Stages,
    pub clients: usize,
    pub completed: usize,
    pub failed: usize,
    /// Failure reasons (first 60 characters) and how many boots each ended.
    pub reasons: BTreeMap<String, usize>,
    pub kernel_p50: Option<f64>,
    pub kernel_p99: Option<f64>,
    pub registered_p50: Option<f64>,
    pub registered_p99: Option<f64>,
    pub last_done: f64,
    pub dhcp_retx: u64,
    pub tftp_retx: u64,
    pub agent_retries: u64,
    pub socket_drops: u64,
    pub queue_drops: u64,
    /// Peak resident memory (VmHWM), file-backed pages included (the mapped kernel and
    /// initrd the box serves count here).
    pub box_peak_rss_kib: Option<u64>,
    /// Peak anonymous resident memory (RssAnon, sampled every 200 ms): the heap.
    pub box_peak_anon_kib: Option<u64>,
    pub box_cpu_s: Option<f64>,
    pub generator_cpu_s: Option<f64>,
    pub ramp_s: f64,
}

/// The `p` quantile (0–1) of `v` (nearest rank).
pub fn quantile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let k = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[k])
}

/// utime + stime of `/proc/<pid>/stat` in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn spawn_ip_batch() -> anyhow::Result<(Child, ChildStdin)> {
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `ip -batch -`")?;
    let stdin = child.stdin.take().context("ip's stdin")?;
    Ok((child, stdin))
}

/// The transaction id base of a run: from the pid, so two generators on one segment differ.
fn xid_base() -> u32 {
    std::process::id().wrapping_mul(0x9e37_79b9) & 0xfff0_0000
}

/// What a report measures of the server and the generator: CPU time since [`Watch::start`]
/// and the server's peak RSS (VmHWM, else the peak sampled every 200 ms).
struct Watch {
    box_pid: Option<u32>,
    box_cpu0: Option<f64>,
    gen_cpu0: Option<f64>,
    peak_rss: Arc<AtomicU64>,
    peak_anon: Arc<AtomicU64>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

/// [`Watch`]'s numbers at the end of the run.
struct Measured {
    box_peak_rss_kib: Option<u64>,
    box_peak_anon_kib: Option<u64>,
    box_cpu_s: Option<f64>,
    generator_cpu_s: Option<f64>,
}

impl Watch {
    fn start(box_pid: Option<u32>) -> Watch {
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_anon = Arc::new(AtomicU64::new(0));
        let sampler = box_pid.map(|pid| {
            let peak = peak_rss.clone();
            let anon = peak_anon.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(kib) = status_kib(pid, "VmRSS:") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    if let Some(kib) = status_kib(pid, "RssAnon:") {
                        anon.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        Watch {
            box_pid,
            box_cpu0: box_pid.and_then(|p| cpu_seconds(&p.to_string())),
            gen_cpu0: cpu_seconds("self"),
            peak_rss,
            peak_anon,
            sampler,
        }
    }

    fn stop(self) -> Measured {
        if let Some(s) = self.sampler {
            s.abort();
        }
        Measured {
            box_peak_rss_kib: self
                .box_pid
                .and_then(|p| status_kib(p, "VmHWM:"))
                .or(Some(self.peak_rss.load(Ordering::Relaxed)).filter(|v| *v > 0)),
            box_peak_anon_kib: Some(self.peak_anon.load(Ordering::Relaxed)).filter(|v| *v > 0),
            box_cpu_s: self
                .box_pid
                .and_then(|p| cpu_seconds(&p.to_string()))
                .zip(self.box_cpu0)
                .map(|(b, a)| b - a),
            generator_cpu_s: cpu_seconds("self").zip(self.gen_cpu0).map(|(b, a)| b - a),
        }
    }
}

/// Writes every machine's account to `path`, in machine order.
fn write_outcomes(path: &std::path::Path, outcomes: &mut [Outcome]) -> anyhow::Result<()> {
    outcomes.sort_by_key(|o| o.i);
    let lines: String = outcomes.iter().map(|o| format!("{}\n", o.json())).collect();
    std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))
}

/// Runs the storm to the end (every client completed or failed).
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let link =
        Link::open(&opts.iface).with_context(|| format!("packet socket on {}", opts.iface))?;
    if let (Stages::Dhcp, Some(wait)) = (opts.stages, opts.dora_once) {
        return run_rate(opts, wait, link).await;
    }
    let (mut ip_child, ip_stdin) = spawn_ip_batch()?;
    let mut inboxes = Vec::with_capacity(opts.clients);
    let mut receivers = Vec::with_capacity(opts.clients);
    for _ in 0..opts.clients {
        let (tx, rx) = mpsc::channel(256);
        inboxes.push(tx);
        receivers.push(rx);
    }
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        link,
        xid_base: xid_base(),
        inboxes,
        by_ip: Mutex::new(HashMap::new()),
        leased: Mutex::new(HashMap::new()),
        box_mac: AtomicU64::new(0),
        ip_batch: tokio::sync::Mutex::new(ip_stdin),
        stats: Stats::default(),
    });
    let _ = shared.link.drops();
    let watch = Watch::start(opts.box_pid);
    let receiver = tokio::spawn(receive(shared.clone()));

    let start = appliance::clock::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, rx) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        let i = opts.first + opts.macs.map_or(k, |m| k % m.max(1));
        let slot = k;
        let delay = opts.ramp.mul_f64(k as f64 / opts.clients.max(1) as f64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let c = Client {
                i,
                slot,
                uuid: crate::synthetic_agent::uuid(i),
                mac: crate::client::mac(i),
                shared,
                rx,
                t0: appliance::clock::now(),
                acks: Vec::new(),
            };
            let out = c.boot().await;
            (
                out,
                appliance::clock::now().duration_since(start).as_secs_f64(),
            )
        });
    }
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(opts.clients);
    let mut last_done = 0f64;
    while let Some(r) = tasks.join_next().await {
        let (o, at) = r.context("a client task panicked")?;
        last_done = last_done.max(at);
        outcomes.push(o);
    }
    receiver.abort();
    let measured = watch.stop();
    let _ = ip_child.kill().await;
    if let Some(path) = &opts.outcomes {
        write_outcomes(path, &mut outcomes)?;
    }

    let mut reasons = BTreeMap::new();
    for o in &outcomes {
        if let Some(r) = &o.failed {
            let key: String = r.chars().take(60).collect();
            *reasons.entry(key).or_insert(0) += 1;
        }
    }
    let mut kernel: Vec<f64> = outcomes.iter().filter_map(|o| o.kernel_loaded).collect();
    let mut registered: Vec<f64> = outcomes.iter().filter_map(|o| o.registered).collect();
    let failed = outcomes.iter().filter(|o| o.failed.is_some()).count();
    Ok(Report {
        server: opts.server.clone(),
        stages: opts.stages,
        clients: opts.clients,
        completed: outcomes.len() - failed,
        failed,
        reasons,
        kernel_p50: quantile(&mut kernel, 0.5),
        kernel_p99: quantile(&mut kernel, 0.99),
        registered_p50: quantile(&mut registered, 0.5),
        registered_p99: quantile(&mut registered, 0.99),
        last_done,
        dhcp_retx: shared.stats.dhcp_retx.load(Ordering::Relaxed),
        tftp_retx: shared.stats.tftp_retx.load(Ordering::Relaxed),
        agent_retries: shared.stats.agent_retries.load(Ordering::Relaxed),
        socket_drops: shared.link.drops(),
        queue_drops: shared.stats.queue_drops.load(Ordering::Relaxed),
        box_peak_rss_kib: measured.box_peak_rss_kib,
        box_peak_anon_kib: measured.box_peak_anon_kib,
        box_cpu_s: measured.box_cpu_s,
        generator_cpu_s: measured.generator_cpu_s,
        ramp_s: opts.ramp.as_secs_f64(),
    })
}

/// The DHCP-only rate mode (`crate::rate`): no task, inbox or address per machine.
async fn run_rate(opts: Options, wait: Duration, link: Link) -> anyhow::Result<Report> {
    let _ = link.drops();
    let base = xid_base();
    let watch = Watch::start(opts.box_pid);
    let mut tally = crate::rate::run(&opts, wait, &link, |k| base.wrapping_add((k as u32) << 2))
        .await
        .context("the rate run's packet socket")?;
    let measured = watch.stop();
    if let Some(path) = &opts.outcomes {
        write_outcomes(path, &mut tally.outcomes)?;
    }
    Ok(Report {
        server: opts.server.clone(),
        stages: opts.stages,
        clients: opts.clients,
        completed: tally.completed,
        failed: tally.failed,
        reasons: tally.reasons,
        kernel_p50: None,
        kernel_p99: None,
        registered_p50: None,
        registered_p99: None,
        last_done: tally.last_done,
        dhcp_retx: 0,
        tftp_retx: 0,
        agent_retries: 0,
        socket_drops: link.drops(),
        queue_drops: 0,
        box_peak_rss_kib: measured.box_peak_rss_kib,
        box_peak_anon_kib: measured.box_peak_anon_kib,
        box_cpu_s: measured.box_cpu_s,
        generator_cpu_s: measured.generator_cpu_s,
        ramp_s: opts.ramp.as_secs_f64(),
    })
}

impl Report {
    /// One JSON object (a line of the bench's results file).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "server": self.server,
            "stages": format!("{:?}", self.stages).to_lowercase(),
            "clients": self.clients,
            "completed": self.completed,
            "failed": self.failed,
            "reasons": self.reasons,
            "kernel_p50_s": self.kernel_p50,
            "kernel_p99_s": self.kernel_p99,
            "registered_p50_s": self.registered_p50,
            "registered_p99_s": self.registered_p99,
            "last_done_s": self.last_done,
            "dhcp_retx": self.dhcp_retx,
            "tftp_retx": self.tftp_retx,
            "agent_retries": self.agent_retries,
            "socket_drops": self.socket_drops,
            "queue_drops": self.queue_drops,
            "box_peak_rss_kib": self.box_peak_rss_kib,
            "box_peak_anon_kib": self.box_peak_anon_kib,
            "box_cpu_s": self.box_cpu_s,
            "generator_cpu_s": self.generator_cpu_s,
            "ramp_s": self.ramp_s,
        })
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let s = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let mut out = format!(
            "{} {:?} N={}: completed {} failed {} | kernel loaded p50/p99 {}/{} s | registered p50/p99 {}/{} s | last {:.1} s\n  retransmits: dhcp {} tftp {} agent {} | drops: socket {} queue {} | box peak RSS {} MiB (anon {} MiB), CPU {} s | generator CPU {} s\n",
            self.server,
            self.stages,
            self.clients,
            self.completed,
            self.failed,
            s(self.kernel_p50),
            s(self.kernel_p99),
            s(self.registered_p50),
            s(self.registered_p99),
            self.last_done,
            self.dhcp_retx,
            self.tftp_retx,
            self.agent_retries,
            self.socket_drops,
            self.queue_drops,
            self.box_peak_rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            self.box_peak_anon_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            s(self.box_cpu_s),
            s(self.generator_cpu_s),
        );
        for (r, n) in &self.reasons {
            out.push_str(&format!("  failed {n}: {r}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile(&mut [3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
