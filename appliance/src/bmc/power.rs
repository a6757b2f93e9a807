//! Power control of *servers* (by name or Server object): resolves a Server's `spec.bmc`
//! (plus credentials from the secrets table and BMC settings) to a [`Bmc`], runs the
//! operation through the [`BmcGate`] with a retry/backoff policy for transient failures,
//! and records the outcome on the Server: condition `BMCReachable` (True, or False with
//! the reason and the error) and, for reads, `status.power`.
//!
//! Also the poller task that reads every BMC-managed server's power state each
//! `poll_interval` (`PowerPoller`), stopping on the shared shutdown signal.
//!
//! May touch: the store (typed API), BMCs through `Bmc`. Never logs credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::gate::BmcGate;
use super::ipmi::{IpmiBmc, IpmiTimeouts};
use super::redfish::{RedfishBmc, RedfishTarget};
use super::{
    Bmc, BmcError, BmcFuture, BootOverride, BootTarget, Credentials, Firmware, PowerAction,
    PowerState,
};
use crate::config::BmcConfig;
use crate::model::meta::{Condition, ConditionSeverity, ConditionStatus};
use crate::model::server::{self, PxeMode};
use crate::model::{Kind, Object, Server};
use crate::protocol::ipmi::wire::CipherSuite;
use crate::store::{Store, StoreError};

/// The Server condition this module maintains.
pub const CONDITION_BMC: &str = "BMCReachable";

#[derive(Debug, thiserror::Error)]
pub enum PowerCtlError {
    #[error("server `{0}` not found")]
    NotFound(String),
    #[error("server `{0}` has no BMC (spec.bmc is not set)")]
    NoBmc(String),
    #[error("server `{server}`: BMC credentials missing: {what}")]
    NoCredentials { server: String, what: String },
    #[error(
        "server `{server}`: unsupported BMC interface `{interface}` (expected lanplus, lanplus-3, lanplus-17 or redfish)"
    )]
    Interface { server: String, interface: String },
    #[error("server `{server}`: {operation} failed")]
    Bmc {
        server: String,
        operation: &'static str,
        #[source]
        source: BmcError,
    },
    #[error("store")]
    Store(#[from] StoreError),
}

/// Retries of one operation on transient errors (timeouts, unreachable, garbled replies):
/// `attempts` in all, waiting `base`, 2×`base`, 4×`base`… between them. Login failures,
/// refusals and certificate changes are not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    pub fn delay(&self, retry: u32) -> Duration {
        self.base * (1u32 << retry.min(6))
    }
}

fn transient(e: &BmcError) -> bool {
    matches!(
        e,
        BmcError::Timeout { .. }
            | BmcError::Unreachable { .. }
            | BmcError::Protocol { .. }
            | BmcError::Busy { .. }
    )
}

fn reason(e: &BmcError) -> &'static str {
    match e {
        BmcError::Timeout { .. } => "Timeout",
        BmcError::Unreachable { .. } => "Unreachable",
        BmcError::Auth { .. } => "AuthenticationFailed",
        BmcError::Protocol { .. } => "ProtocolError",
        BmcError::Refused { .. } => "Refused",
        BmcError::CertificateChanged { .. } => "CertificateChanged",
        BmcError::Config { .. } => "ConfigError",
        BmcError::Busy { .. } => "Busy",
    }
}

/// Turns a Server into the Bmc that drives it.
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn resolve(&self, server: &Server) -> Result<Arc<dyn Bmc>, PowerCtlError>;
}

