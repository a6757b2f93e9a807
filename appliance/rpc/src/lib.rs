//! The appliance's gRPC contract, generated from `appliance/proto/*.proto`.
//!
//! Holds no logic: the server side lives in `appliance::api`, clients are `appliance ctl`
//! and kube-bridge. Nothing here may depend on appliance internals.

/// Admin API (`appliance.admin.v1`): operator and bridge calls, behind the admin token.
pub mod admin {
    tonic::include_proto!("appliance.admin.v1");
}
