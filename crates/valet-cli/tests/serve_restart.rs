//! `valet serve` as a process: a bad configuration is refused at start, and a controller
//! killed with SIGKILL while builds run and wait loses none of them and runs no step twice;
//! on Docker, the pods it left are removed when it starts again, and on the local backend the
//! processes its builds left, also outside their process groups, are ended.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{builds, http, repo_with, serve, serve_with};

#[test]
fn a_bad_configuration_is_refused_at_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:0\nrepositories:\n  - name: app\n    url: /srv/app\n    secret: x\n    branch: main\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("valet.yaml:6:"), "{err}");
    assert!(err.contains("branch"), "{err}");
    // Nothing was created.
    assert!(!dir.path().join("valet-data").exists());
}

#[test]
fn kill_9_while_10_builds_run_and_20_wait_loses_nothing_and_runs_no_step_twice() {
    let dir = tempfile::tempdir().unwrap();
    // Outside every workspace: each step appends one line, so a step run twice shows.
    let steps = dir.path().join("steps.txt");
    // A controller running as root runs local steps as `nobody`: the file is theirs to
    // append to.
    std::fs::write(&steps, "").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&steps, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    // Step one holds until the test releases it, so exactly the first 10 builds are inside
    // it when the controller is killed, however slow the machine.
    let release = dir.path().join("release");
    let pipeline = format!(
        "node {{\n  stage('One') {{ sh 'echo \"$BUILD_NUMBER one\" >> {0}; while [ ! -e {1} ]; do sleep 0.1; done' }}\n  stage('Two') {{ sh 'echo \"$BUILD_NUMBER two\" >> {0}' }}\n}}\n",
        steps.display(),
        release.display()
    );
    let repo = repo_with(dir.path(), &pipeline);
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nconcurrency: 10\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();

    let (mut first, addr) = serve(&config);
    for _ in 0..30 {
        let (status, v) = http(
            addr,
            "POST",
            "/api/repos/app/builds",
            r#"{"branch":"main"}"#,
        );
        assert_eq!(status, 201, "{v}");
    }
    // Wait until 10 builds are inside their first step.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = std::fs::read_to_string(&steps)
            .unwrap_or_default()
            .lines()
            .count();
        if started >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "only {started} builds started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = builds(addr);
    let running: Vec<i64> = before
        .iter()
        .filter(|b| b["status"] == "running")
        .map(|b| b["number"].as_i64().unwrap())
        .collect();
    assert_eq!(running.len(), 10, "{before:#?}");
    assert_eq!(
        before.iter().filter(|b| b["status"] == "queued").count(),
        20
    );
    first.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    first.wait().unwrap();
    std::fs::write(&release, "").unwrap();

    let (mut second, addr) = serve(&config);
    let restarted = Instant::now();
    // Every build is there; the ones that were running end with a reason within 30 s.
    let deadline = Instant::now() + Duration::from_secs(45);
    let all = loop {
        let all = builds(addr);
        assert_eq!(all.len(), 30);
        let was_running_ended = all
            .iter()
            .filter(|b| running.contains(&b["number"].as_i64().unwrap()))
            .all(|b| !b["result"].is_null());
        assert!(
            was_running_ended || restarted.elapsed() < Duration::from_secs(30),
            "running builds not ended within 30 s: {all:#?}"
        );
        if all.iter().all(|b| !b["result"].is_null()) {
            break all;
        }
        assert!(Instant::now() < deadline, "builds did not finish: {all:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for b in &all {
        let n = b["number"].as_i64().unwrap();
        if running.contains(&n) {
            assert_eq!(b["result"], "ERROR", "{b:#}");
            assert_eq!(b["reason"], "controller restarted", "{b:#}");
        } else {
            assert_eq!(b["result"], "SUCCESS", "{b:#}");
        }
    }
    // No step ran twice; the waiting builds ran both steps, the killed ones never reached
    // their second.
    let lines = std::fs::read_to_string(&steps).unwrap();
    let mut seen = std::collections::HashSet::new();
    for l in lines.lines() {
        assert!(seen.insert(l.to_string()), "step ran twice: {l}\n{lines}");
    }
    for n in 1..=30 {
        assert!(seen.contains(&format!("{n} one")), "{n} one\n{lines}");
        assert_eq!(
            seen.contains(&format!("{n} two")),
            !running.contains(&n),
            "{n} two\n{lines}"
        );
    }
    // What the killed builds left (their checkouts and workspaces) is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("data").join("builds"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn after_kill_9_the_next_start_removes_the_docker_pods_of_the_killed_controller() {
    common::ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(
        dir.path(),
        "podTemplate(containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {\n  node(POD_LABEL) {\n    container('main') { sh 'sleep 300' }\n  }\n}\n",
    );
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nbackend:\n  kind: docker\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();

    let (mut first, addr) = serve(&config);
    let pid = first.id();
    let (status, v) = http(
        addr,
        "POST",
        "/api/repos/app/builds",
        r#"{"branch":"main"}"#,
    );
    assert_eq!(status, 201, "{v}");
    // Wait until the step runs in its pod.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let id = builds(addr)[0]["id"].clone();
        let (_, b) = http(addr, "GET", &format!("/api/builds/{id}"), "");
        if b["steps"].as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        assert!(b["result"].is_null(), "the build ended early: {b:#}");
        assert!(Instant::now() < deadline, "the step never started: {b:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = common::owned_by(pid);
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    assert!(
        left.len() >= 3,
        "the sandbox, the container and the volume of the running pod: {left:?}"
    );
    assert_eq!(
        common::owned_by(pid),
        left,
        "nothing removes them while no controller runs"
    );

    let (mut second, addr) = serve(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = &builds(addr)[0];
        let gone = common::owned_by(pid);
        if !b["result"].is_null() && gone.is_empty() {
            assert_eq!(b["result"], "ERROR", "{b:#}");
            assert_eq!(b["reason"], "controller restarted", "{b:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s of the restart: {b:#}, still there: {gone:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn a_build_whose_backend_is_unavailable_ends_in_error_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), "node { sh 'echo never' }\n");
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n    backend: docker\n",
            repo.display()
        ),
    )
    .unwrap();
    // An engine that is not there.
    let socket = dir.path().join("no-engine.sock");
    let host = format!("unix://{}", socket.display());
    let (mut server, addr) = serve_with(&config, &[("DOCKER_HOST", &host)]);
    let (status, v) = http(
        addr,
        "POST",
        "/api/repos/app/builds",
        r#"{"branch":"main"}"#,
    );
    assert_eq!(status, 201, "{v}");
    let id = v["build"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let b = loop {
        let (_, b) = http(addr, "GET", &format!("/api/builds/{id}"), "");
        if !b["result"].is_null() {
            break b;
        }
        assert!(Instant::now() < deadline, "the build never ended: {b:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(b["result"], "ERROR", "{b:#}");
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the docker backend is not available"),
        "{b:#}"
    );
}

/// The live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    valet_process::marks::with_cmdline(marker)
}

#[test]
fn after_kill_9_the_next_start_ends_what_a_local_build_left_outside_its_group() {
    let dir = tempfile::tempdir().unwrap();
    // A sleep duration no other process has in its command line.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let m = format!("3{:05}.{:09}", std::process::id() % 100_000, nanos);
    // The escaped process leaves the step's group and session, the build's directory and
    // its WORKSPACE variable: only the owner mark it inherited still ties it to the build.
    let repo = repo_with(
        dir.path(),
        &format!(
            "node {{\n  sh \"setsid sh -c 'cd / && unset WORKSPACE && sleep {m}' &\"\n  sh 'sleep 300'\n}}\n"
        ),
    );
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();

    let (mut first, addr) = serve(&config);
    let (status, v) = http(
        addr,
        "POST",
        "/api/repos/app/builds",
        r#"{"branch":"main"}"#,
    );
    assert_eq!(status, 201, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !processes_with(&m).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the escaped process never started: {:#?}",
            builds(addr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    assert!(
        !processes_with(&m).is_empty(),
        "nothing ends it while no controller runs"
    );

    let (mut second, addr) = serve(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = &builds(addr)[0];
        let left = processes_with(&m);
        if !b["result"].is_null() && left.is_empty() {
            assert_eq!(b["result"], "ERROR", "{b:#}");
            assert_eq!(b["reason"], "controller restarted", "{b:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s of the restart: {b:#}, still running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The start-up clean-up after a `kill -9` never keeps the HTTP server from answering: here
/// the backend's orphan collection hangs (as a flooded engine's can for minutes), and the
/// restarted controller still answers at once, has ended the killed build, and runs a new one.
#[test]
fn a_slow_clean_up_after_kill_9_does_not_hold_up_the_restarted_controller() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), "node { sh 'held' }\n");
    // Steps and orphan collection of the fake backend end only once this file exists.
    let release = dir.path().join("release");
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nbackend:\n  kind: fake\n  hold_until: {}\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            release.display(),
            repo.display()
        ),
    )
    .unwrap();
    let (mut first, addr) = serve(&config);
    let (status, v) = http(
        addr,
        "POST",
        "/api/repos/app/builds",
        r#"{"branch":"main"}"#,
    );
    assert_eq!(status, 201, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while builds(addr).iter().all(|b| b["status"] != "running") {
        assert!(Instant::now() < deadline, "the build did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().expect("SIGKILL");
    first.wait().unwrap();

    // Were the clean-up in the way, the controller would never get to print its address.
    let (mut second, addr) = serve(&config);
    let (health, _) = http(addr, "GET", "/healthz", "");
    let all = builds(addr);
    let (status, v) = http(
        addr,
        "POST",
        "/api/repos/app/builds",
        r#"{"branch":"main"}"#,
    );
    let _ = second.kill();
    let _ = second.wait();
    std::fs::write(&release, "").unwrap();
    assert_eq!(health, 200);
    assert_eq!(all[0]["result"], "ERROR", "{all:#?}");
    assert_eq!(all[0]["reason"], "controller restarted", "{all:#?}");
    assert_eq!(status, 201, "a new build is accepted: {v}");
}

/// Listening on every interface is said plainly at start, not taken silently.
#[test]
fn listening_on_every_interface_is_warned_about() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        "listen: 0.0.0.0:0\ndata_dir: data\nbackend:\n  kind: fake\nrepositories: []\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("valet serve starts");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .expect("a line on stderr");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("every interface"), "{line}");
}
