//! Any bytes as the query string of `/ipxe` into `IpxeQuery::parse`: must not panic, the UUID
//! is normalised, and what was read encodes to a query that reads back the same
//! (`appliance/src/protocol/ipxe/query.rs`). Seeds: queries real iPXE sent in the QEMU tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::ipxe_query::check_query(data);
});
