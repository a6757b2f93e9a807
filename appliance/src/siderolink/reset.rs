//! Reset without a BMC (Sidero issues #1285/#1294: machines without IPMI could not be
//! recycled): when a released server has no BMC but its node still holds a SideroLink
//! session, the box calls the Talos machine API `machine.MachineService/Reset` on the
//! node's overlay address, port 50000, over the overlay (an outbound smoltcp connection,
//! `endpoint::Connector`), with mutual TLS from the cluster's talosconfig (`talosconfig`;
//! sealed in the store, set by `appliance ctl talosconfig set` or the console).
//!
//! The request: `graceful=false` (the owner already released the machine: CAPI drained
//! and removed the node, or the whole cluster is going, where leaving etcd can block),
//! `reboot=true` (the node comes back through PXE into the agent, which wipes it), `mode
//! = SYSTEM_DISK` (Talos wipes its system disk; the agent then wipes every disk as for
//! any released server).
//!
//! Each attempt is bounded (`[siderolink] reset_timeout_secs`); failures (no talosconfig,
//! no live session, TLS or gRPC refusal, timeout) set the Server condition
//! `ResetViaTalos=False` with the reason and are retried with a doubling backoff
//! (`reset_attempts`, `reset_backoff_secs`); success sets `ResetViaTalos=True`. The release
//! itself is committed before any of this and never waits for it; the lifecycle's reboot
//! timer still covers a node that never comes back (and calls this path again when it
//! retries). Credentials are never logged.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appliance_rpc::machine::machine_service_client::MachineServiceClient;
use appliance_rpc::machine::{ResetRequest, reset_request::WipeMode};

use super::endpoint::Connector;
use super::talosconfig::{Talosconfig, TalosconfigError};
use crate::clock;
use crate::model::{Condition, ConditionSeverity, ConditionStatus, Kind, Object, Server};
use crate::protocol::siderolink::address::{Prefix, parse_node_address};
use crate::reconcile::apply::{edit_server_typed, server_state};
use crate::reconcile::lifecycle::Phase;
use crate::reconcile::power::{OsReset, PowerError, PowerFuture};
use crate::store::{Store, StoreError};

/// The Talos machine API (apid) port.
pub const MACHINE_API_PORT: u16 = 50000;
/// The talosconfig used for servers whose cluster has none of its own.
pub const DEFAULT_CLUSTER: &str = "default";
/// The Server condition this path sets.
pub const CONDITION: &str = "ResetViaTalos";

/// How long a failed call waits for its connection to say why it ended.
const CONNECTION_END: Duration = Duration::from_secs(1);

/// Retry and timeout of resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetSettings {
    /// Attempts per release (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each.
    pub backoff: Duration,
    /// One attempt (connect, TLS, call) ends within this.
    pub timeout: Duration,
}

