//! IPMI over LAN (RMCP+, cipher suite 3 or 17): thin tokio UDP glue around the sans-IO
//! core in `protocol::ipmi`. Each operation opens a session, raises it to administrator,
//! sends its commands and closes the session, so no state survives between calls and a
//! rebooted BMC costs nothing.
//!
//! Every datagram exchange waits at most `attempt_timeout`, is retransmitted up to
//! `retries` times, and ignores datagrams that fail to decode or belong to another request
//! (remembering the last reason for the timeout error). Randomness (session id, RAKP
//! random, AES IVs) comes from the OS here, not from the core.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{
    BmcError, BmcFuture, BootOverride, BootTarget, Credentials, Firmware, PowerAction, PowerState,
};
use crate::protocol::ipmi::command::{self, BootDevice, BootFlags, ChassisAction, Command};
use crate::protocol::ipmi::session::{
    Handshake, LoginParams, PRIV_ADMIN, Pending, Reply, Session, SessionError,
};
use crate::protocol::ipmi::wire::{self, CipherSuite};

/// How patient to be with one BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpmiTimeouts {
    /// Wait for one reply before retransmitting.
    pub attempt: Duration,
    /// Retransmissions after the first send.
    pub retries: u32,
}

impl Default for IpmiTimeouts {
    fn default() -> Self {
        IpmiTimeouts {
            attempt: Duration::from_millis(1000),
            retries: 2,
        }
    }
}

/// A BMC reached over IPMI/RMCP+.
pub struct IpmiBmc {
    endpoint: String,
    creds: Credentials,
    /// The suite in use (id); with `auto`, 17 until the BMC refuses it, then 3.
    suite: AtomicU8,
    auto: bool,
    timeouts: IpmiTimeouts,
}

impl std::fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiBmc")
            .field("endpoint", &self.endpoint)
            .field("user", &self.creds.username)
            .field("suite", &self.suite())
            .field("auto", &self.auto)
            .finish()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}

/// What to do with one received datagram.
enum Verdict<T> {
    Accept(T),
    /// Not for us or undecodable: keep waiting; the reason is kept for the timeout error.
    Drop(String),
    Fail(BmcError),
}

impl IpmiBmc {
    /// `endpoint` is `host:port` (port usually 623).
    pub fn new(
        endpoint: impl Into<String>,
        creds: Credentials,
        suite: CipherSuite,
        timeouts: IpmiTimeouts,
    ) -> IpmiBmc {
        IpmiBmc {
            endpoint: endpoint.into(),
            creds,
            suite: AtomicU8::new(suite.id()),
            auto: false,
            timeouts,
        }
    }

    /// Like [`IpmiBmc::new`], but tries cipher suite 17 first and falls back to 3 (and
    /// stays there) when the BMC refuses 17 at session open.
    pub fn new_auto(
        endpoint: impl Into<String>,
        creds: Credentials,
        timeouts: IpmiTimeouts,
    ) -> IpmiBmc {
        let mut b = IpmiBmc::new(endpoint, creds, CipherSuite::Suite17, timeouts);
        b.auto = true;
        b
    }

    /// The cipher suite in use.
    pub fn suite(&self) -> CipherSuite {
        CipherSuite::from_id(self.suite.load(Ordering::Relaxed)).unwrap_or(CipherSuite::Suite3)
    }

