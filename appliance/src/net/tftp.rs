//! TFTP service glue: the UDP listener (`[::]:69` by default, a tokio task) and one read
//! transfer per client on its own ephemeral, connected UDP socket (standard TFTP, RFC 1350
//! §4). All protocol decisions come from the pure core in `protocol::tftp`; this file owns
//! sockets, timers and file reads only.
//!
//! The listener is opened by the box's one listening rule (`net::listen`, shared with the
//! :8081 listener): `[::]` is one dual-stack socket serving IPv4 and IPv6 clients (UEFI PXE
//! over IPv6 fetches the `tftp://[box]/ipxe.efi` DHCPv6 handed it), `0.0.0.0` on the same
//! port with one warning when the host has no IPv6. An IPv4 client reached through it
//! (`::ffff:a.b.c.d`) is that IPv4 address everywhere (logs, timeline, per-client counts),
//! and each transfer's socket takes the client's family: an IPv4 client is answered from an
//! IPv4 socket, an IPv6 client from an IPv6 one.
//!
//! A transfer runs on a tokio blocking thread: lock-step TFTP waits for one ACK per block,
//! and a blocking `recv` with a 100 ms tick (for deadlines and shutdown) answers it with
//! the fewest syscalls. A window of DATA goes out as one UDP GSO `sendmsg` (the kernel
//! splits it into datagrams) when the kernel allows it, else datagram by datagram.
//!
//! - Requests the core refuses (write requests, paths outside the root, mail mode,
//!   malformed packets) get the core's TFTP ERROR and a `warn` log line naming the client.
//! - netascii requests are served as the translated stream of `protocol::tftp::netascii`:
//!   its length is counted with one pass over the file, and each window is translated from
//!   the file bytes its plan names (no translated copy is kept).
//! - At most `max_transfers_per_client` transfers run for one client address (so one
//!   client cannot take every slot); a read request beyond that is dropped (logged).
//! - At most `max_transfers` transfers run at full speed at once. Admission under a boot
//!   storm: a read request that finds every full-speed slot taken is still answered at
//!   once (OACK or block 1, from its own socket, in an async task) and then runs paced:
//!   one window every [`PACE`] (`ReadTransfer::set_pace`), so its firmware hears the box
//!   at least once a second and its retry timer never runs out (iPXE gives up after ~16 s
//!   of silence; when requests waited silently, 35 of 1,000 storm clients did). Freed
//!   slots go to the paced transfers oldest first (tokio's semaphore is FIFO), which then
//!   continue at full speed on a blocking thread. Up to [`PACED_MAX`] transfers may be
//!   paced; a request beyond that is dropped (the client retransmits it). Overload so
//!   makes boots slower, in arrival order, never failed (measured by `scripts/bench
//!   storm`).
//! - A retransmitted RRQ from a client whose transfer is already running is ignored.
//! - Files up to `cache_mib` (total) are kept in memory keyed by path, size and mtime, so
//!   a rack of machines fetching `ipxe.efi` at once reads it from disk once; bigger files
//!   are read from disk per window.
//! - The requested file is found by `net::tftp_root` (shared with HTTP `/tftp/`): symlinks
//!   are followed only to regular files inside the root or the allowed link targets, and
//!   never used as directories. Names a [`Rendered`] claims (the GRUB chain's configs and
//!   Environment files, plugged in by `app.rs`) are answered by it first.
//! - Refusals, finished and failed transfers and bytes sent are counted in
//!   [`TftpCounters`] (shown on `/metrics`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock;
use crate::config::TftpConfig;
use crate::metrics::{Counter, Labeled, Registry};
use crate::net::listen::{self, Fallback, Proto, canonical_peer};
use crate::net::tftp_root::{RootError, TftpRoot};
use crate::protocol::tftp::netascii::{self, Encoder};
use crate::protocol::tftp::transfer::{self, Decision, Limits, ReadTransfer, Status, Transmit};
use crate::protocol::tftp::wire::{self, ErrorCode, MAX_PACKET, Mode, RequestedOptions};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// Transfers that may run paced while every full-speed slot is taken.
pub const PACED_MAX: usize = 16_384;
/// A paced transfer's interval between windows: well inside every firmware's retry rules
/// (iPXE's timer settles near four times it, below its 10 s limit; UEFI's is 4 s).
pub const PACE: Duration = Duration::from_secs(1);
/// Receive buffer of a transfer, on the stack while it reads (ACKs are 4 bytes; an ERROR's
/// text is cut here). A 10,000-client storm runs 256 transfers at full speed and the rest
/// paced: none holds a receive buffer on the heap, nor one in its task between reads.
const TRANSFER_RECV: usize = 1024;

