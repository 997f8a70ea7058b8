//! The conformance suite every backend passes.
//!
//! Each function takes a backend, provisions what it needs, checks one behaviour of the
//! contract and tears down what it made; it panics (like a test assertion) when the backend
//! gets it wrong. A backend crate runs them all from its own tests with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! valet_backend::conformance_tests!(valet_local::LocalBackend::temporary());
//! ```
//!
//! The suite needs `/bin/sh`, `sleep`, `cat`, `grep` and `/proc` in the containers it runs
//! in (a busybox image has them all).

use crate::{
    Backend, BackendError, Command, Execution, ExitStatus, Output, Pod, PodSpec, ProvisionRequest,
};
use std::time::{Duration, Instant};

/// `provision` of a bare spec, for tests and benchmarks that need no more of a request.
#[async_trait::async_trait]
pub trait ProvisionSpec {
    async fn provision_spec(
        &self,
        spec: &PodSpec,
        build_id: &str,
    ) -> Result<Box<dyn Pod>, BackendError>;
}

#[async_trait::async_trait]
impl<B: Backend + ?Sized> ProvisionSpec for B {
    async fn provision_spec(
        &self,
        spec: &PodSpec,
        build_id: &str,
    ) -> Result<Box<dyn Pod>, BackendError> {
        self.provision(&ProvisionRequest::new(spec.clone(), build_id))
            .await
    }
}

/// Everything a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Collected {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
}

/// Reads an execution to its end.
pub async fn collect(mut exec: Execution) -> Result<Collected, BackendError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(chunk) = exec.output.recv().await {
        match chunk {
            Output::Stdout(b) => stdout.extend_from_slice(&b),
            Output::Stderr(b) => stderr.extend_from_slice(&b),
        }
    }
    let status = exec.handle.wait().await?;
    Ok(Collected {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        status,
    })
}

/// A pod spec with these containers (no images: a container backend fills in its test image).
pub fn spec(name: &str, containers: &[&str]) -> PodSpec {
    PodSpec::of_containers(name, containers)
}

async fn provision(backend: &dyn Backend, containers: &[&str]) -> Box<dyn Pod> {
    backend
        .provision(&ProvisionRequest::new(
            spec("conformance", containers),
            "conformance",
        ))
        .await
        .unwrap_or_else(|e| panic!("{}: provision failed: {e}", backend.name()))
}

/// Runs `script` with `/bin/sh -c` in `container` of `pod`, to its end (for tests of a
/// backend beyond the suite).
pub async fn sh(pod: &dyn Pod, container: &str, script: &str) -> Collected {
    run(pod, container, Command::shell(script)).await
}

/// Runs `cmd` in `container` of `pod`, to its end.
pub async fn run(pod: &dyn Pod, container: &str, cmd: Command) -> Collected {
    let runner = pod
        .runner(container)
        .expect("runner of a container of the spec");
    let exec = runner.start(cmd).await.expect("start a command");
    collect(exec).await.expect("wait for a command")
}

/// A number no other process on the machine has in its command line.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "9{:05}.{:06}",
        std::process::id() % 100_000,
        nanos % 1_000_000
    )
}

/// The processes whose command line contains `marker`, seen from inside `container`.
async fn processes_with(pod: &dyn Pod, container: &str, marker: &str) -> String {
    // `[9]…` does not match itself, so the scanning shell and grep do not find themselves.
    let pattern = format!("[{}]{}", &marker[..1], marker[1..].replace('.', "\\."));
    let out = run(
        pod,
        container,
        Command::shell(format!(
            "grep -l -a -e '{pattern}' /proc/[0-9]*/cmdline 2>/dev/null; true"
        )),
    )
    .await;
    out.stdout
}

/// A command's output and exit code come back.
pub async fn runs_a_command(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let out = run(&*pod, "main", Command::shell("echo hello; echo world")).await;
    assert_eq!(out.stdout, "hello\nworld\n");
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(out.status.success());
    pod.teardown().await.expect("teardown");
}

