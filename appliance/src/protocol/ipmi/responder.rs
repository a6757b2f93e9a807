//! A BMC-side RMCP+ responder, pure like the rest of the core (randomness is passed in):
//! used by tests to drive the console-side state machine without a socket, and by the
//! cipher-suite-17 test in `bmc::ipmi` where `ipmitool -C 17` (an independent
//! implementation) logs into it over loopback, because `ipmi_sim` 2.0.33 has no SHA-256.
//!
//! It keeps one user table, power state and boot flags; enough for the chassis and session
//! commands the appliance sends. Test-only.

use super::session::session_integrity_key;
use super::wire::{self, CipherSuite, OpenSessionResponse, Rakp2, Rakp4, SessionKeys, payload};

#[derive(Debug, Clone)]
struct BmcSession {
    bmc_sid: u32,
    console_sid: u32,
    suite: CipherSuite,
    console_random: [u8; 16],
    bmc_random: [u8; 16],
    role: u8,
    username: Vec<u8>,
    keys: Option<SessionKeys>,
}

/// The simulated BMC.
#[derive(Debug, Clone)]
pub struct Responder {
    pub username: Vec<u8>,
    pub password: Vec<u8>,
    pub guid: [u8; 16],
    pub power_on: bool,
    /// Raw boot flags parameter 5 (5 bytes) as last set.
    pub boot_flags: [u8; 5],
    /// Chassis control codes received, in order.
    pub controls: Vec<u8>,
    sessions: Vec<BmcSession>,
    next_sid: u32,
}

impl Responder {
    pub fn new(username: &[u8], password: &[u8]) -> Responder {
        Responder {
            username: username.to_vec(),
            password: password.to_vec(),
            guid: *b"appliance-bmc-01",
            power_on: false,
            boot_flags: [0; 5],
            controls: Vec::new(),
            sessions: Vec::new(),
            next_sid: 0x0100_0000,
        }
    }

    /// Handles one datagram; returns the reply, if any. `random` is used as the BMC random
    /// number or as the AES IV, whichever the reply needs.
    pub fn handle(&mut self, bytes: &[u8], random: [u8; 16]) -> Option<Vec<u8>> {
        if bytes.len() > 4 && bytes[4] == 0x00 {
            return self.handle_v15(bytes);
        }
        if bytes.len() < 16 {
            return None;
        }
        let pt = bytes[5] & 0x3F;
        match pt {
            payload::OPEN_SESSION_REQUEST => self.open_session(bytes),
            payload::RAKP1 => self.rakp1(bytes, random),
            payload::RAKP3 => self.rakp3(bytes),
            payload::IPMI => self.ipmi(bytes, random),
            _ => None,
        }
    }

    fn handle_v15(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let msg = wire::decode_v15_unauthenticated(bytes).ok()?;
        let req = wire::decode_request(msg).ok()?;
        if req.netfn != 0x06 || req.cmd != 0x38 {
            return None;
        }
        // channel 1, v2 extended caps, no v1.5 auth types, IPMI 2.0 supported
        let data = [0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0];
        let resp = wire::encode_response(req.netfn, req.cmd, req.rq_seq, 0, &data);
        Some(wire::encode_v15_unauthenticated(&resp))
    }

    fn open_session(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let p = wire::decode_v2(bytes, None).ok()?;
        let r = wire::decode_open_session_request(&p.payload).ok()?;
        let suite = [CipherSuite::Suite3, CipherSuite::Suite17]
            .into_iter()
            .find(|s| {
                s.auth_alg() == r.auth_alg
                    && s.integrity_alg() == r.integrity_alg
                    && s.conf_alg() == r.conf_alg
            });
        let mut resp = OpenSessionResponse {
            tag: r.tag,
            status: 0,
            max_priv: 4,
            console_sid: r.console_sid,
            bmc_sid: 0,
            auth_alg: r.auth_alg,
            integrity_alg: r.integrity_alg,
            conf_alg: r.conf_alg,
        };
        match suite {
            None => resp.status = 0x11,
            Some(suite) => {
                self.next_sid += 1;
                resp.bmc_sid = self.next_sid;
                self.sessions.push(BmcSession {
                    bmc_sid: self.next_sid,
                    console_sid: r.console_sid,
                    suite,
                    console_random: [0; 16],
                    bmc_random: [0; 16],
                    role: 0,
                    username: Vec::new(),
                    keys: None,
                });
            }
        }
        let body = wire::encode_open_session_response(&resp);
        Some(wire::encode_v2(
            payload::OPEN_SESSION_RESPONSE,
            0,
            0,
            &body,
            None,
        ))
    }

