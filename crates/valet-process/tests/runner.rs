//! The runner on this machine: output and its cap, errors at start, cancel of what left the
//! step's group, and which zombies a library inside a bigger program reaps.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use valet_process::{Exit, Marks, Runner, SpawnError, Spec, Stream};

/// Everything a process printed, and how it ended.
async fn run(spec: Spec) -> (Vec<(Stream, Bytes)>, valet_process::Finished) {
    let mut process = Runner::own_children().spawn(spec).expect("spawn");
    let (tx, mut rx) = mpsc::channel(16);
    process.stream(tx, |s, b| (s, b));
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(x) = rx.recv().await {
            all.push(x);
        }
        all
    });
    let finished = process.wait().await;
    drop(process);
    (reader.await.expect("reader"), finished)
}

fn sh(script: &str) -> Spec {
    Spec::new(["/bin/sh", "-c", script])
}

fn text(out: &[(Stream, Bytes)], stream: Stream) -> String {
    out.iter()
        .filter(|(s, _)| *s == stream)
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// A sleep duration no other process on the machine has in its command line.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("3{:05}.{:09}", std::process::id() % 100_000, nanos)
}

fn processes_with(marker: &str) -> Vec<i32> {
    valet_process::marks::with_cmdline(marker)
}

/// The state letter of `pid` (`Z` for a zombie), `None` once it is gone.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

async fn until_zombie(pid: i32) {
    for _ in 0..1000 {
        if state(pid) == Some('Z') {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{pid} did not end: {:?}", state(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_apart_and_is_cut_at_the_cap() {
    let (out, f) = run(sh("echo out; echo err >&2; exit 4")).await;
    assert_eq!(text(&out, Stream::Stdout), "out\n");
    assert_eq!(text(&out, Stream::Stderr), "err\n");
    assert_eq!(f.exit, Exit::Code(4));
    assert_eq!((f.dropped, f.cut_on), (0, None));

    let mut spec = sh("head -c 1000 /dev/zero");
    spec.output_cap = Some(100);
    let (out, f) = run(spec).await;
    let kept: usize = out.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(kept, 100);
    assert_eq!((f.dropped, f.cut_on), (900, Some(Stream::Stdout)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_marks_stdin_and_cwd_reach_the_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = sh("cat; echo \"$A $M\"; pwd");
    spec.clear_env = true;
    spec.env = vec![("A".into(), "a".into()), ("M".into(), "from-env".into())];
    spec.marks = Marks::new().with("M", "from-marks");
    spec.stdin = Some(b"in\n".to_vec());
    spec.cwd = Some(dir.path().canonicalize().expect("canonical"));
    let (out, _) = run(spec).await;
    assert_eq!(
        text(&out, Stream::Stdout),
        format!(
            "in\na from-marks\n{}\n",
            dir.path().canonicalize().unwrap().display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_start_says_why() {
    let runner = Runner::own_children();
    let err = |spec| runner.spawn(spec).err().expect("refused");
    assert!(matches!(err(Spec::default()), SpawnError::Empty));
    assert!(matches!(
        err(Spec::new(["/no/such/program"])),
        SpawnError::NotFound(p) if p == "/no/such/program"
    ));
    let mut spec = sh("true");
    spec.cwd = Some("/no/such/dir".into());
    assert!(matches!(err(spec), SpawnError::NoDirectory(_)));
    let mut spec = sh("true");
    spec.user = Some("root:wheel".into());
    assert!(matches!(err(spec), SpawnError::BadUser(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_what_left_the_group_when_it_carries_the_marks() {
    let (m, waiting) = (marker(), marker());
    let mut spec = sh(&format!(
        "setsid sh -c 'sleep {m}; true' & echo started; sleep {waiting}"
    ));
    spec.marks = Marks::new().with("VALET_TEST_STEP", marker());
    let mut process = Runner::own_children().spawn(spec).expect("spawn");
    let (tx, mut rx) = mpsc::channel(16);
    process.stream(tx, |s, b| (s, b));
    assert!(rx.recv().await.is_some(), "started");
    for _ in 0..1000 {
        if !processes_with(&m).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!processes_with(&m).is_empty(), "the escaped process runs");
    let f = process.cancel(Duration::from_millis(500)).await;
    assert!(matches!(f.exit, Exit::Signal(_)), "{f:?}");
    assert_eq!(processes_with(&m), Vec::<i32>::new());
    assert_eq!(processes_with(&waiting), Vec::<i32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_steps_are_reaped_and_other_children_are_left_to_their_waiters() {
    valet_process::become_subreaper().expect("subreaper");
    // A step whose child leaves the session, outlives the step, and is handed to us; it
    // ends when the test says so.
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go");
    let (out, f) = run(sh(&format!(
        "setsid sh -c 'echo $$; exec >/dev/null 2>&1; while [ ! -e {} ]; do sleep 0.01; done' &",
        go.display()
    )))
    .await;
    assert_eq!(f.exit, Exit::Code(0));
    let orphan: i32 = text(&out, Stream::Stdout)
        .trim()
        .parse()
        .expect("the orphan's pid");
    let ppid = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
    };
    assert_eq!(
        ppid(orphan),
        Some(std::process::id()),
        "handed to this process"
    );
    std::fs::write(&go, "").expect("go");
    until_zombie(orphan).await;
    // A child some other part of the program started and will wait for.
    let mut other = std::process::Command::new("true")
        .spawn()
        .expect("true starts");
    until_zombie(other.id() as i32).await;

    valet_process::reap_orphans();
    assert_eq!(state(orphan), None, "the orphan was reaped");
    assert_eq!(state(other.id() as i32), Some('Z'));
    let st = other.wait().expect("its waiter still gets its status");
    assert!(st.success());
}
