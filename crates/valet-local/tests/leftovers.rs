//! No process of a build outlives it on the local backend, also not one that left its
//! process group: a teardown ends what carries the pod's marks, a cancel what carries the
//! step's, and `collect_orphans` what a dead owner left.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use valet_backend::conformance::{ProvisionSpec as _, collect, spec};
use valet_backend::owner::{Scope, owner_of};
use valet_backend::{Backend, Command, Pod};
use valet_local::{LocalBackend, OWNER_VAR};

/// A sleep duration no other process on the machine has in its command line: it names the
/// processes of one test.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("3{:05}.{:09}", std::process::id() % 100_000, nanos)
}

/// The live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    valet_process::marks::with_cmdline(marker)
}

/// Waits (at most 10 s) until processes with `marker` run; their pids.
fn running_with(marker: &str) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = processes_with(marker);
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no process with {marker} started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn pod(backend: &LocalBackend) -> Box<dyn Pod> {
    backend
        .provision_spec(&spec("leftovers", &["main"]), "leftovers")
        .await
        .expect("provision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_left_its_group_does_not_outlive_the_pod() {
    let backend = LocalBackend::temporary();
    let pod = pod(&backend).await;
    let m = marker();
    let runner = pod.runner("main").expect("runner");
    let mut exec = runner
        .start(Command::shell(format!("setsid sh -c 'sleep {m}; true' &")))
        .await
        .expect("start");
    // The escaped process holds the output pipe: the end comes from `wait` (as the runtime
    // reads output and waits at once), not from the end of the output.
    let status = exec
        .handle
        .wait()
        .await
        .expect("the step ends while what it left runs on");
    assert!(status.success(), "{status:?}");
    let escaped = running_with(&m);
    let own_group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(escaped[0])))
        .expect("the process runs");
    assert_eq!(
        own_group.as_raw(),
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(escaped[0])))
            .expect("the process runs")
            .as_raw(),
        "the process left the step's group for a session of its own"
    );
    pod.teardown().await.expect("teardown");
    let left = processes_with(&m);
    assert!(left.is_empty(), "processes left after teardown: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_process_that_left_the_step_group() {
    let backend = LocalBackend::temporary();
    let pod = pod(&backend).await;
    let (m, waiting) = (marker(), marker());
    let runner = pod.runner("main").expect("runner");
    let mut exec = runner
        .start(Command::shell(format!(
            "setsid sh -c 'sleep {m}; true' & echo started; sleep {waiting}"
        )))
        .await
        .expect("start");
    let first = tokio::time::timeout(Duration::from_secs(10), exec.output.recv())
        .await
        .expect("started");
    assert!(first.is_some());
    running_with(&m);
    exec.handle
        .cancel(Duration::from_millis(500))
        .await
        .expect("cancel");
    let left = processes_with(&m);
    assert!(left.is_empty(), "processes left after cancel: {left:?}");
    assert!(processes_with(&waiting).is_empty());
    pod.teardown().await.expect("teardown");
}

/// A stand-in for a `valet` process: a shell that starts a process carrying its own owner
/// mark in a session of its own (as a step's `setsid … &` does), then waits to be killed.
fn fake_owner(marker: &str) -> Child {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read owner; {OWNER_VAR}=\"$owner\" setsid sh -c 'sleep {marker}; true' & echo started; exec sleep 600"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let owner = owner_of(child.id()).expect("the owner runs");
    writeln!(child.stdin.take().expect("stdin"), "{owner}").expect("the owner reads");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    assert_eq!(line, "started\n");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_orphans_ends_what_a_dead_owner_left_and_only_that() {
    // First, as `valet` does: this process becomes the one orphans are handed to.
    let backend = LocalBackend::temporary();
    let (dead_m, live_m) = (marker(), marker());
    let mut dead = fake_owner(&dead_m);
    let mut live = fake_owner(&live_m);
    running_with(&dead_m);
    running_with(&live_m);
    // SIGKILL: the owner has no chance to clean up.
    dead.kill().expect("SIGKILL");
    dead.wait().expect("reaped");
    let orphans = processes_with(&dead_m);
    assert!(!orphans.is_empty(), "the orphan outlives its owner");

    let removed = backend
        .collect_orphans(&Scope::Orphans)
        .await
        .expect("collect");
    for pid in &orphans {
        assert!(
            removed
                .iter()
                .any(|l| l.starts_with(&format!("process {pid} "))),
            "{pid} not in {removed:?}"
        );
    }
    let left = processes_with(&dead_m);
    assert!(
        left.is_empty(),
        "what the dead owner left runs on: {left:?}"
    );
    assert!(
        !processes_with(&live_m).is_empty(),
        "what a live owner started was touched"
    );
    assert!(!removed.iter().any(|l| l.contains(&live_m)), "{removed:?}");

    // The live owner's own scope takes its processes.
    let owner = owner_of(live.id()).expect("the owner runs");
    backend
        .collect_orphans(&Scope::Owner(owner))
        .await
        .expect("collect");
    assert!(processes_with(&live_m).is_empty());
    live.kill().expect("SIGKILL");
    live.wait().expect("reaped");
}

/// The marks are the last word on a step's environment: a step cannot unmark itself by
/// setting the variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_override_its_marks() {
    let backend = LocalBackend::temporary();
    let pod = pod(&backend).await;
    let mut cmd = Command::shell(format!("echo \"${OWNER_VAR}\""));
    cmd.env.insert(OWNER_VAR.into(), "someone-else".into());
    let out = collect(pod.runner("main").unwrap().start(cmd).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.stdout.trim(),
        valet_backend::owner::current_owner(),
        "{out:?}"
    );
    pod.teardown().await.expect("teardown");
}
