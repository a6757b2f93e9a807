//! Automatic BMC setup (Sidero's auto BMC setup, done over the network): given a BMC
//! endpoint and administrator credentials (reported by the agent), create or reuse a
//! dedicated `sidero` user with a generated password, administrator privilege, enabled on
//! the LAN channel; verify it by logging in with it; store it for the Server.
//!
//! Failure leaves a clear `BMCSetup=False` condition on the Server (and nothing else
//! changed). Randomness (the password) comes from the OS here.
//!
//! May touch: the BMC (IPMI user commands), the store (secret + `spec.bmc` + condition).

use super::ipmi::{IpmiBmc, IpmiTimeouts};
use super::power::{rfc3339, set_condition_on};
use super::{BmcError, Credentials, PowerState};
use crate::model::server;
use crate::protocol::ipmi::command::{self, PasswordOp};
use crate::store::{Store, StoreError};

/// The user name the appliance creates (Sidero's).
pub const SETUP_USER: &str = "sidero";
/// The IPMI LAN channel configured (Sidero supports only channel 1).
pub const LAN_CHANNEL: u8 = 1;
/// Server condition written by [`auto_setup_server`].
pub const CONDITION_SETUP: &str = "BMCSetup";

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
    let mut conn = bmc
        .open()
        .await
        .map_err(step("log in as the administrator"))?;
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
        let mut free = None;
        let mut existing = None;
        for id in 2..=max {
            let reply = conn
                .call(command::get_user_name(id))
                .await
                .map_err(step("get user name"))?;
            let name = if reply.completion == 0 {
                command::parse_user_name(&reply.data).unwrap_or_default()
            } else {
                Vec::new()
            };
            if name == SETUP_USER.as_bytes() {
                existing = Some(id);
                break;
            }
            if free.is_none() && (name.is_empty() || name == b"(Empty User)") {
                free = Some(id);
            }
        }
        let id = match (existing, free) {
            (Some(id), _) => id,
            (None, Some(id)) => {
                let c = command::set_user_name(id, SETUP_USER.as_bytes())
                    .expect("the setup user name is valid");
                conn.call_ok(c).await.map_err(step("set user name"))?;
                id
            }
            (None, None) => return Err(SetupError::NoFreeSlot { max }),
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

/// Auto setup for one Server: runs [`setup_user`] against `host:port`, stores the new
/// credentials (secret + `spec.bmc`), and records `BMCSetup` True/False on the Server.
pub async fn auto_setup_server(
    store: &Store,
    server_name: &str,
    host: &str,
    port: u16,
    admin: &Credentials,
    timeouts: IpmiTimeouts,
) -> Result<Credentials, SetupError> {
    let endpoint = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let now = rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    );
    match setup_user(&endpoint, admin, timeouts).await {
        Ok(creds) => {
            let spec = server::Bmc {
                endpoint: host.to_string(),
                port: Some(u32::from(port)),
                ..Default::default()
            };
            store.set_server_bmc(server_name, spec, &creds.username, &creds.password)?;
            set_condition_on(store, server_name, CONDITION_SETUP, Ok(()), &now);
            tracing::info!(server = server_name, endpoint = %endpoint, user = SETUP_USER, "BMC user set up");
            Ok(creds)
        }
        Err(e) => {
            let message = crate::error_chain(&e);
            tracing::warn!(server = server_name, endpoint = %endpoint, error = %message, "BMC setup failed");
            set_condition_on(
                store,
                server_name,
                CONDITION_SETUP,
                Err(("SetupFailed", message)),
                &now,
            );
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
