//! The boot-storm load generator (`scripts/bench storm N`): N simulated machines that boot
//! as real firmware and the agent do, against the appliance or dnsmasq + nginx, in one
//! process on one packet socket (see ARCHITECTURE.md, "storm").
//!
//! - `packet`: the raw packet socket;
//! - `wire`: frames, DHCP, TFTP and ARP as bytes (pure);
//! - `httpc`: iPXE-like HTTP GETs from a leased address;
//! - `client`: one machine's boot with the firmware's timers;
//! - `storm`: the crowd, the receive loop and the report;
//! - `rate`: the DHCP-only rate mode of `scripts/bench dhcp`, one loop for every machine;
//! - `plot`: the PNG of time and memory against N.

pub mod client;
pub mod httpc;
pub mod packet;
pub mod plot;
pub mod rate;
pub mod storm;
pub mod wire;

/// The synthetic agent's identities and hardware inventory (shared with the appliance's
/// tests and `examples/agent_load.rs`).
#[path = "../../appliance/tests/synthetic_agent/mod.rs"]
pub mod synthetic_agent;
