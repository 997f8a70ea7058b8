//! The warm pool: pods come fresh from it, it refills, and draining it leaves nothing.
//! Needs a Docker engine.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions};
use valet_backend::conformance::{ProvisionSpec as _, collect, spec};
use valet_backend::{
    Backend, Command, Pod, PodEvent, PodEvents, PodPhase, PodSpec, ProvisionRequest,
};
use valet_docker::{DockerBackend, LABEL_POOL};

type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// A backend with a pool of `size`, and the pods it placed (id, from the pool).
async fn pooled(size: usize) -> (DockerBackend, Seen) {
    let backend = common::backend().await.with_warm_pool(size);
    (backend, Seen::default())
}

/// Provisions `s`, noting in `seen` the pod and whether the warm pool placed it.
async fn provision(
    backend: &DockerBackend,
    seen: &Seen,
    s: &PodSpec,
    build: &str,
) -> Result<Box<dyn Pod>, valet_backend::BackendError> {
    let seen = seen.clone();
    let events = PodEvents::new(move |e| {
        if let PodEvent::Phase {
            pod,
            phase: PodPhase::Placed,
            detail,
            ..
        } = e
        {
            seen.lock()
                .unwrap()
                .push((pod, detail.as_deref() == Some("warm pool")));
        }
    });
    backend
        .provision(&ProvisionRequest::new(s.clone(), build).with_events(events))
        .await
}

async fn until_ready(backend: &DockerBackend, s: &PodSpec, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.warm_ready(s) < n {
        assert!(
            Instant::now() < deadline,
            "the pool has {} of {n} pods after 30 s",
            backend.warm_ready(s)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sh(pod: &dyn Pod, script: &str) -> valet_backend::conformance::Collected {
    let exec = pod
        .runner("main")
        .expect("runner")
        .start(Command::shell(script))
        .await
        .expect("start");
    collect(exec).await.expect("collect")
}

/// Containers and volumes labelled with the pool's id.
async fn pool_objects(backend: &DockerBackend) -> usize {
    let pool = backend.warm_pool_id().expect("a pool");
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_POOL}={pool}")])]);
    let containers = backend
        .docker()
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let volumes = backend
        .docker()
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .expect("list volumes");
    containers.len() + volumes.volumes.unwrap_or_default().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_from_the_pool_is_fresh() {
    let (backend, ready) = pooled(1).await;
    let s = spec("fresh", &["main"]);
    backend.warm(&s);
    until_ready(&backend, &s, 1).await;

    let first = provision(&backend, &ready, &s, "b-fresh-1")
        .await
        .expect("provision");
    let out = sh(
        &*first,
        "echo secret > /workspace/left-by-first; echo x > /tmp/also",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    first.teardown().await.expect("teardown");

    until_ready(&backend, &s, 1).await;
    let second = provision(&backend, &ready, &s, "b-fresh-2")
        .await
        .expect("provision");
    assert_ne!(first.id(), second.id());
    let out = sh(
        &*second,
        "test ! -e /workspace/left-by-first && test ! -e /tmp/also",
    )
    .await;
    assert!(out.status.success(), "the second pod saw the first's files");
    second.teardown().await.expect("teardown");

    let seen = ready.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (first.id().to_string(), true),
            (second.id().to_string(), true)
        ],
        "both pods came from the pool"
    );
    backend.shutdown().await.expect("shutdown");
    assert_eq!(pool_objects(&backend).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_refills_after_a_pod_is_taken() {
    let (backend, ready) = pooled(2).await;
    let s = spec("refill", &["main"]);
    // The first request finds the pool empty: a cold pod, and the template is warmed.
    let cold = provision(&backend, &ready, &s, "b-refill-0")
        .await
        .expect("provision");
    until_ready(&backend, &s, 2).await;

    let taken = provision(&backend, &ready, &s, "b-refill-1")
        .await
        .expect("provision");
    assert!(backend.warm_ready(&s) < 2, "a pod left the pool");
    until_ready(&backend, &s, 2).await;
    assert_eq!(
        ready.lock().unwrap().clone(),
        vec![
            (cold.id().to_string(), false),
            (taken.id().to_string(), true)
        ]
    );
    cold.teardown().await.expect("teardown");
    taken.teardown().await.expect("teardown");
    backend.shutdown().await.expect("shutdown");
    assert_eq!(pool_objects(&backend).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_nothing_also_while_pods_are_being_made() {
    let (backend, _) = pooled(2).await;
    let s = spec("drain", &["main", "side"]);
    backend.warm(&s);
    // Let the filler get some way: one pod ready, the next being made.
    until_ready(&backend, &s, 1).await;
    assert!(pool_objects(&backend).await > 0);
    backend.shutdown().await.expect("shutdown");
    assert_eq!(backend.warm_ready(&s), 0);
    assert_eq!(pool_objects(&backend).await, 0, "the pool left objects");
    // A closed pool makes no more.
    backend.warm(&s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool_objects(&backend).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_template_starts_on_a_sandbox_made_ahead() {
    let backend = common::backend().await.with_ready_sandboxes(1);
    let s = spec("ahead", &["main", "side"]);
    backend.warm(&s);
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.ready_sandboxes() < 1 {
        assert!(
            Instant::now() < deadline,
            "no sandbox made ahead after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        backend.warm_ready(&s),
        0,
        "no pods are kept, only sandboxes"
    );

    let pod = backend
        .provision_spec(&s, "b-ahead")
        .await
        .expect("provision");
    // The containers joined the sandbox made ahead, and share its workspace.
    let filters = HashMap::from([("label".to_string(), vec![format!("valet.pod={}", pod.id())])]);
    let found = backend
        .docker()
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    assert_eq!(found.len(), 3, "the sandbox and two containers: {found:?}");
    let sandbox = found
        .iter()
        .find(|c| {
            c.names
                .as_ref()
                .is_some_and(|n| n.iter().any(|n| n.ends_with("-sandbox")))
        })
        .and_then(|c| c.id.clone())
        .expect("the pod's sandbox");
    for c in &found {
        let id = c.id.as_deref().expect("id");
        if id == sandbox {
            continue;
        }
        let info = backend
            .docker()
            .inspect_container(id, None)
            .await
            .expect("inspect");
        let mode = info.host_config.and_then(|h| h.network_mode);
        assert_eq!(
            mode,
            Some(format!("container:{sandbox}")),
            "{:?}",
            info.name
        );
    }
    let out = sh(&*pod, "echo shared > /workspace/f").await;
    assert!(out.status.success(), "{out:?}");
    let exec = pod
        .runner("side")
        .expect("runner")
        .start(Command::shell("cat /workspace/f"))
        .await
        .expect("start");
    assert_eq!(collect(exec).await.expect("collect").stdout, "shared\n");
    pod.teardown().await.expect("teardown");
    backend.shutdown().await.expect("shutdown");
    assert_eq!(pool_objects(&backend).await, 0);
}
