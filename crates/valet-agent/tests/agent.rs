//! The agent on this machine: what the conformance suite does not cover (zombies, sidecars,
//! output cap, backpressure, signal forwarding, users). Each test starts its own agent.

mod common;

use std::time::Duration;

use common::{HostAgent, descendants, start_agent};
use valet_backend::conformance::collect;
use valet_backend::{Command, ExitStatus, Output, StepRunner};

struct Dirs {
    _tmp: tempfile::TempDir,
    run: std::path::PathBuf,
    ws: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical");
    let (run, ws) = (root.join("run"), root.join("ws"));
    std::fs::create_dir(&run).expect("run dir");
    std::fs::create_dir(&ws).expect("workspace");
    Dirs { _tmp: tmp, run, ws }
}

async fn agent(d: &Dirs, extra: &[&str], sidecar: &[&str]) -> HostAgent {
    start_agent(&d.run, &d.ws, "main", extra, sidecar).await
}

async fn sh(agent: &HostAgent, script: &str) -> valet_backend::conformance::Collected {
    let exec = agent
        .runner
        .start(Command::shell(script))
        .await
        .expect("start");
    collect(exec).await.expect("collect")
}

/// Polls `check` for up to 5 s; returns its last answer.
async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> Result<T, ()> {
    for _ in 0..500 {
        if let Some(v) = check() {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_background_children_leave_no_zombie() {
    let d = dirs();
    let a = agent(&d, &[], &[]).await;
    let out = sh(
        &a,
        "for i in $(seq 200); do (sleep 0.01 &) ; done; echo spawned",
    )
    .await;
    assert_eq!(out.stdout, "spawned\n");
    assert!(out.status.success());
    // The grandchildren were orphaned to the agent (a subreaper here, PID 1 in a container):
    // once they end, it must reap them all.
    let left = eventually(|| {
        let zombies: Vec<_> = descendants(a.pid())
            .into_iter()
            .filter(|(_, st)| *st == 'Z')
            .collect();
        let sleeping = descendants(a.pid()).len();
        (zombies.is_empty() && sleeping == 0).then_some(())
    })
    .await;
    assert!(
        left.is_ok(),
        "zombies or processes left under the agent: {:?}",
        descendants(a.pid())
    );
}

/// The runtime stops reading a step's output when it cancels it: a step that fills the
/// output channel must not hold the cancel up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_returns_while_nobody_reads_a_loud_step() {
    let d = dirs();
    let a = agent(&d, &[], &[]).await;
    let (output, mut exec) = a
        .runner
        .start_agent(Command::shell("yes valet"))
        .await
        .expect("start");
    // Long enough for `yes` to fill every buffer between it and the unread channel.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        valet_backend::ExecutionHandle::cancel(&mut exec, Duration::from_millis(500)),
    )
    .await
    .expect("cancel returned within 10 s")
    .expect("cancel");
    assert_eq!(status, ExitStatus::Signal(15));
    drop(output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_background_sleeps_entirely() {
    let d = dirs();
    let a = agent(&d, &[], &[]).await;
    let (mut output, mut exec) = a
        .runner
        .start_agent(Command::shell("sleep 100 & sleep 100 & echo up; wait"))
        .await
        .expect("start");
    assert!(
        output.recv().await.is_some(),
        "the step prints before cancel"
    );
    let kids = eventually(|| {
        let n = descendants(a.pid()).len();
        (n >= 3).then_some(n)
    })
    .await;
    assert!(
        kids.is_ok(),
        "the shell and both sleeps run: {:?}",
        descendants(a.pid())
    );
    let status = valet_backend::ExecutionHandle::cancel(&mut exec, Duration::from_millis(500))
        .await
        .expect("cancel");
    assert_eq!(status, ExitStatus::Signal(15));
    // Cancel answers once the group is gone; the reaper has had its SIGCHLD by then or soon.
    let gone = eventually(|| descendants(a.pid()).is_empty().then_some(())).await;
    assert!(
        gone.is_ok(),
        "left after cancel: {:?}",
        descendants(a.pid())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_cap_is_cut_with_a_marker() {
    let d = dirs();
    let a = agent(&d, &["--output-cap", "1000"], &[]).await;
    let (mut output, mut exec) = a
        .runner
        .start_agent(Command::shell("yes | head -c 100000; echo finished >&2"))
        .await
        .expect("start");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(chunk) = output.recv().await {
        match chunk {
            Output::Stdout(b) => stdout.extend_from_slice(&b),
            Output::Stderr(b) => stderr.extend_from_slice(&b),
        }
    }
    let ending = exec.ending().await.expect("ending");
    assert!(
        ending.status.success(),
        "the pipe was drained past the cap: {ending:?}"
    );
    assert!(ending.truncated);
    // 100000 bytes of `y\n` plus `finished\n` on stderr: 1000 sent, the rest dropped.
    assert_eq!(ending.dropped_bytes, 100_000 + 9 - 1000);
    let text = String::from_utf8_lossy(&stdout);
    let (kept, marker) = text.split_at(1000);
    assert!(kept.bytes().all(|b| b == b'y' || b == b'\n'));
    assert_eq!(
        marker,
        "\n[valet-agent: output cut here at the cap of 1000 bytes; 99009 more bytes dropped]\n"
    );
    assert!(stderr.is_empty(), "stderr came after the cap: {stderr:?}");

    // A cap per request overrides the agent's.
    let runner = a.runner.clone().with_output_cap(10);
    let out = collect(
        runner
            .start(Command::shell("echo 0123456789abcdef"))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(out.stdout.starts_with("0123456789\n[valet-agent: output cut here at the cap of 10 bytes; 7 more bytes dropped]"), "{:?}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_process_back() {
    let d = dirs();
    let a = agent(&d, &[], &[]).await;
    // 32 MiB is far more than every buffer between the process and this test together
    // (pipe, agent channel, HTTP/2 window, client channel).
    let (mut output, mut exec) = a
        .runner
        .start_agent(Command::shell("head -c 33554432 /dev/zero; touch done"))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !d.ws.join("done").exists(),
        "the process wrote 32 MiB that nobody read: output is buffered without bound"
    );
    let mut total = 0usize;
    while let Some(Output::Stdout(b)) = output.recv().await {
        total += b.len();
    }
    assert_eq!(total, 32 * 1024 * 1024);
    assert!(exec.ending().await.expect("ending").status.success());
    assert!(d.ws.join("done").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_keeps_running_while_steps_run() {
    let d = dirs();
    let a = agent(
        &d,
        &[],
        &[
            "/bin/sh",
            "-c",
            "while :; do echo tick >> sidecar.log; sleep 0.05; done",
        ],
    )
    .await;
    let lines = || {
        std::fs::read_to_string(d.ws.join("sidecar.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let before = lines();
    for i in 0..5 {
        let out = sh(&a, &format!("echo step {i}; sleep 0.1")).await;
        assert_eq!(out.stdout, format!("step {i}\n"));
    }
    assert!(
        lines() > before + 3,
        "the sidecar wrote while steps ran: {before} → {}",
        lines()
    );
    assert!(
        descendants(a.pid()).iter().any(|(_, st)| *st != 'Z'),
        "the sidecar is still a child of the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_serving_after_its_sidecar_exits() {
    let d = dirs();
    let a = agent(&d, &[], &["/bin/sh", "-c", "exit 3"]).await;
    let gone = eventually(|| descendants(a.pid()).is_empty().then_some(())).await;
    assert!(gone.is_ok(), "the sidecar was reaped");
    let out = sh(&a, "echo still here").await;
    assert_eq!(out.stdout, "still here\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_is_forwarded_to_the_sidecar_and_steps() {
    let d = dirs();
    let mut a = agent(&d, &[], &["sleep", "1000"]).await;
    let (_output, mut exec) = a
        .runner
        .start_agent(Command::shell("sleep 1000"))
        .await
        .expect("start");
    let both = eventually(|| (descendants(a.pid()).len() >= 2).then_some(())).await;
    assert!(
        both.is_ok(),
        "sidecar and step run: {:?}",
        descendants(a.pid())
    );
    let pid = a.pid();
    let status = a.stop();
    assert!(
        status.success(),
        "the agent exits cleanly on TERM: {status:?}"
    );
    assert!(descendants(pid).is_empty(), "children outlived the agent");
    assert!(!a.socket.exists(), "the socket is removed on exit");
    // The step's stream ends (with the TERM's status, or the connection's end).
    let ended = tokio::time::timeout(Duration::from_secs(5), exec.ending()).await;
    assert!(
        ended.is_ok(),
        "the step's stream did not end with the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_as_the_user_asked() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "a_step_runs_as_the_user_asked: not root, so the agent cannot switch users; checked in Docker instead"
        );
        return;
    }
    let d = dirs();
    let a = agent(&d, &[], &[]).await;
    let mut cmd = Command::shell("id -u; id -g");
    cmd.user = Some("1000:1001".into());
    let out = collect(a.runner.start(cmd).await.unwrap()).await.unwrap();
    assert_eq!(out.stdout, "1000\n1001\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_or_directory_is_refused_at_start() {
    let d = dirs();
    let a = agent(&d, &[], &[]).await;
    let err = a
        .runner
        .start(Command::new(["/no/such/program"]))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("`/no/such/program` not found"),
        "{err}"
    );
    let mut cmd = Command::shell("true");
    cmd.cwd = Some("missing/dir".into());
    let err = a.runner.start(cmd).await.err().expect("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
