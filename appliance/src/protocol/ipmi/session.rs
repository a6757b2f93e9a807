//! The RMCP+ session as a pure state machine: the open-session / RAKP 1-4 handshake that
//! authenticates both sides and derives the session keys, then request/response framing
//! with session sequence numbers, requester sequence numbers, integrity and encryption.
//!
//! No IO, clock or RNG: the console session id, the console random number and every AES IV
//! are arguments. The caller (`bmc::ipmi`) owns the socket, the timers and retransmission.

use super::wire::{
    self, CipherSuite, DecodeError, Rakp1, Rakp3, SessionKeys, V2Packet, payload, rakp_status_text,
};

/// Privilege levels (IPMI 2.0 table 6-?): we always ask for administrator.
pub const PRIV_ADMIN: u8 = 0x04;

/// What the console needs to log in. The password is at most 20 bytes (IPMI 2.0 keys).
#[derive(Clone, PartialEq, Eq)]
pub struct LoginParams {
    pub username: Vec<u8>,
    pub password: Vec<u8>,
    pub suite: CipherSuite,
    /// Requested maximum privilege (4 = administrator).
    pub privilege: u8,
}

impl std::fmt::Debug for LoginParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginParams")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"<redacted>")
            .field("suite", &self.suite)
            .field("privilege", &self.privilege)
            .finish()
    }
}

/// Why a handshake or a session exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("reply could not be decoded")]
    Decode(#[from] DecodeError),
    #[error("user name is {0} bytes; IPMI allows at most 16")]
    UsernameTooLong(usize),
    #[error("password is {0} bytes; IPMI allows at most 20")]
    PasswordTooLong(usize),
    #[error("BMC refused the {step}: {text} (status {status:#04x})")]
    Refused {
        step: &'static str,
        status: u8,
        text: &'static str,
    },
    #[error(
        "BMC negotiated other algorithms than cipher suite {suite} (auth {auth:#04x}, integrity {integrity:#04x}, confidentiality {conf:#04x})"
    )]
    Negotiation {
        suite: CipherSuite,
        auth: u8,
        integrity: u8,
        conf: u8,
    },
    #[error(
        "RAKP 2 authcode does not match: wrong password for this user (or the BMC is not who it claims)"
    )]
    WrongPassword,
    #[error("RAKP 4 integrity check value does not match: the BMC did not prove the session key")]
    BadRakp4,
    #[error("reply belongs to another exchange ({0})")]
    Stale(&'static str),
}

/// Where the handshake is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    AwaitOpenSession,
    AwaitRakp2 {
        bmc_sid: u32,
    },
    AwaitRakp4 {
        bmc_sid: u32,
        bmc_random: [u8; 16],
        bmc_guid: [u8; 16],
    },
}

/// The RAKP handshake. Feed each reply to the matching `on_*` method; each returns the next
/// packet to send, and the last one returns the established [`Session`].
#[derive(Debug, Clone)]
pub struct Handshake {
    params: LoginParams,
    console_sid: u32,
    console_random: [u8; 16],
    tag: u8,
    step: Step,
}

impl Handshake {
    /// Starts a handshake. `console_sid` must be non-zero; `console_random` must be fresh
    /// randomness.
    pub fn new(
        params: LoginParams,
        console_sid: u32,
        console_random: [u8; 16],
    ) -> Result<Handshake, SessionError> {
        if params.username.len() > 16 {
            return Err(SessionError::UsernameTooLong(params.username.len()));
        }
        if params.password.len() > 20 {
            return Err(SessionError::PasswordTooLong(params.password.len()));
        }
        Ok(Handshake {
            params,
            console_sid: console_sid.max(1),
            console_random,
            tag: 0,
            step: Step::AwaitOpenSession,
        })
    }

    pub fn console_sid(&self) -> u32 {
        self.console_sid
    }

    /// The first packet: Open Session Request.
    pub fn open_session_request(&self) -> Vec<u8> {
        let body = wire::encode_open_session_request(
            self.tag,
            self.params.privilege,
            self.console_sid,
            self.params.suite,
        );
        wire::encode_v2(payload::OPEN_SESSION_REQUEST, 0, 0, &body, None)
    }

    /// The requested-role byte of RAKP 1: privilege plus "name-only lookup" (bit 4), as
    /// ipmitool sends it.
    fn role(&self) -> u8 {
        0x10 | (self.params.privilege & 0x0F)
    }

