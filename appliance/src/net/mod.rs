//! Tokio glue for the protocol cores in `protocol/`: sockets, timers, files and the hand-off
//! of durable changes to the store. Each service is a task spawned from `app.rs` that stops
//! on the shared shutdown signal.

pub mod dhcp;
pub mod dhcp_probe;
pub mod dhcpv6;
pub mod iface;
pub mod listen;
pub mod packet;
pub mod tftp;
pub mod tftp_root;
pub mod udp_batch;
