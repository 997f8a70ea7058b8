//! `valet run --backend docker` against the real Docker engine: the seed's two-container
//! shape, steps in the container they name, one workspace for both, nothing left behind.

use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn ensure_base_image() {
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

/// Containers and volumes still labelled with pod `id`.
fn leftovers(id: &str) -> usize {
    let filter = format!("label=valet.pod={id}");
    let ps = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
        .expect("docker ps");
    let vols = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", &filter])
        .output()
        .expect("docker volume ls");
    String::from_utf8_lossy(&ps.stdout).lines().count()
        + String::from_utf8_lossy(&vols.stdout).lines().count()
}

#[test]
fn two_container_pod_runs_on_docker() {
    ensure_base_image();
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args([
            "run",
            "--backend",
            "docker",
            "pipelines/docker-two-containers.groovy",
        ])
        .current_dir(ROOT)
        .output()
        .expect("valet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each step ran in the container it named (their first processes differ) …
    assert!(stdout.contains("maven runs: sleep 3601"), "{stdout}");
    assert!(stdout.contains("golang runs: sleep 3602"), "{stdout}");
    // … and the second container read what the first wrote in the shared workspace.
    assert!(
        stdout.lines().any(|l| l.trim() == "built-by-maven"),
        "{stdout}"
    );
    assert!(stdout.contains("Build SUCCESS"), "{stdout}");
    let pod = stdout
        .split_whitespace()
        .find(|w| w.starts_with("valet-pod-"))
        .expect("the run names its pod");
    assert_eq!(
        leftovers(pod),
        0,
        "pod {pod} left containers or volumes behind"
    );
}