/// The environment and working directory of a command are the ones asked for; a relative
/// directory is relative to the workspace.
pub async fn honours_env_and_cwd(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let ws = pod.workspace();
    let mut mk = Command::shell("mkdir -p sub/dir");
    mk.cwd = None;
    assert!(run(&*pod, "main", mk).await.status.success());
    let mut cmd = Command::shell("echo \"$GREETING $OTHER\"; pwd");
    cmd.env.insert("GREETING".into(), "hi there".into());
    cmd.env.insert("OTHER".into(), "$HOME".into());
    cmd.cwd = Some("sub/dir".into());
    let out = run(&*pod, "main", cmd).await;
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("hi there $HOME"));
    let pwd = lines.next().unwrap_or_default();
    assert_eq!(
        std::path::Path::new(pwd),
        ws.join("sub/dir"),
        "cwd relative to the workspace"
    );
    let out = run(&*pod, "main", Command::shell("pwd")).await;
    assert_eq!(
        std::path::Path::new(out.stdout.trim()),
        ws,
        "default cwd is the workspace"
    );
    pod.teardown().await.expect("teardown");
}

/// stderr arrives apart from stdout.
pub async fn separates_stderr(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let out = run(&*pod, "main", Command::shell("echo out; echo err >&2")).await;
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    pod.teardown().await.expect("teardown");
}

/// Data given as stdin reaches the command.
pub async fn feeds_stdin(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let mut cmd = Command::shell("cat");
    cmd.stdin = Some(b"from stdin\n".to_vec());
    let out = run(&*pod, "main", cmd).await;
    assert_eq!(out.stdout, "from stdin\n");
    pod.teardown().await.expect("teardown");
}

/// A non-zero exit code is reported as such.
pub async fn reports_exit_code(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let out = run(&*pod, "main", Command::shell("exit 3")).await;
    assert_eq!(out.status, ExitStatus::Code(3));
    assert!(!out.status.success());
    pod.teardown().await.expect("teardown");
}

/// A command killed by a signal reports the signal.
pub async fn reports_signal(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let out = run(&*pod, "main", Command::shell("kill -TERM $$")).await;
    assert_eq!(out.status, ExitStatus::Signal(15));
    pod.teardown().await.expect("teardown");
}

/// Output is delivered as it is produced, not only at the end.
pub async fn streams_output(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let runner = pod.runner("main").expect("runner");
    let mut exec = runner
        .start(Command::shell("echo first; sleep 2; echo second"))
        .await
        .expect("start");
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_millis(1500), exec.output.recv())
        .await
        .expect("the first line arrives before the command ends");
    assert_eq!(
        first,
        Some(Output::Stdout(bytes::Bytes::from_static(b"first\n")))
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    let rest = collect(exec).await.expect("collect");
    assert_eq!(rest.stdout, "second\n");
    pod.teardown().await.expect("teardown");
}

/// Cancelling ends the whole process tree, background children included, within the grace
/// period and a margin, and reports how it ended.
pub async fn cancel_kills_the_process_tree(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let m = marker();
    let runner = pod.runner("main").expect("runner");
    let mut exec = runner
        .start(Command::shell(format!(
            "sleep {m} & sleep {m} & echo started; wait"
        )))
        .await
        .expect("start");
    // Wait until the children run.
    let first = tokio::time::timeout(Duration::from_secs(5), exec.output.recv())
        .await
        .expect("started");
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !processes_with(&*pod, "main", &m).await.is_empty(),
        "the children run before cancel"
    );
    let grace = Duration::from_millis(500);
    let started = Instant::now();
    let status = exec.handle.cancel(grace).await.expect("cancel");
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_secs(1),
        "cancel took {took:?}"
    );
    assert!(
        matches!(status, ExitStatus::Signal(_)),
        "a cancelled command ends by a signal: {status:?}"
    );
    let left = processes_with(&*pod, "main", &m).await;
    assert!(left.is_empty(), "processes left after cancel: {left}");
    pod.teardown().await.expect("teardown");
}

/// A command that ignores TERM is killed after the grace period.
pub async fn cancel_escalates_to_kill(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let m = marker();
    let runner = pod.runner("main").expect("runner");
    let mut exec = runner
        .start(Command::shell(format!(
            "trap '' TERM; echo ready; sleep {m}; sleep {m}"
        )))
        .await
        .expect("start");
    let _ = tokio::time::timeout(Duration::from_secs(5), exec.output.recv())
        .await
        .expect("ready");
    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let _status = exec.handle.cancel(grace).await.expect("cancel");
    let took = started.elapsed();
    assert!(
        took >= grace,
        "KILL came before the grace period ended: {took:?}"
    );
    assert!(
        took < grace + Duration::from_secs(1),
        "cancel took {took:?}"
    );
    let left = processes_with(&*pod, "main", &m).await;
    assert!(left.is_empty(), "processes left after cancel: {left}");
    pod.teardown().await.expect("teardown");
}