    fn expect(packet: &V2Packet, payload_type: u8) -> Result<(), SessionError> {
        if packet.payload_type != payload_type {
            return Err(SessionError::Decode(DecodeError::PayloadType {
                got: packet.payload_type,
                expected: payload_type,
            }));
        }
        Ok(())
    }

    /// Open Session Response in, RAKP 1 out.
    pub fn on_open_session_response(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SessionError> {
        if self.step != Step::AwaitOpenSession {
            return Err(SessionError::Stale("open session response out of order"));
        }
        let packet = wire::decode_v2(bytes, None)?;
        Self::expect(&packet, payload::OPEN_SESSION_RESPONSE)?;
        let r = wire::decode_open_session_response(&packet.payload)?;
        if r.tag != self.tag {
            return Err(SessionError::Stale("message tag"));
        }
        if r.status != 0 {
            return Err(SessionError::Refused {
                step: "open session request",
                status: r.status,
                text: rakp_status_text(r.status),
            });
        }
        if r.console_sid != self.console_sid {
            return Err(SessionError::Stale("console session id"));
        }
        let suite = self.params.suite;
        if r.auth_alg != suite.auth_alg()
            || r.integrity_alg != suite.integrity_alg()
            || r.conf_alg != suite.conf_alg()
        {
            return Err(SessionError::Negotiation {
                suite,
                auth: r.auth_alg,
                integrity: r.integrity_alg,
                conf: r.conf_alg,
            });
        }
        self.step = Step::AwaitRakp2 { bmc_sid: r.bmc_sid };
        let body = wire::encode_rakp1(&Rakp1 {
            tag: self.tag,
            bmc_sid: r.bmc_sid,
            console_random: self.console_random,
            role: self.role(),
            username: self.params.username.clone(),
        });
        Ok(wire::encode_v2(payload::RAKP1, 0, 0, &body, None))
    }

    /// RAKP 2 in (verifies the BMC knows the password), RAKP 3 out.
    pub fn on_rakp2(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SessionError> {
        let Step::AwaitRakp2 { bmc_sid } = self.step else {
            return Err(SessionError::Stale("RAKP 2 out of order"));
        };
        let packet = wire::decode_v2(bytes, None)?;
        Self::expect(&packet, payload::RAKP2)?;
        let m = wire::decode_rakp2(&packet.payload)?;
        if m.tag != self.tag {
            return Err(SessionError::Stale("message tag"));
        }
        if m.status != 0 {
            return Err(SessionError::Refused {
                step: "RAKP 1 (login)",
                status: m.status,
                text: rakp_status_text(m.status),
            });
        }
        if m.console_sid != self.console_sid {
            return Err(SessionError::Stale("console session id"));
        }
        let suite = self.params.suite;
        let ulen = [self.params.username.len() as u8];
        let expected = suite.hmac(
            &self.params.password,
            &[
                &self.console_sid.to_le_bytes(),
                &bmc_sid.to_le_bytes(),
                &self.console_random,
                &m.bmc_random,
                &m.bmc_guid,
                &[self.role()],
                &ulen,
                &self.params.username,
            ],
        );
        if m.auth_code != expected {
            return Err(SessionError::WrongPassword);
        }
        let code = suite.hmac(
            &self.params.password,
            &[
                &m.bmc_random,
                &self.console_sid.to_le_bytes(),
                &[self.role()],
                &ulen,
                &self.params.username,
            ],
        );
        self.step = Step::AwaitRakp4 {
            bmc_sid,
            bmc_random: m.bmc_random,
            bmc_guid: m.bmc_guid,
        };
        let body = wire::encode_rakp3(&Rakp3 {
            tag: self.tag,
            status: 0,
            bmc_sid,
            auth_code: code,
        });
        Ok(wire::encode_v2(payload::RAKP3, 0, 0, &body, None))
    }

    /// RAKP 4 in (verifies the BMC derived the same session key): the session is up.
    pub fn on_rakp4(&self, bytes: &[u8]) -> Result<Session, SessionError> {
        let Step::AwaitRakp4 {
            bmc_sid,
            bmc_random,
            bmc_guid,
        } = self.step
        else {
            return Err(SessionError::Stale("RAKP 4 out of order"));
        };
        let packet = wire::decode_v2(bytes, None)?;
        Self::expect(&packet, payload::RAKP4)?;
        let m = wire::decode_rakp4(&packet.payload)?;
        if m.tag != self.tag {
            return Err(SessionError::Stale("message tag"));
        }
        if m.status != 0 {
            return Err(SessionError::Refused {
                step: "RAKP 3",
                status: m.status,
                text: rakp_status_text(m.status),
            });
        }
        if m.console_sid != self.console_sid {
            return Err(SessionError::Stale("console session id"));
        }
        let suite = self.params.suite;
        let sik = session_integrity_key(
            suite,
            &self.params.password,
            &self.console_random,
            &bmc_random,
            self.role(),
            &self.params.username,
        );
        let mut icv = suite.hmac(
            &sik,
            &[&self.console_random, &bmc_sid.to_le_bytes(), &bmc_guid],
        );
        icv.truncate(suite.icv_len());
        if m.icv != icv {
            return Err(SessionError::BadRakp4);
        }
        Ok(Session {
            keys: SessionKeys::derive(suite, &sik),
            bmc_sid,
            console_sid: self.console_sid,
            seq_out: 0,
            rq_seq: 0,
        })
    }
}

/// SIK = HMAC_Kuid(Rm | Rc | ROLEm | ULENGTHm | UNAMEm) (no BMC key Kg: one-key login).
pub fn session_integrity_key(
    suite: CipherSuite,
    password: &[u8],
    console_random: &[u8; 16],
    bmc_random: &[u8; 16],
    role: u8,
    username: &[u8],
) -> Vec<u8> {
    suite.hmac(
        password,
        &[
            console_random,
            bmc_random,
            &[role],
            &[username.len() as u8],
            username,
        ],
    )
}

/// One request in flight: what its reply must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
}

/// A decoded reply to a [`Pending`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub completion: u8,
    pub data: Vec<u8>,
}

