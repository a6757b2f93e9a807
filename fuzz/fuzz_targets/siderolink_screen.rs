//! Any bytes as a datagram on the SideroLink WireGuard port, through the endpoint's
//! screening before boringtun's `Tunn` (byte 0: limiter at rest or under load, bytes as
//! they are or grafted onto a valid initiation): no panic, cookies only for handshakes
//! with a valid MAC1 under load and addressed to their sender, peers matched only by a
//! valid initiation's key or a message's receiver index (see
//! `appliance/src/siderolink/screen.rs`). The same entry point runs bounded in
//! `cargo test` (`siderolink::screen::tests::fuzz_smoke_screening_holds_its_properties`).
//! `cargo +nightly fuzz run siderolink_screen`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::siderolink_screen::check_screen(data);
});
