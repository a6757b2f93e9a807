//! Compiles the protos in `appliance/proto/` with protox, so no `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/admin.proto",
        "../proto/agent.proto",
        "../proto/console.proto",
        "../proto/lifecycle.proto",
        "../proto/observe.proto",
        "../proto/power.proto",
        "../proto/siderolink.proto",
        "../proto/events.proto",
        "../proto/talos_common.proto",
        "../proto/talos_machine.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
