//! Any bytes as the agent's CreateServer request (protobuf) into the box's reading of it:
//! must not panic; a report that reads has a canonical UUID and typed hardware that survives
//! the store's JSON round trip (`appliance/src/api/agent_report.rs`). Seeds: requests the
//! real agent sent from QEMU VMs (`seeds/agent_report`; two of them with the firmware part
//! the agent now reports added: `ovmf-secure-boot-enabled`, `seabios-firmware-bios`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::agent_report::check_report(data);
});