/// Two containers of one pod see the same workspace files.
pub async fn containers_share_the_workspace(backend: &dyn Backend) {
    let pod = provision(backend, &["one", "two"]).await;
    let out = run(&*pod, "one", Command::shell("echo shared > file.txt")).await;
    assert!(out.status.success());
    let out = run(&*pod, "two", Command::shell("cat file.txt")).await;
    assert_eq!(out.stdout, "shared\n");
    pod.teardown().await.expect("teardown");
}

/// A container that is not in the spec is refused.
pub async fn refuses_unknown_container(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    assert!(pod.runner("nope").is_err());
    pod.teardown().await.expect("teardown");
}

/// Teardown removes the workspace, and is safe to call twice.
pub async fn teardown_removes_the_workspace(backend: &dyn Backend) {
    let pod = provision(backend, &["main"]).await;
    let out = run(&*pod, "main", Command::shell("echo x > left-behind.txt")).await;
    assert!(out.status.success());
    let ws = pod.workspace();
    let visible = ws.join("left-behind.txt").exists();
    pod.teardown().await.expect("teardown");
    if visible {
        assert!(
            !ws.exists(),
            "the workspace {} is still there",
            ws.display()
        );
    }
    pod.teardown().await.expect("a second teardown");
    // A new pod starts with an empty workspace.
    let pod = provision(backend, &["main"]).await;
    let out = run(&*pod, "main", Command::shell("ls -A")).await;
    assert_eq!(out.stdout, "", "a new pod's workspace is empty");
    pod.teardown().await.expect("teardown");
}

// ── Tiers beyond running commands: each backend runs the ones it supports. ──────────────

async fn provision_this(backend: &dyn Backend, s: PodSpec) -> Box<dyn Pod> {
    backend
        .provision(&ProvisionRequest::new(s, "conformance"))
        .await
        .unwrap_or_else(|e| panic!("{}: provision failed: {e}", backend.name()))
}

/// Limits: a step that asks more memory than its container's limit is killed, and the
/// backend says why in words, naming the container and the limit.
pub async fn memory_limit_is_enforced_and_explained(backend: &dyn Backend) {
    let mut s = spec("limits", &["main"]);
    s.containers[0].resources.limit_memory_bytes = Some(32 * 1024 * 1024);
    let pod = provision_this(backend, s).await;
    let runner = pod.runner("main").expect("runner");
    // A 64 MiB buffer in a 32 MiB container.
    let mut exec = runner
        .start(Command::shell(
            "dd if=/dev/zero of=/dev/null bs=64M count=1",
        ))
        .await
        .expect("start");
    while exec.output.recv().await.is_some() {}
    let status = exec.handle.wait().await.expect("wait");
    let reason = exec.handle.explain().await;
    pod.teardown().await.expect("teardown");
    assert_eq!(status, ExitStatus::Signal(9), "{}", backend.name());
    let reason = reason.unwrap_or_else(|| panic!("{}: no explanation", backend.name()));
    assert!(
        reason.contains("out of memory") && reason.contains("main") && reason.contains("32 MiB"),
        "{}: {reason}",
        backend.name()
    );
}

/// `runAsUser` / `runAsGroup`: the container's steps run as that user and group.
pub async fn runs_as_the_containers_user(backend: &dyn Backend) {
    let mut s = spec("user", &["main", "other"]);
    s.containers[0].run_as_user = Some(4321);
    s.containers[0].run_as_group = Some(4322);
    let pod = provision_this(backend, s).await;
    let as_user = run(&*pod, "main", Command::shell("id -u; id -g")).await;
    let as_default = run(&*pod, "other", Command::shell("id -u")).await;
    pod.teardown().await.expect("teardown");
    assert_eq!(
        as_user.stdout,
        "4321\n4322\n",
        "{}: {as_user:?}",
        backend.name()
    );
    assert_ne!(as_default.stdout, "4321\n", "only the container that asked");
}

