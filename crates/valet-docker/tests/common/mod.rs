//! Shared by the Docker tests: a connected backend with the base image and the static
//! `valet-agent` built.
//!
//! Docker is required: every machine of the project has it, so an unreachable engine fails
//! the tests (with a message saying so) rather than skipping them.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use valet_docker::DockerBackend;

static IMAGE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
static AGENT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// The static agent binary, built (release, `+crt-static`) once per machine if missing or
/// stale: test processes share the build through a file lock.
pub async fn agent() -> PathBuf {
    AGENT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(valet_agent::binary::build_static)
                .await
                .expect("the agent build thread")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .await
        .clone()
}

/// `images/build.sh` of the repository.
pub fn build_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../images/build.sh")
}

/// A backend on the local engine; builds `valet/busybox` once per test process if missing,
/// and the agent.
pub async fn backend() -> DockerBackend {
    let backend = DockerBackend::connect().await.unwrap_or_else(|e| {
        panic!(
            "the Docker tests need a running Docker engine (DOCKER_HOST or /var/run/docker.sock) \
             and could not reach one: {e}"
        )
    });
    IMAGE
        .get_or_init(|| async {
            backend
                .ensure_base_image(&build_script())
                .await
                .unwrap_or_else(|e| {
                    panic!("building the base image with images/build.sh failed: {e}")
                });
        })
        .await;
    backend.with_agent(agent().await)
}
