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
    let left = common::owned_by(pid);
    assert!(left.is_empty(), "the run left {left:?}\n{errors}");
}

/// A secret of another repository, held by the valet process running the step.
const OTHER_SECRET: &str = "other-repo-token-5f3e9a";
/// A variable of the controller's own environment, not a secret but not the step's either.
const CONTROLLER_ONLY: &str = "controller-only-mark-7c21";

/// What a step of `read-controller-environ.groovy` found, as its log shows it.
fn assert_found_nothing(log: &str) {
    assert!(
        !log.contains(OTHER_SECRET),
        "a secret value reached the step:\n{log}"
    );
    assert!(
        !log.contains("VALET_SECRET_"),
        "a secret's name reached the step:\n{log}"
    );
}

/// `valet serve` as root with the local backend, holding another repository's secret in
/// its environment: a step reading its parent's and the valet process's `/proc/PID/environ`,
/// the valet process's memory map and its own environment finds no secret and nothing of
/// the controller's environment; it runs as `nobody` and can write its workspace.
#[test]
fn a_step_on_the_controller_cannot_read_the_controllers_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = std::fs::read_to_string(hostile("read-controller-environ.groovy")).unwrap();
    let pipeline = pipeline.replace(
        "        env\n",
        "        env\n        touch written-by-the-step && echo \"workspace: writable\"\n",
    );
    let repo = repo_with(dir.path(), &pipeline);
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nbackend:\n  kind: local\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();
    let (mut child, addr) = common::serve_with(
        &config,
        &[
            ("VALET_SECRET_OTHER_REPO_TOKEN", OTHER_SECRET),
            ("VALET_CONTROLLER_ONLY", CONTROLLER_ONLY),
        ],
    );
    let valet_pid = child.id();
    let id = common::trigger(addr, "app", r#"{"branch":"main"}"#);
    let build = common::wait_finished(addr, id, Duration::from_secs(60));
    let (_, log) = common::http_text(addr, "GET", &format!("/api/builds/{id}/log"), "");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(build["result"], "SUCCESS", "{build:#}\n{log}");
    assert_found_nothing(&log);
    assert!(
        !log.contains(CONTROLLER_ONLY),
        "the controller's environment reached the step:\n{log}"
    );
    // The step looked where it should have: the valet process, found up the tree.
    assert!(
        log.contains(&format!("valet process: {valet_pid}")),
        "{log}"
    );
    for closed in [
        "step user: 65534",
        "parent environ: not readable",
        "valet environ: not readable",
        "valet memory map: not readable",
        "workspace: writable",
    ] {
        assert!(log.contains(closed), "`{closed}` missing:\n{log}");
    }
}

/// `valet run` keeps the invoking user (root here, who reads every `/proc/PID/environ`):
/// the secret it was given still binds in `withCredentials`, yet the valet process's
/// environment, as a step reads it through `/proc`, no longer holds it. Asked to, it runs
/// steps as another user, who reads nothing of valet's.
#[test]
fn valet_run_takes_its_secrets_out_of_what_its_steps_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Jenkinsfile");
    let pipeline = std::fs::read_to_string(hostile("read-controller-environ.groovy")).unwrap();
    std::fs::write(
        &file,
        format!(
            "{pipeline}\nnode {{ withCredentials([string(credentialsId: 'other-repo-token', variable: 'T')]) {{ sh 'test \"$T\" = {OTHER_SECRET} && echo bound' }} }}\n"
        ),
    )
    .unwrap();
    let run = |opts: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(["run", "--backend", "local"])
            .args(opts)
            .arg(&file)
            .env("VALET_SECRET_OTHER_REPO_TOKEN", OTHER_SECRET)
            .output()
            .expect("valet runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert_found_nothing(&text);
    let me = nix_uid();
    assert!(text.contains(&format!("step user: {me}")), "{text}");
    assert!(text.contains("bound"), "the secret still binds:\n{text}");
    if me == 0 {
        // Root reads any process's environment: what it read held no secret.
        assert!(!text.contains("valet environ: not readable"), "{text}");
        let (code, text) = run(&["--backend-opt", "user=65534"]);
        assert_eq!(code, Some(0), "{text}");
        assert_found_nothing(&text);
        assert!(text.contains("step user: 65534"), "{text}");
        assert!(text.contains("valet environ: not readable"), "{text}");
    } else {
        // Non-dumpable: the same user cannot read it either.
        assert!(text.contains("valet environ: not readable"), "{text}");
    }
}

fn nix_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}
