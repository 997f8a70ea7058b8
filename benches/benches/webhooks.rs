//! Webhook intake: signed GitHub push deliveries against a running controller on loopback,
//! each answered only after its build record is committed. Accepted deliveries per second
//! and latency percentiles, against the same client on `GET /healthz` (a store read and a
//! small JSON answer) measured in the same run.
//!
//! `cargo bench -p valet-benches --bench webhooks` (set `REQUESTS=N`, default 20000;
//! `CONNECTIONS=N`, default 32). Goal: ≥ 2000 accepted/s and p99 ≤ 20 ms on 2 cores. Two
//! loads: as fast as the controller answers (its capacity; latency there is mostly waiting
//! behind the other connections' requests), and deliveries offered at 2000/s on a schedule,
//! with latency counted from each one's scheduled time (the goal's p99).
//!
//! The controller runs in a second process (this binary again, `VALET_BENCH_SERVE=<config>`),
//! the client here: 32 keep-alive HTTP/1.1 connections, each delivery a distinct body with
//! a distinct `X-GitHub-Delivery`, signed with HMAC-SHA256. Every delivery must be
//! answered 201 (a new build recorded). So that running builds do not compete with the
//! intake for the cores, the global concurrency is 1 and the first build waits on a gate
//! file: every later build stays queued, recorded in SQLite like any other.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const SECRET: &str = "bench secret";
/// The commit every delivery names.
static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(config) = std::env::var("VALET_BENCH_SERVE") {
        serve(Path::new(&config));
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is understood.
    client();
}

/// The controller process: starts, prints its address, serves until stdin closes.
fn serve(config: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = valet_controller::Config::load(config).expect("the bench config");
        let running = valet_controller::Controller::start(config)
            .await
            .expect("the controller starts");
        println!("LISTENING {}", running.addr);
        std::io::stdout().flush().ok();
        // The parent closes stdin when it is done (or dies).
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await
        .ok();
        running.shutdown(Duration::from_secs(5)).await;
    });
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=valet",
            "-c",
            "user.email=valet@example.invalid",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("git runs");
    assert!(st.success(), "git {args:?}");
}

fn client() {
    let requests = env_usize("REQUESTS", 20_000);
    let connections = env_usize("CONNECTIONS", 32);
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = tmp.path().join("repo");
    let gate = tmp.path().join("gate");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(
        repo.join("Jenkinsfile"),
        format!(
            "node {{\n  stage('Hold') {{\n    sh 'while [ ! -f {} ]; do sleep 0.2; done'\n  }}\n}}\n",
            gate.display()
        ),
    )
    .unwrap();
    git(&repo, &["add", "Jenkinsfile"]);
    git(&repo, &["commit", "--quiet", "-m", "bench"]);
    let head = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git rev-parse");
    // Every delivery names the real commit: the first build checks it out and holds on the
    // gate, so the builds behind it stay queued and do not compete with the intake.
    COMMIT
        .set(String::from_utf8_lossy(&head.stdout).trim().to_string())
        .expect("set once");
    let config = tmp.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\nconcurrency: 1\nrepositories:\n  - name: org/app\n    url: file://{}\n    secret: \"{SECRET}\"\n    branches: [main]\n",
            tmp.path().join("data").display(),
            repo.display()
        ),
    )
    .unwrap();

    let mut server = Command::new(std::env::current_exe().expect("this binary"))
        .env("VALET_BENCH_SERVE", &config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the controller process starts");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the controller's address");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("unexpected: {line:?}"))
        .parse()
        .expect("an address");

    println!(
        "webhooks: {requests} requests over {connections} keep-alive connections to a controller in another process (load average before: {})",
        loadavg()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Warm-up of both paths (not counted): connections, SQLite pages, allocator.
        run(addr, Kind::Health, 1000, connections, 0, None).await;
        run(addr, Kind::Push, 1000, connections, 1_000_000, None).await;
        let health = run(addr, Kind::Health, requests, connections, 0, None).await;
        let push = run(addr, Kind::Push, requests, connections, 0, None).await;
        health.print("GET /healthz (baseline), as fast as answered");
        push.print("POST /hooks/github (signed push, build recorded), as fast as answered");
        println!(
            "ratio: deliveries/s ÷ healthz/s = {:.2}; p99 delivery ÷ p99 healthz = {:.2}",
            push.rate() / health.rate(),
            push.pct(0.99).as_secs_f64() / health.pct(0.99).as_secs_f64()
        );
        // The goal's load: deliveries offered at 2000/s on a schedule, latency counted from
        // each one's scheduled time (so a stall delays, and is charged to, every request
        // behind it).
        let paced = run(addr, Kind::Push, requests, connections, 0, Some(2000.0)).await;
        paced.print("POST /hooks/github offered at 2000/s");
        let goal = push.rate() >= 2000.0 && paced.pct(0.99) <= Duration::from_millis(20);
        println!(
            "goal (≥ 2000/s accepted, p99 ≤ 20 ms at 2000/s): {}",
            if goal { "met" } else { "NOT met" }
        );
        // Every accepted delivery is a build record: the newest build's number says how many.
        let (status, body) = get(addr, "/api/builds?limit=1").await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let number = v["builds"][0]["number"].as_i64().unwrap_or(0);
        assert_eq!(
            number as usize,
            2 * requests + 1000,
            "every delivery recorded one build"
        );
        println!("builds recorded: {number}");
        // The intake is measured alone only if the builds stayed queued behind the first.
        let (_, first) = get(addr, "/api/builds/1").await;
        let first: serde_json::Value = serde_json::from_str(&first).unwrap();
        let (_, metrics) = get(addr, "/metrics").await;
        let finished: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("valet_builds_total"))
            .collect();
        println!(
            "first build: {} {}; finished builds: {finished:?}",
            first["status"], first["reason"]
        );
    });
    println!("load average after: {}", loadavg());
    std::fs::write(&gate, "").ok();
    drop(server.stdin.take());
    let _ = server.wait();
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Health,
    Push,
}

