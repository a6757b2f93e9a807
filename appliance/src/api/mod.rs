//! gRPC services (tonic) implementing `appliance-rpc`, served on the HTTP port.
//!
//! `admin` (+ `apply_batch`, its group commit; `watch`, its change stream), `lifecycle` and `console`: operator/bridge
//! calls behind the admin token (`auth`). `agent`: the Sidero-compatible agent API for
//! PXE-booted servers, unauthenticated as in Sidero, bound to the source address of each
//! agent boot and with registration capped per address (`agent_limit`, pure). Services talk to the store only through
//! `store::Store`.

pub mod admin;
pub mod admin_certs;
pub mod agent;
pub mod agent_limit;
pub mod agent_report;
pub mod apply_batch;
pub mod auth;
pub mod console;
pub mod first_contact;
pub mod lifecycle;
pub mod observe;
pub mod watch;
