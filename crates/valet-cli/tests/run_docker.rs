//! `valet run --backend docker` against the real Docker engine: the seed's two-container
//! shape, steps in the container they name, one workspace for both, nothing left behind.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{ROOT, ensure_base_image};

/// The seed's shape end to end; also what a person sees while its pod starts (stderr).
#[test]
fn two_container_pod_runs_on_docker() {
    ensure_base_image();
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args([
            "run",
            "--backend",
            "docker",
            "pipelines/docker-two-containers.groovy",
        ])
        .current_dir(ROOT)
        .output()
        .expect("valet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each step ran in the container it named: the agent is each container's first process
    // and runs the container's own command (they differ) as its child …
    let runs = |name: &str, command: &str| {
        stdout.lines().any(|l| {
            l.starts_with(&format!("{name} runs: /valet/bin/valet-agent serve"))
                && l.trim_end().ends_with(command)
        })
    };
    assert!(runs("maven", "-- sleep 3601"), "{stdout}");
    assert!(runs("golang", "-- sleep 3602"), "{stdout}");
    // … and the second container read what the first wrote in the shared workspace.
    assert!(
        stdout.lines().any(|l| l.trim() == "built-by-maven"),
        "{stdout}"
    );
    assert!(stdout.contains("Build SUCCESS"), "{stdout}");
    let pod = stdout
        .split_whitespace()
        .find(|w| w.starts_with("valet-pod-"))
        .expect("the run names its pod");
    let left = remains(pod);
    assert!(left.is_empty(), "pod {pod} left {left:?} behind");

    // Pod start-up is shown on stderr, container by container, then the pod ready …
    let stderr = String::from_utf8_lossy(&out.stderr);
    for c in ["sandbox", "maven", "golang"] {
        assert!(
            stderr.contains(&format!(
                "valet: pod {pod}: creating container {c} (valet/busybox:latest)"
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("valet: pod {pod}: container {c} started")),
            "{stderr}"
        );
    }
    let ready = stderr
        .lines()
        .find(|l| l.starts_with(&format!("valet: pod {pod} ready in ")))
        .unwrap_or_else(|| panic!("no ready line: {stderr}"));
    assert!(ready.ends_with("(3 containers)"), "{ready}");
    // … and the build's log on stdout stays free of it.
    assert!(!stdout.contains("creating container"), "{stdout}");
}

/// A pipeline whose one step runs for long, in a file of its own.
fn long_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("Jenkinsfile");
    std::fs::write(
        &file,
        "podTemplate(containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {\n\
         \x20   node(POD_LABEL) {\n\
         \x20       container('main') {\n\
         \x20           sh 'sleep 100'\n\
         \x20       }\n\
         \x20   }\n\
         }\n",
    )
    .expect("write the pipeline");
    file
}

/// `valet run --backend docker --output json FILE`, started; returns the child and its pod
/// once the step's `sleep` runs (its trace line arrived).
fn start_long_run(file: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "docker", "--output", "json"])
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("valet runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pod = None;
        // Output arrives in pieces: the trace line is looked for in all of it.
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if ev["event"] == "job_started" {
                pod = ev["pod"].as_str().map(str::to_string);
            }
            if ev["event"] == "output" {
                text.push_str(ev["text"].as_str().unwrap_or_default());
                if text.contains("+ sleep 100")
                    && let Some(p) = pod.take()
                {
                    let _ = tx.send(p);
                }
            }
        }
    });
    let pod = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the step started within 30 s");
    (child, pod)
}

/// The pod's containers, volumes and host directory that still exist.
fn remains(pod: &str) -> Vec<String> {
    let filter = format!("label=valet.pod={pod}");
    let mut found = Vec::new();
    for args in [
        vec!["ps", "-aq", "--filter", &filter],
        vec!["volume", "ls", "-q", "--filter", &filter],
    ] {
        let out = Command::new("docker").args(&args).output().expect("docker");
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| format!("{} {l}", args[0])),
        );
    }
    let dir = valet_docker::gc::pod_dir_root().join(pod);
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}

/// Waits up to `limit` for `pod` to leave nothing; returns what remains.
fn gone_within(pod: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = remains(pod);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

#[test]
fn an_interrupted_build_leaves_nothing_behind() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = long_pipeline(dir.path());
    for sig in ["-INT", "-TERM"] {
        let (mut child, pod) = start_long_run(&file);
        assert!(
            !remains(&pod).is_empty(),
            "the pod exists while its step runs"
        );
        signal(&child, sig);
        let left = gone_within(&pod, Duration::from_secs(5));
        assert!(left.is_empty(), "{sig}: left after 5 s: {left:?}");
        let status = child.wait().expect("valet ends");
        assert_eq!(status.code(), Some(3), "{sig}: the build is ABORTED");
    }
}