struct Outcome {
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies[i.min(self.latencies.len() - 1)]
    }
    fn print(&self, what: &str) {
        println!(
            "{what}: {} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.latencies.len(),
            self.wall.as_secs_f64(),
            self.rate(),
            ms(self.pct(0.50)),
            ms(self.pct(0.90)),
            ms(self.pct(0.99)),
            ms(*self.latencies.last().unwrap()),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A signed push delivery; `n` makes its delivery id unique.
fn push_request(n: usize) -> hyper::Request<Full<Bytes>> {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "after": COMMIT.get().expect("the commit"),
        "deleted": false,
        "repository": {"name": "app", "full_name": "org/app"},
        "pusher": {"name": "bench"},
    })
    .to_string();
    let sig = valet_controller::hooks::hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
    hyper::Request::post("/hooks/github")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", format!("bench-{n}"))
        .header("x-hub-signature-256", sig)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn health_request() -> hyper::Request<Full<Bytes>> {
    hyper::Request::get("/healthz")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect(addr).await;
    let req = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = s.send_request(req).await.expect("answer");
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `total` requests over `connections` connections. Without `rate`, each connection sends
/// its next request when the previous one is answered; with it, request `i` is due at
/// `i / rate` seconds and its latency counts from then. Delivery numbers start at `offset`.
async fn run(
    addr: std::net::SocketAddr,
    kind: Kind,
    total: usize,
    connections: usize,
    offset: usize,
    rate: Option<f64>,
) -> Outcome {
    static NEXT_DELIVERY: AtomicUsize = AtomicUsize::new(0);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(addr).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = rate.map(|r| started + Duration::from_secs_f64(i as f64 / r));
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let req = match kind {
                        Kind::Health => health_request(),
                        Kind::Push => {
                            push_request(offset + NEXT_DELIVERY.fetch_add(1, Ordering::Relaxed))
                        }
                    };
                    let t = due.unwrap_or_else(Instant::now);
                    s.ready().await.expect("connection ready");
                    let r = s.send_request(req).await.expect("an answer");
                    let status = r.status().as_u16();
                    let body = r.into_body().collect().await.expect("body").to_bytes();
                    lat.push(t.elapsed());
                    let want = if kind == Kind::Push { 201 } else { 200 };
                    assert_eq!(status, want, "{}", String::from_utf8_lossy(&body));
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    let wall = started.elapsed();
    latencies.sort();
    Outcome { wall, latencies }
}
