//! Shared by the tests that run `valet` on Docker.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// What every Docker run needs on a machine where nothing was built before: the static
/// `valet-agent` (where `valet` looks for it: target/valet-agent) and the base image.
pub fn ensure_base_image() {
    static AGENT: std::sync::Once = std::sync::Once::new();
    AGENT.call_once(|| {
        valet_agent::binary::build_static().unwrap_or_else(|e| panic!("{e}"));
    });
    let present = Command::new("docker")
        .args(["image", "inspect", "valet/busybox:latest"])
        .output()
        .expect("the docker CLI runs (the project's machines have Docker)");
    if present.status.success() {
        return;
    }
    let built = Command::new(format!("{ROOT}/images/build.sh"))
        .output()
        .expect("images/build.sh runs");
    assert!(
        built.status.success(),
        "images/build.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}
