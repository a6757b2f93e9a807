//! Any bytes as a Talos event payload under one of the type URLs the SideroLink event sink
//! reads (byte 0 picks it): decoding never panics, unread types always decode, a decoded
//! event re-encodes to the same event, and its ServerBinding mapping keeps only addresses
//! the event named, never the node's overlay address or a filtered one (see
//! `appliance/src/siderolink/payload.rs`). The same entry point runs bounded in
//! `cargo test` (`siderolink::payload::tests::fuzz_smoke_event_payloads_hold_their_properties`).
//! `cargo +nightly fuzz run siderolink_event`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::siderolink_payload::check_payload(data);
});
