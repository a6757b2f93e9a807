//! `appliance agent`: runs in the agent initramfs the box PXE-boots unknown and accepted
//! servers into (built by `scripts/build-agent-initramfs`). It registers the server with the
//! box over the agent gRPC API (`api.Agent`), then asks what to do: wait, wipe the disks,
//! reboot or power off.
//!
//! The room: `cmdline` (kernel args, pure), `dmi` (SMBIOS table parsing, pure), `inventory`
//! (sysfs/procfs → the v1alpha2 hardware layout, on a root dir so tests use fixture trees),
//! `wipe` (ranges, pure; zero writes), `bmc` (in-band BMC setup steps over a transport) and
//! `ipmidev` (that transport: `/dev/ipmi0`, the room's only unsafe code), `dhcp6` (the
//! initramfs's DHCPv6 client, `appliance agent --dhcp6 IFACE`, over `protocol::dhcpv6::client`;
//! the init runs it instead of udhcpc when `sidero.endpoint` is an IPv6 address), and this file: the
//! thin gRPC loop. It touches the local machine only (its block devices, its BMC,
//! reboot/poweroff) and talks only to the endpoint on the kernel command line. It never
//! links server-side rooms (it borrows `bmc::setup::generate_password`, a leaf function).
//!
//! Call order: CreateServer (retried) → ReconcileServerAddresses → if the reply says wipe:
//! wipe (Heartbeat every reboot_timeout/3, ReportWipeProgress) → MarkServerAsWiped → loop
//! { NextAction: WAIT sleeps poll_seconds, WIPE wipes, REBOOT/POWEROFF end the loop }.
//! A box without NextAction (a Sidero box) gets Sidero's behaviour: reboot after 10 s. A
//! NextAction answered NOT_FOUND (the box does not know this boot: it restarted) is
//! followed by a new CreateServer, then the loop goes on. Every call goes out from the one
//! address the box saw CreateServer come from (the box refuses others).
//! BMC setup: when CreateServer (after a Sidero box's wipe) or a NextAction reply that is
//! not WIPE says `setup_bmc`, once per run: read the BMC's LAN address in-band →
//! UpdateBMCInfo(ip, port) → create/reuse the `sidero` user with a new password →
//! UpdateBMCInfo(user, pass). Failures (no /dev/ipmi0, BMC errors) are logged, never fatal.

pub mod bmc;
pub mod cmdline;
pub mod dhcp6;
pub mod dmi;
pub mod inventory;
pub mod ipmidev;
pub mod signer;
pub mod wipe;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb, AgentAction};
use thiserror::Error;
use tonic::transport::Endpoint;

use crate::clock;
use inventory::{Disk, IfAddr, Inventory};

/// How long calls are retried while the box is unreachable (Sidero: 5 minutes).
const RETRY_FOR: Duration = Duration::from_secs(300);
const RETRY_EVERY: Duration = Duration::from_secs(3);
/// How long to wait for the PXE NIC to get an IPv4 address (the init script runs udhcpc).
const ADDRESS_WAIT: Duration = Duration::from_secs(60);
/// How often wipe progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long one in-band IPMI request may take (KCS under emulation is slow).
const IPMI_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one agent run.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// File with the kernel command line.
    pub cmdline: PathBuf,
    /// Overrides `sidero.endpoint` (`host:port`).
    pub endpoint: Option<String>,
    /// Root of sysfs/procfs (`/`), for trying the agent on a copied tree.
    pub root: PathBuf,
    /// Register and report only: never wipe (for trying the agent on a live machine).
    pub no_wipe: bool,
    /// Never touch the local BMC: `setup_bmc` is logged and skipped.
    pub no_bmc_setup: bool,
}

