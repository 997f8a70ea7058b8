//! What the end-to-end tests share: a real git repository holding a Jenkinsfile, a real
//! controller on 127.0.0.1:0 with a temporary data directory, and a small HTTP/1.1 client
//! (real requests over TCP, no client library between the test and the server).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use valet_controller::{Config, Controller, Running};

pub const SECRET: &str = "It's a Secret to Everybody";

/// The API token every test server knows (every scope), sent by [`request`] unless a test
/// gives its own `Authorization` or uses [`request_as`].
pub const TOKEN: &str = "valet_0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";

/// Stores [`TOKEN`] (all scopes) in the data directory `dir`.
pub fn add_test_token(dir: &Path) {
    let store = valet_controller::open_store(dir).expect("store");
    store
        .add_token_digest(
            "tests",
            &valet_store::tokens::digest(TOKEN),
            &valet_controller::Scope::ALL,
            0,
        )
        .expect("test token");
}

/// A git repository in a temporary directory.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    /// A repository whose `main` holds `Jenkinsfile` with `pipeline`.
    pub fn new(pipeline: &str) -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
        let r = Repo { dir };
        r.commit("Jenkinsfile", pipeline);
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commits `file` with `text` on the current branch; returns the commit id.
    pub fn commit(&self, file: &str, text: &str) -> String {
        std::fs::write(self.path().join(file), text).expect("write");
        git(self.path(), &["add", file]);
        git(self.path(), &["commit", "--quiet", "-m", "change"]);
        git(self.path(), &["rev-parse", "HEAD"])
    }

    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

/// A controller serving one repository `app`, and its data directory.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub running: Option<Running>,
    pub data: tempfile::TempDir,
}

impl Server {
    pub async fn start(repo: &Repo, extra_repo_yaml: &str, top_yaml: &str) -> Server {
        let url = format!("file://{}", repo.path().display());
        Server::start_url(&url, extra_repo_yaml, top_yaml).await
    }

    /// A controller serving `org/app` cloned from `url`.
    pub async fn start_url(url: &str, extra_repo_yaml: &str, top_yaml: &str) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let yaml = format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\n{top_yaml}repositories:\n  - name: org/app\n    url: \"{url}\"\n    secret: \"{SECRET}\"\n{extra_repo_yaml}",
            data.path().display(),
        );
        let config = Config::parse(Path::new("valet.yaml"), &yaml, data.path())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        add_test_token(data.path());
        let running = Controller::start(config).await.expect("controller starts");
        Server {
            addr: running.addr,
            running: Some(running),
            data,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }

    pub async fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"").await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.addr, "POST", path, headers, body).await
    }

    /// A signed GitHub push of `commit` to `branch`.
    pub async fn github_push(&self, branch: &str, commit: &str, delivery: &str) -> Response {
        let body = github_push_body(branch, commit);
        let sig = valet_controller::hooks::hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
        self.post(
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
    }

    /// Polls the build until it has a result (at most 30 s); returns its detail.
    pub async fn wait_finished(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let b = self.get_json(&format!("/api/builds/{id}")).await;
            if !b["result"].is_null() {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} did not finish: {b:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, id: i64, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let b = self.get_json(&format!("/api/builds/{id}")).await;
            if b["status"] == status {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} never {status}: {b:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn builds(&self) -> Vec<Value> {
        self.get_json("/api/builds?limit=500").await["builds"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn log(&self, id: i64) -> String {
        let r = self.get(&format!("/api/builds/{id}/log")).await;
        assert_eq!(r.status, 200);
        r.body
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(10)).await;
        }
    }
}

pub fn github_push_body(branch: &str, commit: &str) -> String {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "after": commit,
        "deleted": false,
        "repository": {"name": "app", "full_name": "org/app"},
        "pusher": {"name": "someone"},
    })
    .to_string()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn head(method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> String {
    let mut s = format!("{method} {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        s.push_str("Host: 127.0.0.1\r\n");
    }
    if !has("authorization") && !has("x-anonymous") {
        s.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
    }
    if len > 0 && !has("content-type") {
        s.push_str("Content-Type: application/json\r\n");
    }
    s.push_str("Connection: close\r\n");
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-anonymous"))
    {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    s
}

/// One request on a new connection; the body is written while the answer is read, so a
/// server that answers early (413) is heard.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut out = head(method, path, headers, body.len()).into_bytes();
    out.extend_from_slice(body);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
        wr
    });
    let mut raw = Vec::new();
    let _ = rd.read_to_end(&mut raw).await;
    drop(writer);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// A server-sent events subscription: yields each event's data as JSON.
pub struct Sse {
    rd: tokio::net::tcp::OwnedReadHalf,
    _wr: tokio::net::tcp::OwnedWriteHalf,
    buf: String,
    pub headers: String,
}

impl Sse {
    pub async fn open(addr: std::net::SocketAddr, path: &str) -> Sse {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (rd, mut wr) = stream.into_split();
        wr.write_all(head("GET", path, &[("Accept", "text/event-stream")], 0).as_bytes())
            .await
            .expect("write");
        let mut s = Sse {
            rd,
            _wr: wr,
            buf: String::new(),
            headers: String::new(),
        };
        while !s.buf.contains("\r\n\r\n") {
            assert!(s.fill().await, "no answer");
        }
        let (h, rest) = s.buf.split_once("\r\n\r\n").expect("head");
        s.headers = h.to_string();
        s.buf = rest.to_string();
        s
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.rd.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
                true
            }
        }
    }

    /// The next event's data, `None` when the stream ended. Chunk framing is skipped: data
    /// lines are found by their `data:` prefix.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}")));
            }
            let got = tokio::time::timeout(Duration::from_secs(30), self.fill())
                .await
                .expect("an event within 30 s");
            if !got {
                return None;
            }
        }
    }
}

/// A git server over HTTP (git's "dumb" protocol: the files of a bare repository) that
/// answers 401 to any request without `Authorization: Basic <user:password>`, as a private
/// repository's host does. Serves on 127.0.0.1 until the test ends.
pub struct GitHttp {
    pub addr: std::net::SocketAddr,
    /// Requests that carried the right credentials.
    pub authorized: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _bare: tempfile::TempDir,
}

impl GitHttp {
    pub fn serve(repo: &Repo, user: &str, password: &str) -> GitHttp {
        use base64::Engine as _;
        use std::io::{BufRead as _, Read as _, Write as _};
        let bare = tempfile::tempdir().expect("temp dir");
        let out = Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(repo.path())
            .arg(bare.path().join("repo.git"))
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        git(&bare.path().join("repo.git"), &["update-server-info"]);
        let root = bare.path().to_path_buf();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let authorized = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = authorized.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut rd = std::io::BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                if rd.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut auth = false;
                loop {
                    let mut h = String::new();
                    if rd.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("authorization")
                        && v.trim() == expected
                    {
                        auth = true;
                    }
                }
                let path = path.split('?').next().unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let answer = if !auth {
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                } else if path.contains("..") || !file.is_file() {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                } else {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut body = Vec::new();
                    std::fs::File::open(&file)
                        .and_then(|mut f| f.read_to_end(&mut body))
                        .expect("read");
                    let mut a = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend_from_slice(&body);
                    a
                };
                let _ = conn.write_all(&answer);
            }
        });
        GitHttp {
            addr,
            authorized,
            _bare: bare,
        }
    }

    /// The clone URL with the credentials in it, as an operator writes it in valet.yaml.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}/repo.git", self.addr)
    }
}
