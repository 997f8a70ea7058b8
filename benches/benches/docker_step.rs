//! Step overhead on Docker: 1000 × `sh 'true'` through the in-pod valet agent of one running
//! pod, against `docker exec CONTAINER true` through the CLI in the same run (fewer of those:
//! each takes tens of milliseconds). Also the full runtime (`node { for … sh 'true' }` on the
//! Docker backend, one pod start included).
//!
//! `cargo bench -p valet-benches --bench docker_step` (`STEPS=N`, `EXECS=N` for other counts).
//! Needs the Docker engine; builds `valet/busybox` and the static agent when missing.
//! Goal: at most 2 ms a step through the agent.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use valet_backend::conformance::ProvisionSpec as _;
use valet_backend::{Command, conformance};
use valet_docker::DockerBackend;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn backend() -> DockerBackend {
    let backend = DockerBackend::connect().await.expect("a Docker engine");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/build.sh");
    backend
        .ensure_base_image(&script)
        .await
        .expect("images/build.sh");
    let agent = tokio::task::spawn_blocking(valet_agent::binary::build_static)
        .await
        .expect("build thread")
        .expect("the static agent");
    backend.with_agent(agent)
}

/// Per-step times through the agent, and the pod's main container id (for the baseline).
async fn through_agent(
    backend: &DockerBackend,
    n: usize,
) -> (Vec<Duration>, Box<dyn valet_backend::Pod>) {
    let pod = backend
        .provision_spec(&conformance::spec("bench", &["main"]), "bench")
        .await
        .expect("provision");
    let runner = pod.runner("main").expect("runner");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let exec = runner
            .start(Command::new(["/bin/sh", "-c", "true"]))
            .await
            .expect("start");
        let out = conformance::collect(exec).await.expect("collect");
        times.push(started.elapsed());
        assert!(out.status.success());
    }
    (times, pod)
}

fn docker_exec(container: &str, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let st = std::process::Command::new("docker")
                .args(["exec", container, "true"])
                .status()
                .expect("docker exec");
            assert!(st.success());
            started.elapsed()
        })
        .collect()
}

async fn runtime(backend: &DockerBackend, n: usize) -> Duration {
    let text =
        format!("node {{\n    for (int i = 0; i < {n}; i++) {{\n        sh 'true'\n    }}\n}}\n");
    let parsed = valet_dsl::parse(&text);
    let script = parsed.script.expect("the bench pipeline parses");
    let source = valet_dsl::SourceFile::new("docker_step.groovy", text.clone());
    let plan = valet_plan::plan(&script, &source);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let opts = valet_runtime::RunOptions::default();
    let started = Instant::now();
    let outcome = valet_runtime::run(
        &script,
        &source,
        &plan.graph,
        backend,
        &opts,
        tx,
        valet_runtime::CancellationToken::new(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(outcome.result, valet_runtime::BuildResult::Success);
    let _ = drain.await;
    took
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once with few steps.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let (n, execs) = if quick {
        (20, 5)
    } else {
        (count("STEPS", 1000), count("EXECS", 100))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let backend = rt.block_on(backend());
    // Warm up: the image, the agent's page cache, the engine.
    let (_, pod) = rt.block_on(through_agent(&backend, 20));
    rt.block_on(pod.teardown()).expect("teardown");

    let (agent, pod) = rt.block_on(through_agent(&backend, n));
    let container = format!("{}-main", pod.id());
    let exec = docker_exec(&container, execs);
    rt.block_on(pod.teardown()).expect("teardown");
    let run = rt.block_on(runtime(&backend, n));

    let agent_total: Duration = agent.iter().sum();
    let (agent_med, exec_med) = (median(agent), median(exec));
    println!("docker step overhead, one running pod:");
    println!(
        "  docker exec CONTAINER true (CLI, baseline, {execs}×)  median {:8.3} ms",
        ms(exec_med)
    );
    println!(
        "  StepRunner through the agent ({n}×)                 median {:8.3} ms  mean {:8.3} ms  ({:.3}x baseline)",
        ms(agent_med),
        ms(agent_total) / n as f64,
        agent_med.as_secs_f64() / exec_med.as_secs_f64()
    );
    println!(
        "  valet runtime, sh 'true' ({n}×, one pod start incl.)   mean {:8.3} ms/step",
        ms(run) / n as f64
    );
    println!(
        "  goal: ≤ 2 ms/step through the agent: {}",
        if ms(agent_med) <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