/// A provision that fails says why, and leaves nothing behind for the orphan collector.
pub async fn a_failed_provision_says_why_and_leaves_nothing(
    backend: &dyn Backend,
    failing: PodSpec,
) {
    let name = failing.name.clone();
    match backend
        .provision(&ProvisionRequest::new(failing, "conformance"))
        .await
    {
        Ok(pod) => {
            pod.teardown().await.ok();
            panic!("{}: provisioning {name} succeeded", backend.name());
        }
        Err(e) => assert!(
            e.to_string().len() > 10,
            "{}: no reason: {e}",
            backend.name()
        ),
    }
    let left = backend
        .collect_orphans(&crate::owner::Scope::Owner(
            crate::owner::current_owner().to_string(),
        ))
        .await
        .expect("collect orphans");
    assert_eq!(
        left,
        Vec::<String>::new(),
        "{}: left behind",
        backend.name()
    );
}

/// Orphan collection: what a live owner runs is not touched by `Scope::Orphans`; what an
/// owner being cleaned up (`Scope::Owner`) left is ended (on a container backend, the pod
/// itself; on the host, the processes it started, also those that left their group), and
/// a teardown afterwards is harmless. Needs a process per test (cargo-nextest): the owner
/// is this process.
pub async fn collects_the_orphans_of_its_owner(backend: &dyn Backend) {
    use crate::owner::{Scope, current_owner};
    let pod = provision(backend, &["main"]).await;
    let m = marker();
    let started = run(
        &*pod,
        "main",
        Command::shell(format!("setsid sleep {m} >/dev/null 2>&1 </dev/null &")),
    )
    .await;
    assert!(started.status.success(), "{started:?}");
    let removed = backend
        .collect_orphans(&Scope::Orphans)
        .await
        .expect("collect orphans");
    assert!(
        removed
            .iter()
            .all(|r| !r.contains(pod.id()) && !r.contains(&m)),
        "{}: a live owner's pod was collected: {removed:?}",
        backend.name()
    );
    assert!(
        !processes_with(&*pod, "main", &m).await.is_empty(),
        "{}: the live owner's process is gone",
        backend.name()
    );
    let removed = backend
        .collect_orphans(&Scope::Owner(current_owner().to_string()))
        .await
        .expect("collect orphans");
    assert!(!removed.is_empty(), "{}: nothing collected", backend.name());
    // Either the pod is gone as a whole, or what it left running is.
    let left = match pod.runner("main") {
        Err(_) => None,
        Ok(r) => match r.start(Command::shell("echo alive")).await {
            Err(_) => None,
            Ok(exec) => match collect(exec).await {
                Ok(c) if c.stdout == "alive\n" => Some(processes_with(&*pod, "main", &m).await),
                _ => None,
            },
        },
    };
    assert!(
        left.as_deref().is_none_or(str::is_empty),
        "{}: still running after its owner's clean-up: {left:?}",
        backend.name()
    );
    pod.teardown().await.expect("teardown after collection");
}

/// Generates one `#[tokio::test]` per conformance function, each with a fresh backend made
/// by `$make` (an expression).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            runs_a_command, honours_env_and_cwd, separates_stderr, feeds_stdin, reports_exit_code,
            reports_signal, streams_output, cancel_kills_the_process_tree, cancel_escalates_to_kill,
            containers_share_the_workspace, refuses_unknown_container, teardown_removes_the_workspace);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $make;
                $crate::conformance::$name(&backend).await;
            }
        )*
    };
}

/// The limits tier: memory limits enforced and explained, `runAsUser`/`runAsGroup`.
#[macro_export]
macro_rules! conformance_limit_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            memory_limit_is_enforced_and_explained, runs_as_the_containers_user);
    };
}

/// The lifecycle tier: a failed provision (`$failing_backend` must refuse `$failing`, a
/// spec: a missing image, say, or on the host an unwritable root) and orphan collection.
/// Teardown twice is in the base suite.
#[macro_export]
macro_rules! conformance_lifecycle_tests {
    ($make:expr, $failing_backend:expr, $failing:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_failed_provision_says_why_and_leaves_nothing() {
            let backend = $failing_backend;
            $crate::conformance::a_failed_provision_says_why_and_leaves_nothing(&backend, $failing)
                .await;
        }
        $crate::conformance_tests!(@each $make; collects_the_orphans_of_its_owner);
    };
}
