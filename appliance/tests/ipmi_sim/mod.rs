//! The BMC fixture for the integration tests: the crate's own `bmc::testsupport` (a real
//! OpenIPMI `ipmi_sim` on a free loopback UDP port, lanplus, administrator `admin`, whose
//! chassis-control script keeps power and boot device in files), included by path, with
//! the shorthands the BMC, wipe and auto-setup tests use.
#![allow(dead_code)]

#[path = "../../src/bmc/testsupport.rs"]
mod testsupport;

#[allow(unused_imports)] // each test binary uses a different part
pub use testsupport::{IpmiSim as Sim, have, ipmi_tools_present};

/// `ipmitool -I lanplus -C 3` as `admin`/`password` against 127.0.0.1:`port`: stdout+stderr.
pub fn ipmitool(port: u16, args: &[&str]) -> String {
    ipmitool_as(port, "admin", "password", args).1
}

/// `ipmitool -I lanplus -C 3` as `user`/`pass`: (success, stdout+stderr).
pub fn ipmitool_as(port: u16, user: &str, pass: &str, args: &[&str]) -> (bool, String) {
    testsupport::ipmitool_at(&format!("127.0.0.1:{port}"), user, pass, 3, args)
}

/// Starts ipmi_sim (administrator `admin`/`password`) and waits until it answers.
pub fn start_sim() -> Sim {
    Sim::start()
}

/// Starts ipmi_sim with administrator `admin`/`admin_pass` and waits until it answers.
pub fn start_sim_with(admin_pass: &str) -> Sim {
    Sim::start_with(admin_pass)
}
