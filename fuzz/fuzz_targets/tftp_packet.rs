//! Any datagram: decode / encode / decode round trip, listener decision, path safety; and
//! the same bytes as a script of events driving a read transfer, with its invariants
//! checked after every step (see `appliance/src/protocol/tftp/properties.rs`).
//! Seeds (real iPXE/curl requests): `cargo +nightly fuzz run tftp_packet corpus/tftp_packet seeds/tftp_packet`.
#![no_main]

use appliance_fuzz::tftp::properties;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    properties::check_packet(data);
    let _ = properties::check_transfer(data);
});