    /// Opens an administrator session, falling back from suite 17 to 3 in auto mode.
    pub async fn open(&self) -> Result<IpmiConn<'_>, BmcError> {
        match self.open_with(self.suite()).await {
            Err(BmcError::Auth { message, .. })
                if self.auto
                    && self.suite() == CipherSuite::Suite17
                    && message.contains("open session request") =>
            {
                tracing::info!(endpoint = %self.endpoint, "BMC refused cipher suite 17; using 3");
                self.suite
                    .store(CipherSuite::Suite3.id(), Ordering::Relaxed);
                self.open_with(CipherSuite::Suite3).await
            }
            other => other,
        }
    }

    fn err_auth(&self, e: SessionError) -> BmcError {
        match e {
            SessionError::WrongPassword
            | SessionError::Refused { .. }
            | SessionError::UsernameTooLong(_)
            | SessionError::PasswordTooLong(_) => BmcError::Auth {
                endpoint: self.endpoint.clone(),
                message: crate::error_chain(&e),
            },
            _ => BmcError::Protocol {
                endpoint: self.endpoint.clone(),
                message: crate::error_chain(&e),
            },
        }
    }

    async fn socket(&self) -> Result<UdpSocket, BmcError> {
        let unreachable = |source| BmcError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        };
        let addr = tokio::net::lookup_host(self.endpoint.as_str())
            .await
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| BmcError::Config {
                endpoint: self.endpoint.clone(),
                message: "host name resolves to no address".into(),
            })?;
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(bind).await.map_err(unreachable)?;
        sock.connect(addr).await.map_err(unreachable)?;
        Ok(sock)
    }

    /// Sends `packet` and waits for a datagram `judge` accepts, retransmitting on timeout.
    async fn exchange<T>(
        &self,
        sock: &UdpSocket,
        packet: &[u8],
        mut judge: impl FnMut(&[u8]) -> Verdict<T>,
    ) -> Result<T, BmcError> {
        let mut buf = vec![0u8; 2048];
        let mut last_drop = None;
        for _ in 0..=self.timeouts.retries {
            sock.send(packet)
                .await
                .map_err(|source| BmcError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
            let deadline = tokio::time::Instant::now() + self.timeouts.attempt;
            loop {
                let recv = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await;
                let n = match recv {
                    Err(_) => break,
                    Ok(Err(source)) => {
                        return Err(BmcError::Unreachable {
                            endpoint: self.endpoint.clone(),
                            source,
                        });
                    }
                    Ok(Ok(n)) => n,
                };
                match judge(&buf[..n]) {
                    Verdict::Accept(v) => return Ok(v),
                    Verdict::Fail(e) => return Err(e),
                    Verdict::Drop(reason) => {
                        tracing::debug!(endpoint = %self.endpoint, %reason, "dropped IPMI datagram");
                        last_drop = Some(reason);
                    }
                }
            }
        }
        Err(BmcError::Timeout {
            endpoint: self.endpoint.clone(),
            after: self.timeouts.attempt * (self.timeouts.retries + 1),
            last_drop,
        })
    }

    fn handshake_verdict<T>(&self, r: Result<T, SessionError>) -> Verdict<T> {
        match r {
            Ok(v) => Verdict::Accept(v),
            Err(e @ (SessionError::Decode(_) | SessionError::Stale(_))) => {
                Verdict::Drop(crate::error_chain(&e))
            }
            Err(e) => Verdict::Fail(self.err_auth(e)),
        }
    }

    async fn open_with(&self, suite: CipherSuite) -> Result<IpmiConn<'_>, BmcError> {
        let sock = self.socket().await?;
        let params = LoginParams {
            username: self.creds.username.as_bytes().to_vec(),
            password: self.creds.password.as_bytes().to_vec(),
            suite,
            privilege: PRIV_ADMIN,
        };
        let console_sid = u32::from_le_bytes(random::<4>()) | 1;
        let mut hs = Handshake::new(params, console_sid, random()).map_err(|e| self.err_auth(e))?;
        let open = hs.open_session_request();
        let rakp1 = self
            .exchange(&sock, &open, |b| {
                let r = hs.on_open_session_response(b);
                self.handshake_verdict(r)
            })
            .await?;
        let rakp3 = self
            .exchange(&sock, &rakp1, |b| {
                let r = hs.on_rakp2(b);
                self.handshake_verdict(r)
            })
            .await?;
        let session = self
            .exchange(&sock, &rakp3, |b| self.handshake_verdict(hs.on_rakp4(b)))
            .await?;
        let mut conn = IpmiConn {
            bmc: self,
            sock,
            session,
        };
        conn.call(command::set_session_privilege(PRIV_ADMIN))
            .await?;
        Ok(conn)
    }

    /// Get Channel Authentication Capabilities outside a session: a cheap liveness and
    /// "speaks IPMI 2.0" probe that needs no credentials.
    pub async fn probe(&self) -> Result<command::ChannelAuthCaps, BmcError> {
        let sock = self.socket().await?;
        let c = command::get_channel_auth_caps(PRIV_ADMIN);
        let msg = wire::encode_request(c.netfn, c.cmd, 1, &c.data);
        let packet = wire::encode_v15_unauthenticated(&msg);
        let reply = self
            .exchange(
                &sock,
                &packet,
                |b| match wire::decode_v15_unauthenticated(b).and_then(wire::decode_response) {
                    Ok(r) if r.cmd == c.cmd => Verdict::Accept(r),
                    Ok(_) => Verdict::Drop("reply to another command".into()),
                    Err(e) => Verdict::Drop(e.to_string()),
                },
            )
            .await?;
        command::check(c.name, reply.completion).map_err(|e| self.refused(e))?;
        command::parse_channel_auth_caps(&reply.data).map_err(|e| self.refused(e))
    }

    fn refused(&self, e: command::CommandError) -> BmcError {
        BmcError::Refused {
            endpoint: self.endpoint.clone(),
            message: e.to_string(),
        }
    }

    /// Opens a session, runs `f`, closes the session (also when `f` failed).
    async fn with_session<T>(
        &self,
        f: impl AsyncFnOnce(&mut IpmiConn<'_>) -> Result<T, BmcError>,
    ) -> Result<T, BmcError> {
        let mut conn = self.open().await?;
        let r = f(&mut conn).await;
        conn.close().await;
        r
    }

    pub async fn chassis_power_state(&self) -> Result<PowerState, BmcError> {
        self.with_session(async |c| {
            let status = c
                .call_parse(command::chassis_status(), command::parse_chassis_status)
                .await?;
            Ok(if status.power_on {
                PowerState::On
            } else {
                PowerState::Off
            })
        })
        .await
    }

    pub async fn chassis_power(&self, action: PowerAction) -> Result<(), BmcError> {
        self.with_session(async |c| {
            let chassis = match action {
                PowerAction::On => ChassisAction::PowerUp,
                PowerAction::Off => ChassisAction::PowerDown,
                PowerAction::Reset => ChassisAction::HardReset,
                PowerAction::Soft => ChassisAction::SoftShutdown,
                PowerAction::Cycle => {
                    let status = c
                        .call_parse(command::chassis_status(), command::parse_chassis_status)
                        .await?;
                    if status.power_on {
                        ChassisAction::PowerCycle
                    } else {
                        ChassisAction::PowerUp
                    }
                }
            };
            c.call_ok(command::chassis_control(chassis)).await
        })
        .await
    }

    pub async fn chassis_set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let flags = BootFlags {
            valid: true,
            persistent: boot.persistent,
            uefi: boot.firmware == Firmware::Uefi,
            device: match boot.target {
                BootTarget::Pxe => BootDevice::Pxe,
                BootTarget::Disk => BootDevice::Disk,
            },
        };
        self.with_session(async |c| {
            for step in command::set_boot_flags(flags) {
                let name = step.command.name;
                let reply = c.call(step.command).await?;
                if reply.completion != 0 && !step.optional {
                    command::check(name, reply.completion).map_err(|e| self.refused(e))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Reads boot flags back (parameter 5).
    pub async fn chassis_boot_flags(&self) -> Result<BootFlags, BmcError> {
        self.with_session(async |c| {
            c.call_parse(command::get_boot_flags(), command::parse_boot_flags)
                .await
        })
        .await
    }
}

/// An open administrator session on one BMC.
pub struct IpmiConn<'a> {
    bmc: &'a IpmiBmc,
    sock: UdpSocket,
    session: Session,
}

impl IpmiConn<'_> {
    /// Sends one command and returns its reply (any completion code).
    pub async fn call(&mut self, c: Command) -> Result<Reply, BmcError> {
        let (packet, pending): (Vec<u8>, Pending) =
            self.session.request(c.netfn, c.cmd, &c.data, random());
        let session = &self.session;
        self.bmc
            .exchange(&self.sock, &packet, |b| {
                match session.on_reply(b, &pending) {
                    Ok(r) => Verdict::Accept(r),
                    Err(e) => Verdict::Drop(crate::error_chain(&e)),
                }
            })
            .await
    }

    /// Sends one command; a non-zero completion code is an error.
    pub async fn call_ok(&mut self, c: Command) -> Result<(), BmcError> {
        let name = c.name;
        let r = self.call(c).await?;
        command::check(name, r.completion).map_err(|e| self.bmc.refused(e))
    }

    /// Sends one command and parses its data.
    pub async fn call_parse<T>(
        &mut self,
        c: Command,
        parse: fn(&[u8]) -> Result<T, command::CommandError>,
    ) -> Result<T, BmcError> {
        let name = c.name;
        let r = self.call(c).await?;
        command::check(name, r.completion).map_err(|e| self.bmc.refused(e))?;
        parse(&r.data).map_err(|e| self.bmc.refused(e))
    }

    /// Closes the session; best effort, one short attempt.
    pub async fn close(mut self) {
        let c = command::close_session(self.session.bmc_sid());
        let (packet, _) = self.session.request(c.netfn, c.cmd, &c.data, random());
        let _ = self.sock.send(&packet).await;
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_millis(200), self.sock.recv(&mut buf)).await;
    }
}

impl super::Bmc for IpmiBmc {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn power_state(&self) -> BmcFuture<'_, PowerState> {
        Box::pin(self.chassis_power_state())
    }

    fn power(&self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(self.chassis_power(action))
    }

    fn set_boot(&self, boot: BootOverride) -> BmcFuture<'_, ()> {
        Box::pin(self.chassis_set_boot(boot))
    }
}

#[cfg(test)]
mod tests;