/// Everything the TFTP service needs, resolved from the config.
#[derive(Debug, Clone)]
pub struct TftpSettings {
    pub listen: SocketAddr,
    pub root: PathBuf,
    /// Where symlinks in the root may lead (config `tftp.link_targets`).
    pub link_targets: Vec<PathBuf>,
    /// Named files served beside the root (config `tftp.files`).
    pub files: std::collections::BTreeMap<String, PathBuf>,
    pub limits: Limits,
    pub max_transfers: usize,
    pub max_transfers_per_client: usize,
    pub cache_bytes: u64,
}

impl From<&TftpConfig> for TftpSettings {
    fn from(c: &TftpConfig) -> Self {
        TftpSettings {
            listen: c.listen,
            root: c.root.clone(),
            link_targets: c.link_targets.clone(),
            files: c.files.clone(),
            limits: Limits {
                max_blksize: c.max_blksize.clamp(wire::MIN_BLKSIZE, wire::MAX_BLKSIZE),
                max_windowsize: c.max_windowsize.max(1),
                default_timeout: Duration::from_millis(c.retransmit_ms.max(1)),
                max_retries: c.max_retries,
            },
            max_transfers: c.max_transfers.max(1),
            max_transfers_per_client: c.max_transfers_per_client.max(1),
            cache_bytes: c.cache_mib.saturating_mul(1 << 20),
        }
    }
}

/// Binding the listening socket failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for TFTP on udp {addr}")]
pub struct TftpBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// The bound, not yet running, TFTP service.
#[derive(Debug)]
pub struct TftpServer {
    socket: UdpSocket,
    fallback: Option<Fallback>,
    ctx: Arc<Ctx>,
}

/// What the TFTP service did, for `/metrics`.
#[derive(Debug, Default)]
pub struct TftpCounters {
    /// Requests answered with a TFTP ERROR (bad request, outside the root, not found).
    pub refused: Counter,
    pub completed: Counter,
    pub failed: Counter,
    /// File bytes of completed transfers.
    pub bytes_sent: Counter,
    /// Transfers that started paced because every full-speed slot was taken.
    pub paced: Counter,
}

impl TftpCounters {
    /// Adds the TFTP families to `/metrics`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "appliance_tftp_refused",
            "TFTP requests answered with an ERROR",
            self.refused.clone(),
        );
        r.register(
            "appliance_tftp_transfers",
            "TFTP transfers by outcome",
            Labeled::new(
                "result",
                [
                    ("complete", self.completed.clone()),
                    ("failed", self.failed.clone()),
                ],
            ),
        );
        r.register(
            "appliance_tftp_sent_bytes",
            "File bytes of completed TFTP transfers",
            self.bytes_sent.clone(),
        );
        r.register(
            "appliance_tftp_paced",
            "TFTP transfers started paced (every full-speed slot taken)",
            self.paced.clone(),
        );
    }
}

/// Files the box renders per request instead of reading them below the root (the GRUB
/// chain: `crate::boot::grub`), plugged in by `app.rs` once the boot decision exists.
pub trait Rendered: Send + Sync + std::fmt::Debug {
    /// The answer for `name` (plain components, `/`-separated, no leading `/`) asked by
    /// `client` of the box's `local` address; `None` when the name is not one of its own
    /// (then the root is asked).
    fn render<'a>(
        &'a self,
        name: &'a str,
        client: IpAddr,
        local: IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<RenderedFile>> + Send + 'a>>;
}

/// What a [`Rendered`] name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderedFile {
    /// These bytes, rendered for this request.
    Bytes(Vec<u8>),
    /// This file (outside the root, by the renderer's own rule).
    File(PathBuf),
    /// A TFTP "file not found", with the reason for the log.
    NotFound(String),
}

/// Where `app.rs` puts the renderer; names are served from the root until it is set.
pub type RenderedSlot = Arc<std::sync::OnceLock<Arc<dyn Rendered>>>;

#[derive(Debug)]
struct Ctx {
    settings: TftpSettings,
    files: Arc<TftpRoot>,
    rendered: RenderedSlot,
    cache: FileCache,
    active: Mutex<Active>,
    counters: Arc<TftpCounters>,
    timeline: Recorder,
}

/// Running transfers by client.
#[derive(Debug, Default)]
struct Active {
    /// Client ports with a running transfer (their retransmitted RRQs are ignored).
    peers: HashSet<SocketAddr>,
    /// Running transfers per client address.
    per_ip: HashMap<IpAddr, usize>,
}

impl Active {
    /// Registers a transfer for `peer`; `Err(true)` for a retransmitted RRQ of a running
    /// transfer, `Err(false)` when the client address has `max` transfers running.
    fn insert(&mut self, peer: SocketAddr, max: usize) -> Result<(), bool> {
        if self.peers.contains(&peer) {
            return Err(true);
        }
        let n = self.per_ip.entry(peer.ip()).or_default();
        if *n >= max {
            return Err(false);
        }
        *n += 1;
        self.peers.insert(peer);
        Ok(())
    }