/// The real resolver: `spec.bmc` + secrets + BMC settings from the store. Caches one
/// `Bmc` per server while its configuration is unchanged (keeps Redfish sessions and the
/// negotiated IPMI cipher suite).
#[derive(Debug)]
pub struct StoreResolver {
    store: Store,
    ipmi: IpmiTimeouts,
    request_timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A built Bmc and the configuration key it was built from.
type Cached = (String, Arc<dyn Bmc>);

impl StoreResolver {
    pub fn new(store: Store, config: &BmcConfig) -> StoreResolver {
        StoreResolver {
            store,
            ipmi: IpmiTimeouts {
                attempt: Duration::from_millis(config.ipmi_attempt_ms.max(50)),
                retries: config.ipmi_retries,
            },
            request_timeout: Duration::from_secs(config.call_timeout_secs.clamp(1, 30)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn credential(
        &self,
        server: &str,
        inline: &Option<String>,
        from: &Option<server::CredentialSource>,
        what: &str,
    ) -> Result<String, PowerCtlError> {
        if let Some(v) = inline.as_deref().filter(|v| !v.is_empty()) {
            return Ok(v.to_string());
        }
        if let Some(src) = from
            && let Some(v) = self.store.resolve_credential(src)?
        {
            return Ok(v);
        }
        Err(PowerCtlError::NoCredentials {
            server: server.to_string(),
            what: format!("spec.bmc.{what} (or {what}From pointing at a stored secret)"),
        })
    }
}

impl Resolve for StoreResolver {
    fn resolve(&self, s: &Server) -> Result<Arc<dyn Bmc>, PowerCtlError> {
        let name = s.metadata.name.clone();
        let spec = s
            .spec
            .bmc
            .as_ref()
            .ok_or_else(|| PowerCtlError::NoBmc(name.clone()))?;
        let settings = self.store.bmc_settings(&name)?;
        let user = self.credential(&name, &spec.user, &spec.user_from, "user")?;
        let pass = self.credential(&name, &spec.pass, &spec.pass_from, "pass")?;
        // The cache key covers everything the Bmc is built from (never logged).
        let key = format!("{spec:?}|{settings:?}|{user}|{pass}");
        if let Some((k, bmc)) = self.cache.lock().expect("cache lock").get(&name)
            && *k == key
        {
            return Ok(bmc.clone());
        }
        let creds = Credentials {
            username: user,
            password: pass,
        };
        let interface = spec
            .interface
            .clone()
            .unwrap_or_else(|| server::Bmc::DEFAULT_INTERFACE.to_string());
        let bmc: Arc<dyn Bmc> = match interface.as_str() {
            "lanplus" | "lanplus-3" | "lanplus-17" => {
                let port = spec.port.unwrap_or(server::Bmc::DEFAULT_PORT as u32);
                let endpoint = if spec.endpoint.contains(':') && !spec.endpoint.starts_with('[') {
                    format!("[{}]:{port}", spec.endpoint)
                } else {
                    format!("{}:{port}", spec.endpoint)
                };
                let fixed = match interface.as_str() {
                    "lanplus-3" => Some(CipherSuite::Suite3),
                    "lanplus-17" => Some(CipherSuite::Suite17),
                    _ => settings.cipher_suite.and_then(CipherSuite::from_id),
                };
                Arc::new(match fixed {
                    Some(suite) => IpmiBmc::new(endpoint, creds, suite, self.ipmi),
                    None => IpmiBmc::new_auto(endpoint, creds, self.ipmi),
                })
            }
            "redfish" => {
                let base_url = if spec.endpoint.starts_with("https://")
                    || spec.endpoint.starts_with("http://")
                {
                    spec.endpoint.clone()
                } else {
                    match spec.port {
                        Some(p) => format!("https://{}:{p}", spec.endpoint),
                        None => format!("https://{}", spec.endpoint),
                    }
                };
                let store = self.store.clone();
                let server = name.clone();
                let on_pin: super::redfish::PinCallback = Arc::new(move |fp: String| {
                    tracing::info!(server = %server, sha256 = %fp, "pinned BMC TLS certificate on first contact");
                    if let Err(e) =
                        store.update_bmc_settings(&server, |s| s.pinned_sha256 = Some(fp.clone()))
                    {
                        tracing::warn!(server = %server, error = %crate::error_chain(&e), "cannot store BMC certificate pin");
                    }
                });
                Arc::new(
                    RedfishBmc::new(
                        RedfishTarget {
                            base_url,
                            insecure_tls: settings.insecure_tls,
                            pinned_sha256: settings.pinned_sha256.clone(),
                            system_id: settings.system_id.clone(),
                            request_timeout: self.request_timeout,
                        },
                        creds,
                        Some(on_pin),
                    )
                    .map_err(|source| PowerCtlError::Bmc {
                        server: name.clone(),
                        operation: "client setup",
                        source,
                    })?,
                )
            }
            other => {
                return Err(PowerCtlError::Interface {
                    server: name,
                    interface: other.to_string(),
                });
            }
        };
        self.cache
            .lock()
            .expect("cache lock")
            .insert(name, (key, bmc.clone()));
        Ok(bmc)
    }
}

/// Server-level power control; cheap to clone.
#[derive(Debug, Clone)]
pub struct PowerControl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    gate: BmcGate,
    resolver: Arc<dyn Resolve>,
    retry: RetryPolicy,
    default_firmware: Firmware,
}

/// Sets (or replaces) condition `type_` unless it already says the same; returns whether
/// anything changed. The transition time moves only when the status flips.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) -> bool {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let new = Condition {
        type_: type_.to_string(),
        status,
        severity: (!ok).then_some(ConditionSeverity::Error),
        last_transition_time: now.to_string(),
        reason: reason.map(str::to_string),
        message,
    };
    Condition::set(conditions, new)
}

/// Sets condition `type_` on a Server in one transaction (no write when unchanged):
/// `Ok(())` = True, `Err((reason, message))` = False. Failures are logged, not returned.
pub fn set_condition_on(
    store: &Store,
    server: &str,
    type_: &str,
    outcome: Result<(), (&str, String)>,
    now: &str,
) {
    match outcome {
        Ok(()) => record_condition(store, server, type_, true, None, None, now),
        Err((reason, message)) => record_condition(
            store,
            server,
            type_,
            false,
            Some(reason),
            Some(message),
            now,
        ),
    }
}

/// Sets condition `type_` (True when `ok`) with an optional reason and message on a Server
/// in one transaction (no write when unchanged). Failures are logged, not returned.
pub fn record_condition(
    store: &Store,
    server: &str,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) {
    let r = store.update(Kind::Server, server, |o| {
        let Object::Server(s) = o else {
            return Err("not a server".into());
        };
        let status = s.status.get_or_insert_with(Default::default);
        set_condition(&mut status.conditions, type_, ok, reason, message, now);
        Ok(())
    });
    if let Err(e) = r {
        tracing::debug!(server, error = %crate::error_chain(&e), "cannot record condition");
    }
}

impl PowerControl {
    pub fn new(store: Store, config: &BmcConfig) -> PowerControl {
        let resolver = Arc::new(StoreResolver::new(store.clone(), config));
        let gate = BmcGate::new(
            config.max_concurrent,
            Duration::from_secs(config.call_timeout_secs.max(1)),
        );
        let firmware = if config.default_pxe_mode.eq_ignore_ascii_case("bios") {
            Firmware::Bios
        } else {
            Firmware::Uefi
        };
        PowerControl::with_parts(store, gate, resolver, RetryPolicy::default(), firmware)
    }

