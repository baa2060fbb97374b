//! Generates the wire contract from `proto/` with the vendored `protoc`, so a fresh machine needs
//! no protobuf installation.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "qtrail/audit/v1/event.proto",
    "qtrail/audit/v1/collector.proto",
    "qtrail/audit/v1/alerts.proto",
    "qtrail/runtime/v1/programs.proto",
    "qtrail/runtime/v1/jobs.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.include_file("mod.rs");
    // The events of a Publish batch as `Bytes`: the publisher hands over the outbox's bytes
    // without a copy, and the collector's reads slice the received message instead of copying
    // each event out of it.
    config.bytes([".qtrail.audit.v1.PublishedEvent.event"]);

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    let includes = [proto_root.clone(), protoc_bin_vendored::include_path()?];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .file_descriptor_set_path(out_dir.join("qtrail_descriptor.bin"))
        .compile_with_config(config, &files, &includes)?;
    Ok(())
}
