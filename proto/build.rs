//! Compiles `proto/vigil/**.proto` with the pure-Rust `protox` compiler (no
//! system `protoc` needed) and generates tonic clients and servers, plus the
//! encoded descriptor set that gRPC reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/vigil/telemetry/v1/telemetry.proto",
    "proto/vigil/query/v1/query.proto",
    "proto/vigil/alerting/v1/alerting.proto",
    "proto/vigil/heartbeat/v1/heartbeat.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("vigil_descriptor.bin"), &encoded)?;
    // JSON (proto3 mapping, proto field names, every field emitted) for the
    // UI gateway, which speaks JSON to browsers.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".vigil.query", ".vigil.alerting", ".vigil.heartbeat"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
