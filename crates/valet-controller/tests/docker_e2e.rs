//! End to end on the Docker backend: a signed GitHub push to a real controller runs the
//! seed's two-container pod on the real engine; the API shows the stages and the log, and
//! the pod is gone afterwards.

mod common;

use std::process::Command;

use common::{Repo, Server};

const TWO_CONTAINERS: &str = "\
podTemplate(containers: [
    containerTemplate(name: 'maven', image: 'valet/busybox:latest', command: 'sleep', args: '3601'),
    containerTemplate(name: 'golang', image: 'valet/busybox:latest', command: 'sleep', args: '3602'),
]) {
    node(POD_LABEL) {
        stage('Build') {
            container('maven') {
                sh 'echo built-by-maven-$BUILD_NUMBER > artifact.txt; echo maven pid1: $(tr \"\\\\0\" \" \" < /proc/1/cmdline)'
            }
        }
        stage('Test') {
            container('golang') {
                sh 'echo golang pid1: $(tr \"\\\\0\" \" \" < /proc/1/cmdline); echo golang read: $(cat artifact.txt)'
            }
        }
    }
}
";

/// The static agent and the base image, built when missing (a fresh machine has neither).
fn docker_prerequisites() {
    valet_agent::binary::build_static().unwrap_or_else(|e| panic!("{e}"));
    let present = Command::new("docker")
        .args(["image", "inspect", "valet/busybox:latest"])
        .output()
        .expect("the docker CLI runs (the project's machines have Docker)");
    if !present.status.success() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../images/build.sh");
        let built = Command::new(script).output().expect("images/build.sh runs");
        assert!(
            built.status.success(),
            "images/build.sh: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
}

/// Containers and volumes on the engine that carry `label` (`key=value`).
fn labelled(label: &str) -> usize {
    let filter = format!("label={label}");
    let count = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .args(["--filter", &filter])
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    count(&["ps", "-aq"]) + count(&["volume", "ls", "-q"])
}

/// Containers and volumes valet made for `pod` that still exist.
fn leftovers(pod: &str) -> usize {
    labelled(&format!("valet.pod={pod}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_runs_a_two_container_pod_on_docker_to_success() {
    tokio::task::spawn_blocking(docker_prerequisites)
        .await
        .expect("prerequisites thread");
    let repo = Repo::new(TWO_CONTAINERS);
    let sha = repo.head();
    let s = Server::start(&repo, "    backend: docker\n", "").await;
    let r = s.github_push("main", &sha, "docker-1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().expect("build id");
    let b = s.wait_finished(id).await;
    let log = s.log(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}\n{log}");
    let stages: Vec<&str> = b["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["name"].as_str().expect("stage name"))
        .collect();
    assert_eq!(stages, ["Build", "Test"], "{b:#}");
    // Each step ran in the container it named: the agent is first process there and runs
    // that container's own command …
    let line = |prefix: &str| {
        log.lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in\n{log}"))
            .to_string()
    };
    assert!(line("maven pid1:").contains("valet-agent serve"), "{log}");
    assert!(line("maven pid1:").ends_with("-- sleep 3601"), "{log}");
    assert!(line("golang pid1:").ends_with("-- sleep 3602"), "{log}");
    // … and the second container read what the first wrote in the shared workspace.
    assert!(line("golang read:").ends_with("built-by-maven-1"), "{log}");
    // The pod the build ran in is gone.
    let pod = b["jobs"][0]["pod"]
        .as_str()
        .unwrap_or_else(|| panic!("the job names its pod: {b:#}"));
    assert!(pod.starts_with("valet-pod-"), "{b:#}");
    assert_eq!(leftovers(pod), 0, "pod {pod} left containers or volumes");
    s.stop().await;
}

/// What this process still has on the engine: containers and volumes with its owner label.
fn owned_by_this_process() -> usize {
    labelled(&format!(
        "{}={}",
        valet_docker::gc::LABEL_OWNER,
        valet_docker::gc::current_owner()
    ))
}

fn warm_pods_taken(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("valet_backend_warm_pool_hits_total{backend=\"docker\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no warm pool counter in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_warm_pool_a_template_built_again_takes_a_ready_pod_and_stop_drains_the_pool() {
    tokio::task::spawn_blocking(docker_prerequisites)
        .await
        .expect("prerequisites thread");
    let repo = Repo::new(TWO_CONTAINERS);
    let sha = repo.head();
    let s = Server::start(&repo, "", "backend:\n  kind: docker\n  warm_pool: 1\n").await;
    // The first build of the template starts cold and warms the pool behind it; a later one
    // takes the ready pod. The pool fills in the background, so a few builds are allowed.
    let mut taken = 0;
    for n in 1..=5 {
        let r = s.github_push("main", &sha, &format!("warm-{n}")).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["build"].as_i64().expect("build id");
        let b = s.wait_finished(id).await;
        let log = s.log(id).await;
        assert_eq!(b["result"], "SUCCESS", "{b:#}\n{log}");
        // Both containers of the pod, pooled or not, share this build's workspace.
        assert!(
            log.contains(&format!("golang read: built-by-maven-{n}")),
            "{log}"
        );
        taken = warm_pods_taken(&s.get("/metrics").await.body);
        if taken > 0 {
            assert!(n > 1, "the first build of a template cannot find it warm");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(taken > 0, "no build took a pod from the warm pool");
    // Stopping the controller drains the pool: nothing of this process is left.
    s.stop().await;
    assert_eq!(owned_by_this_process(), 0, "the warm pool left pods behind");
}
