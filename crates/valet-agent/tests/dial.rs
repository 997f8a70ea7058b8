//! Dial-out against the real tunnel listener over real TCP on 127.0.0.1: the agent binary
//! dials in and serves steps; every kind of unwelcome peer is refused, and logged with its
//! address and without the token.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use valet_agent::dial::{ACCEPTED, Hello, MAGIC, REFUSED, TOKEN_ENV};
use valet_agent::{DialListener, TunnelConfig, TunnelError};
use valet_backend::conformance::collect;
use valet_backend::{Command, StepRunner};

/// What the code under test logged (every level), shared with the subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Captures the logs of this thread (the tests' runtime is single-threaded) until the
    /// guard is dropped.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a line holding `what` was logged (the listener logs from its own task).
    async fn wait_for(&self, what: &str) -> String {
        loop {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| l.contains(what)) {
                return line.to_string();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn hello(pod: &str, container: &str, token: &str) -> Vec<u8> {
    Hello {
        pod: pod.into(),
        container: container.into(),
        token: token.into(),
    }
    .encode()
    .unwrap()
}

/// Connects, sends `bytes`, and returns the listener's whole answer (up to its close) and
/// the address the listener saw.
async fn exchange(listener: &DialListener, bytes: &[u8]) -> (Vec<u8>, TcpStream, SocketAddr) {
    let mut stream = TcpStream::connect(listener.local_addr()).await.unwrap();
    let me = stream.local_addr().unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = [0u8; 3];
    stream.read_exact(&mut answer).await.unwrap();
    (answer.to_vec(), stream, me)
}

/// Reads until the listener closes; what came.
async fn rest(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

fn assert_refused_line(line: &str, peer: SocketAddr, secrets: &[&str]) {
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&peer.to_string()),
        "the peer's address: {line}"
    );
    for s in secrets {
        assert!(!line.contains(s), "a token in the log: {line}");
    }
}

#[tokio::test]
async fn an_agent_dials_in_and_serves_steps_over_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let listener = DialListener::bind(localhost()).await.unwrap();
    let agent = common::start_dialling_agent(&listener, "pod-1", &ws, "main").await;
    let out = collect(
        agent
            .runner
            .start(Command::shell("echo hello from $(pwd)"))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, format!("hello from {}\n", ws.display()));
    // The token travels in the environment, never on the command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", agent.pid())).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", agent.pid())).unwrap();
    let token = String::from_utf8_lossy(&environ)
        .split('\0')
        .find_map(|v| v.strip_prefix(&format!("{TOKEN_ENV}=")).map(str::to_string))
        .expect("the token in the agent's environment");
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
}

#[tokio::test]
async fn the_listener_refuses_to_bind_every_interface() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let e = DialListener::bind(addr.parse().unwrap()).await.err();
        assert!(
            matches!(e, Some(TunnelError::Unspecified(_))),
            "{addr}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused_logged_without_it_and_spends_nothing() {
    let (logs, _guard) = Logs::capture();
    let listener = DialListener::bind(localhost()).await.unwrap();
    let (token, pending) = listener.expect("pod-1", "main").unwrap();
    let wrong = "0".repeat(token.expose().len());
    let (answer, mut stream, me) = exchange(&listener, &hello("pod-1", "main", &wrong)).await;
    assert_eq!(answer, REFUSED);
    assert_eq!(rest(&mut stream).await, b"", "closed after the refusal");
    let line = logs.wait_for("wrong token").await;
    assert_refused_line(&line, me, &[&wrong, token.expose()]);

    // The right agent still gets in.
    let (answer, _stream, _) = exchange(&listener, &hello("pod-1", "main", token.expose())).await;
    assert_eq!(answer, ACCEPTED);
    drop(pending);
    assert!(!logs.text().contains(token.expose()));
}

#[tokio::test]
async fn a_token_is_scoped_to_its_pod_and_container() {
    let (logs, _guard) = Logs::capture();
    let listener = DialListener::bind(localhost()).await.unwrap();
    let (main_token, _main) = listener.expect("pod-1", "main").unwrap();
    let (_other_token, _other) = listener.expect("pod-1", "other").unwrap();
    // Main's token for another container of the pod, and for the same container of another pod.
    for (pod, container) in [("pod-1", "other"), ("pod-2", "main")] {
        let (answer, _, me) =
            exchange(&listener, &hello(pod, container, main_token.expose())).await;
        assert_eq!(answer, REFUSED, "{pod}/{container}");
        let line = logs.wait_for(&me.to_string()).await;
        assert_refused_line(&line, me, &[main_token.expose()]);
    }
}

