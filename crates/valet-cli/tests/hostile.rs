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
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "fake"])
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

/// Containers, volumes and networks on the engine whose owner label names process `pid`.
fn owned_by(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for (kind, format) in [
        ("container", "{{.Names}} {{.Label \"valet.owner\"}}"),
        ("volume", "{{.Name}} {{.Label \"valet.owner\"}}"),
        ("network", "{{.Name}} {{.Label \"valet.owner\"}}"),
    ] {
        let args = [
            kind,
            "ls",
            "-a",
            "--filter",
            "label=valet.owner",
            "--format",
            format,
        ];
        // `-a` (stopped ones too) is the containers' flag only.
        let args: Vec<&str> = args
            .into_iter()
            .filter(|a| *a != "-a" || kind == "container")
            .collect();
        let out = Command::new("docker").args(&args).output().expect("docker");
        assert!(out.status.success(), "docker {args:?}: {out:?}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            if let (Some(name), Some(owner)) = (words.next(), words.next())
                && owner.split('/').nth(1) == Some(pid.to_string().as_str())
            {
                found.push(format!("{kind} {name}"));
            }
        }
    }
    found
}

/// A fork bomb in a Docker pod inside a 20-second `timeout`, held by a small process and
/// CPU limit: the build ends ABORTED with the timeout's reason within the timeout plus
/// 15 s of the step's start, and the engine keeps nothing of the run's.
#[test]
fn a_fork_bomb_in_a_timeout_ends_in_time_and_leaves_nothing() {
    use std::io::BufRead as _;
    common::ensure_base_image();
    let mut child = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args([
            "run",
            "--backend",
            "docker",
            "--default-pids-limit",
            "64",
            "--default-cpu-limit",
            "500",
            "--output",
            "json",
        ])
        .arg(hostile("fork-bomb-in-timeout.groovy"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("valet runs");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s);
        s
    });
    let mut step_started = None;
    let mut events = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let Ok(line) = line else { break };
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if ev["event"] == "step_started" && ev["step"] == "sh" {
            step_started = Some(Instant::now());
        }
        if ev["event"] != "output" {
            events.push(ev);
        }
    }
    let status = child.wait().expect("valet ends");
    let ended = Instant::now();
    let errors = errors.join().expect("stderr");
    let step_started =
        step_started.unwrap_or_else(|| panic!("the sh step never started: {events:#?}\n{errors}"));
    let took = ended - step_started;
    assert!(
        took <= Duration::from_secs(20 + 15),
        "the build ended {took:?} after the bomb started\n{errors}"
    );
    assert_eq!(status.code(), Some(3), "ABORTED: {events:#?}\n{errors}");
    let timeout = events
        .iter()
        .find(|ev| ev["event"] == "step_finished" && ev["step"] == "timeout")
        .unwrap_or_else(|| panic!("no end of the timeout step: {events:#?}"));
    assert!(
        timeout["error"]
            .as_str()
            .is_some_and(|e| e.contains("Timeout has been exceeded")),
        "{timeout:#}"
    );
    let left = owned_by(pid);
    assert!(left.is_empty(), "the run left {left:?}\n{errors}");
}