    fn remove(&mut self, peer: SocketAddr) {
        if self.peers.remove(&peer)
            && let Some(n) = self.per_ip.get_mut(&peer.ip())
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
    }
}

/// An admitted read request.
#[derive(Debug)]
struct Request {
    peer: SocketAddr,
    requested: String,
    path: PathBuf,
    mode: Mode,
    options: RequestedOptions,
}

impl TftpServer {
    pub async fn bind(settings: TftpSettings) -> Result<TftpServer, TftpBindError> {
        TftpServer::bind_counting(settings, Arc::default()).await
    }

    /// As [`TftpServer::bind`], counting into `counters`.
    pub async fn bind_counting(
        settings: TftpSettings,
        counters: Arc<TftpCounters>,
    ) -> Result<TftpServer, TftpBindError> {
        let addr = settings.listen;
        let (socket, fallback) = listen::bind(addr, Proto::Udp)
            .and_then(|(s, f)| Ok((UdpSocket::from_std(s.into())?, f)))
            .map_err(|source| TftpBindError { addr, source })?;
        let cache = FileCache::new(settings.cache_bytes);
        let files = Arc::new(
            TftpRoot::new(settings.root.clone(), settings.link_targets.clone())
                .with_files(settings.files.clone()),
        );
        Ok(TftpServer {
            socket,
            fallback,
            ctx: Arc::new(Ctx {
                settings,
                files,
                rendered: RenderedSlot::default(),
                cache,
                active: Mutex::default(),
                counters,
                timeline: Recorder::off(),
            }),
        })
    }

    /// Records each transfer (file, bytes, duration, outcome) in the boot timeline under
    /// the client's address (`crate::timeline`). Call before `run`.
    pub fn record_to(&mut self, timeline: Recorder) {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.timeline = timeline;
        }
    }

    /// Serves the names the renderer in `slot` claims (once it is set) before the root.
    /// Call before `run`.
    pub fn render_from(&mut self, slot: RenderedSlot) {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.rendered = slot;
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Set when `[::]` was asked on a host without IPv6 and `0.0.0.0` was bound instead (the
    /// caller says so once).
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    /// Serves until `shutdown` turns true; running transfers are told (ERROR) and awaited.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let local = self.local_addr().ok();
        tracing::info!(listen = ?local, root = %self.ctx.settings.root.display(), "TFTP serving");
        let slots = Arc::new(Semaphore::new(self.ctx.settings.max_transfers));
        let mut transfers = JoinSet::new();
        let mut buf = vec![0u8; MAX_PACKET + 1];
        let for_transfers = shutdown.clone();
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(_) = transfers.join_next(), if !transfers.is_empty() => {}
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let mut admit = Admit {
                            slots: &slots,
                            transfers: &mut transfers,
                            shutdown: &for_transfers,
                        };
                        self.on_datagram(&buf[..n], from, &mut admit).await;
                    }
                    Err(e) => {
                        // E.g. an ICMP error for an ERROR we sent earlier; the listener
                        // keeps going. Pause briefly so a persistent error cannot spin.
                        tracing::debug!(error = %e, "TFTP listener receive error");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        while transfers.join_next().await.is_some() {}
        tracing::info!("TFTP stopped");
    }

    /// Runs one admitted transfer: at full speed when a slot is free, else paced until one
    /// frees.
    fn start(
        &self,
        q: Request,
        slots: &Arc<Semaphore>,
        transfers: &mut JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let ctx = self.ctx.clone();
        let shutdown = shutdown.clone();
        let slots = slots.clone();
        transfers.spawn(async move {
            let peer = q.peer;
            let _active = ActiveGuard { ctx: &ctx, peer };
            serve_read(&ctx, &q, slots, shutdown).await;
        });
    }

    /// One datagram on the listening port from `from` (as received: an IPv4 client on the
    /// dual-stack socket is `::ffff:a.b.c.d`, answered so, known as its IPv4 address).
    async fn on_datagram(&self, bytes: &[u8], from: SocketAddr, admit: &mut Admit<'_>) {
        let peer = canonical_peer(from);
        match transfer::decide(bytes) {
            Decision::Ignore => {
                tracing::debug!(%peer, "TFTP: ERROR packet on the listening port ignored");
            }
            Decision::Refuse {
                code,
                message,
                requested,
            } => {
                self.ctx.counters.refused.inc();
                tracing::warn!(%peer, file = requested.as_deref().unwrap_or(""), code = code.to_u16(), "TFTP request refused: {message}");
                let mut out = Vec::new();
                wire::encode_error(code, &message, &mut out);
                if let Err(e) = self.socket.send_to(&out, from).await {
                    tracing::debug!(%peer, error = %e, "TFTP: cannot send ERROR");
                }
            }
            Decision::Read {
                requested,
                path,
                mode,
                options,
            } => {
                let max = self.ctx.settings.max_transfers + PACED_MAX;
                if admit.transfers.len() >= max {
                    tracing::warn!(%peer, file = %requested, max,
                        "TFTP: too many transfers running and paced; request dropped (the client will retry)");
                    return;
                }
                let per_client = self.ctx.settings.max_transfers_per_client;
                let registered = self
                    .ctx
                    .active
                    .lock()
                    .expect("lock")
                    .insert(peer, per_client);
                match registered {
                    Ok(()) => {}
                    Err(true) => {
                        tracing::debug!(%peer, file = %requested, "TFTP: retransmitted RRQ ignored");
                        return;
                    }
                    Err(false) => {
                        tracing::warn!(%peer, file = %requested, max = per_client,
                            "TFTP: too many transfers for this client; request dropped (the client will retry)");
                        return;
                    }
                }
                let q = Request {
                    peer,
                    requested,
                    path,
                    mode,
                    options,
                };
                self.start(q, admit.slots, admit.transfers, admit.shutdown);
            }
        }
    }
}

