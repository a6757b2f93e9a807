//! Shared helpers of kube-bridge's integration tests.
#![allow(dead_code)] // each test binary uses a different part

pub mod apiserver;
pub mod boxes;
pub mod clusterctl;
pub mod http;
pub mod prereq;
pub mod schema;
