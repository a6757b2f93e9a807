//! Any bytes as a strategic patch over a fixed machine config: must not panic, and a patch
//! that applies must apply to its own result too (no state that breaks a second merge).
#![no_main]

use appliance_fuzz::strategic::apply;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = vec![
        json!({"version": "v1alpha1", "machine": {"network": {"interfaces": [
            {"interface": "eth0", "vlans": [{"vlanId": 10}]}]}, "certSANs": ["a"]},
            "cluster": {"network": {"podSubnets": ["10.244.0.0/16"]}}}),
        json!({"apiVersion": "v1alpha1", "kind": "SideroLinkConfig", "apiUrl": "grpc://x"}),
    ];
    if let Ok(once) = apply(&config, text) {
        let _ = apply(&once, text);
    }
});
