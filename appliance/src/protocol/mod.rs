//! Sans-IO protocol cores: pure functions and state machines that take bytes, time and
//! state and return decisions and bytes to send. No tokio, sockets, clock, filesystem or
//! RNG here; the tokio glue lives in `net/` (and `http/` for the HTTP routes). Cores never
//! panic on network bytes: input they cannot use is dropped with a reason.

pub mod dhcp;
pub mod dhcpv6;
pub mod first_contact;
pub mod grub;
pub mod http_range;
pub mod ipmi;
pub mod ipxe;
pub mod siderolink;
pub mod tftp;
