//! Any datagram into every RMCP+/IPMI decoder and the session state machine (handshake
//! steps and the in-session reply path with known keys): must return, never panic.
//! `cargo +nightly fuzz run ipmi_wire`. The same entry point runs bounded in `cargo test`
//! (`protocol::ipmi::tests::fuzz_smoke_decoders_never_panic`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::ipmi::fuzz_decode(data);
});
