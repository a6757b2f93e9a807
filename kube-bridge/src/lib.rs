//! kube-bridge: mirrors Server/ServerClass/Environment/MetalMachine/ServerBinding objects
//! between the appliance (through its admin API, `appliance-rpc`) and a Cluster API cluster.
//!
//! Built so far: [`crd`], Sidero's CRDs as Rust types and the manifests generated from them,
//! [`manifests`], the clusterctl provider artefacts, and [`config`], the flags of
//! `kube-bridge run`. The bridge itself (watch, sync, allocation) is not built yet.

pub mod config;
pub mod crd;
pub mod manifests;

pub use appliance_rpc::admin;
