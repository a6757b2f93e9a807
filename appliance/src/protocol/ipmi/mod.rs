//! IPMI over LAN, RMCP+ (IPMI 2.0 "lanplus") with cipher suites 3 and 17, as a sans-IO
//! core: `wire` (bytes), `session` (RAKP handshake and session framing as a pure state
//! machine), `command` (the chassis, boot-option, session and user commands we send).
//!
//! May touch: nothing outside itself (pure functions over bytes; crypto via hmac/sha1/sha2/
//! aes/cbc). Used by `bmc::ipmi`, which owns the UDP socket, timers and randomness.

pub mod command;
pub mod session;
pub mod wire;

#[cfg(test)]
pub mod responder;
#[cfg(test)]
mod tests;

/// Session keys used by [`fuzz_decode`] (suite 3, SIK = 20 × 0x42), so fuzz inputs built
/// from a valid packet under these keys reach past the integrity check.
pub fn fuzz_keys() -> wire::SessionKeys {
    wire::SessionKeys::derive(wire::CipherSuite::Suite3, &[0x42; 20])
}

/// Every decoder and state-machine entry point fed with one input; used by the cargo-fuzz
/// target (`fuzz/fuzz_targets/ipmi_wire.rs`) and the bounded fuzz smoke in `cargo test`.
/// The only property checked is "returns, never panics".
pub fn fuzz_decode(data: &[u8]) {
    let keys = fuzz_keys();
    let _ = wire::decode_v2(data, None);
    if let Ok(p) = wire::decode_v2(data, Some(&keys)) {
        let _ = wire::decode_response(&p.payload);
    }
    let _ = wire::decode_v15_unauthenticated(data);
    let _ = wire::decode_asf_pong(data);
    let _ = wire::decode_response(data);
    let _ = wire::decode_request(data);
    let _ = wire::decode_open_session_response(data);
    let _ = wire::decode_open_session_request(data);
    let _ = wire::decode_rakp1(data);
    let _ = wire::decode_rakp2(data);
    let _ = wire::decode_rakp3(data);
    let _ = wire::decode_rakp4(data);
    let _ = keys.decrypt(data);
    let _ = command::parse_channel_auth_caps(data);
    let _ = command::parse_chassis_status(data);
    let _ = command::parse_boot_flags(data);
    let _ = command::parse_user_access(data);
    let _ = command::parse_user_name(data);
    let _ = command::parse_lan_ip(data);
    let _ = command::parse_lan_port(data);
    for suite in [wire::CipherSuite::Suite3, wire::CipherSuite::Suite17] {
        let params = session::LoginParams {
            username: b"admin".to_vec(),
            password: b"password".to_vec(),
            suite,
            privilege: session::PRIV_ADMIN,
        };
        if let Ok(mut hs) = session::Handshake::new(params, 1, [0; 16]) {
            let _ = hs.on_open_session_response(data);
            let _ = hs.on_rakp2(data);
            let _ = hs.on_rakp4(data);
        }
    }
    let session = session::Session::for_fuzzing(keys, 0x0200_0001, 0xA0A0_0001);
    let pending = session::Pending {
        netfn: 0,
        cmd: 1,
        rq_seq: 1,
    };
    let _ = session.on_reply(data, &pending);
}
