//! Hostile pipelines (`pipelines/hostile/`) against the real `valet` binary: whatever a
//! pipeline does, it ends its own build with a reason and nothing else.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ROOT, git, http, repo_with, serve};

fn hostile(name: &str) -> String {
    format!("{ROOT}/pipelines/hostile/{name}")
}

fn valet_run(file: &str) -> (Option<i32>, String) {
    valet_run_on("fake", file)
}

fn valet_run_on(backend: &str, file: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", backend])
        .arg(file)
        .output()
        .expect("valet runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn recursion_past_the_limit_fails_the_build_with_a_reason_instead_of_the_process() {
    let (code, text) = valet_run(&hostile("deep-recursion.groovy"));
    // A build failure (exit 1), not a signal from a stack overflow.
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("StackOverflowError"), "{text}");
    assert!(text.contains("Build FAILURE"), "{text}");
}

#[test]
fn deep_expressions_in_deep_calls_run_on_the_interpreters_stack() {
    let (code, text) = valet_run(&hostile("deep-expressions.groovy"));
    assert_eq!(code, Some(0), "{text}");
    // g(40) adds 40 × (1 + 200).
    assert!(text.contains("value 8040"), "{text}");
}

#[test]
fn the_controller_survives_a_build_that_recurses_without_end_and_runs_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(
        dir.path(),
        &std::fs::read_to_string(hostile("deep-recursion.groovy")).unwrap(),
    );
    std::fs::write(repo.join("Jenkinsfile"), "node { echo 'still here' }\n").unwrap();
    git(&repo, &["checkout", "--quiet", "-b", "plain"]);
    git(&repo, &["commit", "--quiet", "-am", "plain"]);
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nbackend:\n  kind: fake\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();
    let (mut child, addr) = serve(&config);
    for branch in ["main", "plain"] {
        let (status, v) = http(
            addr,
            "POST",
            "/api/repos/app/builds",
            &format!(r#"{{"branch":"{branch}"}}"#),
        );
        assert_eq!(status, 201, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first, second) = loop {
        let (_, a) = http(addr, "GET", "/api/builds/1", "");
        let (_, b) = http(addr, "GET", "/api/builds/2", "");
        if !a["result"].is_null() && !b["result"].is_null() {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "builds did not end: {a:#} {b:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (health, _) = http(addr, "GET", "/healthz", "");
    let (_, log) = common::http_text(addr, "GET", "/api/builds/1/log", "");
    let alive = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "the controller died");
    assert_eq!(health, 200);
    assert_eq!(first["result"], "FAILURE", "{first:#}");
    assert!(log.contains("StackOverflowError"), "{log}");
    assert_eq!(second["result"], "SUCCESS", "{second:#}");
}

/// `memory-by-request.groovy` asks for 512 MiB as the value of `sh(returnStdout: true)` and
/// of `readFile`, through the default limits: each step stops at 16 MiB and fails with the
/// limit, and the build ends FAILURE with both reasons instead of holding 512 MiB (twice).
#[test]
fn reading_512_mib_into_a_value_stops_at_the_limit() {
    let (code, text) = valet_run_on("local", &hostile("memory-by-request.groovy"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "sh: the output of returnStdout is over the limit of 16 MiB (16777216 bytes): "
        ),
        "{text}"
    );
    assert!(
        text.contains("readFile: big.bin is over the limit of 16 MiB (16777216 bytes): "),
        "{text}"
    );
    assert!(!text.contains("length: "), "{text}");
    assert!(text.contains("Build FAILURE"), "{text}");
}