    /// Assembles a controller from parts (tests inject resolvers and policies here).
    pub fn with_parts(
        store: Store,
        gate: BmcGate,
        resolver: Arc<dyn Resolve>,
        retry: RetryPolicy,
        default_firmware: Firmware,
    ) -> PowerControl {
        PowerControl {
            inner: Arc::new(Inner {
                store,
                gate,
                resolver,
                retry,
                default_firmware,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The gate every call to a BMC goes through (shared with auto setup).
    pub fn gate(&self) -> &BmcGate {
        &self.inner.gate
    }

    fn server(&self, name: &str) -> Result<Server, PowerCtlError> {
        match self.inner.store.get(Kind::Server, name)? {
            Some(s) => match s.object {
                Object::Server(s) => Ok(s),
                _ => Err(PowerCtlError::NotFound(name.to_string())),
            },
            None => Err(PowerCtlError::NotFound(name.to_string())),
        }
    }

    /// Records the outcome of a BMC call on the Server (condition, and power when read).
    fn record(
        &self,
        server: &str,
        outcome: Option<Result<(), &BmcError>>,
        power: Option<PowerState>,
    ) {
        let now = crate::clock::rfc3339(crate::clock::unix_ms());
        let r = self.inner.store.update(Kind::Server, server, |o| {
            let Object::Server(s) = o else {
                return Err("not a server".into());
            };
            let status = s.status.get_or_insert_with(Default::default);
            match outcome {
                None => {}
                Some(Ok(())) => {
                    set_condition(
                        &mut status.conditions,
                        CONDITION_BMC,
                        true,
                        None,
                        None,
                        &now,
                    );
                }
                Some(Err(e)) => {
                    set_condition(
                        &mut status.conditions,
                        CONDITION_BMC,
                        false,
                        Some(reason(e)),
                        Some(crate::error_chain(e)),
                        &now,
                    );
                }
            }
            if let Some(p) = power {
                status.power = Some(match p {
                    PowerState::On => server::PowerState::On,
                    PowerState::Off => server::PowerState::Off,
                    PowerState::Unknown => server::PowerState::Unknown,
                });
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::debug!(server, error = %crate::error_chain(&e), "cannot record BMC outcome");
        }
    }

    /// Runs `op` against the server's BMC through the gate, retrying transient failures.
    async fn run<T: Send>(
        &self,
        server: &Server,
        operation: &'static str,
        op: impl Fn(&dyn Bmc) -> BmcFuture<'_, T>,
    ) -> Result<T, PowerCtlError> {
        let name = &server.metadata.name;
        let bmc = self.inner.resolver.resolve(server)?;
        let mut retry = 0;
        loop {
            match self.inner.gate.run(bmc.endpoint(), op(&*bmc)).await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && retry + 1 < self.inner.retry.attempts => {
                    let delay = self.inner.retry.delay(retry);
                    tracing::info!(server = %name, operation, error = %crate::error_chain(&e), ?delay, "BMC call failed; retrying");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                Err(source) => {
                    let power = (operation == "power status").then_some(PowerState::Unknown);
                    self.record(name, Some(Err(&source)), power);
                    return Err(PowerCtlError::Bmc {
                        server: name.clone(),
                        operation,
                        source,
                    });
                }
            }
        }
    }

    /// Reads the power state and records it on the Server.
    pub async fn status_of(&self, server: &Server) -> Result<PowerState, PowerCtlError> {
        let p = self
            .run(server, "power status", |b| b.power_state())
            .await?;
        self.record(&server.metadata.name, Some(Ok(())), Some(p));
        Ok(p)
    }

    pub async fn status(&self, name: &str) -> Result<PowerState, PowerCtlError> {
        let s = self.server(name)?;
        self.status_of(&s).await
    }

    pub async fn power_server(
        &self,
        server: &Server,
        action: PowerAction,
    ) -> Result<(), PowerCtlError> {
        let operation = match action {
            PowerAction::On => "power on",
            PowerAction::Off => "power off",
            PowerAction::Cycle => "power cycle",
            PowerAction::Reset => "power reset",
            PowerAction::Soft => "soft power off",
        };
        self.run(server, operation, |b| b.power(action)).await?;
        self.record(&server.metadata.name, Some(Ok(())), None);
        Ok(())
    }

    pub async fn power(&self, name: &str, action: PowerAction) -> Result<(), PowerCtlError> {
        let s = self.server(name)?;
        self.power_server(&s, action).await
    }

    pub async fn set_boot_server(
        &self,
        server: &Server,
        boot: BootOverride,
    ) -> Result<(), PowerCtlError> {
        self.run(server, "set boot device", |b| b.set_boot(boot))
            .await?;
        self.record(&server.metadata.name, Some(Ok(())), None);
        Ok(())
    }

    pub async fn set_boot(&self, name: &str, boot: BootOverride) -> Result<(), PowerCtlError> {
        let s = self.server(name)?;
        self.set_boot_server(&s, boot).await
    }

    /// The firmware mode for PXE: `spec.pxeMode`, else the configured default.
    pub fn pxe_firmware(&self, server: &Server) -> Firmware {
        match server.spec.pxe_mode {
            Some(PxeMode::Bios) => Firmware::Bios,
            Some(PxeMode::Uefi) => Firmware::Uefi,
            None => self.inner.default_firmware,
        }
    }

    /// Sidero's "set PXE boot once + power cycle (or on when off)".
    pub async fn pxe_boot_and_cycle(&self, server: &Server) -> Result<(), PowerCtlError> {
        let boot = BootOverride {
            target: BootTarget::Pxe,
            firmware: self.pxe_firmware(server),
            persistent: false,
        };
        self.set_boot_server(server, boot).await?;
        self.power_server(server, PowerAction::Cycle).await
    }

    /// Reads the power state of every server with a BMC, concurrently (bounded by the
    /// gate). Returns how many were read successfully.
    pub async fn poll_once(&self) -> usize {
        let with_bmc = self.inner.store.scan(Kind::Server, |s| match s.object {
            Object::Server(s) if s.spec.bmc.is_some() => Some(s),
            _ => None,
        });
        let servers = match with_bmc {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "power poll: cannot list servers");
                return 0;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for s in servers {
            let this = self.clone();
            tasks.spawn(async move { this.status_of(&s).await.is_ok() });
        }
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            if matches!(r, Ok(true)) {
                ok += 1;
            }
        }
        ok
    }
}

/// Polls power states every `interval` until `shutdown` turns true.
pub async fn run_poller(
    control: PowerControl,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stop {
            return;
        }
        let n = control.poll_once().await;
        tracing::debug!(servers = n, "power poll done");
    }
}

#[cfg(test)]
mod tests;
