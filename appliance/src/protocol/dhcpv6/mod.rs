//! DHCPv6 server and router advertisements for IPv6 provisioning, sans-IO, beside the v4
//! core in `protocol/dhcp` (whose client classification and boot files it reuses).
//!
//! - `wire`: screening + decoding of client messages, reply encoding (by hand, RFC 8415).
//! - `server`: the decision machine (`Dhcpv6Server::handle`): IA_NA addresses from a pool,
//!   boot file URL (option 59) and parameters (60), leases to persist.
//! - `properties`: what must hold for any input (the fuzz target and the corpus replay).
//! - `ra`: the router advertisement the box sends (Managed flag, the configured prefix).
//! - `client`: the agent's side (Solicit → Advertise → Request → Reply for one IA_NA),
//!   reading the server's answers with the same `wire::parse`.
//!
//! May touch: nothing outside `protocol` but `std` and `thiserror`. The tokio glue is
//! `net/dhcpv6.rs` (server) and `agent/dhcp6.rs` (client); lease persistence is
//! `store/leases6.rs`.

pub mod client;
pub mod properties;
pub mod ra;
pub mod server;
pub mod wire;

pub use server::{Config, ConfigError, Decision, Dhcpv6Server, Lease6, duid_mac};
pub use wire::DropReason;

#[cfg(test)]
mod tests;
