//! The memory of a real `valet serve` process (its peak resident set, `VmHWM` in
//! `/proc/PID/status`) under what a sender or a pipeline can throw at it: a burst of large
//! webhook bodies, 200 builds of hostile and normal pipelines, a step that prints 16 MiB
//! and a client that reads all of its events. The bounds are the ones `docs/controller.md`
//! states ("Limits").

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ROOT, git, http, http_text, repo_with, serve_with};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

/// A field of `/proc/PID/status` in bytes (`VmHWM`: the peak resident set; `VmRSS`: now).
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {text}"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

fn hostile(name: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/pipelines/hostile/{name}")).expect("pipeline")
}

/// A repository whose branch `KIND` holds the pipeline of that kind.
fn repo_of(dir: &Path, kinds: &[(&str, String)]) -> std::path::PathBuf {
    let repo = repo_with(dir, "node { echo 'main' }\n");
    for (kind, pipeline) in kinds {
        git(&repo, &["checkout", "--quiet", "-b", kind, "main"]);
        std::fs::write(repo.join("Jenkinsfile"), pipeline).unwrap();
        git(&repo, &["commit", "--quiet", "-am", kind]);
    }
    repo
}

fn config(dir: &Path, repo: &Path, top: &str) -> std::path::PathBuf {
    let config = dir.join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\n{top}repositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            repo.display()
        ),
    )
    .unwrap();
    config
}

/// Every build of the controller (up to 500).
fn all_builds(addr: SocketAddr) -> Vec<Value> {
    let (status, v) = http(addr, "GET", "/api/builds?limit=500", "");
    assert_eq!(status, 200, "{v}");
    v["builds"].as_array().cloned().unwrap_or_default()
}

/// One request with a large body on its own connection: the body is written by another
/// thread while the answer is read, as a sender does. The answer's status (0: none).
fn post_large(addr: SocketAddr, path: &str, headers: &str, body: Arc<Vec<u8>>) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The server may answer and close before taking all of it.
        let _ = w.write_all(&body);
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 40 senders each post a 24 MiB body at once (30 with a signature header, whose bodies
/// must be read to be checked, 10 unsigned): held together they would be 960 MiB. The
/// controller holds at most its 64 MiB body budget, refuses the rest with 503 and
/// Retry-After, and its peak resident set stays under 200 MiB; every request is answered.
#[test]
fn forty_concurrent_24_mib_bodies_keep_the_controller_under_200_mib() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), "node { echo 'hi' }\n");
    let config = config(dir.path(), &repo, "");
    let (mut child, addr) = serve_with(&config, &[]);
    let pid = child.id();
    let body = Arc::new(vec![b'x'; 24 * MIB as usize]);
    let wrong = format!("sha256={}", "0".repeat(64));
    let senders: Vec<_> = (0..40)
        .map(|i| {
            let body = body.clone();
            let headers = if i % 4 == 3 {
                String::new()
            } else {
                format!("X-GitHub-Event: push\r\nX-Hub-Signature-256: {wrong}\r\n")
            };
            let path = if i % 4 == 3 {
                "/hooks/generic"
            } else {
                "/hooks/github"
            };
            std::thread::spawn(move || (i, post_large(addr, path, &headers, body)))
        })
        .collect();
    let answers: Vec<(usize, u16)> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = proc_status(pid, "VmHWM");
    let (health, _) = http(addr, "GET", "/healthz", "");
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "peak resident set: {} MiB; answers: {answers:?}",
        peak / MIB
    );
    for (i, status) in &answers {
        // 400: read, and not the JSON of a push; 401: unsigned, or read and refused.
        assert!(
            [400, 401, 503].contains(status),
            "request {i} got {status}: {answers:?}"
        );
    }
    assert_eq!(health, 200);
    assert!(
        peak < 200 * MIB,
        "the controller's peak resident set was {} MiB",
        peak / MIB
    );
    assert!(
        answers.iter().any(|(i, s)| i % 4 != 3 && *s == 400),
        "some bodies were read: {answers:?}"
    );
    assert!(
        answers.iter().any(|(_, s)| *s == 503),
        "the budget refused some: {answers:?}"
    );
}

