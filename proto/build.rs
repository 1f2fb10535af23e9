//! Generates the `strata.v1` code with the protoc that `protoc-bin-vendored` ships, so nothing has
//! to be installed by hand. `PROTOC` is set for this build script only: raft-proto's build script
//! brings its own protoc and must not see ours (see BUILD-NOTES.md).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("strata_descriptor.bin");
    tonic_prost_build::configure()
        .bytes(".strata.v1")
        .file_descriptor_set_path(&descriptor)
        .compile_protos(&["proto/strata/v1/strata.proto"], &["proto"])?;
    // The proto3 JSON mapping (included with the `json` feature; generating it is cheap, so it
    // is always generated and the feature decides whether it compiles).
    let descriptor_set = std::fs::read(&descriptor)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .build(&[".strata.v1"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
