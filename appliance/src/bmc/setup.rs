//! Automatic BMC setup (Sidero's auto BMC setup, done over the network): given a BMC
//! endpoint and administrator credentials (reported by the agent), create or reuse a
//! dedicated `sidero` user with a generated password, administrator privilege, enabled on
//! the LAN channel; verify it by logging in with it; store it for the Server.
//!
//! Triggered by the agent API (`UpdateBMCInfo` with credentials, `[bmc] auto_setup = true`)
//! through [`AutoSetup::spawn`]: the work runs on its own task behind the shared
//! [`BmcGate`], so the RPC answers at once and a dead BMC only delays its own setup. A
//! repeat report reuses the stored user when it still logs in (no second user, no
//! rotation). Credentials go to the secrets table, never inline in `spec.bmc`, never to logs.
//!
//! Failure leaves a clear `BMCSetup=False` condition on the Server (and nothing else
//! changed). Randomness (the password) comes from the OS here.
//!
//! May touch: the BMC (IPMI user commands), the store (secret + `spec.bmc` + condition).

use super::gate::BmcGate;
use super::ipmi::{IpmiBmc, IpmiTimeouts};
use super::power::{record_condition, set_condition_on};
use super::{BmcError, Credentials, PowerState};
use crate::config::BmcConfig;
use crate::model::server;
use crate::protocol::ipmi::command::{self, PasswordOp, UserSlot};
use crate::store::{Store, StoreError};

/// The user name the appliance creates (Sidero's).
pub const SETUP_USER: &str = "sidero";
/// The IPMI LAN channel configured (Sidero supports only channel 1).
pub const LAN_CHANNEL: u8 = 1;
/// Server condition written by [`auto_setup_server`].
pub const CONDITION_SETUP: &str = "BMCSetup";
/// The first step of [`setup_user`] (its failure with an authentication error means the
/// reported administrator credentials are wrong).
const STEP_ADMIN_LOGIN: &str = "log in as the administrator";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("BMC setup: {step}")]
    Bmc {
        step: &'static str,
        #[source]
        source: BmcError,
    },
    #[error("BMC setup: no free user slot among ids 2..={max}")]
    NoFreeSlot { max: u8 },
    #[error("BMC setup: the new user cannot log in")]
    Verify(#[source] BmcError),
    #[error("BMC setup: storing the credentials failed")]
    Store(#[from] StoreError),
}

/// 16 characters from `[A-Za-z0-9]` (as Sidero generates them), from the OS RNG.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(16);
    while out.len() < 16 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the OS random source works");
        // Rejection sampling: 248 = 4 × 62 keeps the distribution uniform.
        for x in b {
            if x < 248 && out.len() < 16 {
                out.push(ALPHABET[(x % 62) as usize] as char);
            }
        }
    }
    out
}

/// Creates (or resets) the dedicated user on the BMC at `endpoint` (`host:port`) using
/// `admin` credentials, and verifies it by logging in with it. Returns its credentials.
pub async fn setup_user(
    endpoint: &str,
    admin: &Credentials,
    timeouts: IpmiTimeouts,
) -> Result<Credentials, SetupError> {
    let bmc = IpmiBmc::new_auto(endpoint, admin.clone(), timeouts);
    let step = |step: &'static str| move |source| SetupError::Bmc { step, source };
    let mut conn = bmc.open().await.map_err(step(STEP_ADMIN_LOGIN))?;
    let password = generate_password();
    let result = async {
        let access = conn
            .call_parse(
                command::get_user_access(LAN_CHANNEL, 1),
                command::parse_user_access,
            )
            .await
            .map_err(step("get user access"))?;
        let max = access.max_users.clamp(2, 63);
        // Reuse the slot already named `sidero`, else the first empty one.
        let mut names = Vec::new();
        for id in 2..=max {
            let reply = conn
                .call(command::get_user_name(id))
                .await
                .map_err(step("get user name"))?;
            let name = if reply.completion == 0 {
                command::parse_user_name(&reply.data).ok()
            } else {
                None
            };
            let found = name.as_deref() == Some(SETUP_USER.as_bytes());
            names.push((id, name));
            if found {
                break;
            }
        }
        let id = match command::pick_user_slot(SETUP_USER.as_bytes(), &names) {
            Some(UserSlot::Existing(id)) => id,
            Some(UserSlot::Free(id)) => {
                let c = command::set_user_name(id, SETUP_USER.as_bytes())
                    .expect("the setup user name is valid");
                conn.call_ok(c).await.map_err(step("set user name"))?;
                id
            }
            None => return Err(SetupError::NoFreeSlot { max }),
        };
        let c = command::set_user_password(id, PasswordOp::SetPassword, password.as_bytes())
            .expect("generated passwords are 16 bytes");
        conn.call_ok(c).await.map_err(step("set user password"))?;
        conn.call_ok(command::set_user_access(LAN_CHANNEL, id, 0x04))
            .await
            .map_err(step("set user access"))?;
        let c = command::set_user_password(id, PasswordOp::EnableUser, &[])
            .expect("enable carries no password");
        conn.call_ok(c).await.map_err(step("enable user"))?;
        Ok(())
    }
    .await;
    conn.close().await;
    result?;
    let creds = Credentials {
        username: SETUP_USER.to_string(),
        password,
    };
    // Verify: a fresh session with the new user reads the chassis status.
    let check = IpmiBmc::new(endpoint, creds.clone(), bmc.suite(), timeouts);
    let _: PowerState = check
        .chassis_power_state()
        .await
        .map_err(SetupError::Verify)?;
    Ok(creds)
}