/// What admitting a read request needs from the listener loop.
struct Admit<'a> {
    slots: &'a Arc<Semaphore>,
    transfers: &'a mut JoinSet<()>,
    shutdown: &'a watch::Receiver<bool>,
}

/// Resolves when the shutdown flag is set (without holding the watch guard).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

struct ActiveGuard<'a> {
    ctx: &'a Ctx,
    peer: SocketAddr,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.ctx.active.lock() {
            a.remove(self.peer);
        }
    }
}

/// One read transfer, start to end. Never returns an error: everything is logged.
async fn serve_read(
    ctx: &Ctx,
    q: &Request,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Request {
        peer,
        requested,
        path,
        mode,
        options,
    } = q;
    let (peer, mode) = (*peer, *mode);
    let requested = requested.as_str();
    let began_ms = ctx.timeline.now_ms();
    let began = clock::now();
    // `peer` is canonical (an IPv4 client is IPv4 here, whatever socket it came in on).
    let who = Who {
        ip: Some(peer.ip()),
        ..Default::default()
    };
    // The client's family: an IPv4 client is answered from an IPv4 socket.
    let local_ip = listen::local_for(ctx.settings.listen, peer);
    let socket = match UdpSocket::bind((local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, file = %requested, error = %e, "TFTP: cannot open a transfer socket");
            return;
        }
    };
    if let Err(e) = socket.connect(peer).await {
        tracing::warn!(%peer, file = %requested, error = %e, "TFTP: cannot reach the client");
        return;
    }

    let refuse = |code, message: &str, error: &dyn std::fmt::Display| {
        ctx.counters.refused.inc();
        ctx.timeline.record(
            who.clone(),
            Step::Tftp,
            Outcome::Refused,
            format!("{requested}: {message}"),
        );
        tracing::warn!(%peer, file = %requested, error = %error, "TFTP request refused: {message}");
        let mut out = Vec::new();
        wire::encode_error(code, message, &mut out);
        out
    };
    // The box's own address as this client reaches it (the connected socket's source).
    let local = socket.local_addr().map_or(local_ip, |a| a.ip());
    let rendered = match ctx.rendered.get() {
        Some(r) => match path.to_str() {
            Some(name) => r.render(name, peer.ip(), local).await,
            None => None,
        },
        None => None,
    };
    let full = match rendered {
        Some(RenderedFile::Bytes(bytes)) => Ok(Source::Memory(bytes.into())),
        Some(RenderedFile::NotFound(why)) => {
            let out = refuse(ErrorCode::FileNotFound, "file not found", &why);
            let _ = socket.send(&out).await;
            return;
        }
        Some(RenderedFile::File(full)) => Err(full),
        None => match ctx.files.resolve_async(path.to_path_buf()).await {
            Ok(full) => Err(full),
            Err(e) => {
                let (code, message) = match &e {
                    RootError::NotFound => (ErrorCode::FileNotFound, "file not found"),
                    RootError::NotRegular => (ErrorCode::FileNotFound, "not a regular file"),
                    e if e.is_refusal() => (ErrorCode::AccessViolation, "access denied"),
                    _ => (ErrorCode::NotDefined, "cannot read file"),
                };
                let out = refuse(code, message, &crate::error_chain(&e));
                let _ = socket.send(&out).await;
                return;
            }
        },
    };
    let source = match full {
        Ok(source) => source,
        Err(full) => match ctx.cache.open(&full).await {
            Ok(s) => s,
            Err(e) => {
                let (code, message) = match e.kind() {
                    io::ErrorKind::NotFound => (ErrorCode::FileNotFound, "file not found"),
                    io::ErrorKind::PermissionDenied => {
                        (ErrorCode::AccessViolation, "access denied")
                    }
                    io::ErrorKind::InvalidInput => (ErrorCode::FileNotFound, "not a regular file"),
                    _ => (ErrorCode::NotDefined, "cannot read file"),
                };
                let out = refuse(code, message, &e);
                let _ = socket.send(&out).await;
                return;
            }
        },
    };
    if !options.ignored.is_empty() {
        tracing::debug!(%peer, file = %requested, ignored = ?options.ignored, "TFTP: options ignored");
    }
    // Blocks are counted over what goes on the wire: the file, or its netascii stream
    // (one pass over the file, on a blocking thread).
    let netascii = mode == Mode::Netascii;
    let stream_len = if netascii {
        let s = source.clone();
        match tokio::task::spawn_blocking(move || s.netascii_len()).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                let out = refuse(ErrorCode::NotDefined, "cannot read file", &e);
                let _ = socket.send(&out).await;
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "TFTP: netascii length thread failed");
                return;
            }
        }
    } else {
        source.len()
    };

    // Admission: a free slot runs the transfer at full speed; else it is answered at once
    // and paced here until a slot frees (oldest first), then continues at full speed.
    let started = clock::now();
    let now = move || started.elapsed();
    let mut out = Vec::new();
    let mut t = ReadTransfer::start(now(), options, stream_len, &ctx.settings.limits, &mut out);
    let blksize = t.negotiated().blksize;
    let mut sender = Sender::new(blksize, netascii.then(|| Encoder::new(blksize)));
    let mut client_gone = false;
    let permit = match slots.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            ctx.counters.paced.inc();
            t.set_pace(now(), Some(PACE), &mut out);
            let acquire = slots.acquire_owned();
            tokio::pin!(acquire);
            loop {
                if let Err(e) = sender.flush(&SockRef::from(&socket), &source, &mut out) {
                    tracing::debug!(%peer, error = %e, "TFTP: send failed");
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        client_gone = true;
                        break None;
                    }
                }
                if t.is_finished() {
                    break None;
                }
                let wake = t
                    .poll_at()
                    .map_or(Duration::from_secs(3600), |d| d.saturating_sub(now()));
                tokio::select! {
                    permit = &mut acquire => {
                        t.set_pace(now(), None, &mut out);
                        break permit.ok();
                    }
                    _ = stopped(&mut shutdown) => {
                        t.abort("server shutting down", &mut out);
                        let _ = sender.flush(&SockRef::from(&socket), &source, &mut out);
                        break None;
                    }
                    r = socket.readable() => match r.and_then(|()| {
                        // Read on the stack: the buffer is not kept in the task.
                        let mut recv_buf = [0u8; TRANSFER_RECV];
                        let n = socket.try_recv(&mut recv_buf)?;
                        match wire::decode(&recv_buf[..n]) {
                            Ok(packet) => t.handle_packet(now(), &packet, &mut out),
                            Err(e) => t.handle_malformed(e, &mut out),
                        }
                        Ok(())
                    }) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            client_gone = true;
                            break None;
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TFTP: receive failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                    () = tokio::time::sleep(wake) => t.handle_timeout(now(), &mut out),
                }
            }
        }
    };

    let full_speed = permit.is_some();
    let counters = ctx.counters.clone();
    let timeline = ctx.timeline.clone();
    let requested = requested.to_string();
    let size = source.len();
    let run = move || {
        let _permit = permit;
        if full_speed {
            // The transfer itself runs on a blocking thread: in lock-step TFTP every block
            // waits for one ACK, and a blocking recv wakes with fewer syscalls and no
            // executor hop.
            match socket
                .into_std()
                .and_then(|s| s.set_nonblocking(false).map(|()| s))
            {
                Ok(socket) => {
                    client_gone = run_transfer(
                        &socket,
                        &source,
                        &mut t,
                        &mut sender,
                        &mut out,
                        &now,
                        &shutdown,
                        peer,
                    );
                }
                Err(e) => {
                    tracing::warn!(%peer, file = %requested, error = %e, "TFTP: cannot prepare the transfer socket");
                    t.abort("cannot prepare the transfer socket", &mut out);
                }
            }
        }
        let sent = outcome(&t, client_gone, started, peer, &requested, source.len());
        let (outcome, bytes, detail) = match sent {
            Some(bytes) => {
                counters.completed.inc();
                counters.bytes_sent.inc_by(bytes);
                (Outcome::Ok, bytes, requested)
            }
            None => {
                counters.failed.inc();
                (
                    Outcome::Failed,
                    0,
                    format!("{requested}: transfer of {size} bytes not completed"),
                )
            }
        };
        timeline.transfer(
            began_ms,
            who,
            Step::Tftp,
            outcome,
            detail,
            bytes,
            began.elapsed(),
        );
    };
    if let Err(e) = tokio::task::spawn_blocking(run).await {
        tracing::warn!(%peer, error = %e, "TFTP transfer thread failed");
    }
}

