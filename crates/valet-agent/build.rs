//! Generates the gRPC code of `proto/agent.proto` (pure Rust: protox, no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    let fds = protox::compile(["proto/agent.proto"], ["proto"])?;
    // No `connect(url)` helper on the client: it dials unix sockets through its own
    // connector, and the static agent is built without tonic's transport.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
