//! Pod ready on Docker: from the spec in hand to the first step's process running
//! (`provision` + the start of `sh 'true'`), for 1- and 3-container pods, cold, on a sandbox
//! the pool started ahead (a template not seen before), and from the warm pool, against `docker run --rm valet/busybox:latest true` through the docker CLI,
//! measured in the same run, the samples of all five interleaved so the machine's noise
//! falls on each alike.
//!
//! `cargo bench -p valet-benches --bench pod_ready` (set `SAMPLES=N`, default 15).
//! Goals: 3-container cold median ≤ 250 ms and no slower than the CLI; warm pool ≤ 30 ms.
//! Needs a Docker engine; builds `valet/busybox` with images/build.sh when missing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use valet_backend::conformance::ProvisionSpec as _;
use valet_backend::{Backend, Command, PodSpec, conformance};
use valet_docker::DockerBackend;

const IMAGE: &str = "valet/busybox:latest";

fn samples() -> usize {
    std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// `docker run --rm IMAGE true`, as a person would type it.
fn cli_baseline() -> Duration {
    let started = Instant::now();
    let st = std::process::Command::new("docker")
        .args(["run", "--rm", IMAGE, "true"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("the docker CLI runs");
    let took = started.elapsed();
    assert!(st.success(), "docker run failed");
    took
}

fn pod_spec(name: &str, containers: &[&str]) -> PodSpec {
    let mut s = conformance::spec(name, containers);
    for c in &mut s.containers {
        c.image = Some(IMAGE.into());
    }
    s
}

/// One pod ready: provision, start `sh 'true'` (timed up to here), then finish the step
/// and tear the pod down (not timed).
async fn ready_once(backend: &DockerBackend, spec: &PodSpec) -> Duration {
    let started = Instant::now();
    let pod = backend
        .provision_spec(spec, "bench")
        .await
        .expect("provision");
    let runner = pod
        .runner(&spec.containers[0].name)
        .expect("runner of the first container");
    let exec = runner
        .start(Command::new(["/bin/sh", "-xe", "-c", "true"]))
        .await
        .expect("start the step");
    let took = started.elapsed();
    let out = conformance::collect(exec).await.expect("the step ends");
    assert!(out.status.success(), "{out:?}");
    pod.teardown().await.expect("teardown");
    took
}

/// Waits, untimed, until a sandbox made ahead is ready.
async fn sandbox_ready(backend: &DockerBackend) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.ready_sandboxes() < 1 {
        assert!(Instant::now() < deadline, "no sandbox was made ahead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits, untimed, until the pool is full again for `spec`.
async fn refilled(backend: &DockerBackend, spec: &PodSpec) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.warm_ready(spec) < 1 {
        assert!(Instant::now() < deadline, "the pool did not refill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n = if quick { 2 } else { samples() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cold = DockerBackend::connect().await.expect("a Docker engine");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/build.sh");
        cold.ensure_base_image(&script)
            .await
            .expect("the base image");
        let warm = DockerBackend::connect()
            .await
            .expect("a Docker engine")
            .with_warm_pool(1);
        let one = pod_spec("bench1", &["main"]);
        let three = pod_spec("bench3", &["main", "db", "tools"]);
        let ahead = DockerBackend::connect()
            .await
            .expect("a Docker engine")
            .with_ready_sandboxes(1);
        ahead.warm(&one);
        warm.warm(&one);
        warm.warm(&three);
        refilled(&warm, &one).await;
        refilled(&warm, &three).await;

        // Warm-up: the engine's caches, the page cache, the CLI binary.
        cli_baseline();
        ready_once(&cold, &three).await;

        let mut cli = Vec::new();
        let mut cold1 = Vec::new();
        let mut cold3 = Vec::new();
        let mut ahead1 = Vec::new();
        let mut ahead3 = Vec::new();
        let mut warm1 = Vec::new();
        let mut warm3 = Vec::new();
        for _ in 0..n {
            cli.push(tokio::task::block_in_place(cli_baseline));
            cold1.push(ready_once(&cold, &one).await);
            cold3.push(ready_once(&cold, &three).await);
            sandbox_ready(&ahead).await;
            ahead1.push(ready_once(&ahead, &one).await);
            sandbox_ready(&ahead).await;
            ahead3.push(ready_once(&ahead, &three).await);
            refilled(&warm, &one).await;
            warm1.push(ready_once(&warm, &one).await);
            refilled(&warm, &three).await;
            warm3.push(ready_once(&warm, &three).await);
        }
        warm.shutdown().await.expect("drain the pool");
        ahead.shutdown().await.expect("drain the sandboxes");

        let base = median(&mut cli);
        println!("pod ready (spec → first step's process running), {n} samples each, medians:");
        let row = |what: &str, v: &mut Vec<Duration>| {
            let m = median(v);
            println!(
                "  {what:<34} {:8.1} ms  (min {:7.1}, max {:7.1})  {:5.2}x the CLI",
                ms(m),
                ms(v[0]),
                ms(v[v.len() - 1]),
                m.as_secs_f64() / base.as_secs_f64()
            );
            m
        };
        row("docker run --rm IMAGE true (CLI)", &mut cli);
        row("1 container, cold", &mut cold1);
        let c3 = row("3 containers, cold", &mut cold3);
        row("1 container, sandbox made ahead", &mut ahead1);
        let a3 = row("3 containers, sandbox made ahead", &mut ahead3);
        row("1 container, warm pool", &mut warm1);
        let w3 = row("3 containers, warm pool", &mut warm3);
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "  goal: 3-container cold ≤ 250 ms and ≤ the CLI: {}",
            met(c3 <= Duration::from_millis(250) && c3 <= base)
        );
        println!(
            "  3-container, sandbox made ahead ≤ 250 ms and ≤ the CLI: {}",
            met(a3 <= Duration::from_millis(250) && a3 <= base)
        );
        println!(
            "  goal: warm pool ≤ 30 ms: {}",
            met(w3 <= Duration::from_millis(30))
        );
    });
}