/// An established, authenticated and encrypted session.
#[derive(Debug, Clone)]
pub struct Session {
    keys: SessionKeys,
    bmc_sid: u32,
    console_sid: u32,
    seq_out: u32,
    rq_seq: u8,
}

impl Session {
    /// A session with given keys and ids, for fuzzing the reply path without a handshake.
    #[doc(hidden)]
    pub fn for_fuzzing(keys: SessionKeys, bmc_sid: u32, console_sid: u32) -> Session {
        Session {
            keys,
            bmc_sid,
            console_sid,
            seq_out: 0,
            rq_seq: 0,
        }
    }

    pub fn bmc_sid(&self) -> u32 {
        self.bmc_sid
    }

    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// Builds the packet for one request. Retransmit the same bytes on timeout: the
    /// sequence numbers stay those of this request.
    pub fn request(&mut self, netfn: u8, cmd: u8, data: &[u8], iv: [u8; 16]) -> (Vec<u8>, Pending) {
        // Session sequence numbers start at 1 and skip 0 on wrap.
        self.seq_out = self.seq_out.wrapping_add(1).max(1);
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let msg = wire::encode_request(netfn, cmd, self.rq_seq, data);
        let packet = wire::encode_v2(
            payload::IPMI,
            self.bmc_sid,
            self.seq_out,
            &msg,
            Some((&self.keys, iv)),
        );
        (
            packet,
            Pending {
                netfn,
                cmd,
                rq_seq: self.rq_seq,
            },
        )
    }

    /// Checks and decodes a reply to `pending`. `Stale` means "not for this request: keep
    /// waiting"; every other error means the bytes were bad.
    pub fn on_reply(&self, bytes: &[u8], pending: &Pending) -> Result<Reply, SessionError> {
        let packet = wire::decode_v2(bytes, Some(&self.keys))?;
        if packet.payload_type != payload::IPMI {
            return Err(SessionError::Decode(DecodeError::PayloadType {
                got: packet.payload_type,
                expected: payload::IPMI,
            }));
        }
        if packet.session_id != self.console_sid {
            return Err(SessionError::Decode(DecodeError::SessionId {
                got: packet.session_id,
                expected: self.console_sid,
            }));
        }
        let r = wire::decode_response(&packet.payload)?;
        if r.netfn != pending.netfn | 1 || r.cmd != pending.cmd || r.rq_seq != pending.rq_seq {
            return Err(SessionError::Stale("reply to another request"));
        }
        Ok(Reply {
            completion: r.completion,
            data: r.data,
        })
    }
}
