//! Tests of the IPMI core: handshake and session against the pure BMC-side responder for
//! both cipher suites, wrong-password / unknown-user / tampering detection, message
//! framing, and a bounded fuzz smoke over every decoder (no panic on any input).

use super::command::{self, BootDevice, BootFlags, ChassisAction};
use super::responder::Responder;
use super::session::{Handshake, LoginParams, PRIV_ADMIN, Session, SessionError};
use super::wire::{self, CipherSuite, DecodeError, SessionKeys};

fn params(user: &str, pass: &str, suite: CipherSuite) -> LoginParams {
    LoginParams {
        username: user.as_bytes().to_vec(),
        password: pass.as_bytes().to_vec(),
        suite,
        privilege: PRIV_ADMIN,
    }
}

/// Deterministic "randomness" for the pure tests.
fn rnd(seed: u8) -> [u8; 16] {
    let mut r = [0u8; 16];
    for (i, b) in r.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7);
    }
    r
}

fn login(bmc: &mut Responder, p: LoginParams) -> Result<Session, SessionError> {
    let mut hs = Handshake::new(p, 0xA0A0_0001, rnd(1))?;
    let r = bmc.handle(&hs.open_session_request(), rnd(2)).unwrap();
    let rakp1 = hs.on_open_session_response(&r)?;
    let r = bmc.handle(&rakp1, rnd(3)).unwrap();
    let rakp3 = hs.on_rakp2(&r)?;
    let r = bmc.handle(&rakp3, rnd(4)).unwrap();
    hs.on_rakp4(&r)
}

fn call(
    bmc: &mut Responder,
    s: &mut Session,
    c: command::Command,
    seed: u8,
) -> super::session::Reply {
    let (pkt, pending) = s.request(c.netfn, c.cmd, &c.data, rnd(seed));
    let r = bmc.handle(&pkt, rnd(seed + 1)).expect("responder replies");
    s.on_reply(&r, &pending).expect("valid reply")
}

#[test]
fn both_suites_log_in_and_drive_the_chassis() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let mut bmc = Responder::new(b"admin", b"password");
        let mut s = login(&mut bmc, params("admin", "password", suite)).unwrap();
        assert_eq!(s.keys().suite, suite);
        let r = call(&mut bmc, &mut s, command::set_session_privilege(4), 10);
        assert_eq!(r.completion, 0);
        let r = call(&mut bmc, &mut s, command::chassis_status(), 12);
        assert!(!command::parse_chassis_status(&r.data).unwrap().power_on);
        call(
            &mut bmc,
            &mut s,
            command::chassis_control(ChassisAction::PowerUp),
            14,
        );
        let r = call(&mut bmc, &mut s, command::chassis_status(), 16);
        assert!(command::parse_chassis_status(&r.data).unwrap().power_on);
        let flags = BootFlags {
            valid: true,
            persistent: false,
            uefi: true,
            device: BootDevice::Pxe,
        };
        for step in command::set_boot_flags(flags) {
            call(&mut bmc, &mut s, step.command, 18);
        }
        assert_eq!(bmc.boot_flags, [0xA0, 0x04, 0, 0, 0], "suite {suite}");
        let r = call(&mut bmc, &mut s, command::get_boot_flags(), 20);
        assert_eq!(command::parse_boot_flags(&r.data).unwrap(), flags);
    }
}

#[test]
fn wrong_password_is_named() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let mut bmc = Responder::new(b"admin", b"password");
        let err = login(&mut bmc, params("admin", "nope", suite)).unwrap_err();
        assert_eq!(err, SessionError::WrongPassword);
        assert!(err.to_string().contains("wrong password"));
    }
}