/// Drives a started transfer to its end on the calling (blocking) thread; `true` when the
/// client's port became unreachable.
#[allow(clippy::too_many_arguments)]
fn run_transfer(
    socket: &std::net::UdpSocket,
    source: &Source,
    t: &mut ReadTransfer,
    sender: &mut Sender,
    out: &mut Vec<Transmit>,
    now: &dyn Fn() -> Duration,
    shutdown: &watch::Receiver<bool>,
    peer: SocketAddr,
) -> bool {
    // Wake at least this often to notice deadlines and shutdown.
    const TICK: Duration = Duration::from_millis(100);
    if let Err(e) = socket.set_read_timeout(Some(TICK)) {
        tracing::warn!(%peer, error = %e, "TFTP: cannot set a receive timeout");
        t.abort("cannot set a receive timeout", out);
        let _ = sender.flush(&SockRef::from(socket), source, out);
        return false;
    }
    let mut recv_buf = [0u8; TRANSFER_RECV];
    loop {
        if let Err(e) = sender.flush(&SockRef::from(socket), source, out) {
            tracing::debug!(%peer, error = %e, "TFTP: send failed");
            if e.kind() == io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        if t.is_finished() {
            return false;
        }
        if *shutdown.borrow() {
            t.abort("server shutting down", out);
            let _ = sender.flush(&SockRef::from(socket), source, out);
            return false;
        }
        match socket.recv(&mut recv_buf) {
            Ok(n) => match wire::decode(&recv_buf[..n]) {
                Ok(packet) => t.handle_packet(now(), &packet, out),
                Err(e) => t.handle_malformed(e, out),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return true,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TFTP: receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if t.poll_at().is_some_and(|d| now() >= d) {
            t.handle_timeout(now(), out);
        }
    }
}

/// Logs how a transfer ended; the file bytes sent if it completed.
fn outcome(
    t: &ReadTransfer,
    client_gone: bool,
    started: std::time::Instant,
    peer: SocketAddr,
    requested: &str,
    len: u64,
) -> Option<u64> {
    let n = t.negotiated();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match t.status() {
        Status::Complete => {
            tracing::info!(
                %peer, file = %requested, bytes = len, blksize = n.blksize,
                windowsize = n.windowsize, retransmits = t.stats.retransmits, elapsed_ms,
                "TFTP sent"
            );
            return Some(len);
        }
        Status::Failed(e) => tracing::warn!(
            %peer, file = %requested, retransmits = t.stats.retransmits, elapsed_ms,
            "TFTP transfer failed: {}", crate::error_chain(e)
        ),
        Status::Running if client_gone => tracing::warn!(
            %peer, file = %requested, elapsed_ms, "TFTP transfer failed: client port unreachable"
        ),
        // Stopped by shutdown.
        Status::Running => {}
    }
    None
}

/// Whether UDP segmentation offload (one sendmsg for a run of equal-size datagrams) works
/// here; cleared on the first refusal so every later window uses plain sends.
static GSO_USABLE: AtomicBool =
    AtomicBool::new(cfg!(all(target_os = "linux", target_pointer_width = "64")));

/// Turns the core's [`Transmit`]s into datagrams. A window of DATA blocks (consecutive,
/// equal size but the last) goes out as one UDP GSO `sendmsg` where the kernel allows it.
///
/// The datagram and GSO window bytes are built in buffers of the sending thread
/// ([`SEND_BUFFERS`]), not of the transfer: a paced transfer sends one window a second and
/// holds no send buffer in between.
struct Sender {
    segment: usize,
    /// For a netascii transfer: DATA offsets are positions in the translated stream.
    netascii: Option<Encoder>,
}

/// A sending thread's scratch buffers: one datagram, and one GSO window of datagrams.
#[derive(Default)]
struct SendBuffers {
    datagram: Vec<u8>,
    window: Vec<u8>,
}

thread_local! {
    /// Reused by every transfer that sends from this thread (the runtime's workers and the
    /// full-speed transfers' blocking threads), so their number bounds the send buffers.
    static SEND_BUFFERS: std::cell::RefCell<SendBuffers> =
        std::cell::RefCell::new(SendBuffers::default());
}

impl Sender {
    fn new(blksize: u16, netascii: Option<Encoder>) -> Sender {
        Sender {
            segment: 4 + usize::from(blksize),
            netascii,
        }
    }

    fn flush(
        &mut self,
        socket: &socket2::Socket,
        source: &Source,
        out: &mut Vec<Transmit>,
    ) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let window = match &mut self.netascii {
            Some(encoder) => Some(match encoder.plan(out) {
                Some(plan) => {
                    let file = source.read_at(plan.file_offset, plan.file_len)?;
                    (plan.start, encoder.encode(&plan, &file))
                }
                None => (0, Vec::new()),
            }),
            None => source.read_window(out)?,
        };
        let data_of = |offset: u64, len: usize| match (&window, source) {
            (Some((start, bytes)), _) => slice(bytes, offset - start, len),
            (None, Source::Memory(bytes)) => slice(bytes, offset, len),
            (None, Source::Disk { .. }) => &[][..],
        };
        SEND_BUFFERS.with_borrow_mut(|bufs| {
            let result = self.send_all(socket, out, &data_of, bufs);
            out.clear();
            result
        })
    }

    /// Sends `out` (DATA bytes from `data_of`) with the thread's buffers.
    fn send_all<'a>(
        &self,
        socket: &socket2::Socket,
        out: &[Transmit],
        data_of: &dyn Fn(u64, usize) -> &'a [u8],
        bufs: &mut SendBuffers,
    ) -> io::Result<()> {
        let mut result = Ok(());
        let mut i = 0;
        while i < out.len() {
            // The longest run of DATA starting at i that fits one GSO send.
            let max_segments = (65_000 / self.segment).min(64);
            let mut run = 0;
            while i + run < out.len()
                && run < max_segments
                && matches!(out[i + run], Transmit::Data { len, .. } if len + 4 == self.segment || run > 0)
            {
                let short =
                    matches!(out[i + run], Transmit::Data { len, .. } if len + 4 < self.segment);
                run += 1;
                if short {
                    break;
                }
            }
            let r = if run >= 2 && GSO_USABLE.load(Ordering::Relaxed) {
                bufs.window.clear();
                for tx in &out[i..i + run] {
                    if let Transmit::Data { block, offset, len } = *tx {
                        wire::encode_data_header(block, &mut bufs.window, data_of(offset, len));
                    }
                }
                match send_gso(socket, &bufs.window, self.segment) {
                    Err(e) if gso_refused(&e) => {
                        tracing::debug!(error = %e, "UDP GSO not usable; sending datagrams one by one");
                        GSO_USABLE.store(false, Ordering::Relaxed);
                        continue;
                    }
                    r => {
                        i += run;
                        r
                    }
                }
            } else {
                let r = match &out[i] {
                    Transmit::Packet(bytes) => socket.send(bytes),
                    &Transmit::Data { block, offset, len } => {
                        bufs.datagram.clear();
                        wire::encode_data_header(block, &mut bufs.datagram, data_of(offset, len));
                        socket.send(&bufs.datagram)
                    }
                };
                i += 1;
                r
            };
            if let Err(e) = r {
                result = Err(e);
            }
        }
        result.map(|_| ())
    }
}

fn gso_refused(e: &io::Error) -> bool {
    // EIO: device cannot checksum-offload; EINVAL/ENOPROTOOPT: kernel without UDP_SEGMENT.
    matches!(e.raw_os_error(), Some(5 | 22 | 92))
}

/// One `sendmsg` carrying `bytes` with a UDP_SEGMENT control message: the kernel splits it
/// into datagrams of `segment` bytes (the last may be shorter).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn send_gso(socket: &socket2::Socket, bytes: &[u8], segment: usize) -> io::Result<usize> {
    const SOL_UDP: i32 = 17;
    const UDP_SEGMENT: i32 = 103;
    let segment = u16::try_from(segment).map_err(|_| io::Error::from_raw_os_error(22))?;
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } + u16, padded:
    // CMSG_LEN(2) = 18, CMSG_SPACE(2) = 24 on 64-bit Linux.
    let mut control = [0u8; 24];
    control[..8].copy_from_slice(&18u64.to_ne_bytes());
    control[8..12].copy_from_slice(&SOL_UDP.to_ne_bytes());
    control[12..16].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    control[16..18].copy_from_slice(&segment.to_ne_bytes());
    let iov = [io::IoSlice::new(bytes)];
    let msg = socket2::MsgHdr::new()
        .with_buffers(&iov)
        .with_control(&control);
    socket.sendmsg(&msg, 0)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn send_gso(_: &socket2::Socket, _: &[u8], _: usize) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(22))
}

