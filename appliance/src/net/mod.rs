//! Tokio glue for the protocol cores in `protocol/`: sockets, timers and files. Each
//! service is a task spawned from `app.rs` that stops on the shared shutdown signal.

pub mod tftp;
