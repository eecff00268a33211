//! Compiles the `.proto` files with protox (pure Rust; no `protoc` binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/burrow/v1/sync.proto", "proto/burrow/v1/store.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
