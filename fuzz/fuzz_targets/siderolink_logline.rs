//! Any bytes as one SideroLink log connection (TCP 4001) into the streaming Talos log-line
//! decoder: no panic, the decoder's buffer stays within its line bound, and reading the
//! stream whole, in two pieces or byte by byte decodes the same lines (see
//! `appliance/src/protocol/siderolink/properties.rs`). Byte 0 picks the line bound.
//! Seeds: `cargo +nightly fuzz run siderolink_logline corpus/siderolink_logline seeds/siderolink_logline`.
#![no_main]

use appliance_fuzz::siderolink::properties;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    properties::check_logline(data);
});
