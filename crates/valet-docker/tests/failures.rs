//! Failures in the engine's words: an out-of-memory kill confirmed from the engine, an image
//! that is missing and cannot be pulled, a container that cannot start. Needs a Docker engine.

mod common;

use valet_backend::conformance::{ProvisionSpec as _, spec};
use valet_backend::{Backend, BackendError, Command, ExitStatus, Pod};

/// Runs `script` in `container` to its end: its exit status and the backend's explanation.
async fn run_explained(
    pod: &dyn Pod,
    container: &str,
    script: &str,
) -> (ExitStatus, Option<String>) {
    let mut exec = pod
        .runner(container)
        .expect("runner")
        .start(Command::shell(script))
        .await
        .expect("start");
    while exec.output.recv().await.is_some() {}
    let status = exec.handle.wait().await.expect("wait");
    let reason = exec.handle.explain().await;
    (status, reason)
}

async fn provision_err(backend: &dyn Backend, s: &valet_backend::PodSpec) -> BackendError {
    match backend.provision_spec(s, "b-fail").await {
        Ok(pod) => {
            pod.teardown().await.ok();
            panic!("provisioning {} succeeded", s.name)
        }
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_the_memory_limit_is_reported_as_out_of_memory() {
    let backend = common::backend().await;
    let mut s = spec("oom", &["maven"]);
    s.containers[0].resources.limit_memory_bytes = Some(32 * 1024 * 1024);
    let pod = backend
        .provision_spec(&s, "b-oom")
        .await
        .expect("provision");

    // A 64 MiB buffer in a 32 MiB container (no swap): the kernel kills dd.
    let (status, reason) = run_explained(
        &*pod,
        "maven",
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
    )
    .await;
    assert_eq!(status, ExitStatus::Signal(9));
    assert_eq!(
        reason.as_deref(),
        Some("container 'maven' was killed: out of memory (limit 32 MiB)")
    );

    // The container survives (its first process was not the victim) and the next SIGKILL,
    // not an OOM, is not blamed on the earlier one.
    let (status, reason) = run_explained(&*pod, "maven", "kill -9 $$").await;
    assert_eq!(status, ExitStatus::Signal(9));
    assert_eq!(reason, None, "an earlier OOM was blamed again");

    // A plain failure has nothing to explain.
    let (status, reason) = run_explained(&*pod, "maven", "exit 3").await;
    assert_eq!(status, ExitStatus::Code(3));
    assert_eq!(reason, None);
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_that_cannot_be_pulled_names_the_image_and_the_reason() {
    let backend = common::backend().await;
    let mut s = spec("noimage", &["maven"]);
    s.containers[0].image = Some("valet/does-not-exist:never".into());
    let err = provision_err(&backend, &s).await.to_string();
    let prefix =
        "image 'valet/does-not-exist:never' is not on the engine and could not be pulled: ";
    let at = err.find(prefix).unwrap_or_else(|| panic!("{err}"));
    let reason = &err[at + prefix.len()..];
    // The engine's reason follows (here: no registry is reachable, or access is denied).
    assert!(reason.trim().len() > 10, "no reason given: {err}");
    assert!(err.contains("container 'maven'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_the_engine_refuses_is_named_with_the_engines_message() {
    let backend = common::backend().await;

    // Refused when created: a relative working directory.
    let mut s = spec("badcreate", &["sidecar", "maven"]);
    s.containers[1].working_dir = Some("relative/dir".into());
    let err = provision_err(&backend, &s).await.to_string();
    assert!(
        err.contains("container 'maven' could not be created"),
        "{err}"
    );
    assert!(err.contains("relative/dir"), "the engine's message: {err}");

    // Refused when started: the working directory is under /proc, which exists in the image
    // but is replaced by the kernel's proc when the container starts.
    let mut s = spec("badstart", &["maven"]);
    s.containers[0].working_dir = Some("/proc/valet-workdir".into());
    let err = provision_err(&backend, &s).await.to_string();
    assert!(err.contains("container 'maven' could not start"), "{err}");
    assert!(
        err.contains("/proc/valet-workdir: no such file or directory"),
        "the engine's message: {err}"
    );
}

/// The host pid of the first process (the agent) of container `name` of `pod`, and the
/// container's id.
async fn agent_pid(backend: &valet_docker::DockerBackend, pod: &str, name: &str) -> (i64, String) {
    use bollard::query_parameters::ListContainersOptions;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={pod}", valet_docker::LABEL_POD),
            format!("{}={name}", valet_docker::LABEL_CONTAINER),
        ],
    )]);
    let found = backend
        .docker()
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list");
    let id = found[0].id.clone().expect("an id");
    let info = backend
        .docker()
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    (info.state.and_then(|s| s.pid).expect("a pid"), id)
}

/// An agent that cannot answer (stopped from the host, as one starved by a fork bomb in its
/// container would be) does not hold a cancel: past the grace and a bounded wait the
/// container is killed from outside, the step ends with KILL, the container refuses further
/// steps saying why, and the teardown leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_agent_cannot_answer_kills_the_container_from_outside() {
    let backend = common::backend().await;
    let s = spec("unanswered", &["main"]);
    let pod = backend
        .provision_spec(&s, "b-unanswered")
        .await
        .expect("provision");
    let runner = pod.runner("main").expect("runner");
    let mut exec = runner
        .start(Command::shell("echo started; sleep 300"))
        .await
        .expect("start");
    assert!(exec.output.recv().await.is_some(), "the step started");
    let (pid, id) = agent_pid(&backend, pod.id(), "main").await;
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());

    let began = std::time::Instant::now();
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        exec.handle.cancel(std::time::Duration::from_secs(1)),
    )
    .await
    .expect("the cancel returned within 15 s")
    .expect("the cancel succeeded");
    assert_eq!(status, ExitStatus::Signal(9), "after {:?}", began.elapsed());
    let running = backend
        .docker()
        .inspect_container(&id, None)
        .await
        .expect("inspect")
        .state
        .and_then(|s| s.running);
    assert_eq!(running, Some(false), "the container was killed");
    let reason = exec.handle.explain().await.expect("a reason");
    assert!(reason.contains("killed from outside"), "{reason}");

    let refused = match runner.start(Command::shell("true")).await {
        Ok(_) => panic!("a killed container ran another step"),
        Err(e) => e,
    };
    assert!(
        matches!(&refused, BackendError::Lost(m) if m.contains("container 'main' was killed from outside") && m.contains("did not end the step")),
        "{refused}"
    );

    pod.teardown().await.expect("teardown");
    let volumes = backend
        .docker()
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(std::collections::HashMap::from([(
                "label".to_string(),
                vec![format!("{}={}", valet_docker::LABEL_POD, pod.id())],
            )])),
        }))
        .await
        .expect("volumes")
        .volumes
        .unwrap_or_default();
    assert!(volumes.is_empty(), "{volumes:?}");
}