    fn rakp1(&mut self, bytes: &[u8], random: [u8; 16]) -> Option<Vec<u8>> {
        let p = wire::decode_v2(bytes, None).ok()?;
        let m = wire::decode_rakp1(&p.payload).ok()?;
        let guid = self.guid;
        let known_user = m.username == self.username;
        let password = self.password.clone();
        let s = self.sessions.iter_mut().find(|s| s.bmc_sid == m.bmc_sid)?;
        s.console_random = m.console_random;
        s.bmc_random = random;
        s.role = m.role;
        s.username = m.username.clone();
        let reply = if known_user {
            let ulen = [m.username.len() as u8];
            let code = s.suite.hmac(
                &password,
                &[
                    &s.console_sid.to_le_bytes(),
                    &s.bmc_sid.to_le_bytes(),
                    &m.console_random,
                    &random,
                    &guid,
                    &[m.role],
                    &ulen,
                    &m.username,
                ],
            );
            Rakp2 {
                tag: m.tag,
                status: 0,
                console_sid: s.console_sid,
                bmc_random: random,
                bmc_guid: guid,
                auth_code: code,
            }
        } else {
            Rakp2 {
                tag: m.tag,
                status: 0x0D,
                console_sid: s.console_sid,
                bmc_random: [0; 16],
                bmc_guid: [0; 16],
                auth_code: Vec::new(),
            }
        };
        let mut body = wire::encode_rakp2(&reply);
        if reply.status != 0 {
            body.truncate(8);
        }
        Some(wire::encode_v2(payload::RAKP2, 0, 0, &body, None))
    }

    fn rakp3(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let p = wire::decode_v2(bytes, None).ok()?;
        let m = wire::decode_rakp3(&p.payload).ok()?;
        let guid = self.guid;
        let password = self.password.clone();
        let s = self.sessions.iter_mut().find(|s| s.bmc_sid == m.bmc_sid)?;
        let ulen = [s.username.len() as u8];
        let expected = s.suite.hmac(
            &password,
            &[
                &s.bmc_random,
                &s.console_sid.to_le_bytes(),
                &[s.role],
                &ulen,
                &s.username,
            ],
        );
        let status = if expected == m.auth_code { 0 } else { 0x0F };
        let sik = session_integrity_key(
            s.suite,
            &password,
            &s.console_random,
            &s.bmc_random,
            s.role,
            &s.username,
        );
        let mut icv = s
            .suite
            .hmac(&sik, &[&s.console_random, &s.bmc_sid.to_le_bytes(), &guid]);
        icv.truncate(s.suite.icv_len());
        if status == 0 {
            s.keys = Some(SessionKeys::derive(s.suite, &sik));
        }
        let body = wire::encode_rakp4(&Rakp4 {
            tag: m.tag,
            status,
            console_sid: s.console_sid,
            icv: if status == 0 { icv } else { Vec::new() },
        });
        Some(wire::encode_v2(payload::RAKP4, 0, 0, &body, None))
    }

    fn ipmi(&mut self, bytes: &[u8], iv: [u8; 16]) -> Option<Vec<u8>> {
        let sid = u32::from_le_bytes(bytes[6..10].try_into().ok()?);
        let idx = self.sessions.iter().position(|s| s.bmc_sid == sid)?;
        let keys = self.sessions[idx].keys.clone()?;
        let console_sid = self.sessions[idx].console_sid;
        let p = wire::decode_v2(bytes, Some(&keys)).ok()?;
        let req = wire::decode_request(&p.payload).ok()?;
        let (cc, data): (u8, Vec<u8>) = match (req.netfn, req.cmd) {
            (0x06, 0x3B) => (0, vec![req.data.first().copied().unwrap_or(4)]),
            (0x06, 0x3C) => {
                self.sessions.remove(idx);
                (0, vec![])
            }
            (0x00, 0x01) => (0, vec![u8::from(self.power_on), 0, 0]),
            (0x00, 0x02) => {
                let code = req.data.first().copied().unwrap_or(0xFF);
                self.controls.push(code);
                match code {
                    0 | 5 => self.power_on = false,
                    1..=3 => self.power_on = true,
                    _ => {}
                }
                (0, vec![])
            }
            (0x00, 0x08) => {
                if req.data.first() == Some(&0x05) && req.data.len() >= 6 {
                    self.boot_flags.copy_from_slice(&req.data[1..6]);
                }
                (0, vec![])
            }
            (0x00, 0x09) => {
                let mut d = vec![0x01, 0x05];
                d.extend_from_slice(&self.boot_flags);
                (0, d)
            }
            _ => (0xC1, vec![]),
        };
        let resp = wire::encode_response(req.netfn, req.cmd, req.rq_seq, cc, &data);
        Some(wire::encode_v2(
            payload::IPMI,
            console_sid,
            p.seq,
            &resp,
            Some((&keys, iv)),
        ))
    }
}
