//! Steps through the in-pod valet agent on the real engine: zombies, sidecars with their
//! own command, the image's own command, `runAsUser`, the socket directory's lifetime.

mod common;

use std::time::Duration;

use valet_backend::Pod;
use valet_backend::conformance::{Collected, ProvisionSpec as _, spec};

async fn run(pod: &dyn Pod, container: &str, script: &str) -> Collected {
    valet_backend::conformance::sh(pod, container, script).await
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_pid_1_and_leaves_no_zombie_after_200_background_children() {
    let backend = common::backend().await;
    let pod = backend
        .provision_spec(&spec("zombies", &["main"]), "b-zombies")
        .await
        .expect("provision");
    let out = run(&*pod, "main", "tr '\\0' ' ' </proc/1/cmdline").await;
    assert!(
        out.stdout.starts_with("/valet/bin/valet-agent serve"),
        "PID 1 is the agent: {out:?}"
    );
    let out = run(
        &*pod,
        "main",
        "for i in $(seq 200); do (sleep 0.01 &) ; done; echo spawned",
    )
    .await;
    assert_eq!(out.stdout, "spawned\n");
    // Each `sleep` is orphaned to PID 1 and must be reaped there.
    let mut zombies = String::from("(not looked)");
    for _ in 0..100 {
        let out = run(
            &*pod,
            "main",
            "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null; true",
        )
        .await;
        zombies = out.stdout;
        if zombies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(zombies, "", "zombies left in the container");
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_with_its_own_command_keeps_serving_while_steps_run_beside_it() {
    let backend = common::backend().await;
    let mut s = spec("sidecar", &["db", "app"]);
    s.containers[0].command = Some(words(&["nc", "-ll", "-p", "5000", "-e", "echo", "hi"]));
    let pod = backend
        .provision_spec(&s, "b-sidecar")
        .await
        .expect("provision");
    for i in 0..5 {
        // Steps in the sidecar's own container, beside it.
        let out = run(&*pod, "db", &format!("echo step {i}; pidof nc")).await;
        let mut lines = out.stdout.lines();
        assert_eq!(lines.next(), Some(format!("step {i}").as_str()));
        assert!(
            lines.next().is_some_and(|pid| !pid.is_empty()),
            "the sidecar runs during step {i}: {out:?}"
        );
        // And reached on 127.0.0.1 from the other container.
        let mut reached = String::new();
        for _ in 0..50 {
            reached = run(&*pod, "app", "nc -w 2 127.0.0.1 5000 </dev/null")
                .await
                .stdout;
            if !reached.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(reached, "hi\n", "the sidecar answers on localhost");
    }
    // The sidecar is the agent's child, not the container's first process.
    let out = run(&*pod, "db", "cut -d' ' -f4 /proc/$(pidof nc)/stat").await;
    assert_eq!(out.stdout.trim(), "1");
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_a_command_runs_its_images_own() {
    let backend = common::backend().await;
    let image = "valet/test-own-command:latest";
    let dockerfile = "FROM valet/busybox:latest\n\
        ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
        CMD [\"echo from-the-image > /workspace/own.txt; exec sleep 1000\"]\n";
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    std::io::Write::write_all(build.stdin.as_mut().expect("stdin"), dockerfile.as_bytes())
        .expect("write the Dockerfile");
    drop(build.stdin.take());
    assert!(build.wait().expect("docker build").success());

    let mut s = spec("own", &["svc"]);
    s.containers[0].image = Some(image.into());
    let pod = backend
        .provision_spec(&s, "b-own")
        .await
        .expect("provision");
    let mut out = String::new();
    for _ in 0..100 {
        out = run(&*pod, "svc", "cat own.txt 2>/dev/null; pidof sleep")
            .await
            .stdout;
        if out.lines().count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("from-the-image"), "{out:?}");
    assert!(
        lines.next().is_some(),
        "the image's command still runs: {out:?}"
    );
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_user_1000_runs_steps_as_1000_that_write_the_workspace() {
    let backend = common::backend().await;
    let mut s = spec("uid", &["main"]);
    s.containers[0].run_as_user = Some(1000);
    let pod = backend
        .provision_spec(&s, "b-uid")
        .await
        .expect("provision");
    let out = run(
        &*pod,
        "main",
        "id -u; echo written > mine.txt && cat mine.txt",
    )
    .await;
    assert_eq!(out.stdout, "1000\nwritten\n", "{out:?}");
    assert!(out.status.success());
    let out = run(&*pod, "main", "grep '^Uid:' /proc/1/status").await;
    assert!(
        out.stdout.split_whitespace().nth(1) == Some("1000"),
        "the agent itself runs as 1000: {out:?}"
    );
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_removes_the_socket_directory() {
    let backend = common::backend().await;
    let pod = backend
        .provision_spec(&spec("sockets", &["one", "two"]), "b-sockets")
        .await
        .expect("provision");
    let dir = valet_docker::gc::pod_dir_root().join(pod.id());
    for c in ["one", "two"] {
        assert!(
            dir.join(format!("{c}.sock")).exists(),
            "the agent of {c} listens in {}",
            dir.display()
        );
    }
    pod.teardown().await.expect("teardown");
    assert!(!dir.exists(), "{} is left after teardown", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mounted_agent_is_static() {
    let agent = common::agent().await;
    valet_agent::binary::check_static(&agent).expect("a static executable");
    // And it runs in an image with no libc at all (valet/busybox is FROM scratch).
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/valet-agent:ro", agent.display()))
        .args(["valet/busybox:latest", "/valet-agent", "--version"])
        .output()
        .expect("docker run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("valet-agent "));
}
