//! Compiles the stand-in's own protos (`proto/`, written from shared/sidero-facts.md, not
//! the box's `appliance/proto`) with protox: no `protoc` needed. Client stubs only.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/provision.proto",
        "proto/events.proto",
        "proto/common.proto",
        "proto/machine.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
