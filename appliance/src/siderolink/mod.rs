//! SideroLink, the box's side of the overlay that installed nodes join (Sidero's
//! siderolink-manager, log-receiver and events-manager in one room): the box identity
//! (`identity`), the Provision API on :8081 (`provision`). Pure parts (prefix derivation,
//! address allocation, log-line decoding, event mapping) live in
//! `crate::protocol::siderolink`.

pub mod endpoint;
pub mod identity;
pub mod overlay;
pub mod peers;
pub mod provision;
pub mod sink;
pub mod stream;