/// How a run ends (the caller carries it out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reboot(String),
    PowerOff(String),
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("read the kernel command line from {path}")]
    Cmdline {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Args(#[from] cmdline::CmdlineError),
    #[error("read the hardware inventory")]
    Inventory(#[from] inventory::InventoryError),
    #[error("endpoint `{0}` is not usable as a gRPC URL")]
    Endpoint(String),
    #[error("{call} failed: {status}")]
    Call { call: &'static str, status: String },
    #[error("wipe failed")]
    Wipe(#[from] wipe::WipeError),
    #[error("wipe thread for {0} panicked")]
    WipePanic(String),
    #[error("no key for this boot: the OS random source failed: {0}")]
    Random(String),
}

/// Runs the agent until the box says reboot/power off, or a step fails for good.
pub async fn run(opts: AgentOptions) -> Result<Outcome, AgentError> {
    let text = std::fs::read_to_string(&opts.cmdline).map_err(|source| AgentError::Cmdline {
        path: opts.cmdline.clone(),
        source,
    })?;
    let mut args = cmdline::parse(&text).or_else(|e| match &opts.endpoint {
        Some(ep) => Ok(cmdline::AgentCmdline {
            endpoint: ep.clone(),
            mac: None,
            token: None,
        }),
        None => Err(e),
    })?;
    if let Some(ep) = &opts.endpoint {
        args.endpoint = ep.clone();
    }
    tracing::info!(
        "box endpoint {}, PXE NIC {}",
        args.endpoint,
        args.mac.as_deref().unwrap_or("(not given)")
    );
    let addrs = wait_for_address(&opts.root, args.mac.as_deref()).await;
    let inv = inventory::read(&opts.root, &addrs)?;
    log_inventory(&inv);

    let channel = Endpoint::from_shared(format!("http://{}", args.endpoint))
        .map_err(|_| AgentError::Endpoint(args.endpoint.clone()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect_lazy();
    // This boot's key (memory only) and the boot token: every call is signed (a Sidero box
    // ignores the metadata).
    let signer = signer::Signer::generate(args.token.clone())
        .map_err(|e| AgentError::Random(e.to_string()))?;
    tracing::info!(
        "agent key {} generated for this boot; boot token {}",
        signer.public_key(),
        if args.token.is_some() {
            "present"
        } else {
            "absent (a box in token mode refuses the registration)"
        }
    );
    let mut client = signer::SignedClient::new(AgentClient::new(channel), Arc::new(signer));
    let mut uuid = inv.uuid().to_string();

    let create = pb::CreateServerRequest {
        hardware: Some(inv.hardware.clone()),
        hostname: inv.hostname.clone(),
    };
    let reg = retry("CreateServer", || {
        let mut c = client.clone();
        let r = create.clone();
        async move { c.create_server(r).await }
    })
    .await?;
    if !reg.name.is_empty() {
        // The box named this machine by MAC + baseboard serial (its UUID is not unique).
        tracing::warn!(
            "the box registered this machine as {} (its SMBIOS UUID {uuid} is not unique)",
            reg.name
        );
        uuid = reg.name.clone();
    }
    tracing::info!(
        "AGENT-REGISTERED uuid={uuid} state={} wipe={} insecure_wipe={} setup_bmc={}",
        reg.state,
        reg.wipe,
        reg.insecure_wipe,
        reg.setup_bmc
    );

    let ips = inventory::internal_ips(&addrs);
    if !ips.is_empty() {
        let req = pb::ReconcileServerAddressesRequest {
            uuid: uuid.clone(),
            address: ips
                .iter()
                .map(|a| pb::Address {
                    r#type: "InternalIP".into(),
                    address: a.clone(),
                })
                .collect(),
        };
        let r = retry("ReconcileServerAddresses", || {
            let mut c = client.clone();
            let r = req.clone();
            async move { c.reconcile_server_addresses(r).await }
        })
        .await;
        match r {
            Ok(_) => tracing::info!("addresses reported: {}", ips.join(", ")),
            Err(e) => tracing::warn!("{}", crate::error_chain(&e)),
        }
    }
    // A Sidero box says "wipe" in the reply; our box (which fills in `state`) says it
    // through NextAction, which also moves the server to `wiping` first.
    if reg.wipe && reg.state.is_empty() {
        let mode = if reg.insecure_wipe {
            wipe::Mode::Fast
        } else {
            wipe::Mode::Full
        };
        wipe_and_report(
            &mut client,
            &uuid,
            &inv.disks,
            mode,
            reg.reboot_timeout,
            opts.no_wipe,
        )
        .await?;
    }
    let mut bmc_done = false;
    if reg.setup_bmc {
        setup_bmc(&client, &uuid, &opts).await;
        bmc_done = true;
    }

    loop {
        let req = pb::NextActionRequest { uuid: uuid.clone() };
        let next = match client.next_action(req.clone()).await {
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!("the box has no NextAction (a Sidero box): rebooting in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
                return Ok(Outcome::Reboot(
                    "registration done (Sidero agent behaviour)".into(),
                ));
            }
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                // The box does not know this boot (it restarted, or the server was handed
                // out and freed since): register again, which begins a new boot.
                tracing::info!("NextAction: {}; registering again", s.message());
                tokio::time::sleep(RETRY_EVERY).await;
                let reg = retry("CreateServer", || {
                    let mut c = client.clone();
                    let r = create.clone();
                    async move { c.create_server(r).await }
                })
                .await?;
                tracing::info!(
                    "AGENT-REGISTERED uuid={uuid} state={} wipe={} setup_bmc={} (again)",
                    reg.state,
                    reg.wipe,
                    reg.setup_bmc
                );
                continue;
            }
            Err(_) => {
                retry("NextAction", || {
                    let mut c = client.clone();
                    let r = req.clone();
                    async move { c.next_action(r).await }
                })
                .await?
            }
        };
        let action = AgentAction::try_from(next.action).unwrap_or(AgentAction::Unspecified);
        // Sidero sets up the BMC after the wipe: a WIPE reply is carried out first.
        if next.setup_bmc && !bmc_done && action != AgentAction::Wipe {
            setup_bmc(&client, &uuid, &opts).await;
            bmc_done = true;
        }
        match action {
            AgentAction::Wait | AgentAction::Unspecified => {
                tracing::debug!("waiting: state={} ({})", next.state, next.reason);
                tokio::time::sleep(Duration::from_secs(u64::from(
                    next.poll_seconds.clamp(1, 600),
                )))
                .await;
            }
            AgentAction::Wipe => {
                let mode = match pb::WipeMode::try_from(next.wipe_mode) {
                    Ok(pb::WipeMode::Full) => wipe::Mode::Full,
                    _ => wipe::Mode::Fast,
                };
                tracing::info!("told to wipe: state={} ({})", next.state, next.reason);
                wipe_and_report(
                    &mut client,
                    &uuid,
                    &inv.disks,
                    mode,
                    next.reboot_timeout,
                    opts.no_wipe,
                )
                .await?;
            }
            AgentAction::Reboot => {
                return Ok(Outcome::Reboot(format!("box says reboot: {}", next.reason)));
            }
            AgentAction::Poweroff => {
                return Ok(Outcome::PowerOff(format!(
                    "box says power off: {}",
                    next.reason
                )));
            }
        }
    }
}

/// Waits (bounded) until the PXE NIC (by MAC; any NIC without one) has an IPv4 address,
/// then returns every interface address.
async fn wait_for_address(root: &std::path::Path, mac: Option<&str>) -> Vec<IfAddr> {
    let deadline = clock::now() + ADDRESS_WAIT;
    let want_iface = |addrs: &[IfAddr]| -> bool {
        addrs.iter().any(|(name, ip, _)| {
            usable(ip)
                && !ip.is_loopback()
                && mac.is_none_or(|m| {
                    std::fs::read_to_string(root.join("sys/class/net").join(name).join("address"))
                        .is_ok_and(|a| a.trim().eq_ignore_ascii_case(m))
                })
        })
    };
    loop {
        let addrs = if_addresses();
        if want_iface(&addrs) || clock::now() >= deadline {
            if !want_iface(&addrs) {
                tracing::warn!(
                    "no IPv4 or global IPv6 address on the PXE NIC after {ADDRESS_WAIT:?}; trying the box anyway"
                );
            }
            return addrs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An address the agent can call the box from: IPv4, or IPv6 that is not link-local (a
/// DHCPv6 lease; the link-local one is there before any lease).
fn usable(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(_) => true,
        std::net::IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}

/// Every interface address (getifaddrs).
pub fn if_addresses() -> Vec<IfAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list
            .into_iter()
            .map(|i| {
                let prefix = match &i.addr {
                    if_addrs::IfAddr::V4(a) => u32::from(a.netmask).count_ones(),
                    if_addrs::IfAddr::V6(a) => u128::from(a.netmask).count_ones(),
                } as u8;
                (i.name.clone(), i.ip(), prefix)
            })
            .collect(),
        Err(e) => {
            tracing::warn!("cannot list interface addresses: {e}");
            Vec::new()
        }
    }
}

fn log_inventory(inv: &Inventory) {
    for n in &inv.notes {
        tracing::info!("inventory: {n}");
    }
    let hw = &inv.hardware;
    let c = hw.compute.clone().unwrap_or_default();
    let m = hw.memory.clone().unwrap_or_default();
    // As the box will store it.
    let fw = hw
        .firmware
        .as_ref()
        .map(crate::api::agent_report::firmware)
        .unwrap_or_default();
    tracing::info!(
        "AGENT-INVENTORY uuid={} processors={} cores={} threads={} memory_mb={} disks={} nics={} firmware={} secure_boot={}",
        inv.uuid(),
        c.processor_count,
        c.total_core_count,
        c.total_thread_count,
        m.total_size,
        inv.disks
            .iter()
            .map(|d| format!(
                "{}:{}{}",
                d.name,
                d.size,
                if d.read_only { ":ro" } else { "" }
            ))
            .collect::<Vec<_>>()
            .join(","),
        hw.network.as_ref().map_or(0, |n| n.interface_count),
        fw.kind.map_or("?", |k| k.as_str()),
        fw.secure_boot.map_or("?", |s| s.as_str()),
    );
}

/// In-band BMC setup as Sidero's agent does it; every failure is logged and ends the
/// setup, never the agent.
async fn setup_bmc(client: &signer::SignedClient, uuid: &str, opts: &AgentOptions) {
    if opts.no_bmc_setup {
        tracing::warn!("box asks for BMC setup, but --no-bmc-setup is set: skipped");
        return;
    }
    let root = opts.root.as_path();
    let dev = if root == std::path::Path::new("/") {
        PathBuf::from(ipmidev::DEVICE)
    } else {
        root.join(ipmidev::DEVICE.trim_start_matches('/'))
    };
    if !dev.exists() {
        tracing::info!(
            "box asks for BMC setup; no in-band BMC ({} absent): skipped",
            dev.display()
        );
        return;
    }
    let started = clock::now();
    let open = dev.clone();
    let lan = tokio::task::spawn_blocking(move || {
        let mut d = ipmidev::IpmiDevice::open(&open, IPMI_TIMEOUT)?;
        let lan = bmc::read_lan(&mut d, bmc::LAN_CHANNEL)?;
        Ok::<_, bmc::InbandError>((d, lan))
    })
    .await;
    let (device, lan) = match lan {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(
                "AGENT-BMC-FAILED reading the BMC's LAN address: {}",
                crate::error_chain(&e)
            );
            return;
        }
        Err(e) => {
            tracing::warn!("AGENT-BMC-FAILED: the in-band IPMI task panicked: {e}");
            return;
        }
    };
    tracing::info!(
        "AGENT-BMC-LAN ip={} port={} (read in-band from {} in {:.0} ms)",
        lan.ip,
        lan.port.map_or("-".to_string(), |p| p.to_string()),
        dev.display(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    if !report_bmc(
        client,
        uuid,
        pb::BmcInfo {
            ip: lan.ip.to_string(),
            port: lan.port.map_or(0, u32::from),
            ..Default::default()
        },
    )
    .await
    {
        return;
    }
    let user = tokio::task::spawn_blocking(move || {
        let mut device = device;
        let password = crate::bmc::setup::generate_password();
        bmc::ensure_user(&mut device, bmc::LAN_CHANNEL, bmc::SETUP_USER, &password)
            .map(|slot| (slot, password))
    })
    .await;
    let (slot, password) = match user {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(
                "AGENT-BMC-FAILED setting up the `{}` user: {}",
                bmc::SETUP_USER,
                crate::error_chain(&e)
            );
            return;
        }
        Err(e) => {
            tracing::warn!("AGENT-BMC-FAILED: the in-band IPMI task panicked: {e}");
            return;
        }
    };
    let how = match slot {
        crate::protocol::ipmi::command::UserSlot::Existing(_) => "reused",
        crate::protocol::ipmi::command::UserSlot::Free(_) => "created",
    };
    if report_bmc(
        client,
        uuid,
        pb::BmcInfo {
            user: bmc::SETUP_USER.to_string(),
            pass: password,
            ..Default::default()
        },
    )
    .await
    {
        tracing::info!(
            "AGENT-BMC-USER user={} id={} {how}, new password reported ({:.0} ms since start of BMC setup)",
            bmc::SETUP_USER,
            slot.id(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// UpdateBMCInfo (retried like every call); false when it failed (logged).
async fn report_bmc(client: &signer::SignedClient, uuid: &str, info: pb::BmcInfo) -> bool {
    let req = pb::UpdateBmcInfoRequest {
        uuid: uuid.to_string(),
        bmc_info: Some(info),
    };
    let r = retry("UpdateBMCInfo", || {
        let mut c = client.clone();
        let r = req.clone();
        async move { c.update_bmc_info(r).await }
    })
    .await;
    match r {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("AGENT-BMC-FAILED {}", crate::error_chain(&e));
            false
        }
    }
}

/// Calls `f` until it succeeds, retrying transient failures for [`RETRY_FOR`].
async fn retry<T, F, Fut>(call: &'static str, mut f: F) -> Result<T, AgentError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = clock::now() + RETRY_FOR;
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
                let status = format!("{:?}: {}", s.code(), s.message());
                if !transient || clock::now() >= deadline {
                    return Err(AgentError::Call { call, status });
                }
                tracing::info!("{call}: {status}; retrying in {RETRY_EVERY:?}");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// Wipes every writable disk in parallel (one thread each), heartbeating and reporting
/// progress meanwhile, then MarkServerAsWiped.
async fn wipe_and_report(
    client: &mut signer::SignedClient,
    uuid: &str,
    disks: &[Disk],
    mode: wipe::Mode,
    reboot_timeout: f64,
    no_wipe: bool,
) -> Result<(), AgentError> {
    if no_wipe {
        tracing::warn!(
            "told to wipe ({}), but --no-wipe is set: not wiping, not marking wiped",
            mode.as_str()
        );
        return Err(AgentError::Call {
            call: "wipe",
            status: "refused by --no-wipe".into(),
        });
    }
    let disks: Vec<&Disk> = disks.iter().filter(|d| !d.read_only).collect();
    let started = clock::now();
    tracing::info!(
        "AGENT-WIPE-START mode={} disks={}",
        mode.as_str(),
        disks
            .iter()
            .map(|d| d.dev_path())
            .collect::<Vec<_>>()
            .join(",")
    );
    let progress: Arc<Mutex<Vec<pb::DiskProgress>>> = Arc::new(Mutex::new(
        disks
            .iter()
            .map(|d| pb::DiskProgress {
                device_name: d.dev_path(),
                bytes_total: wipe::total(&wipe::ranges(mode, d.size)),
                method: "write".into(),
                ..Default::default()
            })
            .collect(),
    ));
    let mut handles = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let path = PathBuf::from(d.dev_path());
        let progress = progress.clone();
        handles.push((
            d.dev_path(),
            tokio::task::spawn_blocking(move || {
                wipe::wipe(&path, mode, |done, total| {
                    if let Ok(mut p) = progress.lock() {
                        p[i].bytes_done = done;
                        p[i].bytes_total = total;
                    }
                })
            }),
        ));
    }
    let beat_every = Duration::from_secs_f64((reboot_timeout / 3.0).clamp(1.0, 600.0));
    let mut last_beat: Option<Instant> = None;
    let mut last_report = clock::now();
    let all_done = || handles.iter().all(|(_, h)| h.is_finished());
    while !all_done() {
        if last_beat.is_none_or(|t| t.elapsed() >= beat_every) {
            if let Err(s) = client
                .heartbeat(pb::HeartbeatRequest { uuid: uuid.into() })
                .await
            {
                tracing::warn!("Heartbeat: {s}");
            }
            last_beat = Some(clock::now());
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            report_progress(client, uuid, &progress).await;
            last_report = clock::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut written = 0;
    for (dev, h) in handles {
        match h.await {
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(AgentError::WipePanic(dev)),
        }
    }
    if let Ok(mut p) = progress.lock() {
        for d in p.iter_mut() {
            d.done = true;
        }
    }
    report_progress(client, uuid, &progress).await;
    let req = pb::MarkServerAsWipedRequest {
        uuid: uuid.into(),
        wipe_mode: match mode {
            wipe::Mode::Fast => pb::WipeMode::Fast,
            wipe::Mode::Full => pb::WipeMode::Full,
        } as i32,
    };
    retry("MarkServerAsWiped", || {
        let mut c = client.clone();
        let r = req.clone();
        async move { c.mark_server_as_wiped(r).await }
    })
    .await?;
    tracing::info!(
        "AGENT-WIPED mode={} disks={} bytes={written} in {:.1}s",
        mode.as_str(),
        disks.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn report_progress(
    client: &mut signer::SignedClient,
    uuid: &str,
    progress: &Mutex<Vec<pb::DiskProgress>>,
) {
    let disks = progress.lock().map(|p| p.clone()).unwrap_or_default();
    let r = client
        .report_wipe_progress(pb::ReportWipeProgressRequest {
            uuid: uuid.into(),
            disks,
        })
        .await;
    if let Err(s) = r
        && s.code() != tonic::Code::Unimplemented
    {
        tracing::debug!("ReportWipeProgress: {s}");
    }
}

/// Carries out the outcome: syncs, then `reboot -f` / `poweroff -f` (busybox in the
/// initramfs; both call reboot(2) directly). Returns only if that could not be started.
pub fn act(outcome: &Outcome) -> std::io::Error {
    let (verb, why) = match outcome {
        Outcome::Reboot(w) => ("reboot", w),
        Outcome::PowerOff(w) => ("poweroff", w),
    };
    tracing::info!("AGENT-{} {why}", verb.to_ascii_uppercase());
    let _ = std::process::Command::new("sync").status();
    match std::process::Command::new(verb).arg("-f").status() {
        Ok(s) => std::io::Error::other(format!("`{verb} -f` returned ({s})")),
        Err(e) => e,
    }
}

/// Plain console logging for the initramfs: no colours, uptime timestamps.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(std::io::stderr)
        .try_init();
}
