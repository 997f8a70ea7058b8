//! Step overhead: 1000 × `sh 'true'` through the runtime on the local backend, against
//! 1000 plain fork+exec of `/bin/sh -c true` measured in the same run (and, between the two,
//! 1000 commands through the backend's `StepRunner` alone, to show where the time goes).
//!
//! `cargo bench -p valet-benches --bench step_overhead` (set `STEPS=N` for another count).
//! Target: at most 2 ms a step.

use std::time::{Duration, Instant};

use valet_backend::conformance::ProvisionSpec as _;
use valet_backend::{Command, conformance};

fn steps() -> usize {
    std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn baseline(n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let st = std::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .expect("run /bin/sh");
        assert!(st.success());
    }
    started.elapsed()
}

async fn backend_only(n: usize) -> Duration {
    let backend = valet_local::LocalBackend::temporary();
    let pod = backend
        .provision_spec(&conformance::spec("bench", &["default"]), "bench")
        .await
        .expect("provision");
    let runner = pod.runner("default").expect("runner");
    let started = Instant::now();
    for _ in 0..n {
        let exec = runner
            .start(Command::new(["/bin/sh", "-xe", "-c", "true"]))
            .await
            .expect("start");
        let out = conformance::collect(exec).await.expect("collect");
        assert!(out.status.success());
    }
    let took = started.elapsed();
    pod.teardown().await.expect("teardown");
    took
}

async fn runtime(n: usize) -> (Duration, usize) {
    let text =
        format!("node {{\n    for (int i = 0; i < {n}; i++) {{\n        sh 'true'\n    }}\n}}\n");
    let parsed = valet_dsl::parse(&text);
    let script = parsed.script.expect("the bench pipeline parses");
    let source = valet_dsl::SourceFile::new("step_overhead.groovy", text.clone());
    let plan = valet_plan::plan(&script, &source);
    let backend = valet_local::LocalBackend::temporary();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let opts = valet_runtime::RunOptions::default();
    let started = Instant::now();
    let outcome = valet_runtime::run(
        &script,
        &source,
        &plan.graph,
        &backend,
        &opts,
        tx,
        valet_runtime::CancellationToken::new(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(outcome.result, valet_runtime::BuildResult::Success);
    (took, counter.await.expect("events"))
}

fn ms_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1000.0 / n as f64
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once with few steps.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n = if quick { 20 } else { steps() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Warm up: page cache, allocator, tokio's process reaper.
    let _ = baseline(20);
    rt.block_on(runtime(20));
    let base = baseline(n);
    let direct = rt.block_on(backend_only(n));
    let (run, events) = rt.block_on(runtime(n));
    println!("step overhead, {n} steps of `sh 'true'`:");
    println!(
        "  fork+exec /bin/sh -c true (baseline)  {:8.3} ms/step  {:8.1} ms total",
        ms_per(base, n),
        base.as_secs_f64() * 1e3
    );
    println!(
        "  local backend StepRunner only         {:8.3} ms/step  {:8.1} ms total  ({:.2}x baseline)",
        ms_per(direct, n),
        direct.as_secs_f64() * 1e3,
        direct.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "  valet runtime (sh step, events)       {:8.3} ms/step  {:8.1} ms total  ({:.2}x baseline, {events} events)",
        ms_per(run, n),
        run.as_secs_f64() * 1e3,
        run.as_secs_f64() / base.as_secs_f64()
    );
    let per = ms_per(run, n);
    println!(
        "  goal: ≤ 2 ms/step: {}",
        if per <= 2.0 { "met" } else { "NOT met" }
    );
}