/// Why a reset attempt failed (never carries key material).
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(
        "no talosconfig for cluster `{0}` (nor `default`): give the box one with `appliance ctl talosconfig set FILE --cluster {0}`"
    )]
    NoTalosconfig(String),
    #[error("the stored talosconfig of cluster `{0}` is unusable")]
    BadTalosconfig(String, #[source] TalosconfigError),
    #[error("the node's SideroLink address {0:?} is not in the overlay")]
    BadAddress(String),
    #[error("no SideroLink session with the node")]
    NoSession(#[source] std::io::Error),
    #[error("TLS with the node's machine API failed")]
    Tls(#[source] std::io::Error),
    #[error("the node's machine API answered {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("no answer from the node's machine API within {0:?}")]
    Timeout(Duration),
    #[error("store access failed")]
    Store(#[from] StoreError),
    #[error("store access failed")]
    Task(#[from] crate::store::TaskFailed),
}

impl ResetError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ResetError::NoTalosconfig(_) => "NoTalosconfig",
            ResetError::BadTalosconfig(..) => "TalosconfigInvalid",
            ResetError::BadAddress(_) | ResetError::NoSession(_) => "NoSideroLinkSession",
            ResetError::Tls(_) => "MachineAPIUnreachable",
            ResetError::Refused { .. } => "ResetRefused",
            ResetError::Timeout(_) => "ResetTimeout",
            ResetError::Store(_) | ResetError::Task(_) => "StoreError",
        }
    }
}

/// The reset path; cheap to clone.
#[derive(Debug, Clone)]
pub struct TalosReset {
    store: Store,
    connector: Connector,
    prefix: Prefix,
    settings: ResetSettings,
    /// Servers with a reset loop running (a reboot-timeout retry does not start a second).
    running: Arc<Mutex<HashSet<String>>>,
}

/// Removes the server from `running` when its loop ends (also when aborted).
struct Running(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl TalosReset {
    pub fn new(
        store: Store,
        connector: Connector,
        prefix: Prefix,
        settings: ResetSettings,
    ) -> TalosReset {
        TalosReset {
            store,
            connector,
            prefix,
            settings,
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// One reset call for `server`, bounded by the settings' timeout.
    pub async fn call(&self, server: &str) -> Result<(), ResetError> {
        match tokio::time::timeout(self.settings.timeout, self.call_unbounded(server)).await {
            Ok(r) => r,
            Err(_) => Err(ResetError::Timeout(self.settings.timeout)),
        }
    }

    async fn call_unbounded(&self, server: &str) -> Result<(), ResetError> {
        let (store, name) = (self.store.clone(), server.to_string());
        let (record, cluster, talosconfig) = crate::store::blocking(move || {
            let Some(record) = store.siderolink_node(&name)? else {
                return Ok::<_, StoreError>((None, String::new(), None));
            };
            let cluster = record
                .cluster
                .clone()
                .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
            let tc = match store.talosconfig(&cluster)? {
                Some(t) => Some(t),
                None => store.talosconfig(DEFAULT_CLUSTER)?,
            };
            Ok((Some(record), cluster, tc))
        })
        .await??;
        let Some(record) = record else {
            return Err(ResetError::NoSession(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the node never provisioned SideroLink",
            )));
        };
        let talosconfig = talosconfig.ok_or_else(|| ResetError::NoTalosconfig(cluster.clone()))?;
        let tls = Talosconfig::parse(&talosconfig)
            .and_then(|t| t.client_config())
            .map_err(|e| ResetError::BadTalosconfig(cluster.clone(), e))?;
        let addr: Ipv6Addr = parse_node_address(&record.address, self.prefix)
            .map_err(|_| ResetError::BadAddress(record.address.clone()))?;
        let stream = self
            .connector
            .connect(addr, MACHINE_API_PORT)
            .await
            .map_err(ResetError::NoSession)?;
        let name = rustls::pki_types::ServerName::IpAddress(IpAddr::V6(addr).into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, stream)
            .await
            .map_err(ResetError::Tls)?;
        // HTTP/2 straight on this one connection (no tonic Channel: a Channel reconnects
        // when its connection dies, and a node that refuses the client certificate kills
        // it right after the TLS 1.3 handshake, whose alert then raced the reconnect; the
        // refusal must be what the condition says, however the two interleave).
        let (send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .map_err(|e| ResetError::Tls(std::io::Error::other(crate::error_chain(&e))))?;
        let service = tower::service_fn(move |request: hyper::Request<tonic::body::Body>| {
            let mut send = send.clone();
            async move { send.send_request(request).await }
        });
        let origin: hyper::Uri = format!("http://[{addr}]:{MACHINE_API_PORT}")
            .parse()
            .map_err(|_| ResetError::BadAddress(record.address.clone()))?;
        let request = ResetRequest {
            graceful: false,
            reboot: true,
            system_partitions_to_wipe: Vec::new(),
            user_disks_to_wipe: Vec::new(),
            mode: WipeMode::SystemDisk as i32,
        };
        let mut client = MachineServiceClient::with_origin(service, origin);
        let call = client.reset(request);
        tokio::pin!(call, connection);
        // The answer first: a node that accepts the reset reboots at once, so its
        // connection may end in the same breath as the answer arrives. A connection that
        // ends first fails the pending call, which then ends this loop.
        let mut ended = None;
        let answer = loop {
            tokio::select! {
                biased;
                answer = &mut call => break answer,
                end = &mut connection, if ended.is_none() => ended = Some(end),
            }
        };
        let Err(status) = answer else {
            return Ok(());
        };
        let Some(cause) = std::error::Error::source(&status).map(crate::error_chain) else {
            return Err(ResetError::Refused {
                code: status.code(),
                message: status.message().to_string(),
            });
        };
        // A call that failed with a cause (not a status the node sent) lost its
        // connection: the connection's own end says why (a TLS alert: the node refused the
        // client certificate); the call's cause only when the connection has none.
        let ended = match ended {
            Some(end) => Some(end),
            None => tokio::time::timeout(CONNECTION_END, &mut connection)
                .await
                .ok(),
        };
        let cause = match ended {
            Some(Err(e)) => crate::error_chain(&e),
            _ => cause,
        };
        Err(ResetError::Tls(std::io::Error::other(cause)))
    }

    /// Resets `server` with retries, setting `ResetViaTalos` after each attempt. Stops
    /// early once the server is no longer `released` (it came back by itself).
    pub async fn run(&self, server: &str) -> Result<(), ResetError> {
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if !running.insert(server.to_string()) {
                return Ok(());
            }
        }
        let _running = Running(self.running.clone(), server.to_string());
        let mut wait = self.settings.backoff;
        let attempts = self.settings.attempts.max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            if !self.still_released(server).await? {
                return Ok(());
            }
            match self.call(server).await {
                Ok(()) => {
                    tracing::info!(server, "reset via the Talos machine API accepted");
                    self.condition(
                        server,
                        ConditionStatus::True,
                        "ResetRequested",
                        "the Talos machine API accepted the reset (reboot, system disk wiped); waiting for the node to PXE boot"
                            .to_string(),
                    )
                    .await;
                    return Ok(());
                }
                Err(e) => {
                    let text = crate::error_chain(&e);
                    tracing::warn!(server, attempt, attempts, error = %text, "reset via the Talos machine API failed");
                    let next = if attempt < attempts {
                        format!(" (attempt {attempt} of {attempts}; next in {wait:?})")
                    } else {
                        format!(
                            " (attempt {attempt} of {attempts}; no more retries until the reboot timeout)"
                        )
                    };
                    self.condition(
                        server,
                        ConditionStatus::False,
                        e.reason(),
                        format!("{text}{next}"),
                    )
                    .await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ResetError::Timeout(self.settings.timeout)))
    }

    async fn still_released(&self, server: &str) -> Result<bool, ResetError> {
        let (store, name) = (self.store.clone(), server.to_string());
        let stored = crate::store::blocking(move || store.get(Kind::Server, &name)).await??;
        Ok(matches!(
            stored.map(|s| s.object),
            Some(Object::Server(s)) if server_state(&s).phase == Phase::Released
        ))
    }

    async fn condition(
        &self,
        server: &str,
        status: ConditionStatus,
        reason: &str,
        message: String,
    ) {
        let condition = Condition {
            type_: CONDITION.into(),
            status,
            severity: (status == ConditionStatus::False).then_some(ConditionSeverity::Warning),
            last_transition_time: clock::rfc3339(clock::unix_ms()),
            reason: Some(reason.into()),
            message: Some(message),
        };
        let (store, name) = (self.store.clone(), server.to_string());
        let r = crate::store::blocking(move || {
            edit_server_typed(&store, &name, |s| {
                let st = s.status.get_or_insert_with(Default::default);
                Condition::set(&mut st.conditions, condition);
            })
        })
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(server, error = %crate::error_chain(&e), "cannot set the ResetViaTalos condition")
            }
            Err(e) => tracing::warn!(server, error = %e, "cannot set the ResetViaTalos condition"),
        }
    }
}

impl OsReset for TalosReset {
    /// Applies to servers whose node provisioned SideroLink (a session record exists).
    fn reset(&self, server: &Server) -> Option<PowerFuture> {
        let name = server.metadata.name.clone();
        match self.store.siderolink_node(&name) {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(server = %name, error = %crate::error_chain(&e), "cannot read the SideroLink session record");
                return None;
            }
        }
        let me = self.clone();
        Some(Box::pin(async move {
            me.run(&name).await.map_err(|e| PowerError {
                operation: "reset via Talos",
                server: name.clone(),
                message: crate::error_chain(&e),
            })
        }))
    }
}