#[test]
fn unknown_user_is_refused_with_status_text() {
    let mut bmc = Responder::new(b"admin", b"password");
    let err = login(&mut bmc, params("eve", "password", CipherSuite::Suite3)).unwrap_err();
    assert!(
        matches!(err, SessionError::Refused { status: 0x0D, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("unknown user"), "{err}");
}

#[test]
fn long_credentials_are_refused_before_sending() {
    let p = params("a-user-name-longer-than-16", "x", CipherSuite::Suite3);
    assert!(matches!(
        Handshake::new(p, 1, [0; 16]),
        Err(SessionError::UsernameTooLong(26))
    ));
    let p = params("u", "a-password-longer-than-20", CipherSuite::Suite3);
    assert!(matches!(
        Handshake::new(p, 1, [0; 16]),
        Err(SessionError::PasswordTooLong(25))
    ));
}

#[test]
fn tampered_or_foreign_replies_are_rejected() {
    let mut bmc = Responder::new(b"admin", b"password");
    let mut s = login(&mut bmc, params("admin", "password", CipherSuite::Suite17)).unwrap();
    let c = command::chassis_status();
    let (pkt, pending) = s.request(c.netfn, c.cmd, &c.data, rnd(5));
    let good = bmc.handle(&pkt, rnd(6)).unwrap();
    // Flip each byte after the RMCP header in turn: every variant must be refused.
    for i in 4..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(s.on_reply(&bad, &pending).is_err(), "byte {i} flipped");
    }
    // A reply to another request (different rq_seq) is stale, not accepted.
    let (_, other) = s.request(c.netfn, c.cmd, &c.data, rnd(7));
    assert!(matches!(
        s.on_reply(&good, &other),
        Err(SessionError::Stale(_))
    ));
    assert!(s.on_reply(&good, &pending).is_ok());
}

#[test]
fn encryption_round_trips_every_length() {
    let keys = SessionKeys::derive(CipherSuite::Suite3, &[7; 20]);
    for len in 0..40 {
        let plain: Vec<u8> = (0..len as u8).collect();
        let ct = keys.encrypt(&plain, [len as u8; 16]);
        assert_eq!(ct.len() % 16, 0);
        assert_eq!(keys.decrypt(&ct).unwrap(), plain, "len {len}");
    }
}

#[test]
fn request_message_has_valid_checksums() {
    let m = wire::encode_request(0x00, 0x02, 5, &[0x01]);
    assert_eq!(m, [0x20, 0x00, 0xE0, 0x81, 0x14, 0x02, 0x01, 0x68]);
    let d = wire::decode_request(&m).unwrap();
    assert_eq!((d.netfn, d.cmd, d.rq_seq, d.data), (0, 2, 5, vec![1]));
    let r = wire::encode_response(0x00, 0x02, 5, 0, &[]);
    let d = wire::decode_response(&r).unwrap();
    assert_eq!((d.netfn, d.cmd, d.rq_seq, d.completion), (1, 2, 5, 0));
    let mut bad = r.clone();
    bad[2] ^= 1;
    assert_eq!(wire::decode_response(&bad), Err(DecodeError::Checksum));
}

#[test]
fn boot_flag_bytes_match_the_spec() {
    let cases = [
        (BootDevice::Pxe, true, false, [0xA0, 0x04]),
        (BootDevice::Pxe, false, false, [0x80, 0x04]),
        (BootDevice::Disk, true, true, [0xE0, 0x08]),
        (BootDevice::Disk, false, true, [0xC0, 0x08]),
    ];
    for (device, uefi, persistent, expect) in cases {
        let steps = command::set_boot_flags(BootFlags {
            valid: true,
            persistent,
            uefi,
            device,
        });
        let flags = steps.iter().find(|s| !s.optional).unwrap();
        assert_eq!(flags.command.data[0], 0x05);
        assert_eq!(flags.command.data[1..3], expect, "{device:?} uefi={uefi}");
    }
}

#[test]
fn user_commands_encode_as_sidero_does() {
    let c = command::set_user_access(1, 3, 4);
    assert_eq!(c.data, [0x91, 3, 4, 0]);
    let c = command::set_user_name(3, b"sidero").unwrap();
    assert_eq!(c.data.len(), 17);
    assert_eq!(&c.data[1..7], b"sidero");
    let c = command::set_user_password(3, command::PasswordOp::SetPassword, &[b'a'; 20]).unwrap();
    assert_eq!(c.data[0], 0x83);
    assert_eq!(c.data.len(), 22);
    assert!(command::set_user_name(3, b"").is_err());
    assert!(command::set_user_password(3, command::PasswordOp::SetPassword, &[0; 21]).is_err());
}

/// Bounded fuzz smoke: random and mutated inputs into every decoder and state-machine entry
/// point; the only requirement is "no panic". The cargo-fuzz target in `fuzz/` runs the
/// same entry point unbounded.
#[test]
fn fuzz_smoke_decoders_never_panic() {
    let keys = super::fuzz_keys();
    let resp = wire::encode_response(0x00, 0x01, 1, 0, &[1, 0, 0]);
    let good = wire::encode_v2(
        wire::payload::IPMI,
        0xA0A0_0001,
        1,
        &resp,
        Some((&keys, [3; 16])),
    );
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted = 0;
    for i in 0..20_000 {
        let input: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 96) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut m = good.clone();
            if i % 4 == 1 {
                let at = (next() as usize) % m.len();
                m[at] = next() as u8;
                m.truncate((next() as usize) % (m.len() + 1));
            }
            m
        };
        super::fuzz_decode(&input);
        if input == good {
            accepted += 1;
        }
    }
    // The unmutated packet really goes through the whole reply path.
    let session = super::session::Session::for_fuzzing(keys, 0x0200_0001, 0xA0A0_0001);
    let pending = super::session::Pending {
        netfn: 0,
        cmd: 1,
        rq_seq: 1,
    };
    assert!(session.on_reply(&good, &pending).is_ok());
    assert!(accepted > 0);
}
