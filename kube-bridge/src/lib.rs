//! kube-bridge: mirrors Server/ServerClass/Environment/MetalMachine/ServerBinding objects
//! between the appliance (through its admin API, `appliance-rpc`) and a Cluster API cluster.
//!
//! Built so far: [`crd`], Sidero's CRDs as Rust types and the manifests generated from them,
//! and [`manifests`], the clusterctl provider artefacts.
//! The bridge itself (watch, sync, allocation) is not built yet.

pub mod crd;
pub mod manifests;

pub use appliance_rpc::admin;
