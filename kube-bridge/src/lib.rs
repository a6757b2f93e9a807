//! kube-bridge: mirrors Server/ServerClass/Environment/MetalMachine/ServerBinding objects
//! between the appliance (through its admin API, `appliance-rpc`) and a Cluster API cluster.
//!
//! Not built yet: this crate only fixes its place in the workspace and its one allowed
//! dependency (the gRPC contract, never appliance internals).

pub use appliance_rpc::admin;