fn slice(bytes: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(len).min(bytes.len());
    &bytes[start..end]
}

/// Where a transfer's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    Memory(Arc<[u8]>),
    Disk { file: Arc<std::fs::File>, len: u64 },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::Disk { len, .. } => *len,
        }
    }

    /// The length of the file's netascii stream: one pass over the file.
    fn netascii_len(&self) -> io::Result<u64> {
        const CHUNK: u64 = 1 << 20;
        let mut total = 0;
        let mut at = 0;
        while at < self.len() {
            let chunk = self.read_at(at, CHUNK)?;
            if chunk.is_empty() {
                break; // the file shrank
            }
            total += netascii::encoded_len(&chunk);
            at += chunk.len() as u64;
        }
        Ok(total)
    }

    /// The file bytes `start..start + len` (fewer at the end of the file).
    fn read_at(&self, start: u64, len: u64) -> io::Result<std::borrow::Cow<'_, [u8]>> {
        let len = usize::try_from(len.min(self.len().saturating_sub(start))).unwrap_or(0);
        let file = match self {
            Source::Memory(bytes) => return Ok(slice(bytes, start, len).into()),
            Source::Disk { file, .. } => file,
        };
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match file.read_at(&mut buf[done..], start + done as u64)? {
                0 => break, // the file shrank: the client gets a short file
                n => done += n,
            }
        }
        buf.truncate(done);
        Ok(buf.into())
    }

    /// For a disk source, reads the byte range covering all DATA in `out` with positional
    /// reads; `None` for a memory source.
    fn read_window(&self, out: &[Transmit]) -> io::Result<Option<(u64, Vec<u8>)>> {
        if let Source::Memory(_) = self {
            return Ok(None);
        }
        let ranges = out.iter().filter_map(|t| match t {
            Transmit::Data { offset, len, .. } => Some((*offset, *offset + *len as u64)),
            Transmit::Packet(_) => None,
        });
        let (start, end) = ranges.fold((u64::MAX, 0), |(s, e), (a, b)| (s.min(a), e.max(b)));
        if start >= end {
            return Ok(Some((0, Vec::new())));
        }
        Ok(Some((
            start,
            self.read_at(start, end - start)?.into_owned(),
        )))
    }
}

