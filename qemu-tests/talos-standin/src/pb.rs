//! Generated client types of the stand-in's own protos (`proto/`).
#![allow(clippy::all, missing_docs)]

pub mod sidero_link {
    tonic::include_proto!("sidero.link");
}

pub mod events {
    tonic::include_proto!("events");
}

pub mod common {
    tonic::include_proto!("common");
}

pub mod machine {
    tonic::include_proto!("machine");
}
