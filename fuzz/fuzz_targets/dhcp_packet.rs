//! Any bytes as a sequence of DHCP datagrams into the DHCP core, in server and in proxy mode:
//! must not panic, every reply must decode again, a proxy reply never carries an address,
//! and an ACKed address is held in the lease table afterwards. ("Never twice" is the
//! proptest in `protocol/dhcp/tests.rs`.)
//!
//! Input layout: chunks separated by the 4 bytes `0xde 0xad 0xbe 0xef`; the first byte of a
//! chunk picks the port (bit 0) and advances the clock (bits 1..), the rest is the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::dhcp::properties::check_datagrams(data);
});
