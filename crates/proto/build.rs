//! Compiles `proto/` with protox (a Rust protobuf compiler), so the build
//! needs no system `protoc`, and keeps the descriptor set for reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "verdant/broker/v1/broker.proto",
    "verdant/daemon/v1/daemon.proto",
    "verdant/discovery/v1/discovery.proto",
    "verdant/lambda/v1/lambda.proto",
    "verdant/ota/v1/deployments.proto",
    "verdant/ota/v1/updates.proto",
    "verdant/router/v1/router.proto",
    "verdant/secrets/v1/secrets.proto",
    "verdant/shadow/v1/shadow.proto",
    "verdant/supervisor/v1/supervisor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("verdant_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Payloads pass between daemons without a copy.
        .bytes(".verdant.router.v1.Message.payload")
        .bytes(".verdant.router.v1.TraceEvent.preview")
        .compile_fds(fds)?;
    Ok(())
}
