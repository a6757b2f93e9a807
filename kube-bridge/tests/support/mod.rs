//! Shared helpers of kube-bridge's integration tests. The in-test API server and its
//! structural-schema checker live in the `kube-test-apiserver` crate (`kube-bridge/apiserver/`),
//! which qemu-tests also runs as a process.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub use kube_test_apiserver as apiserver;
pub use kube_test_apiserver::schema;

pub mod boxes;
pub mod clusterctl;
pub mod http;
pub mod prereq;
