//! Sans-IO protocol cores: pure functions and state machines that take bytes, time and
//! state and return decisions and bytes to send. No tokio, sockets, clock, filesystem or
//! RNG here; the tokio glue lives in `net/` (and `http/` for the HTTP routes).

pub mod http_range;
pub mod ipmi;
pub mod ipxe;
pub mod tftp;
