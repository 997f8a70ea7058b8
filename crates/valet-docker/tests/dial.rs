//! Dial-out mode on Docker: each pod on a network of its own, agents dialling the pod's
//! tunnel on its gateway, nothing left behind by teardown or by a dead owner. Needs a
//! Docker engine.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::NetworkCreateRequest;
use valet_backend::Pod;
use valet_backend::conformance::{ProvisionSpec as _, spec};
use valet_docker::gc::Scope;
use valet_docker::network::network_name;
use valet_docker::{AgentChannel, DockerBackend, LABEL_OWNER, LABEL_POD};

async fn dial_out() -> DockerBackend {
    common::backend().await.with_channel(AgentChannel::DialOut)
}

async fn sh(pod: &dyn Pod, container: &str, script: &str) -> String {
    let out = valet_backend::conformance::sh(pod, container, script).await;
    assert_eq!(out.status, valet_backend::ExitStatus::Code(0), "{out:?}");
    out.stdout
}

async fn network_exists(backend: &DockerBackend, name: &str) -> bool {
    backend.docker().inspect_network(name, None).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gets_its_own_network_and_its_agents_dial_its_gateway() {
    let backend = dial_out().await;
    let pod = backend
        .provision_spec(&spec("dial", &["one", "two"]), "b-dial")
        .await
        .expect("provision");
    let id = pod.id().to_string();
    let name = network_name(&id);
    let network = backend
        .docker()
        .inspect_network(&name, None)
        .await
        .expect("the pod's network");
    let labels = network.labels.unwrap_or_default();
    assert_eq!(labels.get(LABEL_POD), Some(&id));
    assert_eq!(
        labels.get(LABEL_OWNER).map(String::as_str),
        Some(valet_docker::gc::current_owner())
    );
    let gateway = network
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| c.gateway)
        .expect("a gateway");

    // Each agent was told to dial the gateway, naming its pod and container; its token is
    // in its environment, not on its command line.
    for container in ["one", "two"] {
        let info = backend
            .docker()
            .inspect_container(&format!("{id}-{container}"), None)
            .await
            .expect("inspect");
        let config = info.config.unwrap_or_default();
        let cmd = config.cmd.unwrap_or_default().join(" ");
        assert!(cmd.contains(&format!("--dial {gateway}:")), "{cmd}");
        assert!(
            cmd.contains(&format!("--pod {id} --container {container}")),
            "{cmd}"
        );
        let token = config
            .env
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| {
                v.strip_prefix(&format!("{}=", valet_agent::dial::TOKEN_ENV))
                    .map(str::to_string)
            })
            .expect("the token in the environment");
        assert!(token.len() >= 32, "at least 128 bits in hex");
        assert!(!cmd.contains(&token));
        // No socket directory is mounted: the agents have nothing to serve on but the tunnel.
        let binds = info.host_config.and_then(|h| h.binds).unwrap_or_default();
        assert!(
            !binds
                .iter()
                .any(|b| b.ends_with(valet_docker::agent::RUN_DIR)),
            "{binds:?}"
        );
    }
    // Steps run, and the containers share the pod's network namespace as in socket mode.
    sh(&*pod, "one", "echo shared > /workspace/f").await;
    assert_eq!(sh(&*pod, "two", "cat /workspace/f").await, "shared\n");

    pod.teardown().await.expect("teardown");
    assert!(
        !network_exists(&backend, &name).await,
        "the network is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_dial_out_are_on_separate_networks() {
    let backend = dial_out().await;
    let (spec_a, spec_b) = (spec("a", &["main"]), spec("b", &["main"]));
    let (a, b) = tokio::join!(
        backend.provision_spec(&spec_a, "b-a"),
        backend.provision_spec(&spec_b, "b-b"),
    );
    let (a, b) = (a.expect("provision a"), b.expect("provision b"));
    let ip = "ip -4 -o addr show | grep -v ' lo ' | awk '{print $4}'";
    let (ip_a, ip_b) = (sh(&*a, "main", ip).await, sh(&*b, "main", ip).await);
    assert_ne!(ip_a, ip_b);
    let (net_a, net_b) = (network_name(a.id()), network_name(b.id()));
    assert_ne!(net_a, net_b);
    for p in [a, b] {
        p.teardown().await.expect("teardown");
    }
    assert!(!network_exists(&backend, &net_a).await);
    assert!(!network_exists(&backend, &net_b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_the_networks_of_dead_owners_only() {
    let backend = common::backend().await;
    let tag = format!("{:x}", fastrand::u64(..));
    let make = |owner: &str, suffix: &str| NetworkCreateRequest {
        name: network_name(&format!("gc-{tag}-{suffix}")),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (LABEL_POD.to_string(), format!("gc-{tag}-{suffix}")),
            (LABEL_OWNER.to_string(), owner.to_string()),
        ])),
        ..Default::default()
    };
    let dead = make("another-boot/1/1", "dead");
    let alive = make(valet_docker::gc::current_owner(), "alive");
    for n in [&dead, &alive] {
        backend
            .docker()
            .create_network(n.clone())
            .await
            .expect("create network");
    }
    let removed = backend.gc(&Scope::Orphans).await.expect("gc");
    assert!(removed.networks.contains(&dead.name), "{removed:?}");
    assert!(!removed.networks.contains(&alive.name), "{removed:?}");
    assert!(
        removed
            .summary()
            .contains(&format!("network {}", dead.name))
    );
    assert!(!network_exists(&backend, &dead.name).await);
    assert!(network_exists(&backend, &alive.name).await);
    let removed = backend.gc(&Scope::mine()).await.expect("gc mine");
    assert!(removed.networks.contains(&alive.name), "{removed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_and_ready_sandboxes_work_in_dial_out_mode() {
    let backend = dial_out().await.with_warm_pool(1);
    let s = spec("warm-dial", &["main"]);
    backend.warm(&s);
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.warm_ready(&s) < 1 || backend.ready_sandboxes() < 1 {
        assert!(Instant::now() < deadline, "the pool did not fill in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A warm pod, then a pod of a new template on a ready sandbox: both dialled in.
    let warm = backend
        .provision_spec(&s, "b-warm")
        .await
        .expect("warm pod");
    assert_eq!(sh(&*warm, "main", "echo warm").await, "warm\n");
    let other = backend
        .provision_spec(&spec("other-dial", &["main", "side"]), "b-other")
        .await
        .expect("a pod on a ready sandbox");
    assert_eq!(sh(&*other, "side", "echo side").await, "side\n");
    let nets = [network_name(warm.id()), network_name(other.id())];
    for p in [warm, other] {
        p.teardown().await.expect("teardown");
    }
    backend.drain().await.expect("drain");
    for n in nets {
        assert!(!network_exists(&backend, &n).await, "{n} left");
    }
}
