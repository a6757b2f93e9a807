//! Wiring of `appliance serve`: resolve config, open the store, create the admin token,
//! start every service, and shut all of them down together on SIGINT/SIGTERM.
//!
//! Every long-running task is spawned here and stops on the shared shutdown signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::admin::AdminService;
use crate::api::apply_batch::ApplyBatcher;
use crate::api::auth;
use crate::boot::answer::Decider;
use crate::boot::assets::AssetDirs;
use crate::boot::download::{EnvSyncConfig, EnvSyncTask};
use crate::cli::ServeArgs;
use crate::config::{Config, LoadConfigError};
use crate::error_chain;
use crate::http::boot::BootContext;
use crate::http::{self, HttpState, Metrics};
use crate::net::tftp::{TftpBindError, TftpServer, TftpSettings};
use crate::reconcile::Lifecycle;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration")]
    Config(#[from] LoadConfigError),
    #[error("cannot create data dir {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store")]
    Store(#[from] StoreError),
    #[error("admin token")]
    Token(#[from] auth::TokenError),
    #[error("cannot listen on {addr} (HTTP + gRPC)")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tftp(TftpBindError),
    #[error("HTTP server failed")]
    Http(#[source] std::io::Error),
}

/// Builds the effective config: embedded default, then `--config`, then flags/env.
pub fn effective_config(args: &ServeArgs) -> Result<Config, LoadConfigError> {
    let mut config = Config::default();
    if let Some(path) = &args.config {
        config = config.overlay_file(path)?;
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = args.http_listen {
        config.http.listen = v;
    }
    if let Some(v) = &args.interface {
        config.interface = v.clone();
    }
    if let Some(v) = args.dhcp_mode {
        config.dhcp.mode = v;
    }
    if let Some(v) = args.log_format {
        config.log.format = v;
    }
    if let Some(v) = &args.log_level {
        config.log.level = v.clone();
    }
    Ok(config)
}

fn is_root() -> bool {
    // The effective uid decides who may bind ports below 1024; /proc is always there on Linux.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Where a non-root user's data goes when the configured dir cannot be created.
pub fn user_data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("appliance"))
}

/// Creates the data dir; a non-root user whose configured dir is not writable falls back
/// to their own state dir (the returned note says so).
fn prepare_data_dir(configured: &Path) -> Result<(PathBuf, Option<String>), ServeError> {
    let create = |p: &Path| {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::secrets::files::DIR_MODE)
            .create(p)
            .and_then(|_| {
                // Probe writability: an existing root-owned dir is not usable by a user.
                let probe = p.join(".write-probe");
                std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe))
            })
    };
    match create(configured) {
        Ok(()) => Ok((configured.to_path_buf(), None)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !is_root() => {
            let fallback = user_data_dir().ok_or_else(|| ServeError::DataDir {
                path: configured.to_path_buf(),
                source: e,
            })?;
            create(&fallback).map_err(|source| ServeError::DataDir {
                path: fallback.clone(),
                source,
            })?;
            let note = format!(
                "data dir {} is not writable for this user; using {}",
                configured.display(),
                fallback.display()
            );
            Ok((fallback, Some(note)))
        }
        Err(source) => Err(ServeError::DataDir {
            path: configured.to_path_buf(),
            source,
        }),
    }
}

/// The shared shutdown signal: turns true on SIGINT or SIGTERM (or when `app` sends it).
fn shutdown_signal() -> (Arc<watch::Sender<bool>>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let signal = tx.clone();
    // Ends with the runtime (the process) when no signal comes.
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = signal.send(true);
    });
    (tx, rx)
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The boot routes' view of the config.
fn boot_context(
    config: &Config,
    decider: Arc<Decider>,
    store: Store,
    admin_token: Arc<str>,
    timeline: crate::timeline::Recorder,
) -> BootContext {
    let listen = config.http.listen;
    let fallback_endpoint = if listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", listen.port())
    } else {
        listen.to_string()
    };
    BootContext {
        store,
        dirs: decider.dirs.clone(),
        tftp: Arc::new(crate::net::tftp_root::TftpRoot::from(&config.tftp)),
        advertise: config.boot.advertise.clone().filter(|a| !a.is_empty()),
        fallback_endpoint,
        decider,
        admin_token,
        maps: Default::default(),
        timeline,
    }
}

