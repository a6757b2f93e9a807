//! Real PXE boots against the real appliance in a lab namespace.

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::{Lab, Needs, require_lab};

#[test]
fn appliance_serves_in_the_lab() {
    require_lab!(Needs::Bios);
    let mut lab = Lab::new().expect("lab");
    lab.start_appliance(&ApplianceConfig::dhcp_mode("off"))
        .expect("appliance starts");
    let (code, body) = lab.http_get("/healthz").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"), "{}", lab.report());
    let status = lab.appliance().ctl(&["status"]).expect("ctl status");
    assert!(status.to_lowercase().contains("version"), "{status}");
}