#[tokio::test]
async fn a_reused_token_is_refused() {
    let (logs, _guard) = Logs::capture();
    let listener = DialListener::bind(localhost()).await.unwrap();
    let (token, _pending) = listener.expect("pod-1", "main").unwrap();
    let bytes = hello("pod-1", "main", token.expose());
    let (answer, _first, _) = exchange(&listener, &bytes).await;
    assert_eq!(answer, ACCEPTED);
    let (answer, _, me) = exchange(&listener, &bytes).await;
    assert_eq!(answer, REFUSED);
    let line = logs.wait_for("reused token").await;
    assert_refused_line(&line, me, &[token.expose()]);
}

#[tokio::test]
async fn an_expired_token_is_refused_and_its_waiter_told() {
    let (logs, _guard) = Logs::capture();
    let config = TunnelConfig {
        token_ttl: Duration::ZERO,
        ..TunnelConfig::default()
    };
    let listener = DialListener::bind_with(localhost(), config).await.unwrap();
    let (token, pending) = listener.expect("pod-1", "main").unwrap();
    let (answer, _, me) = exchange(&listener, &hello("pod-1", "main", token.expose())).await;
    assert_eq!(answer, REFUSED);
    let line = logs.wait_for("expired token").await;
    assert_refused_line(&line, me, &[token.expose()]);
    let e = pending
        .connect(std::path::Path::new("/"), Duration::from_secs(60))
        .await
        .err()
        .expect("no runner from an expired token");
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn a_second_connection_for_a_connected_container_is_refused() {
    let (logs, _guard) = Logs::capture();
    let listener = DialListener::bind(localhost()).await.unwrap();
    let (token, _pending) = listener.expect("pod-1", "main").unwrap();
    let (answer, _first, _) = exchange(&listener, &hello("pod-1", "main", token.expose())).await;
    assert_eq!(answer, ACCEPTED);
    // No new token for it while it is connected…
    assert!(matches!(
        listener.expect("pod-1", "main"),
        Err(TunnelError::AlreadyExpected { .. })
    ));
    // …and no other connection in its name.
    let made_up = "f".repeat(64);
    let (answer, _, me) = exchange(&listener, &hello("pod-1", "main", &made_up)).await;
    assert_eq!(answer, REFUSED);
    let line = logs.wait_for("connected already").await;
    assert_refused_line(&line, me, &[token.expose(), &made_up]);
}

#[tokio::test]
async fn a_silent_peer_is_cut_off_and_holds_nobody_up() {
    let (logs, _guard) = Logs::capture();
    let config = TunnelConfig {
        handshake_timeout: Duration::from_millis(300),
        ..TunnelConfig::default()
    };
    let listener = DialListener::bind_with(localhost(), config).await.unwrap();
    let (token, _pending) = listener.expect("pod-1", "main").unwrap();
    let mut silent = TcpStream::connect(listener.local_addr()).await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    // Half a hello, then nothing.
    silent.write_all(&MAGIC[..4]).await.unwrap();
    // Another agent is served while the silent one waits.
    let (answer, _ok, _) = exchange(&listener, &hello("pod-1", "main", token.expose())).await;
    assert_eq!(answer, ACCEPTED);
    // The silent one is refused and closed once its time is up.
    assert_eq!(rest(&mut silent).await, REFUSED);
    let line = logs.wait_for("no handshake within").await;
    assert_refused_line(&line, silent_addr, &[token.expose()]);
}

#[tokio::test]
async fn garbage_and_oversized_handshakes_are_refused_at_once() {
    let (logs, _guard) = Logs::capture();
    // A read timeout far beyond the test: only the checks themselves can refuse.
    let config = TunnelConfig {
        handshake_timeout: Duration::from_secs(3600),
        ..TunnelConfig::default()
    };
    let listener = DialListener::bind_with(localhost(), config).await.unwrap();
    let (answer, _, me) = exchange(&listener, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer, REFUSED);
    let line = logs.wait_for("not a valet dial-out handshake").await;
    assert_refused_line(&line, me, &[]);
    // A length past the limit is refused before any of the body is sent.
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&60_000u16.to_be_bytes());
    let (answer, _, me) = exchange(&listener, &head).await;
    assert_eq!(answer, REFUSED);
    let line = logs.wait_for("60000 bytes long").await;
    assert_refused_line(&line, me, &[]);
}

#[tokio::test]
async fn a_refused_agent_exits_with_an_error() {
    let listener = DialListener::bind(localhost()).await.unwrap();
    let (_token, _pending) = listener.expect("pod-1", "main").unwrap();
    let addr = listener.local_addr().to_string();
    let agent = env!("CARGO_BIN_EXE_valet-agent");
    let run = |token: Option<&str>| {
        let mut cmd = tokio::process::Command::new(agent);
        cmd.args([
            "serve",
            "--dial",
            &addr,
            "--pod",
            "pod-1",
            "--container",
            "main",
        ])
        .env_remove(TOKEN_ENV)
        .kill_on_drop(true);
        if let Some(t) = token {
            cmd.env(TOKEN_ENV, t);
        }
        cmd.output()
    };
    let out = run(Some("not-the-token")).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    let out = run(None).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(TOKEN_ENV), "{stderr}");
}
