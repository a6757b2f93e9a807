//! Any bytes as an Ethernet frame captured by the rogue-DHCP probe's packet socket into
//! `Probe::classify`: must not panic, and an offer is `Own` exactly when its source or server
//! identifier is the box's (`appliance/src/protocol/dhcp/properties.rs`).
//! Seeds: frames of real offers (dnsmasq, the box) in `seeds/dhcp_probe`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::dhcp::properties::check_probe_frame(data);
});