/// The Environment asset download task (follows the store change feed).
fn env_sync(config: &Config, data_dir: &Path, store: Store) -> EnvSyncTask {
    EnvSyncTask::new(
        store,
        download_client,
        EnvSyncConfig {
            dirs: AssetDirs::new(data_dir, config.boot.agent_dir.as_deref()),
            idle_timeout: Duration::from_secs(config.boot.download_idle_timeout_secs.max(1)),
            retry_after: Duration::from_secs(config.boot.download_retry_secs.max(1)),
            max_parallel: 2,
        },
    )
}

/// The HTTP client of asset downloads (built by the download task for its first fetch).
fn download_client() -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("appliance/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "HTTP client with defaults only");
            reqwest::Client::new()
        })
}

/// Runs the box until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let (data_dir, dir_note) = prepare_data_dir(&config.data_dir)?;
    let mut skipped = Vec::new();
    if let Some(note) = dir_note {
        skipped.push(note);
    }
    // The data dir is 0700 and its files 0600; an older install is tightened (one line).
    let tightened = crate::secrets::files::restrict_data_dir(&data_dir).map_err(|source| {
        ServeError::DataDir {
            path: data_dir.clone(),
            source,
        }
    })?;
    if !tightened.is_empty() {
        tracing::warn!(
            "data dir permissions tightened (private to the appliance): {}",
            tightened.join(", ")
        );
    }
    let store_path = data_dir.join("state.redb");
    let retention = crate::store::Retention {
        max_changes: config.watch.retention_changes,
        max_age_ms: Some(u64::try_from(config.watch.retention_age.as_millis()).unwrap_or(u64::MAX)),
    };
    let store = tokio::task::spawn_blocking(move || Store::open_with(&store_path, retention))
        .await
        .expect("store open task")?;
    let token = auth::load_or_create(&data_dir)?;
    if token.created {
        // Printed once, on first start, so the operator can copy it; afterwards only the
        // 0600 file holds it.
        eprintln!(
            "admin token (saved to {}): {}",
            data_dir.join(auth::TOKEN_FILE).display(),
            token.token
        );
    }

    let (stop, shutdown) = shutdown_signal();
    // Every long-running task of the box, joined after the HTTP listener drained.
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)> = Vec::new();

    // DHCP: a failure to start (no privileges, no interface) is reported with the other
    // skipped services and the rest keeps serving.
    let metrics = Arc::new(Metrics::default());
    // The boot timeline: every room that sees a boot step records into it without waiting;
    // its writer stops after the listener drained, so late events are still stored.
    let (timeline, timeline_writer) = crate::timeline::new(
        store.clone(),
        config.timeline.events_per_server,
        metrics.timeline.clone(),
        Arc::new(crate::clock::unix_ms),
    );
    let (stop_timeline, timeline_stopped) = watch::channel(false);
    let timeline_task = tokio::spawn(timeline_writer.run(timeline_stopped));
    let mut dhcp_running = false;
    match crate::net::dhcp::start(
        &config,
        store.clone(),
        metrics.dhcp.clone(),
        crate::clock::WallClock::process(),
    )
    .await
    {
        Ok(crate::net::dhcp::DhcpStatus::Running(mut dhcp)) => {
            dhcp_running = true;
            dhcp.record_to(timeline.clone());
            let interfaces = dhcp.interfaces.clone();
            tasks.push(("dhcp", tokio::spawn(dhcp.run(shutdown.clone()))));
            if config.dhcp.probe_interval_secs > 0 {
                if config.dhcp.mode == crate::config::DhcpMode::Proxy
                    && config.dhcp.expected_servers.is_empty()
                {
                    tracing::warn!(
                        "dhcp: proxy mode without dhcp.expected_servers: the site's DHCP \
                         server will be reported as a rogue"
                    );
                }
                let probe = crate::net::dhcp_probe::ProbeTask {
                    interfaces,
                    interval: std::time::Duration::from_secs(config.dhcp.probe_interval_secs),
                    expected: config.dhcp.expected_servers.clone(),
                    watch: metrics.rogue_dhcp.clone(),
                };
                tasks.push(("dhcp-probe", tokio::spawn(probe.run(shutdown.clone()))));
            }
        }
        Ok(crate::net::dhcp::DhcpStatus::NotStarted(why)) => skipped.push(why),
        Err(e) if e.is_permission_denied() => {
            skipped.push(format!(
                "DHCP not started: {} (needs root or CAP_NET_BIND_SERVICE)",
                error_chain(&e)
            ));
        }
        Err(e) => skipped.push(format!("DHCP not started: {}", error_chain(&e))),
    }
    let mut dhcpv6_running = false;
    match crate::net::dhcpv6::start(&config, store.clone(), crate::clock::WallClock::process())
        .await
    {
        Ok(Some(mut v6)) => {
            dhcpv6_running = true;
            v6.record_to(timeline.clone());
            tasks.push(("dhcpv6", tokio::spawn(v6.run(shutdown.clone()))));
        }
        Ok(None) => {}
        Err(e) => skipped.push(format!("DHCPv6 not started: {}", error_chain(&e))),
    }

    // The GRUB chain's TFTP names, served once the boot decision exists (below).
    let grub_slot = crate::net::tftp::RenderedSlot::default();
    if config.tftp.enabled {
        match TftpServer::bind_counting(TftpSettings::from(&config.tftp), metrics.tftp.clone())
            .await
        {
            // The TFTP task ends once its running transfers end.
            Ok(mut server) => {
                // `[::]` (the default) is dual stack; a host without IPv6 gets 0.0.0.0.
                if let Some(f) = server.fallback() {
                    tracing::warn!("tftp: {f}");
                }
                server.record_to(timeline.clone());
                server.render_from(grub_slot.clone());
                tasks.push(("tftp", tokio::spawn(server.run(shutdown.clone()))));
            }
            Err(e) if e.source.kind() == std::io::ErrorKind::PermissionDenied && !is_root() => {
                skipped.push(format!(
                    "TFTP (udp {}) not started: binding needs privileges",
                    config.tftp.listen
                ));
            }
            Err(e) => return Err(ServeError::Tftp(e)),
        }
    }
    if !skipped.is_empty() {
        let who = if is_root() {
            ""
        } else {
            "not running as root: "
        };
        tracing::warn!("{who}{}", skipped.join("; "));
    }
    if config.boot.download_assets {
        // Drops running downloads on the shutdown signal.
        let sync = env_sync(&config, &data_dir, store.clone());
        tasks.push(("env-sync", tokio::spawn(sync.run(shutdown.clone()))));
    }

    // BMC power control (bmc room) and its power-state poller.
    let power = crate::bmc::power::PowerControl::new(store.clone(), &config.bmc);
    tasks.push((
        "power-poller",
        tokio::spawn(crate::bmc::power::run_poller(
            power.clone(),
            Duration::from_secs(config.bmc.poll_interval_secs),
            shutdown.clone(),
        )),
    ));
    // Auto BMC setup (`[bmc] auto_setup`) runs behind the same gate as power calls.
    let bmc_setup = config.bmc.auto_setup.then(|| {
        crate::bmc::setup::AutoSetup::new(store.clone(), power.gate().clone(), &config.bmc)
    });
    // The lifecycle: agent API, allocation, metadata, server actions, and its reconcile
    // task; it powers servers through the BMC room's PowerControl, and resets released
    // servers without a BMC through SideroLink (plugged into `os_reset` once it runs).
    let os_reset = crate::reconcile::power::OsResetSlot::default();
    let (lifecycle, reconcile_task) = Lifecycle::new(
        store.clone(),
        config.lifecycle.clone(),
        Arc::new(crate::reconcile::power::ServerPower::new(
            power.clone(),
            os_reset.clone(),
        )),
        bmc_setup,
    );
    // The built-in `any` class exists before the box answers (as Sidero's startup runnable).
    let any_store = store.clone();
    if let Ok(Err(e)) =
        tokio::task::spawn_blocking(move || crate::reconcile::task::ensure_any_class(&any_store))
            .await
    {
        tracing::warn!(error = %crate::error_chain(&e), "cannot create ServerClass `any`");
    }
    tasks.push((
        "reconcile",
        tokio::spawn(reconcile_task.run(shutdown.clone())),
    ));

    // The admin service, one for gRPC and the console. Its group-commit task stops after
    // the listener drained, so calls still in flight then are committed.
    let (applies, apply_task) =
        ApplyBatcher::new(store.clone(), crate::reconcile::edits::adopt_applied);
    let (stop_applies, applies_stopped) = watch::channel(false);
    let apply_task = tokio::spawn(apply_task.run(applies_stopped));
    let admin = AdminService::new(
        store.clone(),
        data_dir.display().to_string(),
        lifecycle.clone(),
        applies,
        crate::api::watch::Watches::new(
            store.clone(),
            &crate::api::watch::WatchSettings {
                bookmark: Duration::from_secs(config.watch.bookmark_secs),
                max_watchers: config.watch.max_watchers,
            },
            shutdown.clone(),
        ),
    );
    let power_service = crate::bmc::service::PowerService::new(power.clone());
    let admin_token: Arc<str> = Arc::from(token.token.as_str());
    // SideroLink's node log book: read by the console and the observe API, fed by the
    // SideroLink endpoint (empty when SideroLink is off).
    let logbook = crate::siderolink::logbook::LogBook::new(
        store.clone(),
        config.siderolink.log_lines_per_server,
        metrics.siderolink.clone(),
    );
    let console = http::console::ConsoleState::new(
        store.clone(),
        admin.clone(),
        crate::api::lifecycle::LifecycleService::new(lifecycle.clone()),
        power_service.clone(),
        logbook.clone(),
        admin_token.clone(),
        config.clone(),
        metrics.rogue_dhcp.clone(),
    );
    tasks.push((
        "console-events",
        tokio::spawn(console.clone().record_events(wait_for(shutdown.clone()))),
    ));

    // SideroLink: WireGuard endpoint, overlay log receiver and event sink, Provision API.
    // A failure to start leaves the rest of the box serving (without SideroLink args).
    let siderolink = if config.siderolink.enabled {
        let advertise = config.boot.advertise.as_deref().filter(|a| !a.is_empty());
        let interface_addr = if advertise.is_none() && config.siderolink.endpoint.is_none() {
            crate::net::iface::find(&config.interface)
                .ok()
                .map(|i| i.addr)
        } else {
            None
        };
        let endpoint =
            crate::siderolink::advertised_endpoint(&config.siderolink, advertise, interface_addr);
        match crate::siderolink::start(
            &config.siderolink,
            endpoint,
            lifecycle.clone(),
            logbook.clone(),
            metrics.siderolink.clone(),
            timeline.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(started) => {
                os_reset.set(Arc::new(started.reset.clone()));
                Some(started)
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "SideroLink not started");
                None
            }
        }
    } else {
        None
    };
    let ready = Arc::new(AtomicBool::new(false));
    let decider = Arc::new(Decider {
        store: store.clone(),
        dirs: AssetDirs::new(&data_dir, config.boot.agent_dir.as_deref()),
        default_method: config.boot.boot_from_disk_method,
        extra_agent_args: config.boot.extra_agent_kernel_args.clone(),
        downloads: config.boot.download_assets,
        siderolink_server: siderolink.as_ref().map(|s| s.server_address),
        first_contact: Arc::new(crate::api::first_contact::FirstContact::new(&config.agent)),
    });
    let _ = grub_slot.set(Arc::new(crate::boot::grub::GrubFiles {
        decider: decider.clone(),
        advertise: config.boot.advertise.clone().filter(|a| !a.is_empty()),
        http_port: config.http.listen.port(),
        timeline: timeline.clone(),
    }));
    let boot = Arc::new(boot_context(
        &config,
        decider.clone(),
        store.clone(),
        admin_token.clone(),
        timeline.clone(),
    ));
    let open_connections = metrics.http_connections.clone();
    let registry = Arc::new(http::metrics::registry(&metrics, console.login_stats()));
    let state = HttpState {
        store: store.clone(),
        metrics,
        registry,
        ready: ready.clone(),
        boot,
        console,
        logs: logbook,
    };
    // The agent API checks wipe and BMC reports against this box's DHCP leases when it
    // hands out the addresses (v4 server mode, running; DHCPv6, running).
    let agent_policy = crate::api::agent::AgentPolicy {
        lease_check: dhcp_running && config.dhcp.mode == crate::config::DhcpMode::Server,
        lease_check_v6: dhcpv6_running,
        ..Default::default()
    };
    // The mTLS admin port: its CA (created once, key sealed in the store) and listener. A
    // failure leaves the box serving :8081 (token) with a warning.
    let mut admin_tls = None;
    if config.admin_tls.enabled {
        let (tls_store, names) = (store.clone(), config.admin_tls.names.clone());
        let loaded =
            tokio::task::spawn_blocking(move || http::tls::AdminTls::load(tls_store, &names))
                .await
                .expect("admin TLS load task");
        match loaded {
            Ok(tls) => match TcpListener::bind(config.admin_tls.listen).await {
                Ok(l) => admin_tls = Some((tls, l)),
                Err(e) => tracing::warn!(
                    listen = %config.admin_tls.listen,
                    error = %e,
                    "admin TLS port not started"
                ),
            },
            Err(e) => tracing::warn!(error = %error_chain(&e), "admin TLS port not started"),
        }
    }
    let tls_router = admin_tls
        .as_ref()
        .map(|_| http::admin_tls_router(admin.clone(), lifecycle.clone(), power_service.clone()));
    let console_admin = crate::api::console::ConsoleAdminService::new(state.console.clone());
    let router = http::router(
        state,
        admin,
        console_admin,
        admin_token,
        lifecycle,
        power_service,
        agent_policy,
        siderolink.as_ref().map(|s| s.provision.clone()),
        admin_tls.as_ref().map(|(tls, _)| {
            crate::api::admin_certs::AdminCertsService::new(
                tls.clone(),
                config.admin_tls.client_cert_days,
            )
        }),
    );
    let mut tls_task = None;
    if let (Some((tls, listener)), Some(tls_router)) = (admin_tls, tls_router) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(admin_tls = %addr, "admin mTLS port serving");
        }
        tls_task = Some(tokio::spawn(http::listener::serve_tls(
            listener,
            tls_router,
            wait_for(shutdown.clone()),
            http::listener::ListenerSettings::from_config(&config.http),
            open_connections.clone(),
            Some(tls),
        )));
    }
    if let Some(s) = siderolink {
        tasks.extend(s.tasks.into_iter().map(|(name, t)| (name, tokio::spawn(t))));
    }
    // `[::]` (the default) is dual stack; a host without IPv6 gets 0.0.0.0 and one warning.
    let (listener, fallback) =
        http::listener::bind(config.http.listen).map_err(|source| ServeError::Bind {
            addr: config.http.listen,
            source,
        })?;
    if let Some(f) = fallback {
        tracing::warn!("http: {f}");
    }
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(
        http = %local,
        data_dir = %data_dir.display(),
        revision = store.revision()?,
        "appliance serving"
    );
    ready.store(true, Ordering::Relaxed);
    // Returns after the connections drained (bounded by `[http] drain_secs`).
    let served = http::listener::serve(
        listener,
        router,
        wait_for(shutdown.clone()),
        http::listener::ListenerSettings::from_config(&config.http),
        open_connections,
    )
    .await
    .map_err(ServeError::Http);
    if served.is_err() {
        // The listener failed: stop the rest too.
        let _ = stop.send(true);
    }
    if let Some(t) = tls_task
        && let Err(e) = t.await
    {
        tracing::warn!(task = "admin-tls", error = %e, "task ended abnormally");
    }
    let _ = stop_applies.send(true);
    tasks.push(("apply", apply_task));
    for (name, task) in tasks {
        if let Err(e) = task.await {
            tracing::warn!(task = name, error = %e, "task ended abnormally");
        }
    }
    // Last: what the other tasks recorded until they ended is stored.
    let _ = stop_timeline.send(true);
    if let Err(e) = timeline_task.await {
        tracing::warn!(task = "timeline", error = %e, "task ended abnormally");
    }
    served
}
