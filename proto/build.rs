//! Compiles `ringmesh/v1/ringmesh.proto` with protox (no protoc needed) into
//! prost messages and tonic client/server code, and keeps the encoded
//! descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "ringmesh/v1/ringmesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ringmesh_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // The test service (ringmesh-testgrpc, tests, benchmarks).
    let testing = "ringmesh/testing/v1/echo.proto";
    println!("cargo:rerun-if-changed={testing}");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(protox::compile([testing], ["."])?)?;
    Ok(())
}