/// What [`auto_setup_server`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOutcome {
    /// Created (or reset) the dedicated user with a new generated password.
    Created,
    /// The dedicated user already stored for this Server still logs in: nothing changed
    /// on the BMC (repeat reports are idempotent).
    Reused,
    /// The agent reported the dedicated user itself (Sidero's in-band setup): verified and
    /// stored as is.
    Reported,
}

/// The result of a successful setup; the credentials are those now stored.
#[derive(Debug, Clone)]
pub struct Setup {
    pub creds: Credentials,
    pub outcome: SetupOutcome,
}

/// `host:port`, bracketing IPv6 literals (the same key the power path gates on).
pub fn endpoint_of(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A fresh session with `creds` reads the chassis status.
async fn verify(
    endpoint: &str,
    creds: &Credentials,
    timeouts: IpmiTimeouts,
) -> Result<(), BmcError> {
    let bmc = IpmiBmc::new_auto(endpoint, creds.clone(), timeouts);
    bmc.chassis_power_state().await.map(|_: PowerState| ())
}

/// The dedicated user stored for `server`, if its `spec.bmc` still points at `host:port`.
fn stored_setup_user(
    store: &Store,
    server: &str,
    host: &str,
    port: u16,
) -> Result<Option<Credentials>, StoreError> {
    let Some(stored) = store.get(crate::model::Kind::Server, server)? else {
        return Ok(None);
    };
    let crate::model::Object::Server(s) = stored.object else {
        return Ok(None);
    };
    let same_bmc = s.spec.bmc.as_ref().is_some_and(|b| {
        b.endpoint == host
            && b.port.unwrap_or(u32::from(server::Bmc::DEFAULT_PORT)) == u32::from(port)
    });
    if !same_bmc {
        return Ok(None);
    }
    Ok(store
        .server_bmc_secret(server)?
        .filter(|(user, _)| user == SETUP_USER)
        .map(|(username, password)| Credentials { username, password }))
}

/// The BMC part of the setup (runs inside the gate): reuse a stored working user, accept
/// a reported `sidero` user, or create one.
async fn provision(
    stored: Option<Credentials>,
    endpoint: &str,
    admin: &Credentials,
    timeouts: IpmiTimeouts,
) -> Result<Setup, SetupError> {
    if admin.username == SETUP_USER {
        verify(endpoint, admin, timeouts)
            .await
            .map_err(SetupError::Verify)?;
        return Ok(Setup {
            creds: admin.clone(),
            outcome: SetupOutcome::Reported,
        });
    }
    if let Some(creds) = stored
        && verify(endpoint, &creds, timeouts).await.is_ok()
    {
        return Ok(Setup {
            creds,
            outcome: SetupOutcome::Reused,
        });
    }
    let creds = setup_user(endpoint, admin, timeouts).await?;
    Ok(Setup {
        creds,
        outcome: SetupOutcome::Created,
    })
}

/// The `reason` of a `BMCSetup=False` condition.
pub fn failure_reason(e: &SetupError) -> &'static str {
    match e {
        SetupError::Bmc {
            step: STEP_ADMIN_LOGIN,
            source: BmcError::Auth { .. },
        } => "AdminLoginFailed",
        SetupError::Bmc {
            source: BmcError::Timeout { .. },
            ..
        } => "Timeout",
        SetupError::Bmc {
            source: BmcError::Unreachable { .. },
            ..
        } => "Unreachable",
        SetupError::Bmc {
            source: BmcError::Busy { .. },
            ..
        } => "Busy",
        SetupError::Bmc { .. } => "UserSetupFailed",
        SetupError::NoFreeSlot { .. } => "NoFreeUserSlot",
        SetupError::Verify(_) => "VerifyFailed",
        SetupError::Store(_) => "StoreFailed",
    }
}

