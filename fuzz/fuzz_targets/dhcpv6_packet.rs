//! Any bytes as a sequence of DHCPv6 messages into the DHCPv6 core: must not panic, every
//! reply must parse again as TLV options, and no IA (client DUID + IAID) holds two bound
//! addresses at once.
//! (`protocol/dhcpv6/tests.rs::fuzz_smoke_never_panics` runs the same property in
//! `cargo test`.)
//!
//! Input layout: chunks separated by the 4 bytes `0xde 0xad 0xbe 0xef`; the first byte of a
//! chunk advances the clock, the rest is the message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::dhcpv6::properties::check_messages(data);
});
