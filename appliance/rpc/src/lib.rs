//! The appliance's gRPC contract, generated from `appliance/proto/*.proto`.
//!
//! Holds no logic: the server side lives in `appliance::api`, clients are `appliance ctl`
//! and kube-bridge. Nothing here may depend on appliance internals.

/// Admin API (`appliance.admin.v1`): operator and bridge calls, behind the admin token.
pub mod admin {
    tonic::include_proto!("appliance.admin.v1");
}

/// Agent API (`api.Agent`, wire-compatible with Sidero Metal's agent API plus extensions):
/// called by `appliance agent` in the PXE-booted initramfs; unauthenticated.
pub mod agent {
    tonic::include_proto!("api");
}

/// Lifecycle API (`appliance.lifecycle.v1`): allocate/release servers and read lifecycle
/// events; behind the admin token.
pub mod lifecycle {
    tonic::include_proto!("appliance.lifecycle.v1");
}

/// Observe API (`appliance.observe.v1`): a server's Talos log lines (and follow); behind
/// the admin token.
pub mod observe {
    tonic::include_proto!("appliance.observe.v1");
}

/// Console administration (`appliance.console.v1`): the web console password; behind the
/// admin token.
pub mod console {
    tonic::include_proto!("appliance.console.v1");
}

/// Power API (`appliance.power.v1`): BMC power/boot-device control, behind the admin token.
pub mod power {
    tonic::include_proto!("appliance.power.v1");
}

/// SideroLink provisioning (`sidero.link.ProvisionService`, wire-compatible with Sidero):
/// Talos asks for its overlay address and the box's WireGuard endpoint; unauthenticated.
pub mod siderolink {
    tonic::include_proto!("sidero.link");
}

/// The Talos event sink (`events.EventSinkService`, wire-compatible with siderolink's), served
/// inside the SideroLink overlay.
pub mod events {
    tonic::include_proto!("events");
}

/// `common.Error` of Talos's API (carried by machine events).
pub mod common {
    tonic::include_proto!("common");
}

/// The Talos machine events the event sink reads (`machine.*`, a subset of Talos's
/// `machine.proto`); they arrive as `google.protobuf.Any`.
pub mod machine {
    tonic::include_proto!("machine");
}
