//! DHCPv4 server and PXE proxyDHCP, sans-IO.
//!
//! - `wire`: screening + decoding of datagrams (`dhcproto` codec), reply encoding.
//! - `boot`: boot file by client architecture and iPXE detection.
//! - `lease`: lease records, lease changes, the in-memory lease table.
//! - `link`: IPv4/UDP and ARP payloads for the packet socket (replies to a hardware
//!   address, ARP probes).
//! - `server`: the decision machine (`DhcpServer::handle`).
//! - `probe`: rogue DHCP detection (the probe DISCOVER, offers classified).
//! - `properties`: what must hold for any input (the fuzz targets and the corpus replay).
//!
//! May touch: nothing outside this folder but `std`, `dhcproto` and `thiserror`. The tokio
//! glue is `net/dhcp.rs`; lease persistence is `store/leases.rs`.

pub mod boot;
pub mod lease;
pub mod link;
pub mod probe;
pub mod properties;
pub mod server;
pub mod wire;

pub use boot::{BootConfig, ClientKind, Firmware, arch_name};
pub use lease::{Lease, LeaseChange, LeaseState, LeaseTable, clamp_after_restart};
pub use server::{
    Decision, Destination, DhcpServer, Mode, Pool, Port, Reply, Reservation, ServerConfig,
    ServerConfigError,
};
pub use wire::DropReason;

#[cfg(test)]
mod tests;
