//! Generates the gRPC code once for the workspace and writes the descriptor set
//! that server reflection serves. protoc is vendored because a fresh machine has
//! none; `PROTOC` in the environment still wins.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "faro/conversations/v1/conversations.proto",
        "faro/conversations/v1/replies.proto",
        "faro/ingest/v1/ingest.proto",
        "faro/ingest/v1/send.proto",
        "faro/stream/v1/stream.proto",
    ];
    let mut config = prost_build::Config::new();
    match env::var_os("PROTOC") {
        Some(protoc) => config.protoc_executable(protoc),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("faro_descriptor.bin"))
        .compile_with_config(config, &protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