/// In-memory copies of recently served files, keyed by path and validated by size and
/// mtime on every open.
#[derive(Debug)]
struct FileCache {
    max_bytes: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<PathBuf, CacheEntry>,
    used: u64,
    tick: u64,
}

#[derive(Debug)]
struct CacheEntry {
    len: u64,
    mtime: Option<SystemTime>,
    data: Arc<[u8]>,
    last_used: u64,
}

impl FileCache {
    fn new(max_bytes: u64) -> FileCache {
        FileCache {
            max_bytes,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    async fn open(&self, path: &Path) -> io::Result<Source> {
        let meta = tokio::fs::metadata(path).await?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let (len, mtime) = (meta.len(), meta.modified().ok());
        if len > self.max_bytes {
            let file = std::fs::File::open(path)?;
            return Ok(Source::Disk {
                file: Arc::new(file),
                len,
            });
        }
        {
            let mut inner = self.inner.lock().expect("cache lock");
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(e) = inner.entries.get_mut(path)
                && e.len == len
                && e.mtime == mtime
            {
                e.last_used = tick;
                return Ok(Source::Memory(e.data.clone()));
            }
        }
        let data: Arc<[u8]> = tokio::fs::read(path).await?.into();
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some(old) = inner.entries.remove(path) {
            inner.used -= old.len;
        }
        let size = data.len() as u64;
        while inner.used + size > self.max_bytes {
            let Some(victim) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&victim) {
                inner.used -= e.len;
            }
        }
        // Only cache what was read consistently with the stat (no concurrent rewrite).
        if size == len && inner.used + size <= self.max_bytes {
            let tick = inner.tick;
            inner.used += size;
            inner.entries.insert(
                path.to_path_buf(),
                CacheEntry {
                    len: size,
                    mtime,
                    data: data.clone(),
                    last_used: tick,
                },
            );
        }
        Ok(Source::Memory(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_cap_counts_transfers_by_address() {
        let mut a = Active::default();
        let peer = |ip: [u8; 4], port| SocketAddr::from((ip, port));
        for port in 1..=3 {
            assert_eq!(a.insert(peer([10, 0, 0, 1], port), 3), Ok(()));
        }
        // A retransmitted RRQ of a running transfer, then a 4th transfer from that address.
        assert_eq!(a.insert(peer([10, 0, 0, 1], 2), 3), Err(true));
        assert_eq!(a.insert(peer([10, 0, 0, 1], 4), 3), Err(false));
        // Other clients are not affected.
        assert_eq!(a.insert(peer([10, 0, 0, 2], 1), 3), Ok(()));
        // A finished transfer frees its client's slot; removing twice changes nothing.
        a.remove(peer([10, 0, 0, 1], 1));
        a.remove(peer([10, 0, 0, 1], 1));
        assert_eq!(a.insert(peer([10, 0, 0, 1], 4), 3), Ok(()));
        assert_eq!(a.insert(peer([10, 0, 0, 1], 5), 3), Err(false));
        for port in 2..=4 {
            a.remove(peer([10, 0, 0, 1], port));
        }
        a.remove(peer([10, 0, 0, 2], 1));
        assert!(a.peers.is_empty() && a.per_ip.is_empty(), "{a:?}");
    }
}
