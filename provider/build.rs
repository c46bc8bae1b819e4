//! Generates the tfplugin6 and go-plugin controller bindings from `proto/`
//! with protox (a pure-Rust protobuf compiler), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let files = ["tfplugin6.proto", "grpc_controller.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={proto_dir}/{f}");
    }
    let fds = protox::compile(files, [proto_dir])?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