/// A killed run's pod, and a live run beside it.
fn killed_and_live(file: &std::path::Path) -> (String, std::process::Child, String) {
    let (mut killed, dead_pod) = start_long_run(file);
    let (live, live_pod) = start_long_run(file);
    signal(&killed, "-KILL");
    killed.wait().expect("reaped");
    assert!(
        !remains(&dead_pod).is_empty(),
        "kill -9 leaves the pod behind"
    );
    (dead_pod, live, live_pod)
}

fn stop(mut live: std::process::Child, pod: &str) {
    signal(&live, "-INT");
    let _ = live.wait();
    let left = gone_within(pod, Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn valet_gc_removes_what_a_killed_run_left_and_spares_a_live_one() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = long_pipeline(dir.path());
    let (dead_pod, live, live_pod) = killed_and_live(&file);
    let live_before = remains(&live_pod);

    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("gc")
        .output()
        .expect("valet gc runs");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    // Another test's collection may have come first; what remains is what counts.
    let left = remains(&dead_pod);
    assert!(left.is_empty(), "valet gc left {left:?}\n{printed}");
    assert!(
        printed.contains(&dead_pod) || printed.contains("nothing to remove"),
        "{printed}"
    );
    assert_eq!(
        remains(&live_pod),
        live_before,
        "the live run's containers, volume and directory are untouched"
    );
    stop(live, &live_pod);
}

#[test]
fn the_next_run_removes_what_a_killed_run_left() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = long_pipeline(dir.path());
    let (dead_pod, live, live_pod) = killed_and_live(&file);
    let live_before = remains(&live_pod);

    let quick = dir.path().join("Quick");
    std::fs::write(&quick, "node { sh 'true' }\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "docker"])
        .arg(&quick)
        .output()
        .expect("valet runs");
    assert!(out.status.success(), "{out:?}");
    let left = remains(&dead_pod);
    assert!(left.is_empty(), "the next run left {left:?}");
    assert_eq!(
        remains(&live_pod),
        live_before,
        "the live run's pod is untouched"
    );
    stop(live, &live_pod);
}

#[test]
fn a_step_killed_by_the_memory_limit_fails_the_build_saying_so() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(
        &file,
        "podTemplate(containers: [containerTemplate(name: 'maven', image: 'valet/busybox:latest', \
         resourceLimitMemory: '32Mi')]) {\n\
         \x20   node(POD_LABEL) {\n\
         \x20       container('maven') {\n\
         \x20           sh 'dd if=/dev/zero of=/dev/null bs=64M count=1'\n\
         \x20       }\n\
         \x20   }\n\
         }\n",
    )
    .expect("write the pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "docker", "--output", "json"])
        .arg(&file)
        .output()
        .expect("valet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "FAILURE: {stdout}");
    let failed = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|ev| ev["event"] == "step_finished" && ev["step"] == "sh")
        .expect("the sh step finished");
    assert_eq!(failed["result"], "FAILURE");
    assert_eq!(
        failed["error"],
        "container 'maven' was killed: out of memory (limit 32 MiB) (script returned exit code 137)"
    );
}

#[test]
fn the_warm_pool_serves_a_template_used_again_and_is_drained_at_the_end() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Jenkinsfile");
    // Two nodes of one template, one after the other: the second pod comes from the pool.
    std::fs::write(
        &file,
        "podTemplate(label: 'twice', containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {\n\
         \x20   node('twice') { sh 'touch /workspace/mark' }\n\
         \x20   sleep 3\n\
         \x20   node('twice') { sh 'test ! -e /workspace/mark' }\n\
         }\n",
    )
    .expect("write the pipeline");
    let child = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "docker", "--warm-pool", "1"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("valet runs");
    let pid = child.id();
    let out = child.wait_with_output().expect("valet ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let ready: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" ready in "))
        .collect();
    assert_eq!(ready.len(), 2, "{stderr}");
    assert!(
        !ready[0].contains("warm pool"),
        "the first is made cold: {stderr}"
    );
    assert!(
        ready[1].ends_with("(2 containers, from the warm pool)"),
        "{stderr}"
    );
    let left = common::owned_by(pid);
    assert!(left.is_empty(), "the run left {left:?}");
}

/// `valet run --backend docker --artifacts DIR [ARGS] FILE` from the repository's root;
/// the exit code and stdout.
fn run_with_artifacts(
    file: &str,
    artifacts: &std::path::Path,
    args: &[&str],
) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "docker", "--artifacts"])
        .arg(artifacts)
        .args(args)
        .arg(file)
        .current_dir(ROOT)
        .output()
        .expect("valet runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// On the default image, whose busybox `tar` has no `-T`: stash, unstash and
/// archiveArtifacts work, for more files than one `tar` command line takes, odd names, and
/// a stash larger than the agent's 64 MiB cap on a step's output (a log cap, not a data one).
#[test]
fn stash_unstash_and_archive_work_with_busybox_tar() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = dir.path().join("artifacts");
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(
        &file,
        r#"
podTemplate(containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {
    node(POD_LABEL) {
        container('main') {
            dir('src') {
                sh '''
                    mkdir -p many 'with space' ./-dash
                    i=0; while [ $i -lt 1200 ]; do echo "$i" > many/f$i.txt; i=$((i+1)); done
                    echo spaced > 'with space/a b.txt'
                    echo dashed > ./-dash/-n
                    long=a-directory-name-of-sixty-characters-to-pass-the-old-limit-x
                    mkdir -p "$long/$long/$long" && echo long > "$long/$long/$long/file.txt"
                    head -c 73400320 /dev/urandom > big.bin
                    md5sum big.bin > big.md5
                '''
                stash name: 'all', includes: '**'
                archiveArtifacts artifacts: '**', excludes: 'big.*'
            }
            dir('dst') {
                unstash 'all'
                sh '''
                    test "$(ls many | wc -l)" -eq 1200
                    test "$(cat 'with space/a b.txt')" = spaced
                    test "$(cat ./-dash/-n)" = dashed
                    long=a-directory-name-of-sixty-characters-to-pass-the-old-limit-x
                    test "$(cat "$long/$long/$long/file.txt")" = long
                    md5sum -c big.md5
                '''
            }
        }
    }
}
"#,
    )
    .expect("write the pipeline");
    let (code, text) = run_with_artifacts(file.to_str().expect("utf-8"), &artifacts, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Stashed 1205 file(s) as ‘all’"), "{text}");
    assert!(text.contains("Archived 1203 artifact(s)"), "{text}");
    assert_eq!(
        std::fs::read_dir(artifacts.join("many"))
            .expect("many")
            .count(),
        1200
    );
    assert_eq!(
        std::fs::read_to_string(artifacts.join("with space/a b.txt")).expect("spaced"),
        "spaced\n"
    );
    // Past the 100 bytes of a tar header's name field: the stream's long-name entries.
    let long = "a-directory-name-of-sixty-characters-to-pass-the-old-limit-x";
    assert_eq!(
        std::fs::read_to_string(artifacts.join(format!("{long}/{long}/{long}/file.txt")))
            .expect("long"),
        "long\n"
    );
}

/// The review's attack on the real engine (`pipelines/hostile/artifact-link-escape.groovy`):
/// the pod archives a symbolic link to a host directory, then a file below a directory of
/// the same name. Nothing lands in the host directory; the file is kept as an artifact.
#[test]
fn an_artifact_link_never_leads_a_write_out_of_the_artifacts_directory() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("host-target");
    std::fs::create_dir(&target).expect("target");
    let artifacts = dir.path().join("artifacts");
    let param = format!("TARGET={}", target.display());
    let (code, text) = run_with_artifacts(
        "pipelines/hostile/artifact-link-escape.groovy",
        &artifacts,
        &["-p", &param],
    );
    assert!(
        !target.join("pwned.txt").exists(),
        "the pod wrote into a host directory: {text}"
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("WARNING: archiveArtifacts: d is left out: a symbolic link"),
        "{text}"
    );
    assert!(
        std::fs::symlink_metadata(artifacts.join("d"))
            .expect("d")
            .is_dir()
    );
    assert_eq!(
        std::fs::read_to_string(artifacts.join("d/pwned.txt")).expect("kept"),
        "x\n"
    );
}

/// `checkout scm` of a repository larger than one message to an agent may carry (4 MiB):
/// it reaches the container whole, in pieces.
#[test]
fn checkout_scm_of_a_large_repository_reaches_the_container() {
    ensure_base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = common::repo_with(
        dir.path(),
        "podTemplate(containers: [containerTemplate(name: 'main', image: 'valet/busybox:latest')]) {\n\
         \x20   node(POD_LABEL) {\n\
         \x20       container('main') {\n\
         \x20           checkout scm\n\
         \x20           sh 'md5sum big.bin'\n\
         \x20       }\n\
         \x20   }\n\
         }\n",
    );
    let big: Vec<u8> = (0..6 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(repo.join("big.bin"), &big).expect("big");
    common::git(&repo, &["add", "big.bin"]);
    common::git(&repo, &["commit", "--quiet", "-m", "big"]);
    let md5 = Command::new("md5sum")
        .arg("big.bin")
        .current_dir(&repo)
        .output()
        .expect("md5sum");
    let sum = String::from_utf8_lossy(&md5.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_string();
    let (code, text) = run_with_artifacts(
        repo.join("Jenkinsfile").to_str().expect("utf-8"),
        &dir.path().join("artifacts"),
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("{sum}  big.bin")), "{text}");
}
