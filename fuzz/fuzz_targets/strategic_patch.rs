//! Any bytes as a strategic patch over a fixed machine config: must not panic, and a patch
//! that applies must apply to its own result too (no state that breaks a second merge).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::strategic::check_apply(data);
});
