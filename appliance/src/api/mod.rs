//! gRPC services (tonic) implementing `appliance-rpc`, served on the HTTP port.
//!
//! `admin`: operator/bridge calls behind the admin token (`auth`). Agent-facing services
//! come later and are not behind the token. Services talk to the store only through
//! `store::Store`.

pub mod admin;
pub mod agent;
pub mod apply_batch;
pub mod auth;
pub mod console;
pub mod lifecycle;