/// 200 builds through one `valet serve` on the local backend, four at a time: normal short
/// builds and the hostile ones (output far past the step log cap, recursion without end,
/// a failing step, a step past its timeout, a step printing its secret). Every build ends
/// with a result, every non-SUCCESS one with a reason, the secret is in no log, and the
/// controller's resident set stays under 160 MiB all along.
#[test]
fn two_hundred_mixed_builds_end_with_results_and_the_controller_stays_under_160_mib() {
    const SECRET: &str = "s0ak-secret-value-9731";
    let dir = tempfile::tempdir().unwrap();
    let kinds = [
        ("normal", "node {\n  sh 'echo short build'\n}\n".to_string()),
        ("flood", hostile("log-flood.groovy")),
        ("deep", hostile("deep-recursion.groovy")),
        (
            "fail",
            "node {\n  sh 'echo about to fail; exit 3'\n}\n".to_string(),
        ),
        ("timeout", hostile("step-timeout.groovy")),
        ("secret", hostile("secret-echo.groovy")),
    ];
    let repo = repo_of(dir.path(), &kinds);
    let config = config(
        dir.path(),
        &repo,
        "concurrency: 4\nstep_log_limit: 1048576\n",
    );
    let (mut child, addr) = serve_with(&config, &[("VALET_SECRET_SOAK_TOKEN", SECRET)]);
    let pid = child.id();
    // Ten of each hostile kind at most per twenty builds; the rest are normal.
    let plan: Vec<&str> = (0..200)
        .map(|i| match i % 10 {
            1 => "flood",
            3 => "deep",
            5 => "fail",
            7 => "timeout",
            9 => "secret",
            _ => "normal",
        })
        .collect();
    let start = Instant::now();
    for kind in &plan {
        let (status, v) = http(
            addr,
            "POST",
            "/api/repos/app/builds",
            &format!(r#"{{"branch":"{kind}"}}"#),
        );
        assert_eq!(status, 201, "{v}");
    }
    let deadline = start + Duration::from_secs(210);
    let mut max_rss = 0;
    let builds = loop {
        max_rss = max_rss.max(proc_status(pid, "VmRSS"));
        let builds = all_builds(addr);
        if builds.len() == 200 && builds.iter().all(|b| !b["result"].is_null()) {
            break builds;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let open = builds.iter().filter(|b| b["result"].is_null()).count();
            panic!("{open} of {} builds did not end within 210 s", builds.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = start.elapsed();
    let peak = proc_status(pid, "VmHWM");
    let mut logs = Vec::new();
    for b in &builds {
        let id = b["id"].as_i64().unwrap();
        let (_, log) = http_text(addr, "GET", &format!("/api/builds/{id}/log"), "");
        logs.push((b.clone(), log));
    }
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "200 builds in {:.1} s; resident set: max sampled {} MiB, peak {} MiB",
        took.as_secs_f64(),
        max_rss / MIB,
        peak / MIB
    );
    assert!(alive, "the controller died");
    let expected = |kind: &str| match kind {
        "normal" | "flood" | "secret" => "SUCCESS",
        "deep" | "fail" => "FAILURE",
        _ => "ABORTED",
    };
    for (b, log) in &logs {
        let kind = b["branch"].as_str().unwrap();
        let result = b["result"].as_str().unwrap();
        assert_eq!(result, expected(kind), "{kind}: {b:#}\n{log}");
        if result != "SUCCESS" {
            assert!(
                b["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{kind} ended {result} without a reason: {b:#}\n{log}"
            );
        }
        assert!(!log.contains(SECRET), "{kind}: the secret is in the log");
        match kind {
            "flood" => {
                assert!(log.contains("[valet: log truncated:"), "{log}");
                assert!(log.contains("after the flood"));
                assert!(log.len() < 2 * MIB as usize, "{} bytes", log.len());
            }
            "deep" => assert!(log.contains("StackOverflowError"), "{log}"),
            "secret" => assert!(log.contains("token: ****"), "{log}"),
            _ => {}
        }
    }
    assert!(
        peak < 160 * MIB,
        "the controller's peak resident set was {} MiB",
        peak / MIB
    );
}

/// A step printing 16 MiB of short lines under a 4 MiB `step_log_limit`: the events file
/// stays within 3 × the cap, and a client reading every event of the finished build (the
/// server-sent stream) leaves the controller under 128 MiB.
#[test]
fn a_16_mib_step_keeps_its_events_within_the_cap_and_streaming_them_stays_under_128_mib() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(
        dir.path(),
        "node {\n  sh 'yes \"short line\" | head -c 16777216'\n}\n",
    );
    let config = config(dir.path(), &repo, "step_log_limit: 4194304\n");
    let (mut child, addr) = serve_with(&config, &[]);
    let pid = child.id();
    let id = common::trigger(addr, "app", "{}");
    let build = common::wait_finished(addr, id, Duration::from_secs(120));
    assert_eq!(build["result"], "SUCCESS", "{build:#}");
    let events_file = dir
        .path()
        .join("data/logs")
        .join(id.to_string())
        .join("events.jsonl");
    let events_size = std::fs::metadata(&events_file).unwrap().len();
    // Read the whole stream, a few KiB at a time, counting without keeping it.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /api/builds/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        common::token_of(addr).expect("the server's token")
    )
    .unwrap();
    let (mut streamed, mut buf) = (0u64, [0u8; 8192]);
    let mut tail = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                streamed += n as u64;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(4096);
                tail.drain(..keep);
            }
        }
    }
    let peak = proc_status(pid, "VmHWM");
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "events file {} MiB, streamed {} MiB, peak resident set {} MiB",
        events_size / MIB,
        streamed / MIB,
        peak / MIB
    );
    assert!(
        events_size <= 3 * 4 * MIB,
        "events.jsonl is {events_size} bytes for a cap of 4 MiB"
    );
    assert!(
        streamed >= events_size / 2,
        "the stream carried the events: {streamed}"
    );
    let tail = String::from_utf8_lossy(&tail);
    assert!(
        tail.contains("build_finished") || tail.contains("SUCCESS"),
        "{tail}"
    );
    assert!(
        peak < 128 * MIB,
        "the controller's peak resident set was {} MiB",
        peak / MIB
    );
}