/// Auto setup for one Server, behind `gate` (one call per BMC, bounded overall, one
/// deadline for the whole BMC part): reuses the stored `sidero` user when it still logs in,
/// else creates/resets it with `admin` (see [`setup_user`]); stores the credentials in the
/// secrets table with `spec.bmc` pointing at them (endpoint and port set, other fields
/// kept), and records `BMCSetup` True, or False with a reason and the error chain.
/// Credentials are never logged.
pub async fn auto_setup_server(
    store: &Store,
    gate: &BmcGate,
    server_name: &str,
    host: &str,
    port: u16,
    admin: &Credentials,
    timeouts: IpmiTimeouts,
) -> Result<Setup, SetupError> {
    let endpoint = endpoint_of(host, port);
    let now = crate::clock::rfc3339(crate::clock::unix_ms());
    let result = async {
        let stored = stored_setup_user(store, server_name, host, port)?;
        let setup = gate
            .run(&endpoint, async {
                Ok(provision(stored, &endpoint, admin, timeouts).await)
            })
            .await
            .unwrap_or_else(|source| {
                Err(SetupError::Bmc {
                    step: "wait for the BMC",
                    source,
                })
            })?;
        if setup.outcome != SetupOutcome::Reused {
            store.edit_server_bmc(
                server_name,
                |b| {
                    b.endpoint = host.to_string();
                    b.port = Some(u32::from(port));
                    // The user is an IPMI user: a Redfish interface would not use it.
                    if b.interface
                        .as_deref()
                        .is_some_and(|i| !i.starts_with("lanplus"))
                    {
                        b.interface = None;
                    }
                    Ok(())
                },
                Some((&setup.creds.username, &setup.creds.password)),
            )?;
        }
        Ok(setup)
    }
    .await;
    match &result {
        Ok(setup) => {
            let (reason, message) = match setup.outcome {
                SetupOutcome::Created => (
                    "UserCreated",
                    "created BMC user `sidero` with a generated password",
                ),
                SetupOutcome::Reused => (
                    "UserReused",
                    "the stored BMC user `sidero` still logs in; nothing changed",
                ),
                SetupOutcome::Reported => (
                    "ReportedUserVerified",
                    "the BMC user `sidero` reported by the agent logs in",
                ),
            };
            record_condition(
                store,
                server_name,
                CONDITION_SETUP,
                true,
                Some(reason),
                Some(message.to_string()),
                &now,
            );
            tracing::info!(server = server_name, endpoint = %endpoint, user = SETUP_USER, outcome = ?setup.outcome, "BMC user set up");
        }
        Err(e) => {
            let message = crate::error_chain(e);
            tracing::warn!(server = server_name, endpoint = %endpoint, error = %message, "BMC setup failed");
            set_condition_on(
                store,
                server_name,
                CONDITION_SETUP,
                Err((failure_reason(e), message)),
                &now,
            );
        }
    }
    result
}

/// Handle the agent API uses to start setups: the store, the BMC gate shared with power
/// control, and the IPMI timeouts from `[bmc]`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AutoSetup {
    store: Store,
    gate: BmcGate,
    timeouts: IpmiTimeouts,
}

impl AutoSetup {
    pub fn new(store: Store, gate: BmcGate, config: &BmcConfig) -> AutoSetup {
        AutoSetup {
            store,
            gate,
            timeouts: IpmiTimeouts {
                attempt: std::time::Duration::from_millis(config.ipmi_attempt_ms.max(50)),
                retries: config.ipmi_retries,
            },
        }
    }

    /// Starts [`auto_setup_server`] on its own task and returns at once; the outcome is the
    /// Server's `BMCSetup` condition.
    pub fn spawn(
        &self,
        server: String,
        host: String,
        port: u16,
        admin: Credentials,
    ) -> tokio::task::JoinHandle<Result<Setup, SetupError>> {
        let this = self.clone();
        tokio::spawn(async move {
            auto_setup_server(
                &this.store,
                &this.gate,
                &server,
                &host,
                port,
                &admin,
                this.timeouts,
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests;
