//! Docker-specific behaviour of pods: shared network namespace and workspace, resource
//! limits, labels and teardown. Needs a Docker engine.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions};
use valet_backend::conformance::{ProvisionSpec as _, collect, spec};
use valet_backend::{Command, Pod};
use valet_docker::{DockerBackend, LABEL_BUILD, LABEL_CONTAINER, LABEL_POD};

async fn run(
    pod: &dyn Pod,
    container: &str,
    script: &str,
) -> valet_backend::conformance::Collected {
    let exec = pod
        .runner(container)
        .expect("runner")
        .start(Command::shell(script))
        .await
        .expect("start");
    collect(exec).await.expect("collect")
}

async fn containers_of(
    backend: &DockerBackend,
    pod: &str,
) -> Vec<bollard::models::ContainerSummary> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_POD}={pod}")])]);
    backend
        .docker()
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
}

async fn volumes_of(backend: &DockerBackend, pod: &str) -> Vec<String> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_POD}={pod}")])]);
    backend
        .docker()
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_share_files_and_localhost() {
    let backend = common::backend().await;
    let pod = backend
        .provision_spec(&spec("net", &["server", "client"]), "b-net")
        .await
        .expect("provision");

    let out = run(&*pod, "server", "echo from-server > /workspace/note.txt").await;
    assert!(out.status.success(), "{out:?}");
    let out = run(&*pod, "client", "cat /workspace/note.txt").await;
    assert_eq!(out.stdout, "from-server\n");

    // A listener on 8080 in one container, reached on 127.0.0.1 from the other. Its stdin
    // stays open for a while: busybox nc closes the connection when its stdin ends, which
    // could race the client's bytes.
    let listener = pod
        .runner("server")
        .expect("runner")
        .start(Command::shell("sleep 3 | nc -l -p 8080"))
        .await
        .expect("start the listener");
    let out = run(
        &*pod,
        "client",
        "for i in $(seq 1 50); do echo ping | nc 127.0.0.1 8080 && exit 0; sleep 0.1; done; exit 1",
    )
    .await;
    assert!(
        out.status.success(),
        "the client never reached the listener: {out:?}"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), collect(listener))
        .await
        .expect("the listener ends after one connection")
        .expect("collect the listener");
    assert_eq!(got.stdout, "ping\n");
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_labels_reach_the_containers() {
    let backend = common::backend().await;
    let mut s = spec("limits", &["main"]);
    s.containers[0].resources.limit_memory_bytes = Some(256 * 1024 * 1024);
    s.containers[0].resources.limit_cpu_millis = Some(1500);
    s.containers[0].resources.request_cpu_millis = Some(500);
    s.containers[0].run_as_user = Some(1000);
    s.containers[0].resources.limit_pids = Some(300);
    let pod = backend
        .provision_spec(&s, "b-limits")
        .await
        .expect("provision");

    let found = containers_of(&backend, pod.id()).await;
    assert_eq!(found.len(), 2, "the sandbox and one container: {found:?}");
    let main = found
        .iter()
        .find(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CONTAINER))
                .is_some_and(|n| n == "main")
        })
        .expect("the main container");
    for c in &found {
        let labels = c.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_BUILD).map(String::as_str),
            Some("b-limits")
        );
    }
    let info = backend
        .docker()
        .inspect_container(main.id.as_deref().unwrap(), None)
        .await
        .expect("inspect");
    let hc = info.host_config.expect("host config");
    assert_eq!(hc.memory, Some(256 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(256 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(1_500_000_000));
    assert_eq!(hc.cpu_shares, Some(512));
    assert_eq!(hc.pids_limit, Some(300));
    assert!(
        hc.network_mode
            .unwrap_or_default()
            .starts_with("container:")
    );
    assert_eq!(info.config.and_then(|c| c.user).as_deref(), Some("1000"));

    let out = run(&*pod, "main", "id -u").await;
    assert_eq!(out.stdout, "1000\n");
    pod.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_leaves_nothing_labelled() {
    let backend = common::backend().await;
    let pod = backend
        .provision_spec(&spec("gone", &["one", "two"]), "b-gone")
        .await
        .expect("provision");
    let id = pod.id().to_string();
    assert_eq!(containers_of(&backend, &id).await.len(), 3);
    assert_eq!(volumes_of(&backend, &id).await.len(), 1);
    pod.teardown().await.expect("teardown");
    assert!(
        containers_of(&backend, &id).await.is_empty(),
        "containers left"
    );
    assert!(volumes_of(&backend, &id).await.is_empty(), "volumes left");
    pod.teardown().await.expect("a second teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_provisioning_with_its_name() {
    let backend = common::backend().await;
    let mut s = spec("noimage", &["main"]);
    s.containers[0].image = Some("valet/does-not-exist:never".into());
    let err = match backend.provision_spec(&s, "b-noimage").await {
        Ok(pod) => {
            pod.teardown().await.ok();
            panic!("provisioning with a missing image succeeded")
        }
        Err(e) => e,
    };
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

/// A step cannot gain privileges through a setuid binary (`no-new-privileges`): privilege
/// is the template's to ask and the operator's to allow (the runtime's container policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_gain_no_new_privileges() {
    let backend = common::backend().await;
    let pod = backend
        .provision_spec(&spec("nnp", &["main"]), "b-nnp")
        .await
        .expect("provision");
    let out =
        valet_backend::conformance::sh(&*pod, "main", "grep NoNewPrivs /proc/self/status").await;
    pod.teardown().await.expect("teardown");
    assert_eq!(out.stdout.split_whitespace().last(), Some("1"), "{out:?}");
}
