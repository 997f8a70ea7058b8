//! Shared by the tests that run the `valet` binary: Docker prerequisites, a git repository,
//! `valet serve` as a child process and its HTTP API.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// What every Docker run needs on a machine where nothing was built before: the static
/// `valet-agent` (where `valet` looks for it: target/valet-agent) and the base image.
pub fn ensure_base_image() {
    static AGENT: std::sync::Once = std::sync::Once::new();
    AGENT.call_once(|| {
        valet_agent::binary::build_static().unwrap_or_else(|e| panic!("{e}"));
    });
    let present = Command::new("docker")
        .args(["image", "inspect", "valet/busybox:latest"])
        .output()
        .expect("the docker CLI runs (the project's machines have Docker)");
    if present.status.success() {
        return;
    }
    let built = Command::new(format!("{ROOT}/images/build.sh"))
        .output()
        .expect("images/build.sh runs");
    assert!(
        built.status.success(),
        "images/build.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=valet",
            "-c",
            "user.email=valet@example.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A git repository `DIR/repo` on branch `main` whose one commit holds `pipeline` as its
/// `Jenkinsfile`.
pub fn repo_with(dir: &Path, pipeline: &str) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("Jenkinsfile"), pipeline).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["add", "Jenkinsfile"]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    repo
}

/// Starts `valet serve`; returns the child and the address it printed.
pub fn serve(config: &Path) -> (Child, SocketAddr) {
    serve_with(config, &[])
}

/// The API token of each server [`serve_with`] started, by address.
static TOKENS: std::sync::Mutex<Vec<(SocketAddr, String)>> = std::sync::Mutex::new(Vec::new());

/// Creates an API token with every scope through `valet token create`.
pub fn create_token(config: &Path, name: &str, scopes: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["token", "create", name, "--scopes", scopes, "--config"])
        .arg(config)
        .output()
        .expect("valet token runs");
    assert!(
        out.status.success(),
        "valet token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The token [`http`] sends to the server at `addr`.
pub fn token_of(addr: SocketAddr) -> Option<String> {
    let t = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    t.iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| t.clone())
}

/// `serve` with more environment variables. A token with every scope is created first
/// (once per data directory) and sent by [`http`].
pub fn serve_with(config: &Path, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let token = {
        let existing = std::fs::read_to_string(config.with_extension("token")).ok();
        existing.unwrap_or_else(|| {
            let t = create_token(config, "tests", "all");
            std::fs::write(config.with_extension("token"), &t).unwrap();
            t
        })
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("valet serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a first line");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    TOKENS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((addr, token));
    (child, addr)
}

/// A JSON request; the answer's status and its body as JSON (`null` when it is not).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = http_text(addr, method, path, body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A request; the answer's status and its body as text (unchunked: `Connection: close`).
pub fn http_text(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = token_of(addr)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("an answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

pub fn builds(addr: SocketAddr) -> Vec<Value> {
    let (status, v) = http(addr, "GET", "/api/builds?limit=100", "");
    assert_eq!(status, 200);
    v["builds"].as_array().cloned().unwrap_or_default()
}

/// Containers, volumes and networks on the engine whose owner label names process `pid`.
pub fn owned_by(pid: u32) -> Vec<String> {
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

/// Starts a build of repository `repo` through the API with `body`; its id.
pub fn trigger(addr: SocketAddr, repo: &str, body: &str) -> i64 {
    let (status, v) = http(addr, "POST", &format!("/api/repos/{repo}/builds"), body);
    assert_eq!(status, 201, "{v}");
    v["build"].as_i64().expect("a build id")
}

/// Polls build `id` until it has a result (at most `within`); its detail.
pub fn wait_finished(addr: SocketAddr, id: i64, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, b) = http(addr, "GET", &format!("/api/builds/{id}"), "");
        assert_eq!(status, 200, "{b}");
        if !b["result"].is_null() {
            return b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the build did not end: {b:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
